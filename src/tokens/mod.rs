//! Access tokens: one upstream `gettoken` per app per token lifetime, however
//! many puppets and managers ask.
//!
//! Tokens are cached per app, keyed by (corpid, SHA-1 of corpsecret), in
//! memory and in the store (shared by every manager on it). When a token is
//! missing or due (less than a fifth of its life left), one caller takes the
//! key's lease in the store and asks WeCom; within a manager the others wait
//! on a per-key lock, across managers they get the still-valid old token or
//! wait (bounded) for the new one. Credential errors are remembered for a
//! minute so a misconfigured puppet cannot get the corp banned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::clock::{Clock, UnixMillis};
use crate::domain::Secret;
use crate::metrics::Metrics;
use crate::store::{StoreError, TokenCache, TokenRecord};

mod upstream;

use upstream::Upstream;

/// Errors that mean "this secret/corp/IP is wrong": remembered, not retried.
const CREDENTIAL_ERRORS: [i64; 6] = [40001, 40013, 40091, 60020, 40125, 40164];
/// WeCom's "too many calls": remembered briefly.
const RATE_ERRORS: [i64; 2] = [45009, 45033];
const CREDENTIAL_ERROR_TTL: Duration = Duration::from_secs(60);
const RATE_ERROR_TTL: Duration = Duration::from_secs(10);
const LEASE: Duration = Duration::from_secs(15);
const WAIT_FOR_OTHERS: Duration = Duration::from_secs(5);
/// `force=1` is honoured at most once a minute per app.
const FORCE_INTERVAL: Duration = Duration::from_secs(60);

/// Where an authorizer's refresh token goes when WeChat rotates it: kept
/// before the access token that came with it is saved, under the key's
/// lease, so no other manager refreshes with the spent one.
#[async_trait::async_trait]
pub trait KeepRotated: Send + Sync + std::fmt::Debug {
    async fn keep(&self, refresh_token: &Secret) -> Result<(), StoreError>;
}

/// Whose token: a WeCom app (corpid and its secret) or an Official Account
/// or Mini Program (appid and AppSecret, §6.4).
#[derive(Debug, Clone, Copy)]
pub enum TokenSource<'a> {
    Wecom {
        corpid: &'a str,
        corpsecret: &'a str,
    },
    Wechat {
        appid: &'a str,
        secret: &'a str,
    },
    /// A WeCom suite's own token, from its secret and newest ticket (§7.1).
    Suite {
        suite_id: &'a str,
        secret: &'a str,
        ticket: &'a str,
    },
    /// A suite's customer corp's token, from its permanent code (§7.1).
    SuiteCorp {
        suite_id: &'a str,
        corpid: &'a str,
        permanent_code: &'a str,
        suite_token: &'a str,
    },
    /// An Open Platform component's own token, from its AppSecret and
    /// newest verify ticket (§7.2).
    Component {
        component_appid: &'a str,
        secret: &'a str,
        ticket: &'a str,
    },
    /// An authorized account's token, from its refresh token; WeChat's
    /// answer carries the refresh token to keep from then on (§7.2).
    Authorizer {
        component_appid: &'a str,
        appid: &'a str,
        refresh_token: &'a str,
        component_token: &'a str,
        /// Where a rotated refresh token goes (`None` only to name the key).
        rotated: Option<&'a dyn KeepRotated>,
    },
}

impl TokenSource<'_> {
    /// The cache key: the secret itself is never stored as a key.
    fn key(&self) -> String {
        match *self {
            Self::Wecom { corpid, corpsecret } => cache_key(corpid, corpsecret),
            Self::Wechat { appid, secret } => format!("wx|{appid}:{}", fingerprint(secret)),
            Self::Suite {
                suite_id, secret, ..
            } => format!("suite|{suite_id}:{}", fingerprint(secret)),
            Self::SuiteCorp {
                suite_id,
                corpid,
                permanent_code,
                ..
            } => format!("suite|{suite_id}|{corpid}:{}", fingerprint(permanent_code)),
            Self::Component {
                component_appid,
                secret,
                ..
            } => format!("component|{component_appid}:{}", fingerprint(secret)),
            // Not by refresh token: it changes with every refresh, and a new
            // authorization seeds this key with the token it came with.
            Self::Authorizer {
                component_appid,
                appid,
                ..
            } => format!("component|{component_appid}|{appid}"),
        }
    }
}

/// A rotated refresh token is spent for WeChat the moment it answers: the
/// write is tried a few times before it is given up (loudly; `authorizers/
/// sync` recovers it).
async fn keep_rotated(keep: &dyn KeepRotated, refresh: &Secret) {
    for attempt in 0..5u32 {
        match keep.keep(refresh).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(grant = ?keep, attempt, error = %e, "could not keep a rotated refresh token; trying again");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    tracing::error!(grant = ?keep, "a rotated refresh token was not kept: run authorizers/sync");
}

/// WeChat allows a forced `stable_token` once per 30 s and 20 times a day per app.
const WECHAT_FORCE_INTERVAL: Duration = Duration::from_secs(30);
const WECHAT_FORCES_PER_DAY: u32 = 20;

/// What a caller gets: WeCom's own shape.
#[derive(Debug, Clone)]
pub enum TokenAnswer {
    Token {
        access_token: Secret,
        expires_in: i64,
    },
    /// An error answered by WeCom (or remembered from it).
    WecomError { errcode: i64, errmsg: String },
    /// WeCom could not be reached, or another manager's refresh did not finish in time.
    Unavailable { errmsg: String },
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    expires_at: UnixMillis,
    fetched_at: UnixMillis,
}

impl Cached {
    fn from_record(r: &TokenRecord) -> Option<Self> {
        r.access_token.as_ref().map(|t| Self {
            token: t.clone(),
            expires_at: r.expires_at,
            fetched_at: r.fetched_at,
        })
    }

    /// Less than a fifth of its life left: time to refresh.
    fn is_due(&self, now: UnixMillis) -> bool {
        let life = self.expires_at.since(self.fetched_at);
        !self.is_valid(now) || self.expires_at.since(now) < life / 5
    }

    fn is_valid(&self, now: UnixMillis) -> bool {
        self.expires_at > now
    }

    fn answer(&self, now: UnixMillis) -> TokenAnswer {
        TokenAnswer::Token {
            access_token: self.token.clone(),
            expires_in: self.expires_at.since(now).as_secs() as i64,
        }
    }
}

pub struct TokenService {
    store: Arc<dyn TokenCache>,
    client: reqwest::Client,
    url: String,
    /// `{WECHAT_API_BASE}/cgi-bin/stable_token`.
    stable_url: String,
    /// `WECOM_API_BASE`, for suites' tokens.
    wecom_api_base: String,
    /// `WECHAT_API_BASE`, for components' and authorizers' tokens.
    wechat_api_base: String,
    clock: Arc<dyn Clock>,
    owner: String,
    memory: Mutex<HashMap<String, Cached>>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

/// The cache key of an app: the secret itself is never stored as a key.
pub fn cache_key(corpid: &str, corpsecret: &str) -> String {
    format!("{corpid}:{}", fingerprint(corpsecret))
}

/// What a cache key holds of a secret: its SHA-1, so that a new secret
/// (or permanent code) is a new key.
fn fingerprint(secret: &str) -> String {
    hex::encode(Sha1::digest(secret.as_bytes()))
}

impl TokenService {
    /// Upstream URLs from `config` (`ACCESS_TOKEN_URL`, `WECOM_API_BASE`,
    /// `WECHAT_API_BASE`).
    pub fn new(
        store: Arc<dyn TokenCache>,
        client: reqwest::Client,
        config: &crate::config::Config,
        clock: Arc<dyn Clock>,
        owner: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            client,
            url: config.access_token_url.clone(),
            stable_url: format!("{}/cgi-bin/stable_token", config.wechat_api_base),
            wecom_api_base: config.wecom_api_base.clone(),
            wechat_api_base: config.wechat_api_base.clone(),
            clock,
            owner,
            memory: Mutex::default(),
            flights: Mutex::default(),
            metrics,
        }
    }

    fn remembered(&self, key: &str) -> Option<Cached> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &str, cached: Cached) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), cached);
    }

    fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        flights.entry(key.to_owned()).or_default().clone()
    }

    fn hit(&self, answer: TokenAnswer) -> Result<TokenAnswer, StoreError> {
        self.metrics.token_hits.inc();
        Ok(answer)
    }

    /// A WeCom app's token, from the cache when possible.
    pub async fn get(
        &self,
        corpid: &str,
        corpsecret: &str,
        force: bool,
    ) -> Result<TokenAnswer, StoreError> {
        self.get_for(TokenSource::Wecom { corpid, corpsecret }, force)
            .await
    }

    /// Whether a forced refresh may happen now: WeCom's at most once a
    /// minute per app (our rule); WeChat's once per 30 s and 20 a day (its
    /// own). Marked in the store, so the limits hold across managers.
    async fn may_force(
        &self,
        source: &TokenSource<'_>,
        key: &str,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        match source {
            TokenSource::Wecom { .. }
            | TokenSource::Suite { .. }
            | TokenSource::SuiteCorp { .. }
            | TokenSource::Component { .. }
            | TokenSource::Authorizer { .. } => {
                self.store
                    .mark_token_forced(key, now, now.minus(FORCE_INTERVAL))
                    .await
            }
            TokenSource::Wechat { .. } => {
                if !self
                    .store
                    .mark_token_forced(key, now, now.minus(WECHAT_FORCE_INTERVAL))
                    .await?
                {
                    return Ok(false);
                }
                // One mark per slot of the day: a slot marked once stays marked.
                let day = now.as_secs().div_euclid(86_400);
                for slot in 0..WECHAT_FORCES_PER_DAY {
                    let slot_key = format!("{key}#forced:{day}:{slot}");
                    if self
                        .store
                        .mark_token_forced(&slot_key, now, UnixMillis::EPOCH)
                        .await?
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// A token for this source, from the cache when possible; `force` asks
    /// for a new one (within the source's limits; beyond them the cached one).
    pub async fn get_for(
        &self,
        source: TokenSource<'_>,
        force: bool,
    ) -> Result<TokenAnswer, StoreError> {
        let key = source.key();
        let now = self.clock.now();
        let forced = force && self.may_force(&source, &key, now).await?;
        if forced {
            self.memory
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        if let Some(c) = self.remembered(&key).filter(|c| !c.is_due(now)) {
            return self.hit(c.answer(now));
        }
        let flight = self.flight(&key);
        let _one_at_a_time = flight.lock().await;
        let now = self.clock.now();
        if let Some(c) = self.remembered(&key).filter(|c| !c.is_due(now)) {
            return self.hit(c.answer(now));
        }
        let record = self.store.get_token(&key).await?.unwrap_or_default();
        let stored = Cached::from_record(&record);
        if let Some(c) = stored.clone().filter(|c| !c.is_due(now) && !forced) {
            self.remember(&key, c.clone());
            return self.hit(c.answer(now));
        }
        if let Some((errcode, errmsg)) = record.negative.clone().filter(|_| record.neg_until > now)
        {
            return self.hit(TokenAnswer::WecomError { errcode, errmsg });
        }
        self.metrics.token_misses.inc();
        // A forced refresh refuses the token it was asked to replace, and
        // anything fetched no later than it (clock ticks are milliseconds, so
        // "fetched after we asked" could still be the very token refused).
        let refused = forced.then(|| stored.as_ref().map_or(UnixMillis::MIN, |c| c.fetched_at));
        self.refresh(&key, source, stored, refused).await
    }

    /// Take the key's lease and ask WeCom, or, while another holder
    /// refreshes, serve the still-valid old token or wait for the new one.
    async fn refresh(
        &self,
        key: &str,
        source: TokenSource<'_>,
        old: Option<Cached>,
        refused: Option<UnixMillis>,
    ) -> Result<TokenAnswer, StoreError> {
        let old = old.filter(|_| refused.is_none());
        let acceptable = |c: &Cached| refused.is_none_or(|f| c.fetched_at > f);
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHERS;
        loop {
            let now = self.clock.now();
            if self
                .store
                .try_lease_token(key, &self.owner, now, now.plus(LEASE))
                .await?
            {
                // Another manager may have refreshed between our look and our lease.
                let record = self.store.get_token(key).await?.unwrap_or_default();
                if let Some(c) =
                    Cached::from_record(&record).filter(|c| !c.is_due(now) && acceptable(c))
                {
                    self.store.release_token_lease(key, &self.owner).await?;
                    self.remember(key, c.clone());
                    return Ok(c.answer(now));
                }
                return self.fetch_and_save(key, source, refused.is_some()).await;
            }
            if let Some(c) = old.as_ref().filter(|c| c.is_valid(now)) {
                return Ok(c.answer(now));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(TokenAnswer::Unavailable {
                    errmsg: "access token refresh in progress elsewhere; retry".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let record = self.store.get_token(key).await?.unwrap_or_default();
            let now = self.clock.now();
            if let Some(c) =
                Cached::from_record(&record).filter(|c| c.is_valid(now) && acceptable(c))
            {
                self.remember(key, c.clone());
                return Ok(c.answer(now));
            }
            if let Some((errcode, errmsg)) = record.negative.filter(|_| record.neg_until > now) {
                return Ok(TokenAnswer::WecomError { errcode, errmsg });
            }
        }
    }

    async fn fetch_and_save(
        &self,
        key: &str,
        source: TokenSource<'_>,
        forced: bool,
    ) -> Result<TokenAnswer, StoreError> {
        let fetched = self.fetch(source, forced).await;
        let failed = match &fetched {
            Upstream::Token { .. } => None,
            Upstream::Error { .. } => Some("refused"),
            Upstream::Unreachable(_) => Some("unreachable"),
        };
        if let Some(reason) = failed {
            self.metrics
                .token_refresh_failures
                .get_or_create(&crate::metrics::ReasonLabels { reason })
                .inc();
        }
        let now = self.clock.now();
        let mut record = TokenRecord {
            fetched_at: now,
            ..TokenRecord::default()
        };
        let answer = match fetched {
            Upstream::Token {
                token,
                expires_in,
                rotated,
            } => {
                if let (
                    Some(refresh),
                    TokenSource::Authorizer {
                        rotated: Some(keep),
                        ..
                    },
                ) = (rotated, source)
                {
                    keep_rotated(keep, &refresh).await;
                }
                let cached = Cached {
                    token,
                    expires_at: now.plus(Duration::from_secs(expires_in.max(0) as u64)),
                    fetched_at: now,
                };
                record.access_token = Some(cached.token.clone());
                record.expires_at = cached.expires_at;
                self.remember(key, cached.clone());
                cached.answer(now)
            }
            Upstream::Error { errcode, errmsg } => {
                let ttl = if CREDENTIAL_ERRORS.contains(&errcode) {
                    Some(CREDENTIAL_ERROR_TTL)
                } else if RATE_ERRORS.contains(&errcode) {
                    Some(RATE_ERROR_TTL)
                } else {
                    None
                };
                if let Some(ttl) = ttl {
                    record.negative = Some((errcode, errmsg.clone()));
                    record.neg_until = now.plus(ttl);
                }
                TokenAnswer::WecomError { errcode, errmsg }
            }
            Upstream::Unreachable(why) => {
                self.store.release_token_lease(key, &self.owner).await?;
                return Ok(TokenAnswer::Unavailable {
                    errmsg: format!("WeCom API unreachable: {why}"),
                });
            }
        };
        // Keep a still-valid token when WeCom answered with an error.
        if record.access_token.is_none() && record.negative.is_none() {
            self.store.release_token_lease(key, &self.owner).await?;
        } else {
            self.store.save_token(key, &record).await?;
        }
        Ok(answer)
    }

    /// Cache a token WeChat handed out without being asked for one (an
    /// authorization's exchange answers with the account's token): it
    /// replaces whatever the key held, here and for every manager.
    pub async fn seed(
        &self,
        source: TokenSource<'_>,
        token: Secret,
        expires_in: i64,
    ) -> Result<(), StoreError> {
        let key = source.key();
        let now = self.clock.now();
        let cached = Cached {
            token,
            expires_at: now.plus(Duration::from_secs(expires_in.clamp(1, 86_400) as u64)),
            fetched_at: now,
        };
        let record = TokenRecord {
            fetched_at: now,
            access_token: Some(cached.token.clone()),
            expires_at: cached.expires_at,
            ..TokenRecord::default()
        };
        self.store.save_token(&key, &record).await?;
        self.remember(&key, cached);
        Ok(())
    }

    /// Drop the token cached for this source, here and in the store (a
    /// grant ended: its token must not be served again).
    pub async fn forget(&self, source: TokenSource<'_>) -> Result<(), StoreError> {
        let key = source.key();
        let remembered = self
            .memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
            .map(|c| c.token);
        let stored = self
            .store
            .get_token(&key)
            .await?
            .and_then(|r| r.access_token);
        for token in remembered.into_iter().chain(stored) {
            self.store.invalidate_access_token(token.expose()).await?;
        }
        Ok(())
    }

    /// WeCom rejected this token (40014/42001 through the proxy): drop it,
    /// and only it.
    pub async fn invalidate(&self, token: &str) -> Result<u64, StoreError> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| c.token.expose() != token);
        self.store.invalidate_access_token(token).await
    }
}
