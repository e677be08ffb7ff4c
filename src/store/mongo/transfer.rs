//! `store copy` on MongoDB: event documents exported in `_id` order with all
//! their deliveries, and deliveries imported one by one into their event
//! (created on first use, found by its dedup key), without their lease.

use std::collections::HashSet;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document};

use super::event_docs::{binary, elements};
use super::{get_at, get_i64, get_str, now_date, MongoStore};
use crate::clock::UnixMillis;
use crate::domain::{DeliveryId, SubscriptionId};
use crate::store::transfer::{Batches, CopiedDelivery, Transfer};
use crate::store::{DeliveryStatus, PayloadKind, StoreError};

#[async_trait]
impl Transfer for MongoStore {
    /// One `find` in `_id` order, read in batches of events.
    fn export_deliveries(&self, batch: usize) -> Batches<'_> {
        enum State {
            Start,
            Reading(Box<mongodb::Cursor<Document>>),
            Done,
        }
        let batch = batch.max(1);
        futures_util::stream::try_unfold(State::Start, move |state| async move {
            let mut cursor = match state {
                State::Done => return Ok(None),
                State::Start => {
                    self.events
                        .find(doc! {})
                        .sort(doc! {"_id": 1})
                        .batch_size(u32::try_from(batch).unwrap_or(u32::MAX))
                        .await?
                }
                State::Reading(cursor) => *cursor,
            };
            let mut deliveries = Vec::new();
            let mut events = 0;
            while events < batch {
                let Some(event) = cursor.try_next().await? else {
                    break;
                };
                events += 1;
                for element in elements(&event) {
                    deliveries.push(copied_from(&event, element)?);
                }
            }
            if events == 0 {
                return Ok(None);
            }
            let next = if events == batch {
                State::Reading(Box::new(cursor))
            } else {
                State::Done
            };
            Ok(Some((deliveries, next)))
        })
        .boxed()
    }

    async fn import_delivery(&self, d: &CopiedDelivery) -> Result<bool, StoreError> {
        self.events
            .update_one(
                doc! {"dedupKey": &d.dedup_key},
                doc! {"$setOnInsert": self.event_of(d, Vec::new())},
            )
            .upsert(true)
            .await?;
        let mut update = doc! {"$push": {"deliveries": element_of(d)}};
        self.raise_expiry(&mut update, d.status, d.updated_at);
        let pushed = self
            .events
            .update_one(
                doc! {"dedupKey": &d.dedup_key, "deliveries.id": {"$ne": &d.id}},
                update,
            )
            .await?;
        if pushed.modified_count == 0 {
            return Ok(false);
        }
        self.settle(doc! {"dedupKey": &d.dedup_key}).await?;
        Ok(true)
    }

    /// Events not there yet go in whole, with one `insert_many` for the
    /// page; a delivery of an event already there (a rerun, or an event
    /// whose deliveries span two pages) goes one by one.
    async fn import_deliveries(
        &self,
        deliveries: &[CopiedDelivery],
    ) -> Result<Vec<bool>, StoreError> {
        let keys: Vec<&str> = deliveries.iter().map(|d| d.dedup_key.as_str()).collect();
        let found: Vec<Document> = self
            .events
            .find(doc! {"dedupKey": {"$in": &keys}})
            .projection(doc! {"dedupKey": 1, "deliveries.id": 1})
            .await?
            .try_collect()
            .await?;
        let present: HashSet<String> = found.iter().map(|e| get_str(e, "dedupKey")).collect();
        // Deliveries already there (a rerun): nothing to write.
        let there: HashSet<DeliveryId> = found
            .iter()
            .flat_map(elements)
            .map(|d| get_str(d, "id").into())
            .collect();
        // New events, each with all of its deliveries in this page.
        let mut fresh: Vec<(&str, Vec<&CopiedDelivery>)> = Vec::new();
        for d in deliveries
            .iter()
            .filter(|d| !present.contains(&d.dedup_key))
        {
            match fresh.iter_mut().find(|(k, _)| *k == d.dedup_key) {
                Some((_, members)) => members.push(d),
                None => fresh.push((&d.dedup_key, vec![d])),
            }
        }
        let documents: Vec<Document> = fresh
            .iter()
            .map(|(_, members)| {
                let mut event =
                    self.event_of(members[0], members.iter().map(|d| element_of(d)).collect());
                event.insert("dedupKey", members[0].dedup_key.as_str());
                let horizons: Option<Vec<UnixMillis>> = members
                    .iter()
                    .map(|d| self.retention.expires_at(d.status, d.updated_at))
                    .collect();
                if let Some(latest) = horizons.and_then(|h| h.into_iter().max()) {
                    event.insert("expireAt", now_date(latest));
                }
                event
            })
            .collect();
        let mut inserted: HashSet<String> = HashSet::new();
        if !documents.is_empty() {
            match self.events.insert_many(documents).ordered(false).await {
                Ok(_) => inserted.extend(fresh.iter().map(|(k, _)| (*k).to_owned())),
                // Some landed meanwhile (another copy): those go one by one below.
                Err(e) => {
                    let failed: HashSet<usize> = match &*e.kind {
                        mongodb::error::ErrorKind::InsertMany(f)
                            if f.write_concern_error.is_none() =>
                        {
                            f.write_errors.iter().flatten().map(|w| w.index).collect()
                        }
                        _ => return Err(e.into()),
                    };
                    for (i, (key, _)) in fresh.iter().enumerate() {
                        if !failed.contains(&i) {
                            inserted.insert((*key).to_owned());
                        }
                    }
                }
            }
        }
        let mut written = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            written.push(if inserted.contains(&d.dedup_key) {
                true
            } else if there.contains(&d.id) {
                false
            } else {
                self.import_delivery(d).await?
            });
        }
        Ok(written)
    }
}

impl MongoStore {
    /// The event document of a copied delivery (its dedup key comes from
    /// the filter or is added by the caller).
    fn event_of(&self, d: &CopiedDelivery, deliveries: Vec<Document>) -> Document {
        let mut event = doc! {
            "_id": &d.event_id, "source": &d.source, "kind": d.kind.as_str(),
            "body": binary(&d.body), "query": &d.query, "seq": self.next_seq(d.received_at),
            "receivedAt": d.received_at, "deliveries": deliveries,
        };
        if let Some(message) = &d.message {
            event.insert("message", binary(message));
        }
        event
    }
}

/// A delivery element as the queue keeps it, without a lease.
fn element_of(d: &CopiedDelivery) -> Document {
    let mut element = doc! {
        "id": &d.id, "corpId": &d.corp_id, "coalesce": d.coalesce, "status": d.status.as_str(),
        "attempts": i64::from(d.attempts), "windowStart": d.window_start,
        "nextAttemptAt": d.next_attempt_at, "leaseUntil": 0i64, "updatedAt": now_date(d.updated_at),
    };
    let optional = [
        ("kfId", d.kf_id.clone().map(Bson::String)),
        ("subscriptionId", d.subscription_id.clone().map(Bson::from)),
        ("lastError", d.last_error.clone().map(Bson::String)),
        ("deliveredAt", d.delivered_at.map(Bson::from)),
        ("supersededBy", d.superseded_by.clone().map(Bson::String)),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            element.insert(field, value);
        }
    }
    element
}

fn copied_from(event: &Document, d: &Document) -> Result<CopiedDelivery, StoreError> {
    let corrupt = |what: &str| {
        StoreError::Corrupt(format!(
            "event {:.64}: unknown {what}",
            get_str(event, "_id")
        ))
    };
    let bytes = |field: &str| match event.get(field) {
        Some(Bson::Binary(b)) => Some(b.bytes.clone()),
        Some(Bson::String(s)) => Some(s.clone().into_bytes()),
        _ => None,
    };
    let text = |field: &str| d.get_str(field).ok().map(str::to_owned);
    let received_at = get_at(event, "receivedAt").unwrap_or_default();
    Ok(CopiedDelivery {
        event_id: get_str(event, "_id").into(),
        source: get_str(event, "source"),
        dedup_key: get_str(event, "dedupKey"),
        kind: PayloadKind::parse(event.get_str("kind").unwrap_or_default())
            .ok_or_else(|| corrupt("payload kind"))?,
        body: bytes("body").unwrap_or_default(),
        query: get_str(event, "query"),
        received_at,
        message: bytes("message"),
        id: get_str(d, "id").into(),
        corp_id: get_str(d, "corpId"),
        kf_id: text("kfId"),
        subscription_id: text("subscriptionId").map(SubscriptionId::from),
        coalesce: d.get_bool("coalesce").unwrap_or(false),
        status: DeliveryStatus::parse(d.get_str("status").unwrap_or_default())
            .ok_or_else(|| corrupt("status"))?,
        attempts: get_i64(d, "attempts")
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        window_start: get_at(d, "windowStart").unwrap_or(received_at),
        next_attempt_at: get_at(d, "nextAttemptAt").unwrap_or_default(),
        last_error: text("lastError"),
        delivered_at: get_at(d, "deliveredAt"),
        superseded_by: text("supersededBy"),
        updated_at: get_at(d, "updatedAt").unwrap_or(received_at),
    })
}
