//! Identifiers and endpoints.

use std::fmt;

use super::FieldError;

const ID_RULE: &str = "must be 1 to 64 characters of [A-Za-z0-9_-]";

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
    KfId,
    "kfId",
    "A customer-service account id (`OpenKfId`, `wk…`)."
);

/// Where a puppet receives deliveries: an http(s) URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(url::Url);

impl EndpointUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
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
        for bad in [
            "ftp://x",
            "http://",
            "not a url",
            "file:///etc/passwd",
            "http://u:p@h/",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
        let long = format!("http://h/{}", "a".repeat(2048));
        assert!(EndpointUrl::parse(&long).is_err());
    }
}
