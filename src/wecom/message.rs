//! Pushes as data: the decrypted message of a WeChat or WeCom push as one
//! JSON object under WeChat's own field names (API.md §6.3), its dedup
//! identity (§6.1), and the JSON-mode envelope and limits.
//!
//! From XML each leaf is a string, a nested element an object, a repeated
//! element an array, and `List` always an array (WeChat sends one item as an
//! object and several as an array; the SDKs each patch it their own way).
//! From JSON the values are kept as they came.

use quick_xml::events::Event;
use quick_xml::Reader;
use serde_json::{Map, Value};
use sha1::{Digest, Sha1};

use super::xml::reject_markup_declarations;
use super::{Envelope, ProtocolError, MAX_XML_BYTES};

/// Nesting deeper than this is refused, in XML and in JSON.
pub const MAX_DEPTH: usize = 64;
/// A JSON number with more digits than this is refused (no push has one;
/// longer ones only cost the parser).
const MAX_NUMBER_LEN: usize = 20;
/// Elements that are lists whatever their count.
const ALWAYS_LISTS: [&str; 1] = ["List"];

/// The `<xml>` document of a push as a JSON object.
pub fn xml_message(doc: &[u8]) -> Result<Map<String, Value>, ProtocolError> {
    if doc.len() > MAX_XML_BYTES {
        return Err(ProtocolError::TooLarge(MAX_XML_BYTES));
    }
    reject_markup_declarations(doc)?;
    let mut reader = Reader::from_reader(doc);
    reader.config_mut().trim_text(false);
    // Elements open above the current one: (name, fields gathered so far,
    // text gathered so far).
    let mut open: Vec<(String, Map<String, Value>, String)> = Vec::new();
    let mut root: Option<Map<String, Value>> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|_| ProtocolError::ParseXml("not well-formed"))?;
        match event {
            Event::Start(start) => {
                if root.is_some() {
                    return Err(ProtocolError::ParseXml("content after the root"));
                }
                if open.len() >= MAX_DEPTH {
                    return Err(ProtocolError::ParseXml("nested too deeply"));
                }
                let name = std::str::from_utf8(start.name().as_ref())
                    .map_err(|_| ProtocolError::ParseXml("element name is not UTF-8"))?
                    .to_owned();
                open.push((name, Map::new(), String::new()));
            }
            Event::Empty(empty) => {
                let name = std::str::from_utf8(empty.name().as_ref())
                    .map_err(|_| ProtocolError::ParseXml("element name is not UTF-8"))?
                    .to_owned();
                match open.last_mut() {
                    Some((_, fields, _)) => add_field(fields, name, Value::String(String::new())),
                    None => return Err(ProtocolError::ParseXml("empty root")),
                }
            }
            Event::Text(text) => {
                let text = text
                    .unescape()
                    .map_err(|_| ProtocolError::ParseXml("bad text"))?;
                match open.last_mut() {
                    Some((_, _, gathered)) => gathered.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(ProtocolError::ParseXml("text outside the root")),
                }
            }
            Event::CData(data) => {
                let text = std::str::from_utf8(&data)
                    .map_err(|_| ProtocolError::ParseXml("CDATA is not UTF-8"))?;
                match open.last_mut() {
                    Some((_, _, gathered)) => gathered.push_str(text),
                    None => return Err(ProtocolError::ParseXml("CDATA outside the root")),
                }
            }
            Event::End(_) => {
                let (name, fields, text) = open
                    .pop()
                    .ok_or(ProtocolError::ParseXml("unbalanced end tag"))?;
                // An element with children is an object (whitespace between
                // them is layout); one without is its text.
                let value = if fields.is_empty() {
                    Value::String(text)
                } else {
                    Value::Object(fields)
                };
                match open.last_mut() {
                    Some((_, parent, _)) => add_field(parent, name, value),
                    None => match value {
                        Value::Object(fields) => root = Some(fields),
                        // `<xml></xml>` or `<xml>text</xml>`: no fields.
                        Value::String(_) => root = Some(Map::new()),
                        _ => unreachable!("an element is an object or a string"),
                    },
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
            Event::DocType(_) => return Err(ProtocolError::ParseXml("markup declaration")),
        }
    }
    if !open.is_empty() {
        return Err(ProtocolError::ParseXml("unclosed element"));
    }
    root.ok_or(ProtocolError::ParseXml("no root element"))
}

/// Add a child: a second one of the same name turns the field into an array.
fn add_field(fields: &mut Map<String, Value>, name: String, value: Value) {
    let always_list = ALWAYS_LISTS.contains(&name.as_str());
    match fields.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None if always_list => {
            fields.insert(name, Value::Array(vec![value]));
        }
        None => {
            fields.insert(name, value);
        }
    }
}

/// A JSON push (Mini Programs in JSON mode) as an object, within the limits.
pub fn json_message(doc: &[u8]) -> Result<Map<String, Value>, ProtocolError> {
    check_json_limits(doc)?;
    match serde_json::from_slice::<Value>(doc) {
        Ok(Value::Object(fields)) => Ok(normalize_lists(fields)),
        Ok(_) => Err(ProtocolError::ParseJson("not a JSON object")),
        Err(_) => Err(ProtocolError::ParseJson("not valid JSON")),
    }
}

/// `List` as an array in JSON too (one item may come as an object).
fn normalize_lists(mut fields: Map<String, Value>) -> Map<String, Value> {
    for name in ALWAYS_LISTS {
        if let Some(value) = fields.get_mut(name) {
            if !value.is_array() {
                let one = value.take();
                *value = Value::Array(vec![one]);
            }
        }
    }
    fields
}

/// The safe-mode envelope of a JSON push: `{"ToUserName", "Encrypt"}`.
pub fn json_envelope(doc: &[u8]) -> Result<Envelope, ProtocolError> {
    let fields = json_message(doc)?;
    let text = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
    Ok(Envelope {
        to_user_name: text("ToUserName"),
        agent_id: None,
        encrypt: text("Encrypt").ok_or(ProtocolError::ParseJson("no Encrypt"))?,
    })
}

/// Refuse, before parsing, JSON nested deeper than `MAX_DEPTH` or holding a
/// number longer than `MAX_NUMBER_LEN` characters, and anything over the
/// size cap.
pub fn check_json_limits(doc: &[u8]) -> Result<(), ProtocolError> {
    if doc.len() > MAX_XML_BYTES {
        return Err(ProtocolError::TooLarge(MAX_XML_BYTES));
    }
    let (mut depth, mut in_string, mut escaped, mut number) = (0usize, false, false, 0usize);
    for &b in doc {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        let numeric = b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
        number = if numeric { number + 1 } else { 0 };
        if number > MAX_NUMBER_LEN {
            return Err(ProtocolError::ParseJson("number too long"));
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ProtocolError::ParseJson("nested too deeply"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// True for WeChat Cloud Run's configuration probe, in JSON or XML.
pub fn is_container_probe(fields: &Map<String, Value>) -> bool {
    fields.get("action").and_then(Value::as_str) == Some("CheckContainerPath")
}

/// The dedup identity of a push within its source (API.md §6.1): its
/// `MsgId` when it has one, else a digest of all its fields, names and
/// values, independent of their order (a resend repeats them exactly; two
/// different events of one user in one second differ in some field).
pub fn message_identity(fields: &Map<String, Value>) -> String {
    let msg_id = match fields.get("MsgId") {
        Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
        Some(Value::Number(id)) => Some(id.to_string()),
        _ => None,
    };
    if let Some(id) = msg_id {
        return format!("msg|{id}");
    }
    let mut text = String::new();
    canonical(&Value::Object(fields.clone()), &mut text);
    format!("digest|{}", hex::encode(Sha1::digest(text.as_bytes())))
}

/// JSON text with every object's keys in byte order: the same fields in any
/// order give the same text.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&fields[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn xml(doc: &str) -> Value {
        Value::Object(xml_message(doc.as_bytes()).unwrap())
    }

    #[test]
    fn leaves_are_strings_nested_elements_objects_repeats_arrays() {
        let got = xml("<xml><ToUserName><![CDATA[gh_abc]]></ToUserName>\n  <CreateTime>1555684067</CreateTime>\
             <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey></EventKey>\
             <ScanCodeInfo><ScanType><![CDATA[qrcode]]></ScanType><ScanResult>1</ScanResult></ScanCodeInfo>\
             <Item>a</Item><Item>b</Item></xml>");
        assert_eq!(
            got,
            json!({
                "ToUserName": "gh_abc", "CreateTime": "1555684067", "MsgType": "event",
                "Event": "subscribe", "EventKey": "",
                "ScanCodeInfo": {"ScanType": "qrcode", "ScanResult": "1"},
                "Item": ["a", "b"],
            })
        );
    }

    /// WeChat's subscription-message event: one `List` is an element of its
    /// own, several are repeated; both come out as an array.
    #[test]
    fn list_is_always_an_array() {
        let one = xml("<xml><Event>subscribe_msg_popup_event</Event><SubscribeMsgPopupEvent>\
             <List><TemplateId>T1</TemplateId><SubscribeStatusString>accept</SubscribeStatusString></List>\
             </SubscribeMsgPopupEvent></xml>");
        assert_eq!(
            one["SubscribeMsgPopupEvent"]["List"],
            json!([{"TemplateId": "T1", "SubscribeStatusString": "accept"}])
        );
        let two = xml(
            "<xml><SubscribeMsgPopupEvent><List><TemplateId>T1</TemplateId></List>\
             <List><TemplateId>T2</TemplateId></List></SubscribeMsgPopupEvent></xml>",
        );
        assert_eq!(
            two["SubscribeMsgPopupEvent"]["List"],
            json!([{"TemplateId": "T1"}, {"TemplateId": "T2"}])
        );
        let json_one = json_message(br#"{"Event":"x","List":{"TemplateId":"T1"}}"#).unwrap();
        assert_eq!(json_one["List"], json!([{"TemplateId": "T1"}]));
    }

    #[test]
    fn text_keeps_entities_and_cdata_exactly() {
        let got =
            xml("<xml><Content><![CDATA[a <b> & c]]></Content><Title>x &amp; y</Title></xml>");
        assert_eq!(got["Content"], "a <b> & c");
        assert_eq!(got["Title"], "x & y");
    }

    #[test]
    fn malformed_and_hostile_xml_is_refused() {
        for bad in [
            "<xml><a></xml>",
            "<xml>",
            "",
            "text",
            "<!DOCTYPE x [<!ENTITY a \"b\">]><xml><a>&a;</a></xml>",
            "<xml></xml><xml></xml>",
        ] {
            assert!(xml_message(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let deep = format!("<xml>{}{}</xml>", "<a>".repeat(70), "</a>".repeat(70));
        assert_eq!(
            xml_message(deep.as_bytes()),
            Err(ProtocolError::ParseXml("nested too deeply"))
        );
    }

    #[test]
    fn json_limits_count_depth_and_number_length_outside_strings() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(64), "]".repeat(64));
        assert_eq!(
            json_message(deep.as_bytes()),
            Err(ProtocolError::ParseJson("nested too deeply"))
        );
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(62), "]".repeat(62));
        assert!(json_message(ok.as_bytes()).is_ok());
        assert_eq!(
            json_message(br#"{"MsgId": 123456789012345678901}"#),
            Err(ProtocolError::ParseJson("number too long"))
        );
        // Inside a string, brackets and digits are text.
        let text = format!("{{\"Content\":\"{}{}\"}}", "[".repeat(100), "9".repeat(40));
        assert!(json_message(text.as_bytes()).is_ok());
        assert!(json_message(br#"[1]"#).is_err(), "not an object");
        assert!(json_message(b"{\"a\":1").is_err());
    }

    #[test]
    fn the_identity_is_the_msg_id_or_a_digest_of_every_field_in_any_order() {
        let text = xml("<xml><MsgId>4930</MsgId><Content>hi</Content></xml>");
        assert_eq!(message_identity(text.as_object().unwrap()), "msg|4930");
        let from_json = json_message(br#"{"MsgId":4930,"Content":"hi"}"#).unwrap();
        assert_eq!(message_identity(&from_json), "msg|4930");

        let a = xml(
            "<xml><FromUserName>sys</FromUserName><CreateTime>1</CreateTime>\
             <Event>change_external_contact</Event><ExternalUserID>wm1</ExternalUserID></xml>",
        );
        let a_reordered = xml(
            "<xml>\n <ExternalUserID>wm1</ExternalUserID>\n <Event>change_external_contact</Event>\
             <CreateTime>1</CreateTime><FromUserName><![CDATA[sys]]></FromUserName></xml>",
        );
        let b = xml(
            "<xml><FromUserName>sys</FromUserName><CreateTime>1</CreateTime>\
             <Event>change_external_contact</Event><ExternalUserID>wm2</ExternalUserID></xml>",
        );
        let id = |v: &Value| message_identity(v.as_object().unwrap());
        assert_eq!(id(&a), id(&a_reordered), "a resend is the same event");
        assert_ne!(id(&a), id(&b), "another contact in the same second is not");
        assert!(id(&a).starts_with("digest|"));
    }

    #[test]
    fn envelopes_and_the_cloud_run_probe() {
        let env = json_envelope(br#"{"ToUserName":"gh_abc","Encrypt":"QUJD"}"#).unwrap();
        assert_eq!(env.encrypt, "QUJD");
        assert_eq!(env.to_user_name.as_deref(), Some("gh_abc"));
        assert!(json_envelope(br#"{"ToUserName":"gh_abc"}"#).is_err());
        assert!(is_container_probe(
            &json_message(br#"{"action":"CheckContainerPath"}"#).unwrap()
        ));
        assert!(is_container_probe(
            &xml_message(b"<xml><action>CheckContainerPath</action></xml>").unwrap()
        ));
        assert!(!is_container_probe(
            &json_message(br#"{"action":"x"}"#).unwrap()
        ));
    }
}
