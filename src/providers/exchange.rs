//! The exchange of an authorization code for a customer's grant, kept
//! sealed: a suite's `create_auth` or `reset_permanent_code` code for the
//! corp's permanent code, a component's `authorized` or `updateauthorized`
//! code for the account's refresh token (and a first access token).

use std::time::Duration;

use serde_json::Value;

use super::{ProviderService, Registered};
use crate::domain::{Component, CorpId, Grant, GrantStatus, Provider, Secret, Suite};
use crate::store::Providers;
use crate::tokens::{TokenAnswer, TokenSource};

/// An authorization code is single use and valid 10 minutes (WeCom's; a
/// component's lasts an hour, and is tried for the same 10 minutes).
pub const CODE_VALIDITY: Duration = Duration::from_secs(10 * 60);

/// Answers that mean "this provider token is no good": drop it and try
/// again with a new one.
const STALE_PROVIDER_TOKEN: [i64; 5] = [40001, 40014, 40082, 42001, 42009];

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchanged {
    /// The grant is kept: the customer's id and, for a corp, its name.
    Granted { customer: String, name: String },
    /// WeChat refused the code (used, expired, made up): trying again cannot help.
    Refused { error: String },
    /// Not now (no ticket yet, WeChat unreachable, a stale provider token).
    Retry { error: String },
}

impl Exchanged {
    fn retry(error: impl Into<String>) -> Self {
        Self::Retry {
            error: error.into(),
        }
    }
}

impl ProviderService {
    /// Exchange `code` for the customer's grant and keep it.
    pub async fn exchange(&self, provider: &Registered, code: &str) -> Exchanged {
        let outcome = match provider {
            Registered::Suite(suite) => self.exchange_suite_code(suite, code).await,
            Registered::Component(component) => self.exchange_component_code(component, code).await,
        };
        let label = match &outcome {
            Exchanged::Granted { .. } => "granted",
            Exchanged::Refused { .. } => "refused",
            Exchanged::Retry { .. } => "retry",
        };
        self.metrics.provider_exchange(label);
        outcome
    }

    /// POST `body` to `url` with the provider's token as `token_param`:
    /// WeChat's answer when it is not a complaint about that token.
    async fn call_with(
        &self,
        url: String,
        token_param: &str,
        token: TokenAnswer,
        body: Value,
    ) -> Result<Value, Exchanged> {
        let token = match token {
            TokenAnswer::Token { access_token, .. } => access_token,
            TokenAnswer::WecomError { errcode, errmsg } => {
                return Err(Exchanged::retry(format!(
                    "WeChat refused the provider's token: {errcode} {errmsg}"
                )))
            }
            TokenAnswer::Unavailable { errmsg } => return Err(Exchanged::retry(errmsg)),
        };
        let sent = self
            .client
            .post(url)
            .query(&[(token_param, token.expose())])
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        let answer: Value = match sent {
            Ok(resp) => match resp.bytes().await.map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(v)) => v,
                _ => return Err(Exchanged::retry("WeChat's answer is not JSON")),
            },
            Err(_) => return Err(Exchanged::retry("WeChat's API unreachable")),
        };
        let errcode = answer["errcode"].as_i64().unwrap_or(0);
        let errmsg = answer["errmsg"].as_str().unwrap_or("");
        if STALE_PROVIDER_TOKEN.contains(&errcode) {
            if let Err(e) = self.invalidate(token.expose()).await {
                tracing::warn!(error = %e, "could not drop a stale provider token");
            }
            return Err(Exchanged::retry(format!(
                "WeChat refused the provider's token: {errcode} {errmsg}"
            )));
        }
        match errcode {
            0 => Ok(answer),
            -1 => Err(Exchanged::retry(format!("WeChat is busy: {errmsg}"))),
            _ => Err(refused(&answer)),
        }
    }

    async fn exchange_suite_code(&self, suite: &Suite, auth_code: &str) -> Exchanged {
        let token = match self.suite_token(suite).await {
            Ok(token) => token,
            Err(e) => return Exchanged::retry(e.to_string()),
        };
        let url = format!(
            "{}/cgi-bin/service/v2/get_permanent_code",
            self.wecom_api_base
        );
        let body = serde_json::json!({ "auth_code": auth_code });
        let answer = match self.call_with(url, "suite_access_token", token, body).await {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        let code = answer["permanent_code"].as_str().filter(|c| !c.is_empty());
        let corp = answer["auth_corp_info"]["corpid"]
            .as_str()
            .and_then(|c| CorpId::parse(c).ok());
        let (Some(code), Some(corp)) = (code, corp) else {
            return refused(&answer);
        };
        let name = answer["auth_corp_info"]["corp_name"]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect::<String>();
        self.granted(&suite.provider(), corp.as_str(), name, code)
            .await
    }

    async fn exchange_component_code(&self, component: &Component, code: &str) -> Exchanged {
        let token = match self.component_token(component).await {
            Ok(token) => token,
            Err(e) => return Exchanged::retry(e.to_string()),
        };
        let url = format!("{}/cgi-bin/component/api_query_auth", self.wechat_api_base);
        let body = serde_json::json!({
            "component_appid": component.app_id.as_str(), "authorization_code": code,
        });
        let answer = match self
            .call_with(url, "component_access_token", token, body)
            .await
        {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        let info = &answer["authorization_info"];
        let appid = info["authorizer_appid"]
            .as_str()
            .and_then(|a| crate::domain::AppId::parse(a).ok());
        let refresh = info["authorizer_refresh_token"]
            .as_str()
            .filter(|r| !r.is_empty());
        let (Some(appid), Some(refresh)) = (appid, refresh) else {
            return refused(&answer);
        };
        let outcome = self
            .granted(
                &component.provider(),
                appid.as_str(),
                String::new(),
                refresh,
            )
            .await;
        // The exchange's own access token replaces any older one (a new
        // authorization makes the old token "not latest").
        if let (Exchanged::Granted { .. }, Some(token)) = (
            &outcome,
            info["authorizer_access_token"]
                .as_str()
                .filter(|t| !t.is_empty()),
        ) {
            let source = TokenSource::Authorizer {
                component_appid: component.app_id.as_str(),
                appid: appid.as_str(),
                refresh_token: refresh,
                component_token: "",
                rotated: None,
            };
            let expires_in = info["expires_in"].as_i64().unwrap_or(7200);
            if let Err(e) = self
                .tokens
                .seed(source, Secret::new(token), expires_in)
                .await
            {
                tracing::warn!(error = %e, "could not cache an authorization's access token");
            }
        }
        outcome
    }

    /// Keep the grant an exchange gave.
    async fn granted(
        &self,
        provider: &Provider,
        customer: &str,
        name: String,
        code: &str,
    ) -> Exchanged {
        let grant = Grant {
            customer: customer.to_owned(),
            name: name.clone(),
            status: GrantStatus::Authorized,
            code: Some(Secret::new(code)),
            authorized_at: self.clock.now(),
            cancelled_at: None,
        };
        if !self.keep_grant(provider, &grant).await {
            return Exchanged::Refused {
                error: "exchanged, but the store did not keep the grant: the customer must authorize again".into(),
            };
        }
        Exchanged::Granted {
            customer: customer.to_owned(),
            name,
        }
    }

    /// A code is spent once exchanged: the grant it gave must be kept, so the
    /// write is tried again for a while rather than given up.
    pub(super) async fn keep_grant(&self, provider: &Provider, grant: &Grant) -> bool {
        let scope = provider.scope();
        for attempt in 0..20u32 {
            match self
                .store
                .put_grant(provider, grant, self.clock.now())
                .await
            {
                Ok(()) => {
                    tracing::info!(provider = %scope, customer = %grant.customer, "authorized by a customer: grant kept");
                    return true;
                }
                Err(e) => {
                    tracing::error!(provider = %scope, customer = %grant.customer, attempt, error = %e, "could not keep a customer's grant; trying again");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
                }
            }
        }
        false
    }
}

/// WeChat answered, but not with a grant: the code is no good.
fn refused(answer: &Value) -> Exchanged {
    Exchanged::Refused {
        error: format!(
            "WeChat refused the authorization code: {} {}",
            answer["errcode"].as_i64().unwrap_or(0),
            answer["errmsg"].as_str().unwrap_or("")
        ),
    }
}
