//! Puppet registration: register, deregister, puppetWxkfInfo.

use crate::support::FakePuppet;
use crate::support::{random_string, spawn_app, text, Corp};

#[tokio::test]
async fn register_answers_the_old_shape_and_info_shows_no_secret() {
    let app = spawn_app().await;
    let corp = Corp::new("wwinfo");
    let resp = app.register(&corp, "wkinfo", "http://10.1.2.3:8788").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"code": 0, "message": "success"})
    );

    let (status, body) = text(app.get("/puppetWxkfManager/puppetWxkfInfo/wkinfo").await).await;
    assert_eq!(status, 200);
    for secret in [&corp.secret, &corp.token, &corp.key] {
        assert!(!body.contains(secret.as_str()), "secret leaked: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kfOpenId"], "wkinfo");
    assert_eq!(v["corpId"], "wwinfo");
    assert_eq!(v["botEndpoint"], "http://10.1.2.3:8788/");
    assert_eq!(v["online"], true);
    assert!(v["lastOnlineDate"].as_str().unwrap().ends_with('Z'));

    assert_eq!(
        app.get("/puppetWxkfManager/puppetWxkfInfo/wknobody")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn invalid_registrations_are_400_naming_the_field() {
    let app = spawn_app().await;
    let corp = Corp::new("wwvalid");
    let base = serde_json::json!({
        "kfId": "wk1", "kfName": "", "endpoint": "http://h:1", "corpId": corp.id,
        "corpSecret": corp.secret, "token": corp.token, "encodingAESKey": corp.key,
    });
    let cases = [
        ("kfId", serde_json::json!(null), "kfId"),
        ("kfId", serde_json::json!("x".repeat(10_000)), "kfId"),
        (
            "endpoint",
            serde_json::json!("ftp://h"),
            "endpoint: not an http(s) URL",
        ),
        ("endpoint", serde_json::json!("not a url"), "endpoint"),
        ("corpId", serde_json::json!("ww/1"), "corpId"),
        (
            "encodingAESKey",
            serde_json::json!("short"),
            "encodingAESKey",
        ),
        ("token", serde_json::json!(""), "token"),
        ("corpSecret", serde_json::json!(null), "corpSecret"),
    ];
    for (field, value, expected) in cases {
        let mut body = base.clone();
        body[field] = value;
        let resp = app
            .api
            .post(format!("{}/puppetWxkfManager/register", app.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{field}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["code"], 400);
        assert!(
            v["message"].as_str().unwrap().starts_with(expected),
            "{field}: {v}"
        );
    }
    let resp = app
        .api
        .post(format!("{}/puppetWxkfManager/register", app.address))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = app
        .api
        .post(format!("{}/puppetWxkfManager/register", app.address))
        .body(format!("{{\"kfName\": \"{}\"}}", "x".repeat(20_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn re_registration_moves_delivery_to_the_new_endpoint() {
    let app = spawn_app().await;
    let (old, new) = (FakePuppet::start().await, FakePuppet::start().await);
    let corp = Corp::new("wwmove");
    app.register_ok(&corp, "wkmove", &old.url).await;
    app.register_ok(&corp, "wkmove", &new.url).await;
    assert_eq!(app.post_kf_event(&corp, "wkmove", "T1").await.status(), 200);
    assert_eq!(new.wait_for(1).await.len(), 1);
    assert!(old.received().is_empty());
}

#[tokio::test]
async fn moving_a_kf_id_with_other_credentials_is_refused() {
    let app = spawn_app().await;
    let (owner, thief) = (FakePuppet::start().await, FakePuppet::start().await);
    let corp = Corp::new("wwhijack");
    app.register_ok(&corp, "wkhijack", &owner.url).await;

    // Same corp id, other token/key (a "new credential set"), other endpoint.
    let impostor = corp.another_app();
    let resp = app.register(&impostor, "wkhijack", &thief.url).await;
    assert_eq!(resp.status(), 409);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], 409);

    assert_eq!(
        app.post_kf_event(&corp, "wkhijack", "T").await.status(),
        200
    );
    assert_eq!(owner.wait_for(1).await.len(), 1);
    assert!(thief.received().is_empty());
}

#[tokio::test]
async fn deregister_marks_offline_and_unknown_is_404() {
    let app = spawn_app().await;
    let corp = Corp::new("wwdereg");
    app.register_ok(&corp, "wkdereg", "http://127.0.0.1:9")
        .await;
    let resp = app.deregister(&corp, "wkdereg").await;
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["code"], 0);
    let info: serde_json::Value = app
        .get("/puppetWxkfManager/puppetWxkfInfo/wkdereg")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["online"], false);
    assert!(info["offlineSince"].is_string());

    let resp = app
        .deregister(&corp, &format!("wk{}", random_string(6)))
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["code"], 404);
    // Credentials of an offline corp still verify its URL.
    let q = corp.verify_query("777");
    assert_eq!(
        text(app.get(&format!("/callback/wwdereg?{q}")).await).await,
        (200, "777".into())
    );
}
