//! The delivery queue on the embedded store: insert (through group commit),
//! claim with a lease, record outcomes guarded by the claim id, wake, re-drive.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::statements::SQL;
use super::SqliteStore;
use crate::clock::UnixMillis;
use crate::domain::{ClaimId, CorpId, DeliveryId, KfId, SubscriptionId};
use crate::store::{
    AttemptResult, Claim, Delivery, InsertOutcome, NewEvent, Outcome, Queue, Retention, StoreError,
};

#[async_trait]
impl Queue for SqliteStore {
    async fn insert_event(&self, event: &NewEvent) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(event.clone()).await
    }

    async fn claim_due(&self, claim: &Claim, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let claim = claim.clone();
        self.run(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Up to `limit` from each lane not skipped, then the earliest due of all.
            let mut candidates: Vec<(UnixMillis, i64, String, Option<String>, bool)> = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&SQL.lane_candidates)?;
                for lane in lanes(&tx)?
                    .into_iter()
                    .filter(|l| !l.as_ref().is_some_and(|id| claim.skip.contains(id)))
                {
                    let rows = stmt.query_map(params![claim.now, limit as i64, lane], |r| {
                        Ok((r.get(4)?, r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?;
                    candidates.extend(rows.collect::<Result<Vec<_>, _>>()?);
                }
            }
            candidates.sort_unstable_by_key(|c| (c.0, c.1));
            candidates.truncate(limit);
            let mut leased = Vec::new();
            for (_, seq, corp, kf, coalesce) in candidates {
                let target = match (&kf, coalesce) {
                    (Some(kf), true) => match coalesce_wake_ups(&tx, &corp, kf, claim.now)? {
                        Some((newest, _)) => newest,
                        None => continue,
                    },
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

    async fn finish_attempt(&self, outcome: &Outcome, now: UnixMillis) -> Result<bool, StoreError> {
        let outcome = outcome.clone();
        self.run(move |c| finish_one(c, &outcome, now)).await
    }

    async fn finish_attempts(
        &self,
        outcomes: &[Outcome],
        now: UnixMillis,
    ) -> Result<Vec<bool>, StoreError> {
        self.writer.finish(outcomes.to_vec(), now).await
    }

    async fn coalesce_parked(
        &self,
        kfs: &[(String, String)],
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let kfs = kfs.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut superseded = 0;
            for (corp, kf) in &kfs {
                superseded += coalesce_wake_ups(&tx, corp, kf, now)?.map_or(0, |(_, n)| n);
            }
            tx.commit()?;
            Ok(superseded)
        })
        .await
    }

    async fn wake_kf(
        &self,
        corp_id: &CorpId,
        kf_id: &KfId,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let (corp, kf) = (corp_id.as_str().to_owned(), kf_id.as_str().to_owned());
        self.run(move |c| {
            let n = c.execute(&SQL.wake_kf, params![corp, kf, now])?;
            Ok(n as u64)
        })
        .await
    }

    async fn wake_subscription(
        &self,
        id: &SubscriptionId,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let id = id.clone();
        self.run(move |c| {
            let n = c.execute(&SQL.wake_subscription, params![id, now])?;
            Ok(n as u64)
        })
        .await
    }

    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.run(move |c| {
            let n = c.execute(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = 0, claim_id = NULL WHERE lease_owner = ?1",
                [owner],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        held: &[(DeliveryId, ClaimId)],
        until: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let (owner, held) = (owner.to_owned(), held.to_vec());
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut renewed = Vec::new();
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE deliveries SET lease_until = ?4 WHERE id = ?1 AND claim_id = ?2 AND lease_owner = ?3",
                )?;
                for (id, claim_id) in held {
                    if stmt.execute(params![id, claim_id, owner, until])? > 0 {
                        renewed.push(id);
                    }
                }
            }
            tx.commit()?;
            Ok(renewed)
        })
        .await
    }

    async fn next_due_at(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.run(|c| {
            let mut next = None;
            let mut stmt = c.prepare_cached(&SQL.next_due_at)?;
            for lane in lanes(c)? {
                let due: Option<UnixMillis> = stmt.query_row([lane], |r| r.get(0)).optional()?;
                if let Some(due) = due {
                    next = Some(next.map_or(due, |n: UnixMillis| n.min(due)));
                }
            }
            Ok(next)
        })
        .await
    }

    async fn redrive(&self, id: &DeliveryId, now: UnixMillis) -> Result<bool, StoreError> {
        let id = id.clone();
        self.run(move |c| {
            let n = c.execute(&SQL.redrive, params![id, now])?;
            Ok(n > 0)
        })
        .await
    }

    async fn redrive_dead_of_kf(&self, kf_id: &KfId, now: UnixMillis) -> Result<u64, StoreError> {
        let kf = kf_id.as_str().to_owned();
        self.run(move |c| {
            let n = c.execute(&SQL.redrive_dead_of_kf, params![kf, now])?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_delivery(&self, id: &DeliveryId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.run(move |c| {
            let tx = c.transaction()?;
            let event: Option<i64> = tx
                .prepare_cached("DELETE FROM deliveries WHERE id = ?1 RETURNING event_seq")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            if let Some(event) = event {
                release_event(&tx, event, 1)?;
            }
            tx.commit()?;
            Ok(event.is_some())
        })
        .await
    }

    async fn purge(&self, retention: &Retention, now: UnixMillis) -> Result<u64, StoreError> {
        let cutoffs = retention.cutoffs(now);
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut events = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&SQL.purge)?;
                for (status, cutoff) in cutoffs {
                    let rows = stmt.query_map(params![status.as_str(), cutoff], |r| r.get(0))?;
                    events.extend(rows.collect::<Result<Vec<i64>, _>>()?);
                }
            }
            let removed = events.len() as u64;
            events.sort_unstable();
            for group in events.chunk_by(|a, b| a == b) {
                release_event(&tx, group[0], group.len() as i64)?;
            }
            tx.commit()?;
            Ok(removed)
        })
        .await
    }
}

/// `removed` deliveries of an event are gone: the event goes with its last
/// one (it holds the dedup key until then).
fn release_event(tx: &Connection, event_seq: i64, removed: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE events SET deliveries_left = deliveries_left - ?2 WHERE seq = ?1")?
        .execute(params![event_seq, removed])?;
    tx.prepare_cached("DELETE FROM events WHERE seq = ?1 AND deliveries_left <= 0")?
        .execute([event_seq])?;
    Ok(())
}

/// A delivery with its event's payload; add `WHERE` on `d` (delivery) or `e` (event).
pub(super) const SELECT_DELIVERY: &str =
    "SELECT d.id AS id, e.id AS event_id, d.corp_id AS corp_id,
        d.kf_id AS kf_id, d.subscription_id AS subscription_id, e.kind AS kind, e.body AS body,
        e.message AS message, e.query AS query, d.coalesce AS coalesce,
        d.status AS status, d.attempts AS attempts, e.received_at AS received_at,
        d.window_start AS window_start, d.next_attempt_at AS next_attempt_at,
        d.last_error AS last_error, d.delivered_at AS delivered_at, d.claim_id AS claim_id
    FROM deliveries d JOIN events e ON e.seq = d.event_seq";

pub(super) fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: row.get("id")?,
        event_id: row.get("event_id")?,
        corp_id: row.get("corp_id")?,
        kf_id: row.get("kf_id")?,
        subscription_id: row.get("subscription_id")?,
        kind: row.get("kind")?,
        body: row.get("body")?,
        message: row.get("message")?,
        query: row.get("query")?,
        coalesce: row.get("coalesce")?,
        status: row.get("status")?,
        attempts: row.get("attempts")?,
        received_at: row.get("received_at")?,
        window_start: row.get("window_start")?,
        next_attempt_at: row.get("next_attempt_at")?,
        last_error: row.get("last_error")?,
        delivered_at: row.get("delivered_at")?,
        claim_id: row.get("claim_id")?,
    })
}

/// The claim lanes with pending deliveries: the puppets' (`None`) and each
/// subscription's.
fn lanes(c: &Connection) -> Result<Vec<Option<SubscriptionId>>, StoreError> {
    let mut stmt = c.prepare_cached(&SQL.lanes)?;
    let subscriptions = stmt.query_map([], |r| r.get::<_, SubscriptionId>(0))?;
    let mut lanes = vec![None];
    for id in subscriptions {
        lanes.push(Some(id?));
    }
    Ok(lanes)
}

/// The newest waiting, unleased wake-up of a kfId stands for the older
/// ones, which become `superseded` by it. Returns the newest's seq and how
/// many it superseded; `None` when none waits.
fn coalesce_wake_ups(
    tx: &Connection,
    corp: &str,
    kf: &str,
    now: UnixMillis,
) -> Result<Option<(i64, u64)>, StoreError> {
    let newest: Option<i64> = tx
        .prepare_cached(&SQL.newest_waiting_wake_up)?
        .query_row(params![corp, kf, now], |r| r.get(0))?;
    let Some(newest) = newest else {
        return Ok(None);
    };
    let newest_id: String = tx
        .prepare_cached("SELECT id FROM deliveries WHERE seq = ?1")?
        .query_row([newest], |r| r.get(0))?;
    let superseded = tx
        .prepare_cached(&SQL.supersede_older_wake_ups)?
        .execute(params![corp, kf, now, newest_id, newest])?;
    Ok(Some((newest, superseded as u64)))
}

/// Record one attempt's outcome, guarded by its claim id.
pub(super) fn finish_one(
    c: &Connection,
    outcome: &Outcome,
    now: UnixMillis,
) -> Result<bool, StoreError> {
    let (id, claim_id) = (&outcome.delivery, &outcome.claim);
    // Statements written once (`statements.rs`), so each is prepared once and cached.
    let n = match &outcome.result {
        AttemptResult::Delivered => c
            .prepare_cached(&SQL.finish_delivered)?
            .execute(params![id, claim_id, now])?,
        AttemptResult::Retry {
            next_attempt_at,
            error,
        } => c.prepare_cached(&SQL.finish_retry)?.execute(params![
            id,
            claim_id,
            now,
            next_attempt_at,
            error
        ])?,
        AttemptResult::Dead { error } => c
            .prepare_cached(&SQL.finish_dead)?
            .execute(params![id, claim_id, now, error])?,
        AttemptResult::Parked => c
            .prepare_cached(&SQL.finish_parked)?
            .execute(params![id, claim_id, now])?,
        AttemptResult::Released => c
            .prepare_cached(&SQL.finish_released)?
            .execute(params![id, claim_id, now])?,
        AttemptResult::Superseded { by } => c
            .prepare_cached(&SQL.finish_superseded)?
            .execute(params![id, claim_id, now, by])?,
    };
    Ok(n > 0)
}

/// Lease one event inside the claim transaction; returns the leased event if
/// it was still waiting and unleased.
fn lease(
    tx: &rusqlite::Transaction<'_>,
    seq: i64,
    claim: &Claim,
) -> Result<Option<Delivery>, StoreError> {
    let claim_id = ClaimId::generate();
    let changed = tx.prepare_cached(&SQL.lease)?.execute(params![
        claim.owner,
        claim.lease_until,
        claim_id,
        claim.now,
        seq
    ])?;
    if changed == 0 {
        return Ok(None);
    }
    let sql = format!("{SELECT_DELIVERY} WHERE d.seq = ?1");
    Ok(Some(
        tx.prepare_cached(&sql)?
            .query_row([seq], delivery_from_row)?,
    ))
}
