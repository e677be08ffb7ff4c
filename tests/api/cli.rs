//! The command line against a seeded store: tables and JSON.

use std::time::Duration;

use crate::support::{spawn_app_with, Corp};

#[tokio::test]
async fn puppets_and_deliveries_from_the_command_line() {
    let app = spawn_app_with(|c| {
        c.delivery.retry_window = Duration::from_millis(200);
        // The refused endpoint must stay online: its event ends dead, not parked.
        c.delivery.offline_after = 0;
    })
    .await;
    let corp = Corp::new("wwcli");
    app.register_ok(&corp, "wkcli-one", "http://127.0.0.1:9")
        .await;
    app.register_ok(&corp, "wkcli-two", "http://127.0.0.1:9")
        .await;
    assert_eq!(app.deregister(&corp, "wkcli-two").await.status(), 200);
    // Port 9 refuses: this event becomes a dead letter.
    assert_eq!(
        app.post_kf_event(&corp, "wkcli-one", "T").await.status(),
        200
    );
    for _ in 0..100 {
        let out = app.cli(&["deliveries", "list", "--status", "dead", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if v.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = app.cli(&["puppets", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KFID"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    // Columns line up: STATE starts at the same offset on every line.
    let col = lines[0].find("STATE").unwrap();
    assert_eq!(&lines[1][col..col + 6], "online");
    assert_eq!(&lines[2][col..col + 7], "offline");
    assert!(!table.contains(&corp.secret) && !table.contains(&corp.token));

    let out = app.cli(&["puppets", "list", "--corp", "wwcli", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["kfId"], "wkcli-one");

    let out = app.cli(&["puppets", "show", "wkcli-one"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("dead") && l.trim_end().ends_with('1')),
        "{text}"
    );

    let out = app.cli(&["deliveries", "list", "--status", "dead"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("connection failed"), "{text}");

    let out = app.cli(&["deliveries", "redrive", "--kf-id", "wkcli-one"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-driven: 1"));
    let out = app.cli(&["puppets", "show", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not registered"));
}

/// Apps and subscriptions made from the command line are in force on the
/// running manager within 2 s; secrets come from the environment and are
/// never printed, but for a subscription's signing secret, once.
#[tokio::test]
async fn apps_and_subscriptions_from_the_command_line_reach_the_running_manager() {
    let app = crate::support::spawn_app().await;
    let crm = crate::support::FakePuppet::start().await;
    let app_id = "wxcli0123456789ab";
    // The subscription first: whoever sees the app then sees it too.
    let out = app.cli(&[
        "subscriptions",
        "create",
        "--source",
        app_id,
        "--endpoint",
        &crm.url,
        "--event",
        "subscribe",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("secret (shown once): whsec_"), "{printed}");
    let out = app.cli_with_env(
        &[
            "apps",
            "put",
            app_id,
            "--kind",
            "official_account",
            "--name",
            "Shop",
        ],
        &[("WXKF_APP_TOKEN", "cliToken123")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("APPID") && table.contains("official_account"),
        "{table}"
    );
    assert!(!table.contains("cliToken123"));

    let listed = app.cli(&["subscriptions", "list", "--source", app_id, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains("whsec_"));
    let apps = String::from_utf8(app.cli(&["apps", "list", "--json"]).stdout).unwrap();
    assert!(!apps.contains("cliToken123"));

    let (ts, nonce) = ("1700000000", "n1");
    let signature = wxkf_manager::wecom::sign("cliToken123", ts, nonce, "");
    let follow = "<xml><FromUserName>o_cli</FromUserName><CreateTime>1700000000</CreateTime>\
                  <MsgType>event</MsgType><Event>subscribe</Event></xml>";
    let started = std::time::Instant::now();
    loop {
        let resp = app
            .api
            .post(format!(
                "{}/wechat/{app_id}?signature={signature}&timestamp={ts}&nonce={nonce}",
                app.address
            ))
            .body(follow)
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            break;
        }
        assert_eq!(resp.status(), 404, "unknown until the manager reads it");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "in force within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(crm.wait_for(1).await.len(), 1);
}

/// `--version` names the release and the commit it was built from (a
/// debug build says "unknown" rather than a stale commit; see build.rs).
#[test]
fn version_names_the_release_and_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wxkf-manager"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let rest = line
        .trim()
        .strip_prefix(concat!(
            "wxkf-manager ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .unwrap_or_else(|| panic!("{line}"));
    let commit = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    assert!(
        commit == "unknown"
            || commit
                .trim_end_matches("-dirty")
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
}
