//! The EncodingAESKey, parsed once at the edge.
//!
//! WeCom keys are 43 base64 characters whose last character carries two spare
//! bits that WeCom does not zero, so the strict standard decoder rejects every
//! real key. We decode with trailing bits allowed.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

use super::ProtocolError;

const LENIENT_KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A validated EncodingAESKey: the 43-character text and the 32-byte AES key.
/// `Debug` never prints either.
#[derive(Clone, PartialEq, Eq)]
pub struct EncodingAesKey {
    text: String,
    key: [u8; 32],
}

impl EncodingAesKey {
    pub fn parse(text: &str) -> Result<Self, ProtocolError> {
        if text.len() != 43 {
            return Err(ProtocolError::IllegalAesKey("must be 43 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ProtocolError::IllegalAesKey(
                "must be letters and digits only",
            ));
        }
        let bytes = LENIENT_KEY_ENGINE
            .decode(text)
            .map_err(|_| ProtocolError::IllegalAesKey("not base64"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ProtocolError::IllegalAesKey("does not decode to 32 bytes"))?;
        Ok(Self {
            text: text.to_owned(),
            key,
        })
    }

    /// The 32-byte AES-256 key.
    pub fn aes_key(&self) -> &[u8; 32] {
        &self.key
    }

    /// The CBC IV: the first 16 bytes of the key.
    pub fn iv(&self) -> &[u8] {
        &self.key[..16]
    }

    /// The key as configured (a secret; only for storage and comparison).
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncodingAesKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_keys_with_trailing_bits_decode_to_32_bytes() {
        for k in [
            "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
            "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        ] {
            let key = EncodingAesKey::parse(k).expect(k);
            assert_eq!(key.aes_key().len(), 32);
            assert_eq!(key.expose(), k);
        }
    }

    #[test]
    fn rejects_wrong_length_and_alphabet() {
        let ok = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
        assert!(matches!(
            EncodingAesKey::parse(&ok[..42]),
            Err(ProtocolError::IllegalAesKey(_))
        ));
        assert!(matches!(
            EncodingAesKey::parse(&format!("{ok}A")),
            Err(ProtocolError::IllegalAesKey(_))
        ));
        let with_plus = format!("+{}", &ok[1..]);
        assert!(matches!(
            EncodingAesKey::parse(&with_plus),
            Err(ProtocolError::IllegalAesKey(_))
        ));
        assert_eq!(EncodingAesKey::parse("").unwrap_err().code(), -40004);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let k = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
        let printed = format!("{:?}", EncodingAesKey::parse(k).unwrap());
        assert!(!printed.contains(k));
    }
}
