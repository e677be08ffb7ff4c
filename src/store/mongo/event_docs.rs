//! Event documents on MongoDB: reading them back, and the updates that lease
//! them and record an outcome.

use std::sync::atomic::Ordering;

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;

use super::{get_i64, get_str, now_date, statuses, MongoStore};
use crate::store::{AttemptResult, Claim, EventStatus, PayloadKind, StoreError, StoredEvent};

impl MongoStore {
    /// Monotonic within this process, close to time-ordered across managers;
    /// orders events so that coalescing keeps the newest.
    pub(super) fn next_seq(&self, received_at_ms: i64) -> i64 {
        let candidate = received_at_ms.saturating_mul(1000);
        let mut last = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = candidate.max(last + 1);
            match self.last_seq.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// The update that records one outcome and releases the claim.
    pub(super) fn finish_update(&self, result: &AttemptResult, now: i64) -> Document {
        let release = doc! {"leaseOwner": Bson::Null, "leaseUntil": 0i64, "claimId": Bson::Null, "updatedAt": now_date(now)};
        let (mut set, count_attempt) = match result {
            AttemptResult::Delivered => (
                doc! {"status": EventStatus::Delivered.as_str(), "deliveredAt": now, "lastError": Bson::Null, "expireAt": self.expire_at(EventStatus::Delivered, now)},
                true,
            ),
            AttemptResult::Retry {
                next_attempt_at,
                error,
            } => (
                doc! {"status": EventStatus::Pending.as_str(), "nextAttemptAt": next_attempt_at, "lastError": error},
                true,
            ),
            AttemptResult::Dead { error } => (
                doc! {"status": EventStatus::Dead.as_str(), "lastError": error, "expireAt": self.expire_at(EventStatus::Dead, now)},
                true,
            ),
            AttemptResult::Parked => (
                doc! {"status": EventStatus::Parked.as_str(), "lastError": "no online puppet for this kfId"},
                false,
            ),
            AttemptResult::Released => (doc! {"nextAttemptAt": now}, false),
            AttemptResult::Superseded { by } => (
                doc! {"status": EventStatus::Superseded.as_str(), "supersededBy": by, "expireAt": self.expire_at(EventStatus::Superseded, now)},
                false,
            ),
        };
        set.extend(release);
        let mut update = doc! {"$set": set};
        if count_attempt {
            update.insert("$inc", doc! {"attempts": 1i64});
        }
        update
    }

    /// When the TTL index removes an event that reached `status` at `now`
    /// (`null`: kept until it moves on).
    pub(super) fn expire_at(&self, status: EventStatus, now: i64) -> Bson {
        self.retention
            .expires_at(status, now)
            .map_or(Bson::Null, |at| Bson::DateTime(now_date(at)))
    }

    /// Only waiting, unleased events can be leased.
    pub(super) fn leasable(mut filter: Document, claim: &Claim) -> Document {
        filter.insert("status", doc! {"$in": statuses(EventStatus::waiting())});
        filter.insert("leaseUntil", doc! {"$lte": claim.now});
        filter
    }

    pub(super) fn lease_update(claim: &Claim, claim_id: &str) -> Document {
        doc! {"$set": {
            "status": EventStatus::Pending.as_str(), "leaseOwner": &claim.owner, "leaseUntil": claim.lease_until,
            "claimId": claim_id, "updatedAt": now_date(claim.now),
        }}
    }

    pub(super) async fn lease_many(
        &self,
        filter: Document,
        claim: &Claim,
        claim_id: &str,
    ) -> Result<u64, StoreError> {
        let r = self
            .events
            .update_many(
                Self::leasable(filter, claim),
                Self::lease_update(claim, claim_id),
            )
            .await?;
        Ok(r.modified_count)
    }

    pub(super) async fn lease_newest(
        &self,
        filter: Document,
        claim: &Claim,
        claim_id: &str,
    ) -> Result<Option<Document>, StoreError> {
        Ok(self
            .events
            .find_one_and_update(
                Self::leasable(filter, claim),
                Self::lease_update(claim, claim_id),
            )
            .sort(doc! {"seq": -1})
            .return_document(ReturnDocument::After)
            .await?)
    }
}

pub(super) fn event_from_doc(d: &Document) -> Result<StoredEvent, StoreError> {
    let body = match d.get("body") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(Bson::String(s)) => s.clone().into_bytes(),
        _ => Vec::new(),
    };
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!("event {:.64}: unknown {what}", get_str(d, "_id")))
    };
    Ok(StoredEvent {
        id: get_str(d, "_id"),
        corp_id: get_str(d, "corpId"),
        kf_id: d.get_str("kfId").ok().map(str::to_owned),
        kind: PayloadKind::parse(d.get_str("kind").unwrap_or_default())
            .ok_or_else(|| corrupt("payload kind"))?,
        body,
        query: get_str(d, "query"),
        coalesce: d.get_bool("coalesce").unwrap_or(false),
        status: EventStatus::parse(d.get_str("status").unwrap_or_default())
            .ok_or_else(|| corrupt("status"))?,
        attempts: get_i64(d, "attempts")
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        received_at: get_i64(d, "receivedAt").unwrap_or(0),
        window_start: get_i64(d, "windowStart")
            .or_else(|| get_i64(d, "receivedAt"))
            .unwrap_or(0),
        next_attempt_at: get_i64(d, "nextAttemptAt").unwrap_or(0),
        last_error: d.get_str("lastError").ok().map(str::to_owned),
        delivered_at: get_i64(d, "deliveredAt"),
        claim_id: d.get_str("claimId").ok().map(str::to_owned),
    })
}
