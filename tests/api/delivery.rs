//! Durable delivery: dedup, retries, parking, coalescing, dead letters.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::FakePuppet;
use wxkf_manager::clock::Clock;

use crate::support::{manual_clock, spawn_app, spawn_app_with, spawn_stepped_app, Corp};

// These tests drive delivery round by round (`step`, `drain`) on a clock
// they move: what they assert does not depend on timing, and "nothing more
// arrives" is a fact once `drain` finds nothing due.

#[tokio::test]
async fn a_resent_callback_is_delivered_once() {
    let app = spawn_stepped_app(manual_clock(), |_| {}).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwdedup");
    app.register_ok(&corp, "wkdedup", &puppet.url).await;
    // WeCom's resends are separate encryptions (new nonce, new ciphertext) of the same event.
    for _ in 0..3 {
        let resp = app.post_kf_event(&corp, "wkdedup", "SAME-TOKEN").await;
        assert_eq!(resp.text().await.unwrap(), "success");
    }
    assert_eq!(app.drain().await, 1, "one delivery for three sends");
    assert_eq!(puppet.received().len(), 1);
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_delivery_id() {
    let clock = manual_clock();
    let app = spawn_stepped_app(clock.clone(), |_| {}).await;
    let puppet = FakePuppet::start().await;
    puppet.fail_with(&[500, 503]);
    let corp = Corp::new("wwretry");
    app.register_ok(&corp, "wkretry", &puppet.url).await;
    assert_eq!(app.post_kf_event(&corp, "wkretry", "T").await.status(), 200);

    assert_eq!(app.step().await.taken, 1, "attempt 1: HTTP 500");
    assert_eq!(app.step().await.taken, 0, "backing off: not due yet");
    for attempt in 2..=3 {
        clock.advance(Duration::from_secs(1));
        assert_eq!(app.step().await.taken, 1, "attempt {attempt}");
    }
    clock.advance(Duration::from_secs(3600));
    assert_eq!(app.drain().await, 0, "delivered on the third: no more");
    let got = puppet.received();
    assert_eq!(got.iter().map(|r| r.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(got.iter().all(|r| r.delivery_id == got[0].delivery_id));
    assert!(got.iter().all(|r| r.body == got[0].body));
}

#[tokio::test]
async fn an_unregistered_kf_id_is_parked_until_it_registers() {
    let clock = manual_clock();
    let app = spawn_stepped_app(clock.clone(), |_| {}).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwpark");
    app.register_ok(&corp, "wkother", "http://127.0.0.1:9")
        .await;
    assert_eq!(
        app.post_kf_event(&corp, "wkparked", "T").await.status(),
        200
    );
    assert_eq!(
        app.drain().await,
        1,
        "looked for a puppet once, then parked"
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        app.drain().await,
        0,
        "a parked event waits for a registration"
    );

    app.register_ok(&corp, "wkparked", &puppet.url).await;
    assert_eq!(app.drain().await, 1);
    let got = puppet.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 1, "parking is not an attempt");
}

#[tokio::test]
async fn a_puppet_coming_back_gets_one_wake_up_per_kf_id() {
    let app = spawn_stepped_app(manual_clock(), |_| {}).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwcoalesce");
    let kfs: Vec<String> = (0..5).map(|i| format!("wkco{i}")).collect();
    for kf in &kfs {
        app.register_ok(&corp, kf, &puppet.url).await;
        assert_eq!(app.deregister(&corp, kf).await.status(), 200);
    }
    // 50 events for the first kfId, 3 for each of the others, while offline.
    for i in 0..50 {
        assert_eq!(
            app.post_kf_event(&corp, &kfs[0], &format!("T0-{i:02}"))
                .await
                .status(),
            200
        );
    }
    for kf in &kfs[1..] {
        for i in 0..3 {
            assert_eq!(
                app.post_kf_event(&corp, kf, &format!("T-{kf}-{i}"))
                    .await
                    .status(),
                200
            );
        }
    }
    app.drain().await;
    assert!(puppet.received().is_empty(), "nobody online");

    for kf in &kfs {
        app.register_ok(&corp, kf, &puppet.url).await;
    }
    assert_eq!(app.drain().await, 5, "one wake-up per kfId");
    let got = puppet.received();
    assert_eq!(got.len(), 5);
    let tokens: HashSet<String> = corp.tokens_in(&got).into_iter().collect();
    let expected: HashSet<String> = std::iter::once("T0-49".to_owned())
        .chain(kfs[1..].iter().map(|kf| format!("T-{kf}-2")))
        .collect();
    assert_eq!(tokens, expected, "the newest token of each kfId");
    let superseded = app
        .admin_json("/deliveries?status=superseded&limit=500")
        .await;
    let all = app.admin_json("/deliveries?kfId=&limit=500").await;
    let others: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] != "superseded" && d["status"] != "delivered")
        .map(|d| d.to_string())
        .collect();
    assert_eq!(
        superseded["items"].as_array().map(Vec::len),
        Some(49 + 4 * 2),
        "the older ones are listed as superseded; not: {others:?}"
    );
}

#[tokio::test]
async fn exhausted_retries_become_a_dead_letter_and_stop() {
    let clock = manual_clock();
    let app = spawn_stepped_app(clock.clone(), |c| {
        c.delivery.retry_window = Duration::from_secs(10);
    })
    .await;
    let puppet = FakePuppet::start().await;
    puppet.fail_with(&[500; 100]);
    let corp = Corp::new("wwdead");
    app.register_ok(&corp, "wkdead", &puppet.url).await;
    assert_eq!(app.post_kf_event(&corp, "wkdead", "T").await.status(), 200);
    let mut attempts = 0;
    for _ in 0..100 {
        attempts += app.step().await.taken;
        clock.advance(Duration::from_secs(1));
    }
    // Retries every 50-200 ms (the test config) for 10 s: at most one a
    // second here, as the clock moves; the 11th would be past the window.
    assert!((2..=11).contains(&attempts), "{attempts} attempts");
    assert_eq!(puppet.received().len(), attempts);
    let dead = app.admin_json("/deliveries?status=dead&kfId=wkdead").await;
    assert_eq!(dead["items"][0]["attempts"], attempts as u64);
    assert_eq!(dead["items"][0]["lastError"], "puppet answered HTTP 500");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(app.drain().await, 0, "no attempts after the dead letter");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_delivery_finish_and_a_restart_does_not_repeat_it() {
    let mut app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    puppet.delay(Duration::from_millis(800));
    let corp = Corp::new("wwshutdown");
    app.register_ok(&corp, "wkshutdown", &puppet.url).await;
    assert_eq!(
        app.post_kf_event(&corp, "wkshutdown", "T").await.status(),
        200
    );
    assert_eq!(puppet.wait_for(1).await.len(), 1);
    assert_eq!(puppet.answered(), 0, "still in flight when we stop");

    app.stop().await;
    assert_eq!(puppet.answered(), 1, "stop waited for the delivery");

    let _app = app.restart().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        puppet.received().len(),
        1,
        "recorded as delivered: not sent again"
    );
}

#[tokio::test]
async fn a_restarted_manager_resumes_delivery_of_what_it_had_accepted() {
    let app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwresume");
    app.register_ok(&corp, "wkresume", &puppet.url).await;
    assert_eq!(app.deregister(&corp, "wkresume").await.status(), 200);
    for i in 0..3 {
        assert_eq!(
            app.post_kf_event(&corp, &format!("wkr{i}"), "T")
                .await
                .status(),
            200
        );
    }
    let app = app.restart().await;
    for i in 0..3 {
        app.register_ok(&corp, &format!("wkr{i}"), &puppet.url)
            .await;
    }
    assert_eq!(puppet.wait_for(3).await.len(), 3);
}

#[tokio::test]
async fn resends_arriving_together_are_all_answered_and_each_event_delivered_once() {
    let app = spawn_stepped_app(manual_clock(), |c| c.delivery.coalesce = false).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwburst");
    app.register_ok(&corp, "wkburst", &puppet.url).await;
    // 100 events, each sent three times, all at once: resends of one event
    // land in the same group commit as each other and as other events.
    let tokens: Vec<String> = (0..300).map(|i| format!("B-{:03}", i % 100)).collect();
    let sends = tokens
        .iter()
        .map(|token| app.post_kf_event(&corp, "wkburst", token));
    let answers = futures_util::future::join_all(sends).await;
    for answer in answers {
        assert_eq!(answer.text().await.unwrap(), "success");
    }
    assert_eq!(app.drain().await, 100);
    let tokens = corp.tokens_in(&puppet.received());
    let distinct: HashSet<&String> = tokens.iter().collect();
    assert_eq!((tokens.len(), distinct.len()), (100, 100));
}

#[tokio::test]
async fn wake_ups_waiting_for_a_busy_puppet_collapse_into_the_newest() {
    // Default settings: wake-ups of one kfId go one at a time.
    let app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    puppet.delay(Duration::from_millis(1500));
    let corp = Corp::new("wwbusy");
    app.register_ok(&corp, "wkbusy", &puppet.url).await;
    assert_eq!(
        app.post_kf_event(&corp, "wkbusy", "W-0").await.status(),
        200
    );
    assert_eq!(
        puppet.wait_for(1).await.len(),
        1,
        "the first one is in flight"
    );
    for i in 1..5 {
        let resp = app.post_kf_event(&corp, "wkbusy", &format!("W-{i}")).await;
        assert_eq!(resp.status(), 200);
    }
    // Wait until all five are settled: W-4 is the newest, so nothing can
    // come after it.
    let count = |status: &'static str| {
        let app = &app;
        async move {
            app.admin_json(&format!("/deliveries?status={status}&kfId=wkbusy"))
                .await["items"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    for _ in 0..200 {
        if count("delivered").await == 2 && count("superseded").await == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (count("delivered").await, count("superseded").await),
        (2, 3)
    );
    let tokens = corp.tokens_in(&puppet.received());
    assert_eq!(
        tokens,
        ["W-0", "W-4"],
        "the three in between are replaced by the newest"
    );
}

#[tokio::test]
async fn a_burst_of_wake_ups_reaches_a_fast_puppet_as_a_few_ending_with_the_newest() {
    let app = spawn_app_with(|c| c.delivery.wakeup_gap = Duration::from_millis(300)).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwgap");
    app.register_ok(&corp, "wkgap", &puppet.url).await;
    for i in 0..20 {
        let resp = app
            .post_kf_event(&corp, "wkgap", &format!("G-{i:02}"))
            .await;
        assert_eq!(resp.status(), 200);
    }
    // What holds whatever the timing: the newest arrives, last (wait for
    // it), and the ones that waited collapse.
    let mut tokens = Vec::new();
    for _ in 0..200 {
        tokens = corp.tokens_in(&puppet.received());
        if tokens.iter().any(|t| t == "G-19") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tokens.last().map(String::as_str),
        Some("G-19"),
        "the newest always arrives, and last: {tokens:?}"
    );
    assert!(
        tokens.len() < 20,
        "the ones in between collapse: {tokens:?}"
    );
}

/// Deliveries waiting for a busy puppet's turn can wait longer than their
/// lease; the manager renews it, so another claimer (a second manager) never
/// takes and sends them again: each arrives exactly once.
#[tokio::test]
async fn a_delivery_waiting_longer_than_its_lease_keeps_it() {
    use wxkf_manager::store::Claim;
    let clock = crate::support::manual_clock();
    let app = crate::support::spawn_app_with_clock(clock.clone(), |c| {
        c.delivery.coalesce = false;
        c.delivery.max_per_puppet = 1;
    })
    .await;
    let lease = app.config().delivery.lease();
    let puppet = FakePuppet::start().await;
    puppet.delay(Duration::from_millis(1_500));
    let corp = Corp::new("wwlease");
    app.register_ok(&corp, "wklease", &puppet.url).await;
    for i in 0..4 {
        let resp = app.post_kf_event(&corp, "wklease", &format!("L{i}")).await;
        assert_eq!(resp.status(), 200);
    }
    // A second claimer on the same store, as another manager would be.
    let intruder = wxkf_manager::startup::open_store(app.config())
        .await
        .unwrap();
    // Time passes (by the manager's clock) beyond the lease while three
    // wait behind the first; in steps, so that the manager can renew.
    // A lease is renewed once less than half of it is left: steps of a
    // sixth leave the manager three steps to do it.
    let step = lease / 6;
    for _ in 0..8 {
        clock.advance(step);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = clock.now();
        let taken = intruder
            .claim_due(
                &Claim::new("intruder", now, now.plus(Duration::from_secs(60))),
                100,
            )
            .await
            .unwrap();
        assert!(
            taken.is_empty(),
            "a lease ran out while waiting: {} taken",
            taken.len()
        );
    }
    puppet.wait_for(4).await;
    for _ in 0..200 {
        let delivered = app.admin_json("/deliveries?status=delivered").await;
        if delivered["items"].as_array().map(Vec::len) == Some(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One sleep: a second copy would come from a task still waiting at the
    // gate; give it two of the puppet's answer times to show up.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let got = puppet.received();
    let ids: HashSet<_> = got.iter().map(|r| r.delivery_id.clone()).collect();
    assert_eq!((got.len(), ids.len()), (4, 4), "each exactly once");
}
