//! The two XML documents of a callback: the outer envelope WeCom POSTs and the
//! inner message it encrypts. Both are flat `<xml>` documents whose elements
//! come in any order, as CDATA or plain text.
//!
//! Markup declarations (DOCTYPE, ENTITY, ...) are refused before parsing and
//! inputs are capped, so entity expansion and oversized documents never reach
//! the parser.

use serde::Deserialize;

use super::ProtocolError;

/// Callbacks are a few hundred bytes; anything over this is refused unread.
pub const MAX_XML_BYTES: usize = 64 * 1024;

/// The outer document of an encrypted callback.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Envelope {
    #[serde(rename = "ToUserName", default)]
    pub to_user_name: Option<String>,
    #[serde(rename = "AgentID", default)]
    pub agent_id: Option<String>,
    #[serde(rename = "Encrypt")]
    pub encrypt: String,
}

/// The decrypted message. A `kf_msg_or_event` fills `token` and `open_kf_id`;
/// other events and plain messages parse into the same general form so they
/// can be routed or logged rather than failing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InnerMessage {
    #[serde(rename = "ToUserName", default)]
    pub to_user_name: Option<String>,
    #[serde(rename = "FromUserName", default)]
    pub from_user_name: Option<String>,
    #[serde(rename = "CreateTime", default)]
    pub create_time: Option<String>,
    #[serde(rename = "MsgType", default)]
    pub msg_type: Option<String>,
    #[serde(rename = "Event", default)]
    pub event: Option<String>,
    #[serde(rename = "Token", default)]
    pub token: Option<String>,
    #[serde(rename = "OpenKfId", default)]
    pub open_kf_id: Option<String>,
    #[serde(rename = "MsgId", default)]
    pub msg_id: Option<String>,
}

impl InnerMessage {
    /// True for the "pull now" signal of WeCom customer service.
    pub fn is_kf_msg_or_event(&self) -> bool {
        self.event.as_deref() == Some("kf_msg_or_event")
    }
}

/// Refuse `<!DOCTYPE`, `<!ENTITY` and every other markup declaration. CDATA
/// sections and comments are skipped, so a message whose text mentions a
/// DOCTYPE inside CDATA still parses.
pub fn reject_markup_declarations(doc: &[u8]) -> Result<(), ProtocolError> {
    let mut rest = doc;
    while let Some(at) = find(rest, b"<!") {
        let after = &rest[at + 2..];
        let skip_to = if after.starts_with(b"[CDATA[") {
            b"]]>".as_slice()
        } else if after.starts_with(b"--") {
            b"-->".as_slice()
        } else {
            return Err(ProtocolError::ParseXml(
                "DOCTYPE or entity declarations are not allowed",
            ));
        };
        match find(after, skip_to) {
            Some(end) => rest = &after[end + skip_to.len()..],
            None => return Err(ProtocolError::ParseXml("unterminated CDATA or comment")),
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_flat<'a, T: Deserialize<'a>>(
    doc: &'a [u8],
    what: &'static str,
) -> Result<T, ProtocolError> {
    if doc.len() > MAX_XML_BYTES {
        return Err(ProtocolError::TooLarge(MAX_XML_BYTES));
    }
    reject_markup_declarations(doc)?;
    let text = std::str::from_utf8(doc).map_err(|_| ProtocolError::ParseXml("not UTF-8"))?;
    quick_xml::de::from_str(text).map_err(|_| ProtocolError::ParseXml(what))
}

/// Parse the outer `<xml><ToUserName/><AgentID/><Encrypt/></xml>`.
pub fn parse_envelope(doc: &[u8]) -> Result<Envelope, ProtocolError> {
    let envelope: Envelope = parse_flat(doc, "not a callback envelope with <Encrypt>")?;
    if envelope.encrypt.is_empty() {
        return Err(ProtocolError::ParseXml("empty <Encrypt>"));
    }
    Ok(envelope)
}

/// Parse the decrypted inner message.
pub fn parse_message(doc: &[u8]) -> Result<InnerMessage, ProtocolError> {
    parse_flat(doc, "decrypted message is not a WeCom XML message")
}

/// Build an envelope as WeCom sends it (used by tests, the simulator and the
/// load generator).
pub fn build_envelope(to_user_name: &str, agent_id: &str, encrypt: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{to_user_name}]]></ToUserName>\
         <AgentID><![CDATA[{agent_id}]]></AgentID>\
         <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_in_any_order_with_whitespace_and_plain_text() {
        let doc = b"<xml>\n  <Encrypt><![CDATA[abc=]]></Encrypt>\n  <AgentID></AgentID>\n  <ToUserName>ww1</ToUserName>\n</xml>";
        let e = parse_envelope(doc).unwrap();
        assert_eq!(e.encrypt, "abc=");
        assert_eq!(e.to_user_name.as_deref(), Some("ww1"));
        let no_agent = parse_envelope(b"<xml><Encrypt>abc=</Encrypt></xml>").unwrap();
        assert_eq!(no_agent.agent_id, None);
    }

    #[test]
    fn envelope_without_encrypt_is_a_parse_error() {
        let err = parse_envelope(b"<xml><ToUserName>x</ToUserName></xml>").unwrap_err();
        assert_eq!(err.code(), -40002);
        assert!(parse_envelope(b"not xml at all").is_err());
        assert!(parse_envelope(b"<xml><Encrypt></Encrypt></xml>").is_err());
        assert!(parse_envelope(b"<xml><Encrypt>abc").is_err());
        assert!(parse_envelope(&[0xff, 0xfe, b'<']).is_err());
    }

    #[test]
    fn doctype_and_entities_are_refused() {
        let laughs = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><xml><Encrypt>&lol2;</Encrypt></xml>"#;
        assert!(matches!(
            parse_envelope(laughs),
            Err(ProtocolError::ParseXml(_))
        ));
        assert!(parse_envelope(b"<!ENTITY x 'y'><xml><Encrypt>a</Encrypt></xml>").is_err());
        // Inside CDATA the same text is just text.
        let msg = parse_message(
            b"<xml><MsgType>text</MsgType><Content><![CDATA[<!DOCTYPE html>]]></Content><!-- c --></xml>",
        )
        .unwrap();
        assert_eq!(msg.msg_type.as_deref(), Some("text"));
    }

    #[test]
    fn oversized_documents_are_refused_before_parsing() {
        let big = vec![b' '; MAX_XML_BYTES + 1];
        assert_eq!(
            parse_envelope(&big).unwrap_err(),
            ProtocolError::TooLarge(MAX_XML_BYTES)
        );
    }

    #[test]
    fn kf_event_and_other_messages_parse() {
        let kf = parse_message(b"<xml><ToUserName><![CDATA[ww12345678910]]></ToUserName><CreateTime>1348831860</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event><Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token><OpenKfId><![CDATA[wkxxxxxxx]]></OpenKfId></xml>").unwrap();
        assert!(kf.is_kf_msg_or_event());
        assert_eq!(kf.open_kf_id.as_deref(), Some("wkxxxxxxx"));
        assert_eq!(
            kf.token.as_deref(),
            Some("ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR")
        );
        assert_eq!(kf.create_time.as_deref(), Some("1348831860"));

        let text = parse_message(b"<xml><ToUserName>ww1</ToUserName><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>42</MsgId><AgentID>1</AgentID></xml>").unwrap();
        assert!(!text.is_kf_msg_or_event());
        assert_eq!(text.msg_id.as_deref(), Some("42"));
        assert_eq!(text.from_user_name.as_deref(), Some("u"));
    }
}
