//! Claiming on MongoDB beyond single deliveries: the lanes claims take from,
//! and coalescing: the newest waiting, unleased wake-up of a kfId stands for
//! the older ones, which become `superseded` by it; at claim time the newest
//! is leased in the same step.

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::event_docs::{each_field, elements, Each};
use super::{get_i64, get_str, now_date, MongoStore};
use crate::clock::UnixMillis;
use crate::domain::SubscriptionId;
use crate::store::{Claim, DeliveryStatus, RecordKind, StoreError};

impl MongoStore {
    /// Lease the newest waiting wake-up of a kfId; the older ones become
    /// `superseded` by it.
    pub(super) async fn lease_newest_wake_up(
        &self,
        corp: &str,
        kf: &str,
        claim: &Claim,
        batch: &str,
    ) -> Result<(), StoreError> {
        let wake_ups = Self::wake_ups(corp, kf, claim.now);
        let newest = wake_ups
            .find_one_and_update(&self.events, Self::lease_update(claim, batch))
            .sort(doc! {"seq": -1})
            .await?;
        let Some(newest) = newest else {
            return Ok(());
        };
        let leased =
            |d: &Document| d.get_str("claimId") == Ok(batch) && d.get_str("kfId") == Ok(kf);
        if let Some(id) = elements(&newest)
            .find(|d| leased(d))
            .map(|d| get_str(d, "id"))
        {
            self.supersede_older(&wake_ups, &newest, &id, claim.now)
                .await?;
        }
        Ok(())
    }

    /// The same rule without a lease, after wake-ups parked: returns how
    /// many the newest superseded.
    pub(super) async fn coalesce_wake_ups(
        &self,
        corp: &str,
        kf: &str,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let wake_ups = Self::wake_ups(corp, kf, now);
        let newest = self
            .events
            .find_one(wake_ups.matching())
            .sort(doc! {"seq": -1})
            .projection(doc! {"seq": 1, "deliveries": 1})
            .await?;
        let Some(newest) = newest else {
            return Ok(0);
        };
        let id = elements(&newest)
            .find(|d| wake_ups.holds(d))
            .map(|d| get_str(d, "id"));
        match id {
            Some(id) => self.supersede_older(&wake_ups, &newest, &id, now).await,
            None => Ok(0),
        }
    }

    /// The claim lanes, as the value `subscriptionId` must have: the
    /// puppets' (`null`), each subscription's, and one for deliveries of
    /// subscriptions deleted since (neither of those). The subscriptions
    /// come from their records: this server's `distinct` over an array does
    /// not work on every MongoDB-wire server, and a loose index scan over a
    /// multikey field cannot be done with `find`. `skip` is left out of all.
    pub(super) async fn lanes(&self, skip: &[SubscriptionId]) -> Result<Vec<Bson>, StoreError> {
        let known: Vec<SubscriptionId> = self
            .records
            .find(doc! {"kind": RecordKind::Subscription.as_str()})
            .projection(doc! {"id": 1})
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .map(|d| SubscriptionId::from(get_str(d, "id")))
            .filter(|id| !skip.contains(id))
            .collect();
        let mut neither: Vec<Bson> = vec![Bson::Null];
        neither.extend(known.iter().chain(skip).map(|id| Bson::from(id.as_str())));
        let mut lanes = vec![Bson::Null];
        lanes.extend(known.into_iter().map(Bson::from));
        lanes.push(Bson::Document(doc! {"$nin": neither}));
        Ok(lanes)
    }

    /// A kfId's wake-ups that wait and are not leased.
    fn wake_ups(corp: &str, kf: &str, now: UnixMillis) -> Each {
        Self::leasable(now)
            .with("corpId", corp)
            .with("kfId", kf)
            .with("coalesce", true)
    }

    /// The `wake_ups` of events older than `newest` become `superseded` by
    /// its delivery `newest_id`.
    async fn supersede_older(
        &self,
        wake_ups: &Each,
        newest: &Document,
        newest_id: &str,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let older = doc! {"seq": {"$lt": get_i64(newest, "seq").unwrap_or(i64::MAX)}};
        let mut update = doc! {"$set": each_field(doc! {
            "status": DeliveryStatus::Superseded.as_str(), "supersededBy": newest_id,
            "updatedAt": now_date(now),
        })};
        self.raise_expiry(&mut update, DeliveryStatus::Superseded, now);
        let r = wake_ups
            .update_many_where(&self.events, older, update)
            .await?;
        if r.modified_count > 0 {
            self.settle(doc! {"deliveries.supersededBy": newest_id})
                .await?;
        }
        Ok(r.modified_count)
    }
}
