//! The embedded store: SQLite (bundled) in WAL mode; accepted callbacks are
//! group-committed and answered once an fsync of the WAL has followed their
//! commit (`wal_sync`), so an acknowledged callback survives a crash of the
//! process or of the machine.
//!
//! One connection behind a mutex, used from the blocking pool and by the
//! group-commit writer: SQLite serialises writers anyway, and a single
//! connection keeps transactions simple and never waits on SQLite's busy
//! handler.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::Semaphore;

mod group_commit;
mod queue;
mod reads;
mod records;
mod registrations;
mod statements;
mod tokens;
mod transfer;
mod wal_sync;

use crate::store::{
    DeliveryStatus, PayloadKind, Sealer, Store, StoreError, Timed, TimingHook, Timings,
};
use group_commit::GroupWriter;
use queue::finish_one;

/// Ordered schema migrations, each applied once (recorded in `schema_migrations`).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../migrations/sqlite/0001_init.sql")),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_tokens.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_kf_indexes.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_events_deliveries.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_channels.sql"),
    ),
    (6, include_str!("../../../migrations/sqlite/0006_lanes.sql")),
    (
        7,
        include_str!("../../../migrations/sqlite/0007_no_kf_history_index.sql"),
    ),
];

/// How SQLite names the unique column that identifies a resend.
const DEDUP_KEY_COLUMN: &str = "events.dedup_key";

#[derive(Clone)]
pub struct SqliteStore {
    /// Claims, outcomes, registrations; shared with the group writer.
    main: SharedConnection,
    /// Read-only connections beside it (WAL readers never wait for the
    /// writer): `scans` for what operators and scrapes ask for (queue depths
    /// over the whole table), so a scrape over a million waiting events
    /// never holds up a claim or an acknowledgement; `lookups` for the
    /// registration reads deliveries make, so they neither wait behind the
    /// group commit's writes nor behind a scan.
    scans: SharedConnection,
    lookups: SharedConnection,
    sealer: Sealer,
    /// Accepted callbacks go through group commit.
    writer: GroupWriter,
    /// Where the writer, WAL sync and checkpoint threads report durations.
    timing: TimingHook,
}

/// A stored status or payload kind that is not one of ours: the row is
/// corrupt, never quietly read as something it is not.
fn parsed<T>(value: ValueRef<'_>, parse: fn(&str) -> Option<T>, what: &str) -> FromSqlResult<T> {
    let text = value.as_str()?;
    parse(text).ok_or_else(|| FromSqlError::Other(format!("unknown {what} {text:.32}").into()))
}

impl FromSql for DeliveryStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        parsed(value, DeliveryStatus::parse, "status")
    }
}

impl FromSql for PayloadKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        parsed(value, PayloadKind::parse, "payload kind")
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
            // Only the dedup key is a duplicate; any other constraint that
            // fails is a bug or a corrupt database, not a resend.
            rusqlite::Error::SqliteFailure(f, Some(message))
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    && message.contains(DEDUP_KEY_COLUMN) =>
            {
                StoreError::DuplicateKey
            }
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::DiskFull(e.to_string())
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
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
///
/// While commits come in, a pass runs every `CHECKPOINT_BUSY`: the group
/// writer still checkpoints once the WAL reaches `wal_autocheckpoint` (so
/// that it restarts from its beginning), and what that costs it is copying
/// the pages this thread has not copied yet. With a pass every 250 ms that
/// was up to 40 ms of one batch's acknowledgements (issue 16: fast case,
/// three runs, maxima 31/116/30 ms, p99 18.3 ms); every 20 ms, 26/24/19 ms
/// and 12.7 ms. Idle, a pass every `CHECKPOINT_IDLE`.
fn start_checkpointer(
    path: &Path,
    store: Weak<Mutex<Connection>>,
    timing: TimingHook,
) -> Result<(), StoreError> {
    const CHECKPOINT_BUSY: std::time::Duration = std::time::Duration::from_millis(20);
    const CHECKPOINT_IDLE: std::time::Duration = std::time::Duration::from_millis(250);
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut last = (0_i64, 0_i64);
            let mut pause = CHECKPOINT_IDLE;
            while store.strong_count() > 0 {
                std::thread::sleep(pause);
                // PASSIVE never blocks the writer; a busy moment just waits for the next round.
                let pass = timing.time(Timed::Checkpoint, || {
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    })
                });
                match pass {
                    // (frames in the WAL, frames copied): unchanged means no commit since.
                    Ok(frames) => {
                        pause = if frames == last {
                            CHECKPOINT_IDLE
                        } else {
                            CHECKPOINT_BUSY
                        };
                        last = frames;
                    }
                    Err(e) => {
                        pause = CHECKPOINT_IDLE;
                        tracing::debug!(error = %e, "checkpoint skipped");
                    }
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
        // Accepted callbacks and delivery outcomes are answered by the group
        // writer after an fsync of the WAL (`wal_sync`). The other writes on
        // this connection (claims, registrations) rely on NORMAL: they survive
        // a crash of the process; after a power loss a just-claimed delivery
        // may be claimed again (at least once) and a just-made registration
        // redone.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let main = SharedConnection::new(conn);
        let timing = TimingHook::default();
        start_checkpointer(&path, Arc::downgrade(&main.conn), timing.clone())?;
        let store = Self {
            writer: GroupWriter::start(
                main.conn.clone(),
                finish_one,
                wal_sync::WalSyncer::start(&path, timing.clone())?,
                timing.clone(),
            )?,
            main,
            scans: SharedConnection::reader(&path)?,
            lookups: SharedConnection::reader(&path)?,
            sealer,
            timing,
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
        self.main.lock()
    }

    /// Run on the main connection.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.main.run(f).await
    }

    /// Run a scan on the `scans` connection.
    async fn scan<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.scans.run(move |c| f(c)).await
    }

    /// Run a point read on the `lookups` connection.
    async fn look_up<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.lookups.run(move |c| f(c)).await
    }
}

/// A connection used by one store call at a time: that call waits in a
/// blocking thread, the rest wait for their turn as tasks. (Found by the
/// backlog test: with 200 kfIds parking at once, calls queued on the mutex
/// in 260 blocking threads.)
#[derive(Clone)]
struct SharedConnection {
    conn: Arc<Mutex<Connection>>,
    turn: Arc<Semaphore>,
}

impl SharedConnection {
    fn new(conn: Connection) -> Self {
        Self {
            conn: Arc::new(Mutex::new(conn)),
            turn: Arc::new(Semaphore::new(1)),
        }
    }

    /// A read-only connection to the store at `path`.
    fn reader(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "query_only", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self::new(conn))
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
        let turn = self
            .turn
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Other("store closed".into()))?;
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let done = f(&mut *shared.lock()?);
            drop(turn);
            done
        })
        .await
        .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }
}

impl SqliteStore {
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

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    fn report_timings(&self, to: Arc<dyn Timings>) {
        self.timing.report_to(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(sql: &str) -> StoreError {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE events (id TEXT PRIMARY KEY, dedup_key TEXT UNIQUE, body TEXT NOT NULL);
             INSERT INTO events VALUES ('a', 'k', 'b');",
        )
        .unwrap();
        c.execute_batch(sql).unwrap_err().into()
    }

    #[test]
    fn only_the_dedup_key_is_a_duplicate() {
        assert!(matches!(
            failure("INSERT INTO events VALUES ('b', 'k', 'b')"),
            StoreError::DuplicateKey
        ));
        for other in [
            "INSERT INTO events VALUES ('a', 'other', 'b')",
            "INSERT INTO events VALUES ('c', 'other', NULL)",
        ] {
            let e = failure(other);
            assert!(matches!(e, StoreError::Other(_)), "{other}: {e:?}");
        }
    }
}
