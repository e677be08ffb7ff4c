//! getToken and the WeCom API proxy against a fake WeCom.

use crate::helpers::{spawn_app, spawn_app_with};

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
