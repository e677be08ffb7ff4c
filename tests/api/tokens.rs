//! getToken and the WeCom API proxy against a fake WeCom.

use crate::support::{require_mongo, spawn_app, spawn_app_with};

#[tokio::test]
async fn get_token_forwards_the_query_and_returns_wecom_shape() {
    let app = spawn_app().await;
    let resp = app
        .get("/puppetWxkfManager/getToken?corpid=ww1&corpsecret=s%2B1")
        .await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["errcode"], 0);
    assert_eq!(v["access_token"], "TOKEN-1");
    assert_eq!(v["expires_in"], 7200);
    let calls = app.wecom.calls("/cgi-bin/gettoken");
    assert_eq!(calls.len(), 1);
    assert!(calls[0].query.contains("corpid=ww1"));
    assert!(calls[0].query.contains("corpsecret=s%2B1"));

    let v: serde_json::Value = app
        .get("/puppetWxkfManager/getToken?corpid=ww1&corpsecret=bad")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["errcode"], 40001);
    let resp = app.get("/puppetWxkfManager/getToken?corpsecret=x").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["errcode"],
        41002
    );
}

#[tokio::test]
async fn the_proxy_forwards_method_query_and_body() {
    let app = spawn_app().await;
    let resp = app
        .api
        .post(format!(
            "{}/puppetWxkfManager/wxkfRequestProxy/kf/sync_msg?access_token=AT",
            app.address
        ))
        .header("content-type", "application/json")
        .body(r#"{"cursor":"c1","open_kfid":"wk1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("json"));
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/cgi-bin/kf/sync_msg");
    assert_eq!(v["query"], "access_token=AT");
    assert_eq!(v["body"], r#"{"cursor":"c1","open_kfid":"wk1"}"#);
    assert_eq!(v["content_type"], "application/json");

    let v: serde_json::Value = app
        .get("/puppetWxkfManager/wxkfRequestProxy/kf/account/list?access_token=AT&offset=0")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/cgi-bin/kf/account/list");
    assert_eq!(
        app.get("/puppetWxkfManager/wxkfRequestProxy/../../etc/passwd")
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn wecom_down_is_a_wecom_shaped_error_not_a_hang() {
    // Port 9 (discard) on loopback: connection refused.
    let app = spawn_app_with(|c| {
        c.wecom_api_base = "http://127.0.0.1:9".into();
        c.access_token_url = "http://127.0.0.1:9/cgi-bin/gettoken".into();
    })
    .await;
    let resp = app
        .get("/puppetWxkfManager/getToken?corpid=ww1&corpsecret=s")
        .await;
    assert_eq!(resp.status(), 502);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_ne!(v["errcode"], 0);
    assert!(v["errmsg"].as_str().unwrap().contains("unreachable"));
    let resp = app
        .get("/puppetWxkfManager/wxkfRequestProxy/kf/account/list")
        .await;
    assert_eq!(resp.status(), 502);
}

async fn token_of(app: &crate::support::TestApp, query: &str) -> serde_json::Value {
    app.get(&format!("/puppetWxkfManager/getToken?{query}"))
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_requests_for_one_app_make_one_upstream_call() {
    let app = spawn_app().await;
    let answers = futures_util::future::join_all(
        (0..200).map(|_| token_of(&app, "corpid=ww1&corpsecret=s1")),
    )
    .await;
    assert_eq!(app.wecom.calls("/cgi-bin/gettoken").len(), 1);
    assert!(answers
        .iter()
        .all(|a| a["access_token"] == "TOKEN-1" && a["errcode"] == 0));
    assert!(answers
        .iter()
        .all(|a| a["expires_in"].as_i64().unwrap() > 7000));
}

#[tokio::test]
async fn each_app_of_a_corp_has_its_own_token() {
    let app = spawn_app().await;
    let a = token_of(&app, "corpid=ww1&corpsecret=app-one").await;
    let b = token_of(&app, "corpid=ww1&corpsecret=app-two").await;
    assert_eq!(app.wecom.calls("/cgi-bin/gettoken").len(), 2);
    assert_ne!(a["access_token"], b["access_token"]);
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=app-one").await["access_token"],
        a["access_token"]
    );
}

#[tokio::test]
async fn a_restarted_manager_serves_the_stored_token() {
    let app = spawn_app().await;
    let first = token_of(&app, "corpid=ww1&corpsecret=s").await;
    let app = app.restart().await;
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s").await["access_token"],
        first["access_token"]
    );
    assert_eq!(app.wecom.calls("/cgi-bin/gettoken").len(), 1);
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires() {
    let clock = std::sync::Arc::new(crate::support::ManualClock::default());
    clock.advance(std::time::Duration::from_secs(1_700_000_000));
    let app = crate::support::spawn_app_with_clock(clock.clone(), |_| {}).await;
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s").await["access_token"],
        "TOKEN-1"
    );
    // 5,000 s of 7,200 gone: more than a fifth left, still served.
    clock.advance(std::time::Duration::from_secs(5_000));
    let v = token_of(&app, "corpid=ww1&corpsecret=s").await;
    assert_eq!(
        (v["access_token"].as_str(), v["expires_in"].as_i64()),
        (Some("TOKEN-1"), Some(2_200))
    );
    // Less than a fifth left (1,200 s < 1,440 s): refreshed ahead of expiry.
    clock.advance(std::time::Duration::from_secs(1_000));
    let v = token_of(&app, "corpid=ww1&corpsecret=s").await;
    assert_eq!(
        (v["access_token"].as_str(), v["expires_in"].as_i64()),
        (Some("TOKEN-2"), Some(7_200))
    );
    assert_eq!(app.wecom.calls("/cgi-bin/gettoken").len(), 2);
}

#[tokio::test]
async fn a_rejected_token_is_replaced_and_a_late_complaint_keeps_the_new_one() {
    let app = spawn_app().await;
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s").await["access_token"],
        "TOKEN-1"
    );
    let reject = |token: &str| {
        app.api
            .post(format!(
                "{}/puppetWxkfManager/wxkfRequestProxy/kf/reject?access_token={token}",
                app.address
            ))
            .body("{}")
            .send()
    };
    let v: serde_json::Value = reject("TOKEN-1").await.unwrap().json().await.unwrap();
    assert_eq!(v["errcode"], 42001, "WeCom's answer still comes back");
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s").await["access_token"],
        "TOKEN-2"
    );
    reject("TOKEN-1").await.unwrap();
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s").await["access_token"],
        "TOKEN-2"
    );
    assert_eq!(app.wecom.calls("/cgi-bin/gettoken").len(), 2);
}

#[tokio::test]
async fn force_refreshes_at_most_once_a_minute() {
    let app = spawn_app().await;
    token_of(&app, "corpid=ww1&corpsecret=s").await;
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s&force=1").await["access_token"],
        "TOKEN-2"
    );
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s&force=1").await["access_token"],
        "TOKEN-2"
    );
    assert_eq!(app.wecom.calls("/cgi-bin/gettoken").len(), 2);
}

#[tokio::test]
async fn force_replaces_a_token_fetched_in_the_same_millisecond() {
    // The clock does not move: the refused token and the forced request
    // share one timestamp, and the refused token must still not come back.
    let clock = std::sync::Arc::new(crate::support::ManualClock::default());
    clock.advance(std::time::Duration::from_secs(1_700_000_000));
    let app = crate::support::spawn_app_with_clock(clock, |_| {}).await;
    token_of(&app, "corpid=ww1&corpsecret=s").await;
    assert_eq!(
        token_of(&app, "corpid=ww1&corpsecret=s&force=1").await["access_token"],
        "TOKEN-2"
    );
    assert_eq!(app.wecom.calls("/cgi-bin/gettoken").len(), 2);
}

#[tokio::test]
async fn a_bad_secret_burst_costs_one_upstream_call() {
    let app = spawn_app().await;
    let answers = futures_util::future::join_all(
        (0..500).map(|_| token_of(&app, "corpid=ww1&corpsecret=bad")),
    )
    .await;
    assert!(
        answers.iter().all(|a| a["errcode"] == 40001),
        "every caller sees WeCom's errcode"
    );
    assert!(app.wecom.calls("/cgi-bin/gettoken").len() <= 3);
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn two_managers_on_one_mongodb_share_one_token_fetch() {
    let uri = require_mongo();
    let a = spawn_app_with({
        let uri = uri.clone();
        move |c| c.mongo_uri = Some(wxkf_manager::domain::Secret::new(uri))
    })
    .await;
    let token_url = format!("{}/cgi-bin/gettoken", a.wecom.base);
    let b = spawn_app_with(move |c| {
        c.mongo_uri = Some(wxkf_manager::domain::Secret::new(uri));
        c.access_token_url = token_url;
    })
    .await;
    let ask = (0..200).map(|i| {
        token_of(
            if i % 2 == 0 { &a } else { &b },
            "corpid=ww1&corpsecret=shared",
        )
    });
    let answers = futures_util::future::join_all(ask).await;
    assert!(
        answers.iter().all(|v| v["access_token"] == "TOKEN-1"),
        "{:?}",
        answers.iter().find(|v| v["access_token"] != "TOKEN-1")
    );
    assert_eq!(a.wecom.calls("/cgi-bin/gettoken").len(), 1);
}
