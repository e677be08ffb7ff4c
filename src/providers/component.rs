//! An Open Platform component's tokens (§7.2): its own, from the newest
//! verify ticket, and each authorized account's, from the refresh token
//! the account's grant holds. WeChat answers a refresh with the refresh
//! token to use from then on; it replaces the kept one before the access
//! token is served. `sync` recovers lost refresh tokens from WeChat's list
//! of authorizers.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{ProviderError, ProviderService};
use crate::clock::{Clock, UnixMillis};
use crate::domain::{Component, Grant, GrantStatus, Provider, Secret};
use crate::store::{Providers, Store, StoreError};
use crate::tokens::{KeepRotated, TokenAnswer, TokenSource};

/// `api_get_authorizer_list` gives at most 500 a page.
const AUTHORIZERS_PER_PAGE: u64 = 500;
/// A bound on pages, so a misbehaving answer cannot loop forever.
const MAX_PAGES: u64 = 1_000;

/// What `sync` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Synced {
    /// Accounts WeChat lists as authorizers of the component.
    pub authorizers: u64,
    /// Of those, grants kept anew (missing, withdrawn or holding another
    /// refresh token here).
    pub recovered: u64,
}

/// Keeps a rotated refresh token in the account's grant.
struct GrantRotation<'a> {
    store: &'a Arc<dyn Store>,
    clock: &'a Arc<dyn Clock>,
    provider: Provider,
    appid: &'a str,
}

impl std::fmt::Debug for GrantRotation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider.scope(), self.appid)
    }
}

#[async_trait::async_trait]
impl KeepRotated for GrantRotation<'_> {
    async fn keep(&self, refresh_token: &Secret) -> Result<(), StoreError> {
        let Some(mut grant) = self.store.get_grant(&self.provider, self.appid).await? else {
            return Ok(());
        };
        // A grant withdrawn meanwhile stays withdrawn.
        if grant.status == GrantStatus::Authorized {
            grant.code = Some(refresh_token.clone());
            self.store
                .put_grant(&self.provider, &grant, self.clock.now())
                .await?;
        }
        Ok(())
    }
}

impl ProviderService {
    /// The component's own token, from its newest verify ticket.
    pub async fn component_token(
        &self,
        component: &Component,
    ) -> Result<TokenAnswer, ProviderError> {
        let ticket = self
            .store
            .ticket(&component.provider())
            .await?
            .ok_or(ProviderError::NoComponentTicket)?;
        Ok(self
            .tokens
            .get_for(
                TokenSource::Component {
                    component_appid: component.app_id.as_str(),
                    secret: component.secret.expose(),
                    ticket: ticket.value.expose(),
                },
                false,
            )
            .await?)
    }

    /// An authorized account's token, from its refresh token and the
    /// component's token.
    pub async fn authorizer_token(
        &self,
        component: &Component,
        appid: &str,
    ) -> Result<TokenAnswer, ProviderError> {
        let provider = component.provider();
        let refresh = self.granted_code(&provider, appid).await?;
        let component_token = match self.component_token(component).await? {
            TokenAnswer::Token { access_token, .. } => access_token,
            other => return Ok(other),
        };
        let rotation = GrantRotation {
            store: &self.store,
            clock: &self.clock,
            provider,
            appid,
        };
        Ok(self
            .tokens
            .get_for(
                TokenSource::Authorizer {
                    component_appid: component.app_id.as_str(),
                    appid,
                    refresh_token: refresh.expose(),
                    component_token: component_token.expose(),
                    rotated: Some(&rotation),
                },
                false,
            )
            .await?)
    }

    /// Read every authorizer's refresh token from WeChat
    /// (`api_get_authorizer_list`, paged) and keep those not held here, or
    /// held stale: the way back from a lost grant.
    pub async fn sync(&self, component: &Component) -> Result<Synced, ProviderError> {
        let provider = component.provider();
        let mut synced = Synced {
            authorizers: 0,
            recovered: 0,
        };
        for page in 0..MAX_PAGES {
            let offset = page * AUTHORIZERS_PER_PAGE;
            let answer = self.authorizer_page(component, offset).await?;
            let listed = answer["list"].as_array().cloned().unwrap_or_default();
            for entry in &listed {
                let (Some(appid), Some(refresh)) = (
                    entry["authorizer_appid"]
                        .as_str()
                        .and_then(|a| crate::domain::AppId::parse(a).ok()),
                    entry["refresh_token"].as_str().filter(|r| !r.is_empty()),
                ) else {
                    continue;
                };
                synced.authorizers += 1;
                let held = self.store.get_grant(&provider, appid.as_str()).await?;
                let current = held.as_ref().is_some_and(|g| {
                    g.status == GrantStatus::Authorized
                        && g.code.as_ref().is_some_and(|c| c.expose() == refresh)
                });
                if current {
                    continue;
                }
                let authorized_at = entry["auth_time"]
                    .as_i64()
                    .map(|s| UnixMillis::from_millis(s.saturating_mul(1000)))
                    .unwrap_or_else(|| self.clock.now());
                let grant = Grant {
                    customer: appid.as_str().to_owned(),
                    name: held.map(|g| g.name).unwrap_or_default(),
                    status: GrantStatus::Authorized,
                    code: Some(Secret::new(refresh)),
                    authorized_at,
                    cancelled_at: None,
                };
                self.store
                    .put_grant(&provider, &grant, self.clock.now())
                    .await?;
                synced.recovered += 1;
            }
            let total = answer["total_count"].as_u64().unwrap_or(0);
            if listed.is_empty() || offset + (listed.len() as u64) >= total {
                break;
            }
        }
        tracing::info!(component = %component.app_id, authorizers = synced.authorizers, recovered = synced.recovered, "authorizers synced from WeChat");
        Ok(synced)
    }

    async fn authorizer_page(
        &self,
        component: &Component,
        offset: u64,
    ) -> Result<Value, ProviderError> {
        let token = match self.component_token(component).await? {
            TokenAnswer::Token { access_token, .. } => access_token,
            TokenAnswer::WecomError { errcode, errmsg } => {
                return Err(ProviderError::Upstream(format!("{errcode} {errmsg}")))
            }
            TokenAnswer::Unavailable { errmsg } => return Err(ProviderError::Upstream(errmsg)),
        };
        let url = format!(
            "{}/cgi-bin/component/api_get_authorizer_list",
            self.wechat_api_base
        );
        let body = json!({
            "component_appid": component.app_id.as_str(), "offset": offset,
            "count": AUTHORIZERS_PER_PAGE,
        });
        let sent = self
            .client
            .post(url)
            .query(&[("component_access_token", token.expose())])
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|_| ProviderError::Upstream("API unreachable".into()))?;
        let answer: Value = sent
            .bytes()
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ProviderError::Upstream("the answer is not JSON".into()))?;
        match answer["errcode"].as_i64().unwrap_or(0) {
            0 => Ok(answer),
            errcode => Err(ProviderError::Upstream(format!(
                "{errcode} {}",
                answer["errmsg"].as_str().unwrap_or("")
            ))),
        }
    }
}
