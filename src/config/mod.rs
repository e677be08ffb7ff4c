//! Typed configuration from the environment (API.md §5), validated at start.
//! A bad value stops the program with one line naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::delivery::DeliveryConfig;
use crate::domain::{EndpointAllow, Secret};

#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// `None`: the embedded store under `data_dir`.
    pub mongo_uri: Option<Secret>,
    /// Count every MongoDB command (the driver's command monitoring) for
    /// `/metrics`: what a benchmark reads per accepted callback.
    pub mongo_command_counts: bool,
    pub data_dir: PathBuf,
    pub access_token_url: String,
    pub wecom_api_base: String,
    /// Where Official Account and Mini Program API calls go (§6.4).
    pub wechat_api_base: String,
    pub admin_token: Option<Secret>,
    /// Puppet routes only under `/s/{secret}/puppetWxkfManager/...`.
    pub register_secret: Option<Secret>,
    /// AES-256-GCM key for secrets at rest (`SECRETS_KEY`, base64 of 32 bytes).
    pub secrets_key: Option<SecretsKey>,

    pub log_path: Option<PathBuf>,
    /// Stable identity of this instance, for taking back its own claims.
    pub instance_id: Option<String>,
    /// A whole request body must arrive within this (slow senders get 408).
    pub body_timeout: Duration,
    pub registration: RegistrationLimits,
    pub delivery: DeliveryConfig,
}

/// Bounds on the puppet routes, far above what a real fleet needs.
#[derive(Debug, Clone)]
pub struct RegistrationLimits {
    /// Register and deregister requests per client address and minute (also
    /// the burst); `None`: no limit (`REGISTER_RATE_PER_MINUTE=0`).
    pub per_minute: Option<u32>,
    /// Registered kfIds per corp, online and offline (`MAX_KF_PER_CORP`).
    pub max_kf_per_corp: u64,
}

impl Default for RegistrationLimits {
    fn default() -> Self {
        Self {
            per_minute: Some(600),
            max_kf_per_corp: 1000,
        }
    }
}

/// The secrets-at-rest key; never printed.
#[derive(Clone)]
pub struct SecretsKey(pub [u8; 32]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

/// A configuration variable with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl Config {
    /// Defaults suitable for a bare machine (and for tests to adjust).
    pub fn defaults() -> Self {
        let base = "https://qyapi.weixin.qq.com".to_owned();
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 7777,
            mongo_uri: None,
            mongo_command_counts: false,
            data_dir: PathBuf::from("./data"),
            access_token_url: format!("{base}/cgi-bin/gettoken"),
            wecom_api_base: base,
            wechat_api_base: "https://api.weixin.qq.com".to_owned(),
            admin_token: None,
            register_secret: None,
            secrets_key: None,
            log_path: None,
            instance_id: None,
            body_timeout: Duration::from_secs(10),
            registration: RegistrationLimits::default(),
            delivery: DeliveryConfig::default(),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parse from any key lookup (the environment, or a map in tests).
    /// Every variable is read exactly once, here, one line each; the table in
    /// `docs/configuration.md` is checked against the names read.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(get);
        let mut c = Self::defaults();
        let d = &mut c.delivery;

        env.set("HOST", &mut c.host, |v| {
            v.parse().map_err(|_| "not an IP address".into())
        })?;
        env.set("PORT", &mut c.port, |v| {
            v.parse().map_err(|_| "not a port number (0-65535)".into())
        })?;
        c.mongo_uri = env.read("MONGO_URI", mongo_uri)?;
        env.set("MONGO_COMMAND_COUNTS", &mut c.mongo_command_counts, flag)?;
        env.set("DATA_DIR", &mut c.data_dir, |v| Ok(PathBuf::from(v)))?;
        if let Some(base) = env.read("WECOM_API_BASE", api_base)? {
            c.access_token_url = format!("{base}/cgi-bin/gettoken");
            c.wecom_api_base = base;
        }
        env.set("WECHAT_API_BASE", &mut c.wechat_api_base, api_base)?;
        env.set("ACCESS_TOKEN_URL", &mut c.access_token_url, http_url)?;
        c.admin_token = env.read("ADMIN_TOKEN", admin_token)?;
        c.register_secret = env.read("REGISTER_SECRET", register_secret)?;
        c.secrets_key = env.read("SECRETS_KEY", secrets_key)?;
        d.endpoint_allow = env.read("ENDPOINT_ALLOW", EndpointAllow::parse)?;
        c.registration.per_minute =
            match env.read("REGISTER_RATE_PER_MINUTE", whole(0, u32::MAX))? {
                Some(0) => None,
                Some(n) => Some(n as u32),
                None => c.registration.per_minute,
            };
        env.set(
            "MAX_KF_PER_CORP",
            &mut c.registration.max_kf_per_corp,
            whole(1, u64::MAX),
        )?;
        c.log_path = env.read("LOG_PATH", |v| Ok(PathBuf::from(v)))?;
        c.instance_id = env.read("INSTANCE_ID", |v| Ok(v.to_owned()))?;
        env.set("DELIVERY_TIMEOUT_MS", &mut d.attempt_timeout, millis(1))?;
        env.set("RETRY_BASE_MS", &mut d.retry_base, millis(1))?;
        env.set("RETRY_CAP_MS", &mut d.retry_cap, millis(1))?;
        if d.retry_cap < d.retry_base {
            return Err(bad("RETRY_CAP_MS", "must not be below RETRY_BASE_MS"));
        }
        env.set("RETRY_WINDOW_SECS", &mut d.retry_window, |v| {
            whole(1, u64::MAX)(v).map(Duration::from_secs)
        })?;
        env.set(
            "DELIVERY_CONCURRENCY",
            &mut d.max_concurrent,
            count(1_000_000),
        )?;
        env.set("DELIVERY_PER_PUPPET", &mut d.max_per_puppet, count(10_000))?;
        env.set(
            "DELIVERY_PER_SUBSCRIPTION",
            &mut d.max_per_subscription,
            count(10_000),
        )?;
        env.set("DELIVERY_MAX_CLAIMED", &mut d.max_claimed, count(1_000_000))?;
        env.set("PUPPET_OFFLINE_AFTER", &mut d.offline_after, |v| {
            whole(0, u32::MAX)(v).map(|n| n as u32)
        })?;
        env.set("COALESCE_WAKEUPS", &mut d.coalesce, flag)?;
        env.set("WAKEUP_GAP_MS", &mut d.wakeup_gap, millis(0))?;
        env.set("RETENTION_HOURS", &mut d.retention, |v| {
            match whole(0, u64::MAX / 3600)(v)? {
                hours if hours < 24 => Err("must be at least 24 (the dedup window)".into()),
                hours => Ok(Duration::from_secs(hours * 3600)),
            }
        })?;
        Ok(c)
    }
}

/// The lookup as the reader sees it: a value that is empty or only blanks is
/// unset, and every error names its variable.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// The variable parsed, or `None` when it is unset.
    fn read<T>(
        &self,
        var: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match (self.0)(var).filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(v) => parse(&v)
                .map(Some)
                .map_err(|reason| ConfigError { var, reason }),
        }
    }

    /// The variable parsed into `slot`, which keeps its default when unset.
    fn set<T>(
        &self,
        var: &'static str,
        slot: &mut T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        if let Some(value) = self.read(var, parse)? {
            *slot = value;
        }
        Ok(())
    }
}

fn bad(var: &'static str, reason: &str) -> ConfigError {
    ConfigError {
        var,
        reason: reason.to_owned(),
    }
}

fn flag(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "on" => Ok(true),
        "0" | "false" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

/// A whole number within `min..=max`; zero, where `min` is 1, would stop
/// delivery or retry at once, so it is refused rather than raised.
fn whole(min: u64, max: impl Into<u64>) -> impl Fn(&str) -> Result<u64, String> {
    let max = max.into();
    move |v| match v.parse::<u64>() {
        Err(_) => Err("not a whole number".into()),
        Ok(n) if n < min => Err(format!("must be at least {min}")),
        Ok(n) if n > max && max >= u64::from(u32::MAX) => Err("too large".into()),
        Ok(n) if n > max => Err(format!("must be at most {max}")),
        Ok(n) => Ok(n),
    }
}

/// A count of slots between 1 and `max` (a semaphore's size).
fn count(max: u64) -> impl Fn(&str) -> Result<usize, String> {
    move |v| whole(1, max)(v).map(|n| n as usize)
}

fn millis(min: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |v| whole(min, u64::MAX)(v).map(Duration::from_millis)
}

fn http_url(v: &str) -> Result<String, String> {
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(v.to_owned())
        }
        _ => Err("not an http(s) URL".into()),
    }
}

/// An API origin, without the trailing slash paths are joined to.
fn api_base(v: &str) -> Result<String, String> {
    http_url(v).map(|u| u.trim_end_matches('/').to_owned())
}

fn mongo_uri(v: &str) -> Result<Secret, String> {
    if v.starts_with("mongodb://") || v.starts_with("mongodb+srv://") {
        Ok(Secret::new(v.to_owned()))
    } else {
        Err("must start with mongodb:// or mongodb+srv://".into())
    }
}

fn admin_token(v: &str) -> Result<Secret, String> {
    if v.len() < 16 {
        return Err("must be at least 16 characters".into());
    }
    Ok(Secret::new(v.to_owned()))
}

fn register_secret(v: &str) -> Result<Secret, String> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if v.len() < 16 || !v.bytes().all(allowed) {
        return Err("must be at least 16 characters of [A-Za-z0-9_-]".into());
    }
    Ok(Secret::new(v.to_owned()))
}

fn secrets_key(v: &str) -> Result<SecretsKey, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| "not base64".to_owned())?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "must be 32 bytes (44 base64 characters)".to_owned())?;
    Ok(SecretsKey(key))
}

#[cfg(test)]
mod tests;
