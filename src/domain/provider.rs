//! Service providers (API.md §7): a WeCom suite and an Open Platform
//! component as operators register them, the ticket WeChat pushes to each,
//! and the grant each customer hands over once. Secrets are `Secret`s and never part of what an answer shows.

use serde::Deserialize;

use crate::clock::UnixMillis;

use super::app::{aes_key, api_secret, display_name, push_token};
use super::{AppId, CorpId, CredentialSet, EncodingAesKey, FieldError, Secret, SuiteId};

/// Whose tickets, grants and keys: the scope every provider record is kept
/// under, so a suite and a component of the same id never mix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provider {
    Suite(SuiteId),
    Component(AppId),
}

impl Provider {
    /// `suite` or `component`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Suite(_) => "suite",
            Self::Component(_) => "component",
        }
    }

    /// The `source` its records are kept under: `suite/{suiteId}` or
    /// `component/{componentAppId}`.
    pub fn scope(&self) -> String {
        format!("{}/{}", self.kind(), self.id())
    }

    /// The provider a scope names, if it names one.
    pub fn of_scope(scope: &str) -> Option<Self> {
        let (kind, id) = scope.split_once('/')?;
        match kind {
            "suite" => SuiteId::parse(id).ok().map(Self::Suite),
            "component" => AppId::parse(id).ok().map(Self::Component),
            _ => None,
        }
    }

    /// The id its pushes are delivered under (the subscriptions' `source`).
    pub fn id(&self) -> &str {
        match self {
            Self::Suite(id) => id.as_str(),
            Self::Component(id) => id.as_str(),
        }
    }

    /// How long a ticket pushed to it stays usable (WeChat's documentation):
    /// a suite ticket 30 minutes, a component's verify ticket 12 hours.
    pub fn ticket_validity(&self) -> std::time::Duration {
        match self {
            Self::Suite(_) => std::time::Duration::from_secs(30 * 60),
            Self::Component(_) => std::time::Duration::from_secs(12 * 3600),
        }
    }
}

/// A suite as an operator registers it (§7.1).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuiteBody {
    /// The provider's own corpId: the receiveid of the URL checks.
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub provider_corp_id: Option<String>,
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9]{3,32}$")]
    pub token: Option<String>,
    #[serde(rename = "encodingAESKey")]
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9]{43}$")]
    pub encoding_aes_key: Option<String>,
    #[schema(value_type = String, required = true, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,128}$")]
    pub suite_secret: Option<String>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    pub name: Option<String>,
}

/// A provider's Token, EncodingAESKey and secret (named `secret.0`), all required.
fn provider_credentials(
    token: Option<&str>,
    key: Option<&str>,
    (secret_field, secret): (&'static str, Option<&str>),
) -> Result<(Secret, EncodingAesKey, Secret), FieldError> {
    let token = push_token(token)?;
    let key = match key {
        None | Some("") => return Err(FieldError::new("encodingAESKey", "missing")),
        Some(k) => aes_key(k)?,
    };
    let secret = match secret {
        None | Some("") => return Err(FieldError::new(secret_field, "missing")),
        Some(s) => api_secret(secret_field, s)?,
    };
    Ok((token, key, secret))
}

/// A registered suite, validated.
#[derive(Debug, Clone)]
pub struct Suite {
    pub suite_id: SuiteId,
    pub provider_corp_id: CorpId,
    pub token: Secret,
    pub key: EncodingAesKey,
    pub secret: Secret,
    pub name: String,
}

impl Suite {
    pub fn parse(suite_id: SuiteId, body: SuiteBody) -> Result<Self, FieldError> {
        let provider_corp_id = match body.provider_corp_id.as_deref() {
            None | Some("") => return Err(FieldError::new("providerCorpId", "missing")),
            Some(id) => {
                CorpId::parse(id).map_err(|e| FieldError::new("providerCorpId", e.reason))?
            }
        };
        let (token, key, secret) = provider_credentials(
            body.token.as_deref(),
            body.encoding_aes_key.as_deref(),
            ("suiteSecret", body.suite_secret.as_deref()),
        )?;
        Ok(Self {
            suite_id,
            provider_corp_id,
            token,
            key,
            secret,
            name: display_name(body.name)?,
        })
    }

    pub fn provider(&self) -> Provider {
        Provider::Suite(self.suite_id.clone())
    }

    /// Its Token and EncodingAESKey: every push to it, and every callback of
    /// its customers, is signed and sealed with these.
    pub fn credentials(&self) -> CredentialSet {
        CredentialSet {
            token: self.token.clone(),
            key: self.key.clone(),
        }
    }
}

/// An Open Platform component as an operator registers it (§7.2).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentBody {
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9]{3,32}$")]
    pub token: Option<String>,
    #[serde(rename = "encodingAESKey")]
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9]{43}$")]
    pub encoding_aes_key: Option<String>,
    #[schema(value_type = String, required = true, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,128}$")]
    pub app_secret: Option<String>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    pub name: Option<String>,
}

/// A registered component, validated.
#[derive(Debug, Clone)]
pub struct Component {
    pub app_id: AppId,
    pub token: Secret,
    pub key: EncodingAesKey,
    pub secret: Secret,
    pub name: String,
}

impl Component {
    pub fn parse(app_id: AppId, body: ComponentBody) -> Result<Self, FieldError> {
        let (token, key, secret) = provider_credentials(
            body.token.as_deref(),
            body.encoding_aes_key.as_deref(),
            ("appSecret", body.app_secret.as_deref()),
        )?;
        Ok(Self {
            app_id,
            token,
            key,
            secret,
            name: display_name(body.name)?,
        })
    }

    pub fn provider(&self) -> Provider {
        Provider::Component(self.app_id.clone())
    }
}

/// A ticket WeChat pushed to a provider: the newest (by the time WeChat
/// stamped on it) is the one used.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub value: Secret,
    /// WeChat's `TimeStamp` (a suite's) or `CreateTime` (a component's), in seconds.
    pub issued: i64,
    pub received_at: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    Authorized,
    Cancelled,
}

impl GrantStatus {
    /// As stored, and as a suite's corps list shows it; a component's
    /// authorizers list says `unauthorized` for `Cancelled` (§7.2).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Authorized => "authorized",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authorized" => Some(Self::Authorized),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// What a customer handed a provider: a corp's permanent code (suite) or
/// an account's refresh token (component). Kept after a cancellation
/// without the code, so operators see who left and when.
#[derive(Debug, Clone)]
pub struct Grant {
    /// A corpId (suite) or an authorizer's appId (component), both of the
    /// id rule.
    pub customer: String,
    pub name: String,
    pub status: GrantStatus,
    /// The permanent code or refresh token; `None` once cancelled.
    pub code: Option<Secret>,
    pub authorized_at: UnixMillis,
    pub cancelled_at: Option<UnixMillis>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn parse(json: &str) -> Result<Suite, FieldError> {
        Suite::parse(
            SuiteId::parse("ww0123456789abcdef").unwrap(),
            serde_json::from_str(json).unwrap(),
        )
    }

    #[test]
    fn each_field_of_a_suite_is_checked_and_named() {
        let good = format!(
            r#"{{"providerCorpId":"wwprovider","token":"Tok3n","encodingAESKey":"{KEY}","suiteSecret":"s3cret"}}"#
        );
        let suite = parse(&good).unwrap();
        assert_eq!(suite.provider_corp_id.as_str(), "wwprovider");
        assert!(!format!("{suite:?}").contains("s3cret"));
        let cases = [
            (
                good.replace(r#""providerCorpId":"wwprovider","#, ""),
                "providerCorpId",
            ),
            (good.replace("wwprovider", "has space"), "providerCorpId"),
            (good.replace("Tok3n", "t!"), "token"),
            (good.replace(KEY, "short"), "encodingAESKey"),
            (
                good.replace(&format!(r#""encodingAESKey":"{KEY}","#), ""),
                "encodingAESKey",
            ),
            (good.replace("s3cret", ""), "suiteSecret"),
            (good.replace("s3cret", "a\\u0001b"), "suiteSecret"),
        ];
        for (json, field) in cases {
            assert_eq!(parse(&json).unwrap_err().field, field, "{json}");
        }
    }
}
