//! Coalescing on MongoDB: the newest waiting wake-up of a kfId is leased,
//! and the older ones become `superseded` by it.

use mongodb::bson::doc;

use super::event_docs::{each_field, elements};
use super::{get_i64, get_str, now_date, MongoStore};
use crate::store::{Claim, DeliveryStatus, StoreError};

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
        let wake_ups = Self::leasable(claim)
            .with("corpId", corp)
            .with("kfId", kf)
            .with("coalesce", true);
        let newest = wake_ups
            .find_one_and_update(&self.events, Self::lease_update(claim, batch))
            .sort(doc! {"seq": -1})
            .await?;
        let Some(newest) = newest else {
            return Ok(());
        };
        let Some(newest_id) = elements(&newest)
            .find(|d| d.get_str("claimId") == Ok(batch) && d.get_str("kfId") == Ok(kf))
            .map(|d| get_str(d, "id"))
        else {
            return Ok(());
        };
        let older = doc! {"seq": {"$lt": get_i64(&newest, "seq").unwrap_or(i64::MAX)}};
        let mut update = doc! {"$set": each_field(doc! {
            "status": DeliveryStatus::Superseded.as_str(), "supersededBy": &newest_id,
            "updatedAt": now_date(claim.now),
        })};
        self.raise_expiry(&mut update, DeliveryStatus::Superseded, claim.now);
        let r = wake_ups
            .update_many_where(&self.events, older, update)
            .await?;
        if r.modified_count > 0 {
            self.settle(doc! {"deliveries.supersededBy": newest_id})
                .await?;
        }
        Ok(())
    }
}
