//! The MongoDB store, through the official driver.
//!
//! Registrations live in the old manager's collection `wxkfpuppets`, in its
//! document shape (`kfOpenId`, `botEndpoint`, `name`, `corpId`, `corpSecret`,
//! `token`, `encodingAESKey`, `online`, `lastOnlineDate`), so an operator can
//! point us at the old database. Events live in `wxkf_events`; a finished
//! event carries `expireAt`, which a TTL index sweeps.
//!
//! Accepted callbacks are written with journaled acknowledgement (`j: true`)
//! unless the URI sets its own write concern: an acknowledged callback must
//! survive a crash of the database server. They are group-committed: the
//! callbacks that arrive together share one `insert_many` (see `mongo_group`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Binary, Bson, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    ClientOptions, CollectionOptions, IndexOptions, ReturnDocument, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};

use super::mongo_group::MongoGroupWriter;
use super::seal::{corp_summaries, credential_sets, StoredCredentials};
use super::sqlite::build_puppet;
use super::{
    AttemptResult, Claim, CorpSummary, EventFilter, EventStatus, InsertOutcome, KfSummary,
    NewEvent, PayloadKind, Sealer, Store, StoreError, StoredEvent, TokenRecord,
};
use crate::domain::{CorpId, CredentialSet, EndpointUrl, KfId, Puppet, Registration, Secret};

const PUPPETS: &str = "wxkfpuppets";
const EVENTS: &str = "wxkf_events";
const TOKENS: &str = "wxkf_tokens";
const META: &str = "wxkf_meta";
const MIGRATIONS_COLLECTION: &str = "wxkf_migrations";
/// Prefix of a claim id shared by the events of one claimed batch (a claim
/// given at insert time belongs to its one event).
const BATCH_CLAIM: &str = "batch-";

/// Ordered migrations, each applied once and recorded. Every step is
/// idempotent, so two managers starting together both succeed.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/mongo/0001_indexes.json")),
    (2, include_str!("../../migrations/mongo/0002_tokens.json")),
];

/// How long finished events are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub finished: Duration,
    pub dead: Duration,
}

pub struct MongoStore {
    db: Database,
    puppets: Collection<Document>,
    events: Collection<Document>,
    tokens: Collection<Document>,
    retention: Retention,
    last_seq: AtomicI64,
    sealer: Sealer,
    /// Accepted callbacks go through group commit.
    writer: MongoGroupWriter,
}

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

fn now_date(ms: i64) -> DateTime {
    DateTime::from_millis(ms)
}

impl MongoStore {
    /// Connect (the database is the URI's path), fail fast when the server
    /// cannot be selected, and apply pending migrations.
    pub async fn connect(
        uri: &str,
        retention: Retention,
        sealer: Sealer,
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
            CollectionOptions::builder().write_concern(journal).build(),
        );
        let tokens = db.collection(TOKENS);
        let writer = MongoGroupWriter::start(events.clone());
        let store = Self {
            writer,
            tokens,
            db,
            puppets,
            events,
            retention,
            last_seq: AtomicI64::new(0),
            sealer,
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
            for index in spec["indexes"].as_array().into_iter().flatten() {
                self.create_index(index).await?;
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

    /// Monotonic within this process, close to time-ordered across managers;
    /// orders events so that coalescing keeps the newest.
    fn next_seq(&self, received_at_ms: i64) -> i64 {
        let candidate = received_at_ms.saturating_mul(1000);
        let mut last = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = candidate.max(last + 1);
            match self.last_seq.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// The update that records one outcome and releases the claim.
    fn finish_update(&self, result: &AttemptResult, now: i64) -> Document {
        let release = doc! {"leaseOwner": Bson::Null, "leaseUntil": 0i64, "claimId": Bson::Null, "updatedAt": now_date(now)};
        let (mut set, count_attempt) = match result {
            AttemptResult::Delivered => (
                doc! {"status": "delivered", "deliveredAt": now, "lastError": Bson::Null, "expireAt": self.expire_at(now, false)},
                true,
            ),
            AttemptResult::Retry {
                next_attempt_at,
                error,
            } => (
                doc! {"status": "pending", "nextAttemptAt": next_attempt_at, "lastError": error},
                true,
            ),
            AttemptResult::Dead { error } => (
                doc! {"status": "dead", "lastError": error, "expireAt": self.expire_at(now, true)},
                true,
            ),
            AttemptResult::Parked => (
                doc! {"status": "parked", "lastError": "no online puppet for this kfId"},
                false,
            ),
            AttemptResult::Superseded { by } => (
                doc! {"status": "superseded", "supersededBy": by, "expireAt": self.expire_at(now, false)},
                false,
            ),
        };
        set.extend(release);
        let mut update = doc! {"$set": set};
        if count_attempt {
            update.insert("$inc", doc! {"attempts": 1i64});
        }
        update
    }

    fn expire_at(&self, now: i64, dead: bool) -> DateTime {
        let keep = if dead {
            self.retention.dead
        } else {
            self.retention.finished
        };
        now_date(now.saturating_add(keep.as_millis() as i64))
    }

    /// Only waiting, unleased events can be leased.
    fn leasable(mut filter: Document, claim: &Claim) -> Document {
        filter.insert("status", doc! {"$in": ["pending", "parked"]});
        filter.insert("leaseUntil", doc! {"$lte": claim.now});
        filter
    }

    fn lease_update(claim: &Claim, claim_id: &str) -> Document {
        doc! {"$set": {
            "status": "pending", "leaseOwner": &claim.owner, "leaseUntil": claim.lease_until,
            "claimId": claim_id, "updatedAt": now_date(claim.now),
        }}
    }

    async fn lease_many(
        &self,
        filter: Document,
        claim: &Claim,
        claim_id: &str,
    ) -> Result<u64, StoreError> {
        let r = self
            .events
            .update_many(
                Self::leasable(filter, claim),
                Self::lease_update(claim, claim_id),
            )
            .await?;
        Ok(r.modified_count)
    }

    async fn lease_newest(
        &self,
        filter: Document,
        claim: &Claim,
        claim_id: &str,
    ) -> Result<Option<Document>, StoreError> {
        Ok(self
            .events
            .find_one_and_update(
                Self::leasable(filter, claim),
                Self::lease_update(claim, claim_id),
            )
            .sort(doc! {"seq": -1})
            .return_document(ReturnDocument::After)
            .await?)
    }
}

fn get_str(d: &Document, key: &str) -> String {
    d.get_str(key).unwrap_or_default().to_owned()
}

fn get_i64(d: &Document, key: &str) -> Option<i64> {
    match d.get(key)? {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::DateTime(v) => Some(v.timestamp_millis()),
        Bson::Double(v) => Some(*v as i64),
        _ => None,
    }
}

fn puppet_from_doc(d: &Document, sealer: &Sealer) -> Result<Puppet, StoreError> {
    build_puppet(
        d.get_str("kfOpenId").unwrap_or_default(),
        get_str(d, "name"),
        d.get_str("botEndpoint").unwrap_or_default(),
        d.get_str("corpId").unwrap_or_default(),
        sealer.open(&get_str(d, "corpSecret"))?,
        sealer.open(&get_str(d, "token"))?,
        &sealer.open(d.get_str("encodingAESKey").unwrap_or_default())?,
        d.get_bool("online").unwrap_or(false),
        get_i64(d, "lastOnlineDate"),
        get_i64(d, "offlineSince"),
    )
}

fn event_from_doc(d: &Document) -> Result<StoredEvent, StoreError> {
    let body = match d.get("body") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(Bson::String(s)) => s.clone().into_bytes(),
        _ => Vec::new(),
    };
    Ok(StoredEvent {
        id: get_str(d, "_id"),
        corp_id: get_str(d, "corpId"),
        kf_id: d.get_str("kfId").ok().map(str::to_owned),
        kind: PayloadKind::parse(d.get_str("kind").unwrap_or_default()).unwrap_or(PayloadKind::Xml),
        body,
        query: get_str(d, "query"),
        coalesce: d.get_bool("coalesce").unwrap_or(false),
        status: EventStatus::parse(d.get_str("status").unwrap_or_default())
            .unwrap_or(EventStatus::Dead),
        attempts: get_i64(d, "attempts")
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        received_at: get_i64(d, "receivedAt").unwrap_or(0),
        window_start: get_i64(d, "windowStart")
            .or_else(|| get_i64(d, "receivedAt"))
            .unwrap_or(0),
        next_attempt_at: get_i64(d, "nextAttemptAt").unwrap_or(0),
        last_error: d.get_str("lastError").ok().map(str::to_owned),
        delivered_at: get_i64(d, "deliveredAt"),
        claim_id: d.get_str("claimId").ok().map(str::to_owned),
    })
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    async fn get_puppet(&self, kf_id: &KfId) -> Result<Option<Puppet>, StoreError> {
        self.puppets
            .find_one(doc! {"kfOpenId": kf_id.as_str()})
            .await?
            .map(|d| puppet_from_doc(&d, &self.sealer))
            .transpose()
    }

    async fn save_registration(&self, reg: &Registration, now: i64) -> Result<(), StoreError> {
        self.puppets
            .update_one(
                doc! {"kfOpenId": reg.kf_id.as_str()},
                doc! {"$set": {
                    "kfOpenId": reg.kf_id.as_str(),
                    "name": &reg.kf_name,
                    "botEndpoint": reg.endpoint.as_str(),
                    "corpId": reg.corp_id.as_str(),
                    "corpSecret": self.sealer.seal(reg.corp_secret.expose()),
                    "token": self.sealer.seal(reg.credentials.token.expose()),
                    "encodingAESKey": self.sealer.seal(reg.credentials.key.expose()),
                    "online": true,
                    "lastOnlineDate": now_date(now),
                    "updatedAt": now_date(now),
                }, "$unset": {"offlineSince": ""}},
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn set_offline(
        &self,
        kf_id: &KfId,
        corp_id: &CorpId,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = self
            .puppets
            .update_one(
                doc! {"kfOpenId": kf_id.as_str(), "corpId": corp_id.as_str()},
                doc! {"$set": {"online": false, "offlineSince": now_date(now), "updatedAt": now_date(now)}},
            )
            .await?;
        Ok(r.matched_count > 0)
    }

    async fn corp_credentials(&self, corp_id: &CorpId) -> Result<Vec<CredentialSet>, StoreError> {
        let rows = self
            .stored_credentials(doc! {"corpId": corp_id.as_str()})
            .await?;
        Ok(credential_sets(&self.sealer, &rows)
            .into_iter()
            .map(|(_, set)| set)
            .collect())
    }

    async fn all_credentials(&self) -> Result<Vec<(CorpId, CredentialSet)>, StoreError> {
        let rows = self.stored_credentials(doc! {}).await?;
        Ok(credential_sets(&self.sealer, &rows))
    }

    async fn list_puppets(
        &self,
        corp_id: Option<&CorpId>,
        online: Option<bool>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Puppet>, StoreError> {
        let mut filter = doc! {};
        if let Some(corp) = corp_id {
            filter.insert("corpId", corp.as_str());
        }
        if let Some(online) = online {
            filter.insert("online", online);
        }
        let docs: Vec<Document> = self
            .puppets
            .find(filter)
            .sort(doc! {"kfOpenId": 1})
            .skip(offset as u64)
            .limit(limit as i64)
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| puppet_from_doc(d, &self.sealer))
            .collect()
    }

    async fn count_puppets(&self, corp_id: &CorpId) -> Result<u64, StoreError> {
        Ok(self
            .puppets
            .count_documents(doc! {"corpId": corp_id.as_str()})
            .await?)
    }

    async fn delete_puppet(&self, kf_id: &KfId) -> Result<bool, StoreError> {
        Ok(self
            .puppets
            .delete_one(doc! {"kfOpenId": kf_id.as_str()})
            .await?
            .deleted_count
            > 0)
    }

    async fn list_corps(&self) -> Result<Vec<CorpSummary>, StoreError> {
        let rows = self.stored_credentials(doc! {}).await?;
        Ok(corp_summaries(&self.sealer, &rows))
    }

    async fn rotate_credentials(
        &self,
        corp_id: &CorpId,
        new: &CredentialSet,
        previous_token: Option<&str>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let docs: Vec<Document> = self
            .puppets
            .find(doc! {"corpId": corp_id.as_str()})
            .projection(doc! {"kfOpenId": 1, "token": 1})
            .await?
            .try_collect()
            .await?;
        // Sealed values are randomised: compare what they open to.
        let targets: Vec<String> = docs
            .iter()
            .filter(|d| {
                previous_token
                    .is_none_or(|p| self.sealer.open(&get_str(d, "token")).is_ok_and(|t| t == p))
            })
            .map(|d| get_str(d, "kfOpenId"))
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let r = self
            .puppets
            .update_many(
                doc! {"kfOpenId": {"$in": &targets}},
                doc! {"$set": {
                    "token": self.sealer.seal(new.token.expose()),
                    "encodingAESKey": self.sealer.seal(new.key.expose()),
                    "updatedAt": now_date(now),
                }},
            )
            .await?;
        Ok(r.matched_count)
    }

    async fn move_puppet(
        &self,
        kf_id: &KfId,
        endpoint: &EndpointUrl,
        now: i64,
    ) -> Result<bool, StoreError> {
        let r = self
            .puppets
            .update_one(
                doc! {"kfOpenId": kf_id.as_str()},
                doc! {"$set": {"botEndpoint": endpoint.as_str(), "updatedAt": now_date(now)}},
            )
            .await?;
        Ok(r.matched_count > 0)
    }

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
            d.insert("expireAt", self.expire_at(event.received_at, true));
        }
        self.writer.insert(d).await
    }

    async fn claim_due(&self, claim: &Claim, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let candidates: Vec<Document> = self
            .events
            .find(doc! {"status": "pending", "nextAttemptAt": {"$lte": claim.now}, "leaseUntil": {"$lte": claim.now}})
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
            older.insert("status", doc! {"$in": ["pending", "parked"]});
            older.insert("leaseUntil", doc! {"$lte": claim.now});
            self.events
                .update_many(
                    older,
                    doc! {"$set": {
                        "status": "superseded", "supersededBy": get_str(&newest, "_id"),
                        "updatedAt": now_date(claim.now), "expireAt": self.expire_at(claim.now, false),
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
                doc! {"corpId": corp_id.as_str(), "kfId": kf_id.as_str(), "status": {"$in": ["pending", "parked"]}},
                doc! {"$set": {"status": "pending", "nextAttemptAt": now, "updatedAt": now_date(now)}},
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

    async fn get_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.events
            .find_one(doc! {"_id": id})
            .await?
            .map(|d| event_from_doc(&d))
            .transpose()
    }

    async fn next_due_at(&self) -> Result<Option<i64>, StoreError> {
        let next = self
            .events
            .find_one(doc! {"status": "pending", "leaseUntil": 0i64})
            .sort(doc! {"nextAttemptAt": 1})
            .projection(doc! {"nextAttemptAt": 1})
            .await?;
        Ok(next.and_then(|d| get_i64(&d, "nextAttemptAt")))
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

    async fn redrive(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let r = self
            .events
            .update_one(
                doc! {"_id": id, "status": {"$in": ["dead", "parked"]}},
                doc! {"$set": {"status": "pending", "nextAttemptAt": now, "windowStart": now, "updatedAt": now_date(now)},
                      "$unset": {"expireAt": ""}},
            )
            .await?;
        Ok(r.modified_count > 0)
    }

    async fn redrive_dead_of_kf(&self, kf_id: &KfId, now: i64) -> Result<u64, StoreError> {
        let r = self
            .events
            .update_many(
                doc! {"kfId": kf_id.as_str(), "status": "dead"},
                doc! {"$set": {"status": "pending", "nextAttemptAt": now, "windowStart": now, "updatedAt": now_date(now)},
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

    async fn get_token(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        let Some(d) = self.tokens.find_one(doc! {"_id": key}).await? else {
            return Ok(None);
        };
        let access_token = d
            .get_str("accessToken")
            .ok()
            .map(|t| self.sealer.open(t))
            .transpose()?;
        Ok(Some(TokenRecord {
            access_token: access_token.map(Secret::new),
            expires_at: get_i64(&d, "expiresAt").unwrap_or(0),
            fetched_at: get_i64(&d, "fetchedAt").unwrap_or(0),
            negative: get_i64(&d, "negErrcode").map(|c| (c, get_str(&d, "negErrmsg"))),
            neg_until: get_i64(&d, "negUntil").unwrap_or(0),
            forced_at: get_i64(&d, "forcedAt").unwrap_or(0),
            lease_until: get_i64(&d, "leaseUntil").unwrap_or(0),
        }))
    }

    async fn try_lease_token(
        &self,
        key: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let taken = self
            .tokens
            .update_one(
                doc! {"_id": key, "$or": [{"leaseUntil": {"$lte": now}}, {"leaseUntil": {"$exists": false}}]},
                doc! {"$set": {"leaseOwner": owner, "leaseUntil": until}},
            )
            .upsert(true)
            .await;
        match taken.map_err(StoreError::from) {
            Ok(_) => Ok(true),
            // The record exists with a running lease: the upsert collided.
            Err(StoreError::DuplicateKey) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn save_token(&self, key: &str, r: &TokenRecord) -> Result<(), StoreError> {
        let mut set = doc! {
            "expiresAt": r.expires_at, "fetchedAt": r.fetched_at, "negUntil": r.neg_until,
            "leaseOwner": Bson::Null, "leaseUntil": 0i64,
        };
        let mut unset = doc! {};
        match &r.access_token {
            Some(t) => {
                set.insert("accessToken", self.sealer.seal(t.expose()));
                set.insert("accessTokenFp", self.sealer.fingerprint(t.expose()))
            }
            None => {
                unset.insert("accessTokenFp", "");
                unset.insert("accessToken", "")
            }
        };
        match &r.negative {
            Some((code, msg)) => {
                set.insert("negErrcode", code);
                set.insert("negErrmsg", msg);
            }
            None => {
                unset.insert("negErrcode", "");
                unset.insert("negErrmsg", "");
            }
        }
        let mut update = doc! {"$set": set, "$max": {"forcedAt": r.forced_at}};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        self.tokens
            .update_one(doc! {"_id": key}, update)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn release_token_lease(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.tokens
            .update_one(
                doc! {"_id": key, "leaseOwner": owner},
                doc! {"$set": {"leaseOwner": Bson::Null, "leaseUntil": 0i64}},
            )
            .await?;
        Ok(())
    }

    async fn mark_token_forced(
        &self,
        key: &str,
        now: i64,
        not_before: i64,
    ) -> Result<bool, StoreError> {
        let marked = self
            .tokens
            .update_one(
                doc! {"_id": key, "$or": [{"forcedAt": {"$lte": not_before}}, {"forcedAt": {"$exists": false}}]},
                doc! {"$set": {"forcedAt": now}},
            )
            .upsert(true)
            .await;
        match marked.map_err(StoreError::from) {
            Ok(_) => Ok(true),
            Err(StoreError::DuplicateKey) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn invalidate_access_token(&self, token: &str) -> Result<u64, StoreError> {
        let r = self
            .tokens
            .update_many(
                doc! {"accessTokenFp": self.sealer.fingerprint(token)},
                doc! {"$unset": {"accessToken": "", "accessTokenFp": ""}, "$set": {"expiresAt": 0i64}},
            )
            .await?;
        Ok(r.modified_count)
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

    async fn kf_summary(&self, kf_id: &KfId) -> Result<KfSummary, StoreError> {
        let kf = kf_id.as_str();
        let count = |status: &str| {
            self.events
                .count_documents(doc! {"kfId": kf, "status": status})
        };
        let last = self
            .events
            .find_one(doc! {"kfId": kf, "status": "delivered"})
            .sort(doc! {"deliveredAt": -1})
            .projection(doc! {"deliveredAt": 1})
            .await?
            .and_then(|d| get_i64(&d, "deliveredAt"));
        Ok(KfSummary {
            pending: count("pending").await?,
            parked: count("parked").await?,
            dead: count("dead").await?,
            last_delivered_at: last,
        })
    }

    async fn purge(&self, _before: i64, _dead_before: i64) -> Result<u64, StoreError> {
        // The TTL index on `expireAt` removes finished events.
        Ok(0)
    }
}

impl MongoStore {
    /// (corp, token, key, online) of the puppets matching `filter`.
    async fn stored_credentials(
        &self,
        filter: Document,
    ) -> Result<Vec<StoredCredentials>, StoreError> {
        let docs: Vec<Document> = self
            .puppets
            .find(filter)
            .projection(doc! {"corpId": 1, "token": 1, "encodingAESKey": 1, "online": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .map(|d| StoredCredentials {
                corp_id: get_str(d, "corpId"),
                token: get_str(d, "token"),
                key: get_str(d, "encodingAESKey"),
                online: d.get_bool("online").unwrap_or(false),
            })
            .collect())
    }

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
