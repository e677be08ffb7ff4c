//! One error type for the protocol, carrying the official WXBizMsgCrypt codes
//! so that logs and metrics can name failures the way WeCom's SDKs do.

/// A callback that could not be verified, decrypted or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("signature mismatch")]
    Signature,
    #[error("malformed XML: {0}")]
    ParseXml(&'static str),
    #[error("malformed JSON: {0}")]
    ParseJson(&'static str),
    #[error("illegal EncodingAESKey: {0}")]
    IllegalAesKey(&'static str),
    #[error("receiveid does not match the corp")]
    ReceiveId,
    #[error("AES decryption failed: {0}")]
    Aes(&'static str),
    #[error("illegal plaintext buffer: {0}")]
    IllegalBuffer(&'static str),
    #[error("ciphertext is not valid base64")]
    Base64,
    #[error("document larger than {0} bytes")]
    TooLarge(usize),
}

impl ProtocolError {
    /// The official numeric code (ierror.py / errorCode.php).
    pub fn code(&self) -> i32 {
        match self {
            Self::Signature => -40001,
            Self::ParseXml(_) | Self::ParseJson(_) | Self::TooLarge(_) => -40002,
            Self::IllegalAesKey(_) => -40004,
            Self::ReceiveId => -40005,
            Self::Aes(_) => -40007,
            Self::IllegalBuffer(_) => -40008,
            Self::Base64 => -40010,
        }
    }

    /// A short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Signature => "bad_signature",
            Self::ReceiveId => "bad_receiveid",
            Self::ParseXml(_) | Self::ParseJson(_) | Self::TooLarge(_) => "parse_error",
            Self::IllegalAesKey(_) => "bad_key",
            Self::Aes(_) | Self::IllegalBuffer(_) | Self::Base64 => "decrypt_error",
        }
    }
}
