//! Data migrations in code, named by the `steps` of a migration file. Each
//! is idempotent and resumable: it changes only documents still in the old
//! shape, so a manager killed half-way finishes the work on its next start,
//! and two managers running it together convert each document once.

use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Bson, Document};
use mongodb::Collection;

use crate::store::StoreError;

/// Documents converted per round, and updates in flight at once.
const ROUND: i64 = 500;
const IN_FLIGHT: usize = 16;

/// Run the named step on the events collection.
pub(super) async fn run_step(name: &str, events: &Collection<Document>) -> Result<u64, StoreError> {
    match name {
        "embed_deliveries" => embed_deliveries(events).await,
        other => Err(StoreError::Other(format!(
            "unknown migration step {other:.64}"
        ))),
    }
}

/// The fields of a version-2 event document that belong to its delivery.
const DELIVERY_FIELDS: [(&str, &str); 11] = [
    ("corpId", "corpId"),
    ("kfId", "kfId"),
    ("coalesce", "coalesce"),
    ("status", "status"),
    ("attempts", "attempts"),
    ("windowStart", "windowStart"),
    ("nextAttemptAt", "nextAttemptAt"),
    ("lastError", "lastError"),
    ("deliveredAt", "deliveredAt"),
    ("supersededBy", "supersededBy"),
    ("updatedAt", "updatedAt"),
];

/// Version 2 kept one delivery in the event document's own fields: move them
/// into `deliveries` (one element, whose id is the event id). Leases are
/// dropped: the managers that start on the upgraded store take everything
/// waiting.
async fn embed_deliveries(events: &Collection<Document>) -> Result<u64, StoreError> {
    let old_shape = doc! {"deliveries": {"$exists": false}};
    let mut converted = 0;
    loop {
        let round: Vec<Document> = events
            .find(old_shape.clone())
            .limit(ROUND)
            .await?
            .try_collect()
            .await?;
        if round.is_empty() {
            return Ok(converted);
        }
        let updates = futures_util::stream::iter(round)
            .map(|old| async move {
                let Some(id) = old.get("_id").cloned() else {
                    return Ok::<u64, StoreError>(0);
                };
                let mut delivery = doc! {"id": id.clone(), "leaseUntil": 0i64};
                let mut unset = doc! {"leaseOwner": "", "leaseUntil": "", "claimId": ""};
                for (from, to) in DELIVERY_FIELDS {
                    if let Some(value) = old.get(from) {
                        delivery.insert(to, value.clone());
                    }
                    unset.insert(from, "");
                }
                let source = old.get("corpId").cloned().unwrap_or(Bson::Null);
                let r = events
                    .update_one(
                        doc! {"_id": id, "deliveries": {"$exists": false}},
                        doc! {"$set": {"source": source, "deliveries": [delivery]}, "$unset": unset},
                    )
                    .await?;
                Ok(r.modified_count)
            })
            .buffer_unordered(IN_FLIGHT);
        converted += updates.try_fold(0, |n, m| async move { Ok(n + m) }).await?;
    }
}
