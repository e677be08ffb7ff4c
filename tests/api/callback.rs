//! WeCom-facing callbacks: URL verification, encrypted and decrypted posts.

use std::time::Duration;

use crate::support::FakePuppet;
use crate::support::{manual_clock, random_string, spawn_app, spawn_stepped_app, text, Corp};

/// The weworkapi_python vector A1 credentials.
fn vector_a_corp() -> Corp {
    Corp {
        id: "ww1436e0e65a779aee".into(),
        token: "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo".into(),
        key: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt".into(),
        secret: "vector-secret".into(),
    }
}

#[tokio::test]
async fn url_verification_answers_the_official_echostr_exactly() {
    let app = spawn_app().await;
    let corp = vector_a_corp();
    app.register_ok(&corp, "wkA1", "http://127.0.0.1:9/").await;
    let resp = app
        .get("/callback/ww1436e0e65a779aee?msg_signature=012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb&timestamp=1476416373&nonce=47744683&echostr=fsi1xnbH4yQh0%2BPJxcOdhhK6TDXkjMyhEPA7xB2TGz6b%2Bg7xyAbEkRxN%2F3cNXW9qdqjnoVzEtpbhnFyq6SVHyA%3D%3D")
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"1288432023552776189");
}

#[tokio::test]
async fn url_verification_with_a_wrong_signature_is_401() {
    let app = spawn_app().await;
    let corp = Corp::new("wwverify");
    app.register_ok(&corp, "wk1", "http://127.0.0.1:9/").await;
    let good = corp.verify_query("424242");
    assert_eq!(
        text(app.get(&format!("/callback/wwverify?{good}")).await).await,
        (200, "424242".into())
    );
    let tampered = good.replace("nonce=123", "nonce=124");
    assert_eq!(
        app.get(&format!("/callback/wwverify?{tampered}"))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.get(&format!("/callback/wwunknown?{good}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get("/callback/wwverify?timestamp=1&nonce=2")
            .await
            .status(),
        400
    );
}

#[tokio::test]
async fn encrypted_callback_reaches_the_puppet_byte_for_byte() {
    let app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwbytes");
    app.register_ok(&corp, "wkbytes", &puppet.url).await;

    let (query, body) = corp.seal(&corp.kf_event_xml("wkbytes", "TOKEN-1"));
    let resp = app.post_raw(&corp.id, &query, body.clone()).await;
    assert_eq!(text(resp).await, (200, "success".into()));

    let got = puppet.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/callback");
    assert_eq!(got[0].body, body.as_bytes());
    assert_eq!(got[0].content_type, "application/xml");
    assert_eq!(got[0].attempt, 1);
    assert!(!got[0].delivery_id.is_empty());
    for part in query.split('&') {
        assert!(
            got[0].query.split('&').any(|p| p == part),
            "{part} missing from {}",
            got[0].query
        );
    }
}

#[tokio::test]
async fn the_answer_does_not_wait_for_a_slow_puppet() {
    let app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    puppet.delay(Duration::from_secs(10));
    let corp = Corp::new("wwslow");
    app.register_ok(&corp, "wkslow", &puppet.url).await;

    let resp = app.post_kf_event(&corp, "wkslow", "T").await;
    assert_eq!(text(resp).await, (200, "success".into()));
    // The delivery started (or starts) but the puppet has not answered yet:
    // our answer came first.
    assert_eq!(puppet.answered(), 0);
    assert_eq!(puppet.wait_for(1).await.len(), 1);
    assert_eq!(puppet.answered(), 0);
}

#[tokio::test]
async fn kf_ids_and_corps_route_to_their_own_puppets() {
    let app = spawn_app().await;
    let (p1, p2, p3, p4) = (
        FakePuppet::start().await,
        FakePuppet::start().await,
        FakePuppet::start().await,
        FakePuppet::start().await,
    );
    let corp = Corp::new("wwroute");
    let second_app_of_corp = corp.another_app();
    let other = Corp::new("wwother");
    app.register_ok(&corp, "wkone", &p1.url).await;
    app.register_ok(&corp, "wktwo", &p2.url).await;
    app.register_ok(&other, "wkthree", &p3.url).await;
    app.register_ok(&second_app_of_corp, "wkfour", &p4.url)
        .await;

    for (c, kf) in [
        (&corp, "wkone"),
        (&corp, "wktwo"),
        (&other, "wkthree"),
        (&second_app_of_corp, "wkfour"),
    ] {
        assert_eq!(
            app.post_kf_event(c, kf, &random_string(8)).await.status(),
            200,
            "{kf}"
        );
    }
    for (p, kf) in [
        (&p1, "wkone"),
        (&p2, "wktwo"),
        (&p3, "wkthree"),
        (&p4, "wkfour"),
    ] {
        let got = p.wait_for(1).await;
        assert_eq!(got.len(), 1, "{kf}");
        // Each puppet got the event for its own kfId (the puppet can decrypt it).
        let key = wxkf_manager::wecom::EncodingAesKey::parse(if kf == "wkthree" {
            &other.key
        } else if kf == "wkfour" {
            &second_app_of_corp.key
        } else {
            &corp.key
        })
        .unwrap();
        let env = wxkf_manager::wecom::parse_envelope(&got[0].body).unwrap();
        let plain = wxkf_manager::wecom::decrypt(&key, &env.encrypt, "").unwrap();
        assert!(plain
            .as_str()
            .unwrap()
            .contains(&format!("<OpenKfId><![CDATA[{kf}]]>")));
    }
}

#[tokio::test]
async fn refused_callbacks_get_the_right_status_and_nothing_is_delivered() {
    let app = spawn_stepped_app(manual_clock(), |_| {}).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwrefuse");
    let foreign = Corp::new("wwforeign");
    app.register_ok(&corp, "wkrefuse", &puppet.url).await;

    let (query, body) = corp.seal(&corp.kf_event_xml("wkrefuse", "T"));
    // Signature over other data.
    let bad_sig = query.replacen("msg_signature=", "msg_signature=0", 1);
    let (s, reason) = text(app.post_raw(&corp.id, &bad_sig, body.clone()).await).await;
    assert_eq!(s, 401);
    assert!(!reason.contains(&corp.token));
    // Encrypted for another corp's receiveid with this corp's key.
    let (q2, b2) = corp.seal_for(&corp.kf_event_xml("wkrefuse", "T"), "wwforeign");
    assert_eq!(app.post_raw(&corp.id, &q2, b2).await.status(), 401);
    // A corp nobody registered.
    let (q3, b3) = foreign.seal(&foreign.kf_event_xml("wk", "T"));
    assert_eq!(app.post_raw(&foreign.id, &q3, b3).await.status(), 404);
    // Garbage, missing query, DOCTYPE, oversized.
    assert_eq!(
        app.post_raw(&corp.id, &query, "garbage").await.status(),
        400
    );
    assert_eq!(
        app.post_raw(&corp.id, "timestamp=1", body.clone())
            .await
            .status(),
        400
    );
    let doctype = format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{body}");
    assert_eq!(app.post_raw(&corp.id, &query, doctype).await.status(), 400);
    let big = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(70 * 1024));
    assert_eq!(app.post_raw(&corp.id, &query, big).await.status(), 413);
    assert_eq!(app.post_raw("bad-corp!", &query, body).await.status(), 400);

    assert_eq!(app.drain().await, 0, "nothing was stored to deliver");
    assert!(puppet.received().is_empty());
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn decrypted_callbacks_are_delivered_as_json() {
    let app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwgateway");
    app.register_ok(&corp, "wkgw", &puppet.url).await;

    let resp = app
        .post_decrypted(
            &corp.id,
            serde_json::json!({"token": "SYNC-1", "openKfId": "wkgw"}),
        )
        .await;
    assert_eq!(text(resp).await, (200, "roger".into()));
    let got = puppet.wait_for(1).await;
    assert_eq!(got[0].path, "/callback/decrypted");
    assert_eq!(got[0].content_type, "application/json");
    assert_eq!(
        got[0].json(),
        serde_json::json!({"token": "SYNC-1", "openKfId": "wkgw"})
    );

    assert_eq!(
        app.post_decrypted(&corp.id, serde_json::json!({"openKfId": "wkgw"}))
            .await
            .status(),
        400
    );
    assert_eq!(
        app.post_decrypted(
            "wwnobody",
            serde_json::json!({"token": "t", "openKfId": "wkgw"})
        )
        .await
        .status(),
        404
    );
}

#[tokio::test]
async fn events_of_one_corp_never_reach_a_kf_id_registered_under_another() {
    let app = spawn_stepped_app(manual_clock(), |_| {}).await;
    let puppet = FakePuppet::start().await;
    let owner = Corp::new("wwowner");
    let stranger = Corp::new("wwstranger");
    app.register_ok(&owner, "wkshared", &puppet.url).await;
    app.register_ok(&stranger, "wkstranger", "http://127.0.0.1:9/")
        .await;
    // The stranger corp's gateway claims an event for the owner's kfId.
    let resp = app
        .post_decrypted(
            &stranger.id,
            serde_json::json!({"token": "t", "openKfId": "wkshared"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    app.drain().await;
    assert!(puppet.received().is_empty());
    let parked = app.admin_json("/deliveries?kfId=wkshared").await;
    assert_eq!(parked["items"][0]["status"], "parked", "{parked}");
}
