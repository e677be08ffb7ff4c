//! Domain newtypes, parsed once at the boundary. Inside the service functions
//! take these types, never raw strings.

mod allow;
mod app;
mod endpoint_policy;
mod ids;
mod provider;
mod registration;
mod secret;
mod subscription;

pub use crate::wecom::EncodingAesKey;
pub use allow::EndpointAllow;
pub use app::{App, AppBody, AppKey, AppKind, KEY_PREFIX};
pub use endpoint_policy::{EndpointPolicy, EndpointRefusal};
pub use ids::{
    AppId, ClaimId, CorpId, DeliveryId, EndpointUrl, EventId, IdFilter, KfId, SubscriptionId,
    SuiteId, ID_FILTER_PATTERN, ID_PATTERN, NAMED_ENDPOINT_PATTERN,
};
pub use provider::{
    Component, ComponentBody, Grant, GrantStatus, Provider, Suite, SuiteBody, Ticket,
};
pub use registration::{CredentialSet, Puppet, RegisterBody, Registration};
pub use secret::Secret;
pub use subscription::{
    FilterValue, Subscription, SubscriptionBody, SubscriptionFilter, SubscriptionPatch,
    WebhookSecret,
};

/// An input field that failed validation: `"{field}: {reason}"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: &'static str,
}

impl FieldError {
    pub fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }
}
