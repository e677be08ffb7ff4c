//! `msg_signature`: lowercase hex SHA1 over the byte-wise sorted, concatenated
//! token, timestamp, nonce and data.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Compute the signature WeCom sends for these four strings.
pub fn sign(token: &str, timestamp: &str, nonce: &str, data: &str) -> String {
    let mut parts = [token, timestamp, nonce, data];
    parts.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Check a received signature in constant time. Upper-case hex is accepted.
pub fn verify_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    data: &str,
    signature: &str,
) -> bool {
    let expected = sign(token, timestamp, nonce, data);
    let received = signature.to_ascii_lowercase();
    expected.as_bytes().ct_eq(received.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mp_plain_mode_vectors_sort_bytewise() {
        // Vector E: three-item signature is the same rule with data = "".
        assert_eq!(
            sign("AAAAA", "1714036504", "1514711492", ""),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        assert_eq!(
            sign("AAAAA", "1714037059", "486452656", ""),
            "899cf89e464efb63f54ddac96b0a0a235f53aa78"
        );
    }

    #[test]
    fn verify_rejects_any_other_signature() {
        let good = sign("t", "1", "2", "d");
        assert!(verify_signature("t", "1", "2", "d", &good));
        assert!(verify_signature("t", "1", "2", "d", &good.to_uppercase()));
        assert!(!verify_signature("t", "1", "2", "e", &good));
        assert!(!verify_signature("t", "1", "2", "d", &good[..39]));
        assert!(!verify_signature("t", "1", "2", "d", ""));
    }
}
