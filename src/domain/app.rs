//! Official Accounts and Mini Programs as operators register them (API.md
//! §6.1): parsed once from the admin body; secrets are `Secret`s and never
//! part of what an answer shows.

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;

use super::{AppId, EncodingAesKey, FieldError, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    OfficialAccount,
    MiniProgram,
    /// A shop (微信小店, §7.3): JSON and safe mode only.
    Store,
}

impl AppKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OfficialAccount => "official_account",
            Self::MiniProgram => "mini_program",
            Self::Store => "store",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "official_account" => Some(Self::OfficialAccount),
            "mini_program" => Some(Self::MiniProgram),
            "store" => Some(Self::Store),
            _ => None,
        }
    }
}

/// An Official Account or Mini Program (§6.1). Secrets are never shown back.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppBody {
    #[schema(value_type = AppKind, required = true)]
    pub kind: Option<String>,
    /// The push signature token (WeChat's rule).
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9]{3,32}$")]
    pub token: Option<String>,
    /// Needed for safe and compatible mode; empty: none.
    #[serde(rename = "encodingAESKey")]
    #[schema(pattern = r"^([A-Za-z0-9]{43})?$")]
    pub encoding_aes_key: Option<String>,
    /// Enables access tokens and the API proxy (§6.4); empty: none.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,128}$")]
    pub app_secret: Option<String>,
    /// Refuse plaintext pushes (403).
    pub require_encryption: Option<bool>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    pub name: Option<String>,
}

/// A registered app, validated.
#[derive(Debug, Clone)]
pub struct App {
    pub app_id: AppId,
    pub kind: AppKind,
    pub name: String,
    /// The push signature token: 3 to 32 of `[A-Za-z0-9]` (WeChat's rule).
    pub token: Secret,
    /// For safe and compatible mode.
    pub key: Option<EncodingAesKey>,
    /// For access tokens and the API proxy (§6.4).
    pub app_secret: Option<Secret>,
    /// Plaintext pushes are refused (403).
    pub require_encryption: bool,
}

impl App {
    pub fn parse(app_id: AppId, body: AppBody) -> Result<Self, FieldError> {
        let kind = match body.kind.as_deref() {
            None | Some("") => return Err(FieldError::new("kind", "missing")),
            Some(k) => AppKind::parse(k).ok_or(FieldError::new(
                "kind",
                "must be official_account, mini_program or store",
            ))?,
        };
        let token = push_token(body.token.as_deref())?;
        let key = match body.encoding_aes_key.as_deref() {
            None | Some("") => None,
            Some(k) => Some(aes_key(k)?),
        };
        let app_secret = match body.app_secret.as_deref() {
            None | Some("") => None,
            Some(s) => Some(api_secret("appSecret", s)?),
        };
        // Without a key as well, every push is refused until one is added
        // (plaintext 403, encrypted 400); the view shows `encryption: false`.
        // A shop pushes in safe mode only: a plaintext push is refused.
        let require_encryption = body.require_encryption.unwrap_or(false) || kind == AppKind::Store;
        let name = display_name(body.name)?;
        Ok(Self {
            app_id,
            kind,
            name,
            token,
            key,
            app_secret,
            require_encryption,
        })
    }
}

/// A push signature token: 3 to 32 of `[A-Za-z0-9]` (WeChat's and WeCom's rule).
pub(super) fn push_token(value: Option<&str>) -> Result<Secret, FieldError> {
    match value {
        Some(t) if (3..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(Secret::new(t))
        }
        None | Some("") => Err(FieldError::new("token", "missing")),
        Some(_) => Err(FieldError::new(
            "token",
            "must be 3 to 32 characters of [A-Za-z0-9]",
        )),
    }
}

/// An EncodingAESKey as an operator gives it.
pub(super) fn aes_key(value: &str) -> Result<EncodingAesKey, FieldError> {
    EncodingAesKey::parse(value)
        .map_err(|_| FieldError::new("encodingAESKey", "must be 43 characters of [A-Za-z0-9]"))
}

/// An API secret (AppSecret, suite secret): up to 128 characters, none a
/// control character.
pub(super) fn api_secret(field: &'static str, value: &str) -> Result<Secret, FieldError> {
    if value.chars().count() <= 128 && !value.chars().any(char::is_control) {
        Ok(Secret::new(value))
    } else {
        Err(FieldError::new(
            field,
            "too long or contains control characters",
        ))
    }
}

/// A display name: up to 256 characters, none a control character.
pub(super) fn display_name(value: Option<String>) -> Result<String, FieldError> {
    let name = value.unwrap_or_default();
    if name.chars().count() > 256 || name.chars().any(char::is_control) {
        return Err(FieldError::new(
            "name",
            "longer than 256 characters or has control characters",
        ));
    }
    Ok(name)
}

/// A key an operator issued for one app (§6.4) or provider (§7): shown
/// once as `wxk_` + base64url of 32 random bytes, kept only as its SHA-256.
#[derive(Debug, Clone)]
pub struct AppKey {
    pub id: String,
    /// The appId, or the provider's scope (`suite/{suiteId}`): app ids hold
    /// no `/`, so the two never meet.
    pub owner: String,
    /// SHA-256 of the key, hex.
    pub hash: String,
    pub description: String,
    pub created_at: UnixMillis,
}

/// How every key an operator issues begins.
pub const KEY_PREFIX: &str = "wxk_";

fn digest(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

impl AppKey {
    /// A new key: the record to keep, and the key to show once.
    pub fn issue(
        owner: String,
        description: Option<String>,
        now: UnixMillis,
    ) -> Result<(Self, Secret), FieldError> {
        use base64::Engine as _;
        use rand::RngCore;
        let description = description.unwrap_or_default();
        if description.chars().count() > 256 || description.chars().any(char::is_control) {
            return Err(FieldError::new(
                "description",
                "longer than 256 characters or has control characters",
            ));
        }
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let key = format!(
            "{KEY_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
        );
        let record = Self {
            id: uuid::Uuid::now_v7().to_string(),
            owner,
            hash: digest(&key),
            description,
            created_at: now,
        };
        Ok((record, Secret::new(key)))
    }

    /// Whether `presented` is this key (compared as digests, in constant time).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        digest(presented)
            .as_bytes()
            .ct_eq(self.hash.as_bytes())
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    fn body(json: &str) -> AppBody {
        serde_json::from_str(json).unwrap()
    }

    fn parse(json: &str) -> Result<App, FieldError> {
        App::parse(AppId::parse("wx0123456789abcdef").unwrap(), body(json))
    }

    #[test]
    fn an_app_is_shown_without_its_secrets() {
        let app = parse(&format!(
            r#"{{"kind":"official_account","token":"Tok3n","encodingAESKey":"{KEY}","appSecret":"s3cr3t-app","name":"Shop"}}"#
        ))
        .unwrap();
        let shown = serde_json::to_string(&crate::views::AppView::from(&app)).unwrap();
        assert_eq!(
            shown,
            r#"{"appId":"wx0123456789abcdef","kind":"official_account","name":"Shop","encryption":true,"tokens":true,"requireEncryption":false}"#
        );
        for secret in ["Tok3n", KEY, "s3cr3t-app"] {
            assert!(!shown.contains(secret));
            assert!(!format!("{app:?}").contains(secret), "Debug shows {secret}");
        }
    }

    #[test]
    fn a_key_matches_only_itself_and_is_kept_as_a_digest() {
        let app = "wx0123456789abcdef".to_owned();
        let (key, shown) =
            AppKey::issue(app.clone(), Some("CRM".into()), UnixMillis::EPOCH).unwrap();
        assert!(shown.expose().starts_with("wxk_") && shown.expose().len() > 40);
        assert!(key.matches(shown.expose()));
        assert!(!key.hash.contains(shown.expose()));
        let (other, other_shown) = AppKey::issue(app, None, UnixMillis::EPOCH).unwrap();
        assert!(!key.matches(other_shown.expose()));
        assert!(!other.matches(shown.expose()));
        assert!(!key.matches(""));
    }

    #[test]
    fn each_field_is_checked_and_named() {
        let cases = [
            (r#"{"token":"abc"}"#, "kind"),
            (r#"{"kind":"game","token":"abc"}"#, "kind"),
            (r#"{"kind":"mini_program"}"#, "token"),
            (r#"{"kind":"mini_program","token":"ab"}"#, "token"),
            (r#"{"kind":"mini_program","token":"has space"}"#, "token"),
            (
                r#"{"kind":"mini_program","token":"abc","encodingAESKey":"short"}"#,
                "encodingAESKey",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(parse(json).unwrap_err().field, field, "{json}");
        }
        let plain = parse(r#"{"kind":"mini_program","token":"abc"}"#).unwrap();
        assert_eq!(
            {
                let shown = crate::views::AppView::from(&plain);
                (shown.encryption, shown.tokens)
            },
            (false, false)
        );
    }
}
