//! `wxkf-manager store copy` (issue 19): a store holding puppets, operator
//! credentials, pending, parked and dead deliveries, a cached token, an app
//! with a subscription and a key, copied from the embedded store to MongoDB
//! and back; managers started on each copy carry on where the first left.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::require_mongo;
use crate::support::FakePuppet;
use crate::support::{manual_clock, spawn_stepped_app, Corp, TestApp};

/// The CLI against an embedded store in `data_dir` (and nothing else).
fn store_copy(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxkf-manager"))
        .env_clear()
        .env("DATA_DIR", data_dir)
        .args(["store", "copy"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// (kfId, status) of every delivery, sorted.
async fn states(app: &TestApp) -> Vec<(String, String)> {
    let mut s: Vec<(String, String)> = app.admin_json("/deliveries?limit=50").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kfId"].as_str().unwrap_or("").to_owned(),
                d["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    s.sort();
    s
}

async fn json_of(app: &TestApp, method: Method, path: &str, body: Value) -> Value {
    let resp = app.admin(method, path).json(&body).send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn the_embedded_store_moves_to_mongodb_and_back_and_managers_carry_on() {
    let uri = require_mongo();
    let clock = manual_clock();
    let (a, b, d) = (
        FakePuppet::start().await,
        FakePuppet::start().await,
        FakePuppet::start().await,
    );
    let corp = Corp::new("wwcopy");
    let mut first = spawn_stepped_app(clock.clone(), |c| {
        c.mongo_uri = None;
        c.delivery.retry_window = Duration::from_secs(60);
    })
    .await;
    first.register_ok(&corp, "wkcopy-a", &a.url).await;
    first.register_ok(&corp, "wkcopy-b", &b.url).await;
    first.register_ok(&corp, "wkcopy-d", &d.url).await;
    assert_eq!(first.deregister(&corp, "wkcopy-b").await.status(), 200);

    // Dead: D's puppet refuses until the retry window is over.
    d.fail_with(&[500; 100]);
    assert_eq!(
        first.post_kf_event(&corp, "wkcopy-d", "TD").await.status(),
        200
    );
    first.drain().await;
    clock.advance(Duration::from_secs(61));
    first.drain().await;
    // Parked: B is offline.
    assert_eq!(
        first.post_kf_event(&corp, "wkcopy-b", "TB").await.status(),
        200
    );
    // Pending: A refuses once, so it waits for its retry.
    a.fail_with(&[500]);
    assert_eq!(
        first.post_kf_event(&corp, "wkcopy-a", "TA").await.status(),
        200
    );
    first.drain().await;
    let seeded = vec![
        ("wkcopy-a".to_owned(), "pending".to_owned()),
        ("wkcopy-b".to_owned(), "parked".to_owned()),
        ("wkcopy-d".to_owned(), "dead".to_owned()),
    ];
    assert_eq!(states(&first).await, seeded, "the seeded store");
    let token = first.get_token(&corp).await["access_token"].clone();
    assert_eq!(token, "TOKEN-1");
    // Operator credentials, an app with a subscription and a key.
    let other = Corp::new("wwcopyop");
    json_of(
        &first,
        Method::PUT,
        "/corps/wwcopyop/credentials",
        json!({"token": other.token, "encodingAESKey": other.key}),
    )
    .await;
    json_of(
        &first,
        Method::PUT,
        "/apps/wxcopy0123456789",
        json!({"kind": "official_account", "token": "copyToken1", "appSecret": "s3cret"}),
    )
    .await;
    json_of(
        &first,
        Method::POST,
        "/subscriptions",
        json!({"source": "wxcopy0123456789", "endpoint": a.url}),
    )
    .await;
    let key = json_of(
        &first,
        Method::POST,
        "/apps/wxcopy0123456789/keys",
        json!({}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    first.stop().await;
    let embedded = first.config().data_dir.clone();

    // The copy, twice: the second writes nothing; the counts agree.
    let (ok, out) = store_copy(&embedded, &["--to", &uri]);
    assert!(ok, "{out}");
    assert!(out.contains("embedded -> MongoDB: 11 written"), "{out}");
    let (ok, out) = store_copy(&embedded, &["--to", &uri]);
    assert!(
        ok && out.contains(": 0 written"),
        "a second run changes nothing: {out}"
    );
    let (ok, out) = store_copy(&embedded, &["--to", &uri, "--check"]);
    assert!(ok, "{out}");
    assert!(!out.contains("differs"), "{out}");

    // And back, into an empty embedded store, before anything moves on.
    let back = tempfile::tempdir().unwrap();
    let (ok, out) = store_copy(back.path(), &["--from", &uri]);
    assert!(ok, "{out}");
    let (ok, out) = store_copy(back.path(), &["--from", &uri, "--check"]);
    assert!(ok && !out.contains("differs"), "{out}");

    // A manager on each copy carries on where the first left, on a clock
    // set to the moment of the copy.
    let seeds = Seeds {
        corp,
        token,
        key,
        a,
        b,
        d,
    };
    let at_copy = wxkf_manager::clock::Clock::now(clock.as_ref()).as_millis();
    let on_mongo = {
        let uri = uri.clone();
        move |c: &mut wxkf_manager::config::Config| {
            c.mongo_uri = Some(wxkf_manager::domain::Secret::new(uri));
            c.delivery.retry_window = Duration::from_secs(60);
        }
    };
    carries_on("MongoDB copy", &seeds, at_copy, on_mongo).await;
    let back_dir = back.path().to_path_buf();
    carries_on("embedded copy of it", &seeds, at_copy, move |c| {
        c.mongo_uri = None;
        c.data_dir = back_dir;
        c.delivery.retry_window = Duration::from_secs(60);
    })
    .await;
}

/// What the first manager left, for the checks on each copy.
struct Seeds {
    corp: Corp,
    token: Value,
    key: String,
    a: FakePuppet,
    b: FakePuppet,
    d: FakePuppet,
}

/// A manager started on a copy: the pending delivery goes when due, the
/// parked one when its kfId registers, the dead one is listed and can be
/// re-driven; the cached token is answered without an upstream call; a
/// copied kfId cannot be hijacked; the app, its subscription and key, and
/// the operator credentials came along.
async fn carries_on(
    name: &str,
    seeds: &Seeds,
    at_copy: i64,
    adjust: impl FnOnce(&mut wxkf_manager::config::Config),
) {
    let clock = std::sync::Arc::new(crate::support::ManualClock(at_copy.into()));
    let mut app = spawn_stepped_app(clock.clone(), adjust).await;
    let Seeds {
        corp,
        token,
        key,
        a,
        b,
        d,
    } = seeds;
    let expected = vec![
        ("wkcopy-a".to_owned(), "pending".to_owned()),
        ("wkcopy-b".to_owned(), "parked".to_owned()),
        ("wkcopy-d".to_owned(), "dead".to_owned()),
    ];
    assert_eq!(
        states(&app).await,
        expected,
        "{name}: the same deliveries in the same states"
    );
    assert_eq!(
        app.drain().await,
        0,
        "{name}: the pending one is not due yet"
    );
    a.fail_with(&[]);
    clock.advance(Duration::from_secs(1));
    assert_eq!(app.drain().await, 1, "{name}: the pending one, when due");
    assert_eq!(corp.tokens_in(&a.received()).last().unwrap(), "TA");
    app.register_ok(corp, "wkcopy-b", &b.url).await;
    assert_eq!(
        app.drain().await,
        1,
        "{name}: the parked one, when its kfId registers"
    );
    assert_eq!(corp.tokens_in(&b.received()).last().unwrap(), "TB");
    let dead = app.admin_json("/deliveries?status=dead").await;
    let dead_id = dead["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(dead["items"][0]["lastError"], "puppet answered HTTP 500");
    d.fail_with(&[]);
    let redriven = app
        .admin(Method::POST, &format!("/deliveries/{dead_id}/redrive"))
        .send()
        .await
        .unwrap();
    assert_eq!(redriven.status(), 200);
    assert_eq!(app.drain().await, 1, "{name}: the dead one, re-driven");
    assert_eq!(corp.tokens_in(&d.received()).last().unwrap(), "TD");
    assert_eq!(
        &app.get_token(corp).await["access_token"],
        token,
        "{name}: the cached token"
    );
    assert!(
        app.wecom.calls("/cgi-bin/gettoken").is_empty(),
        "{name}: without an upstream call"
    );
    let hijack = app.register(&Corp::new("wwcopy"), "wkcopy-a", &b.url).await;
    assert_eq!(
        hijack.status(),
        409,
        "{name}: a copied kfId cannot be hijacked"
    );
    let app_token = app
        .api
        .get(format!("{}/wechat/wxcopy0123456789/token", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        app_token.status(),
        200,
        "{name}: the app and its key came along"
    );
    let subscriptions = app
        .admin_json("/subscriptions?source=wxcopy0123456789")
        .await;
    assert_eq!(
        subscriptions["items"].as_array().unwrap().len(),
        1,
        "{name}"
    );
    let corp_sets = app.admin_json("/corps/wwcopyop").await;
    assert_eq!(
        corp_sets["credentialSets"],
        json!([{"from": "operator"}]),
        "{name}"
    );
    app.stop().await;
}

/// A copy interrupted after its first page completes when run again, and a
/// third run writes nothing; an event with two deliveries arrives whole.
#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn an_interrupted_copy_completes_when_run_again() {
    use wxkf_manager::domain::{CorpId, KfId};
    use wxkf_manager::store::mongo::MongoStore;
    use wxkf_manager::store::sqlite::SqliteStore;
    use wxkf_manager::store::{NewDelivery, NewEvent, PayloadKind, Retention, Sealer, Store};
    let uri = require_mongo();
    let dir = tempfile::tempdir().unwrap();
    let sealer = Sealer::new(Some(&[7; 32]));
    let embedded: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(SqliteStore::open(dir.path(), sealer.clone()).unwrap());
    let corp = CorpId::parse("wwpages").unwrap();
    for i in 0..1_200 {
        let mut deliveries = vec![NewDelivery::to_puppet(
            corp.clone(),
            Some(KfId::parse(&format!("wkpage{}", i % 7)).unwrap()),
            false,
        )];
        if i == 499 {
            // Two deliveries: their rows straddle the first page's end.
            deliveries.push(NewDelivery::to_puppet(
                corp.clone(),
                Some(KfId::parse("wkpagex").unwrap()),
                false,
            ));
        }
        let event = NewEvent {
            id: wxkf_manager::domain::EventId::generate(),
            source: "wwpages".into(),
            dedup_key: format!("kf|wwpages|{i}"),
            kind: PayloadKind::Xml,
            body: format!("<xml>{i}</xml>").into_bytes(),
            query: String::new(),
            received_at: wxkf_manager::clock::UnixMillis::from_millis(1_000 + i),
            message: None,
            deliveries,
        };
        embedded.insert_event(&event).await.unwrap();
    }
    let retention = Retention {
        finished: Duration::from_secs(3 * 24 * 3600),
        dead: Duration::from_secs(30 * 24 * 3600),
    };
    let mongo: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(MongoStore::connect(&uri, retention, sealer).await.unwrap());
    // "Interrupted": only the first page went over.
    let first = {
        use futures_util::TryStreamExt;
        embedded
            .export_deliveries(500)
            .try_next()
            .await
            .unwrap()
            .unwrap()
    };
    mongo.import_deliveries(&first).await.unwrap();
    let report = wxkf_manager::copy::copy(embedded.as_ref(), mongo.as_ref(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        report.0["deliveries (pending)"],
        (701, 500),
        "the rest copied, the first page kept"
    );
    let counts = |s: std::sync::Arc<dyn Store>| async move {
        wxkf_manager::copy::counts(s.as_ref()).await.unwrap()
    };
    assert_eq!(counts(embedded.clone()).await, counts(mongo.clone()).await);
    let again = wxkf_manager::copy::copy(embedded.as_ref(), mongo.as_ref(), |_| {})
        .await
        .unwrap();
    assert_eq!(again.written(), 0, "{again:?}");
    let twin = mongo
        .list_deliveries(&wxkf_manager::store::DeliveryFilter {
            status: None,
            corp_id: None,
            kf_id: Some("wkpagex".into()),
            limit: 10,
            offset: 0,
        })
        .await
        .unwrap();
    assert_eq!(twin.len(), 1);
    let sibling = first
        .iter()
        .find(|d| d.event_id == twin[0].event_id)
        .map(|d| d.id.clone());
    assert!(
        sibling.is_some(),
        "both deliveries of the straddling event under one event"
    );
}
