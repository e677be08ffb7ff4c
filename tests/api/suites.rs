//! WeCom suites (API.md §7.1): registered with SECRETS_KEY only; URL checks
//! with the provider's corp; tickets kept, newest first; create_auth
//! answered at once and exchanged after, once, against a fake WeCom that
//! refuses a code used twice; corp tokens shared; cancel_auth ends a grant;
//! a customer corp's callbacks reach its puppet and the suite's
//! subscriptions; hostile pushes get a 4xx and leave nothing behind.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use wxkf_manager::config::{Config, SecretsKey};

use crate::support::*;

fn sealed(c: &mut Config, provider: &FakeProviderApi) {
    c.secrets_key = Some(SecretsKey([7; 32]));
    c.wecom_api_base = provider.base.clone();
}

/// An app with SECRETS_KEY, a fake provider WeCom, and a registered suite
/// that has received a ticket.
async fn suite_app() -> (TestApp, FakeProviderApi, TestSuite) {
    let provider = FakeProviderApi::start().await;
    let app = spawn_app_with(|c| sealed(c, &provider)).await;
    let suite = TestSuite::new(&format!("wwsuite{}", random_string(8)));
    suite.register(&app).await;
    let ticket = provider.issue_ticket();
    let resp = suite.push_ticket(&app, &ticket, 1_700_000_000).await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));
    (app, provider, suite)
}

/// A corp installs the suite and the exchange ends: its grant is kept.
async fn authorize(app: &TestApp, provider: &FakeProviderApi, suite: &TestSuite, corp: &str) {
    let code = provider.issue_code(corp, &format!("Corp {corp}"));
    assert_eq!(text(suite.push_create_auth(app, &code).await).await.0, 200);
    let kept = eventually(Duration::from_secs(10), async || {
        let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
        (corps["items"][0]["status"] == "authorized").then_some(())
    })
    .await;
    assert!(kept.is_some(), "the grant was not kept");
}

#[tokio::test]
async fn a_suite_is_accepted_only_with_secrets_key_and_shown_without_secrets() {
    let provider = FakeProviderApi::start().await;
    let suite = TestSuite::new("wwsuitenokey");
    let bare = spawn_app_with(|c| c.wecom_api_base = provider.base.clone()).await;
    let resp = bare
        .admin(Method::PUT, "/suites/wwsuitenokey")
        .json(&suite.body())
        .send()
        .await
        .unwrap();
    let (status, body) = text(resp).await;
    assert_eq!(status, 409);
    assert!(body.contains("SECRETS_KEY"), "{body}");

    let app = spawn_app_with(|c| sealed(c, &provider)).await;
    let mut bad = suite.body();
    bad["suiteSecret"] = json!("");
    let resp = app
        .admin(Method::PUT, "/suites/wwsuitenokey")
        .json(&bad)
        .send()
        .await
        .unwrap();
    let (status, body) = text(resp).await;
    assert_eq!(status, 400);
    assert!(body.contains("suiteSecret"), "{body}");

    suite.register(&app).await;
    let shown = app.admin_json("/suites/wwsuitenokey").await;
    assert_eq!(
        shown,
        json!({"suiteId": "wwsuitenokey", "providerCorpId": suite.provider_corp,
               "name": "Test suite", "ticketReceivedAt": null, "corps": 0})
    );
    let listed = app.admin_json("/suites").await;
    assert_eq!(listed["items"][0], shown);
    for secret in [&suite.secret, &suite.creds.token, &suite.creds.key] {
        assert!(!listed.to_string().contains(secret.as_str()));
    }
    let resp = app
        .admin(Method::GET, "/suites/wwnosuchsuite")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn both_urls_answer_a_check_sealed_for_the_provider_corp_and_refuse_any_other() {
    let (app, _provider, suite) = suite_app().await;
    for url in ["command", "data", "data/wwcustomer"] {
        let good = suite.check_query("echo-me-123", &suite.provider_corp);
        let resp = app.get(&format!("/suite/{}/{url}?{good}", suite.id)).await;
        assert_eq!(text(resp).await, (200, "echo-me-123".to_owned()), "{url}");
        let wrong = suite.check_query("echo-me-123", &suite.id);
        let resp = app.get(&format!("/suite/{}/{url}?{wrong}", suite.id)).await;
        assert_eq!(resp.status(), 401, "{url}: sealed for the suite id");
    }
    let good = suite.check_query("x", &suite.provider_corp);
    let resp = app
        .get(&format!("/suite/wwnosuchsuite/command?{good}"))
        .await;
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn create_auth_is_answered_before_its_exchange_which_happens_once_though_wecom_resends() {
    let (app, provider, suite) = suite_app().await;
    let crm = FakePuppet::start().await;
    app.subscribe(&suite.id, &crm.url, json!({})).await;
    // The exchange takes longer than WeCom waits for the answer.
    provider.slow_exchanges(Duration::from_millis(1500));
    let code = provider.issue_code("wwcustomer1", "Customer One");
    let xml = suite.command_xml(
        "create_auth",
        &[
            ("AuthCode", &code),
            ("TimeStamp", "1700000100"),
            ("State", "s1"),
        ],
    );
    let resp = suite.push_command(&app, &xml).await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));
    assert!(
        provider.permanent_code("wwcustomer1").is_none(),
        "answered only after the exchange"
    );
    // WeCom resends (re-encrypted): stored once, exchanged once.
    let resp = suite.push_command(&app, &xml).await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));

    let got = crm.wait_for(1).await;
    let body = got[0].json();
    assert_eq!(body["sourceKind"], "wecom_suite");
    assert_eq!(body["source"], suite.id.as_str());
    assert_eq!(body["message"]["InfoType"], "create_auth");
    assert_eq!(
        body["authorization"],
        json!({"corpId": "wwcustomer1", "corpName": "Customer One"})
    );
    assert!(
        !got[0]
            .body
            .windows(code.len())
            .any(|w| w == code.as_bytes()),
        "the code is delivered"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(crm.received().len(), 1, "delivered once");
    assert_eq!(
        provider
            .calls("/cgi-bin/service/v2/get_permanent_code")
            .len(),
        1
    );

    let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
    assert_eq!(corps["items"][0]["corpId"], "wwcustomer1");
    assert_eq!(corps["items"][0]["corpName"], "Customer One");
    assert_eq!(corps["items"][0]["status"], "authorized");
    let shown = app.admin_json(&format!("/suites/{}", suite.id)).await;
    assert_eq!(shown["corps"], 1);
    assert!(shown["ticketReceivedAt"].is_string());
}

#[tokio::test]
async fn a_code_wecom_refuses_reaches_subscribers_as_an_error_and_is_a_dead_letter() {
    let (app, provider, suite) = suite_app().await;
    let crm = FakePuppet::start().await;
    app.subscribe(&suite.id, &crm.url, json!({})).await;
    let resp = suite.push_create_auth(&app, "AUTHCODE-made-up").await;
    assert_eq!(resp.status(), 200);
    let body = crm.wait_for(1).await[0].json();
    let error = body["authorization"]["error"].as_str().unwrap();
    assert!(error.contains("40078"), "{error}");
    assert_eq!(
        provider
            .calls("/cgi-bin/service/v2/get_permanent_code")
            .len(),
        1
    );
    let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
    assert_eq!(corps["items"], json!([]));
    let dead = eventually(Duration::from_secs(5), async || {
        let dead = app.admin_json("/deliveries?status=dead").await;
        (dead["items"].as_array()?.len() == 1).then_some(dead)
    })
    .await;
    assert!(dead.is_some(), "the exchange is not a dead letter");
}

#[tokio::test]
async fn the_newest_ticket_wins_whatever_the_order_and_without_one_tokens_say_why() {
    let provider = FakeProviderApi::start().await;
    let app = spawn_app_with(|c| sealed(c, &provider)).await;
    let suite = TestSuite::new("wwsuiteticket");
    suite.register(&app).await;
    let key = suite.issue_key(&app).await;
    let token_of = async |corp: &str| {
        app.api
            .get(format!(
                "{}/suite/{}/corps/{corp}/token",
                app.address, suite.id
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
    };
    // No grant yet: 404; a grant but no ticket is impossible to reach (the
    // exchange needs the ticket), so the suite token route is checked by the exchange.
    let (status, body) = text(token_of("wwcustomer").await).await;
    assert_eq!(status, 404, "{body}");

    let newer = provider.issue_ticket();
    let older = provider.issue_ticket();
    assert_eq!(
        suite
            .push_ticket(&app, &newer, 1_700_000_600)
            .await
            .status(),
        200
    );
    // A retry of an older push arrives late.
    assert_eq!(
        suite
            .push_ticket(&app, &older, 1_700_000_000)
            .await
            .status(),
        200
    );
    authorize(&app, &provider, &suite, "wwcustomer").await;
    let asked = provider.calls("/cgi-bin/service/get_suite_token");
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].json()["suite_ticket"], newer.as_str());
    assert_eq!(asked[0].json()["suite_secret"], suite.secret.as_str());
}

#[tokio::test]
async fn an_exchange_waits_for_the_first_ticket() {
    let provider = FakeProviderApi::start().await;
    let app = spawn_app_with(|c| sealed(c, &provider)).await;
    let suite = TestSuite::new("wwsuitelate");
    suite.register(&app).await;
    let code = provider.issue_code("wwlate", "Late");
    assert_eq!(suite.push_create_auth(&app, &code).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(provider
        .calls("/cgi-bin/service/get_suite_token")
        .is_empty());
    let failing = app.admin_json("/deliveries?status=pending").await;
    let error = failing["items"][0]["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("suite_ticket"), "{failing}");
    let ticket = provider.issue_ticket();
    suite.push_ticket(&app, &ticket, 1_700_000_000).await;
    let granted = eventually(Duration::from_secs(10), async || {
        provider.permanent_code("wwlate")
    })
    .await;
    assert!(granted.is_some(), "exchanged once the ticket came");
}

#[tokio::test]
async fn corp_tokens_are_shared_by_key_holders_and_puppets_and_cancel_auth_ends_the_grant() {
    let (app, provider, suite) = suite_app().await;
    authorize(&app, &provider, &suite, "wwcustomer").await;
    let key = suite.issue_key(&app).await;
    let token_of = async |key: &str| {
        app.api
            .get(format!(
                "{}/suite/{}/corps/wwcustomer/token",
                app.address, suite.id
            ))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    };
    let first: Value = token_of(&key).await.json().await.unwrap();
    let token = first["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("CORP-TOKEN-wwcustomer"), "{first}");
    let again: Value = token_of(&key).await.json().await.unwrap();
    assert_eq!(again["access_token"], token.as_str());
    assert_eq!(token_of("wxk_not-a-key").await.status(), 401);
    // A puppet of the customer presents the suite key as its corpSecret.
    let customer = suite.customer("wwcustomer", &key);
    let got = app.get_token(&customer).await;
    assert_eq!(got["access_token"], token.as_str(), "{got}");
    assert_eq!(provider.calls("/cgi-bin/service/get_corp_token").len(), 1);
    let corp_tokens = app
        .api
        .get(format!("{}/suite/{}/corps", app.address, suite.id))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let listed: Value = corp_tokens.json().await.unwrap();
    assert_eq!(listed["items"][0]["corpId"], "wwcustomer");
    // The proxy adds the corp's token.
    let proxied: Value = app
        .api
        .post(format!(
            "{}/suite/{}/corps/wwcustomer/api/cgi-bin/kf/account/list?access_token=theirs",
            app.address, suite.id
        ))
        .bearer_auth(&key)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(proxied["path"], "/cgi-bin/kf/account/list");
    assert_eq!(proxied["query"], format!("access_token={token}"));

    let cancel = suite.command_xml(
        "cancel_auth",
        &[("AuthCorpId", "wwcustomer"), ("TimeStamp", "1700000900")],
    );
    assert_eq!(suite.push_command(&app, &cancel).await.status(), 200);
    assert_eq!(token_of(&key).await.status(), 404);
    let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
    assert_eq!(corps["items"][0]["status"], "cancelled");
    assert!(corps["items"][0]["cancelledAt"].is_string());
}

#[tokio::test]
async fn a_customer_corps_callback_reaches_its_puppet_and_the_suites_subscriptions_via_the_suite() {
    let (app, provider, suite) = suite_app().await;
    authorize(&app, &provider, &suite, "wwcustomer").await;
    let key = suite.issue_key(&app).await;
    let puppet = FakePuppet::start().await;
    let customer = suite.customer("wwcustomer", &key);
    app.register_ok(&customer, "wkcustomerkf", &puppet.url)
        .await;
    let desk = FakePuppet::start().await;
    app.subscribe(&suite.id, &desk.url, json!({})).await;

    let xml = customer.kf_event_xml("wkcustomerkf", "sync-token-1");
    let resp = suite.push_data(&app, "wwcustomer", &xml, None).await;
    assert_eq!(text(resp).await, (200, "success".to_owned()));
    let delivered = puppet.wait_for(1).await;
    // The puppet decrypts it with the suite's credentials, unmodified.
    assert_eq!(customer.token_in(&delivered[0].body), "sync-token-1");
    let body = desk.wait_for(1).await[0].json();
    assert_eq!(body["source"], "wwcustomer");
    assert_eq!(body["sourceKind"], "wecom");
    assert_eq!(body["via"], suite.id.as_str());
    assert_eq!(body["message"]["OpenKfId"], "wkcustomerkf");

    // With `$CORPID$` in the URL, the receiveid must be that corp.
    let resp = suite
        .push_data(
            &app,
            "wwcustomer",
            &customer.kf_event_xml("wkcustomerkf", "t2"),
            Some("wwcustomer"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = suite
        .push_data(
            &app,
            "wwcustomer",
            &customer.kf_event_xml("wkcustomerkf", "t3"),
            Some("wwother"),
        )
        .await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn tickets_grants_and_secrets_are_never_stored_in_clear() {
    let (app, provider, suite) = suite_app().await;
    let ticket = provider.issue_ticket();
    suite.push_ticket(&app, &ticket, 1_700_000_900).await;
    let code = provider.issue_code("wwsealedcorp", "Sealed");
    suite.push_create_auth(&app, &code).await;
    let permanent = eventually(Duration::from_secs(10), async || {
        provider.permanent_code("wwsealedcorp")
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(10), async || {
        let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
        (corps["items"][0]["status"] == "authorized").then_some(())
    })
    .await
    .unwrap();
    let raw = app.raw_store_dump().await;
    for secret in [&ticket, &code, &permanent, &suite.secret, &suite.creds.key] {
        assert!(
            !raw.contains(secret.as_str()),
            "{secret} is in the store in clear"
        );
    }
}

#[tokio::test]
async fn hostile_provider_pushes_get_a_4xx_and_leave_nothing_behind() {
    let (app, provider, suite) = suite_app().await;
    let crm = FakePuppet::start().await;
    app.subscribe(&suite.id, &crm.url, json!({})).await;
    let other = TestSuite::new("wwothersuite");
    let ticket = provider.issue_ticket();
    let good = suite.command_xml(
        "suite_ticket",
        &[("TimeStamp", "1800000000"), ("SuiteTicket", &ticket)],
    );
    let (query, body) = suite.creds.seal_for(&good, &suite.id);
    let command = format!("/suite/{}/command", suite.id);
    let data = format!("/suite/{}/data", suite.id);
    let sealed = |xml: &str, receive_id: &str| suite.creds.seal_for(xml, receive_id);
    let foreign = other.command_xml(
        "suite_ticket",
        &[("TimeStamp", "1800000000"), ("SuiteTicket", "X")],
    );
    let mut cases: Vec<(&str, String, String, String)> = vec![
        (
            "no signature",
            command.clone(),
            "timestamp=1&nonce=2".into(),
            body.clone(),
        ),
        (
            "bad signature",
            command.clone(),
            query.replace("msg_signature=", "msg_signature=0"),
            body.clone(),
        ),
        ("empty body", command.clone(), query.clone(), String::new()),
        (
            "truncated",
            command.clone(),
            query.clone(),
            body[..body.len() / 2].to_owned(),
        ),
        (
            "not XML",
            command.clone(),
            query.clone(),
            "{\"Encrypt\": 1}".into(),
        ),
        (
            "oversized",
            command.clone(),
            query.clone(),
            format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(70_000)),
        ),
        (
            "doctype",
            command.clone(),
            query.clone(),
            format!("<!DOCTYPE x [<!ENTITY e \"e\">]>{body}"),
        ),
        (
            "signed by another suite",
            command.clone(),
            other.creds.seal_for(&good, &suite.id).0,
            other.creds.seal_for(&good, &suite.id).1,
        ),
        (
            "unknown suite",
            "/suite/wwnosuchsuite/command".into(),
            query.clone(),
            body.clone(),
        ),
    ];
    let mut add = |name: &'static str, path: &str, (q, b): (String, String)| {
        cases.push((name, path.to_owned(), q, b));
    };
    add(
        "receiveid the provider corp",
        &command,
        sealed(&good, &suite.provider_corp),
    );
    add(
        "receiveid another suite",
        &command,
        sealed(&good, "wwothersuite"),
    );
    add(
        "another suite's SuiteId",
        &command,
        sealed(&foreign, &suite.id),
    );
    add(
        "no InfoType",
        &command,
        sealed(
            &format!("<xml><SuiteId>{}</SuiteId></xml>", suite.id),
            &suite.id,
        ),
    );
    add(
        "no SuiteId",
        &command,
        sealed("<xml><InfoType>suite_ticket</InfoType></xml>", &suite.id),
    );
    add(
        "ticket without TimeStamp",
        &command,
        sealed(
            &suite.command_xml("suite_ticket", &[("SuiteTicket", "T")]),
            &suite.id,
        ),
    );
    add(
        "ticket with a bad TimeStamp",
        &command,
        sealed(
            &suite.command_xml(
                "suite_ticket",
                &[("TimeStamp", "soon"), ("SuiteTicket", "T")],
            ),
            &suite.id,
        ),
    );
    add(
        "ticket without SuiteTicket",
        &command,
        sealed(
            &suite.command_xml("suite_ticket", &[("TimeStamp", "1")]),
            &suite.id,
        ),
    );
    add(
        "create_auth without AuthCode",
        &command,
        sealed(
            &suite.command_xml("create_auth", &[("TimeStamp", "1")]),
            &suite.id,
        ),
    );
    add(
        "cancel_auth without AuthCorpId",
        &command,
        sealed(
            &suite.command_xml("cancel_auth", &[("TimeStamp", "1")]),
            &suite.id,
        ),
    );
    add(
        "cancel_auth with a bad AuthCorpId",
        &command,
        sealed(
            &suite.command_xml("cancel_auth", &[("AuthCorpId", "a b")]),
            &suite.id,
        ),
    );
    add(
        "inner not XML",
        &command,
        sealed("not xml at all", &suite.id),
    );
    add(
        "data sealed for no valid corp",
        &data,
        sealed("<xml><MsgType>text</MsgType></xml>", "bad corp!"),
    );
    add("data inner not XML", &data, sealed("<<<", "wwcustomer"));
    // Bad padding: a valid ciphertext with its last block changed.
    let (q, mut b) = sealed(&good, &suite.id);
    b = b.replacen("<Encrypt><![CDATA[", "<Encrypt><![CDATA[AAAA", 1);
    add("bad ciphertext", &command, (q, b));
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
    assert!(crm.received().is_empty(), "a hostile push was delivered");
    let stored = app.admin_json("/deliveries?limit=500").await;
    // Only the first ticket of `suite_app`, which no subscription took then.
    assert_eq!(stored["items"].as_array().unwrap().len(), 1, "{stored}");
    let shown = app.admin_json(&format!("/suites/{}", suite.id)).await;
    assert_eq!(provider.calls("/cgi-bin/service/get_suite_token").len(), 0);
    assert!(shown["ticketReceivedAt"].is_string());
}

#[tokio::test]
async fn operators_see_each_suites_ticket_age_customers_and_failed_exchanges() {
    let (app, provider, suite) = suite_app().await;
    authorize(&app, &provider, &suite, "wwcustomer").await;
    suite.push_create_auth(&app, "AUTHCODE-made-up").await;
    let late = TestSuite::new("wwsuitenoticket");
    late.register(&app).await;
    let providers = eventually(Duration::from_secs(5), async || {
        let overview = app.admin_json("/overview").await;
        let providers = overview["providers"].as_array()?.clone();
        let failed = providers.iter().any(|p| p["failedExchanges"] == 1);
        failed.then_some(providers)
    })
    .await
    .expect("the refused exchange is counted");
    let of = |id: &str| providers.iter().find(|p| p["id"] == id).unwrap().clone();
    let ours = of(&suite.id);
    assert_eq!(ours["kind"], "suite");
    assert_eq!(ours["customers"], 1);
    assert_eq!(ours["ticketExpired"], false);
    assert!(ours["ticketAgeSeconds"].as_u64().unwrap() < 60);
    let none = of("wwsuitenoticket");
    assert_eq!(none["ticketAgeSeconds"], Value::Null);
    assert_eq!(none["ticketExpired"], true);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "wxkf_provider_ticket_age_seconds{{kind=\"suite\",provider=\"{}\"}} 0",
            suite.id
        )),
        "{metrics}"
    );
    assert!(metrics.contains(
        "wxkf_provider_ticket_age_seconds{kind=\"suite\",provider=\"wwsuitenoticket\"} -1"
    ));
    assert!(metrics.contains("wxkf_provider_exchanges_total{outcome=\"granted\"} 1"));
    assert!(metrics.contains("wxkf_provider_exchanges_total{outcome=\"refused\"} 1"));
}

#[tokio::test]
async fn the_command_line_lists_suites_their_corps_and_keys_and_registers_one() {
    let (app, provider, suite) = suite_app().await;
    authorize(&app, &provider, &suite, "wwcustomer").await;
    // SecretsKey([7; 32]), as `sealed` sets it.
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
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
    let listed: Value = serde_json::from_str(&run(&["suites", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["suiteId"], suite.id.as_str());
    assert_eq!(listed[0]["corps"], 1);
    let table = run(&["suites", "corps", &suite.id]);
    assert!(
        table.contains("wwcustomer") && table.contains("authorized"),
        "{table}"
    );
    let issued = run(&["suites", "issue-key", &suite.id, "--description", "CRM"]);
    let shown = issued
        .lines()
        .find_map(|l| l.strip_prefix("key (shown once): "))
        .unwrap();
    // The key works at once on the running manager (within its refresh).
    let token = eventually(Duration::from_secs(5), async || {
        let resp = app
            .api
            .get(format!(
                "{}/suite/{}/corps/wwcustomer/token",
                app.address, suite.id
            ))
            .bearer_auth(shown)
            .send()
            .await
            .unwrap();
        (resp.status() == 200).then_some(())
    })
    .await;
    assert!(token.is_some(), "the key issued on the command line works");
    let keys: Value = serde_json::from_str(&run(&["suites", "keys", &suite.id, "--json"])).unwrap();
    assert_eq!(keys[0]["description"], "CRM");
    assert!(!keys.to_string().contains(shown));

    let other = TestSuite::new("wwclisuite");
    let put = app.cli_with_env(
        &[
            "suites",
            "put",
            "wwclisuite",
            "--provider-corp-id",
            &other.provider_corp,
            "--token",
            &other.creds.token,
            "--encoding-aes-key",
            &other.creds.key,
        ],
        &[
            ("SECRETS_KEY", key.as_str()),
            ("WXKF_SUITE_SECRET", &other.secret),
        ],
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let without_key = app.cli_with_env(
        &[
            "suites",
            "put",
            "wwclisuite2",
            "--provider-corp-id",
            &other.provider_corp,
            "--token",
            &other.creds.token,
            "--encoding-aes-key",
            &other.creds.key,
            "--suite-secret",
            "s",
        ],
        &[],
    );
    assert!(!without_key.status.success());
    let shown = app.admin_json("/suites/wwclisuite").await;
    assert_eq!(shown["providerCorpId"], other.provider_corp.as_str());
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn tickets_grants_and_keys_move_with_store_copy_both_ways() {
    let uri = require_mongo();
    let provider = FakeProviderApi::start().await;
    let (first_dir, back_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let on = |dir: Option<&std::path::Path>| {
        let (provider, uri) = (provider.clone(), uri.clone());
        let dir = dir.map(std::path::Path::to_path_buf);
        move |c: &mut Config| {
            sealed(c, &provider);
            c.mongo_uri = dir
                .is_none()
                .then(|| wxkf_manager::domain::Secret::new(uri));
            if let Some(dir) = dir {
                c.data_dir = dir;
            }
        }
    };
    let mut first = spawn_app_with(on(Some(first_dir.path()))).await;
    let suite = TestSuite::new("wwsuitecopy");
    suite.register(&first).await;
    let ticket = provider.issue_ticket();
    suite.push_ticket(&first, &ticket, 1_700_000_000).await;
    authorize(&first, &provider, &suite, "wwcopied").await;
    let key = suite.issue_key(&first).await;
    let token_of = async |app: &TestApp| -> Value {
        let resp = app
            .api
            .get(format!(
                "{}/suite/{}/corps/wwcopied/token",
                app.address, suite.id
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    };
    let token = token_of(&first).await["access_token"].clone();
    first.stop().await;

    store_copy_sealed(first_dir.path(), [7; 32], &["--to", &uri]);
    let mut second = spawn_app_with(on(None)).await;
    // The token is cached under the permanent code's fingerprint: the same
    // token means the same code came across; the key still opens it.
    assert_eq!(token_of(&second).await["access_token"], token);
    let corps = second
        .admin_json(&format!("/suites/{}/corps", suite.id))
        .await;
    assert_eq!(corps["items"][0]["status"], "authorized");
    // The ticket came across: a new corp's exchange needs it.
    authorize(&second, &provider, &suite, "wwaftercopy").await;
    second.stop().await;

    store_copy_sealed(back_dir.path(), [7; 32], &["--from", &uri]);
    let third = spawn_app_with(on(Some(back_dir.path()))).await;
    assert_eq!(token_of(&third).await["access_token"], token);
    let shown = third.admin_json(&format!("/suites/{}", suite.id)).await;
    assert_eq!(shown["corps"], 2);
    assert_eq!(
        provider.calls("/cgi-bin/service/get_suite_token").len(),
        1,
        "one suite token throughout"
    );
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn two_managers_on_one_mongodb_share_the_ticket_exchange_each_code_once_and_share_tokens() {
    let uri = require_mongo();
    let provider = FakeProviderApi::start().await;
    let first = spawn_app_with(|c| {
        sealed(c, &provider);
        c.mongo_uri = Some(wxkf_manager::domain::Secret::new(uri));
    })
    .await;
    let second = first.build_on_same_store(|c| c.port = 0).await.unwrap();
    let second_base = format!("http://127.0.0.1:{}", second.port());
    let server = tokio::spawn(second.run_until_stopped());
    let suite = TestSuite::new("wwsuitetwo");
    suite.register(&first).await;
    let key = suite.issue_key(&first).await;
    // The suite and its key are in force on the second within its refresh.
    let served = eventually(Duration::from_secs(5), async || {
        let resp = first
            .api
            .get(format!("{second_base}/suite/{}/corps", suite.id))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        (resp.status() == 200).then_some(())
    })
    .await;
    assert!(served.is_some(), "the second manager takes the key");
    // The ticket reaches the first manager; the second uses it.
    let ticket = provider.issue_ticket();
    suite.push_ticket(&first, &ticket, 1_700_000_000).await;
    let code = provider.issue_code("wwshared", "Shared");
    let xml = suite.command_xml(
        "create_auth",
        &[("AuthCode", &code), ("TimeStamp", "1700000001")],
    );
    // WeCom resends the push to the other manager behind the load balancer.
    let (query, body) = suite.creds.seal_for(&xml, &suite.id);
    let (query2, body2) = suite.creds.seal_for(&xml, &suite.id);
    let to_second = |path_and_query: String, body: String| {
        app_post(&first.api, format!("{second_base}{path_and_query}"), body)
    };
    let to_first = format!("/suite/{}/command?{query}", suite.id);
    let (a, b) = tokio::join!(
        suite.post(&first, &to_first, body),
        to_second(format!("/suite/{}/command?{query2}", suite.id), body2),
    );
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let granted = eventually(Duration::from_secs(10), async || {
        provider.permanent_code("wwshared")
    })
    .await;
    assert!(granted.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        provider
            .calls("/cgi-bin/service/v2/get_permanent_code")
            .len(),
        1
    );
    // Both managers serve the corp token from one upstream call.
    let mut tokens = Vec::new();
    for base in [
        first.address.clone(),
        second_base.clone(),
        first.address.clone(),
        second_base,
    ] {
        let got: Value = first
            .api
            .get(format!("{base}/suite/{}/corps/wwshared/token", suite.id))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(got["access_token"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        tokens
            .iter()
            .all(|t| t == &tokens[0] && t.starts_with("CORP-TOKEN")),
        "{tokens:?}"
    );
    assert_eq!(provider.calls("/cgi-bin/service/get_corp_token").len(), 1);
    assert_eq!(provider.calls("/cgi-bin/service/get_suite_token").len(), 1);
    server.abort();
}

async fn app_post(client: &reqwest::Client, url: String, body: String) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "text/xml")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_simulator_acts_as_wecom_for_a_suite_its_install_and_a_customer_corp() {
    let (app, provider, suite) = suite_app().await;
    let key = suite.issue_key(&app).await;
    let puppet = FakePuppet::start().await;
    let customer = suite.customer("wwsimcustomer", &key);
    app.register_ok(&customer, "wksimkf", &puppet.url).await;
    let code = provider.issue_code("wwsimcustomer", "Simulated customer");

    let base = [
        "--url",
        &app.address,
        "--suite-id",
        &suite.id,
        "--token",
        &suite.creds.token,
        "--aes-key",
        &suite.creds.key,
    ]
    .map(str::to_owned);
    let args = |extra: &[&str]| {
        [
            &base[..],
            &extra.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ]
        .concat()
    };
    let (ok, out) = crate::simulate::simulate_beside(args(&[
        "--provider-corp-id",
        &suite.provider_corp,
        "--auth-code",
        &code,
        "--corp-id",
        "wwsimcustomer",
        "--kf-id",
        "wksimkf",
    ]))
    .await;
    assert!(ok, "{out}");
    for line in [
        "ok   command URL check",
        "ok   data URL check",
        "ok   suite_ticket (oldest stamp)",
        "ok   create_auth",
        "ok   corp kf_msg_or_event (data URL)",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    assert_eq!(
        puppet.wait_for(1).await.len(),
        1,
        "the wake-up reached the puppet"
    );
    // The code was exchanged with the real ticket: the simulated one, stamped
    // as the oldest possible, displaced nothing.
    let kept = eventually(Duration::from_secs(10), async || {
        let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
        (corps["items"][0]["corpId"] == "wwsimcustomer"
            && corps["items"][0]["status"] == "authorized")
            .then_some(())
    })
    .await;
    assert!(kept.is_some(), "the simulated install was not exchanged");

    // The wrong provider corp fails both URL checks, and says so.
    let (ok, out) =
        crate::simulate::simulate_beside(args(&["--provider-corp-id", "wwnotprovider"])).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL command URL check") && out.contains("FAIL data URL check"),
        "{out}"
    );
}

#[tokio::test]
async fn reset_permanent_code_replaces_the_grant_and_change_auth_is_only_delivered() {
    let (app, provider, suite) = suite_app().await;
    authorize(&app, &provider, &suite, "wwresetcorp").await;
    let crm = FakePuppet::start().await;
    app.subscribe(&suite.id, &crm.url, json!({})).await;
    let key = suite.issue_key(&app).await;
    let token_path = format!("{}/suite/{}/corps/wwresetcorp/token", app.address, suite.id);
    let token_of = async || -> Value {
        let resp = app
            .api
            .get(&token_path)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    };
    let before = token_of().await["access_token"].clone();
    let old_code = provider.permanent_code("wwresetcorp").unwrap();

    // 代开发: WeCom hands out a new permanent code; the old one stops working.
    let code = provider.issue_code("wwresetcorp", "Reset Corp");
    let xml = suite.command_xml(
        "reset_permanent_code",
        &[("AuthCode", &code), ("TimeStamp", "1700000500")],
    );
    assert_eq!(text(suite.push_command(&app, &xml).await).await.0, 200);
    let got = crm.wait_for(1).await;
    assert_eq!(got[0].json()["message"]["InfoType"], "reset_permanent_code");
    assert_eq!(got[0].json()["authorization"]["corpId"], "wwresetcorp");
    assert_ne!(provider.permanent_code("wwresetcorp").unwrap(), old_code);
    // The fake refuses the old code: a token now proves the new one is used.
    let after = token_of().await;
    assert!(
        after["access_token"]
            .as_str()
            .unwrap()
            .starts_with("CORP-TOKEN"),
        "{after}"
    );
    assert_ne!(after["access_token"], before);

    // change_auth: delivered, the grant untouched.
    let xml = suite.command_xml(
        "change_auth",
        &[("AuthCorpId", "wwresetcorp"), ("TimeStamp", "1700000600")],
    );
    assert_eq!(text(suite.push_command(&app, &xml).await).await.0, 200);
    let got = crm.wait_for(2).await;
    assert_eq!(got[1].json()["message"]["InfoType"], "change_auth");
    assert_eq!(got[1].json()["message"]["AuthCorpId"], "wwresetcorp");
    assert_eq!(token_of().await["access_token"], after["access_token"]);
    let corps = app.admin_json(&format!("/suites/{}/corps", suite.id)).await;
    assert_eq!(corps["items"][0]["status"], "authorized");
}

#[tokio::test]
async fn the_corp_proxy_fetches_a_new_token_once_when_wecom_says_it_expired() {
    let (app, provider, suite) = suite_app().await;
    authorize(&app, &provider, &suite, "wwproxycorp").await;
    let key = suite.issue_key(&app).await;
    let api = format!(
        "{}/suite/{}/corps/wwproxycorp/api/cgi-bin/kf/account/list",
        app.address, suite.id
    );
    let call = async || -> Value {
        let resp = app
            .api
            .post(&api)
            .bearer_auth(&key)
            .json(&json!({"limit": 10}))
            .send()
            .await
            .unwrap();
        resp.json().await.unwrap()
    };
    let first = call().await;
    assert_eq!(first["errcode"], 0, "{first}");
    let first_token = first["query"]
        .as_str()
        .unwrap()
        .trim_start_matches("access_token=")
        .to_owned();
    provider.refuse_token(&first_token);
    let again = call().await;
    assert_eq!(again["errcode"], 0, "refreshed and sent again: {again}");
    assert_ne!(again["query"], first["query"]);
    assert_eq!(provider.calls("/cgi-bin/service/get_corp_token").len(), 2);
    assert_eq!(
        provider.calls("/cgi-bin/kf/account/list").len(),
        3,
        "one retry only"
    );
}
