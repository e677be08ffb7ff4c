//! The exchange of a suite's authorization code (`create_auth`,
//! `reset_permanent_code`) for the customer corp's permanent code, kept
//! sealed as the corp's grant.

use std::time::Duration;

use serde_json::Value;

use super::ProviderService;
use crate::domain::{CorpId, Grant, GrantStatus, Secret, Suite};
use crate::store::Providers;
use crate::tokens::TokenAnswer;

/// An authorization code is single use and valid 10 minutes (WeCom).
pub const CODE_VALIDITY: Duration = Duration::from_secs(10 * 60);

/// WeCom's answers that mean "this suite token is no good": drop it and
/// try again with a new one.
const STALE_SUITE_TOKEN: [i64; 5] = [40001, 40014, 40082, 42001, 42009];

/// How an exchange ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchanged {
    /// The grant is kept.
    Granted { corp: CorpId, name: String },
    /// WeCom refused the code (used, expired, made up): trying again cannot help.
    Refused { error: String },
    /// Not now (no ticket yet, WeCom unreachable, a stale suite token).
    Retry { error: String },
}

impl ProviderService {
    /// Exchange `auth_code` for the corp's permanent code and keep it.
    pub async fn exchange(&self, suite: &Suite, auth_code: &str) -> Exchanged {
        let outcome = self.exchange_once(suite, auth_code).await;
        let label = match &outcome {
            Exchanged::Granted { .. } => "granted",
            Exchanged::Refused { .. } => "refused",
            Exchanged::Retry { .. } => "retry",
        };
        self.metrics.provider_exchange(label);
        outcome
    }

    async fn exchange_once(&self, suite: &Suite, auth_code: &str) -> Exchanged {
        let suite_token = match self.suite_token(suite).await {
            Ok(TokenAnswer::Token { access_token, .. }) => access_token,
            Ok(TokenAnswer::WecomError { errcode, errmsg }) => {
                return Exchanged::Retry {
                    error: format!("WeCom refused the suite token: {errcode} {errmsg}"),
                }
            }
            Ok(TokenAnswer::Unavailable { errmsg }) => return Exchanged::Retry { error: errmsg },
            Err(e) => {
                return Exchanged::Retry {
                    error: e.to_string(),
                }
            }
        };
        let url = format!(
            "{}/cgi-bin/service/v2/get_permanent_code",
            self.wecom_api_base
        );
        let sent = self
            .client
            .post(url)
            .query(&[("suite_access_token", suite_token.expose())])
            .header("content-type", "application/json")
            .body(serde_json::json!({ "auth_code": auth_code }).to_string())
            .send()
            .await;
        let answer: Value = match sent {
            Ok(resp) => match resp.bytes().await.map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(v)) => v,
                _ => {
                    return Exchanged::Retry {
                        error: "WeCom's answer is not JSON".into(),
                    }
                }
            },
            Err(_) => {
                return Exchanged::Retry {
                    error: "WeCom API unreachable".into(),
                }
            }
        };
        let errcode = answer["errcode"].as_i64().unwrap_or(0);
        let errmsg = answer["errmsg"].as_str().unwrap_or("").to_owned();
        if STALE_SUITE_TOKEN.contains(&errcode) {
            if let Err(e) = self.invalidate(suite_token.expose()).await {
                tracing::warn!(error = %e, "could not drop a stale suite token");
            }
            return Exchanged::Retry {
                error: format!("WeCom refused the suite token: {errcode} {errmsg}"),
            };
        }
        if errcode == -1 {
            return Exchanged::Retry {
                error: format!("WeCom is busy: {errmsg}"),
            };
        }
        let code = answer["permanent_code"].as_str().filter(|c| !c.is_empty());
        let corp = answer["auth_corp_info"]["corpid"]
            .as_str()
            .and_then(|c| CorpId::parse(c).ok());
        let (Some(code), Some(corp), 0) = (code, corp, errcode) else {
            return Exchanged::Refused {
                error: format!("WeCom refused the authorization code: {errcode} {errmsg}"),
            };
        };
        let name = answer["auth_corp_info"]["corp_name"]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect::<String>();
        let grant = Grant {
            customer: corp.clone(),
            name: name.clone(),
            status: GrantStatus::Authorized,
            code: Some(Secret::new(code)),
            authorized_at: self.clock.now(),
            cancelled_at: None,
        };
        if !self.keep_grant(suite, &grant).await {
            return Exchanged::Refused {
                error:
                    "exchanged, but the store did not keep the grant: the corp must authorize again"
                        .into(),
            };
        }
        Exchanged::Granted { corp, name }
    }

    /// A code is spent once exchanged: the grant it gave must be kept, so the
    /// write is tried again for a while rather than given up.
    async fn keep_grant(&self, suite: &Suite, grant: &Grant) -> bool {
        for attempt in 0..20u32 {
            match self
                .store
                .put_grant(&suite.provider(), grant, self.clock.now())
                .await
            {
                Ok(()) => {
                    tracing::info!(suite_id = %suite.suite_id, corp_id = %grant.customer, "suite authorized by a corp: grant kept");
                    return true;
                }
                Err(e) => {
                    tracing::error!(suite_id = %suite.suite_id, corp_id = %grant.customer, attempt, error = %e, "could not keep a corp's grant; trying again");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt + 1))).await;
                }
            }
        }
        false
    }
}
