//! Rebuilding a puppet from the fields either backend stores.

use super::StoreError;
use crate::clock::UnixMillis;
use crate::domain::{
    CorpId, CredentialSet, EncodingAesKey, EndpointUrl, KfId, Puppet, Registration, Secret,
};

/// Rebuild a puppet from stored fields, re-validating them (a store may hold
/// documents written by another program, such as the old manager).
#[allow(clippy::too_many_arguments)]
pub(crate) fn build_puppet(
    kf_id: &str,
    kf_name: String,
    endpoint: &str,
    corp_id: &str,
    corp_secret: String,
    token: String,
    key: &str,
    online: bool,
    last_online_at: Option<UnixMillis>,
    offline_since: Option<UnixMillis>,
) -> Result<Puppet, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("puppet {kf_id:.64}: invalid {what}"));
    Ok(Puppet {
        registration: Registration {
            kf_id: KfId::parse(kf_id).map_err(|_| corrupt("kfId"))?,
            kf_name,
            endpoint: EndpointUrl::from_stored(endpoint).map_err(|_| corrupt("endpoint"))?,
            corp_id: CorpId::parse(corp_id).map_err(|_| corrupt("corpId"))?,
            corp_secret: Secret::new(corp_secret),
            credentials: CredentialSet {
                token: Secret::new(token),
                key: EncodingAesKey::parse(key).map_err(|_| corrupt("encodingAESKey"))?,
            },
        },
        online,
        last_online_at,
        offline_since,
    })
}
