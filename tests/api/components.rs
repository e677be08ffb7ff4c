//! Open Platform components (API.md §7.2): registered with SECRETS_KEY
//! only; verify tickets kept, newest first; authorized/updateauthorized
//! answered at once and exchanged after, once, against a fake Open Platform
//! that refuses a code used twice and an old refresh token; refresh tokens
//! rotated and kept; unauthorized ends a grant; an account's pushes reach
//! its own and the component's subscriptions; authorizers/sync recovers
//! lost grants; hostile pushes get a 4xx and leave nothing behind.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wxkf_manager::config::{Config, SecretsKey};

use crate::support::*;

fn sealed(c: &mut Config, platform: &FakeOpenPlatform) {
    c.secrets_key = Some(SecretsKey([9; 32]));
    c.wechat_api_base = platform.base.clone();
}

/// An app with SECRETS_KEY, a fake Open Platform, and a registered
/// component that has received a verify ticket.
async fn component_app() -> (TestApp, FakeOpenPlatform, TestComponent) {
    let platform = FakeOpenPlatform::start().await;
    let app = spawn_app_with(|c| sealed(c, &platform)).await;
    let component = TestComponent::new(&format!("wxcomp{}", random_string(10)));
    component.register(&app).await;
    let ticket = platform.issue_ticket();
    let resp = component.push_ticket(&app, &ticket, 1_700_000_000).await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));
    (app, platform, component)
}

/// An account authorizes the component and the exchange ends.
async fn authorize(
    app: &TestApp,
    platform: &FakeOpenPlatform,
    component: &TestComponent,
    account: &str,
) {
    let code = platform.issue_code(account);
    let resp = component
        .push_authorized(app, "authorized", account, &code)
        .await;
    assert_eq!(text(resp).await.0, 200);
    authorize_seen(app, component, account).await;
}

/// The account's grant is kept (the exchange has ended).
async fn authorize_seen(app: &TestApp, component: &TestComponent, account: &str) {
    let kept = eventually(Duration::from_secs(10), async || {
        let list = app
            .admin_json(&format!("/components/{}/authorizers", component.id))
            .await;
        let items = list["items"].as_array()?.clone();
        items
            .iter()
            .any(|a| a["appId"] == account && a["status"] == "authorized")
            .then_some(())
    })
    .await;
    assert!(kept.is_some(), "the grant of {account} was not kept");
}

async fn key_get(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    let resp = app
        .api
        .get(format!("{}{path}", app.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_component_is_accepted_only_with_secrets_key_and_shown_without_secrets() {
    let platform = FakeOpenPlatform::start().await;
    let component = TestComponent::new("wxcompnokey0001");
    let bare = spawn_app_with(|c| c.wechat_api_base = platform.base.clone()).await;
    let resp = bare
        .admin(Method::PUT, "/components/wxcompnokey0001")
        .json(&component.body())
        .send()
        .await
        .unwrap();
    let (status, body) = text(resp).await;
    assert_eq!(status, 409);
    assert!(body.contains("SECRETS_KEY"), "{body}");

    let app = spawn_app_with(|c| sealed(c, &platform)).await;
    for (field, value) in [
        ("appSecret", json!("")),
        ("token", json!("t!")),
        ("encodingAESKey", json!("short")),
    ] {
        let mut bad = component.body();
        bad[field] = value;
        let resp = app
            .admin(Method::PUT, "/components/wxcompnokey0001")
            .json(&bad)
            .send()
            .await
            .unwrap();
        let (status, body) = text(resp).await;
        assert_eq!(status, 400, "{field}");
        assert!(body.contains(field), "{body}");
    }
    component.register(&app).await;
    let shown = app.admin_json("/components/wxcompnokey0001").await;
    assert_eq!(
        shown,
        json!({"componentAppId": "wxcompnokey0001", "name": "Test component",
               "ticketReceivedAt": null, "authorizers": 0})
    );
    let listed = app.admin_json("/components").await;
    assert_eq!(listed["items"][0], shown);
    let key = component.issue_key(&app).await;
    let (status, body) = key_get(&app, "/component/wxcompnokey0001/token", &key).await;
    assert_eq!(status, 503);
    assert!(
        body["errmsg"]
            .as_str()
            .unwrap()
            .contains("component_verify_ticket"),
        "{body}"
    );
    assert!(platform
        .calls("/cgi-bin/component/api_component_token")
        .is_empty());
    let sync = app
        .admin(Method::POST, "/components/wxcompnokey0001/authorizers/sync")
        .send()
        .await
        .unwrap();
    let (status, body) = text(sync).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("component_verify_ticket"), "{body}");

    let deleted = app
        .admin(Method::DELETE, "/components/wxcompnokey0001")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let gone = app
        .admin(Method::GET, "/components/wxcompnokey0001")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn authorized_is_answered_before_its_exchange_which_happens_once_though_wechat_resends() {
    let (app, platform, component) = component_app().await;
    let crm = FakePuppet::start().await;
    app.subscribe(&component.id, &crm.url, json!({})).await;
    platform.slow_exchanges(Duration::from_millis(1500));
    let code = platform.issue_code("wxaccount000001");
    let resp = component
        .push_authorized(&app, "authorized", "wxaccount000001", &code)
        .await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));
    assert!(
        platform.refresh_token("wxaccount000001").is_none(),
        "answered only after the exchange"
    );
    // WeChat resends it: stored once, exchanged once.
    let resp = component
        .push_authorized(&app, "authorized", "wxaccount000001", &code)
        .await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));

    let got = crm.wait_for(1).await;
    let body = got[0].json();
    assert_eq!(body["sourceKind"], "component");
    assert_eq!(body["source"], component.id.as_str());
    assert_eq!(body["message"]["InfoType"], "authorized");
    assert_eq!(body["authorization"], json!({"appId": "wxaccount000001"}));
    let raw = String::from_utf8_lossy(&got[0].body).into_owned();
    assert!(!raw.contains(&code), "the code is delivered: {raw}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(crm.received().len(), 1, "delivered once");
    assert_eq!(platform.calls("/cgi-bin/component/api_query_auth").len(), 1);
    let list = app
        .admin_json(&format!("/components/{}/authorizers", component.id))
        .await;
    assert_eq!(list["items"][0]["appId"], "wxaccount000001");
    assert_eq!(list["items"][0]["status"], "authorized");
    assert!(!list.to_string().contains("refreshtoken"), "{list}");
    let shown = app
        .admin_json(&format!("/components/{}", component.id))
        .await;
    assert_eq!(shown["authorizers"], 1);

    // A made-up code: refused by WeChat, told to subscribers, a dead letter.
    let resp = component
        .push_authorized(&app, "updateauthorized", "wxaccount000002", "made-up-code")
        .await;
    assert_eq!(resp.status(), 200);
    let got = crm.wait_for(2).await;
    let error = got[1].json()["authorization"]["error"].clone();
    assert!(error.as_str().unwrap().contains("61010"), "{error}");
}

#[tokio::test]
async fn the_newest_verify_ticket_wins_whatever_the_order() {
    let (app, platform, component) = component_app().await;
    let (older, newer) = (platform.issue_ticket(), platform.issue_ticket());
    component.push_ticket(&app, &newer, 1_800_000_200).await;
    // A retried older push arrives later: it must not displace the newer.
    component.push_ticket(&app, &older, 1_800_000_100).await;
    let key = component.issue_key(&app).await;
    let (status, body) = key_get(&app, &format!("/component/{}/token", component.id), &key).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["component_access_token"]
        .as_str()
        .unwrap()
        .starts_with("COMPONENT-TOKEN-"));
    let calls = platform.calls("/cgi-bin/component/api_component_token");
    assert_eq!(calls.len(), 1);
    let asked: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(asked["component_verify_ticket"], newer.as_str());
    assert_eq!(asked["component_appsecret"], component.secret.as_str());
    // Shared: a second caller is served from the cache.
    let (status, again) = key_get(&app, &format!("/component/{}/token", component.id), &key).await;
    assert_eq!(status, 200);
    assert_eq!(
        again["component_access_token"],
        body["component_access_token"]
    );
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_component_token")
            .len(),
        1
    );

    // The component proxy adds component_access_token, replacing the caller's.
    let preauth = |query: &'static str| {
        app.api
            .post(format!(
                "{}/component/{}/api/cgi-bin/component/api_create_preauthcode{query}",
                app.address, component.id
            ))
            .bearer_auth(&key)
            .json(&json!({"component_appid": component.id}))
            .send()
    };
    let resp = preauth("?component_access_token=theirs").await.unwrap();
    let echoed: Value = resp.json().await.unwrap();
    assert_eq!(echoed["path"], "/cgi-bin/component/api_create_preauthcode");
    assert_eq!(
        echoed["query"],
        format!(
            "component_access_token={}",
            body["component_access_token"].as_str().unwrap()
        )
    );

    // WeChat stops honouring the component token: fetched again (with the
    // newest ticket) and the call sent once more.
    platform.refuse_token(body["component_access_token"].as_str().unwrap());
    let resp = preauth("").await.unwrap();
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again["errcode"], 0, "{again}");
    assert_ne!(again["query"], echoed["query"]);
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_component_token")
            .len(),
        2
    );
}

#[tokio::test]
async fn an_authorizers_refresh_token_is_rotated_twice_in_a_row_and_proxies_refresh_once() {
    let (app, platform, component) = component_app().await;
    authorize(&app, &platform, &component, "wxaccount000003").await;
    let key = component.issue_key(&app).await;
    let token_path = format!(
        "/component/{}/authorizers/wxaccount000003/token",
        component.id
    );
    // The exchange's own token is served: no refresh yet.
    let (status, first) = key_get(&app, &token_path, &key).await;
    assert_eq!(status, 200, "{first}");
    let first = first["access_token"].as_str().unwrap().to_owned();
    assert!(first.starts_with("AUTHORIZER-TOKEN-wxaccount000003"));
    assert!(platform
        .calls("/cgi-bin/component/api_authorizer_token")
        .is_empty());

    let api = format!(
        "{}/component/{}/authorizers/wxaccount000003/api/cgi-bin/message/custom/send",
        app.address, component.id
    );
    let mut refused = first.clone();
    for round in 1..=2 {
        // WeChat says the token is no longer valid: refreshed with the kept
        // refresh token (the fake refuses any but the newest) and sent again.
        platform.refuse_token(&refused);
        let resp = app
            .api
            .post(&api)
            .bearer_auth(&key)
            .json(&json!({"touser": "o1"}))
            .send()
            .await
            .unwrap();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["errcode"], 0, "round {round}: {answer}");
        assert_eq!(
            platform
                .calls("/cgi-bin/component/api_authorizer_token")
                .len(),
            round,
            "one refresh per refusal"
        );
        let (_, now) = key_get(&app, &token_path, &key).await;
        let now = now["access_token"].as_str().unwrap().to_owned();
        assert_ne!(now, refused, "round {round}");
        assert!(answer["query"].as_str().unwrap().contains(&now));
        refused = now;
    }
    let refreshes = platform.calls("/cgi-bin/component/api_authorizer_token");
    let presented: Vec<String> = refreshes
        .iter()
        .map(|c| {
            serde_json::from_slice::<Value>(&c.body).unwrap()["authorizer_refresh_token"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_ne!(
        presented[0], presented[1],
        "the rotated refresh token was used"
    );

    // A call the API keeps refusing is answered with its refusal, after one retry.
    platform.refuse_token(&refused);
    let calls_before = platform
        .calls("/cgi-bin/component/api_authorizer_token")
        .len();
    let raw = platform.refresh_token("wxaccount000003").unwrap();
    let resp = app.api.get(&api).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_authorizer_token")
            .len(),
        calls_before + 1
    );
    let dump = app.raw_store_dump().await;
    assert!(
        !dump.contains(&raw),
        "a refresh token is in the store in clear"
    );
}

#[tokio::test]
async fn unauthorized_ends_the_grant_and_its_token() {
    let (app, platform, component) = component_app().await;
    authorize(&app, &platform, &component, "wxaccount000004").await;
    let key = component.issue_key(&app).await;
    let token_path = format!(
        "/component/{}/authorizers/wxaccount000004/token",
        component.id
    );
    assert_eq!(key_get(&app, &token_path, &key).await.0, 200);
    let xml = component.event_xml("unauthorized", &[("AuthorizerAppid", "wxaccount000004")]);
    assert_eq!(text(component.push_event(&app, &xml).await).await.0, 200);
    let list = app
        .admin_json(&format!("/components/{}/authorizers", component.id))
        .await;
    assert_eq!(list["items"][0]["status"], "unauthorized");
    assert!(list["items"][0]["unauthorizedAt"].is_string());
    let (status, body) = key_get(&app, &token_path, &key).await;
    assert_eq!(status, 404, "{body}");
    let shown = app
        .admin_json(&format!("/components/{}", component.id))
        .await;
    assert_eq!(shown["authorizers"], 0);
}

#[tokio::test]
async fn an_accounts_push_reaches_its_and_the_components_subscriptions_via_the_component() {
    let (app, _platform, component) = component_app().await;
    let (shop_crm, provider_desk) = (FakePuppet::start().await, FakePuppet::start().await);
    app.subscribe("wxaccount000005", &shop_crm.url, json!({}))
        .await;
    app.subscribe(&component.id, &provider_desk.url, json!({}))
        .await;
    let xml = "<xml><ToUserName><![CDATA[gh_account]]></ToUserName><FromUserName><![CDATA[o_fan]]></FromUserName>\
               <CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>";
    let resp = component.push_message(&app, "wxaccount000005", xml).await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));
    for desk in [&shop_crm, &provider_desk] {
        let body = desk.wait_for(1).await[0].json();
        assert_eq!(body["source"], "wxaccount000005");
        assert_eq!(body["sourceKind"], "authorizer");
        assert_eq!(body["via"], component.id.as_str());
        assert_eq!(body["message"]["FromUserName"], "o_fan");
    }
    // Resent: a duplicate, delivered once.
    component.push_message(&app, "wxaccount000005", xml).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shop_crm.received().len(), 1);

    let path = format!("/component/{}/messages/wxaccount000005", component.id);
    let plain = app
        .api
        .post(format!(
            "{}{path}?timestamp=1&nonce=2&signature=x",
            app.address
        ))
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 403, "safe mode only");
    let (query, body) = component.seal_for(xml, "wxaccount000005", "wxaccount000005");
    let wrong = component.post(&app, &format!("{path}?{query}"), body).await;
    assert_eq!(wrong.status(), 401, "the receiveid is the component's");
}

#[tokio::test]
async fn sync_recovers_lost_refresh_tokens_page_by_page() {
    let (app, platform, component) = component_app().await;
    authorize(&app, &platform, &component, "wxaccount000006").await;
    // 600 accounts authorized while their pushes were lost: two pages.
    for n in 0..600 {
        platform.authorize_silently(&format!("wxlost{n:011}"));
    }
    let sync = format!("/components/{}/authorizers/sync", component.id);
    let resp = app.admin(Method::POST, &sync).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let synced: Value = resp.json().await.unwrap();
    assert_eq!(synced, json!({"authorizers": 601, "recovered": 600}));
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_get_authorizer_list")
            .len(),
        2
    );
    let again: Value = app
        .admin(Method::POST, &sync)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, json!({"authorizers": 601, "recovered": 0}));
    // A recovered grant serves a token (the fake honours only the current refresh token).
    let key = component.issue_key(&app).await;
    let (status, body) = key_get(
        &app,
        &format!(
            "/component/{}/authorizers/wxlost00000000599/token",
            component.id
        ),
        &key,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let shown = app
        .admin_json(&format!("/components/{}", component.id))
        .await;
    assert_eq!(shown["authorizers"], 601);
}

#[tokio::test]
async fn key_holders_only_and_no_upstream_call_for_anyone_else() {
    let (app, platform, component) = component_app().await;
    authorize(&app, &platform, &component, "wxaccount000007").await;
    let other = TestComponent::new("wxothercomponent");
    other.register(&app).await;
    let foreign = other.issue_key(&app).await;
    let key = component.issue_key(&app).await;
    let paths = [
        format!("/component/{}/token", component.id),
        format!(
            "/component/{}/api/cgi-bin/component/api_create_preauthcode",
            component.id
        ),
        format!(
            "/component/{}/authorizers/wxaccount000007/token",
            component.id
        ),
        format!(
            "/component/{}/authorizers/wxaccount000007/api/cgi-bin/user/get",
            component.id
        ),
    ];
    let before = platform
        .calls("/cgi-bin/component/api_component_token")
        .len();
    for path in &paths {
        for presented in [None, Some(foreign.as_str()), Some("wxk_made_up")] {
            let mut req = app.api.get(format!("{}{path}", app.address));
            if let Some(k) = presented {
                req = req.bearer_auth(k);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} with {presented:?}");
        }
    }
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_component_token")
            .len(),
        before
    );
    assert!(platform.calls("/cgi-bin/user/get").is_empty());
    let (status, _) = key_get(&app, "/component/wxnosuchcomp/token", &key).await;
    assert_eq!(status, 404);
    let (status, _) = key_get(
        &app,
        &format!(
            "/component/{}/authorizers/wxneverauthorized/token",
            component.id
        ),
        &key,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn hostile_component_pushes_get_a_4xx_and_leave_nothing_behind() {
    let (app, platform, component) = component_app().await;
    let desk = FakePuppet::start().await;
    app.subscribe(&component.id, &desk.url, json!({})).await;
    let other = TestComponent::new("wxothercomp0001");
    let ticket = platform.issue_ticket();
    let good = format!(
        "<xml><AppId>{}</AppId><CreateTime>1800000000</CreateTime><InfoType>component_verify_ticket</InfoType>\
         <ComponentVerifyTicket>{ticket}</ComponentVerifyTicket></xml>",
        component.id
    );
    let events = format!("/component/{}/events", component.id);
    let sealed = |xml: &str, receive_id: &str| component.seal_for(xml, receive_id, &component.id);
    let (query, body) = sealed(&good, &component.id);
    let mut cases: Vec<(&str, String, String, String)> = vec![
        (
            "no signature",
            events.clone(),
            "timestamp=1&nonce=2&encrypt_type=aes".into(),
            body.clone(),
        ),
        (
            "bad signature",
            events.clone(),
            query.replace("msg_signature=", "msg_signature=0"),
            body.clone(),
        ),
        (
            "plaintext",
            events.clone(),
            "timestamp=1&nonce=2&signature=abc".into(),
            good.clone(),
        ),
        ("empty body", events.clone(), query.clone(), String::new()),
        (
            "truncated",
            events.clone(),
            query.clone(),
            body[..body.len() / 2].to_owned(),
        ),
        (
            "oversized",
            events.clone(),
            query.clone(),
            format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(70_000)),
        ),
        (
            "doctype",
            events.clone(),
            query.clone(),
            format!("<!DOCTYPE x [<!ENTITY e \"e\">]>{body}"),
        ),
        (
            "unknown component",
            "/component/wxnosuchcomp/events".into(),
            query.clone(),
            body.clone(),
        ),
    ];
    let (q, b) = other.seal_for(&good, &component.id, &component.id);
    cases.push(("signed by another component", events.clone(), q, b));
    let mut add = |name: &'static str, path: &str, (q, b): (String, String)| {
        cases.push((name, path.to_owned(), q, b));
    };
    add(
        "receiveid another component",
        &events,
        sealed(&good, "wxothercomp0001"),
    );
    add(
        "another component's AppId",
        &events,
        sealed(
            &good.replace(&component.id, "wxothercomp0001"),
            &component.id,
        ),
    );
    add(
        "no AppId",
        &events,
        sealed(
            "<xml><InfoType>component_verify_ticket</InfoType></xml>",
            &component.id,
        ),
    );
    add(
        "no InfoType",
        &events,
        sealed(
            &format!("<xml><AppId>{}</AppId></xml>", component.id),
            &component.id,
        ),
    );
    add(
        "ticket without CreateTime",
        &events,
        sealed(
            &component
                .event_xml("component_verify_ticket", &[])
                .replace("<CreateTime>1700000000</CreateTime>", ""),
            &component.id,
        ),
    );
    add(
        "ticket without the ticket",
        &events,
        sealed(
            &component.event_xml("component_verify_ticket", &[]),
            &component.id,
        ),
    );
    add(
        "ticket with a bad CreateTime",
        &events,
        sealed(&good.replace("1800000000", "soon"), &component.id),
    );
    add(
        "authorized without a code",
        &events,
        sealed(
            &component.event_xml("authorized", &[("AuthorizerAppid", "wxa")]),
            &component.id,
        ),
    );
    add(
        "unauthorized without the account",
        &events,
        sealed(&component.event_xml("unauthorized", &[]), &component.id),
    );
    add(
        "unauthorized with a bad account",
        &events,
        sealed(
            &component.event_xml("unauthorized", &[("AuthorizerAppid", "a b")]),
            &component.id,
        ),
    );
    add("inner not XML", &events, sealed("<<<", &component.id));
    let messages = format!("/component/{}/messages/wxaccount000008", component.id);
    add(
        "message for another receiveid",
        &messages,
        sealed("<xml><MsgType>text</MsgType></xml>", "wxaccount000008"),
    );
    add(
        "message to a bad account path",
        &format!("/component/{}/messages/a%20b", component.id),
        sealed("<xml><MsgType>text</MsgType></xml>", &component.id),
    );
    let (q, mut b) = sealed(&good, &component.id);
    b = b.replacen("<Encrypt><![CDATA[", "<Encrypt><![CDATA[AAAA", 1);
    add("bad ciphertext", &events, (q, b));
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for (name, path, query, body) in cases {
        let resp = app
            .api
            .post(format!("{}{path}?{query}", app.address))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "{name}: {status}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(desk.received().is_empty(), "a hostile push was delivered");
    let stored = app.admin_json("/deliveries?limit=500").await;
    // Only the first ticket of `component_app`, which no subscription took then.
    assert_eq!(stored["items"].as_array().unwrap().len(), 1, "{stored}");
    assert!(platform
        .calls("/cgi-bin/component/api_component_token")
        .is_empty());
}

#[tokio::test]
async fn tickets_refresh_tokens_and_secrets_are_never_stored_in_clear() {
    let (app, platform, component) = component_app().await;
    let ticket = platform.issue_ticket();
    component.push_ticket(&app, &ticket, 1_700_000_900).await;
    let code = platform.issue_code("wxaccount000009");
    component
        .push_authorized(&app, "authorized", "wxaccount000009", &code)
        .await;
    authorize(&app, &platform, &component, "wxaccount000010").await;
    let refresh = platform.refresh_token("wxaccount000009").unwrap();
    let raw = app.raw_store_dump().await;
    for secret in [&ticket, &code, &refresh, &component.secret, &component.key] {
        assert!(
            !raw.contains(secret.as_str()),
            "{secret} is in the store in clear"
        );
    }
}

#[tokio::test]
async fn operators_see_each_components_ticket_age_and_customers() {
    let (app, platform, component) = component_app().await;
    authorize(&app, &platform, &component, "wxaccount000011").await;
    let overview = app.admin_json("/overview").await;
    let ours = overview["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == component.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(ours["kind"], "component");
    assert_eq!(ours["customers"], 1);
    assert_eq!(ours["ticketExpired"], false);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "wxkf_provider_ticket_age_seconds{{kind=\"component\",provider=\"{}\"}} 0",
            component.id
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_command_line_lists_components_their_accounts_and_keys_and_registers_one() {
    let (app, platform, component) = component_app().await;
    authorize(&app, &platform, &component, "wxaccount000012").await;
    // SecretsKey([9; 32]), as `sealed` sets it.
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let env = [("SECRETS_KEY", key.as_str())];
    let run = |args: &[&str]| {
        let out = app.cli_with_env(args, &env);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Value = serde_json::from_str(&run(&["components", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["componentAppId"], component.id.as_str());
    assert_eq!(listed[0]["authorizers"], 1);
    let table = run(&["components", "show", &component.id]);
    assert!(
        table.contains("TICKET RECEIVED") && table.contains(&component.id),
        "{table}"
    );
    let table = run(&["components", "authorizers", &component.id]);
    assert!(
        table.contains("wxaccount000012") && table.contains("authorized"),
        "{table}"
    );
    let issued = run(&[
        "components",
        "issue-key",
        &component.id,
        "--description",
        "CRM",
    ]);
    let shown = issued
        .lines()
        .find_map(|l| l.strip_prefix("key (shown once): "))
        .unwrap()
        .to_owned();
    let works = eventually(Duration::from_secs(5), async || {
        let path = format!(
            "/component/{}/authorizers/wxaccount000012/token",
            component.id
        );
        (key_get(&app, &path, &shown).await.0 == 200).then_some(())
    })
    .await;
    assert!(works.is_some(), "the key issued on the command line works");
    let keys: Value =
        serde_json::from_str(&run(&["components", "keys", &component.id, "--json"])).unwrap();
    assert_eq!(keys[0]["description"], "CRM");
    let key_id = keys[0]["id"].as_str().unwrap().to_owned();
    run(&["components", "revoke-key", &component.id, &key_id]);

    let other = TestComponent::new("wxclicomponent1");
    let put = app.cli_with_env(
        &[
            "components",
            "put",
            "wxclicomponent1",
            "--token",
            &other.token,
            "--encoding-aes-key",
            &other.key,
        ],
        &[
            ("SECRETS_KEY", key.as_str()),
            ("WXKF_COMPONENT_SECRET", &other.secret),
        ],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let without_key = app.cli_with_env(
        &[
            "components",
            "put",
            "wxclicomponent2",
            "--token",
            &other.token,
            "--encoding-aes-key",
            &other.key,
            "--app-secret",
            "s",
        ],
        &[],
    );
    assert!(!without_key.status.success());
    assert!(String::from_utf8_lossy(&without_key.stderr).contains("SECRETS_KEY"));
    let shown = app.admin_json("/components/wxclicomponent1").await;
    assert_eq!(shown["name"], "");
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn verify_tickets_refresh_tokens_and_keys_move_with_store_copy_both_ways() {
    let uri = require_mongo();
    let platform = FakeOpenPlatform::start().await;
    let (first_dir, back_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = |dir: Option<&std::path::Path>| {
        let (platform, uri) = (platform.clone(), uri.clone());
        let dir = dir.map(std::path::Path::to_path_buf);
        move |c: &mut Config| {
            sealed(c, &platform);
            c.mongo_uri = dir
                .is_none()
                .then(|| wxkf_manager::domain::Secret::new(uri));
            if let Some(dir) = dir {
                c.data_dir = dir;
            }
        }
    };
    let mut first = spawn_app_with(on(Some(first_dir.path()))).await;
    let component = TestComponent::new("wxcomponentcopy");
    component.register(&first).await;
    component
        .push_ticket(&first, &platform.issue_ticket(), 1_700_000_000)
        .await;
    authorize(&first, &platform, &component, "wxcopied0000001").await;
    let key = component.issue_key(&first).await;
    let path = format!(
        "/component/{}/authorizers/wxcopied0000001/token",
        component.id
    );
    let (_, token) = key_get(&first, &path, &key).await;
    first.stop().await;

    store_copy_sealed(first_dir.path(), [9; 32], &["--to", &uri]);
    let mut second = spawn_app_with(on(None)).await;
    assert_eq!(key_get(&second, &path, &key).await.1, token);
    // The ticket came across: a new account's exchange needs it.
    authorize(&second, &platform, &component, "wxaftercopy0001").await;
    second.stop().await;

    store_copy_sealed(back_dir.path(), [9; 32], &["--from", &uri]);
    let third = spawn_app_with(on(Some(back_dir.path()))).await;
    assert_eq!(key_get(&third, &path, &key).await.1, token);
    let shown = third
        .admin_json(&format!("/components/{}", component.id))
        .await;
    assert_eq!(shown["authorizers"], 2);
    // The refresh token came across sealed: a refresh after the copy works.
    platform.refuse_token(token["access_token"].as_str().unwrap());
    let resp = third
        .api
        .get(format!(
            "{}/component/{}/authorizers/wxcopied0000001/api/cgi-bin/user/get",
            third.address, component.id
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["errcode"], 0, "{answer}");
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_component_token")
            .len(),
        1,
        "one component token throughout"
    );
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn two_managers_on_one_mongodb_exchange_each_code_once_and_refresh_an_account_once() {
    let uri = require_mongo();
    let platform = FakeOpenPlatform::start().await;
    let first = spawn_app_with(|c| {
        sealed(c, &platform);
        c.mongo_uri = Some(wxkf_manager::domain::Secret::new(uri));
    })
    .await;
    let second = first.build_on_same_store(|c| c.port = 0).await.unwrap();
    let second_base = format!("http://127.0.0.1:{}", second.port());
    let server = tokio::spawn(second.run_until_stopped());
    let component = TestComponent::new("wxcomponenttwo1");
    component.register(&first).await;
    let key = component.issue_key(&first).await;
    component
        .push_ticket(&first, &platform.issue_ticket(), 1_700_000_000)
        .await;
    // WeChat resends the authorization to the other manager.
    let code = platform.issue_code("wxshared0000001");
    let xml = component.event_xml(
        "authorized",
        &[
            ("AuthorizerAppid", "wxshared0000001"),
            ("AuthorizationCode", &code),
        ],
    );
    let (q1, b1) = component.seal_for(&xml, &component.id, &component.id);
    let (q2, b2) = component.seal_for(&xml, &component.id, &component.id);
    let post = |base: String, q: String, b: String| {
        let client = first.api.clone();
        let url = format!("{base}/component/{}/events?{q}", component.id);
        async move {
            client
                .post(url)
                .header("content-type", "text/xml")
                .body(b)
                .send()
                .await
                .unwrap()
        }
    };
    let (a, b) = tokio::join!(
        post(first.address.clone(), q1, b1),
        post(second_base.clone(), q2, b2)
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let granted = eventually(Duration::from_secs(10), async || {
        platform.refresh_token("wxshared0000001")
    })
    .await;
    assert!(granted.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(platform.calls("/cgi-bin/component/api_query_auth").len(), 1);

    // WeChat stops honouring the account's token: both managers, asked at
    // once, refresh it once (a second refresh would present a spent token).
    let path = format!("/component/{}/authorizers/wxshared0000001", component.id);
    // (The component and its key are in force on the second within its refresh.)
    let served = eventually(Duration::from_secs(5), async || {
        let resp = first
            .api
            .get(format!("{second_base}{path}/token"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if resp.status() != 200 {
            return None;
        }
        resp.json::<Value>().await.ok()
    })
    .await
    .unwrap();
    assert_eq!(
        key_get(&first, &format!("{path}/token"), &key).await.1,
        served
    );
    platform.refuse_token(served["access_token"].as_str().unwrap());
    let call = |base: String| {
        let (client, key, url) = (
            first.api.clone(),
            key.clone(),
            format!("{base}{path}/api/cgi-bin/user/get"),
        );
        async move {
            let resp = client.get(url).bearer_auth(key).send().await.unwrap();
            resp.json::<Value>().await.unwrap()
        }
    };
    let (x, y) = tokio::join!(call(first.address.clone()), call(second_base.clone()));
    assert_eq!(
        (x["errcode"].as_i64(), y["errcode"].as_i64()),
        (Some(0), Some(0)),
        "{x} {y}"
    );
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_authorizer_token")
            .len(),
        1,
        "one refresh across managers"
    );
    assert_eq!(
        platform
            .calls("/cgi-bin/component/api_component_token")
            .len(),
        1
    );
    server.abort();
}

#[tokio::test]
async fn the_simulator_acts_as_the_open_platform_for_a_component_and_an_account() {
    let (app, platform, component) = component_app().await;
    let desk = FakePuppet::start().await;
    app.subscribe("wxsimaccount001", &desk.url, json!({})).await;
    let code = platform.issue_code("wxsimaccount001");
    let args = |extra: &[&str]| {
        let mut args: Vec<String> = ["--url", &app.address, "--component-app-id", &component.id]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let (ok, out) = crate::simulate::simulate_beside(args(&[
        "--token",
        &component.token,
        "--aes-key",
        &component.key,
        "--authorizer-app-id",
        "wxsimaccount001",
        "--authorization-code",
        &code,
        "--openid",
        "o_sim_fan",
    ]))
    .await;
    assert!(ok, "{out}");
    for line in [
        "ok   component_verify_ticket (oldest stamp)",
        "ok   authorized",
        "ok   account subscribe (message URL)",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    let got = desk.wait_for(1).await;
    assert_eq!(got[0].json()["message"]["FromUserName"], "o_sim_fan");
    // Exchanged with the real ticket: the simulated one displaced nothing.
    authorize_seen(&app, &component, "wxsimaccount001").await;

    let wrong = TestComponent::new(&component.id);
    let (ok, out) =
        crate::simulate::simulate_beside(args(&["--token", &wrong.token, "--aes-key", &wrong.key]))
            .await;
    assert!(
        !ok && out.contains("FAIL component_verify_ticket") && out.contains("HTTP 401"),
        "{out}"
    );
}

/// Tickets, codes, grants and provider secrets reach no log line (at trace
/// level), no answer and no delivery; the access tokens handed to key
/// holders reach no log line either. A suite and a component, end to end,
/// in the real binary.
#[tokio::test]
async fn provider_secrets_never_reach_logs_answers_or_deliveries() {
    use std::process::{Command, Stdio};
    let (platform, wecom) = (
        FakeOpenPlatform::start().await,
        FakeProviderApi::start().await,
    );
    let desk = FakePuppet::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let admin = "admin-token-provider-leak-0123456";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxkf-manager"));
    cmd.env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", data_dir.path())
        .env("RUST_LOG", "trace")
        .env("ADMIN_TOKEN", admin)
        .env(
            "SECRETS_KEY",
            "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=",
        )
        .env("WECHAT_API_BASE", &platform.base)
        .env("WECOM_API_BASE", &wecom.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uri) = test_mongo_uri() {
        cmd.env("MONGO_URI", uri);
    }
    let child = cmd.spawn().unwrap();
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answers = std::cell::RefCell::new(Vec::new());
    let send = async |req: reqwest::RequestBuilder| -> Value {
        let text = req.send().await.unwrap().text().await.unwrap();
        answers.borrow_mut().push(text.clone());
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    let admin_req = |method: Method, path: &str| {
        client
            .request(method, format!("{base}/admin/api{path}"))
            .bearer_auth(admin)
    };
    let component = TestComponent::new("wxcompleaks0001");
    let suite = TestSuite::new("wwsuiteleaks");
    send(admin_req(Method::PUT, &format!("/components/{}", component.id)).json(&component.body()))
        .await;
    send(admin_req(Method::PUT, &format!("/suites/{}", suite.id)).json(&suite.body())).await;
    for source in [component.id.as_str(), suite.id.as_str()] {
        send(
            admin_req(Method::POST, "/subscriptions")
                .json(&json!({"source": source, "endpoint": desk.url})),
        )
        .await;
    }
    let component_key = send(
        admin_req(Method::POST, &format!("/components/{}/keys", component.id)).json(&json!({})),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let suite_key =
        send(admin_req(Method::POST, &format!("/suites/{}/keys", suite.id)).json(&json!({}))).await
            ["key"]
            .as_str()
            .unwrap()
            .to_owned();
    // Give the directory its second to take the subscriptions and keys.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let post = async |path: String, (query, body): (String, String)| {
        client
            .post(format!("{base}{path}?{query}"))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let events = format!("/component/{}/events", component.id);
    let command = format!("/suite/{}/command", suite.id);
    let (component_ticket, suite_ticket) = (platform.issue_ticket(), wecom.issue_ticket());
    let xml = format!(
        "<xml><AppId>{}</AppId><CreateTime>1700000000</CreateTime><InfoType>component_verify_ticket</InfoType>\
         <ComponentVerifyTicket>{component_ticket}</ComponentVerifyTicket></xml>",
        component.id
    );
    let answer = post(
        events.clone(),
        component.seal_for(&xml, &component.id, &component.id),
    )
    .await;
    answers.borrow_mut().push(answer);
    let xml = suite.command_xml(
        "suite_ticket",
        &[("TimeStamp", "1700000000"), ("SuiteTicket", &suite_ticket)],
    );
    let answer = post(command.clone(), suite.creds.seal_for(&xml, &suite.id)).await;
    answers.borrow_mut().push(answer);
    let (component_code, suite_code) = (
        platform.issue_code("wxleakaccount01"),
        wecom.issue_code("wwleakcorp", "Leak"),
    );
    let xml = component.event_xml(
        "authorized",
        &[
            ("AuthorizerAppid", "wxleakaccount01"),
            ("AuthorizationCode", &component_code),
        ],
    );
    let answer = post(
        events,
        component.seal_for(&xml, &component.id, &component.id),
    )
    .await;
    answers.borrow_mut().push(answer);
    let xml = suite.command_xml(
        "create_auth",
        &[("AuthCode", &suite_code), ("TimeStamp", "1700000001")],
    );
    let answer = post(command, suite.creds.seal_for(&xml, &suite.id)).await;
    answers.borrow_mut().push(answer);
    // Two tickets, then two authorizations once exchanged.
    desk.wait_for(4).await;
    let first_refresh = platform.refresh_token("wxleakaccount01").unwrap();
    let permanent = wecom.permanent_code("wwleakcorp").unwrap();

    let mut access_tokens = Vec::new();
    let key_get = |path: String, key: &str| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(key.to_owned())
    };
    let got = send(key_get(
        format!("/component/{}/token", component.id),
        &component_key,
    ))
    .await;
    access_tokens.push(got["component_access_token"].as_str().unwrap().to_owned());
    let account = format!("/component/{}/authorizers/wxleakaccount01", component.id);
    let got = send(key_get(format!("{account}/token"), &component_key)).await;
    access_tokens.push(got["access_token"].as_str().unwrap().to_owned());
    platform.refuse_token(&access_tokens[1]);
    send(key_get(
        format!("{account}/api/cgi-bin/user/get"),
        &component_key,
    ))
    .await;
    let got = send(key_get(format!("{account}/token"), &component_key)).await;
    access_tokens.push(got["access_token"].as_str().unwrap().to_owned());
    let got = send(key_get(
        format!("/suite/{}/corps/wwleakcorp/token", suite.id),
        &suite_key,
    ))
    .await;
    access_tokens.push(got["access_token"].as_str().unwrap().to_owned());
    for path in [
        format!("/components/{}", component.id),
        format!("/components/{}/authorizers", component.id),
        format!("/suites/{}", suite.id),
        format!("/suites/{}/corps", suite.id),
        "/overview".into(),
        "/deliveries?limit=100".into(),
    ] {
        send(admin_req(Method::GET, &path)).await;
    }
    send(client.get(format!("{base}/metrics"))).await;
    let rotated = platform.refresh_token("wxleakaccount01").unwrap();
    assert_ne!(
        rotated, first_refresh,
        "a refresh rotated the refresh token"
    );

    // SIGTERM: a graceful stop flushes the log writers.
    let logs = crate::support::stop_and_read_logs(child);
    assert!(logs.contains("grant kept"), "trace logs were captured");
    let delivered: String = desk
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let answered = answers.borrow().join("\n");
    for secret in [
        &component_ticket,
        &suite_ticket,
        &component_code,
        &suite_code,
        &first_refresh,
        &rotated,
        &permanent,
        &component.secret,
        &component.key,
        &component.token,
        &suite.secret,
        &suite.creds.key,
        &suite.creds.token,
    ] {
        for (name, text) in [
            ("log", &logs),
            ("answer", &answered),
            ("delivery", &delivered),
        ] {
            assert!(!text.contains(secret.as_str()), "{secret} in a {name}");
        }
    }
    for token in &access_tokens {
        assert!(!logs.contains(token.as_str()), "{token} in a log line");
    }
}
