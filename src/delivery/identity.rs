//! What makes two callbacks "the same event", for deduplicating WeCom's
//! resends. Never the ciphertext or nonce: a resend may be re-encrypted.

use crate::domain::{CorpId, KfId};
use crate::wecom::InnerMessage;

/// A `kf_msg_or_event` is (corp, OpenKfId, Token); a message with a MsgId is
/// (corp, MsgId); any other event is (corp, FromUserName, CreateTime, Event).
pub fn dedup_key(corp: &CorpId, msg: &InnerMessage) -> String {
    let field = |v: &Option<String>| v.as_deref().unwrap_or("").to_owned();
    if msg.is_kf_msg_or_event() {
        format!("kf|{corp}|{}|{}", field(&msg.open_kf_id), field(&msg.token))
    } else if let Some(id) = msg.msg_id.as_deref().filter(|id| !id.is_empty()) {
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
        assert_eq!(dedup_key(&corp, &a), dedup_key(&corp, &a_later));
        assert_ne!(dedup_key(&corp, &a), dedup_key(&other, &a));
        let b = msg(Some("kf_msg_or_event"), Some("T2"), Some("wk1"), None);
        assert_ne!(dedup_key(&corp, &a), dedup_key(&corp, &b));
    }

    #[test]
    fn messages_use_msg_id_and_other_events_their_origin_and_time() {
        let corp = CorpId::parse("ww1").unwrap();
        assert_eq!(
            dedup_key(&corp, &msg(None, None, None, Some("42"))),
            "msg|ww1|42"
        );
        assert_eq!(
            dedup_key(&corp, &msg(Some("enter_agent"), None, None, None)),
            "ev|ww1|u|100|enter_agent"
        );
    }
}
