//! The operator API: auth, listing deliveries, re-driving dead letters.

use std::time::Duration;

use crate::support::FakePuppet;
use reqwest::Method;

use crate::support::{
    eventually, manual_clock, spawn_app, spawn_app_with, spawn_stepped_app, vanished_endpoint,
    Corp, ADMIN_TOKEN as ADMIN,
};

#[tokio::test]
async fn admin_routes_need_the_bearer_token() {
    let app = spawn_app().await;
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

/// Behind nginx on the same host every request comes from loopback, so
/// loopback is no credential: without `ADMIN_TOKEN` the admin API is off.
#[tokio::test]
async fn without_an_admin_token_the_admin_api_is_off_even_from_loopback() {
    let app = spawn_app_with(|c| c.admin_token = None).await;
    let corp = Corp::new("wwnoadmin");
    app.register_ok(&corp, "wknoadmin", "http://127.0.0.1:9")
        .await;
    for (method, path) in [
        (Method::GET, "/puppets"),
        (Method::GET, "/deliveries?status=dead"),
        (Method::DELETE, "/puppets/wknoadmin"),
        (Method::PUT, "/puppets/wknoadmin/endpoint"),
        (Method::POST, "/deliveries/redrive?kfId=wknoadmin"),
    ] {
        let resp = app
            .api
            .request(method.clone(), format!("{}/admin/api{path}", app.address))
            .body(r#"{"endpoint":"http://127.0.0.1:1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 403);
        assert!(
            body["message"].as_str().unwrap().contains("ADMIN_TOKEN"),
            "{body}"
        );
        // Any token is as good as none.
        let guessed = app
            .admin(method.clone(), path)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            guessed.status(),
            403,
            "{method} {path} with a guessed token"
        );
    }
    let dashboard = app.get("/admin/").await;
    assert_eq!(dashboard.status(), 403);
    assert!(dashboard.text().await.unwrap().contains("set ADMIN_TOKEN"));
    // Nothing was deleted or moved.
    let info: serde_json::Value = app
        .get("/puppetWxkfManager/puppetWxkfInfo/wknoadmin")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["endpoint"], "http://127.0.0.1:9/");
    // The CLI opens the store itself and keeps working.
    let out = app.cli(&["puppets", "list", "--json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("wknoadmin"));
}

#[tokio::test]
async fn a_dead_letter_keeps_its_error_and_is_delivered_when_re_driven() {
    let clock = manual_clock();
    let app = spawn_stepped_app(clock.clone(), |c| {
        c.delivery.retry_window = Duration::from_secs(3)
    })
    .await;
    let puppet = FakePuppet::start().await;
    puppet.fail_with(&[500; 1000]);
    let corp = Corp::new("wwredrive");
    app.register_ok(&corp, "wkredrive", &puppet.url).await;
    assert_eq!(
        app.post_kf_event(&corp, "wkredrive", "T").await.status(),
        200
    );
    // Attempts a second apart until the 3 s window is spent.
    for _ in 0..6 {
        app.drain().await;
        clock.advance(Duration::from_secs(1));
    }

    let dead = app
        .admin_json("/deliveries?status=dead&kfId=wkredrive")
        .await;
    let item = &dead["items"][0];
    assert_eq!(item["status"], "dead", "{dead}");
    assert_eq!(item["lastError"], "puppet answered HTTP 500");
    assert!(item["attempts"].as_u64().unwrap() >= 2);
    let attempts_before = puppet.received().len();
    assert_eq!(item["attempts"].as_u64(), Some(attempts_before as u64));

    puppet.fail_with(&[]);
    let id = item["id"].as_str().unwrap();
    let resp = app
        .admin(Method::POST, &format!("/deliveries/{id}/redrive"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(app.drain().await, 1);
    let got = puppet.received();
    assert_eq!(got.len(), attempts_before + 1);
    assert_eq!(got.last().unwrap().delivery_id, id);

    // The puppet has it, and the outcome is recorded.
    let delivered = app.admin_json("/deliveries?status=delivered").await;
    assert_eq!(delivered["items"][0]["id"], id);
    let again = app
        .admin(Method::POST, &format!("/deliveries/{id}/redrive"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        404,
        "only dead or parked deliveries are re-driven"
    );
}

async fn admin_get(app: &crate::support::TestApp, path: &str) -> (u16, String) {
    let resp = app
        .api
        .get(format!("{}/admin/api{path}", app.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn puppets_and_corps_are_listed_filtered_and_paginated_without_secrets() {
    let app = spawn_app().await;
    let (one, two) = (Corp::new("wwadmin1"), Corp::new("wwadmin2"));
    let second_app = one.another_app();
    for i in 0..5 {
        app.register_ok(&one, &format!("wka{i}"), "http://127.0.0.1:9")
            .await;
    }
    app.register_ok(&second_app, "wka9", "http://127.0.0.1:9")
        .await;
    app.register_ok(&two, "wkb0", "http://127.0.0.1:9").await;
    assert_eq!(app.deregister(&one, "wka0").await.status(), 200);

    let mut bodies = Vec::new();
    let (s, body) = admin_get(&app, "/puppets?corpId=wwadmin1&limit=2&offset=1").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kfId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["wka1", "wka2"]);
    bodies.push(body);
    let (_, body) = admin_get(&app, "/puppets?online=false").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["kfId"], "wka0");
    bodies.push(body);

    let (_, body) = admin_get(&app, "/corps").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["items"][0],
        serde_json::json!({"corpId": "wwadmin1", "credentialSets": 2, "puppets": 6, "online": 5})
    );
    assert_eq!(v["items"][1]["corpId"], "wwadmin2");
    bodies.push(body);

    let (s, body) = admin_get(&app, "/puppets/wka1").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["puppet"]["online"], true);
    assert_eq!(v["deliveries"]["dead"], 0);
    bodies.push(body);
    bodies.push(admin_get(&app, "/deliveries").await.1);
    for body in &bodies {
        for c in [&one, &two, &second_app] {
            for secret in [&c.secret, &c.token, &c.key] {
                assert!(
                    !body.contains(secret.as_str()),
                    "secret in an admin answer: {body}"
                );
            }
        }
    }
    let del = app
        .api
        .delete(format!("{}/admin/api/puppets/wka4", app.address))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(admin_get(&app, "/puppets/wka4").await.0, 404);
}

#[tokio::test]
async fn operators_can_rotate_credentials_and_move_a_puppet() {
    let app = spawn_app().await;
    let (old_home, new_home) = (FakePuppet::start().await, FakePuppet::start().await);
    let corp = Corp::new("wwrotate");
    app.register_ok(&corp, "wkrot", &old_home.url).await;
    let rotated = corp.another_app();
    let resp = app
        .api
        .put(format!(
            "{}/admin/api/corps/wwrotate/credentials",
            app.address
        ))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"token": rotated.token, "encodingAESKey": rotated.key, "previousToken": corp.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The old credentials no longer verify; the new ones do.
    assert_eq!(app.post_kf_event(&corp, "wkrot", "T1").await.status(), 401);
    let resp = app
        .api
        .put(format!("{}/admin/api/puppets/wkrot/endpoint", app.address))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"endpoint": new_home.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        app.post_kf_event(&rotated, "wkrot", "T2").await.status(),
        200
    );
    assert_eq!(new_home.wait_for(1).await.len(), 1);
    assert!(old_home.received().is_empty());
}

/// A puppet's container was replaced without deregistering: after a few
/// connection failures the kfId is offline and its wake-ups wait parked. An
/// operator points it at the new container, by the admin API or the CLI:
/// the kfId is online there and gets the newest wake-up at once, as after a
/// registration (not at the puppet's next registration).
#[tokio::test]
async fn moving_an_unreachable_puppet_delivers_what_waited_to_its_new_endpoint() {
    let app = spawn_app().await;
    let corp = Corp::new("wwmoved");
    let kfs = ["wkmoved-api", "wkmoved-cli"];
    for kf in kfs {
        app.register_ok(&corp, kf, &vanished_endpoint()).await;
        for i in 0..3 {
            let resp = app.post_kf_event(&corp, kf, &format!("{kf}-{i}")).await;
            assert_eq!(resp.status(), 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for kf in kfs {
        eventually(Duration::from_secs(10), async || {
            let offline =
                app.admin_json(&format!("/puppets/{kf}")).await["puppet"]["online"] == false;
            let waiting = app.deliveries_of(kf).await;
            let parked = waiting.iter().any(|d| d["status"] == "parked")
                && waiting
                    .iter()
                    .all(|d| d["status"] == "parked" || d["status"] == "superseded");
            (offline && parked).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{kf}: offline with its wake-ups parked"));
    }

    let by_api = FakePuppet::start().await;
    let resp = app
        .admin(Method::PUT, "/puppets/wkmoved-api/endpoint")
        .json(&serde_json::json!({"endpoint": by_api.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = by_api.wait_for(1).await;
    assert_eq!(
        corp.tokens_in(&got),
        ["wkmoved-api-2"],
        "the newest wake-up"
    );
    let shown = app.admin_json("/puppets/wkmoved-api").await;
    assert_eq!(shown["puppet"]["online"], true, "{shown}");

    let by_cli = FakePuppet::start().await;
    let out = app.cli(&["puppets", "move", "wkmoved-cli", &by_cli.url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = by_cli.wait_for(1).await;
    assert_eq!(
        corp.tokens_in(&got),
        ["wkmoved-cli-2"],
        "the newest wake-up"
    );

    let out = app.cli(&["puppets", "move", "wknobody", &by_cli.url]);
    assert!(!out.status.success(), "an unknown kfId is an error");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wknobody: no such kfId"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `MONGO_COMMAND_COUNTS`, `/metrics` shows what the manager asked of
/// MongoDB: the benchmark's commands and documents per accepted callback.
/// The embedded store sends no commands and shows none.
#[tokio::test]
async fn mongo_commands_and_the_documents_they_wrote_are_counted_when_asked() {
    let app = crate::support::spawn_app_with(|c| c.mongo_command_counts = true).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwcommands");
    for i in 0..5 {
        app.register_ok(&corp, &format!("wkc{i}"), &puppet.url)
            .await;
    }
    for i in 0..5 {
        app.post_kf_event(&corp, &format!("wkc{i}"), &format!("T{i}"))
            .await;
    }
    puppet.wait_for(5).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    if crate::support::test_mongo_uri().is_none() {
        assert!(!text.contains("wxkf_mongo_commands{"), "{text}");
        return;
    }
    let inserts = value("wxkf_mongo_commands{command=\"insert\"} ").expect("inserts counted");
    let inserted = value("wxkf_mongo_documents_written{command=\"insert\"} ").unwrap();
    assert!(inserts >= 1.0, "{text}");
    // Five events, each one document (its delivery inside), plus whatever
    // the registrations and migrations inserted.
    assert!(inserted >= 5.0, "{text}");
    assert!(
        value("wxkf_mongo_commands{command=\"find\"} ").is_some(),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_count_callbacks_by_outcome() {
    let app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwmetrics");
    // One kfId per event, so that no wake-up is coalesced into another.
    for i in 0..3 {
        app.register_ok(&corp, &format!("wkm{i}"), &puppet.url)
            .await;
    }
    for i in 0..3 {
        app.post_kf_event(&corp, &format!("wkm{i}"), &format!("T{i}"))
            .await;
    }
    app.post_kf_event(&corp, "wkm0", "T0").await; // duplicate
    let (q, b) = corp.seal(&corp.kf_event_xml("wkm", "X"));
    app.post_raw(
        &corp.id,
        &q.replacen("msg_signature=", "msg_signature=f", 1),
        b,
    )
    .await; // bad signature
    app.post_raw(&corp.id, &q, "junk").await; // parse error
    let other = Corp::new("wwnobody");
    app.post_kf_event(&other, "wk", "T").await; // unknown corp
    puppet.wait_for(3).await;
    // Outcomes are recorded right after the puppet answers.
    for _ in 0..100 {
        let scrape = app.get("/metrics").await.text().await.unwrap();
        if scrape.contains("wxkf_deliveries_total{outcome=\"delivered\"} 3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Queue gauges are read from the store before the counters are encoded:
    // one more scrape sees the queue after the deliveries were recorded.
    let text = app.get("/metrics").await.text().await.unwrap();
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("wxkf_callbacks_total{kind=\"encrypted\",outcome=\"accepted\"}"),
        3.0
    );
    assert_eq!(
        value("wxkf_callbacks_total{kind=\"encrypted\",outcome=\"duplicate\"}"),
        1.0
    );
    assert_eq!(
        value("wxkf_callbacks_total{kind=\"encrypted\",outcome=\"bad_signature\"}"),
        1.0
    );
    assert_eq!(
        value("wxkf_callbacks_total{kind=\"encrypted\",outcome=\"parse_error\"}"),
        1.0
    );
    assert_eq!(
        value("wxkf_callbacks_total{kind=\"encrypted\",outcome=\"unknown_corp\"}"),
        1.0
    );
    assert_eq!(value("wxkf_deliveries_total{outcome=\"delivered\"}"), 3.0);
    assert_eq!(value("wxkf_queue_depth{status=\"pending\"}"), 0.0);
    assert_eq!(value("wxkf_callback_ack_seconds_count"), 4.0);
    for secret in [&corp.secret, &corp.token, &corp.key] {
        assert!(!text.contains(secret.as_str()));
    }
}

#[tokio::test]
async fn every_admin_route_requires_the_token() {
    let app = spawn_app().await;
    let routes = [
        ("GET", "/puppets"),
        ("GET", "/puppets/wk1"),
        ("DELETE", "/puppets/wk1"),
        ("PUT", "/puppets/wk1/endpoint"),
        ("GET", "/corps"),
        ("PUT", "/corps/ww1/credentials"),
        ("GET", "/deliveries"),
        ("POST", "/deliveries/redrive?kfId=wk1"),
        ("POST", "/deliveries/x/redrive"),
        ("DELETE", "/deliveries/x"),
    ];
    for (method, path) in routes {
        let url = format!("{}/admin/api{path}", app.address);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let none = app
            .api
            .request(method.clone(), &url)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without a token");
        let wrong = app
            .api
            .request(method.clone(), &url)
            .bearer_auth("not-the-token")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 403, "{method} {path} with a wrong token");
    }
}

#[tokio::test]
async fn the_openapi_document_covers_the_whole_surface() {
    let app = spawn_app().await;
    let doc = app.openapi().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/puppetWxkfManager/register",
        "/puppetWxkfManager/deregister",
        "/puppetWxkfManager/getToken",
        "/puppetWxkfManager/puppetWxkfInfo/{kfId}",
        "/puppetWxkfManager/wxkfRequestProxy/{path}",
        "/callback/{corpId}",
        "/callback/decrypted/{corpId}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/api/puppets",
        "/admin/api/puppets/{kfId}",
        "/admin/api/corps",
        "/admin/api/corps/{corpId}/credentials",
        "/admin/api/corps/{corpId}",
        "/admin/api/apps",
        "/admin/api/apps/{appId}",
        "/admin/api/subscriptions",
        "/admin/api/subscriptions/{id}",
        "/admin/api/deliveries",
        "/admin/api/deliveries/{id}/redrive",
        "/admin/api/deliveries/redrive",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(
        paths["/callback/{corpId}"].get("get").is_some()
            && paths["/callback/{corpId}"].get("post").is_some()
    );
}

/// Every id the document describes (path and query parameters, body
/// fields) carries the pattern the domain checks, from the one place that
/// defines it; and an endpoint the document's pattern refuses for its host
/// (a schema fuzzer's `https://p0n000b*`) is refused by the API too.
#[tokio::test]
async fn the_document_states_the_id_rule_the_api_checks_and_refuses_what_it_refuses() {
    use wxkf_manager::domain::{ID_FILTER_PATTERN, ID_PATTERN};
    let app = spawn_app().await;
    let doc = app.openapi().await;
    let mut ids = 0;
    for operation in doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
    {
        for param in operation["parameters"].as_array().into_iter().flatten() {
            let name = param["name"].as_str().unwrap();
            if ["kfId", "corpId", "appId", "source"].contains(&name) {
                let expected = if param["required"] == true {
                    ID_PATTERN
                } else {
                    ID_FILTER_PATTERN
                };
                assert_eq!(param["schema"]["pattern"], expected, "{name}");
                ids += 1;
            }
        }
    }
    let schemas = &doc["components"]["schemas"];
    for (body, field) in [
        ("RegisterBody", "kfId"),
        ("RegisterBody", "corpId"),
        ("DeregisterBody", "kfId"),
        ("DecryptedBody", "openKfId"),
        ("SubscriptionBody", "source"),
    ] {
        assert_eq!(
            schemas[body]["properties"][field]["pattern"], ID_PATTERN,
            "{body}.{field}"
        );
        ids += 1;
    }
    assert!(ids > 25, "only {ids} ids found in the document");

    let resp = app
        .admin(reqwest::Method::POST, "/subscriptions")
        .json(&serde_json::json!({"source": "wx0123456789abcdef", "endpoint": "https://p0n000b*"}))
        .send()
        .await
        .unwrap();
    let (status, body) = (resp.status(), resp.text().await.unwrap());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("endpoint"), "{body}");
}

/// A method a path does not serve is 405, as the OpenAPI document says by
/// not listing it; an unknown path stays 404.
#[tokio::test]
async fn undeclared_methods_are_405_and_unknown_paths_404() {
    let app = spawn_app().await;
    for (method, path) in [
        ("TRACE", "/healthz"),
        ("POST", "/readyz"),
        ("DELETE", "/callback/ww1"),
        ("PUT", "/callback/decrypted/ww1"),
        ("GET", "/puppetWxkfManager/register"),
        ("DELETE", "/puppetWxkfManager/wxkfRequestProxy/kf/send_msg"),
        ("POST", "/admin/"),
        ("PATCH", "/admin/api/deliveries"),
        ("GET", "/admin/api/deliveries/x/redrive"),
    ] {
        let resp = app
            .api
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", app.address),
            )
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
    }
    assert_eq!(app.get("/nothing/here").await.status(), 404);
}
