//! Service providers (API.md §7): the tokens of a suite and of its customer
//! corps, of a component and of its authorized accounts, and the exchange of
//! an authorization code for a customer's grant.
//!
//! The exchange is done after the push is answered (WeCom gives
//! `create_auth` one second, WeChat every push five), as a delivery of the stored push to a target
//! of the manager's own (`exchange_target`): the queue already gives it a
//! lease (one manager exchanges a code, however many share the store),
//! retries with backoff, dedup (a resent push is exchanged once) and a dead
//! letter an operator sees when the code could not be exchanged.

mod component;
mod exchange;

use std::sync::Arc;

pub use component::Synced;
pub use exchange::{Exchanged, CODE_VALIDITY};

use crate::clock::Clock;
use crate::domain::{Component, CorpId, GrantStatus, Provider, SubscriptionId, Suite};
use crate::metrics::Metrics;
use crate::store::{Providers, Store, StoreError};
use crate::tokens::{TokenAnswer, TokenService, TokenSource};

/// Why a provider's token cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "no suite_ticket has arrived yet: WeCom pushes one every 10 minutes to the command URL"
    )]
    NoSuiteTicket,
    #[error(
        "no component_verify_ticket has arrived yet: WeChat pushes one every 10 minutes to the event URL"
    )]
    NoComponentTicket,
    #[error("no grant: this customer has not authorized the provider, or has withdrawn")]
    NoGrant,
    #[error("WeChat: {0}")]
    Upstream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A provider as registered: what its exchanges and tokens need.
#[derive(Debug, Clone)]
pub enum Registered {
    Suite(Suite),
    Component(Component),
}

pub struct ProviderService {
    store: Arc<dyn Store>,
    tokens: Arc<TokenService>,
    client: reqwest::Client,
    wecom_api_base: String,
    wechat_api_base: String,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

/// The prefix of the manager's own delivery targets: a provider's exchanges.
const EXCHANGE_PREFIX: &str = "exchange:";

/// The delivery target that exchanges a provider's authorization codes.
pub fn exchange_target(provider: &Provider) -> SubscriptionId {
    SubscriptionId::from(format!("{EXCHANGE_PREFIX}{}", provider.scope()))
}

/// The provider whose exchanges a delivery target stands for, if it is one.
pub fn exchange_of(target: &SubscriptionId) -> Option<Provider> {
    Provider::of_scope(target.as_str().strip_prefix(EXCHANGE_PREFIX)?)
}

impl ProviderService {
    /// Upstream URLs from `config` (`WECOM_API_BASE`, `WECHAT_API_BASE`).
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Arc<TokenService>,
        client: reqwest::Client,
        config: &crate::config::Config,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            tokens,
            client,
            wecom_api_base: config.wecom_api_base.clone(),
            wechat_api_base: config.wechat_api_base.clone(),
            clock,
            metrics,
        }
    }

    /// The provider as registered now, if it still is.
    pub async fn registered(&self, provider: &Provider) -> Result<Option<Registered>, StoreError> {
        Ok(match provider {
            Provider::Suite(id) => self.store.get_suite(id).await?.map(Registered::Suite),
            Provider::Component(id) => self
                .store
                .get_component(id)
                .await?
                .map(Registered::Component),
        })
    }

    /// A customer's code (permanent code, refresh token) while it holds a grant.
    async fn granted_code(
        &self,
        provider: &Provider,
        customer: &str,
    ) -> Result<crate::domain::Secret, ProviderError> {
        let grant = self.store.get_grant(provider, customer).await?;
        grant
            .filter(|g| g.status == GrantStatus::Authorized)
            .and_then(|g| g.code)
            .ok_or(ProviderError::NoGrant)
    }

    /// The suite's own token, from its newest ticket.
    pub async fn suite_token(&self, suite: &Suite) -> Result<TokenAnswer, ProviderError> {
        let ticket = self
            .store
            .ticket(&suite.provider())
            .await?
            .ok_or(ProviderError::NoSuiteTicket)?;
        Ok(self
            .tokens
            .get_for(
                TokenSource::Suite {
                    suite_id: suite.suite_id.as_str(),
                    secret: suite.secret.expose(),
                    ticket: ticket.value.expose(),
                },
                false,
            )
            .await?)
    }

    /// A customer corp's token, from its permanent code and the suite's token.
    pub async fn corp_token(
        &self,
        suite: &Suite,
        corp: &CorpId,
    ) -> Result<TokenAnswer, ProviderError> {
        let code = self.granted_code(&suite.provider(), corp.as_str()).await?;
        let suite_token = match self.suite_token(suite).await? {
            TokenAnswer::Token { access_token, .. } => access_token,
            other => return Ok(other),
        };
        Ok(self
            .tokens
            .get_for(
                TokenSource::SuiteCorp {
                    suite_id: suite.suite_id.as_str(),
                    corpid: corp.as_str(),
                    permanent_code: code.expose(),
                    suite_token: suite_token.expose(),
                },
                false,
            )
            .await?)
    }

    /// A customer withdrew (`cancel_auth`, `unauthorized`): its code is
    /// deleted and its cached token dropped; the grant stays, `cancelled`,
    /// for operators. `false` when the customer held no grant.
    pub async fn end_grant(&self, provider: &Provider, customer: &str) -> Result<bool, StoreError> {
        let Some(mut grant) = self.store.get_grant(provider, customer).await? else {
            return Ok(false);
        };
        if let Some(code) = grant.code.take() {
            let cached = match provider {
                Provider::Suite(suite_id) => TokenSource::SuiteCorp {
                    suite_id: suite_id.as_str(),
                    corpid: customer,
                    permanent_code: code.expose(),
                    suite_token: "",
                },
                Provider::Component(component) => TokenSource::Authorizer {
                    component_appid: component.as_str(),
                    appid: customer,
                    refresh_token: code.expose(),
                    component_token: "",
                    rotated: None,
                },
            };
            self.tokens.forget(cached).await?;
        }
        grant.status = GrantStatus::Cancelled;
        grant.cancelled_at = Some(self.clock.now());
        self.store
            .put_grant(provider, &grant, self.clock.now())
            .await?;
        Ok(true)
    }

    /// WeCom refused this token (through a proxy): drop it, and only it.
    pub async fn invalidate(&self, token: &str) -> Result<u64, StoreError> {
        self.tokens.invalidate(token).await
    }
}

/// How a provider stands, for operators (dashboard, metrics): its newest
/// ticket's age (past its validity every customer's calls fail) and how
/// many customers hold a grant.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderHealth {
    /// `suite` or `component`.
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    /// `None` until the first ticket.
    pub ticket_age_seconds: Option<u64>,
    /// No ticket, or the newest is past its validity.
    pub ticket_expired: bool,
    /// Customers holding a grant.
    pub customers: u64,
    /// Pushes whose code could not be exchanged (dead letters of its exchanges).
    pub failed_exchanges: u64,
    /// The target its exchanges are deliveries to.
    #[serde(skip)]
    pub exchanges: SubscriptionId,
}

/// Every provider's health at `now` (`failed_exchanges` left at 0: the
/// caller that has the backlogs fills it).
pub async fn health(
    store: &dyn Store,
    now: crate::clock::UnixMillis,
) -> Result<Vec<ProviderHealth>, StoreError> {
    let mut providers: Vec<(Provider, String)> = Vec::new();
    for suite in store.list_suites().await? {
        providers.push((suite.provider(), suite.name));
    }
    for component in store.list_components().await? {
        providers.push((component.provider(), component.name));
    }
    let mut all = Vec::new();
    for (provider, name) in providers {
        let ticket = store.ticket(&provider).await?;
        let age = ticket.as_ref().map(|t| now.since(t.received_at));
        all.push(ProviderHealth {
            kind: provider.kind(),
            id: provider.id().to_owned(),
            name,
            ticket_age_seconds: age.map(|a| a.as_secs()),
            ticket_expired: age.is_none_or(|a| a > provider.ticket_validity()),
            customers: customers(store, &provider).await?,
            failed_exchanges: 0,
            exchanges: exchange_target(&provider),
        });
    }
    Ok(all)
}

/// How many customers of a provider hold a grant now.
pub async fn customers(store: &dyn Store, provider: &Provider) -> Result<u64, StoreError> {
    Ok(store
        .list_grants(provider)
        .await?
        .iter()
        .filter(|g| g.status == GrantStatus::Authorized)
        .count() as u64)
}
