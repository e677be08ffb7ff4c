//! What operators read from MongoDB.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::event_docs::event_from_doc;
use super::{get_i64, MongoStore};
use crate::domain::KfId;
use crate::store::{EventFilter, EventStatus, KfSummary, OperatorReads, StoreError, StoredEvent};

#[async_trait]
impl OperatorReads for MongoStore {
    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.events
            .find_one(doc! {"_id": id})
            .await?
            .map(|d| event_from_doc(&d))
            .transpose()
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, StoreError> {
        let mut query = doc! {};
        if let Some(status) = filter.status {
            query.insert("status", status.as_str());
        }
        if let Some(corp) = &filter.corp_id {
            query.insert("corpId", corp);
        }
        if let Some(kf) = &filter.kf_id {
            query.insert("kfId", kf);
        }
        let docs: Vec<Document> = self
            .events
            .find(query)
            .sort(doc! {"seq": -1})
            .skip(filter.offset as u64)
            .limit(filter.limit as i64)
            .await?
            .try_collect()
            .await?;
        docs.iter().map(event_from_doc).collect()
    }

    async fn kf_summary(&self, kf_id: &KfId) -> Result<KfSummary, StoreError> {
        let kf = kf_id.as_str();
        let count = |status: EventStatus| {
            self.events
                .count_documents(doc! {"kfId": kf, "status": status.as_str()})
        };
        let last = self
            .events
            .find_one(doc! {"kfId": kf, "status": EventStatus::Delivered.as_str()})
            .sort(doc! {"deliveredAt": -1})
            .projection(doc! {"deliveredAt": 1})
            .await?
            .and_then(|d| get_i64(&d, "deliveredAt"));
        Ok(KfSummary {
            pending: count(EventStatus::Pending).await?,
            parked: count(EventStatus::Parked).await?,
            dead: count(EventStatus::Dead).await?,
            last_delivered_at: last,
        })
    }

    async fn queue_stats(&self) -> Result<Vec<(EventStatus, u64, Option<i64>)>, StoreError> {
        let mut out = Vec::new();
        for status in [EventStatus::Pending, EventStatus::Parked, EventStatus::Dead] {
            let filter = doc! {"status": status.as_str()};
            let count = self.events.count_documents(filter.clone()).await?;
            let oldest = self
                .events
                .find_one(filter)
                .sort(doc! {"receivedAt": 1})
                .projection(doc! {"receivedAt": 1})
                .await?
                .and_then(|d| get_i64(&d, "receivedAt"));
            out.push((status, count, oldest));
        }
        Ok(out)
    }
}
