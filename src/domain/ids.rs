//! Identifiers and endpoints.

use std::fmt;

use super::FieldError;

const ID_RULE: &str = "must be 1 to 64 characters of [A-Za-z0-9_-]";

/// The id rule as a regular expression, written once for `valid_id`'s
/// tests, the OpenAPI document's ids and its optional id filters.
macro_rules! id_regex {
    () => {
        "[A-Za-z0-9_-]{1,64}"
    };
}

/// An id of the contract (corpId, kfId, appId, a subscription's source).
pub const ID_PATTERN: &str = concat!("^", id_regex!(), "$");

/// An optional id in a query filter: an id, or empty for no filter.
pub const ID_FILTER_PATTERN: &str = concat!("^(", id_regex!(), ")?$");

/// The OpenAPI schema of an id: a string with `pattern`, described.
fn id_schema(
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! id_type {
    ($name:ident, $field:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, FieldError> {
                if valid_id(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(FieldError::new($field, ID_RULE))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema(ID_PATTERN, $doc)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    CorpId,
    "corpId",
    "A WeCom corp id (`ww…`), also the receiveid of its callbacks."
);
id_type!(
    AppId,
    "appId",
    "An Official Account's or Mini Program's AppID (`wx…`), the receiveid of its pushes."
);
id_type!(
    SuiteId,
    "suiteId",
    "A WeCom third-party suite's id (`ww…` or `dk…`), the receiveid of its command pushes."
);
id_type!(
    KfId,
    "kfId",
    "A customer-service account id (`OpenKfId`, `wk…`)."
);

/// Ids the manager makes itself (events, deliveries, subscriptions, claims):
/// a time-ordered UUID when made, then carried as they are. What a store
/// gives back is wrapped, never parsed again; an id from a request path is
/// only ever looked up (unknown: 404).
macro_rules! made_id {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new id, ordered by the time it was made.
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// As a store holds it, or as a request names it.
        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

made_id!(
    EventId,
    "An accepted push, stored once for all of its deliveries."
);
made_id!(
    DeliveryId,
    "One target's delivery of an event (`X-Wxkf-Delivery-Id`, `webhook-id`)."
);
made_id!(SubscriptionId, "A subscription (§6.3).");
made_id!(
    ClaimId,
    "One claim of a delivery: an outcome is recorded only under the claim it was sent under."
);

/// An optional id filter of a listing (`?kfId=`, `?corpId=`, `?source=`):
/// an id, or empty for no filter. Only the OpenAPI document uses it.
pub struct IdFilter;

impl utoipa::PartialSchema for IdFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        id_schema(
            ID_FILTER_PATTERN,
            "An id to filter by, or empty for no filter.",
        )
    }
}

impl utoipa::ToSchema for IdFilter {}

/// Where a puppet receives deliveries: an http(s) URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(url::Url);

impl EndpointUrl {
    pub const MAX_LEN: usize = 2048;

    /// An endpoint a client sends (a registration, a move, a subscription):
    /// the stored rules, and a named host written as the document states it.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let endpoint = Self::from_stored(s)?;
        // A named host must be written as the document's pattern says (which
        // also keeps out what no resolver answers for, such as `*`); an IP
        // address is for the endpoint policy to judge.
        if matches!(endpoint.0.host(), Some(url::Host::Domain(_))) && !named_endpoint().is_match(s)
        {
            return Err(FieldError::new(
                "endpoint",
                "not an http(s) URL with a DNS name or an IP address as its host",
            ));
        }
        Ok(endpoint)
    }

    /// An endpoint a store holds, written by this or an earlier release (or
    /// the old manager): an http(s) URL with a host and no credentials. Not
    /// held to the pattern clients are, which came later.
    pub fn from_stored(s: &str) -> Result<Self, FieldError> {
        const FIELD: &str = "endpoint";
        if s.len() > Self::MAX_LEN {
            return Err(FieldError::new(FIELD, "longer than 2048 characters"));
        }
        let url = url::Url::parse(s).map_err(|_| FieldError::new(FIELD, "not an http(s) URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(FieldError::new(FIELD, "not an http(s) URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FieldError::new(FIELD, "must not carry credentials"));
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// `{endpoint}/{suffix}`, whether or not the endpoint ends with a slash.
    pub fn join(&self, suffix: &str) -> String {
        let base = self.0.as_str().trim_end_matches('/');
        format!("{base}/{suffix}")
    }
}

/// An endpoint whose host is a name, as both the OpenAPI document and
/// `EndpointUrl::parse` state it: http(s); DNS labels of letters, digits,
/// `_` and `-`, the last one starting with a letter or `_` (else the URL
/// standard reads the host as an IPv4 address); a port from 1 to 65535;
/// path and query of the characters RFC 3986 allows there, `%` only before
/// two hex digits; no credentials, no fragment.
pub const NAMED_ENDPOINT_PATTERN: &str = concat!(
    r"^https?://",
    r"([A-Za-z0-9_][A-Za-z0-9_-]{0,62}\.)*[A-Za-z_][A-Za-z0-9_-]{0,62}",
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    r"(/([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*",
    r"(\?([A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$",
);

fn named_endpoint() -> &'static regex_lite::Regex {
    static PATTERN: std::sync::LazyLock<regex_lite::Regex> = std::sync::LazyLock::new(|| {
        regex_lite::Regex::new(NAMED_ENDPOINT_PATTERN).expect("the endpoint pattern compiles")
    });
    &PATTERN
}

/// The document states the named form's pattern; IP-address hosts (which
/// the endpoint policy judges, `ENDPOINT_ALLOW` included) are described in
/// words, since a pattern cannot say which addresses a configuration allows.
impl utoipa::PartialSchema for EndpointUrl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(Self::MAX_LEN))
            .pattern(Some(NAMED_ENDPOINT_PATTERN))
            .description(Some(
                "Where deliveries go: an http(s) URL whose host is a DNS name (this pattern) or an IP \
                 address (http://10.0.0.5:8788, http://[fd00::1]/), without credentials; not a \
                 link-local, cloud-metadata or unspecified address unless ENDPOINT_ALLOW names it",
            ))
            .into()
    }
}

impl utoipa::ToSchema for EndpointUrl {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_charset_and_length_rule() {
        assert!(KfId::parse("wkAbC-_09").is_ok());
        assert!(KfId::parse("").is_err());
        assert!(KfId::parse(&"a".repeat(65)).is_err());
        assert!(CorpId::parse("ww 1").is_err());
        assert_eq!(CorpId::parse("ww/../x").unwrap_err().field, "corpId");
    }

    /// The check and the document's pattern are one rule: every string of a
    /// small alphabet around the rule's edges is valid exactly when the
    /// pattern matches it.
    #[test]
    fn the_id_check_and_the_documented_pattern_agree() {
        let pattern = regex_lite::Regex::new(ID_PATTERN).unwrap();
        let alphabet = ["a", "Z", "0", "_", "-", ".", " ", "*", "é", "/"];
        for len in [0, 1, 2, 63, 64, 65] {
            for (i, first) in alphabet.iter().enumerate() {
                for last in &alphabet[i..] {
                    let s = match len {
                        0 => String::new(),
                        1 => first.to_string(),
                        n => format!("{first}{}{last}", "k".repeat(n - 2)),
                    };
                    assert_eq!(valid_id(&s), pattern.is_match(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn endpoints_are_http_urls_with_a_host() {
        let e = EndpointUrl::parse("http://10.0.0.5:8080/").unwrap();
        assert_eq!(e.join("callback"), "http://10.0.0.5:8080/callback");
        assert_eq!(
            EndpointUrl::parse("https://bot.example/x")
                .unwrap()
                .join("callback/decrypted"),
            "https://bot.example/x/callback/decrypted"
        );
        for good in [
            "http://127.0.0.1:8788",
            "http://[::1]:8788/",
            "http://[fd00::1]/",
            "http://localhost:8788/",
            "http://puppet_1:8788",
            "https://BOT.internal/x",
            "https://bot.example/x/*?a=1&b=%2F",
        ] {
            assert!(EndpointUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "https://p0n000b*",
            "http://a!b.example/",
            "http://bot.example/a b",
            "http://bot.example/%zz",
            "http://bot.example/#top",
            "http://bot.example:0/",
            "ftp://x",
            "http://",
            "not a url",
            "file:///etc/passwd",
            "http://u:p@h/",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
        // What an earlier release stored is still read: the pattern binds
        // what clients send, not what the store holds.
        let stored = EndpointUrl::from_stored("https://p0n000b*/").unwrap();
        assert_eq!(stored.join("callback"), "https://p0n000b*/callback");
        let long = format!("http://h/{}", "a".repeat(2048));
        assert!(EndpointUrl::parse(&long).is_err());
    }
}
