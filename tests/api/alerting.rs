//! The alert rules and the Grafana dashboard in `deploy/` name only metrics
//! that a manager exposes, with the type their name implies: a renamed or
//! removed metric fails here, not silently in someone's monitoring.

use std::collections::BTreeSet;

use crate::support::{spawn_app, spawn_app_with};

/// Every `wxkf_…` name in a file.
fn metric_names(relative: &str) -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("wxkf_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The family a sample name belongs to and the type its suffix says.
fn family_and_type(name: &str) -> (&str, &str) {
    for (suffix, kind) in [
        ("_total", "counter"),
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
    ] {
        if let Some(family) = name.strip_suffix(suffix) {
            return (family, kind);
        }
    }
    (name, "gauge")
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exposed() {
    // A manager with a suite: its ticket's age is a series of its own.
    let app = spawn_app_with(|c| {
        c.secrets_key = Some(wxkf_manager::config::SecretsKey([1; 32]));
    })
    .await;
    crate::support::TestSuite::new("wwalertsuite")
        .register(&app)
        .await;
    let exposed = app.get("/metrics").await.text().await.unwrap();
    let types: BTreeSet<(String, String)> = exposed
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(family, kind)| (family.to_owned(), kind.to_owned()))
        .collect();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/wxkf-manager.json",
    ] {
        let used = metric_names(file);
        assert!(used.len() >= 5, "{file} names metrics: {used:?}");
        let missing: Vec<&String> = used
            .iter()
            .filter(|name| {
                let (family, kind) = family_and_type(name);
                !types.contains(&(family.to_owned(), kind.to_owned()))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics /metrics does not expose (as the type their suffix implies): {missing:?}\n{exposed}"
        );
    }
}

/// A slow answer in production is attributed from `/metrics`: the embedded
/// store times each WAL sync, batch commit and checkpoint. On MongoDB the
/// manager does none of that work, and the histograms stay empty.
#[tokio::test]
async fn the_embedded_stores_syncs_commits_and_checkpoints_are_timed() {
    let app = spawn_app().await;
    let puppet = crate::support::FakePuppet::start().await;
    let corp = crate::support::Corp::new("wwtimed");
    app.register_ok(&corp, "wktimed", &puppet.url).await;
    for i in 0..5 {
        let resp = app.post_kf_event(&corp, "wktimed", &format!("T{i}")).await;
        assert_eq!(resp.status(), 200);
    }
    puppet.wait_for(1).await;
    let count = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("wxkf_{name}_count ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("wxkf_{name} is not exposed:\n{text}"))
    };
    let names = [
        "store_wal_sync_seconds",
        "store_batch_commit_seconds",
        "store_checkpoint_seconds",
    ];
    if crate::support::test_mongo_uri().is_some() {
        let text = app.get("/metrics").await.text().await.unwrap();
        for name in names {
            assert_eq!(count(&text, name), 0.0, "{name} on MongoDB");
        }
        return;
    }
    let timed = crate::support::eventually(std::time::Duration::from_secs(5), async || {
        let text = app.get("/metrics").await.text().await.unwrap();
        names
            .iter()
            .all(|name| count(&text, name) >= 1.0)
            .then_some(text)
    })
    .await;
    assert!(timed.is_some(), "every kind of the store's work was timed");
}
