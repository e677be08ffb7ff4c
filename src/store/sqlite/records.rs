//! Records (apps, subscriptions, operator corp credentials) on the embedded
//! store: the `records` table.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row};

use super::SqliteStore;
use crate::store::records::{Record, RecordKind, Records};
use crate::store::{Sealer, StoreError};

#[async_trait]
impl Records for SqliteStore {
    async fn put_record(&self, record: &Record) -> Result<(), StoreError> {
        let r = record.clone();
        let body = serde_json::Value::Object(r.body).to_string();
        self.run(move |c| {
            c.execute(
                "INSERT INTO records (kind, id, source, body, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (kind, id) DO UPDATE SET
                    source = excluded.source, body = excluded.body, updated_at = excluded.updated_at",
                params![r.kind.as_str(), r.id, r.source, body, r.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_record(&self, kind: RecordKind, id: &str) -> Result<Option<Record>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            c.query_row(
                "SELECT id, source, body, updated_at FROM records WHERE kind = ?1 AND id = ?2",
                params![kind.as_str(), id],
                |row| Ok(record_from(kind, row)),
            )
            .optional()?
            .transpose()
        })
        .await
    }

    async fn list_records(
        &self,
        kind: RecordKind,
        source: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        let source = source.map(str::to_owned);
        self.run(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, source, body, updated_at FROM records
                 WHERE kind = ?1 AND (?2 IS NULL OR source = ?2) ORDER BY id",
            )?;
            let rows = stmt.query_map(params![kind.as_str(), source], |row| {
                Ok(record_from(kind, row))
            })?;
            rows.map(|r| r?).collect()
        })
        .await
    }

    async fn delete_record(&self, kind: RecordKind, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            Ok(c.execute(
                "DELETE FROM records WHERE kind = ?1 AND id = ?2",
                params![kind.as_str(), id],
            )? > 0)
        })
        .await
    }

    fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}

fn record_from(kind: RecordKind, row: &Row<'_>) -> Result<Record, StoreError> {
    let id: String = row.get(0)?;
    let body: String = row.get(2)?;
    let body = match serde_json::from_str(&body) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => {
            return Err(StoreError::Corrupt(format!(
                "{} {id:.64}: body is not a JSON object",
                kind.as_str()
            )))
        }
    };
    Ok(Record {
        kind,
        id,
        source: row.get(1)?,
        body,
        updated_at: row.get(3)?,
    })
}
