//! Group commit for the embedded store: accepted callbacks that arrive
//! together are written in one transaction, so one fsync covers many
//! acknowledgements. Each caller is answered only when the transaction that
//! holds its record has committed: no acknowledgement before its write.
//!
//! One writer thread drains whatever is queued (up to `MAX_BATCH`), takes the
//! store's connection, inserts each row (a duplicate fails only its own
//! statement, not the batch), commits with `synchronous=FULL` (the rest of
//! the store runs with NORMAL), then answers every caller. Sharing the one
//! connection means no SQLite lock contention and no busy-wait sleeps.

use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};
use tokio::sync::{mpsc, oneshot};

use super::{EventStatus, InsertOutcome, NewEvent, StoreError};
use crate::domain::KfId;

const MAX_BATCH: usize = 512;
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

#[derive(Clone)]
pub struct GroupWriter {
    queue: mpsc::Sender<(NewEvent, Reply)>,
}

impl GroupWriter {
    /// Start the writer thread on the store's connection.
    pub fn start(conn: Arc<Mutex<Connection>>) -> Result<Self, StoreError> {
        let (queue, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-group-commit".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Other(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { queue })
    }

    pub async fn insert(&self, event: NewEvent) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        // A full queue makes callers wait here: back-pressure, not loss.
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer thread has stopped".into()))?
    }
}

fn run(conn: Arc<Mutex<Connection>>, mut rx: mpsc::Receiver<(NewEvent, Reply)>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let written = match conn.lock() {
            Ok(mut conn) => write_batch(&mut conn, &batch),
            Err(_) => Err(StoreError::Other("connection mutex poisoned".into())),
        };
        match written {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// One transaction for the whole batch; per-row outcomes.
fn write_batch(
    conn: &mut Connection,
    batch: &[(NewEvent, Reply)],
) -> Result<Vec<Result<InsertOutcome, StoreError>>, StoreError> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    let written = insert_all(conn, batch);
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    written
}

fn insert_all(
    conn: &mut Connection,
    batch: &[(NewEvent, Reply)],
) -> Result<Vec<Result<InsertOutcome, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO events (id, corp_id, kf_id, dedup_key, kind, body, query, coalesce, status,
                                 received_at, window_start, next_attempt_at, updated_at,
                                 lease_owner, lease_until, claim_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?10, ?10, ?11, ?12, ?13)",
        )?;
        for (e, _) in batch {
            let status = if e.kf_id.is_some() {
                EventStatus::Pending
            } else {
                EventStatus::Unroutable
            };
            let inserted = stmt.execute(params![
                e.id,
                e.corp_id.as_str(),
                e.kf_id.as_ref().map(KfId::as_str),
                e.dedup_key,
                e.kind.as_str(),
                e.body,
                e.query,
                e.coalesce,
                status.as_str(),
                e.received_at,
                e.lease.as_ref().map(|l| l.owner.as_str()),
                e.lease.as_ref().map_or(0, |l| l.until),
                e.lease.as_ref().map(|l| l.claim_id.as_str()),
            ]);
            outcomes.push(match inserted.map_err(StoreError::from) {
                Ok(_) => Ok(InsertOutcome::Stored),
                Err(StoreError::DuplicateKey) => Ok(InsertOutcome::Duplicate),
                Err(other) => Err(other),
            });
        }
    }
    tx.commit()?;
    Ok(outcomes)
}
