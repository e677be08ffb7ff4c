//! What answers and listings show of the stored things: the HTTP API and the
//! command line print the same views, and none of them holds a secret.

use serde::Serialize;

use crate::clock::UnixMillis;
use crate::domain::{
    App, AppKey, AppKind, Component, Grant, GrantStatus, Puppet, Subscription, SubscriptionFilter,
    Suite,
};

/// A registration as shown to puppets: the old manager's document fields
/// (`kfOpenId`, `name`, `botEndpoint`, ...) and the register names, never a
/// secret.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PuppetView {
    kf_id: String,
    kf_name: String,
    endpoint: String,
    kf_open_id: String,
    name: String,
    bot_endpoint: String,
    corp_id: String,
    online: bool,
    last_online_date: Option<String>,
    offline_since: Option<String>,
}

impl From<&Puppet> for PuppetView {
    fn from(p: &Puppet) -> Self {
        let r = &p.registration;
        Self {
            kf_id: r.kf_id.to_string(),
            kf_name: r.kf_name.clone(),
            endpoint: r.endpoint.as_str().to_owned(),
            kf_open_id: r.kf_id.to_string(),
            name: r.kf_name.clone(),
            bot_endpoint: r.endpoint.as_str().to_owned(),
            corp_id: r.corp_id.to_string(),
            online: p.online,
            last_online_date: p.last_online_at.map(UnixMillis::iso8601),
            offline_since: p.offline_since.map(UnixMillis::iso8601),
        }
    }
}

/// An app as operators see it (§6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub app_id: String,
    pub kind: AppKind,
    pub name: String,
    /// An EncodingAESKey is set (safe and compatible mode work).
    pub encryption: bool,
    /// An AppSecret is set (tokens and the API proxy work).
    pub tokens: bool,
    pub require_encryption: bool,
}

impl From<&App> for AppView {
    fn from(app: &App) -> Self {
        Self {
            app_id: app.app_id.as_str().to_owned(),
            kind: app.kind,
            name: app.name.clone(),
            encryption: app.key.is_some(),
            tokens: app.app_secret.is_some(),
            require_encryption: app.require_encryption,
        }
    }
}

/// A key as operators see it: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppKeyView {
    pub id: String,
    pub description: String,
    pub created_at: String,
}

impl From<&AppKey> for AppKeyView {
    fn from(key: &AppKey) -> Self {
        Self {
            id: key.id.clone(),
            description: key.description.clone(),
            created_at: key.created_at.iso8601(),
        }
    }
}

/// A subscription as operators see it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    pub id: String,
    pub source: String,
    pub endpoint: String,
    pub filter: SubscriptionFilter,
    pub description: String,
}

impl From<&Subscription> for SubscriptionView {
    fn from(s: &Subscription) -> Self {
        Self {
            id: s.id.to_string(),
            source: s.source.clone(),
            endpoint: s.endpoint.as_str().to_owned(),
            filter: s.filter.clone(),
            description: s.description.clone(),
        }
    }
}

/// A suite as operators see it (§7.1): never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuiteView {
    pub suite_id: String,
    pub provider_corp_id: String,
    pub name: String,
    /// When the newest ticket arrived; `None` until the first.
    pub ticket_received_at: Option<String>,
    /// How many corps hold a grant.
    pub corps: u64,
}

impl SuiteView {
    pub fn new(suite: &Suite, ticket_received_at: Option<UnixMillis>, corps: u64) -> Self {
        Self {
            suite_id: suite.suite_id.as_str().to_owned(),
            provider_corp_id: suite.provider_corp_id.as_str().to_owned(),
            name: suite.name.clone(),
            ticket_received_at: ticket_received_at.map(UnixMillis::iso8601),
            corps,
        }
    }
}

/// A component as operators see it (§7.2): never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentView {
    pub component_app_id: String,
    pub name: String,
    /// When the newest verify ticket arrived; `None` until the first.
    pub ticket_received_at: Option<String>,
    /// How many accounts hold a grant.
    pub authorizers: u64,
}

impl ComponentView {
    pub fn new(
        component: &Component,
        ticket_received_at: Option<UnixMillis>,
        authorizers: u64,
    ) -> Self {
        Self {
            component_app_id: component.app_id.as_str().to_owned(),
            name: component.name.clone(),
            ticket_received_at: ticket_received_at.map(UnixMillis::iso8601),
            authorizers,
        }
    }
}

/// An authorized account as operators see it: never its refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerView {
    pub app_id: String,
    /// `authorized` or `unauthorized`.
    pub status: &'static str,
    pub authorized_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unauthorized_at: Option<String>,
}

impl From<&Grant> for AuthorizerView {
    fn from(g: &Grant) -> Self {
        Self {
            app_id: g.customer.clone(),
            status: match g.status {
                GrantStatus::Authorized => "authorized",
                GrantStatus::Cancelled => "unauthorized",
            },
            authorized_at: g.authorized_at.iso8601(),
            unauthorized_at: g.cancelled_at.map(UnixMillis::iso8601),
        }
    }
}

/// A customer's grant as operators and key holders see it: never the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    pub corp_id: String,
    pub corp_name: String,
    pub status: GrantStatus,
    pub authorized_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<String>,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> Self {
        Self {
            corp_id: g.customer.clone(),
            corp_name: g.name.clone(),
            status: g.status,
            authorized_at: g.authorized_at.iso8601(),
            cancelled_at: g.cancelled_at.map(UnixMillis::iso8601),
        }
    }
}
