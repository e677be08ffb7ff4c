//! The delivery queue on MongoDB: insert (through group commit), claim with
//! a lease, record outcomes guarded by the claim id, wake, re-drive.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Binary, Bson, Document};

use super::event_docs::event_from_doc;
use super::{get_i64, get_str, now_date, statuses, MongoStore, BATCH_CLAIM};
use crate::domain::{CorpId, KfId};
use crate::store::{
    AttemptResult, Claim, EventStatus, InsertOutcome, NewEvent, Queue, Retention, StoreError,
    StoredEvent,
};

#[async_trait]
impl Queue for MongoStore {
    async fn insert_event(&self, event: &NewEvent) -> Result<InsertOutcome, StoreError> {
        let status = if event.kf_id.is_some() {
            EventStatus::Pending
        } else {
            EventStatus::Unroutable
        };
        let mut d = doc! {
            "_id": &event.id,
            "corpId": event.corp_id.as_str(),
            "dedupKey": &event.dedup_key,
            "kind": event.kind.as_str(),
            "body": Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: event.body.clone() },
            "query": &event.query,
            "coalesce": event.coalesce,
            "status": status.as_str(),
            "attempts": 0i64,
            "seq": self.next_seq(event.received_at),
            "receivedAt": event.received_at,
            "windowStart": event.received_at,
            "nextAttemptAt": event.received_at,
            "leaseUntil": event.lease.as_ref().map_or(0, |l| l.until),
            "updatedAt": now_date(event.received_at),
        };
        if let Some(lease) = &event.lease {
            d.insert("leaseOwner", &lease.owner);
            d.insert("claimId", &lease.claim_id);
        }
        if let Some(kf) = &event.kf_id {
            d.insert("kfId", kf.as_str());
        }
        if status == EventStatus::Unroutable {
            d.insert(
                "expireAt",
                self.expire_at(EventStatus::Unroutable, event.received_at),
            );
        }
        self.writer.insert(d).await
    }

    async fn claim_due(&self, claim: &Claim, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let candidates: Vec<Document> = self
            .events
            .find(doc! {"status": EventStatus::Pending.as_str(), "nextAttemptAt": {"$lte": claim.now}, "leaseUntil": {"$lte": claim.now}})
            .sort(doc! {"nextAttemptAt": 1, "seq": 1})
            .limit(limit as i64)
            .projection(doc! {"_id": 1, "corpId": 1, "kfId": 1, "coalesce": 1})
            .await?
            .try_collect()
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // One claim id for the whole batch: the finishing update matches
        // (event id, claim id), which is still unique per lease.
        let batch = format!("{BATCH_CLAIM}{}", uuid::Uuid::new_v4());
        let mut singles = Vec::new();
        let mut wake_ups: Vec<(String, String)> = Vec::new();
        for c in &candidates {
            match (c.get_str("kfId"), c.get_bool("coalesce").unwrap_or(false)) {
                (Ok(kf), true) => {
                    let key = (get_str(c, "corpId"), kf.to_owned());
                    if !wake_ups.contains(&key) {
                        wake_ups.push(key);
                    }
                }
                _ => singles.push(c.get("_id").cloned().unwrap_or(Bson::Null)),
            }
        }
        if !singles.is_empty() {
            self.lease_many(doc! {"_id": {"$in": singles}}, claim, &batch)
                .await?;
        }
        for (corp, kf) in wake_ups {
            // The newest waiting wake-up of this kfId stands for all older ones.
            let siblings = doc! {"corpId": &corp, "kfId": &kf, "coalesce": true};
            let Some(newest) = self.lease_newest(siblings.clone(), claim, &batch).await? else {
                continue;
            };
            let mut older = siblings;
            older.insert(
                "seq",
                doc! {"$lt": get_i64(&newest, "seq").unwrap_or(i64::MAX)},
            );
            older.insert("status", doc! {"$in": statuses(EventStatus::waiting())});
            older.insert("leaseUntil", doc! {"$lte": claim.now});
            self.events
                .update_many(
                    older,
                    doc! {"$set": {
                        "status": EventStatus::Superseded.as_str(), "supersededBy": get_str(&newest, "_id"),
                        "updatedAt": now_date(claim.now), "expireAt": self.expire_at(EventStatus::Superseded, claim.now),
                    }},
                )
                .await?;
        }
        let leased: Vec<Document> = self
            .events
            .find(doc! {"claimId": &batch})
            .await?
            .try_collect()
            .await?;
        leased.iter().map(event_from_doc).collect()
    }

    async fn finish_attempt(
        &self,
        event_id: &str,
        claim_id: &str,
        result: &AttemptResult,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = self
            .events
            .update_one(
                doc! {"_id": event_id, "claimId": claim_id},
                self.finish_update(result, now),
            )
            .await?;
        Ok(r.matched_count > 0)
    }

    /// Outcomes that share their update (delivered, parked, superseded by
    /// the same event) are written with one `update_many` per group; the
    /// rest (each with its own error and time) one by one, concurrently.
    async fn finish_attempts(
        &self,
        items: &[(String, String, AttemptResult)],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut groups: Vec<(&AttemptResult, Option<&str>, Vec<usize>)> = Vec::new();
        let mut singles = Vec::new();
        for (i, (_, claim_id, result)) in items.iter().enumerate() {
            if matches!(
                result,
                AttemptResult::Retry { .. } | AttemptResult::Dead { .. }
            ) {
                singles.push(i);
                continue;
            }
            // A claim id shared by a claimed batch must be matched as is;
            // ids given at insert are unique to their event and go together.
            let shared = claim_id
                .starts_with(BATCH_CLAIM)
                .then_some(claim_id.as_str());
            match groups
                .iter_mut()
                .find(|(r, c, _)| *r == result && *c == shared)
            {
                Some((_, _, members)) => members.push(i),
                None => groups.push((result, shared, vec![i])),
            }
        }
        let mut recorded = vec![false; items.len()];
        let group_updates = groups.iter().map(|(result, shared, members)| async move {
            let ids: Vec<&str> = members.iter().map(|&i| items[i].0.as_str()).collect();
            let claims: Vec<&str> = members.iter().map(|&i| items[i].1.as_str()).collect();
            let claim = match shared {
                Some(c) => Bson::String((*c).to_owned()),
                None => Bson::Document(doc! {"$in": &claims}),
            };
            let r = self
                .events
                .update_many(
                    doc! {"_id": {"$in": &ids}, "claimId": claim},
                    self.finish_update(result, now),
                )
                .await?;
            if r.matched_count as usize == members.len() {
                return Ok(vec![true; members.len()]);
            }
            // Some leases were taken over meanwhile: ours are the ones whose
            // claim we just released.
            let still_claimed: Vec<String> = self
                .events
                .find(doc! {"_id": {"$in": &ids}, "claimId": {"$ne": Bson::Null}})
                .projection(doc! {"_id": 1})
                .await?
                .try_collect::<Vec<Document>>()
                .await?
                .iter()
                .map(|d| get_str(d, "_id"))
                .collect();
            Ok::<_, StoreError>(
                ids.iter()
                    .map(|id| !still_claimed.iter().any(|c| c == id))
                    .collect(),
            )
        });
        let single_updates = singles.iter().map(|&i| {
            let (event_id, claim_id, result) = &items[i];
            self.finish_attempt(event_id, claim_id, result, now)
        });
        let (group_results, single_results) = futures_util::future::join(
            futures_util::future::join_all(group_updates),
            futures_util::future::join_all(single_updates),
        )
        .await;
        for ((_, _, members), result) in groups.iter().zip(group_results) {
            for (&i, ok) in members.iter().zip(result?) {
                recorded[i] = ok;
            }
        }
        for (&i, result) in singles.iter().zip(single_results) {
            recorded[i] = result?;
        }
        Ok(recorded)
    }

    async fn wake_kf(&self, corp_id: &CorpId, kf_id: &KfId, now: i64) -> Result<u64, StoreError> {
        let r = self
            .events
            .update_many(
                doc! {"corpId": corp_id.as_str(), "kfId": kf_id.as_str(), "status": {"$in": statuses(EventStatus::waiting())}},
                doc! {"$set": {"status": EventStatus::Pending.as_str(), "nextAttemptAt": now, "updatedAt": now_date(now)}},
            )
            .await?;
        Ok(r.modified_count)
    }

    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let r = self
            .events
            .update_many(
                doc! {"leaseOwner": owner},
                doc! {"$set": {"leaseOwner": Bson::Null, "leaseUntil": 0i64, "claimId": Bson::Null}},
            )
            .await?;
        Ok(r.modified_count)
    }

    async fn renew_leases(
        &self,
        owner: &str,
        held: &[(String, String)],
        until: i64,
    ) -> Result<Vec<String>, StoreError> {
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
        let mut docs: Vec<Document> = Vec::new();
        for (claim, ids) in by_claim {
            let ours = doc! {"_id": {"$in": &ids}, "claimId": claim, "leaseOwner": owner};
            self.events
                .update_many(ours.clone(), doc! {"$set": {"leaseUntil": until}})
                .await?;
            let mut still_ours = ours;
            still_ours.insert("leaseUntil", until);
            let found: Vec<Document> = self
                .events
                .find(still_ours)
                .projection(doc! {"_id": 1, "claimId": 1})
                .await?
                .try_collect()
                .await?;
            docs.extend(found);
        }
        Ok(held
            .iter()
            .filter(|(id, claim)| {
                docs.iter()
                    .any(|d| get_str(d, "_id") == *id && get_str(d, "claimId") == *claim)
            })
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let next = self
            .events
            .find_one(doc! {"status": EventStatus::Pending.as_str(), "leaseUntil": 0i64})
            .sort(doc! {"nextAttemptAt": 1})
            .projection(doc! {"nextAttemptAt": 1})
            .await?;
        Ok(next.and_then(|d| get_i64(&d, "nextAttemptAt")))
    }

    async fn redrive(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let r = self
            .events
            .update_one(
                doc! {"_id": id, "status": {"$in": statuses([EventStatus::Dead, EventStatus::Parked])}},
                doc! {"$set": {"status": EventStatus::Pending.as_str(), "nextAttemptAt": now, "windowStart": now, "updatedAt": now_date(now)},
                      "$unset": {"expireAt": ""}},
            )
            .await?;
        Ok(r.modified_count > 0)
    }

    async fn redrive_dead_of_kf(&self, kf_id: &KfId, now: i64) -> Result<u64, StoreError> {
        let r = self
            .events
            .update_many(
                doc! {"kfId": kf_id.as_str(), "status": EventStatus::Dead.as_str()},
                doc! {"$set": {"status": EventStatus::Pending.as_str(), "nextAttemptAt": now, "windowStart": now, "updatedAt": now_date(now)},
                      "$unset": {"expireAt": ""}},
            )
            .await?;
        Ok(r.modified_count)
    }

    async fn delete_event(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .events
            .delete_one(doc! {"_id": id})
            .await?
            .deleted_count
            > 0)
    }

    async fn purge(&self, retention: &Retention, now: i64) -> Result<u64, StoreError> {
        // The TTL index on `expireAt` sweeps within a minute of each expiry;
        // this catches what it has not reached yet and documents written
        // without `expireAt` (by an older release).
        let mut removed = 0;
        for (status, cutoff) in retention.cutoffs(now) {
            removed += self
                .events
                .delete_many(
                    doc! {"status": status.as_str(), "updatedAt": {"$lt": now_date(cutoff)}},
                )
                .await?
                .deleted_count;
        }
        Ok(removed)
    }
}
