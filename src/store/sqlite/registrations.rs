//! Registrations on the embedded store: the `puppets` table, and the corp
//! credentials derived from it.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;
use crate::clock::UnixMillis;
use crate::domain::{CorpId, CredentialSet, EndpointUrl, KfId, Puppet, Registration};
use crate::store::seal::{corp_summaries, credential_sets, StoredCredentials};
use crate::store::{CorpSummary, Registrations, Sealer, StoreError};

#[async_trait]
impl Registrations for SqliteStore {
    async fn get_puppet(&self, kf_id: &KfId) -> Result<Option<Puppet>, StoreError> {
        let kf = kf_id.as_str().to_owned();
        let sealer = self.sealer.clone();
        // On the reader connection: deliveries look puppets up often (a
        // puppet that is away, once per wake-up), and on the main connection
        // each lookup would wait its turn beside the group commit's writes.
        self.look_up(move |c| {
            c.prepare_cached("SELECT * FROM puppets WHERE kf_id = ?1")?
                .query_row([kf], |r| puppet_from_row(r, &sealer))
                .optional()?
                .transpose()
        })
        .await
    }

    async fn save_registration(
        &self,
        reg: &Registration,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let r = reg.clone();
        let seal = |s: &str| self.sealer.seal(s);
        let (secret, token, key) = (
            seal(r.corp_secret.expose()),
            seal(r.credentials.token.expose()),
            seal(r.credentials.key.expose()),
        );
        self.run(move |c| {
            c.execute(
                "INSERT INTO puppets (kf_id, kf_name, endpoint, corp_id, corp_secret, token, encoding_aes_key,
                                      online, last_online_at, offline_since, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, NULL, ?8)
                 ON CONFLICT (kf_id) DO UPDATE SET
                    kf_name = excluded.kf_name, endpoint = excluded.endpoint, corp_id = excluded.corp_id,
                    corp_secret = excluded.corp_secret, token = excluded.token,
                    encoding_aes_key = excluded.encoding_aes_key, online = 1,
                    last_online_at = excluded.last_online_at, offline_since = NULL,
                    updated_at = excluded.updated_at",
                params![r.kf_id.as_str(), r.kf_name, r.endpoint.as_str(), r.corp_id.as_str(), secret, token, key, now],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_offline(
        &self,
        kf_id: &KfId,
        corp_id: &CorpId,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let (kf, corp) = (kf_id.as_str().to_owned(), corp_id.as_str().to_owned());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE puppets SET online = 0, offline_since = ?3, updated_at = ?3
                 WHERE kf_id = ?1 AND corp_id = ?2",
                params![kf, corp, now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_unreachable(
        &self,
        kf_id: &KfId,
        corp_id: &CorpId,
        registered_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let (kf, corp) = (kf_id.as_str().to_owned(), corp_id.as_str().to_owned());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE puppets SET online = 0, offline_since = ?3, updated_at = ?3
                 WHERE kf_id = ?1 AND corp_id = ?2 AND online = 1
                   AND (?4 IS NULL OR last_online_at = ?4)",
                params![kf, corp, now, registered_at],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn corp_credentials(&self, corp_id: &CorpId) -> Result<Vec<CredentialSet>, StoreError> {
        let rows = self
            .stored_credentials(Some(corp_id.as_str().to_owned()))
            .await?;
        Ok(credential_sets(&self.sealer, &rows)
            .into_iter()
            .map(|(_, set)| set)
            .collect())
    }

    async fn all_credentials(&self) -> Result<Vec<(CorpId, CredentialSet)>, StoreError> {
        let rows = self.stored_credentials(None).await?;
        Ok(credential_sets(&self.sealer, &rows))
    }

    async fn list_puppets(
        &self,
        corp_id: Option<&CorpId>,
        online: Option<bool>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Puppet>, StoreError> {
        let corp = corp_id.map(|c| c.as_str().to_owned());
        let sealer = self.sealer.clone();
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT * FROM puppets WHERE (?1 IS NULL OR corp_id = ?1) AND (?2 IS NULL OR online = ?2)
                 ORDER BY kf_id LIMIT ?3 OFFSET ?4",
            )?;
            let rows = stmt.query_map(params![corp, online, limit as i64, offset as i64], |r| {
                puppet_from_row(r, &sealer)
            })?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row??);
            }
            Ok(out)
        })
        .await
    }

    async fn count_puppets(&self, corp_id: &CorpId) -> Result<u64, StoreError> {
        let corp = corp_id.as_str().to_owned();
        self.run(move |c| {
            let n: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM puppets WHERE corp_id = ?1")?
                .query_row([corp], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn delete_puppet(&self, kf_id: &KfId) -> Result<bool, StoreError> {
        let kf = kf_id.as_str().to_owned();
        self.run(move |c| Ok(c.execute("DELETE FROM puppets WHERE kf_id = ?1", [kf])? > 0))
            .await
    }

    async fn list_corps(&self) -> Result<Vec<CorpSummary>, StoreError> {
        let rows = self.stored_credentials(None).await?;
        Ok(corp_summaries(&self.sealer, &rows))
    }

    async fn rotate_credentials(
        &self,
        corp_id: &CorpId,
        new: &CredentialSet,
        previous_token: Option<&str>,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let corp = corp_id.as_str().to_owned();
        let previous = previous_token.map(str::to_owned);
        let sealer = self.sealer.clone();
        let (token, key) = (
            sealer.seal(new.token.expose()),
            sealer.seal(new.key.expose()),
        );
        self.run(move |c| {
            let tx = c.transaction()?;
            let targets: Vec<String> = {
                let mut stmt = tx.prepare_cached("SELECT kf_id, token FROM puppets WHERE corp_id = ?1")?;
                let rows = stmt.query_map([&corp], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                let mut targets = Vec::new();
                for row in rows {
                    let (kf, stored) = row?;
                    // Sealed values are randomised: compare what they open to.
                    let matches = match &previous {
                        None => true,
                        Some(p) => sealer.open(&stored).is_ok_and(|t| t == *p),
                    };
                    if matches {
                        targets.push(kf);
                    }
                }
                targets
            };
            for kf in &targets {
                tx.execute(
                    "UPDATE puppets SET token = ?2, encoding_aes_key = ?3, updated_at = ?4 WHERE kf_id = ?1",
                    params![kf, token, key, now],
                )?;
            }
            tx.commit()?;
            Ok(targets.len() as u64)
        })
        .await
    }

    async fn move_puppet(
        &self,
        kf_id: &KfId,
        endpoint: &EndpointUrl,
        now: UnixMillis,
    ) -> Result<Option<CorpId>, StoreError> {
        let (kf, endpoint) = (kf_id.as_str().to_owned(), endpoint.as_str().to_owned());
        let corp: Option<String> = self
            .run(move |c| {
                Ok(c.query_row(
                    "UPDATE puppets SET endpoint = ?2, online = 1, last_online_at = ?3,
                       offline_since = NULL, updated_at = ?3
                     WHERE kf_id = ?1 RETURNING corp_id",
                    params![kf, endpoint, now],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?;
        corp.map(|c| {
            CorpId::parse(&c).map_err(|_| StoreError::Corrupt(format!("puppet {kf_id}: corp id")))
        })
        .transpose()
    }
}

fn puppet_from_row(row: &Row<'_>, sealer: &Sealer) -> rusqlite::Result<Result<Puppet, StoreError>> {
    let kf_id: String = row.get("kf_id")?;
    let kf_name: String = row.get("kf_name")?;
    let endpoint: String = row.get("endpoint")?;
    let corp_id: String = row.get("corp_id")?;
    let opened = |column: &str| -> rusqlite::Result<Result<String, StoreError>> {
        Ok(sealer.open(&row.get::<_, String>(column)?))
    };
    let (corp_secret, token, key) = match (
        opened("corp_secret")?,
        opened("token")?,
        opened("encoding_aes_key")?,
    ) {
        (Ok(s), Ok(t), Ok(k)) => (s, t, k),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Ok(Err(e)),
    };
    let online: bool = row.get("online")?;
    let last_online_at: Option<UnixMillis> = row.get("last_online_at")?;
    let offline_since: Option<UnixMillis> = row.get("offline_since")?;
    Ok(crate::store::puppet::build_puppet(
        &kf_id,
        kf_name,
        &endpoint,
        &corp_id,
        corp_secret,
        token,
        &key,
        online,
        last_online_at,
        offline_since,
    ))
}

impl SqliteStore {
    /// (corp, token, key, online) of every puppet, or of one corp's.
    async fn stored_credentials(
        &self,
        corp: Option<String>,
    ) -> Result<Vec<StoredCredentials>, StoreError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT corp_id, token, encoding_aes_key, online FROM puppets WHERE (?1 IS NULL OR corp_id = ?1)",
            )?;
            let rows = stmt.query_map([corp], |r| {
                Ok(StoredCredentials {
                    corp_id: r.get(0)?,
                    token: r.get(1)?,
                    key: r.get(2)?,
                    online: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }
}
