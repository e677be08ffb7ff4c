//! Which pushes a subscription takes (API.md §6.3): a filter on `MsgType`,
//! `Event` and `ChangeType`. A field that is present and non-empty restricts
//! that field of the message to the listed values (exact, case-sensitive);
//! an absent or empty one matches anything; all present fields must match.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::clock::UnixMillis;

use super::{EndpointUrl, FieldError, SubscriptionId};

/// At most this many values per field, each at most this long: a filter is
/// a short list of WeChat's names, not a place to store data.
pub const MAX_VALUES: usize = 64;
pub const MAX_VALUE_LEN: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FilterValue>, inline, max_items = 64)]
    pub msg_type: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FilterValue>, inline, max_items = 64)]
    pub event: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FilterValue>, inline, max_items = 64)]
    pub change_type: Vec<String>,
}

impl SubscriptionFilter {
    /// The fields of the message each part of the filter reads.
    fn parts(&self) -> [(&'static str, &[String]); 3] {
        [
            ("MsgType", &self.msg_type),
            ("Event", &self.event),
            ("ChangeType", &self.change_type),
        ]
    }

    /// `Err` names the field that is out of bounds (for a 400).
    pub fn validate(&self) -> Result<(), String> {
        for (name, values) in [
            ("filter.msgType", &self.msg_type),
            ("filter.event", &self.event),
            ("filter.changeType", &self.change_type),
        ] {
            if values.len() > MAX_VALUES {
                return Err(format!("{name}: at most {MAX_VALUES} values"));
            }
            if values.iter().any(|v| {
                v.is_empty() || v.chars().count() > MAX_VALUE_LEN || v.chars().any(char::is_control)
            }) {
                return Err(format!(
                    "{name}: each value 1 to {MAX_VALUE_LEN} characters, no control characters"
                ));
            }
        }
        Ok(())
    }

    /// Whether a message (as `wecom::xml_message` or `json_message` gives
    /// it) passes the filter.
    pub fn matches(&self, message: &Map<String, Value>) -> bool {
        self.parts().into_iter().all(|(field, allowed)| {
            allowed.is_empty()
                || message
                    .get(field)
                    .and_then(Value::as_str)
                    .is_some_and(|v| allowed.iter().any(|a| a == v))
        })
    }
}

/// A subscription's signing secret: 32 random bytes, shown once as
/// `whsec_` + base64.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

const PREFIX: &str = "whsec_";

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// `whsec_…` as shown to the operator (and as stored, sealed).
    pub fn parse(text: &str) -> Option<Self> {
        let key = B64.decode(text.strip_prefix(PREFIX)?).ok()?;
        (!key.is_empty()).then_some(Self(key))
    }

    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", B64.encode(&self.0))
    }

    /// `webhook-signature`: `v1,` + base64 HMAC-SHA256 over
    /// `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

/// The most a description holds.
pub const MAX_DESCRIPTION: usize = 256;

/// Where pushes of one source go (API.md §6.3).
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: SubscriptionId,
    /// An appId or corpId (need not be known yet).
    pub source: String,
    pub endpoint: EndpointUrl,
    pub filter: SubscriptionFilter,
    pub description: String,
    pub secret: WebhookSecret,
    pub created_at: UnixMillis,
}

/// The body of `POST /admin/api/subscriptions` (§6.3).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionBody {
    // An appId or corpId (need not be known yet); the id rule is the same.
    #[schema(value_type = super::CorpId, inline, required = true)]
    pub source: Option<String>,
    // Where pushes go, by the rules of a puppet's endpoint.
    #[schema(value_type = EndpointUrl, inline, required = true)]
    pub endpoint: Option<String>,
    pub filter: Option<SubscriptionFilter>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    pub description: Option<String>,
}

/// The body of a subscription's PATCH: the fields present change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionPatch {
    /// A source cannot change (400 naming it), so the document leaves it out.
    #[schema(ignore)]
    pub source: Option<String>,
    /// `null`, like a missing field, leaves the endpoint as it is.
    #[schema(value_type = EndpointUrl, inline, required = false, nullable)]
    pub endpoint: Option<String>,
    pub filter: Option<SubscriptionFilter>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    pub description: Option<String>,
}

impl From<SubscriptionPatch> for SubscriptionBody {
    fn from(patch: SubscriptionPatch) -> Self {
        Self {
            source: patch.source,
            endpoint: patch.endpoint,
            filter: patch.filter,
            description: patch.description,
        }
    }
}

/// One value of a subscription filter: a WeChat name such as `subscribe`.
/// Only the OpenAPI document uses it (the check is `SubscriptionFilter::validate`).
pub struct FilterValue;

impl utoipa::PartialSchema for FilterValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]{1,64}$"))
            .into()
    }
}

impl utoipa::ToSchema for FilterValue {}

impl Subscription {
    /// A new subscription with a fresh id and secret.
    pub fn create(body: SubscriptionBody, now: UnixMillis) -> Result<Self, FieldError> {
        let source = match body.source.as_deref() {
            None | Some("") => return Err(FieldError::new("source", "missing")),
            Some(s) => super::CorpId::parse(s)
                .map_err(|_| {
                    FieldError::new("source", "must be 1 to 64 characters of [A-Za-z0-9_-]")
                })?
                .as_str()
                .to_owned(),
        };
        let mut created = Self {
            id: SubscriptionId::generate(),
            source,
            endpoint: parse_endpoint(body.endpoint.as_deref())?,
            filter: SubscriptionFilter::default(),
            description: String::new(),
            secret: WebhookSecret::generate(),
            created_at: now,
        };
        created.apply(SubscriptionBody {
            source: None,
            endpoint: None,
            ..body
        })?;
        Ok(created)
    }

    /// A PATCH: the fields present change (`source` cannot).
    pub fn apply(&mut self, body: SubscriptionBody) -> Result<(), FieldError> {
        if body.source.is_some() {
            return Err(FieldError::new(
                "source",
                "cannot change; create another subscription",
            ));
        }
        if body.endpoint.is_some() {
            self.endpoint = parse_endpoint(body.endpoint.as_deref())?;
        }
        if let Some(filter) = body.filter {
            filter.validate().map_err(|_| {
                FieldError::new(
                    "filter",
                    "at most 64 values per field, each 1 to 64 characters",
                )
            })?;
            self.filter = filter;
        }
        if let Some(description) = body.description {
            if description.chars().count() > MAX_DESCRIPTION
                || description.chars().any(char::is_control)
            {
                return Err(FieldError::new(
                    "description",
                    "longer than 256 characters or has control characters",
                ));
            }
            self.description = description;
        }
        Ok(())
    }
}

fn parse_endpoint(endpoint: Option<&str>) -> Result<EndpointUrl, FieldError> {
    match endpoint {
        None | Some("") => Err(FieldError::new("endpoint", "missing")),
        Some(e) => EndpointUrl::parse(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    fn filter(json: &str) -> SubscriptionFilter {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn absent_fields_match_anything_and_present_ones_must_all_match() {
        let follow = message(r#"{"MsgType":"event","Event":"subscribe"}"#);
        let text = message(r#"{"MsgType":"text","Content":"hi"}"#);
        let contact = message(
            r#"{"MsgType":"event","Event":"change_external_contact","ChangeType":"add_external_contact"}"#,
        );
        let everything = filter("{}");
        let follows = filter(r#"{"event":["subscribe","unsubscribe"]}"#);
        let events_only = filter(r#"{"msgType":["event"]}"#);
        let new_contacts = filter(r#"{"msgType":["event"],"changeType":["add_external_contact"]}"#);
        for m in [&follow, &text, &contact] {
            assert!(everything.matches(m));
        }
        assert!(follows.matches(&follow));
        assert!(!follows.matches(&text), "no Event field: no match");
        assert!(events_only.matches(&follow) && events_only.matches(&contact));
        assert!(!events_only.matches(&text));
        assert!(new_contacts.matches(&contact));
        assert!(!new_contacts.matches(&follow), "both fields must match");
        assert!(
            !filter(r#"{"event":["Subscribe"]}"#).matches(&follow),
            "case-sensitive"
        );
        assert!(
            filter(r#"{"event":[]}"#).matches(&text),
            "empty is no filter"
        );
    }

    #[test]
    fn unknown_fields_and_oversized_lists_are_refused() {
        assert!(serde_json::from_str::<SubscriptionFilter>(r#"{"msgtype":["x"]}"#).is_err());
        let long = SubscriptionFilter {
            event: vec!["x".repeat(65)],
            ..Default::default()
        };
        assert_eq!(
            long.validate(),
            Err("filter.event: each value 1 to 64 characters, no control characters".into())
        );
        let control = SubscriptionFilter {
            change_type: vec!["a\u{0}b".into()],
            ..Default::default()
        };
        assert!(control.validate().is_err(), "control characters");
        let many = SubscriptionFilter {
            msg_type: vec!["x".into(); 65],
            ..Default::default()
        };
        assert!(many.validate().unwrap_err().starts_with("filter.msgType"));
        assert!(filter(r#"{"changeType":["add_external_contact"]}"#)
            .validate()
            .is_ok());
    }
}
