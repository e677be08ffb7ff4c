//! What operators read from MongoDB: deliveries, each with its event.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::event_docs::{deliveries_of, Each};
use super::{get_at, get_i64, MongoStore};
use crate::clock::UnixMillis;
use crate::domain::{DeliveryId, KfId, SubscriptionId};
use crate::store::{
    Backlog, BacklogCount, Delivery, DeliveryFilter, DeliveryStatus, KfSummary, LatestError,
    OperatorReads, StoreError, Target,
};

#[async_trait]
impl OperatorReads for MongoStore {
    async fn get_delivery(&self, id: &DeliveryId) -> Result<Option<Delivery>, StoreError> {
        let Some(event) = self.events.find_one(doc! {"deliveries.id": id}).await? else {
            return Ok(None);
        };
        Ok(deliveries_of(&event)?.into_iter().find(|d| &d.id == id))
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let mut each = Each(doc! {});
        if let Some(status) = filter.status {
            each = each.with("status", status.as_str());
        }
        if let Some(corp) = &filter.corp_id {
            each = each.with("corpId", corp);
        }
        if let Some(kf) = &filter.kf_id {
            each = each.with("kfId", kf);
        }
        let unwound: Document = each
            .0
            .iter()
            .map(|(k, v)| (format!("deliveries.{k}"), v.clone()))
            .collect();
        let pipeline = [
            doc! {"$match": if each.0.is_empty() { doc! {} } else { each.matching() }},
            doc! {"$sort": {"seq": -1}},
            doc! {"$unwind": "$deliveries"},
            doc! {"$match": unwound},
            doc! {"$skip": filter.offset as i64},
            doc! {"$limit": filter.limit.max(1) as i64},
        ];
        let docs: Vec<Document> = self.events.aggregate(pipeline).await?.try_collect().await?;
        let mut out = Vec::with_capacity(docs.len());
        for d in &docs {
            out.extend(deliveries_of(d)?);
        }
        Ok(out)
    }

    async fn kf_summary(&self, kf_id: &KfId) -> Result<KfSummary, StoreError> {
        let of_kf = Each(doc! {"kfId": kf_id.as_str()});
        let count = |status: DeliveryStatus| {
            self.events
                .count_documents(of_kf.clone().with("status", status.as_str()).matching())
        };
        let delivered = of_kf
            .clone()
            .with("status", DeliveryStatus::Delivered.as_str());
        let last = self
            .events
            .find_one(delivered.matching())
            .sort(doc! {"deliveries.deliveredAt": -1})
            .await?;
        let last_delivered_at = match last {
            Some(event) => deliveries_of(&event)?
                .into_iter()
                .filter(|d| d.kf_id.as_deref() == Some(kf_id.as_str()))
                .filter_map(|d| d.delivered_at)
                .max(),
            None => None,
        };
        Ok(KfSummary {
            pending: count(DeliveryStatus::Pending).await?,
            parked: count(DeliveryStatus::Parked).await?,
            dead: count(DeliveryStatus::Dead).await?,
            last_delivered_at,
        })
    }

    async fn backlogs(&self) -> Result<Vec<Backlog>, StoreError> {
        let in_backlog = [
            DeliveryStatus::Pending,
            DeliveryStatus::Parked,
            DeliveryStatus::Dead,
        ]
        .map(|s| s.as_str())
        .to_vec();
        let target = doc! {
            "subscription": "$deliveries.subscriptionId",
            "corp": "$deliveries.corpId",
            "kf": "$deliveries.kfId",
        };
        let mut with_status = target.clone();
        with_status.insert("status", "$deliveries.status");
        let counts = [
            doc! {"$match": {"deliveries.status": {"$in": &in_backlog}}},
            doc! {"$unwind": "$deliveries"},
            doc! {"$match": {"deliveries.status": {"$in": &in_backlog}}},
            doc! {"$group": {"_id": with_status, "count": {"$sum": 1}, "oldest": {"$min": "$receivedAt"}}},
        ];
        let failing = [DeliveryStatus::Pending, DeliveryStatus::Dead]
            .map(|s| s.as_str())
            .to_vec();
        let has_error = doc! {"$in": &failing};
        let errors = [
            doc! {"$match": {"deliveries.status": has_error.clone()}},
            doc! {"$unwind": "$deliveries"},
            doc! {"$match": {"deliveries.status": has_error, "deliveries.lastError": {"$type": "string"}}},
            doc! {"$sort": {"deliveries.updatedAt": -1}},
            doc! {"$group": {"_id": target, "at": {"$first": "$deliveries.updatedAt"}, "error": {"$first": "$deliveries.lastError"}}},
        ];
        let counted: Vec<Document> = self.events.aggregate(counts).await?.try_collect().await?;
        let failed: Vec<Document> = self.events.aggregate(errors).await?.try_collect().await?;
        let target_of = |group: &Document| -> Result<Target, StoreError> {
            let key = group
                .get_document("_id")
                .map_err(|_| StoreError::Corrupt("backlog group without its target".into()))?;
            Ok(Target::of(
                key.get_str("subscription").ok().map(SubscriptionId::from),
                key.get_str("corp").unwrap_or_default().to_owned(),
                key.get_str("kf").ok().map(str::to_owned),
            ))
        };
        let counts = counted
            .iter()
            .map(|g| {
                let status = g
                    .get_document("_id")
                    .ok()
                    .and_then(|k| k.get_str("status").ok())
                    .and_then(DeliveryStatus::parse)
                    .ok_or_else(|| {
                        StoreError::Corrupt("backlog group without its status".into())
                    })?;
                Ok(BacklogCount {
                    target: target_of(g)?,
                    status,
                    count: get_i64(g, "count").unwrap_or(0).max(0) as u64,
                    oldest: get_at(g, "oldest"),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let errors = failed
            .iter()
            .map(|g| {
                Ok(LatestError {
                    target: target_of(g)?,
                    at: get_at(g, "at").unwrap_or_default(),
                    error: g.get_str("error").unwrap_or_default().to_owned(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Backlog::gather(counts, errors))
    }

    async fn queue_stats(
        &self,
    ) -> Result<Vec<(DeliveryStatus, u64, Option<UnixMillis>)>, StoreError> {
        let counted = [
            DeliveryStatus::Pending,
            DeliveryStatus::Parked,
            DeliveryStatus::Dead,
        ];
        let names: Vec<&str> = counted.iter().map(|s| s.as_str()).collect();
        let pipeline = [
            doc! {"$match": {"deliveries.status": {"$in": &names}}},
            doc! {"$unwind": "$deliveries"},
            doc! {"$match": {"deliveries.status": {"$in": &names}}},
            doc! {"$group": {"_id": "$deliveries.status", "count": {"$sum": 1}, "oldest": {"$min": "$receivedAt"}}},
        ];
        let groups: Vec<Document> = self.events.aggregate(pipeline).await?.try_collect().await?;
        Ok(counted
            .into_iter()
            .map(|status| {
                let group = groups
                    .iter()
                    .find(|g| g.get_str("_id") == Ok(status.as_str()));
                (
                    status,
                    group.and_then(|g| get_i64(g, "count")).unwrap_or(0) as u64,
                    group.and_then(|g| get_at(g, "oldest")),
                )
            })
            .collect())
    }
}
