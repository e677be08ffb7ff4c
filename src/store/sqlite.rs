//! The embedded store: SQLite (bundled) in WAL mode; accepted callbacks are
//! group-committed with `synchronous=FULL`, so an acknowledged callback
//! survives a crash of the process or of the machine.
//!
//! One connection behind a mutex, used from the blocking pool and by the
//! group-commit writer: SQLite serialises writers anyway, and a single
//! connection keeps transactions simple and never waits on SQLite's busy
//! handler.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::group_commit::GroupWriter;
use super::seal::{corp_summaries, credential_sets, StoredCredentials};
use super::{
    AttemptResult, Claim, CorpSummary, EventFilter, EventStatus, InsertOutcome, KfSummary,
    NewEvent, PayloadKind, Sealer, Store, StoreError, StoredEvent, TokenRecord,
};
use crate::domain::{
    CorpId, CredentialSet, EncodingAesKey, EndpointUrl, KfId, Puppet, Registration, Secret,
};

/// Ordered schema migrations, each applied once (recorded in `schema_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_tokens.sql")),
    (
        3,
        include_str!("../../migrations/sqlite/0003_kf_indexes.sql"),
    ),
];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    sealer: Sealer,
    /// Accepted callbacks go through group commit.
    writer: GroupWriter,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::DuplicateKey
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::SystemIoFailure
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

/// Copy the WAL back into the database from a thread and connection of its
/// own, so that a group commit never pays for it. Stops with the store.
fn start_checkpointer(path: &Path, store: Weak<Mutex<Connection>>) -> Result<(), StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while store.strong_count() > 0 {
                std::thread::sleep(std::time::Duration::from_millis(250));
                // PASSIVE never blocks the writer; a busy moment just waits for the next round.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "checkpoint skipped");
                }
            }
        })
        .map_err(|e| StoreError::Other(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

impl SqliteStore {
    /// Open (creating) `dir/wxkf-manager.sqlite3` and apply pending migrations.
    pub fn open(dir: &Path, sealer: Sealer) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join("wxkf-manager.sqlite3");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Checkpoints run beside the writer (`start_checkpointer`); this is
        // only the safety net should that thread ever fall far behind.
        conn.pragma_update(None, "wal_autocheckpoint", 20_000)?;
        // Accepted callbacks are written by the group writer with FULL. This
        // connection keeps delivery state and registrations: NORMAL survives a
        // crash of the process; after a power loss a just-finished delivery may
        // be repeated (at least once) and a just-made registration redone.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let conn = Arc::new(Mutex::new(conn));
        start_checkpointer(&path, Arc::downgrade(&conn))?;
        let store = Self {
            writer: GroupWriter::start(conn.clone(), finish_one)?,
            conn,
            sealer,
        };
        store.migrate_blocking()?;
        store.check_secrets_key()?;
        Ok(store)
    }

    /// Apply pending migrations; returns how many ran.
    pub fn migrate_blocking(&self) -> Result<usize, StoreError> {
        let mut conn = self.lock()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
        )?;
        let mut applied = 0;
        for (version, sql) in MIGRATIONS {
            let done: Option<i64> = tx
                .query_row(
                    "SELECT version FROM schema_migrations WHERE version = ?1",
                    [version],
                    |r| r.get(0),
                )
                .optional()?;
            if done.is_none() {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now'))",
                    [version],
                )?;
                applied += 1;
            }
        }
        tx.commit()?;
        Ok(applied)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Other("connection mutex poisoned".into()))
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = store.lock()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }
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

    /// Refuse to start with a SECRETS_KEY other than the one the store's
    /// secrets were written with (or without one when they are sealed).
    fn check_secrets_key(&self) -> Result<(), StoreError> {
        let conn = self.lock()?;
        let stored: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'secrets_check'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match self.sealer.verify_check(stored.as_deref()) {
            Ok(Some(check)) => {
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('secrets_check', ?1)",
                    [check],
                )?;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(reason) => Err(StoreError::Config(reason)),
        }
    }
}

/// Record one attempt's outcome, guarded by its claim id.
fn finish_one(
    c: &Connection,
    (id, claim_id, result): &(String, String, AttemptResult),
    now: i64,
) -> Result<bool, StoreError> {
    // Constant statements, so each is prepared once and cached.
    macro_rules! finish_sql {
        ($set:literal) => {
            concat!(
                "UPDATE events SET ",
                $set,
                ", lease_owner = NULL, lease_until = 0, claim_id = NULL, updated_at = ?3",
                " WHERE id = ?1 AND claim_id = ?2"
            )
        };
    }
    let n = match result {
        AttemptResult::Delivered => c
            .prepare_cached(finish_sql!(
                "status = 'delivered', attempts = attempts + 1, delivered_at = ?3, last_error = NULL"
            ))?
            .execute(params![id, claim_id, now])?,
        AttemptResult::Retry {
            next_attempt_at,
            error,
        } => c
            .prepare_cached(finish_sql!(
                "status = 'pending', attempts = attempts + 1, next_attempt_at = ?4, last_error = ?5"
            ))?
            .execute(params![id, claim_id, now, next_attempt_at, error])?,
        AttemptResult::Dead { error } => c
            .prepare_cached(finish_sql!(
                "status = 'dead', attempts = attempts + 1, last_error = ?4"
            ))?
            .execute(params![id, claim_id, now, error])?,
        AttemptResult::Parked => c
            .prepare_cached(finish_sql!(
                "status = 'parked', last_error = 'no online puppet for this kfId'"
            ))?
            .execute(params![id, claim_id, now])?,
        AttemptResult::Superseded { by } => c
            .prepare_cached(finish_sql!("status = 'superseded', superseded_by = ?4"))?
            .execute(params![id, claim_id, now, by])?,
    };
    Ok(n > 0)
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
    let last_online_at: Option<i64> = row.get("last_online_at")?;
    let offline_since: Option<i64> = row.get("offline_since")?;
    Ok(build_puppet(
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
    last_online_at: Option<i64>,
    offline_since: Option<i64>,
) -> Result<Puppet, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("puppet {kf_id:.64}: invalid {what}"));
    Ok(Puppet {
        registration: Registration {
            kf_id: KfId::parse(kf_id).map_err(|_| corrupt("kfId"))?,
            kf_name,
            endpoint: EndpointUrl::parse(endpoint).map_err(|_| corrupt("endpoint"))?,
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

const EVENT_COLUMNS: &str = "id, corp_id, kf_id, kind, body, query, coalesce, status, attempts, \
     received_at, window_start, next_attempt_at, last_error, delivered_at, claim_id";

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let kind: String = row.get("kind")?;
    let status: String = row.get("status")?;
    Ok(StoredEvent {
        id: row.get("id")?,
        corp_id: row.get("corp_id")?,
        kf_id: row.get("kf_id")?,
        kind: PayloadKind::parse(&kind).unwrap_or(PayloadKind::Xml),
        body: row.get("body")?,
        query: row.get("query")?,
        coalesce: row.get("coalesce")?,
        status: EventStatus::parse(&status).unwrap_or(EventStatus::Dead),
        attempts: row.get("attempts")?,
        received_at: row.get("received_at")?,
        window_start: row.get("window_start")?,
        next_attempt_at: row.get("next_attempt_at")?,
        last_error: row.get("last_error")?,
        delivered_at: row.get("delivered_at")?,
        claim_id: row.get("claim_id")?,
    })
}

/// Lease one event inside the claim transaction; returns the leased event if
/// it was still waiting and unleased.
fn lease(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    claim: &Claim,
) -> Result<Option<StoredEvent>, StoreError> {
    let claim_id = uuid::Uuid::new_v4().to_string();
    let changed = tx
        .prepare_cached(
            "UPDATE events SET lease_owner = ?1, lease_until = ?2, claim_id = ?3, status = 'pending', updated_at = ?4
             WHERE seq = ?5 AND status IN ('pending','parked') AND lease_until <= ?4",
        )?
        .execute(params![claim.owner, claim.lease_until, claim_id, claim.now, seq])?;
    if changed == 0 {
        return Ok(None);
    }
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1");
    Ok(Some(
        tx.prepare_cached(&sql)?.query_row([seq], event_from_row)?,
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn get_puppet(&self, kf_id: &KfId) -> Result<Option<Puppet>, StoreError> {
        let kf = kf_id.as_str().to_owned();
        let sealer = self.sealer.clone();
        self.run(move |c| {
            c.query_row("SELECT * FROM puppets WHERE kf_id = ?1", [kf], |r| {
                puppet_from_row(r, &sealer)
            })
            .optional()?
            .transpose()
        })
        .await
    }

    async fn save_registration(&self, reg: &Registration, now: i64) -> Result<(), StoreError> {
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
        now: i64,
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
        now: i64,
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
        now: i64,
    ) -> Result<bool, StoreError> {
        let (kf, endpoint) = (kf_id.as_str().to_owned(), endpoint.as_str().to_owned());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE puppets SET endpoint = ?2, updated_at = ?3 WHERE kf_id = ?1",
                params![kf, endpoint, now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn insert_event(&self, event: &NewEvent) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(event.clone()).await
    }

    async fn claim_due(&self, claim: &Claim, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let claim = claim.clone();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let candidates: Vec<(i64, String, Option<String>, bool)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT seq, corp_id, kf_id, coalesce FROM events
                     WHERE status = 'pending' AND next_attempt_at <= ?1 AND lease_until <= ?1
                     ORDER BY next_attempt_at, seq LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![claim.now, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
                rows.collect::<Result<_, _>>()?
            };
            let mut leased = Vec::new();
            for (seq, corp, kf, coalesce) in candidates {
                let target = match (&kf, coalesce) {
                    (Some(kf), true) => {
                        // The newest waiting wake-up of this kfId stands for all older ones.
                        let newest: Option<i64> = tx
                            .prepare_cached(
                                "SELECT MAX(seq) FROM events WHERE corp_id = ?1 AND kf_id = ?2 AND coalesce = 1
                                   AND status IN ('pending','parked') AND lease_until <= ?3",
                            )?
                            .query_row(params![corp, kf, claim.now], |r| r.get(0))?;
                        let Some(newest) = newest else { continue };
                        let newest_id: String = tx
                            .prepare_cached("SELECT id FROM events WHERE seq = ?1")?
                            .query_row([newest], |r| r.get(0))?;
                        tx.prepare_cached(
                            "UPDATE events SET status = 'superseded', superseded_by = ?4, updated_at = ?3
                             WHERE corp_id = ?1 AND kf_id = ?2 AND coalesce = 1 AND seq < ?5
                               AND status IN ('pending','parked') AND lease_until <= ?3",
                        )?
                        .execute(params![corp, kf, claim.now, newest_id, newest])?;
                        newest
                    }
                    _ => seq,
                };
                if let Some(event) = lease(&tx, target, &claim)? {
                    leased.push(event);
                }
            }
            tx.commit()?;
            Ok(leased)
        })
        .await
    }

    async fn finish_attempt(
        &self,
        event_id: &str,
        claim_id: &str,
        result: &AttemptResult,
        now: i64,
    ) -> Result<bool, StoreError> {
        let item = (event_id.to_owned(), claim_id.to_owned(), result.clone());
        self.run(move |c| finish_one(c, &item, now)).await
    }

    async fn finish_attempts(
        &self,
        items: &[(String, String, AttemptResult)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        self.writer.finish(items.to_vec(), now).await
    }

    async fn wake_kf(&self, corp_id: &CorpId, kf_id: &KfId, now: i64) -> Result<u64, StoreError> {
        let (corp, kf) = (corp_id.as_str().to_owned(), kf_id.as_str().to_owned());
        self.run(move |c| {
            let n = c.execute(
                "UPDATE events SET status = 'pending', next_attempt_at = ?3, updated_at = ?3
                 WHERE corp_id = ?1 AND kf_id = ?2 AND status IN ('pending','parked')",
                params![corp, kf, now],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE events SET lease_owner = NULL, lease_until = 0, claim_id = NULL WHERE lease_owner = ?1",
                [owner],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1");
            Ok(c.query_row(&sql, [id], event_from_row).optional()?)
        })
        .await
    }

    async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        self.run(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_attempt_at) FROM events WHERE status = 'pending' AND lease_until = 0",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let f = filter.clone();
        self.run(move |c| {
            let sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR corp_id = ?2) AND (?3 IS NULL OR kf_id = ?3)
                 ORDER BY seq DESC LIMIT ?4 OFFSET ?5"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![f.status.map(EventStatus::as_str), f.corp_id, f.kf_id, f.limit as i64, f.offset as i64],
                event_from_row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn redrive(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE events SET status = 'pending', next_attempt_at = ?2, window_start = ?2, updated_at = ?2
                 WHERE id = ?1 AND status IN ('dead','parked')",
                params![id, now],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn redrive_dead_of_kf(&self, kf_id: &KfId, now: i64) -> Result<u64, StoreError> {
        let kf = kf_id.as_str().to_owned();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE events SET status = 'pending', next_attempt_at = ?2, window_start = ?2, updated_at = ?2
                 WHERE kf_id = ?1 AND status = 'dead'",
                params![kf, now],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_event(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| Ok(c.execute("DELETE FROM events WHERE id = ?1", [id])? > 0))
            .await
    }

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
        now: i64,
        until: i64,
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
        now: i64,
        not_before: i64,
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

    async fn queue_stats(&self) -> Result<Vec<(EventStatus, u64, Option<i64>)>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT status, COUNT(*), MIN(received_at) FROM events
                 WHERE status IN ('pending','parked','dead') GROUP BY status",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (status, count, oldest) = row?;
                if let Some(status) = EventStatus::parse(&status) {
                    out.push((status, count as u64, oldest));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn kf_summary(&self, kf_id: &KfId) -> Result<KfSummary, StoreError> {
        let kf = kf_id.as_str().to_owned();
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'parked'), 0),
                        COALESCE(SUM(status = 'dead'), 0), MAX(delivered_at)
                 FROM events WHERE kf_id = ?1",
                [kf],
                |r| {
                    Ok(KfSummary {
                        pending: r.get::<_, i64>(0)? as u64,
                        parked: r.get::<_, i64>(1)? as u64,
                        dead: r.get::<_, i64>(2)? as u64,
                        last_delivered_at: r.get(3)?,
                    })
                },
            )?)
        })
        .await
    }

    async fn purge(&self, before: i64, dead_before: i64) -> Result<u64, StoreError> {
        self.run(move |c| {
            let n = c.execute(
                "DELETE FROM events WHERE (status IN ('delivered','superseded','unroutable') AND updated_at < ?1)
                                       OR (status = 'dead' AND updated_at < ?2)",
                params![before, dead_before],
            )?;
            Ok(n as u64)
        })
        .await
    }
}
