//! Which pushes a subscription takes (API.md §6.3): a filter on `MsgType`,
//! `Event` and `ChangeType`. A field that is present and non-empty restricts
//! that field of the message to the listed values (exact, case-sensitive);
//! an absent or empty one matches anything; all present fields must match.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// At most this many values per field, each at most this long: a filter is
/// a short list of WeChat's names, not a place to store data.
pub const MAX_VALUES: usize = 64;
pub const MAX_VALUE_LEN: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msg_type: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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
            if values
                .iter()
                .any(|v| v.is_empty() || v.chars().count() > MAX_VALUE_LEN)
            {
                return Err(format!(
                    "{name}: each value 1 to {MAX_VALUE_LEN} characters"
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
            Err("filter.event: each value 1 to 64 characters".into())
        );
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
