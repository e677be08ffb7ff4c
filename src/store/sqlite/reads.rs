//! What operators read from the embedded store.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::queue::{delivery_from_row, SELECT_DELIVERY};
use super::statements::SQL;
use super::SqliteStore;
use crate::clock::UnixMillis;
use crate::domain::{DeliveryId, KfId};
use crate::store::{
    Backlog, BacklogCount, Delivery, DeliveryFilter, DeliveryStatus, KfSummary, LatestError,
    OperatorReads, StoreError, Target,
};

#[async_trait]
impl OperatorReads for SqliteStore {
    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        let id = id.clone();
        self.run(move |c| {
            let sql = format!("{SELECT_DELIVERY} WHERE d.id = ?1");
            Ok(c.query_row(&sql, [id], delivery_from_row).optional()?)
        })
        .await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let f = filter.clone();
        self.run(move |c| {
            let sql = format!(
                "{SELECT_DELIVERY}
                 WHERE (?1 IS NULL OR d.status = ?1) AND (?2 IS NULL OR d.corp_id = ?2) AND (?3 IS NULL OR d.kf_id = ?3)
                 ORDER BY d.seq DESC LIMIT ?4 OFFSET ?5"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![f.status.map(DeliveryStatus::as_str), f.corp_id, f.kf_id, f.limit as i64, f.offset as i64],
                delivery_from_row,
            )?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn kf_summary(&self, kf_id: &KfId) -> Result<KfSummary, StoreError> {
        let kf = kf_id.as_str().to_owned();
        self.run(move |c| {
            Ok(c.query_row(&SQL.kf_summary, [kf], |r| {
                Ok(KfSummary {
                    pending: r.get::<_, i64>(0)? as u64,
                    parked: r.get::<_, i64>(1)? as u64,
                    dead: r.get::<_, i64>(2)? as u64,
                    last_delivered_at: r.get(3)?,
                })
            })?)
        })
        .await
    }

    async fn backlogs(&self) -> Result<Vec<Backlog>, StoreError> {
        self.scan(|c| {
            let counts = c
                .prepare_cached(&SQL.backlog_counts)?
                .query_map([], |r| {
                    Ok(BacklogCount {
                        target: Target::of(r.get(0)?, r.get(1)?, r.get(2)?),
                        status: r.get(3)?,
                        count: r.get::<_, i64>(4)? as u64,
                        oldest: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let errors = c
                .prepare_cached(&SQL.backlog_errors)?
                .query_map([], |r| {
                    Ok(LatestError {
                        target: Target::of(r.get(0)?, r.get(1)?, r.get(2)?),
                        at: r.get(3)?,
                        error: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Backlog::gather(counts, errors))
        })
        .await
    }

    async fn queue_stats(
        &self,
    ) -> Result<Vec<(DeliveryStatus, u64, Option<UnixMillis>)>, StoreError> {
        self.scan(|c| {
            // One read transaction: the oldest is read from the same state as the counts.
            let tx = c.unchecked_transaction()?;
            let counted = tx
                .prepare_cached(&SQL.queue_stats)?
                .query_map([], |r| {
                    Ok((
                        r.get::<_, DeliveryStatus>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut oldest = tx.prepare_cached(&SQL.queue_oldest)?;
            let stats = counted
                .into_iter()
                .map(|(status, count, seq)| {
                    let at = oldest.query_row([seq], |r| r.get(0)).optional()?;
                    Ok((status, count, at))
                })
                .collect::<Result<_, rusqlite::Error>>()?;
            Ok(stats)
        })
        .await
    }
}
