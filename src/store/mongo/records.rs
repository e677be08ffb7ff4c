//! Records (apps, subscriptions, operator corp credentials) on MongoDB: the
//! `wxkf_records` collection, one document per (kind, id).

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::{get_at, get_str, MongoStore};
use crate::store::records::{Record, RecordKind, Records};
use crate::store::{Sealer, StoreError};

fn key(kind: RecordKind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

#[async_trait]
impl Records for MongoStore {
    async fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        let body = mongodb::bson::to_document(&record.body)
            .map_err(|e| StoreError::Other(format!("record body: {e}")))?;
        let document = doc! {
            "_id": key(record.kind, &record.id),
            "kind": record.kind.as_str(),
            "id": &record.id,
            "source": &record.source,
            "body": body,
            "updatedAt": record.updated_at,
        };
        self.records
            .replace_one(doc! {"_id": key(record.kind, &record.id)}, document)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn get_record(&self, kind: RecordKind, id: &str) -> Result<Option<Record>, StoreError> {
        let found = self.records.find_one(doc! {"_id": key(kind, id)}).await?;
        found.map(|d| record_from(kind, &d)).transpose()
    }

    async fn list_records(
        &self,
        kind: RecordKind,
        source: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        let mut filter = doc! {"kind": kind.as_str()};
        if let Some(source) = source {
            filter.insert("source", source);
        }
        let found: Vec<Document> = self
            .records
            .find(filter)
            .sort(doc! {"id": 1})
            .await?
            .try_collect()
            .await?;
        found.iter().map(|d| record_from(kind, d)).collect()
    }

    async fn delete_record(&self, kind: RecordKind, id: &str) -> Result<bool, StoreError> {
        let r = self.records.delete_one(doc! {"_id": key(kind, id)}).await?;
        Ok(r.deleted_count > 0)
    }

    fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}

fn record_from(kind: RecordKind, d: &Document) -> Result<Record, StoreError> {
    let id = get_str(d, "id");
    let body = match d.get("body") {
        Some(Bson::Document(body)) => match Bson::Document(body.clone()).into_relaxed_extjson() {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        },
        _ => {
            return Err(StoreError::Corrupt(format!(
                "{} {id:.64}: no body",
                kind.as_str()
            )))
        }
    };
    Ok(Record {
        kind,
        source: get_str(d, "source"),
        body,
        updated_at: get_at(d, "updatedAt").unwrap_or_default(),
        id,
    })
}
