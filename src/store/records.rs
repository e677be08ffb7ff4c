//! What operators configure beyond puppets (apps, subscriptions, corp
//! credentials set by an operator, app keys), stored by every backend the same way: a
//! record per (kind, id) with the source it belongs to and a JSON body whose
//! secret fields are sealed. Backends store records and know nothing of
//! their shape; `channels.rs` turns them into domain types, once for both.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::clock::UnixMillis;

use super::{Sealer, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    App,
    Subscription,
    CorpCredentials,
    /// A key of an app (source: its appId) or of a provider (source: its
    /// scope, `suite/{suiteId}`), kept as its digest.
    AppKey,
    /// A WeCom suite (§7.1).
    Suite,
    /// An Open Platform component (§7.2).
    Component,
    /// A ticket pushed to a provider, one record per ticket (`{scope}/{issued}`).
    Ticket,
    /// A customer's grant to a provider (`{scope}/{customer}`).
    Grant,
}

impl RecordKind {
    pub const ALL: [Self; 8] = [
        Self::App,
        Self::Subscription,
        Self::CorpCredentials,
        Self::AppKey,
        Self::Suite,
        Self::Component,
        Self::Ticket,
        Self::Grant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Subscription => "subscription",
            Self::CorpCredentials => "corp_credentials",
            Self::AppKey => "app_key",
            Self::Suite => "suite",
            Self::Component => "component",
            Self::Ticket => "ticket",
            Self::Grant => "grant",
        }
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: RecordKind,
    pub id: String,
    /// The appId or corpId it belongs to (lists by source read this).
    pub source: String,
    /// The record's fields; the secret ones sealed.
    pub body: Map<String, Value>,
    pub updated_at: UnixMillis,
}

/// Storage of records, per backend.
#[async_trait]
pub trait Records: Send + Sync {
    /// Insert or replace by (kind, id).
    async fn put_record(&self, record: &Record) -> Result<(), StoreError>;

    async fn get_record(&self, kind: RecordKind, id: &str) -> Result<Option<Record>, StoreError>;

    /// Records of a kind, optionally of one source, ordered by id.
    async fn list_records(
        &self,
        kind: RecordKind,
        source: Option<&str>,
    ) -> Result<Vec<Record>, StoreError>;

    async fn delete_record(&self, kind: RecordKind, id: &str) -> Result<bool, StoreError>;

    /// The sealer the backend was opened with (records seal their secrets).
    fn sealer(&self) -> &Sealer;
}
