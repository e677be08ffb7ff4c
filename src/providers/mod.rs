//! Service providers (API.md §7): the tokens of a suite and of its customer
//! corps, and the exchange of an authorization code for a customer's grant.
//!
//! The exchange is done after the push is answered (WeCom gives
//! `create_auth` one second), as a delivery of the stored push to a target
//! of the manager's own (`exchange_target`): the queue already gives it a
//! lease (one manager exchanges a code, however many share the store),
//! retries with backoff, dedup (a resent push is exchanged once) and a dead
//! letter an operator sees when the code could not be exchanged.

mod exchange;

use std::sync::Arc;

pub use exchange::{Exchanged, CODE_VALIDITY};

use crate::clock::Clock;
use crate::domain::{CorpId, GrantStatus, Provider, SubscriptionId, Suite, SuiteId};
use crate::metrics::Metrics;
use crate::store::{Providers, Store, StoreError};
use crate::tokens::{TokenAnswer, TokenService, TokenSource};

/// Why a provider's token cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(
        "no suite_ticket has arrived yet: WeCom pushes one every 10 minutes to the command URL"
    )]
    NoTicket,
    #[error("this corp holds no grant of this suite")]
    NoGrant,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct ProviderService {
    store: Arc<dyn Store>,
    tokens: Arc<TokenService>,
    client: reqwest::Client,
    wecom_api_base: String,
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
    let scope = target.as_str().strip_prefix(EXCHANGE_PREFIX)?;
    let id = scope.strip_prefix("suite/")?;
    SuiteId::parse(id).ok().map(Provider::Suite)
}

impl ProviderService {
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Arc<TokenService>,
        client: reqwest::Client,
        wecom_api_base: &str,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            tokens,
            client,
            wecom_api_base: wecom_api_base.to_owned(),
            clock,
            metrics,
        }
    }

    /// The suite's own token, from its newest ticket.
    pub async fn suite_token(&self, suite: &Suite) -> Result<TokenAnswer, ProviderError> {
        let ticket = self
            .store
            .ticket(&suite.provider())
            .await?
            .ok_or(ProviderError::NoTicket)?;
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
        let grant = self.store.get_grant(&suite.provider(), corp).await?;
        let Some(code) = grant
            .filter(|g| g.status == GrantStatus::Authorized)
            .and_then(|g| g.code)
        else {
            return Err(ProviderError::NoGrant);
        };
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

    /// A corp cancelled its grant: the permanent code is deleted and its
    /// cached token dropped; the grant stays, `cancelled`, for operators.
    /// `false` when the corp held no grant.
    pub async fn cancel(&self, suite: &Suite, corp: &CorpId) -> Result<bool, StoreError> {
        let provider = suite.provider();
        let Some(mut grant) = self.store.get_grant(&provider, corp).await? else {
            return Ok(false);
        };
        if let Some(code) = grant.code.take() {
            self.tokens
                .forget(TokenSource::SuiteCorp {
                    suite_id: suite.suite_id.as_str(),
                    corpid: corp.as_str(),
                    permanent_code: code.expose(),
                    suite_token: "",
                })
                .await?;
        }
        grant.status = GrantStatus::Cancelled;
        grant.cancelled_at = Some(self.clock.now());
        self.store
            .put_grant(&provider, &grant, self.clock.now())
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
    /// `suite`.
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
    let mut all = Vec::new();
    for suite in store.list_suites().await? {
        let provider = suite.provider();
        let ticket = store.ticket(&provider).await?;
        let age = ticket.as_ref().map(|t| now.since(t.received_at));
        let customers = store
            .list_grants(&provider)
            .await?
            .iter()
            .filter(|g| g.status == GrantStatus::Authorized)
            .count() as u64;
        all.push(ProviderHealth {
            kind: "suite",
            id: suite.suite_id.to_string(),
            name: suite.name.clone(),
            ticket_age_seconds: age.map(|a| a.as_secs()),
            ticket_expired: age.is_none_or(|a| a > provider.ticket_validity()),
            customers,
            failed_exchanges: 0,
            exchanges: exchange_target(&provider),
        });
    }
    Ok(all)
}
