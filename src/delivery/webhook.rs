//! What a subscriber receives (API.md §6.3): the JSON body of a delivered
//! push and its Standard Webhooks signature (standardwebhooks.com), so that
//! any of that spec's verifier libraries checks our deliveries.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::RngCore;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::clock::iso8601;

/// A subscription's signing secret: 32 random bytes, shown once as
/// `whsec_` + base64.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

const PREFIX: &str = "whsec_";

impl WebhookSecret {
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
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

/// The body of a delivery to a subscriber. All deliveries of one event
/// carry the same body (its `id` is the event's).
pub fn delivery_body(
    event_id: &str,
    source: &str,
    source_kind: &str,
    received_at_ms: i64,
    message: &Map<String, Value>,
) -> Vec<u8> {
    json!({
        "id": event_id,
        "source": source,
        "sourceKind": source_kind,
        "receivedAt": iso8601(received_at_ms),
        "message": message,
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's test suite,
    /// checked here against Python's `hmac` as a second implementation.
    #[test]
    fn signs_as_the_standard_webhooks_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_ne!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_331,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_whsec_and_32_random_bytes_never_debug_printed() {
        let a = WebhookSecret::generate();
        let shown = a.expose();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(B64.decode(&shown[6..]).unwrap().len(), 32);
        assert_eq!(WebhookSecret::parse(&shown), Some(a.clone()));
        assert_ne!(WebhookSecret::generate(), a);
        assert_eq!(format!("{a:?}"), "WebhookSecret(…)");
        for bad in [
            "",
            "whsec_",
            "whsec_!!!",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            assert!(WebhookSecret::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_body_names_the_event_and_keeps_the_message_under_wechat_names() {
        let message: Map<String, Value> =
            serde_json::from_str(r#"{"ToUserName":"gh_a","MsgType":"event","Event":"subscribe"}"#)
                .unwrap();
        let body: Value = serde_json::from_slice(&delivery_body(
            "018f-e",
            "wx0123456789abcdef",
            "official_account",
            1_764_620_219_123,
            &message,
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({"id": "018f-e", "source": "wx0123456789abcdef", "sourceKind": "official_account",
                   "receivedAt": "2025-12-01T20:16:59.123Z", "message": message})
        );
    }
}
