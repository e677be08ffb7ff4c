//! The shared access-token cache on the embedded store.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::clock::UnixMillis;
use crate::domain::Secret;
use crate::store::{StoreError, TokenCache, TokenRecord};

#[async_trait]
impl TokenCache for SqliteStore {
    async fn get_token(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        let key = key.to_owned();
        let sealer = self.sealer.clone();
        self.run(move |c| {
            let row = c
                .query_row(
                    "SELECT access_token, expires_at, fetched_at, neg_errcode, neg_errmsg, neg_until, forced_at, lease_until
                     FROM access_tokens WHERE key = ?1",
                    [key],
                    |r| {
                        let code: Option<i64> = r.get(3)?;
                        let msg: Option<String> = r.get(4)?;
                        Ok((
                            r.get::<_, Option<String>>(0)?,
                            TokenRecord {
                                access_token: None,
                                expires_at: r.get(1)?,
                                fetched_at: r.get(2)?,
                                negative: code.map(|c| (c, msg.unwrap_or_default())),
                                neg_until: r.get(5)?,
                                forced_at: r.get(6)?,
                                lease_until: r.get(7)?,
                            },
                        ))
                    },
                )
                .optional()?;
            row.map(|(token, mut record)| {
                record.access_token = token.map(|t| sealer.open(&t)).transpose()?.map(Secret::new);
                Ok(record)
            })
            .transpose()
        })
        .await
    }

    async fn try_lease_token(
        &self,
        key: &str,
        owner: &str,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<bool, StoreError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(move |c| {
            let n = c.execute(
                "INSERT INTO access_tokens (key, lease_owner, lease_until) VALUES (?1, ?2, ?4)
                 ON CONFLICT (key) DO UPDATE SET lease_owner = excluded.lease_owner, lease_until = excluded.lease_until
                 WHERE access_tokens.lease_until <= ?3",
                params![key, owner, now, until],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn save_token(&self, key: &str, record: &TokenRecord) -> Result<(), StoreError> {
        let (key, r) = (key.to_owned(), record.clone());
        let sealed = r
            .access_token
            .as_ref()
            .map(|t| self.sealer.seal(t.expose()));
        let fingerprint = r
            .access_token
            .as_ref()
            .map(|t| self.sealer.fingerprint(t.expose()));
        self.run(move |c| {
            c.execute(
                "INSERT INTO access_tokens (key, access_token, access_token_fp, expires_at, fetched_at, neg_errcode, neg_errmsg, neg_until, forced_at, lease_owner, lease_until)
                 VALUES (?1, ?2, ?9, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 0)
                 ON CONFLICT (key) DO UPDATE SET access_token = excluded.access_token,
                    access_token_fp = excluded.access_token_fp, expires_at = excluded.expires_at,
                    fetched_at = excluded.fetched_at, neg_errcode = excluded.neg_errcode, neg_errmsg = excluded.neg_errmsg,
                    neg_until = excluded.neg_until, forced_at = MAX(access_tokens.forced_at, excluded.forced_at),
                    lease_owner = NULL, lease_until = 0",
                params![
                    key,
                    sealed,
                    r.expires_at,
                    r.fetched_at,
                    r.negative.as_ref().map(|n| n.0),
                    r.negative.as_ref().map(|n| n.1.clone()),
                    r.neg_until,
                    r.forced_at,
                    fingerprint
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn release_token_lease(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.run(move |c| {
            c.execute(
                "UPDATE access_tokens SET lease_owner = NULL, lease_until = 0 WHERE key = ?1 AND lease_owner = ?2",
                params![key, owner],
            )?;
            Ok(())
        })
        .await
    }

    async fn mark_token_forced(
        &self,
        key: &str,
        now: UnixMillis,
        not_before: UnixMillis,
    ) -> Result<bool, StoreError> {
        let key = key.to_owned();
        self.run(move |c| {
            let n = c.execute(
                "INSERT INTO access_tokens (key, forced_at) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET forced_at = excluded.forced_at WHERE access_tokens.forced_at <= ?3",
                params![key, now, not_before],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn token_keys(&self) -> Result<Vec<String>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare("SELECT key FROM access_tokens ORDER BY key")?;
            let keys = stmt.query_map([], |r| r.get(0))?;
            Ok(keys.collect::<Result<Vec<String>, _>>()?)
        })
        .await
    }

    async fn invalidate_access_token(&self, token: &str) -> Result<u64, StoreError> {
        let fingerprint = self.sealer.fingerprint(token);
        self.run(move |c| {
            let n = c.execute(
                "UPDATE access_tokens SET access_token = NULL, access_token_fp = NULL, expires_at = 0
                 WHERE access_token_fp = ?1",
                [fingerprint],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
