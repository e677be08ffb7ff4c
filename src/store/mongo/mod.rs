//! The MongoDB store, through the official driver.
//!
//! Registrations live in the old manager's collection `wxkfpuppets`, in its
//! document shape (`kfOpenId`, `botEndpoint`, `name`, `corpId`, `corpSecret`,
//! `token`, `encodingAESKey`, `online`, `lastOnlineDate`), so an operator can
//! point us at the old database. Events live in `wxkf_events`, each with its
//! deliveries embedded (`event_docs`); an event whose deliveries are all
//! finished carries `expireAt`, which a TTL index sweeps.
//!
//! Accepted callbacks are written with journaled acknowledgement (`j: true`)
//! unless the URI sets its own write concern: an acknowledged callback must
//! survive a crash of the database server. They are group-committed: the
//! callbacks that arrive together share one `insert_many` (see `mongo_group`).

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, CollectionOptions, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};

mod coalesce;
mod commands;
mod each;
mod event_docs;
mod group_commit;
mod outcomes;
mod queue;
mod reads;
mod records;
mod registrations;
mod tokens;
mod transfer;
mod upgrade;

use group_commit::MongoGroupWriter;

use crate::clock::UnixMillis;
use crate::store::{CommandCount, DeliveryStatus, Retention, Sealer, Store, StoreError};

const PUPPETS: &str = "wxkfpuppets";
const EVENTS: &str = "wxkf_events";
const TOKENS: &str = "wxkf_tokens";
const META: &str = "wxkf_meta";
const RECORDS: &str = "wxkf_records";
const MIGRATIONS_COLLECTION: &str = "wxkf_migrations";
/// Prefix of a claim id shared by the events of one claimed batch (a claim
/// given at insert time belongs to its one event).
const BATCH_CLAIM: &str = "batch-";

/// Ordered migrations, each applied once and recorded. Every step is
/// idempotent, so two managers starting together both succeed.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/mongo/0001_indexes.json"),
    ),
    (
        2,
        include_str!("../../../migrations/mongo/0002_tokens.json"),
    ),
    (
        3,
        include_str!("../../../migrations/mongo/0003_events_deliveries.json"),
    ),
    (
        4,
        include_str!("../../../migrations/mongo/0004_channels.json"),
    ),
    (5, include_str!("../../../migrations/mongo/0005_lanes.json")),
];

pub struct MongoStore {
    db: Database,
    puppets: Collection<Document>,
    events: Collection<Document>,
    tokens: Collection<Document>,
    records: Collection<Document>,
    retention: Retention,
    last_seq: AtomicI64,
    sealer: Sealer,
    /// Accepted callbacks go through group commit.
    writer: MongoGroupWriter,
    /// Commands sent, when counted (`MONGO_COMMAND_COUNTS`).
    counts: Option<Arc<CommandCounts>>,
}

pub use commands::CommandCounts;

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        if is_duplicate_key(&e) {
            return StoreError::DuplicateKey;
        }
        match *e.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. } => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Other(e.to_string()),
        }
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

/// Statuses as the values stored in a delivery's `status`.
fn statuses(of: impl IntoIterator<Item = DeliveryStatus>) -> Vec<&'static str> {
    of.into_iter().map(DeliveryStatus::as_str).collect()
}

/// A BSON date, for the fields MongoDB's TTL index reads (`expireAt`) and
/// the old manager's `updatedAt`; every other instant is an Int64.
fn now_date(at: UnixMillis) -> DateTime {
    DateTime::from_millis(at.as_millis())
}

impl MongoStore {
    /// Connect (the database is the URI's path), fail fast when the server
    /// cannot be selected, and apply pending migrations.
    pub async fn connect(
        uri: &str,
        retention: Retention,
        sealer: Sealer,
    ) -> Result<Self, StoreError> {
        Self::connect_counting(uri, retention, sealer, None).await
    }

    /// `connect`, counting every command sent into `counts` when given.
    pub async fn connect_counting(
        uri: &str,
        retention: Retention,
        sealer: Sealer,
        counts: Option<Arc<CommandCounts>>,
    ) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::Other(format!("invalid MongoDB URI: {}", e.kind)))?;
        // Answer 503 within WeCom's 5 s rather than hang for the driver's 30 s default.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(2));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(2));
        options
            .app_name
            .get_or_insert_with(|| "wxkf-manager".to_owned());
        let journal = options
            .write_concern
            .clone()
            .filter(|wc| wc.journal.is_some() || wc.w.is_some())
            .unwrap_or_else(|| WriteConcern::builder().journal(true).build());
        options.command_event_handler = counts.as_ref().map(CommandCounts::handler);
        let client = Client::with_options(options)?;
        let db = client.default_database().ok_or_else(|| {
            StoreError::Other("MONGO_URI has no database name in its path".into())
        })?;
        let events = db.collection_with_options(
            EVENTS,
            CollectionOptions::builder()
                .write_concern(journal.clone())
                .build(),
        );
        let puppets = db.collection_with_options(
            PUPPETS,
            CollectionOptions::builder()
                .write_concern(journal.clone())
                .build(),
        );
        let tokens = db.collection(TOKENS);
        let records = db.collection_with_options(
            RECORDS,
            CollectionOptions::builder()
                .write_concern(journal.clone())
                .build(),
        );
        let writer = MongoGroupWriter::start(events.clone());
        let store = Self {
            writer,
            tokens,
            records,
            db,
            puppets,
            events,
            retention,
            last_seq: AtomicI64::new(0),
            sealer,
            counts,
        };
        store.migrate().await?;
        store.check_secrets_key().await?;
        Ok(store)
    }

    /// Apply pending migrations; returns how many ran.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let record: Collection<Document> = self.db.collection(MIGRATIONS_COLLECTION);
        let mut applied = 0;
        for (version, text) in MIGRATIONS {
            if record.find_one(doc! {"_id": version}).await?.is_some() {
                continue;
            }
            let spec: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                StoreError::Other(format!("migration {version} is not valid JSON: {e}"))
            })?;
            for step in spec["steps"].as_array().into_iter().flatten() {
                let name = step.as_str().unwrap_or_default();
                let n = upgrade::run_step(name, &self.events).await?;
                tracing::info!(version, step = name, documents = n, "migration step done");
            }
            for index in spec["indexes"].as_array().into_iter().flatten() {
                self.create_index(index).await?;
            }
            for index in spec["dropIndexes"].as_array().into_iter().flatten() {
                self.drop_index(index).await?;
            }
            let done = record
                .insert_one(doc! {"_id": version, "description": spec["description"].as_str().unwrap_or(""), "appliedAt": DateTime::now()})
                .await;
            match done.map_err(StoreError::from) {
                Ok(_) => applied += 1,
                // Another manager recorded it first: it ran the same idempotent steps.
                Err(StoreError::DuplicateKey) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }

    async fn create_index(&self, spec: &serde_json::Value) -> Result<(), StoreError> {
        let to_doc = |v: &serde_json::Value| -> Result<Document, StoreError> {
            mongodb::bson::to_document(v)
                .map_err(|e| StoreError::Other(format!("bad index spec: {e}")))
        };
        let collection = spec["collection"].as_str().unwrap_or_default();
        let keys = to_doc(&spec["keys"])?;
        let opts = &spec["options"];
        let options = IndexOptions::builder()
            .name(opts["name"].as_str().map(str::to_owned))
            .unique(opts["unique"].as_bool())
            .expire_after(opts["expireAfterSeconds"].as_u64().map(Duration::from_secs))
            .build();
        let model = IndexModel::builder().keys(keys).options(options).build();
        match self
            .db
            .collection::<Document>(collection)
            .create_index(model)
            .await
        {
            Ok(_) => Ok(()),
            // 85/86: an equivalent index exists under other options (e.g. made by the old manager).
            Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == 85 || c.code == 86) => {
                tracing::warn!(collection, error = %e, "index exists with other options; keeping it");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl MongoStore {
    /// Drop an index that a later migration replaced; one already gone
    /// (another manager dropped it, code 27) is fine.
    async fn drop_index(&self, spec: &serde_json::Value) -> Result<(), StoreError> {
        let collection = spec["collection"].as_str().unwrap_or_default();
        let name = spec["name"].as_str().unwrap_or_default();
        match self
            .db
            .collection::<Document>(collection)
            .drop_index(name)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(&*e.kind, ErrorKind::Command(c) if c.code == 27 || c.code == 26) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn get_str(d: &Document, key: &str) -> String {
    d.get_str(key).unwrap_or_default().to_owned()
}

fn get_i64(d: &Document, key: &str) -> Option<i64> {
    bson_i64(d.get(key)?)
}

/// An instant, whichever way it was written (Int64, Int32, a BSON date).
fn get_at(d: &Document, key: &str) -> Option<UnixMillis> {
    get_i64(d, key).map(UnixMillis::from_millis)
}

fn bson_i64(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::DateTime(v) => Some(v.timestamp_millis()),
        Bson::Double(v) => Some(*v as i64),
        _ => None,
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    fn command_counts(&self) -> Vec<(String, CommandCount)> {
        self.counts
            .as_ref()
            .map(|c| c.snapshot())
            .unwrap_or_default()
    }
}

impl MongoStore {
    /// Refuse to start with a SECRETS_KEY other than the one the store's
    /// secrets were written with (or without one when they are sealed).
    async fn check_secrets_key(&self) -> Result<(), StoreError> {
        let meta: Collection<Document> = self.db.collection(META);
        let stored = meta
            .find_one(doc! {"_id": "secrets_check"})
            .await?
            .map(|d| get_str(&d, "value"));
        match self.sealer.verify_check(stored.as_deref()) {
            Ok(Some(check)) => {
                meta.update_one(
                    doc! {"_id": "secrets_check"},
                    doc! {"$set": {"value": check}},
                )
                .upsert(true)
                .await?;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(reason) => Err(StoreError::Config(reason)),
        }
    }
}
