//! The store contract, run against the backend under test (the embedded
//! store, or MongoDB when `WXKF_TEST_STORE=mongo`; `scripts/test` runs
//! both), each test on its own database.

use std::sync::Arc;
use std::time::Duration;

use wxkf_manager::clock::UnixMillis;

use wxkf_manager::domain::{
    ClaimId, CorpId, DeliveryId, EventId, KfId, RegisterBody, Registration,
};
use wxkf_manager::store::mongo::MongoStore;
use wxkf_manager::store::sqlite::SqliteStore;
use wxkf_manager::store::Retention;
use wxkf_manager::store::{
    AttemptResult, Claim, DeliveryStatus, InsertOutcome, NewDelivery, NewEvent, Outcome,
    PayloadKind, Sealer, Store,
};
use wxkf_manager::views::{AppView, SubscriptionView};

use crate::support::{random_string, require_mongo, test_mongo_uri, Corp};

pub struct Backends {
    pub stores: Vec<(&'static str, Arc<dyn Store>)>,
    _dir: tempfile::TempDir,
}

const RETENTION: Retention = Retention {
    finished: Duration::from_secs(3 * 24 * 3600),
    dead: Duration::from_secs(30 * 24 * 3600),
};

/// The contract runs with secrets sealed at rest, so every store path that
/// reads or compares a secret is exercised through encryption.
fn sealer() -> Sealer {
    Sealer::new(Some(&[42; 32]))
}

/// The contract's times are small numbers (1970): the server's TTL monitor,
/// which sweeps by the real clock every minute, would remove finished
/// deliveries in the middle of a test. The contract checks retention through
/// `purge`, which both backends share; the TTL index is MongoDB's own
/// shortcut to the same rule, so it is dropped here.
async fn without_ttl_sweeps(uri: &str) {
    mongodb::Client::with_uri_str(uri)
        .await
        .unwrap()
        .default_database()
        .unwrap()
        .collection::<mongodb::bson::Document>("wxkf_events")
        .drop_index("retention_ttl")
        .await
        .unwrap();
}

pub async fn backends() -> Backends {
    let dir = tempfile::tempdir().unwrap();
    let store: (&'static str, Arc<dyn Store>) = match test_mongo_uri() {
        Some(uri) => {
            let store = MongoStore::connect(&uri, RETENTION, sealer())
                .await
                .unwrap();
            without_ttl_sweeps(&uri).await;
            ("mongo", Arc::new(store))
        }
        None => (
            "sqlite",
            Arc::new(SqliteStore::open(dir.path(), sealer()).unwrap()),
        ),
    };
    Backends {
        stores: vec![store],
        _dir: dir,
    }
}

fn registration(corp: &Corp, kf: &str, endpoint: &str) -> Registration {
    Registration::try_from(RegisterBody {
        kf_id: Some(kf.into()),
        kf_name: Some(String::new()),
        endpoint: Some(endpoint.into()),
        corp_id: Some(corp.id.clone()),
        corp_secret: Some(corp.secret.clone()),
        token: Some(corp.token.clone()),
        encoding_aes_key: Some(corp.key.clone()),
    })
    .unwrap()
}

/// An event with one delivery to the puppet of `kf`; the delivery's id is
/// the event's text (as after an upgrade): `delivery_of` gives it.
fn event(corp: &str, kf: &str, token: &str, ms: i64) -> NewEvent {
    let id = uuid::Uuid::new_v4().to_string();
    let mut delivery = NewDelivery::to_puppet(
        CorpId::parse(corp).unwrap(),
        Some(KfId::parse(kf).unwrap()),
        true,
    );
    delivery.id = DeliveryId::from(id.as_str());
    NewEvent {
        id: EventId::from(id),
        source: corp.into(),
        dedup_key: format!("kf|{corp}|{kf}|{token}"),
        kind: PayloadKind::Xml,
        body: format!("<xml>{token}</xml>").into_bytes(),
        query: "msg_signature=a&timestamp=1&nonce=2".into(),
        received_at: at(ms),
        message: None,
        deliveries: vec![delivery],
    }
}

/// The one delivery of an event made by `event`.
fn delivery_of(e: &NewEvent) -> DeliveryId {
    e.deliveries[0].id.clone()
}

/// The end of an attempt at `delivery` under `claim`.
fn outcome(delivery: DeliveryId, claim: impl ToString, result: &AttemptResult) -> Outcome {
    Outcome {
        delivery,
        claim: ClaimId::from(claim.to_string()),
        result: result.clone(),
    }
}

/// An instant of the contract's made-up timeline, in milliseconds.
fn at(ms: i64) -> UnixMillis {
    UnixMillis::from_millis(ms)
}

fn claim(owner: &str, now: i64) -> Claim {
    Claim::new(owner, at(now), at(now + 30_000))
}

#[tokio::test]
async fn registrations_upsert_and_go_online_and_offline() {
    for (name, store) in backends().await.stores {
        let corp = Corp::new("wwreg");
        let kf = KfId::parse("wkreg").unwrap();
        assert!(store.get_puppet(&kf).await.unwrap().is_none(), "{name}");
        store
            .save_registration(&registration(&corp, "wkreg", "http://a:1"), at(1_000))
            .await
            .unwrap();
        store
            .save_registration(&registration(&corp, "wkreg", "http://b:2"), at(2_000))
            .await
            .unwrap();
        let p = store.get_puppet(&kf).await.unwrap().unwrap();
        assert_eq!(p.registration.endpoint.as_str(), "http://b:2/", "{name}");
        assert!(p.online);
        assert_eq!(p.last_online_at, Some(at(2_000)), "{name}");

        let other_corp = CorpId::parse("wwelse").unwrap();
        assert!(
            !store
                .set_offline(&kf, &other_corp, at(3_000))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(store
            .set_offline(&kf, &CorpId::parse("wwreg").unwrap(), at(3_000))
            .await
            .unwrap());
        let p = store.get_puppet(&kf).await.unwrap().unwrap();
        assert!(!p.online, "{name}");
        assert_eq!(p.offline_since, Some(at(3_000)), "{name}");

        store
            .save_registration(&registration(&corp, "wkreg", "http://b:2"), at(4_000))
            .await
            .unwrap();
        let p = store.get_puppet(&kf).await.unwrap().unwrap();
        assert!(p.online && p.offline_since.is_none(), "{name}");
    }
}

#[tokio::test]
async fn corp_credentials_are_the_distinct_sets_of_its_puppets() {
    for (name, store) in backends().await.stores {
        let corp = Corp::new("wwcreds");
        let second = corp.another_app();
        store
            .save_registration(&registration(&corp, "wk1", "http://a:1"), at(1))
            .await
            .unwrap();
        store
            .save_registration(&registration(&corp, "wk2", "http://a:1"), at(1))
            .await
            .unwrap();
        let sets = store
            .corp_credentials(&CorpId::parse("wwcreds").unwrap())
            .await
            .unwrap();
        assert_eq!(sets.len(), 1, "{name}");
        store
            .save_registration(&registration(&second, "wk3", "http://a:1"), at(1))
            .await
            .unwrap();
        let sets = store
            .corp_credentials(&CorpId::parse("wwcreds").unwrap())
            .await
            .unwrap();
        assert_eq!(sets.len(), 2, "{name}");
        let tokens: Vec<&str> = sets.iter().map(|s| s.token.expose()).collect();
        assert!(tokens.contains(&corp.token.as_str()) && tokens.contains(&second.token.as_str()));
        assert_eq!(store.all_credentials().await.unwrap().len(), 2, "{name}");
        assert!(store
            .corp_credentials(&CorpId::parse("wwnone").unwrap())
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test]
async fn a_duplicate_event_is_reported_not_stored() {
    for (name, store) in backends().await.stores {
        let first = event("wwdup", "wk1", "T", 1_000);
        assert_eq!(
            store.insert_event(&first).await.unwrap(),
            InsertOutcome::Stored,
            "{name}"
        );
        let mut again = event("wwdup", "wk1", "T", 2_000);
        again.id = EventId::generate();
        assert_eq!(
            store.insert_event(&again).await.unwrap(),
            InsertOutcome::Duplicate,
            "{name}"
        );
        assert!(
            store
                .get_delivery(&delivery_of(&again))
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
    }
}

/// A driver retries a write whose answer was lost; a server that does not
/// recognise the retry refuses it on the dedup key it already holds. That
/// event is stored (and must be handed to its dispatcher), not a resend.
#[tokio::test]
async fn a_retried_write_of_a_stored_event_is_stored_not_a_duplicate() {
    for (name, store) in backends().await.stores {
        let first = event("wwretry", "wk1", "T", 1_000);
        for try_ in ["first", "retried"] {
            assert_eq!(
                store.insert_event(&first).await.unwrap(),
                InsertOutcome::Stored,
                "{name}: {try_} write"
            );
        }
        let delivery = store.get_delivery(&delivery_of(&first)).await.unwrap();
        assert_eq!(
            delivery.map(|d| d.status),
            Some(DeliveryStatus::Pending),
            "{name}: stored once"
        );
        let mut resend = event("wwretry", "wk1", "T", 2_000);
        resend.id = EventId::generate();
        assert_eq!(
            store.insert_event(&resend).await.unwrap(),
            InsertOutcome::Duplicate,
            "{name}: another event with the key is a resend"
        );
    }
}

#[tokio::test]
async fn delivery_state_moves_through_claim_retry_and_delivery() {
    for (name, store) in backends().await.stores {
        let mut e = event("wwstate", "wk1", "T", 1_000);
        e.deliveries[0].coalesce = false;
        store.insert_event(&e).await.unwrap();
        assert_eq!(
            store.next_due_at().await.unwrap(),
            Some(at(1_000)),
            "{name}"
        );

        let got = store.claim_due(&claim("a", 1_000), 10).await.unwrap();
        assert_eq!(got.len(), 1, "{name}");
        let claim_id = got[0].claim_id.clone().unwrap();
        assert!(
            store
                .claim_due(&claim("b", 1_001), 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}: leased"
        );
        let retry = AttemptResult::Retry {
            next_attempt_at: at(5_000),
            error: "HTTP 500".into(),
        };
        assert!(
            !store
                .finish_attempt(&outcome(delivery_of(&e), "not-my-claim", &retry), at(1_100))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            store
                .finish_attempt(&outcome(delivery_of(&e), &claim_id, &retry), at(1_100))
                .await
                .unwrap(),
            "{name}"
        );
        let stored = store.get_delivery(&delivery_of(&e)).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.attempts),
            (DeliveryStatus::Pending, 1),
            "{name}"
        );
        assert_eq!(stored.last_error.as_deref(), Some("HTTP 500"));

        assert!(
            store
                .claim_due(&claim("a", 4_999), 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}: not due yet"
        );
        let got = store.claim_due(&claim("a", 5_000), 10).await.unwrap();
        assert_eq!(got.len(), 1, "{name}");
        let claim_id = got[0].claim_id.clone().unwrap();
        assert!(store
            .finish_attempt(
                &outcome(delivery_of(&e), &claim_id, &AttemptResult::Delivered),
                at(5_100)
            )
            .await
            .unwrap());
        let stored = store.get_delivery(&delivery_of(&e)).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.attempts),
            (DeliveryStatus::Delivered, 2),
            "{name}"
        );
        assert_eq!(stored.delivered_at, Some(at(5_100)));
        assert!(
            store
                .claim_due(&claim("a", 99_999), 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn dead_letters_and_parking_and_waking() {
    for (name, store) in backends().await.stores {
        let e = event("wwpark", "wkpark", "T", 1_000);
        store.insert_event(&e).await.unwrap();
        let got = store.claim_due(&claim("a", 1_000), 10).await.unwrap();
        let cid = got[0].claim_id.clone().unwrap();
        store
            .finish_attempt(
                &outcome(delivery_of(&e), &cid, &AttemptResult::Parked),
                at(1_000),
            )
            .await
            .unwrap();
        let stored = store.get_delivery(&delivery_of(&e)).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.attempts),
            (DeliveryStatus::Parked, 0),
            "{name}"
        );
        assert!(
            store
                .claim_due(&claim("a", 50_000), 10)
                .await
                .unwrap()
                .is_empty(),
            "{name}: parked waits"
        );

        let (corp, kf) = (
            CorpId::parse("wwpark").unwrap(),
            KfId::parse("wkpark").unwrap(),
        );
        assert_eq!(
            store.wake_kf(&corp, &kf, at(60_000)).await.unwrap(),
            1,
            "{name}"
        );
        let got = store.claim_due(&claim("a", 60_000), 10).await.unwrap();
        assert_eq!(got.len(), 1, "{name}");
        let cid = got[0].claim_id.clone().unwrap();
        let dead = AttemptResult::Dead {
            error: "connection failed".into(),
        };
        store
            .finish_attempt(&outcome(delivery_of(&e), &cid, &dead), at(61_000))
            .await
            .unwrap();
        let stored = store.get_delivery(&delivery_of(&e)).await.unwrap().unwrap();
        assert_eq!(stored.status, DeliveryStatus::Dead, "{name}");
        assert_eq!(stored.last_error.as_deref(), Some("connection failed"));
        assert_eq!(
            store.wake_kf(&corp, &kf, at(70_000)).await.unwrap(),
            0,
            "{name}: dead is not woken"
        );
    }
}

#[tokio::test]
async fn the_newest_wake_up_supersedes_older_ones() {
    for (name, store) in backends().await.stores {
        let events: Vec<NewEvent> = (0..4)
            .map(|i| event("wwco", "wkco", &format!("T{i}"), 1_000 + i))
            .collect();
        for e in &events {
            store.insert_event(e).await.unwrap();
        }
        let other = event("wwco", "wkother", "X", 1_000);
        store.insert_event(&other).await.unwrap();

        let got = store.claim_due(&claim("a", 2_000), 10).await.unwrap();
        let mut ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
        ids.sort();
        let mut want = vec![events[3].id.as_str(), other.id.as_str()];
        want.sort();
        assert_eq!(ids, want, "{name}");
        for e in &events[..3] {
            assert_eq!(
                store
                    .get_delivery(&delivery_of(e))
                    .await
                    .unwrap()
                    .unwrap()
                    .status,
                DeliveryStatus::Superseded,
                "{name}"
            );
        }
    }
}

/// Wake-ups handed over at insert (stored already leased) park one by one
/// while their puppet is away; after each parking the newest waiting one
/// stands for the older ones, so one waits per kfId. One still in flight
/// (leased) is left alone, and so is another kfId's.
#[tokio::test]
async fn parked_wake_ups_keep_only_the_newest_waiting() {
    use wxkf_manager::store::Lease;
    for (name, store) in backends().await.stores {
        let leased = |e: &mut NewEvent, i: usize| {
            e.deliveries[0].lease = Some(Lease {
                owner: "a".into(),
                until: at(30_000),
                claim_id: ClaimId::from(format!("fresh-{name}-{i}")),
            });
        };
        let mut events: Vec<NewEvent> = (0..4)
            .map(|i| event("wwcp", "wkcp", &format!("T{i}"), 1_000 + i as i64))
            .collect();
        let mut other = event("wwcp", "wkcpother", "X", 1_000);
        leased(&mut other, 9);
        store.insert_event(&other).await.unwrap();
        for (i, e) in events.iter_mut().enumerate() {
            leased(e, i);
            store.insert_event(e).await.unwrap();
        }
        let kfs = [("wwcp".to_owned(), "wkcp".to_owned())];
        let status = |i: usize| {
            let (store, id) = (store.clone(), delivery_of(&events[i]));
            async move { store.get_delivery(&id).await.unwrap().unwrap() }
        };
        // T0, T2 and the other kfId's park (out of order); T1 and T3 are in flight.
        for (id, claim_id) in [(0, 0), (2, 2)]
            .map(|(i, c)| (delivery_of(&events[i]), format!("fresh-{name}-{c}")))
            .into_iter()
            .chain([(delivery_of(&other), format!("fresh-{name}-9"))])
        {
            let parked = store
                .finish_attempt(&outcome(id, claim_id, &AttemptResult::Parked), at(2_000))
                .await
                .unwrap();
            assert!(parked, "{name}");
        }
        assert_eq!(
            store.coalesce_parked(&kfs, at(2_000)).await.unwrap(),
            1,
            "{name}: T2 stands for T0"
        );
        let older = status(0).await;
        assert_eq!(older.status, DeliveryStatus::Superseded, "{name}");
        assert_eq!(
            status(1).await.status,
            DeliveryStatus::Pending,
            "{name}: in flight"
        );
        assert_eq!(status(2).await.status, DeliveryStatus::Parked, "{name}");
        let other_now = store
            .get_delivery(&delivery_of(&other))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            other_now.status,
            DeliveryStatus::Parked,
            "{name}: its own kfId"
        );

        // T1 parks after T2 (an older one finishing late): T2 still stands.
        store
            .finish_attempt(
                &outcome(
                    delivery_of(&events[1]),
                    format!("fresh-{name}-1"),
                    &AttemptResult::Parked,
                ),
                at(3_000),
            )
            .await
            .unwrap();
        assert_eq!(
            store.coalesce_parked(&kfs, at(3_000)).await.unwrap(),
            1,
            "{name}"
        );
        assert_eq!(status(1).await.status, DeliveryStatus::Superseded, "{name}");
        assert_eq!(status(2).await.status, DeliveryStatus::Parked, "{name}");

        // The puppet comes back: of what parked, only the newest is woken.
        let (corp, kf) = (CorpId::parse("wwcp").unwrap(), KfId::parse("wkcp").unwrap());
        store.wake_kf(&corp, &kf, at(4_000)).await.unwrap();
        assert_eq!(status(2).await.status, DeliveryStatus::Pending, "{name}");
        for i in [0, 1] {
            assert_eq!(status(i).await.status, DeliveryStatus::Superseded, "{name}");
        }
    }
}

/// Claims take the earliest due first, lane by lane: a subscription the
/// claimer holds its share of gives none, and the other lanes (another
/// subscription, the puppets) are taken as if it had no backlog.
#[tokio::test]
async fn a_claim_skips_the_lanes_it_is_told_to_and_takes_the_others() {
    use wxkf_manager::store::NewDelivery;
    let to = |subscription: &str, token: &str, at: i64| {
        let mut e = event("wwlane", "wklane", token, at);
        e.deliveries = vec![NewDelivery::to_subscription(
            CorpId::parse("wwlane").unwrap(),
            &subscription.into(),
        )];
        e
    };
    for (name, store) in backends().await.stores {
        let mut backlog = Vec::new();
        for i in 0..10 {
            let e = to("sub-a", &format!("A{i}"), 1_000 + i);
            store.insert_event(&e).await.unwrap();
            backlog.push(e.deliveries[0].id.clone());
        }
        let mut others = Vec::new();
        for (i, e) in [to("sub-b", "B0", 2_000), to("sub-b", "B1", 2_001)]
            .into_iter()
            .chain([event("wwlane", "wklane", "P0", 3_000)])
            .enumerate()
        {
            store.insert_event(&e).await.unwrap();
            others.push((i, e.deliveries[0].id.clone()));
        }
        let ids = |got: &[wxkf_manager::store::Delivery]| {
            let mut ids: Vec<DeliveryId> = got.iter().map(|d| d.id.clone()).collect();
            ids.sort();
            ids
        };
        // The earliest due first, whichever lane.
        let got = store.claim_due(&claim("a", 5_000), 4).await.unwrap();
        let mut want = backlog[..4].to_vec();
        want.sort();
        assert_eq!(ids(&got), want, "{name}: the earliest due");
        // `sub-a` held in full: the other lanes, though due later.
        let mut skipping = claim("a", 5_000);
        skipping.skip = vec!["sub-a".into()];
        let got = store.claim_due(&skipping, 4).await.unwrap();
        let mut want: Vec<DeliveryId> = others.iter().map(|(_, id)| id.clone()).collect();
        want.sort();
        assert_eq!(ids(&got), want, "{name}: none of sub-a's");
        assert_eq!(
            store.next_due_at().await.unwrap(),
            Some(at(1_004)),
            "{name}: sub-a's next, unleased"
        );
        let got = store.claim_due(&claim("a", 5_000), 10).await.unwrap();
        assert_eq!(got.len(), 6, "{name}: the rest of sub-a's");
    }
}

#[tokio::test]
async fn leases_expire_and_an_instance_takes_back_its_own_claims() {
    for (name, store) in backends().await.stores {
        let mut e = event("wwlease", "wk1", &random_string(5), 1_000);
        e.deliveries[0].coalesce = false;
        store.insert_event(&e).await.unwrap();
        let a = store.claim_due(&claim("a", 1_000), 1).await.unwrap();
        let a_claim = a[0].claim_id.clone().unwrap();
        // Another instance takes it over after the lease (30 s) ends.
        let b = store.claim_due(&claim("b", 31_001), 1).await.unwrap();
        assert_eq!(b.len(), 1, "{name}");
        assert!(
            !store
                .finish_attempt(
                    &outcome(delivery_of(&e), &a_claim, &AttemptResult::Delivered),
                    at(31_002)
                )
                .await
                .unwrap(),
            "{name}: stale worker"
        );
        // b restarts: its claims come back at once, before the lease ends.
        assert_eq!(store.release_claims("b").await.unwrap(), 1, "{name}");
        assert_eq!(
            store.claim_due(&claim("b", 31_003), 1).await.unwrap().len(),
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn migrations_run_once_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path(), sealer()).unwrap();
    assert_eq!(
        sqlite.migrate_blocking().unwrap(),
        0,
        "already applied at open"
    );
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn two_managers_can_start_together_on_one_mongodb_and_migrate_once() {
    let uri = require_mongo();
    let (a, b) = tokio::join!(
        MongoStore::connect(&uri, RETENTION, sealer()),
        MongoStore::connect(&uri, RETENTION, sealer())
    );
    let (a, _b) = (a.expect("first manager"), b.expect("second manager"));
    assert_eq!(a.migrate().await.unwrap(), 0, "second migrate is a no-op");
}

/// Store `e`, claim it at `at` and record `result`: the production path
/// (`finish_attempts`), one outcome per event.
async fn finish_as(store: &Arc<dyn Store>, e: &NewEvent, ms: i64, result: AttemptResult) {
    store.insert_event(e).await.unwrap();
    let mut lease = claim("owner", ms);
    lease.now = lease.now.max(e.received_at);
    let got = store.claim_due(&lease, 100).await.unwrap();
    let mine = got
        .iter()
        .find(|g| g.id == delivery_of(e))
        .expect("claimed");
    let recorded = store
        .finish_attempts(
            &[Outcome {
                delivery: delivery_of(e),
                claim: mine.claim_id.clone().unwrap(),
                result,
            }],
            at(ms),
        )
        .await
        .unwrap();
    assert_eq!(recorded, [true]);
}

/// One rule (`Retention::of` on the status) decides what a purge removes,
/// on both backends: finished events after the retention, dead letters and
/// unroutable events after the dead-letter retention, waiting ones never.
#[tokio::test]
async fn each_status_is_kept_as_long_as_its_retention() {
    let (day, hour) = (24 * 3_600_000i64, 3_600_000i64);
    for (name, store) in backends().await.stores {
        let t = 1_000;
        let plain = |kf: &str, token: &str| {
            let mut e = event("wwkeep", kf, token, t);
            e.deliveries[0].coalesce = false;
            e
        };
        let mut by_status = Vec::new();
        for (kf, result, status) in [
            ("wkdel", AttemptResult::Delivered, DeliveryStatus::Delivered),
            (
                "wkdead",
                AttemptResult::Dead { error: "x".into() },
                DeliveryStatus::Dead,
            ),
            ("wkpark", AttemptResult::Parked, DeliveryStatus::Parked),
            (
                "wksup",
                AttemptResult::Superseded { by: "other".into() },
                DeliveryStatus::Superseded,
            ),
            (
                "wkretry",
                AttemptResult::Retry {
                    next_attempt_at: at(50 * day),
                    error: "x".into(),
                },
                DeliveryStatus::Pending,
            ),
        ] {
            let e = plain(kf, kf);
            finish_as(&store, &e, t, result).await;
            by_status.push((delivery_of(&e), status));
        }
        let mut unroutable = plain("wkx", "unroutable");
        unroutable.deliveries[0].kf_id = None;
        store.insert_event(&unroutable).await.unwrap();
        by_status.push((delivery_of(&unroutable), DeliveryStatus::Unroutable));
        for (id, status) in &by_status {
            let stored = store.get_delivery(id).await.unwrap().unwrap();
            assert_eq!(stored.status, *status, "{name}");
        }

        let survivors = |store: Arc<dyn Store>, ids: Vec<(DeliveryId, DeliveryStatus)>| async move {
            let mut kept = Vec::new();
            for (id, status) in ids {
                if store.get_delivery(&id).await.unwrap().is_some() {
                    kept.push(status);
                }
            }
            kept
        };
        // Just inside the 3-day retention: nothing goes.
        store
            .purge(&RETENTION, at(t + 3 * day - hour))
            .await
            .unwrap();
        assert_eq!(
            survivors(store.clone(), by_status.clone()).await.len(),
            6,
            "{name}"
        );
        // Past it: delivered and superseded go.
        store
            .purge(&RETENTION, at(t + 3 * day + hour))
            .await
            .unwrap();
        assert_eq!(
            survivors(store.clone(), by_status.clone()).await,
            [
                DeliveryStatus::Dead,
                DeliveryStatus::Parked,
                DeliveryStatus::Pending,
                DeliveryStatus::Unroutable
            ],
            "{name}"
        );
        // Past 30 days: dead letters and unroutable events go; waiting ones stay.
        store
            .purge(&RETENTION, at(t + 30 * day + hour))
            .await
            .unwrap();
        assert_eq!(
            survivors(store.clone(), by_status.clone()).await,
            [DeliveryStatus::Parked, DeliveryStatus::Pending],
            "{name}"
        );
    }
}

/// The finisher records many outcomes in one write; one of them carries a
/// claim that was taken over meanwhile and must change nothing.
#[tokio::test]
async fn a_mixed_batch_of_outcomes_is_recorded_and_a_stale_claim_is_refused() {
    for (name, store) in backends().await.stores {
        let kinds = [
            "delivered",
            "retry",
            "dead",
            "parked",
            "superseded",
            "stale",
        ];
        let mut events = Vec::new();
        for kind in kinds {
            let mut e = event("wwbatch", &format!("wk{kind}"), kind, 1_000);
            e.deliveries[0].coalesce = false;
            store.insert_event(&e).await.unwrap();
            events.push(e);
        }
        let claimed = store.claim_due(&claim("a", 1_000), 10).await.unwrap();
        assert_eq!(claimed.len(), 6, "{name}");
        let claim_of = |e: &NewEvent| {
            claimed
                .iter()
                .find(|c| c.id == delivery_of(e))
                .and_then(|c| c.claim_id.clone())
                .unwrap()
        };
        // The stale one's lease ran out and another manager took it.
        let stale = &events[5];
        let old_claim = claim_of(stale);
        let retaken = store.claim_due(&claim("b", 40_000), 10).await.unwrap();
        assert_eq!(retaken.len(), 6, "{name}: every lease ran out");
        let results = [
            AttemptResult::Delivered,
            AttemptResult::Retry {
                next_attempt_at: at(90_000),
                error: "HTTP 500".into(),
            },
            AttemptResult::Dead {
                error: "gave up".into(),
            },
            AttemptResult::Parked,
            AttemptResult::Superseded {
                by: events[0].id.to_string(),
            },
        ];
        let claim_b = |e: &NewEvent| {
            retaken
                .iter()
                .find(|c| c.id == delivery_of(e))
                .and_then(|c| c.claim_id.clone())
                .unwrap()
        };
        let mut items: Vec<Outcome> = events[..5]
            .iter()
            .zip(results)
            .map(|(e, result)| Outcome {
                delivery: delivery_of(e),
                claim: claim_b(e),
                result,
            })
            .collect();
        items.push(Outcome {
            delivery: delivery_of(stale),
            claim: old_claim,
            result: AttemptResult::Delivered,
        });
        let recorded = store.finish_attempts(&items, at(41_000)).await.unwrap();
        assert_eq!(recorded, [true, true, true, true, true, false], "{name}");

        let got = |i: usize| {
            let store = store.clone();
            let id = delivery_of(&events[i]);
            async move { store.get_delivery(&id).await.unwrap().unwrap() }
        };
        let delivered = got(0).await;
        assert_eq!(
            (delivered.status, delivered.attempts, delivered.delivered_at),
            (DeliveryStatus::Delivered, 1, Some(at(41_000))),
            "{name}"
        );
        let retry = got(1).await;
        assert_eq!(
            (retry.status, retry.attempts, retry.next_attempt_at),
            (DeliveryStatus::Pending, 1, at(90_000)),
            "{name}"
        );
        assert_eq!(retry.last_error.as_deref(), Some("HTTP 500"));
        let dead = got(2).await;
        assert_eq!(
            (dead.status, dead.attempts),
            (DeliveryStatus::Dead, 1),
            "{name}"
        );
        assert_eq!(dead.last_error.as_deref(), Some("gave up"));
        let parked = got(3).await;
        assert_eq!(
            (parked.status, parked.attempts),
            (DeliveryStatus::Parked, 0),
            "{name}: parking is not an attempt"
        );
        let superseded = got(4).await;
        assert_eq!(
            (superseded.status, superseded.attempts),
            (DeliveryStatus::Superseded, 0),
            "{name}"
        );
        let untouched = got(5).await;
        assert_eq!(
            (untouched.status, untouched.attempts),
            (DeliveryStatus::Pending, 0),
            "{name}: the stale outcome changed nothing"
        );
        assert_eq!(
            untouched.claim_id,
            Some(claim_b(stale)),
            "{name}: still b's"
        );
    }
}

/// A status or payload kind that is not ours (a foreign writer, a bad
/// restore) is reported as corrupt, never read as some valid status.
#[tokio::test]
async fn a_row_with_an_unknown_status_is_corrupt_not_coerced() {
    use wxkf_manager::store::{DeliveryFilter, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let mongo_uri = test_mongo_uri();
    let stores: Vec<(&str, Arc<dyn Store>)> = match &mongo_uri {
        Some(uri) => vec![(
            "mongo",
            Arc::new(MongoStore::connect(uri, RETENTION, sealer()).await.unwrap()),
        )],
        None => vec![(
            "sqlite",
            Arc::new(SqliteStore::open(dir.path(), sealer()).unwrap()),
        )],
    };
    for (name, store) in stores {
        let e = event("wwcorrupt", "wkcorrupt", "T", 1_000);
        store.insert_event(&e).await.unwrap();
        if name == "sqlite" {
            let raw = rusqlite::Connection::open(dir.path().join("wxkf-manager.sqlite3")).unwrap();
            raw.execute(
                "UPDATE deliveries SET status = 'lost' WHERE id = ?1",
                [&e.id],
            )
            .unwrap();
        } else {
            let client = mongodb::Client::with_uri_str(mongo_uri.as_deref().unwrap())
                .await
                .unwrap();
            client
                .default_database()
                .unwrap()
                .collection::<mongodb::bson::Document>("wxkf_events")
                .update_one(
                    mongodb::bson::doc! {"_id": &e.id},
                    mongodb::bson::doc! {"$set": {"deliveries.0.status": "lost"}},
                )
                .await
                .unwrap();
        }
        let got = store.get_delivery(&delivery_of(&e)).await;
        assert!(
            matches!(got, Err(StoreError::Corrupt(_))),
            "{name}: {got:?}"
        );
        let listed = store
            .list_deliveries(&DeliveryFilter {
                limit: 10,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(listed, Err(StoreError::Corrupt(_))),
            "{name}: {listed:?}"
        );
    }
}

/// Renewing leases extends only the pairs this owner still holds.
#[tokio::test]
async fn leases_are_renewed_only_where_the_claim_still_holds() {
    for (name, store) in backends().await.stores {
        let mut ids = Vec::new();
        for token in ["R1", "R2", "R3"] {
            let mut e = event("wwrenew", &format!("wk{token}"), token, 1_000);
            e.deliveries[0].coalesce = false;
            store.insert_event(&e).await.unwrap();
            ids.push(delivery_of(&e));
        }
        let got = store.claim_due(&claim("a", 1_000), 10).await.unwrap();
        let claim_of = |id: &DeliveryId| {
            got.iter()
                .find(|g| &g.id == id)
                .and_then(|g| g.claim_id.clone())
                .unwrap()
        };
        let held = vec![
            (ids[0].clone(), claim_of(&ids[0])),
            (ids[1].clone(), ClaimId::from("not-this-claim")),
            (ids[2].clone(), claim_of(&ids[2])),
        ];
        let mut renewed = store.renew_leases("a", &held, at(100_000)).await.unwrap();
        renewed.sort();
        let mut expected = vec![ids[0].clone(), ids[2].clone()];
        expected.sort();
        assert_eq!(renewed, expected, "{name}");
        assert!(
            store
                .renew_leases("b", &held, at(100_000))
                .await
                .unwrap()
                .is_empty(),
            "{name}: not b's"
        );
        // Past the first lease only the one not renewed can be taken.
        let taken = store.claim_due(&claim("b", 50_000), 10).await.unwrap();
        assert_eq!(
            taken.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            [ids[1].clone()],
            "{name}"
        );
    }
}

/// Operators read deliveries newest first, filtered and paged.
#[tokio::test]
async fn operator_lists_are_newest_first_filtered_and_paged() {
    use wxkf_manager::store::DeliveryFilter;
    for (name, store) in backends().await.stores {
        let mut ids = Vec::new();
        for i in 0..5 {
            let kf = if i % 2 == 0 { "wklistA" } else { "wklistB" };
            let mut e = event("wwlist", kf, &format!("L{i}"), 1_000 + i);
            e.deliveries[0].coalesce = false;
            store.insert_event(&e).await.unwrap();
            ids.push(delivery_of(&e));
        }
        let mut other = event("wwlist2", "wklistA", "OTHER", 2_000);
        other.deliveries[0].coalesce = false;
        store.insert_event(&other).await.unwrap();
        let list = |filter: DeliveryFilter| {
            let store = store.clone();
            async move {
                store
                    .list_deliveries(&filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.id)
                    .collect::<Vec<_>>()
            }
        };
        let all = list(DeliveryFilter {
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(all.len(), 6, "{name}");
        assert_eq!(all[0], delivery_of(&other), "{name}: newest first");
        assert_eq!(
            all[1..].to_vec(),
            ids.iter().rev().cloned().collect::<Vec<_>>(),
            "{name}"
        );
        let page = list(DeliveryFilter {
            limit: 2,
            offset: 1,
            ..Default::default()
        })
        .await;
        assert_eq!(page, [ids[4].clone(), ids[3].clone()], "{name}: paged");
        let of_a = list(DeliveryFilter {
            kf_id: Some("wklistA".into()),
            corp_id: Some("wwlist".into()),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(
            of_a,
            [ids[4].clone(), ids[2].clone(), ids[0].clone()],
            "{name}"
        );
        let pending = list(DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            corp_id: Some("wwlist2".into()),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(pending, [delivery_of(&other)], "{name}");
        let none = list(DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert!(none.is_empty(), "{name}");
    }
}

/// Re-drive: a dead or parked delivery is due again now with a fresh
/// retry window; anything else is left alone.
#[tokio::test]
async fn re_drive_gives_dead_and_parked_deliveries_a_fresh_window() {
    for (name, store) in backends().await.stores {
        let mut dead = event("wwredrive", "wkrd", "DEAD", 1_000);
        dead.deliveries[0].coalesce = false;
        finish_as(
            &store,
            &dead,
            1_000,
            AttemptResult::Dead {
                error: "gave up".into(),
            },
        )
        .await;
        let mut dead2 = event("wwredrive", "wkrd", "DEAD2", 1_000);
        dead2.deliveries[0].coalesce = false;
        finish_as(
            &store,
            &dead2,
            1_000,
            AttemptResult::Dead {
                error: "gave up".into(),
            },
        )
        .await;
        let mut parked = event("wwredrive", "wkrd2", "PARKED", 1_000);
        parked.deliveries[0].coalesce = false;
        finish_as(&store, &parked, 1_000, AttemptResult::Parked).await;
        let mut delivered = event("wwredrive", "wkrd", "DONE", 1_000);
        delivered.deliveries[0].coalesce = false;
        finish_as(&store, &delivered, 1_000, AttemptResult::Delivered).await;

        assert!(
            store
                .redrive(&delivery_of(&dead), at(50_000))
                .await
                .unwrap(),
            "{name}"
        );
        let again = store
            .get_delivery(&delivery_of(&dead))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                again.status,
                again.window_start,
                again.next_attempt_at,
                again.attempts
            ),
            (DeliveryStatus::Pending, at(50_000), at(50_000), 1),
            "{name}: due now, a fresh window, attempts kept"
        );
        assert!(
            store
                .redrive(&delivery_of(&parked), at(50_000))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .redrive(&delivery_of(&delivered), at(50_000))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .redrive(&"no-such-id".into(), at(50_000))
                .await
                .unwrap(),
            "{name}"
        );
        let kf = KfId::parse("wkrd").unwrap();
        assert_eq!(
            store.redrive_dead_of_kf(&kf, at(60_000)).await.unwrap(),
            1,
            "{name}: only DEAD2 was still dead"
        );
        let claimed = store.claim_due(&claim("a", 60_000), 10).await.unwrap();
        assert_eq!(claimed.len(), 3, "{name}: the three re-driven are due");
        assert!(
            store
                .delete_delivery(&delivery_of(&delivered))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            store
                .get_delivery(&delivery_of(&delivered))
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
    }
}

/// Rotation replaces the credentials of the puppets that use the previous
/// token (or all of the corp's), and nothing else.
#[tokio::test]
async fn credentials_rotate_for_the_puppets_that_use_them() {
    use wxkf_manager::domain::CredentialSet;
    for (name, store) in backends().await.stores {
        let corp = Corp::new("wwrotate");
        let second_app = corp.another_app();
        store
            .save_registration(&registration(&corp, "wkr1", "http://a:1"), at(1))
            .await
            .unwrap();
        store
            .save_registration(&registration(&corp, "wkr2", "http://a:1"), at(1))
            .await
            .unwrap();
        store
            .save_registration(&registration(&second_app, "wkr3", "http://a:1"), at(1))
            .await
            .unwrap();
        let fresh = Corp::new("wwrotate");
        let set = CredentialSet::parse(Some(&fresh.token), Some(&fresh.key)).unwrap();
        let corp_id = CorpId::parse("wwrotate").unwrap();
        let n = store
            .rotate_credentials(&corp_id, &set, Some(&corp.token), at(2))
            .await
            .unwrap();
        assert_eq!(n, 2, "{name}: the two puppets of the first app");
        let sets = store.corp_credentials(&corp_id).await.unwrap();
        let tokens: std::collections::HashSet<String> =
            sets.iter().map(|s| s.token.expose().to_owned()).collect();
        assert_eq!(
            tokens,
            [fresh.token.clone(), second_app.token.clone()]
                .into_iter()
                .collect(),
            "{name}"
        );
        assert_eq!(
            store
                .rotate_credentials(&corp_id, &set, Some("no-such-token"), at(3))
                .await
                .unwrap(),
            0,
            "{name}"
        );
        assert_eq!(
            store
                .rotate_credentials(&corp_id, &set, None, at(4))
                .await
                .unwrap(),
            3,
            "{name}: all of them"
        );
        let sets = store.corp_credentials(&corp_id).await.unwrap();
        assert!(
            sets.iter().all(|s| s.token.expose() == fresh.token),
            "{name}"
        );
    }
}

/// Every token-cache method, as the token service uses them.
#[tokio::test]
async fn the_token_cache_leases_saves_forces_and_invalidates() {
    use wxkf_manager::domain::Secret;
    use wxkf_manager::store::TokenRecord;
    for (name, store) in backends().await.stores {
        let key = "ww1:abc";
        assert!(store.get_token(key).await.unwrap().is_none(), "{name}");
        assert!(
            store
                .try_lease_token(key, "a", at(1_000), at(5_000))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .try_lease_token(key, "b", at(2_000), at(6_000))
                .await
                .unwrap(),
            "{name}: a holds it"
        );
        store.release_token_lease(key, "b").await.unwrap();
        assert!(
            !store
                .try_lease_token(key, "b", at(2_000), at(6_000))
                .await
                .unwrap(),
            "{name}: only a releases a's lease"
        );
        store.release_token_lease(key, "a").await.unwrap();
        assert!(
            store
                .try_lease_token(key, "b", at(2_000), at(6_000))
                .await
                .unwrap(),
            "{name}: released"
        );
        let record = TokenRecord {
            access_token: Some(Secret::new("TOKEN-1")),
            expires_at: at(7_200_000),
            fetched_at: at(2_500),
            negative: None,
            neg_until: at(0),
            forced_at: at(0),
            lease_until: at(0),
        };
        store.save_token(key, &record).await.unwrap();
        let got = store.get_token(key).await.unwrap().unwrap();
        assert_eq!(
            got.access_token.as_ref().map(|t| t.expose()),
            Some("TOKEN-1"),
            "{name}"
        );
        assert_eq!(
            (got.expires_at, got.fetched_at, got.lease_until),
            (at(7_200_000), at(2_500), at(0)),
            "{name}: saving releases the lease"
        );
        assert!(
            store
                .try_lease_token(key, "c", at(3_000), at(8_000))
                .await
                .unwrap(),
            "{name}"
        );
        store.release_token_lease(key, "c").await.unwrap();

        assert!(
            store
                .mark_token_forced(key, at(10_000), at(0))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .mark_token_forced(key, at(20_000), at(5_000))
                .await
                .unwrap(),
            "{name}: forced since 5,000"
        );
        assert!(
            store
                .mark_token_forced(key, at(80_000), at(60_000))
                .await
                .unwrap(),
            "{name}"
        );

        let negative = TokenRecord {
            access_token: None,
            negative: Some((40001, "invalid credential".into())),
            neg_until: at(90_000),
            ..record.clone()
        };
        store.save_token("ww2:bad", &negative).await.unwrap();
        let got = store.get_token("ww2:bad").await.unwrap().unwrap();
        assert_eq!(
            got.negative,
            Some((40001, "invalid credential".into())),
            "{name}"
        );
        assert_eq!(got.neg_until, at(90_000), "{name}");

        assert_eq!(
            store.invalidate_access_token("TOKEN-OLD").await.unwrap(),
            0,
            "{name}: not this one"
        );
        assert_eq!(
            store.invalidate_access_token("TOKEN-1").await.unwrap(),
            1,
            "{name}"
        );
        let got = store.get_token(key).await.unwrap().unwrap();
        assert!(got.access_token.is_none(), "{name}");
    }
}

/// Queue statistics: the waiting states and dead letters, with their oldest.
#[tokio::test]
async fn queue_stats_count_waiting_and_dead_with_the_oldest() {
    for (name, store) in backends().await.stores {
        let plain = |kf: &str, token: &str, at: i64| {
            let mut e = event("wwstats", kf, token, at);
            e.deliveries[0].coalesce = false;
            e
        };
        store
            .insert_event(&plain("wks1", "P1", 3_000))
            .await
            .unwrap();
        store
            .insert_event(&plain("wks1", "P2", 4_000))
            .await
            .unwrap();
        finish_as(
            &store,
            &plain("wks2", "K1", 2_000),
            5_000,
            AttemptResult::Parked,
        )
        .await;
        finish_as(
            &store,
            &plain("wks3", "D1", 1_000),
            5_000,
            AttemptResult::Dead { error: "x".into() },
        )
        .await;
        finish_as(
            &store,
            &plain("wks4", "OK", 500),
            5_000,
            AttemptResult::Delivered,
        )
        .await;
        let mut stats = store.queue_stats().await.unwrap();
        stats.sort_by_key(|(s, _, _)| s.as_str());
        assert_eq!(
            stats,
            [
                (DeliveryStatus::Dead, 1, Some(at(1_000))),
                (DeliveryStatus::Parked, 1, Some(at(2_000))),
                (DeliveryStatus::Pending, 2, Some(at(3_000))),
            ],
            "{name}"
        );
    }
}

/// One event, two deliveries (two kfIds of a corp): each has its own
/// attempts, outcome and re-drive; the event, stored once, keeps its dedup
/// identity until its last delivery is removed.
#[tokio::test]
async fn an_event_with_two_deliveries_finishes_each_on_its_own() {
    let (day, hour) = (24 * 3_600_000i64, 3_600_000i64);
    for (name, store) in backends().await.stores {
        let t = 1_000;
        let mut e = event("wwtwo", "wktwo-a", "T", t);
        e.deliveries[0].coalesce = false;
        let mut second = NewDelivery::to_puppet(
            CorpId::parse("wwtwo").unwrap(),
            Some(KfId::parse("wktwo-b").unwrap()),
            false,
        );
        second.id = DeliveryId::from(format!("{}-b", e.id));
        e.deliveries.push(second.clone());
        assert_eq!(
            store.insert_event(&e).await.unwrap(),
            InsertOutcome::Stored,
            "{name}"
        );

        let got = store.claim_due(&claim("a", t), 10).await.unwrap();
        let mut ids: Vec<&str> = got.iter().map(|d| d.id.as_str()).collect();
        ids.sort();
        let first = delivery_of(&e);
        assert_eq!(ids, [first.as_str(), second.id.as_str()], "{name}");
        for d in &got {
            assert_eq!(d.event_id, e.id, "{name}");
            assert_eq!(d.body, b"<xml>T</xml>", "{name}");
        }
        let claim_of = |id: &DeliveryId| {
            got.iter()
                .find(|d| &d.id == id)
                .and_then(|d| d.claim_id.clone())
                .unwrap()
        };
        let recorded = store
            .finish_attempts(
                &[
                    outcome(first.clone(), claim_of(&first), &AttemptResult::Delivered),
                    outcome(
                        second.id.clone(),
                        claim_of(&second.id),
                        &AttemptResult::Dead {
                            error: "puppet answered HTTP 500".into(),
                        },
                    ),
                ],
                at(t + 10),
            )
            .await
            .unwrap();
        assert_eq!(recorded, [true, true], "{name}");
        // The statuses of (first, second); `None` once removed.
        let statuses = || {
            let (store, ids) = (store.clone(), [first.clone(), second.id.clone()]);
            async move {
                let mut found = Vec::new();
                for id in ids {
                    found.push(store.get_delivery(&id).await.unwrap().map(|d| d.status));
                }
                (found[0], found[1])
            }
        };
        use DeliveryStatus::{Dead, Delivered, Pending};
        assert_eq!(statuses().await, (Some(Delivered), Some(Dead)), "{name}");
        let dead = store.get_delivery(&second.id).await.unwrap().unwrap();
        assert_eq!(dead.attempts, 1, "{name}");
        assert_eq!(dead.last_error.as_deref(), Some("puppet answered HTTP 500"));

        // Re-driving one leaves the other as it is.
        assert!(
            store.redrive(&second.id, at(t + 20)).await.unwrap(),
            "{name}"
        );
        assert_eq!(statuses().await, (Some(Delivered), Some(Pending)), "{name}");

        // Past the finished horizon the delivered one goes; the event stays
        // with its waiting delivery, and a resend is still a duplicate.
        store
            .purge(&RETENTION, at(t + 3 * day + hour))
            .await
            .unwrap();
        assert_eq!(statuses().await, (None, Some(Pending)), "{name}");
        let resend = event("wwtwo", "wktwo-a", "T", t + 3 * day + hour);
        assert_eq!(
            store.insert_event(&resend).await.unwrap(),
            InsertOutcome::Duplicate,
            "{name}"
        );
        let again = store
            .claim_due(&claim("b", t + 3 * day + hour), 10)
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "{name}");
        assert_eq!(again[0].id, second.id, "{name}");
        assert_eq!(
            again[0].body, b"<xml>T</xml>",
            "{name}: the payload is still there"
        );
    }
}

/// On the embedded store an event and its deliveries are written together
/// or not at all, inside a batch that commits the others: a delivery that
/// cannot be written (here a reused delivery id) takes its event with it,
/// so a resend is stored rather than taken for a duplicate.
#[tokio::test]
async fn an_event_whose_delivery_cannot_be_written_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), sealer()).unwrap());
    let first = event("wwatomic", "wkatomic", "FIRST", 1_000);
    assert_eq!(
        store.insert_event(&first).await.unwrap(),
        InsertOutcome::Stored
    );

    let mut broken = event("wwatomic", "wkatomic", "SECOND", 1_001);
    let mut reused = broken.deliveries[0].clone();
    reused.id = delivery_of(&first);
    broken.deliveries.push(reused);
    assert!(store.insert_event(&broken).await.is_err());
    assert!(store
        .get_delivery(&delivery_of(&broken))
        .await
        .unwrap()
        .is_none());

    let resend = event("wwatomic", "wkatomic", "SECOND", 1_002);
    assert_eq!(
        store.insert_event(&resend).await.unwrap(),
        InsertOutcome::Stored,
        "the failed event left no dedup key behind"
    );
    assert!(store
        .get_delivery(&delivery_of(&first))
        .await
        .unwrap()
        .is_some());
}

/// Apps, subscriptions and operator-set corp credentials are kept as the
/// operator gave them, listed by source, replaced and removed; none of their
/// secrets is stored readable.
#[tokio::test]
async fn apps_subscriptions_and_operator_credentials_keep_their_secrets_sealed() {
    use wxkf_manager::domain::{
        App, AppBody, AppId, CredentialSet, Subscription, SubscriptionBody, SubscriptionFilter,
    };
    use wxkf_manager::store::{Channels, RecordKind};
    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    for (name, store) in backends().await.stores {
        let app_id = AppId::parse("wx0123456789abcdef").unwrap();
        let app = App::parse(
            app_id.clone(),
            AppBody {
                kind: Some("official_account".into()),
                token: Some("pushToken1".into()),
                encoding_aes_key: Some(KEY.into()),
                app_secret: Some("theAppSecret".into()),
                require_encryption: Some(true),
                name: Some("Shop".into()),
            },
        )
        .unwrap();
        store.put_app(&app, at(1_000)).await.unwrap();
        let back = store.get_app(&app_id).await.unwrap().expect("{name}: app");
        assert_eq!(AppView::from(&back), AppView::from(&app), "{name}");
        assert_eq!(back.token.expose(), "pushToken1", "{name}");
        assert_eq!(back.app_secret.unwrap().expose(), "theAppSecret", "{name}");
        assert_eq!(back.key.unwrap().expose(), KEY, "{name}");

        let sub = |source: &str, endpoint: &str| {
            Subscription::create(
                SubscriptionBody {
                    source: Some(source.into()),
                    endpoint: Some(endpoint.into()),
                    filter: Some(SubscriptionFilter {
                        event: vec!["subscribe".into()],
                        ..Default::default()
                    }),
                    description: Some("CRM".into()),
                },
                at(2_000),
            )
            .unwrap()
        };
        let (crm, other) = (
            sub(app_id.as_str(), "http://crm.example/hook"),
            sub("wwcorp", "http://desk.example/hook"),
        );
        store.put_subscription(&crm, at(2_000)).await.unwrap();
        store.put_subscription(&other, at(2_000)).await.unwrap();
        let of_app = store
            .list_subscriptions(Some(app_id.as_str()))
            .await
            .unwrap();
        assert_eq!(of_app.len(), 1, "{name}: listed by source");
        assert_eq!(
            SubscriptionView::from(&of_app[0]),
            SubscriptionView::from(&crm),
            "{name}"
        );
        assert_eq!(of_app[0].secret, crm.secret, "{name}: the signing secret");
        assert_eq!(
            store.list_subscriptions(None).await.unwrap().len(),
            2,
            "{name}"
        );

        let corp = CorpId::parse("wwcorp").unwrap();
        let set = CredentialSet::parse(Some("opToken"), Some(KEY)).unwrap();
        assert!(
            store
                .add_corp_credentials(&corp, &set, at(3_000))
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            !store
                .add_corp_credentials(&corp, &set, at(3_001))
                .await
                .unwrap(),
            "{name}: a set already there is kept"
        );
        let sets = store.operator_credentials(Some(&corp)).await.unwrap();
        assert_eq!(sets.len(), 1, "{name}");
        assert_eq!(sets[0].1.token.expose(), "opToken", "{name}");

        // Nothing secret is readable in what the backend stores.
        for kind in RecordKind::ALL {
            for record in store.list_records(kind, None).await.unwrap() {
                let raw = serde_json::Value::Object(record.body).to_string();
                for secret in [
                    "pushToken1",
                    "theAppSecret",
                    KEY,
                    "opToken",
                    &crm.secret.expose(),
                ] {
                    assert!(
                        !raw.contains(secret),
                        "{name}: {} shows a secret",
                        kind.as_str()
                    );
                }
            }
        }

        assert!(
            store
                .remove_corp_credentials(&corp, "opToken")
                .await
                .unwrap(),
            "{name}"
        );
        assert!(
            store.operator_credentials(None).await.unwrap().is_empty(),
            "{name}"
        );
        assert!(
            store.delete_subscription(crm.id.as_str()).await.unwrap(),
            "{name}"
        );
        assert!(
            store
                .get_subscription(crm.id.as_str())
                .await
                .unwrap()
                .is_none(),
            "{name}"
        );
        assert!(store.delete_app(&app_id).await.unwrap(), "{name}");
        assert!(!store.delete_app(&app_id).await.unwrap(), "{name}: gone");
    }
}

/// What waits for each target, as the dashboard shows it: one row per
/// puppet and subscription with something pending, parked or dead, with
/// the oldest still to be sent (a dead letter waits for nobody) and the
/// latest error; the longest waiting first, a target with nothing left
/// not at all.
#[tokio::test]
async fn backlogs_count_each_target_with_its_oldest_waiting_and_latest_error() {
    use wxkf_manager::store::{NewDelivery, Target};
    let to_crm = |token: &str, ms: i64| {
        let mut e = event("wwback", "wkback", token, ms);
        e.deliveries = vec![NewDelivery::to_subscription(
            CorpId::parse("wwback").unwrap(),
            &"sub-crm".into(),
        )];
        e
    };
    let plain = |kf: &str, token: &str, ms: i64| {
        let mut e = event("wwback", kf, token, ms);
        e.deliveries[0].coalesce = false;
        e
    };
    for (name, store) in backends().await.stores {
        assert!(
            store.backlogs().await.unwrap().is_empty(),
            "{name}: nothing waits"
        );
        store.insert_event(&to_crm("S1", 1_000)).await.unwrap();
        let retry = AttemptResult::Retry {
            next_attempt_at: at(60_000),
            error: "HTTP 503".into(),
        };
        finish_as(&store, &to_crm("S2", 2_000), 6_000, retry).await;
        let dead = AttemptResult::Dead {
            error: "HTTP 500".into(),
        };
        finish_as(&store, &to_crm("S3", 500), 7_000, dead).await;
        finish_as(
            &store,
            &plain("wkb1", "P1", 3_000),
            5_000,
            AttemptResult::Parked,
        )
        .await;
        let unreachable = AttemptResult::Dead {
            error: "connection failed".into(),
        };
        finish_as(&store, &plain("wkb1", "P2", 4_000), 5_500, unreachable).await;
        finish_as(
            &store,
            &plain("wkb2", "D1", 100),
            200,
            AttemptResult::Delivered,
        )
        .await;

        let rows: Vec<_> = store
            .backlogs()
            .await
            .unwrap()
            .into_iter()
            .map(|b| {
                (
                    b.target,
                    (b.pending, b.parked, b.dead),
                    b.oldest_waiting,
                    b.last_error,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    Target::Subscription("sub-crm".into()),
                    (2, 0, 1),
                    Some(at(1_000)),
                    Some("HTTP 500".to_owned())
                ),
                (
                    Target::Puppet {
                        corp_id: "wwback".into(),
                        kf_id: "wkb1".into()
                    },
                    (0, 1, 1),
                    Some(at(3_000)),
                    Some("connection failed".to_owned())
                ),
            ],
            "{name}"
        );
    }
}
