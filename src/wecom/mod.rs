//! The WeCom and WeChat push protocol (WXBizMsgCrypt): signatures, the AES
//! envelope, the XML and JSON documents, pushes as data and their identity.
//!
//! Nothing in here knows about HTTP frameworks or databases: it turns bytes
//! into verified, typed values and back, so it can be tested with the official
//! vectors and fuzzed in isolation.

mod crypto;
mod error;
mod key;
mod message;
mod signature;
mod xml;

pub use crypto::{decrypt, encrypt, encrypt_with_random, Decrypted};
pub use error::ProtocolError;
pub use key::EncodingAesKey;
pub use message::{
    check_json_limits, is_container_probe, json_envelope, json_message, message_identity,
    xml_message, MAX_DEPTH,
};
pub use signature::{sign, verify_signature};
pub use xml::{
    build_envelope, parse_envelope, parse_message, reject_markup_declarations, Envelope,
    InnerMessage, MAX_XML_BYTES,
};

#[cfg(test)]
mod vectors_test;
