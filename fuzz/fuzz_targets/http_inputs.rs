//! The HTTP-facing parsers: query strings, the register body (JSON into a
//! validated registration), the gateway's decrypted body, path ids and
//! endpoints, and the ENDPOINT_ALLOW list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxkf_manager::domain::{CorpId, EndpointAllow, EndpointUrl, KfId, RegisterBody, Registration};
use wxkf_manager::http::query::param;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<RegisterBody>(data) {
        let _ = Registration::try_from(body);
    }
    let _ = serde_json::from_slice::<serde_json::Value>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for name in ["msg_signature", "timestamp", "nonce", "echostr", "corpid"] {
            let _ = param(text, name);
        }
        let _ = CorpId::parse(text);
        let _ = KfId::parse(text);
        if let Ok(endpoint) = EndpointUrl::parse(text) {
            let _ = endpoint.join("callback");
        }
        if let Ok(allow) = EndpointAllow::parse(text) {
            if let Ok(url) = url::Url::parse("http://10.1.2.3/") {
                let _ = allow.allows(&url);
            }
        }
    }
});
