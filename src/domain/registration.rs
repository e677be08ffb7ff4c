//! What a puppet registers, and what the store keeps about it.

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::clock::UnixMillis;

use super::{CorpId, EncodingAesKey, EndpointUrl, FieldError, KfId, Secret};

/// The token and EncodingAESKey a corp's callbacks are signed and encrypted
/// with. A corp may have several (one per app).
#[derive(Clone, Debug)]
pub struct CredentialSet {
    pub token: Secret,
    pub key: EncodingAesKey,
}

impl CredentialSet {
    /// Validate a presented token and EncodingAESKey (registration, rotation).
    pub fn parse(token: Option<&str>, key: Option<&str>) -> Result<Self, FieldError> {
        let token = bounded_secret(required_str(token, "token")?, "token", 128)?;
        let key = EncodingAesKey::parse(required_str(key, "encodingAESKey")?).map_err(|_| {
            FieldError::new("encodingAESKey", "must be 43 characters of [A-Za-z0-9]")
        })?;
        Ok(Self { token, key })
    }
    /// Constant-time comparison of both parts.
    pub fn same_as(&self, other: &CredentialSet) -> bool {
        let keys_equal: bool = self
            .key
            .expose()
            .as_bytes()
            .ct_eq(other.key.expose().as_bytes())
            .into();
        self.token.ct_eq(&other.token) & keys_equal
    }
}

/// A validated registration request.
#[derive(Clone, Debug)]
pub struct Registration {
    pub kf_id: KfId,
    pub kf_name: String,
    pub endpoint: EndpointUrl,
    pub corp_id: CorpId,
    pub corp_secret: Secret,
    pub credentials: CredentialSet,
}

/// A registration as stored, with its presence.
#[derive(Clone, Debug)]
pub struct Puppet {
    pub registration: Registration,
    pub online: bool,
    /// Unix milliseconds of the last registration.
    pub last_online_at: Option<UnixMillis>,
    /// Unix milliseconds of the last deregistration, while offline.
    pub offline_since: Option<UnixMillis>,
}

// Every field is optional so that a missing one is reported by name; the
// schema attributes state the rules `Registration::try_from` applies.
/// Puppet registration (the old manager's body).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBody {
    #[schema(value_type = KfId, inline, required = true)]
    pub kf_id: Option<String>,
    #[schema(max_length = 256)]
    pub kf_name: Option<String>,
    #[schema(value_type = EndpointUrl, inline, required = true)]
    pub endpoint: Option<String>,
    #[schema(value_type = CorpId, inline, required = true)]
    pub corp_id: Option<String>,
    #[schema(value_type = String, required = true, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,256}$")]
    pub corp_secret: Option<String>,
    #[schema(value_type = String, required = true, pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,128}$")]
    pub token: Option<String>,
    #[serde(rename = "encodingAESKey")]
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9]{43}$")]
    pub encoding_aes_key: Option<String>,
}

fn required_str<'a>(value: Option<&'a str>, field: &'static str) -> Result<&'a str, FieldError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(FieldError::new(field, "missing"))
}

fn required<'a>(value: &'a Option<String>, field: &'static str) -> Result<&'a str, FieldError> {
    match value.as_deref() {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(FieldError::new(field, "missing")),
    }
}

fn bounded_secret(value: &str, field: &'static str, max: usize) -> Result<Secret, FieldError> {
    // Characters, not bytes: the limit the OpenAPI document states.
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "too long or contains control characters",
        ));
    }
    Ok(Secret::new(value))
}

impl TryFrom<RegisterBody> for Registration {
    type Error = FieldError;

    fn try_from(body: RegisterBody) -> Result<Self, FieldError> {
        let kf_id = KfId::parse(required(&body.kf_id, "kfId")?)?;
        let endpoint = EndpointUrl::parse(required(&body.endpoint, "endpoint")?)?;
        let corp_id = CorpId::parse(required(&body.corp_id, "corpId")?)?;
        let corp_secret = bounded_secret(
            required(&body.corp_secret, "corpSecret")?,
            "corpSecret",
            256,
        )?;
        let credentials =
            CredentialSet::parse(body.token.as_deref(), body.encoding_aes_key.as_deref())?;
        let kf_name = body.kf_name.unwrap_or_default();
        if kf_name.chars().count() > 256 {
            return Err(FieldError::new("kfName", "longer than 256 characters"));
        }
        Ok(Self {
            kf_id,
            kf_name,
            endpoint,
            corp_id,
            corp_secret,
            credentials,
        })
    }
}
