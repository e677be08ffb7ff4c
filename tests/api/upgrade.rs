//! Upgrade in place: a store written by the previous release (one row or
//! document per event, which was also its only delivery) is opened by this
//! build, on the backend under test. Its waiting and dead events become
//! events with one delivery each, keep their ids, and are delivered.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;

use crate::support::FakePuppet;
use crate::support::ManagerProcess;
use crate::support::{manual_clock, spawn_stepped_app, test_mongo_uri, Corp};
use wxkf_manager::clock::Clock;

/// What the previous release held for one event.
struct OldEvent {
    id: &'static str,
    kf: &'static str,
    token: &'static str,
    status: &'static str,
    attempts: i64,
    /// Relative to the test clock's start (ms).
    next_attempt_in: i64,
    last_error: Option<&'static str>,
}

const PENDING: &str = "018f0000-0000-7000-8000-00000000000a";
const PARKED: &str = "018f0000-0000-7000-8000-00000000000b";
const DEAD: &str = "018f0000-0000-7000-8000-00000000000c";
const DELIVERED: &str = "018f0000-0000-7000-8000-00000000000d";

fn old_events() -> [OldEvent; 4] {
    [
        // In backoff after two failed attempts: due a minute after the upgrade.
        OldEvent {
            id: PENDING,
            kf: "wkup-due",
            token: "T-PENDING",
            status: "pending",
            attempts: 2,
            next_attempt_in: 60_000,
            last_error: Some("puppet answered HTTP 502"),
        },
        // Its puppet was offline: waits for a registration.
        OldEvent {
            id: PARKED,
            kf: "wkup-parked",
            token: "T-PARKED",
            status: "parked",
            attempts: 0,
            next_attempt_in: -90_000,
            last_error: Some("no online puppet for this kfId"),
        },
        OldEvent {
            id: DEAD,
            kf: "wkup-dead",
            token: "T-DEAD",
            status: "dead",
            attempts: 12,
            next_attempt_in: -80_000,
            last_error: Some("puppet answered HTTP 500"),
        },
        // Delivered: still the dedup identity of WeCom's resends.
        OldEvent {
            id: DELIVERED,
            kf: "wkup-due",
            token: "T-DELIVERED",
            status: "delivered",
            attempts: 1,
            next_attempt_in: -70_000,
            last_error: None,
        },
    ]
}

fn body_of(e: &OldEvent) -> String {
    format!(
        "<xml><Encrypt><![CDATA[sealed {}]]></Encrypt></xml>",
        e.token
    )
}

/// The embedded store as the previous release left it: migrations 1 to 3,
/// its rows as its group commit wrote them, and two online puppets.
fn previous_sqlite(dir: &Path, corp: &Corp, endpoint: &str, start: i64) {
    let c = rusqlite::Connection::open(dir.join("wxkf-manager.sqlite3")).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .unwrap();
    for (version, sql) in [
        (1, include_str!("../../migrations/sqlite/0001_init.sql")),
        (2, include_str!("../../migrations/sqlite/0002_tokens.sql")),
        (
            3,
            include_str!("../../migrations/sqlite/0003_kf_indexes.sql"),
        ),
    ] {
        c.execute_batch(sql).unwrap();
        c.execute(
            "INSERT INTO schema_migrations VALUES (?1, 1700000000)",
            [version],
        )
        .unwrap();
    }
    for kf in ["wkup-due", "wkup-dead"] {
        c.execute(
            "INSERT INTO puppets VALUES (?1, 'old', ?2, ?3, ?4, ?5, ?6, 1, ?7, NULL, ?7)",
            rusqlite::params![
                kf,
                endpoint,
                corp.id,
                corp.secret,
                corp.token,
                corp.key,
                start - 200_000
            ],
        )
        .unwrap();
    }
    for e in old_events() {
        let received = start - 120_000;
        c.execute(
            "INSERT INTO events (id, corp_id, kf_id, dedup_key, kind, body, query, coalesce, status,
                                 attempts, received_at, window_start, next_attempt_at, last_error,
                                 delivered_at, updated_at, lease_owner, lease_until, claim_id)
             VALUES (?1, ?2, ?3, ?4, 'xml', ?5, 'msg_signature=s&timestamp=1&nonce=n', 1, ?6,
                     ?7, ?8, ?8, ?9, ?10, ?11, ?8, 'old-manager', ?12, 'old-claim')",
            rusqlite::params![
                e.id,
                corp.id,
                e.kf,
                format!("kf|{}|{}|{}", corp.id, e.kf, e.token),
                body_of(&e).into_bytes(),
                e.status,
                e.attempts,
                received,
                start + e.next_attempt_in,
                e.last_error,
                (e.status == "delivered").then_some(received + 10),
                // A lease the previous manager held when it stopped: gone after the upgrade.
                start + 30_000,
            ],
        )
        .unwrap();
    }
}

/// The MongoDB database as the previous release left it: migrations 1 and
/// 2 (their indexes), its event documents and the old manager's puppets.
async fn previous_mongo(uri: &str, corp: &Corp, endpoint: &str, start: i64) {
    use mongodb::bson::{doc, Binary, DateTime, Document};
    let db = mongodb::Client::with_uri_str(uri)
        .await
        .unwrap()
        .default_database()
        .unwrap();
    for (version, text) in [
        (1, include_str!("../../migrations/mongo/0001_indexes.json")),
        (2, include_str!("../../migrations/mongo/0002_tokens.json")),
    ] {
        let spec: serde_json::Value = serde_json::from_str(text).unwrap();
        for index in spec["indexes"].as_array().unwrap() {
            let options = mongodb::options::IndexOptions::builder()
                .name(index["options"]["name"].as_str().map(str::to_owned))
                .unique(index["options"]["unique"].as_bool())
                .expire_after(
                    index["options"]["expireAfterSeconds"]
                        .as_u64()
                        .map(Duration::from_secs),
                )
                .build();
            let keys = mongodb::bson::to_document(&index["keys"]).unwrap();
            db.collection::<Document>(index["collection"].as_str().unwrap())
                .create_index(
                    mongodb::IndexModel::builder()
                        .keys(keys)
                        .options(options)
                        .build(),
                )
                .await
                .unwrap();
        }
        db.collection::<Document>("wxkf_migrations")
            .insert_one(
                doc! {"_id": version as i64, "description": "", "appliedAt": DateTime::now()},
            )
            .await
            .unwrap();
    }
    for kf in ["wkup-due", "wkup-dead"] {
        db.collection::<Document>("wxkfpuppets")
            .insert_one(doc! {
                "kfOpenId": kf, "botEndpoint": endpoint, "name": "old", "corpId": &corp.id,
                "corpSecret": &corp.secret, "token": &corp.token, "encodingAESKey": &corp.key,
                "online": true, "lastOnlineDate": DateTime::from_millis(start - 200_000),
            })
            .await
            .unwrap();
    }
    for (seq, e) in old_events().into_iter().enumerate() {
        let received = start - 120_000;
        let mut d = doc! {
            "_id": e.id, "corpId": &corp.id, "kfId": e.kf,
            "dedupKey": format!("kf|{}|{}|{}", corp.id, e.kf, e.token),
            "kind": "xml",
            "body": Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: body_of(&e).into_bytes() },
            "query": "msg_signature=s&timestamp=1&nonce=n", "coalesce": true, "status": e.status,
            "attempts": e.attempts, "seq": received * 1000 + seq as i64, "receivedAt": received,
            "windowStart": received, "nextAttemptAt": start + e.next_attempt_in,
            "leaseOwner": "old-manager", "leaseUntil": start + 30_000, "claimId": "old-claim",
            "updatedAt": DateTime::from_millis(received),
        };
        if let Some(error) = e.last_error {
            d.insert("lastError", error);
        }
        if e.status == "delivered" {
            d.insert("deliveredAt", received + 10);
            d.insert("expireAt", DateTime::from_millis(received + 72 * 3_600_000));
        }
        db.collection::<Document>("wxkf_events")
            .insert_one(d)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_store_of_the_previous_release_is_carried_forward_and_delivered() {
    let corp = Corp::new("wwupgrade");
    let puppet = FakePuppet::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mongo = test_mongo_uri();
    let clock = manual_clock();
    let start = clock.now().as_millis();
    match &mongo {
        Some(uri) => previous_mongo(uri, &corp, &puppet.url, start).await,
        None => previous_sqlite(dir.path(), &corp, &puppet.url, start),
    }
    let data_dir = dir.path().to_path_buf();
    let app = spawn_stepped_app(clock.clone(), move |c| {
        c.data_dir = data_dir;
        c.mongo_uri = mongo.map(wxkf_manager::domain::Secret::new);
    })
    .await;

    // Every event is listed as one delivery with its old id, as it was.
    let listed = app.admin_json("/deliveries?limit=50").await;
    let items = listed["items"].as_array().unwrap();
    let find = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
            .clone()
    };
    for (id, status, attempts) in [
        (PENDING, "pending", 2),
        (PARKED, "parked", 0),
        (DEAD, "dead", 12),
        (DELIVERED, "delivered", 1),
    ] {
        let item = find(id);
        assert_eq!(item["status"], status, "{item}");
        assert_eq!(item["eventId"], id, "{item}");
        assert_eq!(item["attempts"], attempts, "{item}");
        assert_eq!(item["corpId"], corp.id.as_str(), "{item}");
    }
    assert_eq!(items.len(), 4, "{listed}");
    assert_eq!(find(DEAD)["lastError"], "puppet answered HTTP 500");

    // The old manager's lease does not hold the pending one back, but it is
    // not due yet: nothing goes before its time.
    assert_eq!(app.drain().await, 0);
    assert!(puppet.received().is_empty());

    // A resend of the delivered event is still a duplicate.
    let resent = app.post_kf_event(&corp, "wkup-due", "T-DELIVERED").await;
    assert_eq!(resent.status(), 200);
    assert_eq!(app.drain().await, 0, "a resend is not delivered again");
    assert_eq!(
        app.admin_json("/deliveries?limit=50").await["items"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    // The pending one goes when due, byte for byte, under its old id.
    clock.advance(Duration::from_secs(61));
    assert_eq!(app.drain().await, 1);
    let got = puppet.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].delivery_id, PENDING);
    assert_eq!(
        got[0].body,
        b"<xml><Encrypt><![CDATA[sealed T-PENDING]]></Encrypt></xml>"
    );
    assert_eq!(got[0].query, "msg_signature=s&timestamp=1&nonce=n");
    assert_eq!(got[0].attempt, 3, "attempts carry over");

    // The parked one goes when its kfId registers.
    app.register_ok(&corp, "wkup-parked", &puppet.url).await;
    app.drain().await;
    let got = puppet.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].delivery_id, PARKED);

    // The dead one stays dead until an operator re-drives it.
    assert_eq!(find(DEAD)["status"], "dead");
    let resp = app
        .admin(Method::POST, &format!("/deliveries/{DEAD}/redrive"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    app.drain().await;
    let got = puppet.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].delivery_id, DEAD);

    let after = app
        .admin_json("/deliveries?status=delivered&limit=50")
        .await;
    let mut delivered: Vec<&str> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    delivered.sort();
    assert_eq!(delivered, [PENDING, PARKED, DEAD, DELIVERED]);
}

/// Many more events of the previous release's shape (delivered ones), so
/// that carrying them forward takes long enough to be interrupted.
fn bulk_sqlite(dir: &Path, corp: &Corp, n: i64) {
    let c = rusqlite::Connection::open(dir.join("wxkf-manager.sqlite3")).unwrap();
    c.execute(
        "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?2)
         INSERT INTO events (id, corp_id, kf_id, dedup_key, kind, body, query, coalesce, status,
                             attempts, received_at, window_start, next_attempt_at, last_error,
                             delivered_at, updated_at, lease_owner, lease_until, claim_id)
         SELECT printf('bulk-%08d', i), ?1, 'wkup-bulk', printf('kf|%s|wkup-bulk|B%08d', ?1, i),
                'xml', zeroblob(300), 'q', 1, 'delivered', 1, 1700000000000, 1700000000000,
                1700000000000, NULL, 1700000000001, 1700000000001, NULL, 0, NULL
         FROM k",
        rusqlite::params![corp.id, n],
    )
    .unwrap();
}

async fn bulk_mongo(uri: &str, corp: &Corp, n: i64) {
    use mongodb::bson::{doc, DateTime, Document};
    let db = mongodb::Client::with_uri_str(uri)
        .await
        .unwrap()
        .default_database()
        .unwrap();
    let docs: Vec<Document> = (0..n)
        .map(|i| {
            doc! {
                "_id": format!("bulk-{i:08}"), "corpId": &corp.id, "kfId": "wkup-bulk",
                "dedupKey": format!("kf|{}|wkup-bulk|B{i:08}", corp.id), "kind": "xml",
                "body": "", "query": "q", "coalesce": true, "status": "delivered", "attempts": 1i64,
                "seq": 1_700_000_000_000_000i64 + i, "receivedAt": 1_700_000_000_000i64,
                "windowStart": 1_700_000_000_000i64, "nextAttemptAt": 1_700_000_000_000i64,
                "deliveredAt": 1_700_000_000_001i64, "leaseUntil": 0i64,
                "updatedAt": DateTime::from_millis(1_700_000_000_001),
                "expireAt": DateTime::from_millis(4_000_000_000_000),
            }
        })
        .collect();
    for chunk in docs.chunks(1000) {
        db.collection::<Document>("wxkf_events")
            .insert_many(chunk.to_vec())
            .await
            .unwrap();
    }
}

/// The embedded store's applied migrations and event rows.
fn sqlite_state(dir: &Path) -> (Vec<i64>, i64) {
    let c = rusqlite::Connection::open(dir.join("wxkf-manager.sqlite3")).unwrap();
    let versions = c
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<i64>, _>>()
        .unwrap();
    let events = c
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    (versions, events)
}

#[tokio::test]
async fn a_migration_interrupted_by_a_kill_is_finished_by_the_next_start() {
    let corp = Corp::new("wwupkill");
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port;
    let base = |port: u16| format!("http://127.0.0.1:{port}");
    let start = 1_700_000_000_000;
    match test_mongo_uri() {
        None => {
            let n = 300_000;
            previous_sqlite(dir.path(), &corp, "http://127.0.0.1:9", start);
            bulk_sqlite(dir.path(), &corp, n);
            // Killed while migrating (the rows are being carried forward).
            let p = port();
            let mut first = ManagerProcess::start(p, dir.path(), None);
            let wal = dir.path().join("wxkf-manager.sqlite3-wal");
            for _ in 0..1000 {
                // The migration's transaction spills its pages into the WAL.
                if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 4 << 20) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            first.kill();
            let (versions, events) = sqlite_state(dir.path());
            assert_eq!(
                versions,
                [1, 2, 3],
                "killed before the migration committed: none of it is applied"
            );
            assert_eq!(events, n + 4);
            // The next start applies 4 to 7, once each, and loses nothing.
            let p = port();
            let mut second = ManagerProcess::start(p, dir.path(), None);
            second.wait_healthy(&base(p)).await;
            second.kill();
            let c = rusqlite::Connection::open(dir.path().join("wxkf-manager.sqlite3")).unwrap();
            let versions: Vec<i64> = c
                .prepare("SELECT version FROM schema_migrations ORDER BY version")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
            // Version 7 dropped the per-kfId history index nothing read.
            let by_kf: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'deliveries_by_kf'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(by_kf, 0, "deliveries_by_kf is gone after the upgrade");
            let (events, deliveries): (i64, i64) = c
                .query_row(
                    "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM deliveries)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(
                (events, deliveries),
                (n + 4, n + 4),
                "one delivery per event"
            );
        }
        Some(uri) => {
            use mongodb::bson::{doc, Document};
            let n = 1_000;
            previous_mongo(&uri, &corp, "http://127.0.0.1:9", start).await;
            bulk_mongo(&uri, &corp, n).await;
            let db = mongodb::Client::with_uri_str(&uri)
                .await
                .unwrap()
                .default_database()
                .unwrap();
            let events = db.collection::<Document>("wxkf_events");
            let converted = || events.count_documents(doc! {"deliveries": {"$exists": true}});
            // Killed half-way through carrying the documents forward.
            let p = port();
            let mut first = ManagerProcess::start(p, dir.path(), Some(&uri));
            for _ in 0..600 {
                if converted().await.unwrap() > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            first.kill();
            let part = converted().await.unwrap();
            assert!(
                part > 0 && part < n as u64 + 4,
                "killed half-way: {part} of {} converted",
                n + 4
            );
            // Two managers start together on the half-done database.
            let (p1, p2) = (port(), port());
            let mut one = ManagerProcess::start(p1, dir.path(), Some(&uri));
            let other_dir = tempfile::tempdir().unwrap();
            let mut two = ManagerProcess::start(p2, other_dir.path(), Some(&uri));
            // Converting thousands of documents on the Python test server
            // takes a while: wait for both to answer, up to four minutes.
            for p in [p1, p2] {
                let mut up = false;
                for _ in 0..2400 {
                    if reqwest::get(format!("{}/healthz", base(p)))
                        .await
                        .is_ok_and(|r| r.status() == 200)
                    {
                        up = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert!(up, "a manager on the half-migrated database started");
            }
            one.kill();
            two.kill();
            let left = events
                .count_documents(doc! {"deliveries": {"$exists": false}})
                .await
                .unwrap();
            assert_eq!(left, 0, "every document carried forward");
            assert!(converted().await.unwrap() >= n as u64, "none lost");
            let doubled = events
                .count_documents(doc! {"deliveries.1": {"$exists": true}})
                .await
                .unwrap();
            assert_eq!(doubled, 0, "each converted once: one delivery per event");
            let records = db.collection::<Document>("wxkf_migrations");
            for version in 1..=4i64 {
                assert_eq!(
                    records
                        .count_documents(doc! {"_id": version})
                        .await
                        .unwrap(),
                    1,
                    "migration {version} recorded once"
                );
            }
        }
    }
}

/// Service providers need no new table: a store carried forward from the
/// previous release (then given a SECRETS_KEY) keeps a suite's ticket and
/// a corp's grant beside what it held.
#[tokio::test]
async fn a_store_of_the_previous_release_takes_suites_and_components() {
    use crate::support::{FakeOpenPlatform, FakeProviderApi, TestComponent, TestSuite};
    let corp = Corp::new("wwupgradesuite");
    let puppet = FakePuppet::start().await;
    let provider = FakeProviderApi::start().await;
    let platform = FakeOpenPlatform::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mongo = test_mongo_uri();
    let clock = manual_clock();
    let start = clock.now().as_millis();
    match &mongo {
        Some(uri) => previous_mongo(uri, &corp, &puppet.url, start).await,
        None => previous_sqlite(dir.path(), &corp, &puppet.url, start),
    }
    let (data_dir, base) = (dir.path().to_path_buf(), provider.base.clone());
    let wechat_base = platform.base.clone();
    let app = spawn_stepped_app(clock.clone(), move |c| {
        c.data_dir = data_dir;
        c.mongo_uri = mongo.map(wxkf_manager::domain::Secret::new);
        c.secrets_key = Some(wxkf_manager::config::SecretsKey([9; 32]));
        c.wecom_api_base = base;
        c.wechat_api_base = wechat_base;
    })
    .await;
    let suite = TestSuite::new("wwsuiteupgraded");
    suite.register(&app).await;
    let ticket = provider.issue_ticket();
    assert_eq!(
        suite
            .push_ticket(&app, &ticket, 1_700_000_000)
            .await
            .status(),
        200
    );
    let code = provider.issue_code("wwnewcustomer", "New customer");
    assert_eq!(suite.push_create_auth(&app, &code).await.status(), 200);
    app.drain().await;
    let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
    assert_eq!(corps["items"][0]["status"], "authorized", "{corps}");

    let component = TestComponent::new("wxcompupgraded1");
    component.register(&app).await;
    let ticket = platform.issue_ticket();
    let resp = component.push_ticket(&app, &ticket, 1_700_000_000).await;
    assert_eq!(resp.status(), 200);
    let code = platform.issue_code("wxnewaccount001");
    let resp = component
        .push_authorized(&app, "authorized", "wxnewaccount001", &code)
        .await;
    assert_eq!(resp.status(), 200);
    app.drain().await;
    let accounts = app
        .admin_json(&format!("/components/{}/authorizers", component.id))
        .await;
    assert_eq!(accounts["items"][0]["status"], "authorized", "{accounts}");
    // What the previous release held is still there.
    let listed = app.admin_json("/deliveries?limit=50").await;
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == PENDING));
}
