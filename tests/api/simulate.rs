//! The simulator against our own server.

use crate::support::{spawn_app, Corp};

/// Runs the simulator off the test's runtime (it blocks until it is done).
pub(crate) async fn simulate_beside(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        simulate(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

fn simulate(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxkf-manager"))
        .arg("simulate")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_simulator_checks_a_deployment_as_wecom_would() {
    let app = spawn_app().await;
    let puppet = crate::support::FakePuppet::start().await;
    let corp = Corp::new("wwsim");
    app.register_ok(&corp, "wksim", &puppet.url).await;
    let (url, token, key) = (app.address.clone(), corp.token.clone(), corp.key.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        simulate(&[
            "--url",
            &url,
            "--corp-id",
            "wwsim",
            "--token",
            &token,
            "--aes-key",
            &key,
            "--kf-id",
            "wksim",
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("ok   URL verification (exact echo)"), "{out}");
    assert!(out.contains("ok   encrypted kf_msg_or_event"), "{out}");
    assert_eq!(
        puppet.wait_for(1).await.len(),
        1,
        "the simulated callback reached the puppet"
    );

    let url = app.address.clone();
    let (token, key) = (corp.token.clone(), corp.key.clone());
    let (ok, out) = tokio::task::spawn_blocking(move || {
        simulate(&[
            "--url",
            &url,
            "--corp-id",
            "wwsim",
            "--token",
            &token,
            "--aes-key",
            &key,
            "--kf-id",
            "wksim",
            "--decrypted",
        ])
    })
    .await
    .unwrap();
    assert!(ok && out.contains("ok   decrypted callback"), "{out}");

    let wrong = Corp::new("wwsim");
    let url = app.address.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        simulate(&[
            "--url",
            &url,
            "--corp-id",
            "wwsim",
            "--token",
            &wrong.token,
            "--aes-key",
            &wrong.key,
            "--kf-id",
            "wksim",
        ])
    })
    .await
    .unwrap();
    assert!(!ok, "wrong credentials fail");
    assert!(
        out.contains("FAIL URL verification (exact echo)") && out.contains("HTTP 401"),
        "{out}"
    );
    assert!(out.contains("FAIL encrypted kf_msg_or_event"), "{out}");
}

#[tokio::test]
async fn the_simulator_checks_an_official_account_push_url_as_wechat_would() {
    let app = spawn_app().await;
    let crm = crate::support::FakePuppet::start().await;
    let (app_id, token, key) = (
        "wxsim0123456789ab",
        "simToken123",
        crate::support::random_string(43),
    );
    app.admin(reqwest::Method::POST, "/subscriptions")
        .json(&serde_json::json!({"source": app_id, "endpoint": crm.url}))
        .send()
        .await
        .unwrap();
    let put = app
        .admin(reqwest::Method::PUT, &format!("/apps/{app_id}"))
        .json(
            &serde_json::json!({"kind": "official_account", "token": token, "encodingAESKey": key}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let url = app.address.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        simulate(&[
            "--url",
            &url,
            "--app-id",
            app_id,
            "--token",
            token,
            "--aes-key",
            &key,
            "--openid",
            "o_sim",
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("ok   URL check (echostr as sent)"), "{out}");
    assert!(out.contains("ok   safe-mode subscribe push"), "{out}");
    let got = crm.wait_for(1).await;
    assert_eq!(got[0].json()["message"]["FromUserName"], "o_sim");
}
