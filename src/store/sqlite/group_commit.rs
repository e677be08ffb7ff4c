//! Group commit for the embedded store: accepted callbacks that arrive
//! together are written in one transaction, so one fsync covers many
//! acknowledgements. Each caller is answered only once the transaction that
//! holds its record is on disk: no acknowledgement before its write.
//!
//! One writer thread drains whatever is queued (up to `MAX_BATCH` jobs),
//! takes the store's connection, inserts each row (a duplicate fails only its
//! own statement, not the batch) and records the delivery outcomes queued
//! beside them, commits, and hands the batch's answers to the WAL sync
//! thread (`wal_sync`), which sends them once an fsync of the WAL that began
//! after the commit has returned. The writer does not wait for the disk: it
//! builds the next batch while the last one is synced. One thread for both
//! hot writers means they never wait for each other's lock.

use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::wal_sync::WalSyncer;
use crate::clock::UnixMillis;
use crate::domain::KfId;
use crate::store::{InsertOutcome, NewEvent, Outcome, StoreError, Timed, TimingHook};

const MAX_BATCH: usize = 512;
const QUEUE: usize = 4096;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Records one outcome on the open transaction; false when the claim no
/// longer holds.
pub type FinishFn = fn(&Connection, &Outcome, UnixMillis) -> Result<bool, StoreError>;

enum Job {
    Insert(NewEvent, Reply<InsertOutcome>),
    Finish(Vec<Outcome>, UnixMillis, Reply<Vec<bool>>),
}

#[derive(Clone)]
pub struct GroupWriter {
    queue: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Start the writer thread on the store's connection.
    pub fn start(
        conn: Arc<Mutex<Connection>>,
        finish: FinishFn,
        syncer: WalSyncer,
        timing: TimingHook,
    ) -> Result<Self, StoreError> {
        let (queue, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-group-commit".into())
            .spawn(move || run(conn, rx, finish, syncer, timing))
            .map_err(|e| StoreError::Other(format!("cannot start the writer thread: {e}")))?;
        Ok(Self { queue })
    }

    pub async fn insert(&self, event: NewEvent) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Insert(event, reply), answer).await
    }

    /// Record delivery outcomes in the next group transaction.
    pub async fn finish(
        &self,
        outcomes: Vec<Outcome>,
        now: UnixMillis,
    ) -> Result<Vec<bool>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Finish(outcomes, now, reply), answer).await
    }

    async fn submit<T>(
        &self,
        job: Job,
        answer: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let stopped = || StoreError::Unavailable("the writer thread has stopped".into());
        // A full queue makes callers wait here: back-pressure, not loss.
        self.queue.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(
    conn: Arc<Mutex<Connection>>,
    mut rx: mpsc::Receiver<Job>,
    finish: FinishFn,
    syncer: WalSyncer,
    timing: TimingHook,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut inserts = Vec::new();
        let mut finishes = Vec::new();
        let mut sort = |job| match job {
            Job::Insert(event, reply) => inserts.push((event, reply)),
            Job::Finish(outcomes, now, reply) => finishes.push((outcomes, now, reply)),
        };
        sort(first);
        for _ in 1..MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => sort(job),
                Err(_) => break,
            }
        }
        // One transaction for both: fewer commits, and the pages a batch
        // shares (the table's tail, hot index pages) are written once.
        let written = match syncer.failure() {
            Some(refused) => Err(refused),
            None => conn
                .lock()
                .map_err(|_| StoreError::Other("connection mutex poisoned".into()))
                .and_then(|mut conn| {
                    timing.time(Timed::BatchCommit, || {
                        in_transaction(&mut conn, |tx| {
                            let inserted: Vec<_> =
                                inserts.iter().map(|(event, _)| insert(tx, event)).collect();
                            let finished: Vec<_> = finishes
                                .iter()
                                .map(|(outcomes, now, _)| {
                                    outcomes.iter().map(|o| finish(tx, o, *now)).collect()
                                })
                                .collect();
                            Ok((inserted, finished))
                        })
                    })
                }),
        };
        let respond = move |written: Result<_, StoreError>| {
            let (inserted, finished) = match written {
                Ok((inserted, finished)) => (Ok(inserted), Ok(finished)),
                Err(e) => (Err(e.clone()), Err(e)),
            };
            answer(inserts.into_iter().map(|(_, reply)| reply), inserted);
            answer(finishes.into_iter().map(|(_, _, reply)| reply), finished);
        };
        match written {
            Ok(results) => {
                syncer.after_sync(Box::new(move |synced| respond(synced.map(|()| results))))
            }
            Err(e) => respond(Err(e)),
        }
    }
}

/// Send each caller its result, or the batch's error to all.
fn answer<T>(
    replies: impl Iterator<Item = Reply<T>>,
    written: Result<Vec<Result<T, StoreError>>, StoreError>,
) {
    match written {
        Ok(results) => replies.zip(results).for_each(|(reply, result)| {
            let _ = reply.send(result);
        }),
        // A full disk is named as such (`/readyz` says so); any other
        // failure of the batch is the store being unavailable to each caller.
        Err(e) => replies.for_each(|reply| {
            let _ = reply.send(Err(match &e {
                StoreError::DiskFull(_) => e.clone(),
                other => StoreError::Unavailable(other.to_string()),
            }));
        }),
    }
}

fn in_transaction<T>(
    conn: &mut Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let result = work(&tx)?;
    tx.commit()?;
    Ok(result)
}

/// Store one event and its deliveries, all or nothing: a duplicate (or any
/// failure) leaves the batch's other writes standing. No savepoint on the
/// hot path: the only expected refusal (the dedup key) comes first, and a
/// later failure removes what this event had written.
fn insert(tx: &Connection, e: &NewEvent) -> Result<InsertOutcome, StoreError> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO events (id, source, dedup_key, kind, body, query, received_at, deliveries_left, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            e.id,
            e.source,
            e.dedup_key,
            e.kind.as_str(),
            e.body,
            e.query,
            e.received_at,
            e.deliveries.len() as i64,
            e.message,
        ]);
    match inserted.map_err(StoreError::from) {
        Ok(_) => {}
        Err(StoreError::DuplicateKey) => {
            let holder: Option<String> = tx
                .prepare_cached("SELECT id FROM events WHERE dedup_key = ?1")?
                .query_row([&e.dedup_key], |row| row.get(0))
                .optional()?;
            return Ok(InsertOutcome::of_dedup_conflict(
                e.id.as_str(),
                holder.as_deref(),
            ));
        }
        Err(other) => return Err(other),
    }
    let event_seq = tx.last_insert_rowid();
    let mut written = Vec::with_capacity(e.deliveries.len());
    if let Err(failure) = insert_deliveries(tx, e, event_seq, &mut written) {
        let mut undo = tx.prepare_cached("DELETE FROM deliveries WHERE seq = ?1")?;
        for seq in written {
            undo.execute([seq])?;
        }
        tx.prepare_cached("DELETE FROM events WHERE seq = ?1")?
            .execute([event_seq])?;
        return Err(failure);
    }
    Ok(InsertOutcome::Stored)
}

/// Insert an event's deliveries, noting the row of each in `written`.
fn insert_deliveries(
    tx: &Connection,
    e: &NewEvent,
    event_seq: i64,
    written: &mut Vec<i64>,
) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO deliveries (id, event_seq, corp_id, kf_id, coalesce, status, window_start,
                                 next_attempt_at, updated_at, lease_owner, lease_until, claim_id,
                                 subscription_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for d in &e.deliveries {
        stmt.execute(params![
            d.id,
            event_seq,
            d.corp_id.as_str(),
            d.kf_id.as_ref().map(KfId::as_str),
            d.coalesce,
            d.status().as_str(),
            e.received_at,
            d.lease.as_ref().map(|l| l.owner.as_str()),
            d.lease.as_ref().map_or(UnixMillis::EPOCH, |l| l.until),
            d.lease.as_ref().map(|l| l.claim_id.as_str()),
            d.subscription_id,
        ])?;
        written.push(tx.last_insert_rowid());
    }
    Ok(())
}
