//! The alert rules and the Grafana dashboard in `deploy/` name only metrics
//! that a manager exposes, with the type their name implies: a renamed or
//! removed metric fails here, not silently in someone's monitoring.

use std::collections::BTreeSet;

use crate::support::spawn_app;

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
    let app = spawn_app().await;
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
