//! What a subscriber receives (API.md §6.3): the JSON body of a delivered
//! push and its Standard Webhooks signature (standardwebhooks.com), so that
//! any of that spec's verifier libraries checks our deliveries.

use serde_json::{json, Map, Value};

use super::fan_out::Origin;
pub use crate::domain::WebhookSecret;

/// The body of a delivery to a subscriber. All deliveries of one event
/// carry the same body (its `id` is the event's); `via` names the provider
/// a customer's push came through (§7).
pub fn delivery_body(origin: &Origin<'_>, message: &Map<String, Value>) -> Vec<u8> {
    let mut body = json!({
        "id": origin.event_id,
        "source": origin.source.as_str(),
        "sourceKind": origin.source_kind,
        "receivedAt": origin.received_at.iso8601(),
        "message": message,
    });
    if let Some(via) = origin.via {
        body["via"] = via.into();
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;

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
        let source = crate::domain::CorpId::parse("wx0123456789abcdef").unwrap();
        let mut origin = Origin {
            event_id: "018f-e",
            source: &source,
            source_kind: "official_account",
            received_at: crate::clock::UnixMillis::from_millis(1_764_620_219_123),
            via: None,
        };
        let body: Value = serde_json::from_slice(&delivery_body(&origin, &message)).unwrap();
        assert_eq!(
            body,
            json!({"id": "018f-e", "source": "wx0123456789abcdef", "sourceKind": "official_account",
                   "receivedAt": "2025-12-01T20:16:59.123Z", "message": message})
        );
        origin.via = Some("wwsuite");
        let body: Value = serde_json::from_slice(&delivery_body(&origin, &message)).unwrap();
        assert_eq!(body["via"], "wwsuite");
    }
}
