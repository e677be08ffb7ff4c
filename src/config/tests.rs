//! Configuration parsing: defaults, bad values, limits.

use super::*;
use std::collections::HashMap;

fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn defaults_match_the_contract() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.port, 7777);
    assert!(c.mongo_uri.is_none());
    assert_eq!(
        c.access_token_url,
        "https://qyapi.weixin.qq.com/cgi-bin/gettoken"
    );
}

#[test]
fn bad_values_name_the_variable() {
    assert_eq!(parse(&[("PORT", "seventy")]).unwrap_err().var, "PORT");
    assert_eq!(
        parse(&[("MONGO_URI", "postgres://x")]).unwrap_err().var,
        "MONGO_URI"
    );
    assert_eq!(
        parse(&[("WECOM_API_BASE", "nope")]).unwrap_err().var,
        "WECOM_API_BASE"
    );
    assert_eq!(
        parse(&[("WAKEUP_GAP_MS", "-5")]).unwrap_err().var,
        "WAKEUP_GAP_MS"
    );
}

/// Zero would stop delivery (no sending slot, a timeout that always
/// fires, retries in a tight loop); it is refused rather than clamped.
#[test]
fn zero_and_out_of_range_delivery_settings_stop_the_start() {
    for var in [
        "DELIVERY_CONCURRENCY",
        "DELIVERY_PER_PUPPET",
        "DELIVERY_TIMEOUT_MS",
        "RETRY_BASE_MS",
        "RETRY_CAP_MS",
        "RETRY_WINDOW_SECS",
    ] {
        let err = parse(&[(var, "0")]).unwrap_err();
        assert_eq!((err.var, err.reason.as_str()), (var, "must be at least 1"));
    }
    assert_eq!(
        parse(&[("DELIVERY_CONCURRENCY", "99999999999")])
            .unwrap_err()
            .var,
        "DELIVERY_CONCURRENCY"
    );
    let err = parse(&[("RETRY_BASE_MS", "5000"), ("RETRY_CAP_MS", "1000")]).unwrap_err();
    assert_eq!(err.var, "RETRY_CAP_MS");
    let c = parse(&[("DELIVERY_CONCURRENCY", "3"), ("DELIVERY_PER_PUPPET", "2")]).unwrap();
    assert_eq!(
        (c.delivery.max_concurrent, c.delivery.max_per_puppet),
        (3, 2)
    );
}

#[test]
fn registration_limits_have_generous_defaults_and_zero_rate_means_none() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.registration.per_minute, Some(600));
    assert_eq!(c.registration.max_kf_per_corp, 1000);
    let c = parse(&[("REGISTER_RATE_PER_MINUTE", "0"), ("MAX_KF_PER_CORP", "5")]).unwrap();
    assert_eq!(c.registration.per_minute, None);
    assert_eq!(c.registration.max_kf_per_corp, 5);
    for (var, value) in [
        ("MAX_KF_PER_CORP", "0"),
        ("MAX_KF_PER_CORP", "many"),
        ("REGISTER_RATE_PER_MINUTE", "-1"),
        ("REGISTER_RATE_PER_MINUTE", "99999999999"),
    ] {
        assert_eq!(parse(&[(var, value)]).unwrap_err().var, var, "{value}");
    }
}

#[test]
fn the_wake_up_gap_is_set_in_milliseconds() {
    assert_eq!(
        parse(&[]).unwrap().delivery.wakeup_gap,
        Duration::from_millis(50)
    );
    assert_eq!(
        parse(&[("WAKEUP_GAP_MS", "0")])
            .unwrap()
            .delivery
            .wakeup_gap,
        Duration::ZERO
    );
}

#[test]
fn api_base_moves_the_token_url_unless_set() {
    let c = parse(&[("WECOM_API_BASE", "http://127.0.0.1:9/")]).unwrap();
    assert_eq!(c.access_token_url, "http://127.0.0.1:9/cgi-bin/gettoken");
    let c = parse(&[
        ("WECOM_API_BASE", "http://a"),
        ("ACCESS_TOKEN_URL", "http://b/t"),
    ])
    .unwrap();
    assert_eq!(c.access_token_url, "http://b/t");
}

#[test]
fn debug_output_does_not_show_secrets() {
    let c = parse(&[
        ("ADMIN_TOKEN", "admin-token-very-secret"),
        ("MONGO_URI", "mongodb://u:pw@h/db"),
    ])
    .unwrap();
    let printed = format!("{c:?}");
    assert!(!printed.contains("admin-token-very-secret"));
    assert!(!printed.contains("pw@h"));
}

/// The names `Config::from_lookup` asks for, the log filter's, and the
/// command line's environment fallbacks: everything the program reads.
fn variables_the_code_reads() -> std::collections::BTreeSet<String> {
    use clap::Subcommand;
    let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
    Config::from_lookup(|k| {
        asked.borrow_mut().insert(k.to_owned());
        None
    })
    .unwrap();
    let mut names = asked.into_inner();
    names.insert(crate::telemetry::LOG_FILTER.to_owned());
    let mut commands = vec![
        crate::cli_channels::AppsCommand::augment_subcommands(clap::Command::new("apps")),
        crate::cli_providers::SuitesCommand::augment_subcommands(clap::Command::new("suites")),
        crate::cli_providers::ComponentsCommand::augment_subcommands(clap::Command::new(
            "components",
        )),
    ];
    while let Some(command) = commands.pop() {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                names.insert(env.to_string_lossy().into_owned());
            }
        }
        commands.extend(command.get_subcommands().cloned());
    }
    names
}

/// The variables `docs/configuration.md` documents: the first cell of every
/// table row that is a `NAME` in backticks.
fn variables_the_table_names() -> std::collections::BTreeSet<String> {
    include_str!("../../docs/configuration.md")
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn the_configuration_table_names_every_variable_the_code_reads() {
    let read = variables_the_code_reads();
    let documented = variables_the_table_names();
    let undocumented: Vec<_> = read.difference(&documented).collect();
    let not_read: Vec<_> = documented.difference(&read).collect();
    assert!(
        undocumented.is_empty() && not_read.is_empty(),
        "docs/configuration.md and the code disagree: read but not in the table {undocumented:?}, \
         in the table but never read {not_read:?}"
    );
    // The table is not empty by accident (a changed row format would make
    // both sides look alike only if the code read nothing either).
    assert!(read.contains("PORT") && read.contains("WXKF_APP_SECRET") && read.len() > 30);
}
