//! Upgrade in place: a store written by the previous release (one row or
//! document per event, which was also its only delivery) is opened by this
//! build, on the backend under test. Its waiting and dead events become
//! events with one delivery each, keep their ids, and are delivered.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;

use crate::fakes::FakePuppet;
use crate::helpers::{manual_clock, spawn_stepped_app, test_mongo_uri, Corp};
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
    let start = clock.now_ms();
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
