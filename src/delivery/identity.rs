//! What makes two callbacks "the same event", for deduplicating WeCom's
//! resends. Never the ciphertext or nonce: a resend may be re-encrypted.

use serde_json::{Map, Value};

use crate::domain::{CorpId, KfId};
use crate::wecom::{message_identity, InnerMessage};

/// A `kf_msg_or_event` is (corp, OpenKfId, Token); anything else is
/// `push_dedup_key` of its fields (as `wecom::xml_message` reads them).
pub fn dedup_key(corp: &CorpId, msg: &InnerMessage, fields: Option<&Map<String, Value>>) -> String {
    let field = |v: &Option<String>| v.as_deref().unwrap_or("").to_owned();
    if msg.is_kf_msg_or_event() {
        return format!("kf|{corp}|{}|{}", field(&msg.open_kf_id), field(&msg.token));
    }
    if let Some(fields) = fields {
        return push_dedup_key(corp.as_str(), fields);
    }
    // Only when the message did not read as a field map (it still routes).
    if let Some(id) = msg.msg_id.as_deref().filter(|id| !id.is_empty()) {
        format!("msg|{corp}|{id}")
    } else {
        format!(
            "ev|{corp}|{}|{}|{}",
            field(&msg.from_user_name),
            field(&msg.create_time),
            field(&msg.event)
        )
    }
}

/// Any push but a customer-service wake-up, of any source (a corp on
/// `/callback`, an app on `/wechat`): `msg|{source}|{MsgId}` (as earlier
/// releases stored it), else `digest|{source}|` the digest of all its fields
/// (API.md §6.1): two events of one user in one second that differ in any
/// field are both delivered; a resend is not.
pub fn push_dedup_key(source: &str, fields: &Map<String, Value>) -> String {
    let identity = message_identity(fields);
    match identity.split_once('|') {
        Some((kind, rest)) => format!("{kind}|{source}|{rest}"),
        None => format!("{identity}|{source}"),
    }
}

/// The gateway (already decrypted) form: (corp, openKfId, token). Kept apart
/// from the XML form because the two are delivered in different shapes.
pub fn decrypted_dedup_key(corp: &CorpId, kf: &KfId, token: &str) -> String {
    format!("dkf|{corp}|{kf}|{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(
        event: Option<&str>,
        token: Option<&str>,
        kf: Option<&str>,
        msg_id: Option<&str>,
    ) -> InnerMessage {
        InnerMessage {
            to_user_name: Some("ww1".into()),
            from_user_name: Some("u".into()),
            create_time: Some("100".into()),
            msg_type: Some("event".into()),
            event: event.map(Into::into),
            token: token.map(Into::into),
            open_kf_id: kf.map(Into::into),
            msg_id: msg_id.map(Into::into),
        }
    }

    #[test]
    fn kf_events_differ_by_token_and_kf_and_corp_only() {
        let corp = CorpId::parse("ww1").unwrap();
        let other = CorpId::parse("ww2").unwrap();
        let a = msg(Some("kf_msg_or_event"), Some("T1"), Some("wk1"), None);
        let mut a_later = a.clone();
        a_later.create_time = Some("999".into());
        let key = |c: &CorpId, m: &InnerMessage| dedup_key(c, m, None);
        assert_eq!(key(&corp, &a), key(&corp, &a_later));
        assert_ne!(key(&corp, &a), key(&other, &a));
        let b = msg(Some("kf_msg_or_event"), Some("T2"), Some("wk1"), None);
        assert_ne!(key(&corp, &a), key(&corp, &b));
    }

    fn fields(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn messages_keep_their_msg_id_key_and_other_events_are_told_apart_by_every_field() {
        let corp = CorpId::parse("ww1").unwrap();
        let plain = msg(None, None, None, Some("42"));
        assert_eq!(
            dedup_key(
                &corp,
                &plain,
                Some(&fields(r#"{"MsgId":"42","Content":"hi"}"#))
            ),
            "msg|ww1|42",
            "the key earlier releases stored"
        );
        // Two contacts added by `sys` in the same second: both delivered.
        let event = msg(Some("change_external_contact"), None, None, None);
        let first = fields(
            r#"{"FromUserName":"sys","CreateTime":"100","Event":"change_external_contact","ExternalUserID":"a"}"#,
        );
        let second = fields(
            r#"{"FromUserName":"sys","CreateTime":"100","Event":"change_external_contact","ExternalUserID":"b"}"#,
        );
        let reordered = fields(
            r#"{"ExternalUserID":"a","Event":"change_external_contact","CreateTime":"100","FromUserName":"sys"}"#,
        );
        let key = |f: &Map<String, Value>| dedup_key(&corp, &event, Some(f));
        assert_ne!(key(&first), key(&second));
        assert_eq!(key(&first), key(&reordered), "a resend, in any field order");
        assert!(key(&first).starts_with("digest|ww1|"));
        assert_ne!(
            key(&first),
            dedup_key(&CorpId::parse("ww2").unwrap(), &event, Some(&first)),
            "per source"
        );
    }
}
