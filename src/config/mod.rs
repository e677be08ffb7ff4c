//! Typed configuration from the environment (API.md §5), validated at start.
//! A bad value stops the program with one line naming the variable.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::domain::Secret;

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

/// How accepted events are delivered to puppets.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Per-attempt HTTP timeout.
    pub attempt_timeout: Duration,
    /// First retry delay; doubles each attempt up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// After this long since acceptance a failing event becomes a dead letter.
    pub retry_window: Duration,
    pub max_concurrent: usize,
    pub max_per_puppet: usize,
    /// Concurrent sends to one subscription (every event goes to a
    /// subscriber, so more than to a puppet, whose wake-ups coalesce).
    pub max_per_subscription: usize,
    /// Claimed deliveries held in memory at once (waiting for their turn or
    /// being sent): bounds what a backlog costs; each subscription holds
    /// at most four per sending slot of it.
    pub max_claimed: usize,
    /// Consecutive connection failures after which a puppet is marked
    /// offline and its wake-ups park until it registers (0: never).
    pub offline_after: u32,
    /// Fallback poll interval when no notification arrives.
    pub poll_interval: Duration,
    /// Delivered and superseded events are kept this long (≥ the 24 h dedup window).
    pub retention: Duration,
    pub dead_retention: Duration,
    /// Deliver only the newest of several waiting wake-ups of one kfId.
    pub coalesce: bool,
    /// Least time between two wake-ups sent to one kfId; the ones arriving
    /// meanwhile collapse into the newest (zero: no gap).
    pub wakeup_gap: Duration,
    /// Where deliveries may go (CIDRs and host names); `None`: anywhere.
    pub endpoint_allow: Option<crate::domain::EndpointAllow>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
            retry_window: Duration::from_secs(24 * 3600),
            max_concurrent: 1024,
            max_per_puppet: 8,
            max_per_subscription: 32,
            max_claimed: 8192,
            offline_after: 3,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(3 * 24 * 3600),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
            coalesce: true,
            wakeup_gap: Duration::from_millis(50),
            endpoint_allow: None,
        }
    }
}

impl DeliveryConfig {
    /// A lease outlives an attempt by a safe margin.
    pub fn lease(&self) -> Duration {
        self.attempt_timeout * 2 + Duration::from_secs(5)
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
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let mut c = Self::defaults();
        if let Some(v) = get("HOST") {
            c.host = v.parse().map_err(|_| bad("HOST", "not an IP address"))?;
        }
        if let Some(v) = get("PORT") {
            c.port = v
                .parse()
                .map_err(|_| bad("PORT", "not a port number (0-65535)"))?;
        }
        if let Some(v) = get("MONGO_URI") {
            if !(v.starts_with("mongodb://") || v.starts_with("mongodb+srv://")) {
                return Err(bad(
                    "MONGO_URI",
                    "must start with mongodb:// or mongodb+srv://",
                ));
            }
            c.mongo_uri = Some(Secret::new(v));
        }
        if let Some(v) = get("MONGO_COMMAND_COUNTS") {
            c.mongo_command_counts = match v.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad("MONGO_COMMAND_COUNTS", "must be true or false")),
            };
        }
        if let Some(v) = get("DATA_DIR") {
            c.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("WECOM_API_BASE") {
            c.wecom_api_base = http_url("WECOM_API_BASE", &v)?
                .trim_end_matches('/')
                .to_owned();
            c.access_token_url = format!("{}/cgi-bin/gettoken", c.wecom_api_base);
        }
        if let Some(v) = get("WECHAT_API_BASE") {
            c.wechat_api_base = http_url("WECHAT_API_BASE", &v)?
                .trim_end_matches('/')
                .to_owned();
        }
        if let Some(v) = get("ACCESS_TOKEN_URL") {
            c.access_token_url = http_url("ACCESS_TOKEN_URL", &v)?;
        }
        if let Some(v) = get("ADMIN_TOKEN") {
            if v.len() < 16 {
                return Err(bad("ADMIN_TOKEN", "must be at least 16 characters"));
            }
            c.admin_token = Some(Secret::new(v));
        }
        if let Some(v) = get("REGISTER_SECRET") {
            if v.len() < 16
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(bad(
                    "REGISTER_SECRET",
                    "must be at least 16 characters of [A-Za-z0-9_-]",
                ));
            }
            c.register_secret = Some(Secret::new(v));
        }
        if let Some(v) = get("SECRETS_KEY") {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|_| bad("SECRETS_KEY", "not base64"))?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad("SECRETS_KEY", "must be 32 bytes (44 base64 characters)"))?;
            c.secrets_key = Some(SecretsKey(key));
        }
        if let Some(v) = get("ENDPOINT_ALLOW") {
            c.delivery.endpoint_allow = Some(
                crate::domain::EndpointAllow::parse(&v)
                    .map_err(|reason| bad("ENDPOINT_ALLOW", &reason))?,
            );
        }
        if let Some(v) = get("REGISTER_RATE_PER_MINUTE") {
            let n = number("REGISTER_RATE_PER_MINUTE", &v)?;
            c.registration.per_minute = match u32::try_from(n) {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(_) => return Err(bad("REGISTER_RATE_PER_MINUTE", "too large")),
            };
        }
        if let Some(v) = get("MAX_KF_PER_CORP") {
            c.registration.max_kf_per_corp = match number("MAX_KF_PER_CORP", &v)? {
                0 => return Err(bad("MAX_KF_PER_CORP", "must be at least 1")),
                n => n,
            };
        }
        c.log_path = get("LOG_PATH").map(PathBuf::from);
        c.instance_id = get("INSTANCE_ID");
        let d = &mut c.delivery;
        if let Some(v) = get("DELIVERY_TIMEOUT_MS") {
            d.attempt_timeout = Duration::from_millis(positive("DELIVERY_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("RETRY_BASE_MS") {
            d.retry_base = Duration::from_millis(positive("RETRY_BASE_MS", &v)?);
        }
        if let Some(v) = get("RETRY_CAP_MS") {
            d.retry_cap = Duration::from_millis(positive("RETRY_CAP_MS", &v)?);
        }
        if d.retry_cap < d.retry_base {
            return Err(bad("RETRY_CAP_MS", "must not be below RETRY_BASE_MS"));
        }
        if let Some(v) = get("RETRY_WINDOW_SECS") {
            d.retry_window = Duration::from_secs(positive("RETRY_WINDOW_SECS", &v)?);
        }
        if let Some(v) = get("DELIVERY_CONCURRENCY") {
            d.max_concurrent = count("DELIVERY_CONCURRENCY", &v, 1_000_000)?;
        }
        if let Some(v) = get("DELIVERY_PER_PUPPET") {
            d.max_per_puppet = count("DELIVERY_PER_PUPPET", &v, 10_000)?;
        }
        if let Some(v) = get("DELIVERY_PER_SUBSCRIPTION") {
            d.max_per_subscription = count("DELIVERY_PER_SUBSCRIPTION", &v, 10_000)?;
        }
        if let Some(v) = get("DELIVERY_MAX_CLAIMED") {
            d.max_claimed = count("DELIVERY_MAX_CLAIMED", &v, 1_000_000)?;
        }
        if let Some(v) = get("PUPPET_OFFLINE_AFTER") {
            d.offline_after = u32::try_from(number("PUPPET_OFFLINE_AFTER", &v)?)
                .map_err(|_| bad("PUPPET_OFFLINE_AFTER", "too large"))?;
        }
        if let Some(v) = get("COALESCE_WAKEUPS") {
            d.coalesce = match v.as_str() {
                "1" | "true" | "on" => true,
                "0" | "false" | "off" => false,
                _ => return Err(bad("COALESCE_WAKEUPS", "must be true or false")),
            };
        }
        if let Some(v) = get("WAKEUP_GAP_MS") {
            d.wakeup_gap = millis("WAKEUP_GAP_MS", &v)?;
        }
        if let Some(v) = get("RETENTION_HOURS") {
            let hours = number("RETENTION_HOURS", &v)?;
            if hours < 24 {
                return Err(bad(
                    "RETENTION_HOURS",
                    "must be at least 24 (the dedup window)",
                ));
            }
            d.retention = Duration::from_secs(hours * 3600);
        }
        Ok(c)
    }
}

fn bad(var: &'static str, reason: &str) -> ConfigError {
    ConfigError {
        var,
        reason: reason.to_owned(),
    }
}

fn http_url(var: &'static str, v: &str) -> Result<String, ConfigError> {
    match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(v.to_owned())
        }
        _ => Err(bad(var, "not an http(s) URL")),
    }
}

fn number(var: &'static str, v: &str) -> Result<u64, ConfigError> {
    v.parse().map_err(|_| bad(var, "not a whole number"))
}

/// A whole number of at least 1 (zero would stop delivery or retry at once).
fn positive(var: &'static str, v: &str) -> Result<u64, ConfigError> {
    match number(var, v)? {
        0 => Err(bad(var, "must be at least 1")),
        n => Ok(n),
    }
}

/// A count between 1 and `max` (a semaphore's size).
fn count(var: &'static str, v: &str, max: u64) -> Result<usize, ConfigError> {
    match positive(var, v)? {
        n if n > max => Err(bad(var, &format!("must be at most {max}"))),
        n => Ok(n as usize),
    }
}

fn millis(var: &'static str, v: &str) -> Result<Duration, ConfigError> {
    number(var, v).map(Duration::from_millis)
}

#[cfg(test)]
mod tests;
