//! Event documents on MongoDB: an event with its deliveries embedded, so that
//! an accepted callback and all of its deliveries are one atomic write on
//! any deployment (standalone servers have no transactions). This file holds
//! how the documents are written and read back, and the updates of an
//! outcome; `each.rs` how one delivery inside them is addressed.

use std::sync::atomic::Ordering;

use mongodb::bson::{doc, Binary, Bson, Document};

pub(super) use super::each::{each_field, Each};
use super::{get_at, get_i64, get_str, now_date, statuses, MongoStore};
use crate::clock::UnixMillis;
use crate::domain::{ClaimId, SubscriptionId};
use crate::store::{
    AttemptResult, Claim, Delivery, DeliveryStatus, NewEvent, PayloadKind, StoreError,
};

impl MongoStore {
    /// Monotonic within this process, close to time-ordered across managers;
    /// orders events so that coalescing keeps the newest.
    pub(super) fn next_seq(&self, received_at: UnixMillis) -> i64 {
        let candidate = received_at.as_millis().saturating_mul(1000);
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

    /// The document of an accepted event with its deliveries.
    pub(super) fn event_document(&self, event: &NewEvent) -> Document {
        let deliveries: Vec<Document> = event
            .deliveries
            .iter()
            .map(|d| {
                let mut element = doc! {
                    "id": &d.id,
                    "corpId": d.corp_id.as_str(),
                    "coalesce": d.coalesce,
                    "status": d.status().as_str(),
                    "attempts": 0i64,
                    "windowStart": event.received_at,
                    "nextAttemptAt": event.received_at,
                    "leaseUntil": d.lease.as_ref().map_or(UnixMillis::EPOCH, |l| l.until),
                    "updatedAt": now_date(event.received_at),
                };
                if let Some(kf) = &d.kf_id {
                    element.insert("kfId", kf.as_str());
                }
                if let Some(subscription) = &d.subscription_id {
                    element.insert("subscriptionId", subscription);
                }
                if let Some(lease) = &d.lease {
                    element.insert("leaseOwner", &lease.owner);
                    element.insert("claimId", &lease.claim_id);
                }
                element
            })
            .collect();
        let mut document = doc! {
            "_id": &event.id,
            "source": &event.source,
            "dedupKey": &event.dedup_key,
            "kind": event.kind.as_str(),
            "body": binary(&event.body),
            "query": &event.query,
            "seq": self.next_seq(event.received_at),
            "receivedAt": event.received_at,
            "deliveries": deliveries,
        };
        if let Some(message) = &event.message {
            document.insert("message", binary(message));
        }
        // Nothing to deliver (unroutable): kept for operators, then swept.
        let horizons: Option<Vec<UnixMillis>> = event
            .deliveries
            .iter()
            .map(|d| self.retention.expires_at(d.status(), event.received_at))
            .collect();
        if let Some(latest) = horizons.and_then(|h| h.into_iter().max()) {
            document.insert("expireAt", now_date(latest));
        }
        document
    }

    /// The update that records one outcome on the matched deliveries and
    /// releases their claim. A finished delivery raises the event's
    /// `expireAt` to its own horizon (`settle` clears it again while a
    /// sibling still waits).
    pub(super) fn finish_update(&self, result: &AttemptResult, now: UnixMillis) -> Document {
        let release = doc! {"leaseOwner": Bson::Null, "leaseUntil": 0i64, "claimId": Bson::Null, "updatedAt": now_date(now)};
        let (mut set, count_attempt) = match result {
            AttemptResult::Delivered => (
                doc! {"status": DeliveryStatus::Delivered.as_str(), "deliveredAt": now, "lastError": Bson::Null},
                true,
            ),
            AttemptResult::Retry {
                next_attempt_at,
                error,
            } => (
                doc! {"status": DeliveryStatus::Pending.as_str(), "nextAttemptAt": next_attempt_at, "lastError": error},
                true,
            ),
            AttemptResult::Dead { error } => (
                doc! {"status": DeliveryStatus::Dead.as_str(), "lastError": error},
                true,
            ),
            AttemptResult::Parked => (
                doc! {"status": DeliveryStatus::Parked.as_str(), "lastError": "no online puppet for this kfId"},
                false,
            ),
            AttemptResult::Released => (doc! {"nextAttemptAt": now}, false),
            AttemptResult::Superseded { by } => (
                doc! {"status": DeliveryStatus::Superseded.as_str(), "supersededBy": by},
                false,
            ),
        };
        set.extend(release);
        let mut update = doc! {"$set": each_field(set)};
        if count_attempt {
            update.insert("$inc", doc! {"deliveries.$[d].attempts": 1i64});
        }
        if let Some(status) = result.status() {
            self.raise_expiry(&mut update, status, now);
        }
        update
    }

    /// Add `$max: {expireAt}` for a delivery that reached `status` at `now`
    /// (nothing for a status kept until it moves on).
    pub(super) fn raise_expiry(
        &self,
        update: &mut Document,
        status: DeliveryStatus,
        now: UnixMillis,
    ) {
        if let Some(at) = self.retention.expires_at(status, now) {
            update.insert("$max", doc! {"expireAt": now_date(at)});
        }
    }

    /// Deliveries that can be leased: waiting and unleased.
    pub(super) fn leasable(now: UnixMillis) -> Each {
        Each(doc! {
            "status": {"$in": statuses(DeliveryStatus::waiting())},
            "leaseUntil": {"$lte": now},
        })
    }

    pub(super) fn lease_update(claim: &Claim, claim_id: &str) -> Document {
        doc! {"$set": each_field(doc! {
            "status": DeliveryStatus::Pending.as_str(), "leaseOwner": &claim.owner, "leaseUntil": claim.lease_until,
            "claimId": claim_id, "updatedAt": now_date(claim.now),
        })}
    }

    /// An event whose deliveries are not all finished is never swept: clear
    /// `expireAt` where a finished delivery set it beside a waiting one.
    pub(super) async fn settle(&self, filter: Document) -> Result<(), StoreError> {
        let mut waiting = filter;
        waiting.insert("expireAt", doc! {"$exists": true});
        waiting.insert(
            "deliveries.status",
            doc! {"$in": statuses(DeliveryStatus::waiting())},
        );
        self.events
            .update_many(waiting, doc! {"$unset": {"expireAt": ""}})
            .await?;
        Ok(())
    }
}

pub(super) fn binary(bytes: &[u8]) -> Binary {
    Binary {
        subtype: mongodb::bson::spec::BinarySubtype::Generic,
        bytes: bytes.to_vec(),
    }
}

/// The delivery elements of an event document (as projected).
pub(super) fn elements(event: &Document) -> impl Iterator<Item = &Document> {
    event
        .get_array("deliveries")
        .into_iter()
        .flatten()
        .filter_map(Bson::as_document)
}

/// Every delivery of an event document.
pub(super) fn deliveries_of(event: &Document) -> Result<Vec<Delivery>, StoreError> {
    match event.get("deliveries") {
        Some(Bson::Array(elements)) => elements
            .iter()
            .map(|e| match e {
                Bson::Document(element) => delivery_from(event, element),
                _ => Err(corrupt(event, "delivery")),
            })
            .collect(),
        // A document as `$unwind` leaves it: one delivery.
        Some(Bson::Document(element)) => Ok(vec![delivery_from(event, element)?]),
        _ => Err(corrupt(event, "deliveries")),
    }
}

fn corrupt(event: &Document, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "event {:.64}: unknown {what}",
        get_str(event, "_id")
    ))
}

/// One delivery with its event's payload.
pub(super) fn delivery_from(event: &Document, d: &Document) -> Result<Delivery, StoreError> {
    let body = match event.get("body") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(Bson::String(s)) => s.clone().into_bytes(),
        _ => Vec::new(),
    };
    let received_at = get_at(event, "receivedAt").unwrap_or_default();
    Ok(Delivery {
        id: get_str(d, "id").into(),
        event_id: get_str(event, "_id").into(),
        corp_id: get_str(d, "corpId"),
        kf_id: d.get_str("kfId").ok().map(str::to_owned),
        subscription_id: d.get_str("subscriptionId").ok().map(SubscriptionId::from),
        message: match event.get("message") {
            Some(Bson::Binary(b)) => Some(b.bytes.clone()),
            _ => None,
        },
        kind: PayloadKind::parse(event.get_str("kind").unwrap_or_default())
            .ok_or_else(|| corrupt(event, "payload kind"))?,
        body,
        query: get_str(event, "query"),
        coalesce: d.get_bool("coalesce").unwrap_or(false),
        status: DeliveryStatus::parse(d.get_str("status").unwrap_or_default())
            .ok_or_else(|| corrupt(event, "status"))?,
        attempts: get_i64(d, "attempts")
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        received_at,
        window_start: get_at(d, "windowStart").unwrap_or(received_at),
        next_attempt_at: get_at(d, "nextAttemptAt").unwrap_or_default(),
        last_error: d.get_str("lastError").ok().map(str::to_owned),
        delivered_at: get_at(d, "deliveredAt"),
        claim_id: d.get_str("claimId").ok().map(ClaimId::from),
    })
}
