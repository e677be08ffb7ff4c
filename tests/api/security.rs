//! Hostile input, hijack attempts, the registration secret path, and secrets
//! that must never leave.

use std::process::{Command, Stdio};
use std::time::Duration;

use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use wxkf_manager::wecom::{build_envelope, encrypt, sign, EncodingAesKey};

use crate::support::{spawn_app, spawn_app_with, url_escape, Corp, TestApp};
use crate::support::{FakePuppet, FakeWecom};

/// Encrypt an already padded plaintext, to forge bad padding and lengths.
fn encrypt_raw(corp: &Corp, plain: &[u8]) -> String {
    let key = EncodingAesKey::parse(&corp.key).unwrap();
    let c = cbc::Encryptor::<aes::Aes256>::new(key.aes_key().into(), key.iv().into())
        .encrypt_padded_vec_mut::<NoPadding>(plain);
    base64::engine::general_purpose::STANDARD.encode(c)
}

/// A correctly signed envelope around any `Encrypt` text.
fn signed(corp: &Corp, encrypt_text: &str) -> (String, String) {
    let sig = sign(&corp.token, "1700000000", "42", encrypt_text);
    (
        format!("msg_signature={sig}&timestamp=1700000000&nonce=42"),
        build_envelope(&corp.id, "1", encrypt_text),
    )
}

fn padded(len: usize, pad: u8) -> Vec<u8> {
    let mut plain = vec![b'a'; len];
    plain[16..20].copy_from_slice(&4u32.to_be_bytes());
    if let Some(last) = plain.last_mut() {
        *last = pad;
    }
    plain
}

enum Req {
    Callback(String, Vec<u8>),
    CallbackTo(String, String, Vec<u8>),
    Verify(String),
    Decrypted(Vec<u8>),
    Register(Vec<u8>),
}

async fn send(app: &TestApp, corp: &Corp, req: Req) -> (u16, String) {
    let resp = match req {
        Req::Callback(q, body) => app.post_raw(&corp.id, &q, body).await,
        Req::CallbackTo(corp_id, q, body) => app.post_raw(&corp_id, &q, body).await,
        Req::Verify(q) => app.get(&format!("/callback/{}?{q}", corp.id)).await,
        Req::Decrypted(body) => app
            .api
            .post(format!("{}/callback/decrypted/{}", app.address, corp.id))
            .body(body)
            .send()
            .await
            .unwrap(),
        Req::Register(body) => app
            .api
            .post(format!("{}/puppetWxkfManager/register", app.address))
            .body(body)
            .send()
            .await
            .unwrap(),
    };
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn hostile_inputs_get_a_4xx_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwhostile");
    app.register_ok(&corp, "wkhostile", &puppet.url).await;
    let (good_q, good_body) = corp.seal(&corp.kf_event_xml("wkhostile", "T"));
    let (_, other_body) = corp.seal(&corp.kf_event_xml("wkhostile", "OTHER"));
    let sig_of = |q: &str| q.split('&').next().unwrap().to_owned();
    let nested_xml = format!(
        "<xml>{}<Encrypt>a</Encrypt>{}</xml>",
        "<a>".repeat(8_000),
        "</a>".repeat(8_000)
    );
    let nested_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let key = EncodingAesKey::parse(&corp.key).unwrap();
    let empty_plain = encrypt(&key, b"", &corp.id);
    let reg = |field: &str, value: serde_json::Value| {
        let mut body = serde_json::json!({"kfId": "wkx", "kfName": "", "endpoint": "http://h:1", "corpId": corp.id,
            "corpSecret": "s", "token": "t", "encodingAESKey": corp.key});
        body[field] = value;
        Req::Register(body.to_string().into_bytes())
    };

    let cases: Vec<(&str, Req, u16)> = vec![
        ("truncated XML", Req::Callback(good_q.clone(), good_body.as_bytes()[..good_body.len() / 2].to_vec()), 400),
        ("billion laughs", Req::Callback(good_q.clone(), br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><xml><Encrypt>&c;</Encrypt></xml>"#.to_vec()), 400),
        ("external entity", Req::Callback(good_q.clone(), br#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>"#.to_vec()), 400),
        ("undeclared entity", Req::Callback(good_q.clone(), b"<xml><Encrypt>&xxe;</Encrypt></xml>".to_vec()), 400),
        ("10 MB body", Req::Callback(good_q.clone(), vec![b'<'; 10 * 1024 * 1024]), 413),
        ("invalid UTF-8", Req::Callback(good_q.clone(), vec![0xff, 0xfe, 0xfd, b'<', b'x']), 400),
        ("empty body", Req::Callback(good_q.clone(), Vec::new()), 400),
        ("JSON instead of XML", Req::Callback(good_q.clone(), br#"{"Encrypt":"x"}"#.to_vec()), 400),
        ("no Encrypt element", Req::Callback(good_q.clone(), b"<xml><ToUserName>x</ToUserName></xml>".to_vec()), 400),
        ("deeply nested XML", Req::Callback(good_q.clone(), nested_xml.into_bytes()), 400),
        ("base64 with spaces", { let (q, b) = signed(&corp, "abcd efgh ijkl mnop"); Req::Callback(q, b.into_bytes()) }, 400),
        ("not base64", { let (q, b) = signed(&corp, "!!!!"); Req::Callback(q, b.into_bytes()) }, 400),
        ("length not a multiple of 16", { let (q, b) = signed(&corp, "AAAAAAAAAAAAAAAAAAAA"); Req::Callback(q, b.into_bytes()) }, 400),
        ("pad 0", { let (q, b) = signed(&corp, &encrypt_raw(&corp, &padded(64, 0))); Req::Callback(q, b.into_bytes()) }, 400),
        ("pad 33", { let (q, b) = signed(&corp, &encrypt_raw(&corp, &padded(64, 33))); Req::Callback(q, b.into_bytes()) }, 400),
        ("length field past the buffer", { let mut p = padded(64, 1); p[16..20].copy_from_slice(&1000u32.to_be_bytes()); let (q, b) = signed(&corp, &encrypt_raw(&corp, &p)); Req::Callback(q, b.into_bytes()) }, 400),
        ("empty plaintext", { let (q, b) = signed(&corp, &empty_plain); Req::Callback(q, b.into_bytes()) }, 400),
        ("receiveid of another corp", { let (q, b) = corp.seal_for(&corp.kf_event_xml("wkhostile", "T"), "wwsomeoneelse"); Req::Callback(q, b.into_bytes()) }, 401),
        ("replayed signature, other body", Req::Callback(good_q.clone(), other_body.clone().into_bytes()), 401),
        ("garbage signature", Req::Callback(good_q.replacen(&sig_of(&good_q), "msg_signature=ZZZZ", 1), good_body.clone().into_bytes()), 401),
        ("missing msg_signature", Req::Callback("timestamp=1&nonce=2".into(), good_body.clone().into_bytes()), 400),
        ("missing timestamp", Req::Callback(format!("{}&nonce=2", sig_of(&good_q)), good_body.clone().into_bytes()), 400),
        ("missing nonce", Req::Callback(format!("{}&timestamp=1", sig_of(&good_q)), good_body.clone().into_bytes()), 400),
        ("overlong nonce", Req::Callback(format!("{good_q}&nonce={}", "9".repeat(300)).replacen("nonce=", "x=", 1), good_body.clone().into_bytes()), 400),
        ("corpId of 100 characters", Req::CallbackTo("w".repeat(100), good_q.clone(), good_body.clone().into_bytes()), 400),
        ("echostr not base64", { let sig = sign(&corp.token, "1", "2", "%%%"); Req::Verify(format!("msg_signature={sig}&timestamp=1&nonce=2&echostr={}", url_escape("%%%"))) }, 400),
        ("decrypted: not JSON", Req::Decrypted(b"token=1".to_vec()), 400),
        ("decrypted: deeply nested JSON", Req::Decrypted(nested_json.clone().into_bytes()), 413),
        ("decrypted: 1 MB JSON", Req::Decrypted(format!("{{\"token\":\"{}\"}}", "t".repeat(1 << 20)).into_bytes()), 413),
        ("decrypted: token of 10,000 bytes", Req::Decrypted(serde_json::json!({"token": "t".repeat(10_000), "openKfId": "wkhostile"}).to_string().into_bytes()), 400),
        ("decrypted: openKfId with a slash", Req::Decrypted(br#"{"token":"t","openKfId":"wk/../x"}"#.to_vec()), 400),
        ("decrypted: nested JSON under the cap", Req::Decrypted(format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes()), 400),
        ("register: kfId of 10,000 characters", reg("kfId", serde_json::json!("k".repeat(10_000))), 400),
        ("register: javascript endpoint", reg("endpoint", serde_json::json!("javascript:alert(1)")), 400),
        ("register: endpoint of 3,000 characters", reg("endpoint", serde_json::json!(format!("http://h/{}", "a".repeat(3000)))), 400),
        ("register: key with trailing space", reg("encodingAESKey", serde_json::json!(format!("{} ", &corp.key[..42]))), 400),
        ("register: 1 MB body", Req::Register(vec![b' '; 1 << 20]), 413),
        ("register: invalid UTF-8", Req::Register(vec![b'{', 0xff, b'}']), 400),
        ("register: nested JSON", Req::Register(format!("{}{}", "{\"a\":".repeat(2000), "}".repeat(2000)).into_bytes()), 400),
    ];
    assert!(cases.len() >= 30);
    for (name, req, expected) in cases {
        let (status, body) = send(&app, &corp, req).await;
        assert_eq!(status, expected, "{name}: {body}");
        assert!(
            !body.contains('\n') || body.trim_end().lines().count() == 1,
            "{name}: one line"
        );
        for secret in [&corp.token, &corp.key, &corp.secret] {
            assert!(!body.contains(secret.as_str()), "{name} echoed a secret");
        }
        assert_eq!(
            app.get("/healthz").await.status(),
            200,
            "healthy after {name}"
        );
    }
    let stored = app.admin_json("/deliveries").await;
    assert_eq!(
        stored["items"].as_array().unwrap().len(),
        0,
        "nothing stored: {stored}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(puppet.received().is_empty());
    // And the real thing still works.
    assert_eq!(
        app.post_raw(&corp.id, &good_q, good_body).await.status(),
        200
    );
}

#[tokio::test]
async fn a_slow_body_times_out_with_408() {
    let app = spawn_app_with(|c| c.body_timeout = Duration::from_millis(300)).await;
    // A known corp: an unknown one is answered 404 before its body is read.
    app.register_ok(&Corp::new("wwslow"), "wkslow", "http://127.0.0.1:9")
        .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = "POST /callback/wwslow?msg_signature=a&timestamp=1&nonce=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n<xml>";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn a_new_credential_set_cannot_take_over_existing_kf_ids() {
    let app = spawn_app().await;
    let (owner, thief) = (FakePuppet::start().await, FakePuppet::start().await);
    let corp = Corp::new("wwtakeover");
    app.register_ok(&corp, "wkvictim", &owner.url).await;
    // A newcomer registers its own app for the corp (allowed: a new kfId)...
    let newcomer = corp.another_app();
    app.register_ok(&newcomer, "wknewcomer", &thief.url).await;
    // ...but cannot move the existing kfId to itself, with either set of its own.
    assert_eq!(
        app.register(&newcomer, "wkvictim", &thief.url)
            .await
            .status(),
        409
    );
    let wrong_corp = Corp {
        id: "wwother".into(),
        ..corp.another_app()
    };
    assert_eq!(
        app.register(&wrong_corp, "wkvictim", &thief.url)
            .await
            .status(),
        409
    );
    assert_eq!(
        app.post_kf_event(&corp, "wkvictim", "T").await.status(),
        200
    );
    assert_eq!(owner.wait_for(1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(thief.received().is_empty());
}

#[tokio::test]
async fn the_registration_secret_path_serves_unmodified_puppets() {
    const SECRET: &str = "reg-secret-0123456789";
    let app =
        spawn_app_with(|c| c.register_secret = Some(wxkf_manager::domain::Secret::new(SECRET)))
            .await;
    let corp = Corp::new("wwsecret");
    // The bare paths are closed.
    assert_eq!(
        app.register(&corp, "wks", "http://127.0.0.1:9")
            .await
            .status(),
        403
    );
    assert_eq!(
        app.get("/puppetWxkfManager/getToken?corpid=a&corpsecret=b")
            .await
            .status(),
        403
    );
    // A puppet whose base URL carries the secret path works unchanged.
    let base = format!("{}/s/{SECRET}", app.address);
    let resp = app
        .api
        .post(format!("{base}/puppetWxkfManager/register"))
        .json(&serde_json::json!({"kfId": "wks", "kfName": "", "endpoint": "http://127.0.0.1:9", "corpId": corp.id,
            "corpSecret": corp.secret, "token": corp.token, "encodingAESKey": corp.key}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let info = app
        .api
        .get(format!("{base}/puppetWxkfManager/puppetWxkfInfo/wks"))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    let token = app
        .api
        .get(format!(
            "{base}/puppetWxkfManager/getToken?corpid=a&corpsecret=b"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        token.json::<serde_json::Value>().await.unwrap()["errcode"],
        0
    );
    let wrong = app
        .api
        .get(format!(
            "{}/s/wrong-secret-000000/puppetWxkfManager/puppetWxkfInfo/wks",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    // Callbacks stay where WeCom sends them.
    let q = corp.verify_query("99");
    assert_eq!(
        app.get(&format!("/callback/wwsecret?{q}")).await.status(),
        200
    );
}

#[tokio::test]
async fn endpoint_allow_restricts_where_deliveries_go() {
    let app = spawn_app_with(|c| {
        c.delivery.endpoint_allow =
            Some(wxkf_manager::domain::EndpointAllow::parse("127.0.0.0/8").unwrap())
    })
    .await;
    let corp = Corp::new("wwallow");
    let resp = app
        .register(&corp, "wkout", "http://169.254.169.254/latest")
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("ENDPOINT_ALLOW"));
    app.register_ok(&corp, "wkin", "http://127.0.0.1:9").await;
}

#[tokio::test]
async fn redirects_from_a_puppet_are_not_followed() {
    let app = spawn_app().await;
    let target = FakePuppet::start().await;
    let redirector = FakePuppet::start().await;
    redirector.fail_with(&[307; 50]);
    let corp = Corp::new("wwredirect");
    app.register_ok(&corp, "wkredir", &redirector.url).await;
    assert_eq!(app.post_kf_event(&corp, "wkredir", "T").await.status(), 200);
    assert!(
        redirector.wait_for(2).await.len() >= 2,
        "a redirect is a failed attempt, retried"
    );
    assert!(target.received().is_empty());
}

/// Every secret a puppet or WeCom gives us, and the access token WeCom
/// hands out, must be absent from every log line at trace level, every
/// response, and `/metrics`.
#[tokio::test]
async fn secrets_never_reach_logs_responses_or_metrics() {
    let wecom = FakeWecom::start().await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwleak");
    let data_dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let admin = "admin-token-leak-test-0123456789";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wxkf-manager"));
    cmd.env_clear()
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("DATA_DIR", data_dir.path())
        .env("RUST_LOG", "trace")
        .env("WECOM_API_BASE", &wecom.base)
        .env("ADMIN_TOKEN", admin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uri) = crate::support::test_mongo_uri() {
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
    let mut answers = Vec::new();
    let reg = serde_json::json!({"kfId": "wkleak", "kfName": "", "endpoint": puppet.url, "corpId": corp.id,
        "corpSecret": corp.secret, "token": corp.token, "encodingAESKey": corp.key});
    let push = |r: reqwest::Response| async move { r.text().await.unwrap() };
    answers.push(
        push(
            client
                .post(format!("{base}/puppetWxkfManager/register"))
                .json(&reg)
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let (q, b) = corp.seal(&corp.kf_event_xml("wkleak", "SYNC"));
    answers.push(
        push(
            client
                .post(format!("{base}/callback/{}?{q}", corp.id))
                .body(b)
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let bad_q = q.replacen("msg_signature=", "msg_signature=0", 1);
    answers.push(
        push(
            client
                .post(format!("{base}/callback/{}?{bad_q}", corp.id))
                .body("<xml/>")
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    answers.push(
        push(
            client
                .get(format!(
                    "{base}/callback/{}?{}",
                    corp.id,
                    corp.verify_query("5")
                ))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    let token_url = format!(
        "{base}/puppetWxkfManager/getToken?corpid={}&corpsecret={}",
        corp.id, corp.secret
    );
    let token_answer = push(client.get(&token_url).send().await.unwrap()).await;
    let access_token = serde_json::from_str::<serde_json::Value>(&token_answer).unwrap()
        ["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    answers.push(push(client.get(format!("{base}/puppetWxkfManager/wxkfRequestProxy/kf/reject?access_token={access_token}")).send().await.unwrap()).await);
    answers.push(
        push(
            client
                .get(format!("{base}/puppetWxkfManager/puppetWxkfInfo/wkleak"))
                .send()
                .await
                .unwrap(),
        )
        .await,
    );
    for path in ["puppets", "puppets/wkleak", "corps", "deliveries"] {
        answers.push(
            push(
                client
                    .get(format!("{base}/admin/api/{path}"))
                    .bearer_auth(admin)
                    .send()
                    .await
                    .unwrap(),
            )
            .await,
        );
    }
    answers.push(push(client.get(format!("{base}/metrics")).send().await.unwrap()).await);
    puppet.wait_for(1).await;
    // SIGTERM: a graceful stop flushes the log writers.
    let logs = crate::support::stop_and_read_logs(child);
    assert!(logs.lines().count() > 10, "trace logs were captured");
    assert!(logs.contains("\"outcome\":\"accepted\""), "{logs}");
    for secret in [
        corp.secret.as_str(),
        corp.token.as_str(),
        corp.key.as_str(),
        access_token.as_str(),
        admin,
    ] {
        assert!(!logs.contains(secret), "a secret is in the logs");
        for answer in &answers {
            assert!(
                !answer.contains(secret),
                "a secret is in an answer: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_a_wrong_key_stops_the_start() {
    use wxkf_manager::config::SecretsKey;
    let key = SecretsKey([3; 32]);
    let app = spawn_app_with({
        let key = key.clone();
        move |c| c.secrets_key = Some(key)
    })
    .await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwsealed");
    app.register_ok(&corp, "wksealed", &puppet.url).await;
    let token = app.get_token(&corp).await;
    let access_token = token["access_token"].as_str().unwrap().to_owned();
    // Sealed secrets still work: callbacks verify and deliver.
    assert_eq!(
        app.post_kf_event(&corp, "wksealed", "T").await.status(),
        200
    );
    assert_eq!(puppet.wait_for(1).await.len(), 1);

    let raw = app.raw_store_dump().await;
    assert!(raw.contains("wksealed"), "the dump holds the registration");
    for secret in [
        corp.secret.as_str(),
        corp.token.as_str(),
        corp.key.as_str(),
        access_token.as_str(),
    ] {
        assert!(!raw.contains(secret), "a secret is stored in clear");
    }

    // The same store with another key (or none) refuses to start, and says why.
    for other in [Some(SecretsKey([4; 32])), None] {
        let Err(err) = app.build_on_same_store(|c| c.secrets_key = other).await else {
            panic!("a manager started on sealed secrets with the wrong key");
        };
        assert!(format!("{err:#}").contains("SECRETS_KEY"), "{err:#}");
    }
}
