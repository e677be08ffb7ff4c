//! Safe defaults: no delivery to link-local or cloud-metadata addresses
//! (also behind a name, also after the name changes), bounded registration,
//! and a warning when the puppet routes are open to the network. An
//! unmodified puppet's register, getToken and deregister still pass.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use wxkf_manager::clock::UnixMillis;
use wxkf_manager::domain::{EndpointAllow, EndpointUrl, KfId};
use wxkf_manager::startup::{open_store, Seams};

use crate::support::FakePuppet;
use crate::support::{spawn_app_with, spawn_app_with_seams, Corp, FakeDns, TestApp};

/// Every refused kind of address, as a URL host and as an address.
const REFUSED: [(&str, &str); 7] = [
    ("169.254.169.254", "169.254.169.254"),
    ("169.254.1.2", "169.254.1.2"),
    ("[fe80::1]", "fe80::1"),
    ("[fd00:ec2::254]", "fd00:ec2::254"),
    ("100.100.100.200", "100.100.100.200"),
    ("0.0.0.0", "0.0.0.0"),
    ("[::]", "::"),
];

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap()
}

async fn app_with_dns(
    adjust: impl FnOnce(&mut wxkf_manager::config::Config),
) -> (TestApp, Arc<FakeDns>) {
    let dns = Arc::new(FakeDns::default());
    let seams = Seams {
        resolver: dns.clone(),
        ..Seams::default()
    };
    (spawn_app_with_seams(seams, adjust).await, dns)
}

async fn register_status(app: &TestApp, corp: &Corp, kf: &str, endpoint: &str) -> (u16, String) {
    let resp = app.register(corp, kf, endpoint).await;
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The one delivery of a kfId, once it has failed at least once.
async fn failed_delivery(app: &TestApp, kf: &str) -> serde_json::Value {
    for _ in 0..200 {
        let listed = app.admin_json(&format!("/deliveries?kfId={kf}")).await;
        let item = &listed["items"][0];
        if item["attempts"].as_u64().unwrap_or(0) >= 1 {
            return item.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no failed attempt recorded for {kf}");
}

#[tokio::test]
async fn registration_to_link_local_metadata_or_unspecified_addresses_is_400() {
    let (app, dns) = app_with_dns(|_| {}).await;
    let corp = Corp::new("wwssrf");
    for (i, (host, _)) in REFUSED.iter().enumerate() {
        let (status, body) = register_status(
            &app,
            &corp,
            &format!("wkssrf{i}"),
            &format!("http://{host}:80/x"),
        )
        .await;
        assert_eq!(status, 400, "{host}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let message = v["message"].as_str().unwrap();
        assert!(message.starts_with("endpoint: "), "{host}: {message}");
        assert!(message.contains("ENDPOINT_ALLOW"), "{host}: {message}");
    }
    // Mapped IPv6 reaches the same host.
    let (status, _) =
        register_status(&app, &corp, "wkmapped", "http://[::ffff:169.254.169.254]/").await;
    assert_eq!(status, 400);

    // A name that resolves into a refused range is refused too, naming both.
    dns.set("metadata.test", "169.254.169.254");
    let (status, body) = register_status(&app, &corp, "wkname", "http://metadata.test/").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("metadata.test resolves to 169.254.169.254"),
        "{body}"
    );

    // Puppets live on private ranges, loopback and names: all still fine,
    // and so is a name that does not resolve yet.
    dns.set("puppet.test", "10.0.0.7");
    for (kf, endpoint) in [
        ("wkok1", "http://127.0.0.1:8788"),
        ("wkok2", "http://10.1.2.3:8788"),
        ("wkok3", "http://192.168.1.5/"),
        ("wkok4", "http://[fd12::1]:80/"),
        ("wkok5", "http://puppet.test:8788/"),
        ("wkok6", "http://not-yet.test:8788/"),
    ] {
        let (status, body) = register_status(&app, &corp, kf, endpoint).await;
        assert_eq!(status, 200, "{endpoint}: {body}");
    }
    for kf in (0..REFUSED.len())
        .map(|i| format!("wkssrf{i}"))
        .chain(["wkname".into()])
    {
        assert_eq!(
            app.get(&format!("/puppetWxkfManager/puppetWxkfInfo/{kf}"))
                .await
                .status(),
            404,
            "{kf} was stored"
        );
    }
    // Operators cannot move a puppet there either.
    let moved = app
        .admin(Method::PUT, "/puppets/wkok1/endpoint")
        .json(&serde_json::json!({"endpoint": "http://169.254.169.254/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 400);
}

#[tokio::test]
async fn endpoint_allow_lets_a_refused_range_through_only_when_it_names_it() {
    let (named, _) = app_with_dns(|c| {
        c.delivery.endpoint_allow =
            Some(EndpointAllow::parse("127.0.0.0/8, 169.254.0.0/16").unwrap())
    })
    .await;
    let corp = Corp::new("wwnamed");
    let (status, body) =
        register_status(&named, &corp, "wklink", "http://169.254.10.1:8080/").await;
    assert_eq!(status, 200, "{body}");

    let (anywhere, _) = app_with_dns(|c| {
        c.delivery.endpoint_allow = Some(EndpointAllow::parse("0.0.0.0/0").unwrap())
    })
    .await;
    let (status, body) =
        register_status(&anywhere, &corp, "wklink", "http://169.254.10.1:8080/").await;
    assert_eq!(
        status, 400,
        "'anywhere' does not name the link-local range: {body}"
    );
    let (status, _) = register_status(&anywhere, &corp, "wkpublic", "http://8.8.8.8/").await;
    assert_eq!(status, 200);
}

/// A name that resolved to the puppet at registration and to a refused
/// address later (DNS rebinding): each attempt is refused at connect time, a
/// failed attempt whose error operators see; when the name is right again,
/// the retry delivers.
#[tokio::test]
async fn a_name_that_later_resolves_into_a_refused_range_is_not_connected_to() {
    let (app, dns) = app_with_dns(|_| {}).await;
    let puppet = FakePuppet::start().await;
    let port = port_of(&puppet.url);
    let corp = Corp::new("wwrebind");
    for (i, (_, address)) in REFUSED.iter().enumerate() {
        let (kf, name) = (format!("wkrebind{i}"), format!("rebind{i}.test"));
        dns.set(&name, "127.0.0.1");
        app.register_ok(&corp, &kf, &format!("http://{name}:{port}/"))
            .await;
        dns.set(&name, address);
        assert_eq!(
            app.post_kf_event(&corp, &kf, &format!("T{i}"))
                .await
                .status(),
            200
        );
        let item = failed_delivery(&app, &kf).await;
        let error = item["lastError"].as_str().unwrap();
        assert!(
            error.contains(&format!("{name} resolves to {address}")),
            "{address}: {error}"
        );
        assert_ne!(item["status"], "delivered");
    }
    assert!(puppet.received().is_empty(), "nothing reached the puppet");

    dns.set("rebind0.test", "127.0.0.1");
    let got = puppet.wait_for(1).await;
    assert_eq!(
        corp.token_in(&got[0].body),
        "T0",
        "retried once the name is right"
    );
}

/// A registration that an earlier release accepted, pointing at a metadata
/// address, is not delivered to: the attempt fails with the reason.
#[tokio::test]
async fn a_stored_endpoint_in_a_refused_range_is_not_delivered_to() {
    let (app, _) = app_with_dns(|_| {}).await;
    let corp = Corp::new("wwolder");
    app.register_ok(&corp, "wkolder", "http://127.0.0.1:9")
        .await;
    let store = open_store(app.config()).await.unwrap();
    let metadata = EndpointUrl::parse("http://169.254.169.254/latest").unwrap();
    assert!(store
        .move_puppet(
            &KfId::parse("wkolder").unwrap(),
            &metadata,
            UnixMillis::from_millis(1)
        )
        .await
        .unwrap()
        .is_some());
    assert_eq!(app.post_kf_event(&corp, "wkolder", "T").await.status(), 200);
    let item = failed_delivery(&app, "wkolder").await;
    assert_eq!(
        item["lastError"],
        "endpoint refused: 169.254.169.254 is a link-local address; deliveries go there only if ENDPOINT_ALLOW names it"
    );
}

#[tokio::test]
async fn register_and_deregister_are_rate_limited_per_client_address() {
    let clock = crate::support::manual_clock();
    let seams = Seams {
        clock: clock.clone(),
        ..Seams::default()
    };
    let app = spawn_app_with_seams(seams, |c| c.registration.per_minute = Some(6)).await;
    let corp = Corp::new("wwrate");
    for i in 0..4 {
        app.register_ok(&corp, &format!("wkrate{i}"), "http://127.0.0.1:9")
            .await;
    }
    assert_eq!(app.deregister(&corp, "wkrate0").await.status(), 200);
    assert_eq!(app.deregister(&corp, "wkrate1").await.status(), 200);
    for resp in [
        app.register(&corp, "wkrate9", "http://127.0.0.1:9").await,
        app.deregister(&corp, "wkrate2").await,
    ] {
        assert_eq!(resp.status(), 429);
        assert_eq!(
            resp.headers()["retry-after"],
            "10",
            "6 a minute: one back in 10 s"
        );
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 429);
    }
    // Reading and tokens are not limited.
    assert_eq!(
        app.get("/puppetWxkfManager/puppetWxkfInfo/wkrate3")
            .await
            .status(),
        200
    );
    clock.advance(Duration::from_secs(10));
    app.register_ok(&corp, "wkrate9", "http://127.0.0.1:9")
        .await;
    assert_eq!(
        app.register(&corp, "wkrate8", "http://127.0.0.1:9")
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn a_corp_holds_at_most_max_kf_per_corp_kf_ids() {
    let app = spawn_app_with(|c| c.registration.max_kf_per_corp = 2).await;
    let (corp, other) = (Corp::new("wwcap"), Corp::new("wwcapother"));
    app.register_ok(&corp, "wkcap1", "http://127.0.0.1:9").await;
    app.register_ok(&corp, "wkcap2", "http://127.0.0.1:9").await;
    assert_eq!(app.deregister(&corp, "wkcap2").await.status(), 200);
    let (status, body) = register_status(&app, &corp, "wkcap3", "http://127.0.0.1:9").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("MAX_KF_PER_CORP"), "{body}");
    // Those already there come back and move as before; other corps are apart.
    app.register_ok(&corp, "wkcap2", "http://127.0.0.1:10")
        .await;
    app.register_ok(&other, "wkcap3", "http://127.0.0.1:9")
        .await;
    // An operator who deletes one makes room.
    let deleted = app
        .admin(Method::DELETE, "/puppets/wkcap1")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    app.register_ok(&corp, "wkcap4", "http://127.0.0.1:9").await;
}

/// What wechaty-puppet-wxkf does over a day, under the default limits.
#[tokio::test]
async fn an_unmodified_puppet_still_registers_fetches_tokens_and_deregisters() {
    let app = spawn_app_with(|_| {}).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwpuppet");
    for round in 0..20 {
        app.register_ok(&corp, "wkpuppet", &puppet.url).await;
        let token = app.get_token(&corp).await;
        assert_eq!(token["errcode"], 0, "round {round}");
        assert_eq!(
            app.post_kf_event(&corp, "wkpuppet", &format!("T{round}"))
                .await
                .status(),
            200
        );
        puppet.wait_for(round + 1).await;
        assert_eq!(app.deregister(&corp, "wkpuppet").await.status(), 200);
    }
}

/// Start the binary and return what it logged up to "listening".
fn start_binary(host: &str) -> String {
    use std::io::BufRead;
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxkf-manager"))
        .env_clear()
        .env("HOST", host)
        .env("PORT", "0")
        .env("DATA_DIR", data_dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut logged = String::new();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines().map_while(Result::ok) {
        logged.push_str(&line);
        logged.push('\n');
        if line.contains("listening") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    logged
}

#[test]
fn an_open_registration_on_a_public_address_is_warned_about_at_start() {
    let public = start_binary("0.0.0.0");
    let warning = public
        .lines()
        .find(|l| l.contains("REGISTER_SECRET is not set"))
        .unwrap_or_else(|| panic!("no warning in: {public}"));
    assert!(warning.contains("\"WARN\""), "{warning}");
    assert!(public.contains("ADMIN_TOKEN is not set"), "{public}");

    let local = start_binary("127.0.0.1");
    assert!(!local.contains("REGISTER_SECRET"), "{local}");
}
