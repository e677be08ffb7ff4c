//! Faults production brings (issue 17): puppets that vanish, downstream
//! systems that misbehave, a database that stalls, a disk that fills.

use std::ops::AsyncFnMut;
use std::time::Duration;

use crate::fakes::FakePuppet;
use crate::helpers::{spawn_app, Corp, TestApp};

/// An address where nothing listens any more: a stopped container.
fn vanished_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Poll `check` every 50 ms for up to `within`; the last value it returned.
async fn eventually<T>(within: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn deliveries_of(app: &TestApp, kf: &str) -> Vec<serde_json::Value> {
    app.admin_json(&format!("/deliveries?kfId={kf}&limit=500"))
        .await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_puppet_that_vanished_is_shown_offline_and_its_wake_ups_park_until_it_registers() {
    let app = spawn_app().await;
    let corp = Corp::new("wwvanish");
    let kf = "wkvanish";
    // The puppet's container was stopped with SIGTERM: it never deregistered.
    app.register_ok(&corp, kf, &vanished_endpoint()).await;
    for i in 0..5 {
        let resp = app.post_kf_event(&corp, kf, &format!("T{i}")).await;
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let puppet = eventually(Duration::from_secs(5), async || {
        let v = app.admin_json(&format!("/puppets/{kf}")).await;
        (v["puppet"]["online"] == false).then_some(v)
    })
    .await
    .expect("the unreachable puppet is shown offline within 5 s");
    assert!(
        puppet["puppet"]["offlineSince"].is_string(),
        "operators see since when: {puppet}"
    );

    // Its wake-ups wait parked (or stood aside for a newer one): none keeps
    // retrying one by one.
    let settled = eventually(Duration::from_secs(5), async || {
        let all = deliveries_of(&app, kf).await;
        all.iter()
            .all(|d| d["status"] == "parked" || d["status"] == "superseded")
            .then_some(all)
    })
    .await
    .expect("every wake-up parked or superseded");
    let attempts: u64 = settled
        .iter()
        .map(|d| d["attempts"].as_u64().unwrap())
        .sum();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later: u64 = deliveries_of(&app, kf)
        .await
        .iter()
        .map(|d| d["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(attempts, later, "no attempts while parked");
    assert!(
        later <= 5,
        "a few connection failures, then parked: {later} attempts"
    );

    // The puppet starts again (a new container, a new address) and registers:
    // it gets the newest wake-up at once, and only that one.
    let back = FakePuppet::start().await;
    app.register_ok(&corp, kf, &back.url).await;
    let got = back.wait_for(1).await;
    assert_eq!(corp.tokens_in(&got), ["T4"], "the newest wake-up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(back.received().len(), 1, "one wake-up for the five");
    let v = app.admin_json(&format!("/puppets/{kf}")).await;
    assert_eq!(v["puppet"]["online"], true);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("wxkf_puppets_marked_offline_total 1"),
        "{metrics}"
    );
}
