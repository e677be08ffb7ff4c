//! Outcomes recorded in groups on MongoDB: the deliveries that share an
//! outcome go in one `update_many`, and a group that did not match in full
//! finds out which of its claims still held.

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::event_docs::{elements, Each};
use super::{get_str, MongoStore};
use crate::clock::UnixMillis;
use crate::store::{AttemptResult, Outcome, StoreError};

impl MongoStore {
    /// Record one outcome for a group of deliveries with one `update_many`.
    pub(super) async fn finish_group(
        &self,
        items: &[Outcome],
        result: &AttemptResult,
        shared: Option<&str>,
        members: &[usize],
        now: UnixMillis,
    ) -> Result<Vec<bool>, StoreError> {
        let ids: Vec<&str> = members
            .iter()
            .map(|&i| items[i].delivery.as_str())
            .collect();
        let claims: Vec<&str> = members.iter().map(|&i| items[i].claim.as_str()).collect();
        let claim = match shared {
            Some(c) => Bson::String(c.to_owned()),
            None => Bson::Document(doc! {"$in": &claims}),
        };
        let each = Each(doc! {"id": {"$in": &ids}, "claimId": claim});
        let r = each
            .update_many(&self.events, self.finish_update(result, now))
            .await?;
        if r.matched_count as usize == members.len() {
            return Ok(vec![true; members.len()]);
        }
        // Some leases were taken over meanwhile (or one event held several
        // of these deliveries): ours are the ones whose claim we released.
        let found: Vec<Document> = self
            .events
            .find(doc! {"deliveries.id": {"$in": &ids}})
            .projection(doc! {"deliveries": 1})
            .await?
            .try_collect()
            .await?;
        let released: Vec<String> = found
            .iter()
            .flat_map(elements)
            .filter(|d| matches!(d.get("claimId"), None | Some(Bson::Null)))
            .map(|d| get_str(d, "id"))
            .collect();
        Ok(ids
            .iter()
            .map(|id| released.iter().any(|r| r == id))
            .collect())
    }
}
