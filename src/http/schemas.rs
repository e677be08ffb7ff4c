//! Request bodies as the OpenAPI document describes them, with the same
//! constraints the handlers enforce (ids, keys, lengths), so that a request
//! the document allows is one the API accepts. The handlers parse into
//! their own types (every field optional, so a missing one is named).

use utoipa::ToSchema;

/// Puppet registration (the old manager's body).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct RegisterRequest {
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    kf_id: String,
    #[schema(max_length = 256)]
    kf_name: Option<String>,
    /// Where deliveries go: http(s), no credentials, not a link-local,
    /// cloud-metadata or unspecified address (unless `ENDPOINT_ALLOW` names it).
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[a-z][a-z0-9-]{0,30}(\.[a-z][a-z0-9-]{0,30}){0,3}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,30}){0,4}$"
    )]
    endpoint: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    corp_id: String,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,256}$")]
    corp_secret: String,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,128}$")]
    token: String,
    #[schema(rename = "encodingAESKey", pattern = r"^[A-Za-z0-9]{43}$")]
    encoding_aes_key: String,
}

/// Puppet deregistration; other fields (kfName) are ignored.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct DeregisterRequest {
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    kf_id: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    corp_id: String,
}

/// A callback a gateway already decrypted.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct DecryptedCallback {
    #[schema(min_length = 1, max_length = 512)]
    token: String,
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    open_kf_id: String,
}

/// An operator moves a kfId to another endpoint.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MoveRequest {
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[a-z][a-z0-9-]{0,30}(\.[a-z][a-z0-9-]{0,30}){0,3}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,30}){0,4}$"
    )]
    endpoint: String,
}

/// New callback credentials for a corp's puppets.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CredentialsRequest {
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,128}$")]
    token: String,
    #[schema(rename = "encodingAESKey", pattern = r"^[A-Za-z0-9]{43}$")]
    encoding_aes_key: String,
    /// Rotate only the puppets that use this token.
    #[schema(min_length = 1, max_length = 128)]
    previous_token: Option<String>,
}

/// WeCom's encrypted envelope: `<xml>` with the base64 ciphertext in
/// `Encrypt`, which the signature covers.
#[derive(ToSchema)]
#[schema(xml(name = "xml"))]
#[allow(dead_code)]
pub struct CallbackEnvelope {
    #[schema(rename = "ToUserName", pattern = r"^[A-Za-z0-9]{1,32}$")]
    to_user_name: String,
    #[schema(rename = "Encrypt", pattern = r"^[A-Za-z0-9+/]{4,400}$")]
    encrypt: String,
    #[schema(rename = "AgentID", pattern = r"^[0-9]{1,10}$")]
    agent_id: String,
}

/// An Official Account or Mini Program (§6.1). Secrets are never shown back.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AppRequest {
    kind: crate::domain::AppKind,
    /// The push signature token (WeChat's rule).
    #[schema(pattern = r"^[A-Za-z0-9]{3,32}$")]
    token: String,
    /// Needed for safe and compatible mode; empty: none.
    #[schema(rename = "encodingAESKey", pattern = r"^([A-Za-z0-9]{43})?$")]
    encoding_aes_key: Option<String>,
    /// Enables access tokens and the API proxy (§6.4); empty: none.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,128}$")]
    app_secret: Option<String>,
    /// Refuse plaintext pushes (403).
    require_encryption: Option<bool>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    name: Option<String>,
}

/// One value of a subscription filter: a WeChat name such as `subscribe`.
#[derive(ToSchema, serde::Deserialize)]
#[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{1,64}$")]
#[allow(dead_code)]
pub struct FilterValue(String);

/// Which pushes a subscription takes: each present, non-empty list
/// restricts that field of the message; all must match.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct FilterRequest {
    #[schema(max_items = 64, nullable = false)]
    msg_type: Option<Vec<FilterValue>>,
    #[schema(max_items = 64, nullable = false)]
    event: Option<Vec<FilterValue>>,
    #[schema(max_items = 64, nullable = false)]
    change_type: Option<Vec<FilterValue>>,
}

/// A new subscription (§6.3).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SubscriptionRequest {
    /// An appId or corpId (need not be known yet).
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    source: String,
    /// Where pushes go, by the rules of a puppet's endpoint.
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[a-z][a-z0-9-]{0,30}(\.[a-z][a-z0-9-]{0,30}){0,3}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,30}){0,4}$"
    )]
    endpoint: String,
    filter: Option<FilterRequest>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    description: Option<String>,
}

/// A change to a subscription: the fields present change.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct SubscriptionPatch {
    #[schema(
        max_length = 2048,
        pattern = r"^https?://[a-z][a-z0-9-]{0,30}(\.[a-z][a-z0-9-]{0,30}){0,3}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,30}){0,4}$"
    )]
    endpoint: Option<String>,
    filter: Option<FilterRequest>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    description: Option<String>,
}

/// A new app key (§6.4).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KeyRequest {
    #[schema(pattern = r"^[^\u0000-\u001f\u007f-\u009f]{0,256}$")]
    description: Option<String>,
}
