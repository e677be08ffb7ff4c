//! `store copy` on the embedded store: deliveries exported in `seq` order
//! with their event, and imported without their lease.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;
use futures_util::StreamExt;

use crate::store::transfer::{Batches, CopiedDelivery, Transfer};
use crate::store::StoreError;

#[async_trait]
impl Transfer for SqliteStore {
    /// Pages of the deliveries' primary key, each a range scan.
    fn export_deliveries(&self, batch: usize) -> Batches<'_> {
        let batch = batch.max(1);
        futures_util::stream::try_unfold(Some(0i64), move |after| async move {
            let Some(after) = after else {
                return Ok(None);
            };
            let (deliveries, last) = self.export_page(after, batch).await?;
            if deliveries.is_empty() {
                return Ok(None);
            }
            let next = (deliveries.len() == batch).then_some(last);
            Ok(Some((deliveries, next)))
        })
        .boxed()
    }

    async fn import_delivery(&self, d: &CopiedDelivery) -> Result<bool, StoreError> {
        Ok(self.import_deliveries(std::slice::from_ref(d)).await?[0])
    }

    /// One transaction for the page.
    async fn import_deliveries(
        &self,
        deliveries: &[CopiedDelivery],
    ) -> Result<Vec<bool>, StoreError> {
        let deliveries = deliveries.to_vec();
        self.run(move |c| {
            let tx = c.transaction()?;
            let written = deliveries
                .iter()
                .map(|d| import_one(&tx, d))
                .collect::<Result<Vec<bool>, StoreError>>()?;
            tx.commit()?;
            Ok(written)
        })
        .await
    }
}

impl SqliteStore {
    /// Up to `limit` deliveries after `after` (a `deliveries.seq`), and the
    /// last one's seq.
    async fn export_page(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<CopiedDelivery>, i64), StoreError> {
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT d.seq AS seq, e.id AS event_id, e.source AS source, e.dedup_key AS dedup_key,
                        e.kind AS kind, e.body AS body, e.query AS query, e.received_at AS received_at,
                        e.message AS message, d.id AS id, d.corp_id AS corp_id, d.kf_id AS kf_id,
                        d.subscription_id AS subscription_id, d.coalesce AS coalesce, d.status AS status,
                        d.attempts AS attempts, d.window_start AS window_start,
                        d.next_attempt_at AS next_attempt_at, d.last_error AS last_error,
                        d.delivered_at AS delivered_at, d.superseded_by AS superseded_by,
                        d.updated_at AS updated_at
                 FROM deliveries d JOIN events e ON e.seq = d.event_seq
                 WHERE d.seq > ?1 ORDER BY d.seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, limit as i64], |row| {
                Ok((row.get::<_, i64>("seq")?, copied_from_row(row)?))
            })?;
            let mut deliveries = Vec::new();
            let mut last = after;
            for row in rows {
                let (seq, delivery) = row?;
                last = seq;
                deliveries.push(delivery);
            }
            Ok((deliveries, last))
        })
        .await
    }
}

fn import_one(tx: &rusqlite::Transaction<'_>, d: &CopiedDelivery) -> Result<bool, StoreError> {
    tx.prepare_cached(
        "INSERT INTO events (id, source, dedup_key, kind, body, query, received_at, deliveries_left, message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8) ON CONFLICT (dedup_key) DO NOTHING",
    )?
    .execute(params![d.event_id, d.source, d.dedup_key, d.kind.as_str(), d.body, d.query, d.received_at, d.message])?;
    let event_seq: i64 = tx
        .prepare_cached("SELECT seq FROM events WHERE dedup_key = ?1")?
        .query_row([&d.dedup_key], |r| r.get(0))?;
    let known: Option<i64> = tx
        .prepare_cached("SELECT seq FROM deliveries WHERE id = ?1")?
        .query_row([&d.id], |r| r.get(0))
        .optional()?;
    if known.is_some() {
        return Ok(false);
    }
    tx.prepare_cached(
        "INSERT INTO deliveries (id, event_seq, corp_id, kf_id, subscription_id, coalesce, status, attempts,
                                 window_start, next_attempt_at, lease_owner, lease_until, claim_id,
                                 last_error, delivered_at, superseded_by, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, 0, NULL, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        d.id, event_seq, d.corp_id, d.kf_id, d.subscription_id, d.coalesce, d.status.as_str(),
        d.attempts, d.window_start, d.next_attempt_at, d.last_error, d.delivered_at,
        d.superseded_by, d.updated_at
    ])?;
    tx.prepare_cached("UPDATE events SET deliveries_left = deliveries_left + 1 WHERE seq = ?1")?
        .execute([event_seq])?;
    Ok(true)
}

fn copied_from_row(row: &Row<'_>) -> rusqlite::Result<CopiedDelivery> {
    Ok(CopiedDelivery {
        event_id: row.get("event_id")?,
        source: row.get("source")?,
        dedup_key: row.get("dedup_key")?,
        kind: row.get("kind")?,
        body: row.get("body")?,
        query: row.get("query")?,
        received_at: row.get("received_at")?,
        message: row.get("message")?,
        id: row.get("id")?,
        corp_id: row.get("corp_id")?,
        kf_id: row.get("kf_id")?,
        subscription_id: row.get("subscription_id")?,
        coalesce: row.get("coalesce")?,
        status: row.get("status")?,
        attempts: row.get("attempts")?,
        window_start: row.get("window_start")?,
        next_attempt_at: row.get("next_attempt_at")?,
        last_error: row.get("last_error")?,
        delivered_at: row.get("delivered_at")?,
        superseded_by: row.get("superseded_by")?,
        updated_at: row.get("updated_at")?,
    })
}
