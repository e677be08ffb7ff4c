//! The shared access-token cache record, one per app (corpid + secret hash).

use crate::clock::UnixMillis;
use crate::domain::Secret;

#[derive(Debug, Clone, Default)]
pub struct TokenRecord {
    pub access_token: Option<Secret>,
    /// Unix ms when WeCom's token expires.
    pub expires_at: UnixMillis,
    pub fetched_at: UnixMillis,
    /// A remembered upstream error (bad secret, rate limit), served until
    /// `neg_until` instead of calling WeCom again.
    pub negative: Option<(i64, String)>,
    pub neg_until: UnixMillis,
    /// Last forced refresh (`force=1`), at most one a minute.
    pub forced_at: UnixMillis,
    pub lease_until: UnixMillis,
}
