//! The operator API: auth, listing deliveries, re-driving dead letters.

use std::time::Duration;

use crate::fakes::FakePuppet;
use crate::helpers::{spawn_app_with, Corp};

const ADMIN: &str = "admin-token-for-tests-0123456789";

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    let app =
        spawn_app_with(|c| c.admin_token = Some(wxkf_manager::domain::Secret::new(ADMIN))).await;
    let url = format!("{}/admin/api/deliveries", app.address);
    assert_eq!(app.api.get(&url).send().await.unwrap().status(), 401);
    let wrong = app.api.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 403);
    let right = app.api.get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(right.status(), 200);
    let bad_status = app
        .api
        .get(format!("{url}?status=lost"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_status.status(), 400);
}

#[tokio::test]
async fn a_dead_letter_keeps_its_error_and_is_delivered_when_re_driven() {
    let app = spawn_app_with(|c| c.delivery.retry_window = Duration::from_millis(300)).await;
    let puppet = FakePuppet::start().await;
    puppet.fail_with(&[500; 1000]);
    let corp = Corp::new("wwredrive");
    app.register_ok(&corp, "wkredrive", &puppet.url).await;
    assert_eq!(
        app.post_kf_event(&corp, "wkredrive", "T").await.status(),
        200
    );

    // Without ADMIN_TOKEN, loopback clients are served.
    let list_dead = || async {
        app.get("/admin/api/deliveries?status=dead&kfId=wkredrive")
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let mut dead = serde_json::Value::Null;
    for _ in 0..100 {
        dead = list_dead().await;
        if dead["items"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let item = &dead["items"][0];
    assert_eq!(item["status"], "dead");
    assert_eq!(item["lastError"], "puppet answered HTTP 500");
    assert!(item["attempts"].as_u64().unwrap() >= 2);
    let attempts_before = puppet.received().len();

    puppet.fail_with(&[]);
    let id = item["id"].as_str().unwrap();
    let resp = app
        .api
        .post(format!("{}/admin/api/deliveries/{id}/redrive", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = puppet.wait_for(attempts_before + 1).await;
    assert_eq!(got.len(), attempts_before + 1);
    assert_eq!(got.last().unwrap().delivery_id, id);

    let delivered = app
        .get("/admin/api/deliveries?status=delivered")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(delivered["items"][0]["id"], id);
    let again = app
        .api
        .post(format!("{}/admin/api/deliveries/{id}/redrive", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        404,
        "only dead or parked deliveries are re-driven"
    );
}
