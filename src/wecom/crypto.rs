//! The AES envelope: `random16 || u32_be(len) || msg || receiveid`, padded
//! PKCS#7-style to a multiple of **32** bytes, AES-256-CBC with IV = key[..16],
//! no cipher-level padding, standard base64.
//!
//! Standard 16-byte PKCS#7 unpadders reject pad values 17..=32, which WeCom
//! produces, so padding is added and stripped here by hand.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{EncodingAesKey, ProtocolError};

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

const PAD_BLOCK: usize = 32;
const RANDOM_LEN: usize = 16;
const HEADER_LEN: usize = RANDOM_LEN + 4;

/// A decrypted payload: the message bytes (the receiveid has been checked and
/// removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    pub message: Vec<u8>,
    /// The id after the message (the corp, suite or app it was sealed for).
    pub receive_id: Vec<u8>,
}

impl Decrypted {
    pub fn as_str(&self) -> Result<&str, ProtocolError> {
        std::str::from_utf8(&self.message)
            .map_err(|_| ProtocolError::IllegalBuffer("message is not UTF-8"))
    }
}

/// Decrypt `ciphertext_b64` and require the receiveid tail to equal
/// `receive_id` byte for byte. An empty `receive_id` skips the check, which is
/// the documented case for personal-subject third-party apps and robots.
pub fn decrypt(
    key: &EncodingAesKey,
    ciphertext_b64: &str,
    receive_id: &str,
) -> Result<Decrypted, ProtocolError> {
    let mut buf = STANDARD
        .decode(ciphertext_b64)
        .map_err(|_| ProtocolError::Base64)?;
    if buf.is_empty() || buf.len() % 16 != 0 {
        return Err(ProtocolError::Aes(
            "ciphertext length is not a non-zero multiple of 16",
        ));
    }
    let plain = Aes256CbcDec::new(key.aes_key().into(), key.iv().into())
        .decrypt_padded_mut::<NoPadding>(&mut buf)
        .map_err(|_| ProtocolError::Aes("block decryption failed"))?;

    let pad = usize::from(*plain.last().ok_or(ProtocolError::IllegalBuffer("empty"))?);
    if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
        return Err(ProtocolError::IllegalBuffer("padding out of range 1..=32"));
    }
    let unpadded = &plain[..plain.len() - pad];
    if unpadded.len() < HEADER_LEN {
        return Err(ProtocolError::IllegalBuffer("shorter than its header"));
    }
    let len_bytes: [u8; 4] = unpadded[RANDOM_LEN..HEADER_LEN]
        .try_into()
        .map_err(|_| ProtocolError::IllegalBuffer("length field"))?;
    let msg_len = u32::from_be_bytes(len_bytes) as usize;
    let body = &unpadded[HEADER_LEN..];
    if msg_len > body.len() {
        return Err(ProtocolError::IllegalBuffer(
            "message length points past the buffer",
        ));
    }
    let (message, tail) = body.split_at(msg_len);
    if !receive_id.is_empty() && tail != receive_id.as_bytes() {
        return Err(ProtocolError::ReceiveId);
    }
    Ok(Decrypted {
        message: message.to_vec(),
        receive_id: tail.to_vec(),
    })
}

/// Encrypt with fresh random bytes.
pub fn encrypt(key: &EncodingAesKey, message: &[u8], receive_id: &str) -> String {
    let random: [u8; RANDOM_LEN] = rand::random();
    encrypt_with_random(key, message, receive_id, random)
}

/// Encrypt with the given 16 leading bytes, so tests are deterministic.
pub fn encrypt_with_random(
    key: &EncodingAesKey,
    message: &[u8],
    receive_id: &str,
    random: [u8; RANDOM_LEN],
) -> String {
    let unpadded = HEADER_LEN + message.len() + receive_id.len();
    let pad = PAD_BLOCK - unpadded % PAD_BLOCK;
    let mut buf = Vec::with_capacity(unpadded + pad);
    buf.extend_from_slice(&random);
    // Messages are bounded far below 4 GiB by every caller; saturate rather
    // than wrap if one ever is not.
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(message);
    buf.extend_from_slice(receive_id.as_bytes());
    // pad is in 1..=32, so it fits a byte.
    buf.resize(unpadded + pad, pad as u8);
    let cipher = Aes256CbcEnc::new(key.aes_key().into(), key.iv().into())
        .encrypt_padded_vec_mut::<NoPadding>(&buf);
    STANDARD.encode(cipher)
}
