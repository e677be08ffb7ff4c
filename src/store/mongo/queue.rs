//! The delivery queue on MongoDB: insert (through group commit), claim with
//! a lease, record outcomes guarded by the claim id, wake, re-drive. Every
//! update addresses deliveries inside their event document through the
//! array filter `d` (`event_docs::Each`).

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::event_docs::{deliveries_of, each_field, elements, Each};
use super::{get_at, get_i64, get_str, now_date, statuses, MongoStore, BATCH_CLAIM};
use crate::clock::UnixMillis;
use crate::domain::{ClaimId, CorpId, DeliveryId, KfId, SubscriptionId};
use crate::store::{
    AttemptResult, Claim, Delivery, DeliveryStatus, InsertOutcome, NewEvent, Outcome, Queue,
    Retention, StoreError,
};

#[async_trait]
impl Queue for MongoStore {
    async fn insert_event(&self, event: &NewEvent) -> Result<InsertOutcome, StoreError> {
        self.writer.insert(self.event_document(event)).await
    }

    async fn claim_due(&self, claim: &Claim, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let due = Each(doc! {
            "status": DeliveryStatus::Pending.as_str(),
            "nextAttemptAt": {"$lte": claim.now},
            "leaseUntil": {"$lte": claim.now},
        });
        // Up to `limit` from each lane not skipped, then the earliest due of all.
        let mut candidates: Vec<(UnixMillis, i64, Document)> = Vec::new();
        for lane in self.lanes(&claim.skip).await? {
            let in_lane = due.clone().with("subscriptionId", lane);
            let found: Vec<Document> = self
                .events
                .find(in_lane.matching())
                .sort(doc! {"deliveries.nextAttemptAt": 1, "seq": 1})
                .limit(limit as i64)
                .projection(doc! {"seq": 1, "deliveries": 1})
                .await?
                .try_collect()
                .await?;
            for event in &found {
                let seq = get_i64(event, "seq").unwrap_or(0);
                candidates.extend(elements(event).filter(|d| in_lane.holds(d)).map(|d| {
                    (
                        get_at(d, "nextAttemptAt").unwrap_or_default(),
                        seq,
                        d.clone(),
                    )
                }));
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        candidates.sort_unstable_by_key(|c| (c.0, c.1));
        candidates.truncate(limit);
        // One claim id for the whole batch: the finishing update matches
        // (delivery id, claim id), which is still unique per lease.
        let batch = ClaimId::from(format!("{BATCH_CLAIM}{}", uuid::Uuid::new_v4()));
        let mut singles: Vec<String> = Vec::new();
        let mut wake_ups: Vec<(String, String)> = Vec::new();
        for (_, _, element) in &candidates {
            match (element.get_str("kfId"), element.get_bool("coalesce")) {
                (Ok(kf), Ok(true)) => {
                    let key = (get_str(element, "corpId"), kf.to_owned());
                    if !wake_ups.contains(&key) {
                        wake_ups.push(key);
                    }
                }
                _ => singles.push(get_str(element, "id")),
            }
        }
        if !singles.is_empty() {
            let each = Self::leasable(claim.now).with("id", doc! {"$in": singles});
            each.update_many(&self.events, Self::lease_update(claim, batch.as_str()))
                .await?;
        }
        for (corp, kf) in wake_ups {
            self.lease_newest_wake_up(&corp, &kf, claim, batch.as_str())
                .await?;
        }
        let leased: Vec<Document> = self
            .events
            .find(doc! {"deliveries.claimId": &batch})
            .await?
            .try_collect()
            .await?;

        let mut deliveries = Vec::new();
        for event in &leased {
            for d in deliveries_of(event)? {
                if d.claim_id.as_ref() == Some(&batch) {
                    deliveries.push(d);
                }
            }
        }
        Ok(deliveries)
    }

    async fn finish_attempt(&self, outcome: &Outcome, now: UnixMillis) -> Result<bool, StoreError> {
        let each = Each(doc! {"id": &outcome.delivery, "claimId": &outcome.claim});
        let r = each
            .update_one(&self.events, self.finish_update(&outcome.result, now))
            .await?;
        Ok(r.matched_count > 0)
    }

    /// Outcomes that share their update (delivered, parked, superseded by
    /// the same delivery) are written with one `update_many` per group; the
    /// rest (each with its own error and time) one by one, concurrently.
    async fn finish_attempts(
        &self,
        items: &[Outcome],
        now: UnixMillis,
    ) -> Result<Vec<bool>, StoreError> {
        let mut groups: Vec<(&AttemptResult, Option<&str>, Vec<usize>)> = Vec::new();
        let mut singles = Vec::new();
        for (i, Outcome { claim, result, .. }) in items.iter().enumerate() {
            if matches!(
                result,
                AttemptResult::Retry { .. } | AttemptResult::Dead { .. }
            ) {
                singles.push(i);
                continue;
            }
            // A claim id shared by a claimed batch must be matched as is;
            // ids given at insert are unique to their delivery and go together.
            let shared = claim
                .as_str()
                .starts_with(BATCH_CLAIM)
                .then_some(claim.as_str());
            match groups
                .iter_mut()
                .find(|(r, c, _)| *r == result && *c == shared)
            {
                Some((_, _, members)) => members.push(i),
                None => groups.push((result, shared, vec![i])),
            }
        }
        let group_updates = groups.iter().map(|(result, shared, members)| {
            self.finish_group(items, result, *shared, members, now)
        });
        let single_updates = singles.iter().map(|&i| self.finish_attempt(&items[i], now));
        let (group_results, single_results) = futures_util::future::join(
            futures_util::future::join_all(group_updates),
            futures_util::future::join_all(single_updates),
        )
        .await;
        let mut recorded = vec![false; items.len()];
        for ((_, _, members), result) in groups.iter().zip(group_results) {
            for (&i, ok) in members.iter().zip(result?) {
                recorded[i] = ok;
            }
        }
        for (&i, result) in singles.iter().zip(single_results) {
            recorded[i] = result?;
        }
        if items.iter().any(|o| o.result.status().is_some()) {
            let ids: Vec<&str> = items.iter().map(|o| o.delivery.as_str()).collect();
            self.settle(doc! {"deliveries.id": {"$in": ids}}).await?;
        }
        Ok(recorded)
    }

    async fn coalesce_parked(
        &self,
        kfs: &[(String, String)],
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let mut superseded = 0;
        for (corp, kf) in kfs {
            superseded += self.coalesce_wake_ups(corp, kf, now).await?;
        }
        Ok(superseded)
    }

    async fn wake_kf(
        &self,
        corp_id: &CorpId,
        kf_id: &KfId,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let each = Each(doc! {
            "corpId": corp_id.as_str(), "kfId": kf_id.as_str(),
            "status": {"$in": statuses(DeliveryStatus::waiting())},
        });
        let r = each
            .update_many(&self.events, doc! {"$set": each_field(doc! {"status": DeliveryStatus::Pending.as_str(), "nextAttemptAt": now, "updatedAt": now_date(now)})})
            .await?;
        Ok(r.modified_count)
    }

    async fn wake_subscription(
        &self,
        id: &SubscriptionId,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let each = Each(doc! {
            "subscriptionId": id,
            "status": DeliveryStatus::Pending.as_str(),
            "nextAttemptAt": {"$gt": now},
        });
        let r = each
            .update_many(
                &self.events,
                doc! {"$set": each_field(doc! {"nextAttemptAt": now, "updatedAt": now_date(now)})},
            )
            .await?;
        Ok(r.modified_count)
    }

    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let each = Each(doc! {"leaseOwner": owner});
        let r = each
            .update_many(&self.events, doc! {"$set": each_field(doc! {"leaseOwner": Bson::Null, "leaseUntil": 0i64, "claimId": Bson::Null})})
            .await?;
        Ok(r.modified_count)
    }

    async fn renew_leases(
        &self,
        owner: &str,
        held: &[(DeliveryId, ClaimId)],
        until: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        // A claimed batch shares one claim id: match the pairs per claim id.
        let mut by_claim: Vec<(&str, Vec<&str>)> = Vec::new();
        for (id, claim) in held {
            match by_claim.iter_mut().find(|(c, _)| *c == claim.as_str()) {
                Some((_, ids)) => ids.push(id.as_str()),
                None => by_claim.push((claim.as_str(), vec![id.as_str()])),
            }
        }
        let mut still_held: Vec<(DeliveryId, ClaimId)> = Vec::new();
        for (claim, ids) in by_claim {
            let ours = Each(doc! {"id": {"$in": &ids}, "claimId": claim, "leaseOwner": owner});
            ours.update_many(
                &self.events,
                doc! {"$set": each_field(doc! {"leaseUntil": until})},
            )
            .await?;
            let renewed = ours.with("leaseUntil", until);
            let found: Vec<Document> = self
                .events
                .find(renewed.matching())
                .projection(doc! {"deliveries": 1})
                .await?
                .try_collect()
                .await?;
            still_held.extend(
                found
                    .iter()
                    .flat_map(elements)
                    .filter(|d| renewed.holds(d))
                    .map(|d| (get_str(d, "id").into(), get_str(d, "claimId").into())),
            );
        }
        Ok(held
            .iter()
            .filter(|pair| still_held.contains(pair))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn next_due_at(&self) -> Result<Option<UnixMillis>, StoreError> {
        let unheld = Each(doc! {"status": DeliveryStatus::Pending.as_str(), "leaseUntil": 0i64});
        let next = self
            .events
            .find_one(unheld.matching())
            .sort(doc! {"deliveries.nextAttemptAt": 1})
            .projection(doc! {"deliveries": 1})
            .await?;
        Ok(next
            .iter()
            .flat_map(elements)
            .filter(|d| unheld.holds(d))
            .filter_map(|d| get_at(d, "nextAttemptAt"))
            .min())
    }

    async fn redrive(&self, id: &DeliveryId, now: UnixMillis) -> Result<bool, StoreError> {
        let each = Each(
            doc! {"id": id, "status": {"$in": statuses([DeliveryStatus::Dead, DeliveryStatus::Parked])}},
        );
        let r = each.update_one(&self.events, redrive_update(now)).await?;
        Ok(r.modified_count > 0)
    }

    async fn redrive_dead_of_kf(&self, kf_id: &KfId, now: UnixMillis) -> Result<u64, StoreError> {
        let each = Each(doc! {"kfId": kf_id.as_str(), "status": DeliveryStatus::Dead.as_str()});
        let r = each.update_many(&self.events, redrive_update(now)).await?;
        Ok(r.modified_count)
    }

    async fn delete_delivery(&self, id: &DeliveryId) -> Result<bool, StoreError> {
        // The event goes with its last delivery.
        let alone = doc! {"deliveries.id": id, "deliveries.1": {"$exists": false}};
        if self.events.delete_one(alone).await?.deleted_count > 0 {
            return Ok(true);
        }
        let r = self
            .events
            .update_one(
                doc! {"deliveries.id": id},
                doc! {"$pull": {"deliveries": {"id": id}}},
            )
            .await?;
        Ok(r.modified_count > 0)
    }

    async fn purge(&self, retention: &Retention, now: UnixMillis) -> Result<u64, StoreError> {
        // The TTL index on `expireAt` sweeps within a minute of each expiry;
        // this catches what it has not reached yet, deliveries of events
        // that still hold others, and documents without `expireAt`.
        let mut removed = 0;
        for (status, cutoff) in retention.cutoffs(now) {
            let expired = doc! {"status": status.as_str(), "updatedAt": {"$lt": now_date(cutoff)}};
            let ids: Vec<Bson> = self
                .events
                .find(Each(expired.clone()).matching())
                .projection(doc! {"_id": 1})
                .await?
                .try_collect::<Vec<Document>>()
                .await?
                .into_iter()
                .filter_map(|d| d.get("_id").cloned())
                .collect();
            if ids.is_empty() {
                continue;
            }
            removed += self
                .events
                .update_many(
                    doc! {"_id": {"$in": &ids}},
                    doc! {"$pull": {"deliveries": expired}},
                )
                .await?
                .modified_count;
            // An event goes with its last delivery (it holds the dedup key until then).
            self.events
                .delete_many(doc! {"_id": {"$in": &ids}, "deliveries": {"$size": 0}})
                .await?;
        }
        Ok(removed)
    }
}

/// Back to pending now, with a fresh retry window; the event is no longer
/// finished, so it is not swept.
fn redrive_update(now: UnixMillis) -> Document {
    doc! {
        "$set": each_field(doc! {"status": DeliveryStatus::Pending.as_str(), "nextAttemptAt": now, "windowStart": now, "updatedAt": now_date(now)}),
        "$unset": {"expireAt": ""},
    }
}
