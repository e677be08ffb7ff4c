//! The one request body of the OpenAPI document that no Rust type parses:
//! WeCom's encrypted envelope, which the callback handler keeps as the bytes
//! WeCom signed (`wecom::parse_envelope` reads it) and delivers byte for
//! byte. Every other body is documented from the type its handler parses.

use utoipa::ToSchema;

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
