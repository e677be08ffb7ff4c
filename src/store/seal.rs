//! Secrets at rest (`SECRETS_KEY`): corpSecret, token, EncodingAESKey and
//! cached access tokens are stored as `wxkf:v1:` + base64(nonce ‖ AES-256-GCM
//! ciphertext) and opened on read. Without a key they are stored as the old
//! manager stored them (plain text), and plain values written before a key
//! was set are still read, and sealed on their next write.
//!
//! Values are never looked up by their stored form (it is randomised); where
//! a lookup by value is needed (access tokens) a keyed fingerprint is stored
//! beside the value.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use super::StoreError;

const PREFIX: &str = "wxkf:v1:";
/// A known value sealed into the store, to tell a wrong key at start.
pub const CHECK_PLAINTEXT: &str = "wxkf-manager secrets check";

#[derive(Clone, Default)]
pub struct Sealer {
    cipher: Option<Aes256Gcm>,
    salt: [u8; 20],
}

impl Sealer {
    pub fn new(key: Option<&[u8; 32]>) -> Self {
        match key {
            None => Self::default(),
            Some(k) => Self {
                cipher: Some(Aes256Gcm::new(k.into())),
                salt: Sha1::digest([b"fingerprint".as_slice(), k].concat()).into(),
            },
        }
    }

    pub fn has_key(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn seal(&self, plain: &str) -> String {
        let Some(cipher) = &self.cipher else {
            return plain.to_owned();
        };
        let nonce: [u8; 12] = rand::random();
        match cipher.encrypt(Nonce::from_slice(&nonce), plain.as_bytes()) {
            Ok(ct) => format!(
                "{PREFIX}{}",
                STANDARD.encode([nonce.as_slice(), &ct].concat())
            ),
            // AES-GCM encryption of a short string does not fail; never store
            // a secret in clear if it somehow did.
            Err(_) => String::new(),
        }
    }

    pub fn open(&self, stored: &str) -> Result<String, StoreError> {
        let Some(sealed) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let cipher = self.cipher.as_ref().ok_or_else(|| {
            StoreError::Corrupt("a secret is encrypted and SECRETS_KEY is not set".into())
        })?;
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| StoreError::Corrupt("an encrypted secret is not base64".into()))?;
        if raw.len() < 12 {
            return Err(StoreError::Corrupt(
                "an encrypted secret is truncated".into(),
            ));
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = cipher.decrypt(Nonce::from_slice(nonce), ct).map_err(|_| {
            StoreError::Corrupt("an encrypted secret does not open with SECRETS_KEY".into())
        })?;
        String::from_utf8(plain)
            .map_err(|_| StoreError::Corrupt("an encrypted secret is not UTF-8".into()))
    }

    /// A stable, keyed digest of a secret, for finding it without storing it.
    pub fn fingerprint(&self, value: &str) -> String {
        let mut h = Sha1::new();
        h.update(self.salt);
        h.update(value.as_bytes());
        hex::encode(h.finalize())
    }

    /// Check the store's sealed check value against this key (or write it).
    /// `stored` is what the store holds; returns what it should hold.
    pub fn verify_check(&self, stored: Option<&str>) -> Result<Option<String>, String> {
        match (stored, self.has_key()) {
            (None, false) => Ok(None),
            (None, true) => Ok(Some(self.seal(CHECK_PLAINTEXT))),
            (Some(_), false) => {
                Err("SECRETS_KEY: the store holds encrypted secrets; start with the key they were written with".into())
            }
            (Some(s), true) => match self.open(s) {
                Ok(p) if p == CHECK_PLAINTEXT => Ok(None),
                _ => Err("SECRETS_KEY: wrong key: it does not open the secrets in this store".into()),
            },
        }
    }
}

/// Credentials as a backend reads them (possibly sealed).
pub(crate) struct StoredCredentials {
    pub corp_id: String,
    pub token: String,
    pub key: String,
    pub online: bool,
}

/// Open and de-duplicate credential sets per corp. A set that does not open
/// or parse cannot verify anything and is skipped.
pub(crate) fn credential_sets(
    sealer: &Sealer,
    rows: &[StoredCredentials],
) -> Vec<(crate::domain::CorpId, crate::domain::CredentialSet)> {
    use crate::domain::{CorpId, CredentialSet, EncodingAesKey, Secret};
    let mut out: Vec<(CorpId, CredentialSet)> = Vec::new();
    for row in rows {
        let (Ok(corp), Ok(token), Ok(key)) = (
            CorpId::parse(&row.corp_id),
            sealer.open(&row.token),
            sealer.open(&row.key),
        ) else {
            continue;
        };
        let Ok(key) = EncodingAesKey::parse(&key) else {
            continue;
        };
        let set = CredentialSet {
            token: Secret::new(token),
            key,
        };
        if !out.iter().any(|(c, s)| *c == corp && s.same_as(&set)) {
            out.push((corp, set));
        }
    }
    out
}

/// Per-corp counts for operators.
pub(crate) fn corp_summaries(
    sealer: &Sealer,
    rows: &[StoredCredentials],
) -> Vec<super::CorpSummary> {
    let sets = credential_sets(sealer, rows);
    let mut corps: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for row in rows {
        let entry = corps.entry(row.corp_id.as_str()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(row.online);
    }
    corps
        .into_iter()
        .map(|(corp_id, (puppets, online))| super::CorpSummary {
            corp_id: corp_id.to_owned(),
            credential_sets: sets.iter().filter(|(c, _)| c.as_str() == corp_id).count() as u64,
            puppets,
            online,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let a = Sealer::new(Some(&[7; 32]));
        let b = Sealer::new(Some(&[8; 32]));
        let sealed = a.seal("corp-secret");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("corp-secret"));
        assert_ne!(sealed, a.seal("corp-secret"), "randomised");
        assert_eq!(a.open(&sealed).unwrap(), "corp-secret");
        assert!(b.open(&sealed).is_err());
        assert!(Sealer::default().open(&sealed).is_err());
        assert_eq!(a.open("legacy plain").unwrap(), "legacy plain");
        assert_eq!(Sealer::default().seal("x"), "x");
    }

    #[test]
    fn the_check_value_tells_a_wrong_key() {
        let a = Sealer::new(Some(&[7; 32]));
        let check = a.verify_check(None).unwrap().unwrap();
        assert_eq!(a.verify_check(Some(&check)).unwrap(), None);
        assert!(Sealer::new(Some(&[9; 32]))
            .verify_check(Some(&check))
            .unwrap_err()
            .contains("wrong key"));
        assert!(Sealer::default().verify_check(Some(&check)).is_err());
        assert_eq!(Sealer::default().verify_check(None).unwrap(), None);
    }
}
