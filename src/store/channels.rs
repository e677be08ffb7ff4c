//! Apps, subscriptions, operator-set corp credentials and app keys as records: the
//! one mapping between the domain types and what every backend stores, with
//! the secrets (push token, EncodingAESKey, AppSecret, webhook secret)
//! sealed with `SECRETS_KEY` like the corps'.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::records::{Record, RecordKind, Records};
use super::{Sealer, StoreError};
use crate::clock::UnixMillis;
use crate::domain::{
    App, AppBody, AppId, AppKey, CorpId, CredentialSet, EndpointUrl, Subscription,
    SubscriptionFilter, WebhookSecret,
};

/// The typed view of `Records`, for every backend.
#[async_trait]
pub trait Channels: Records {
    async fn put_app(&self, app: &App, now: UnixMillis) -> Result<(), StoreError> {
        self.put_record(&app_record(app, self.sealer(), now)).await
    }

    async fn get_app(&self, app_id: &AppId) -> Result<Option<App>, StoreError> {
        let record = self.get_record(RecordKind::App, app_id.as_str()).await?;
        record.map(|r| app_from(&r, self.sealer())).transpose()
    }

    async fn list_apps(&self) -> Result<Vec<App>, StoreError> {
        let records = self.list_records(RecordKind::App, None).await?;
        records.iter().map(|r| app_from(r, self.sealer())).collect()
    }

    async fn delete_app(&self, app_id: &AppId) -> Result<bool, StoreError> {
        self.delete_record(RecordKind::App, app_id.as_str()).await
    }

    async fn put_subscription(&self, s: &Subscription, now: UnixMillis) -> Result<(), StoreError> {
        self.put_record(&subscription_record(s, self.sealer(), now))
            .await
    }

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        let record = self.get_record(RecordKind::Subscription, id).await?;
        record
            .map(|r| subscription_from(&r, self.sealer()))
            .transpose()
    }

    /// Subscriptions, of one source or all, ordered by id (creation order).
    async fn list_subscriptions(
        &self,
        source: Option<&str>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let records = self.list_records(RecordKind::Subscription, source).await?;
        records
            .iter()
            .map(|r| subscription_from(r, self.sealer()))
            .collect()
    }

    async fn delete_subscription(&self, id: &str) -> Result<bool, StoreError> {
        self.delete_record(RecordKind::Subscription, id).await
    }

    /// Add a credential set to a corp (§6.2); `false` when a set with that
    /// token is already there (it is kept as is).
    async fn add_corp_credentials(
        &self,
        corp: &CorpId,
        set: &CredentialSet,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        if self
            .find_corp_credentials(corp, set.token.expose())
            .await?
            .is_some()
        {
            return Ok(false);
        }
        let body = json!({
            "token": self.sealer().seal(set.token.expose()),
            "encodingAESKey": self.sealer().seal(set.key.expose()),
        });
        self.put_record(&Record {
            kind: RecordKind::CorpCredentials,
            id: format!("{}/{}", corp.as_str(), uuid::Uuid::now_v7()),
            source: corp.as_str().to_owned(),
            body: object(body),
            updated_at: now,
        })
        .await?;
        Ok(true)
    }

    /// Remove the operator-added set with this token; `false` if none.
    async fn remove_corp_credentials(
        &self,
        corp: &CorpId,
        token: &str,
    ) -> Result<bool, StoreError> {
        match self.find_corp_credentials(corp, token).await? {
            Some(id) => self.delete_record(RecordKind::CorpCredentials, &id).await,
            None => Ok(false),
        }
    }

    /// The operator-added sets, of one corp or of all.
    async fn operator_credentials(
        &self,
        corp: Option<&CorpId>,
    ) -> Result<Vec<(CorpId, CredentialSet)>, StoreError> {
        let records = self
            .list_records(RecordKind::CorpCredentials, corp.map(CorpId::as_str))
            .await?;
        records
            .iter()
            .map(|r| credentials_from(r, self.sealer()))
            .collect()
    }

    async fn put_app_key(&self, key: &AppKey) -> Result<(), StoreError> {
        self.put_record(&Record {
            kind: RecordKind::AppKey,
            id: key.id.clone(),
            source: key.owner.clone(),
            body: object(json!({
                "hash": key.hash,
                "description": key.description,
                "createdAt": key.created_at,
            })),
            updated_at: key.created_at,
        })
        .await
    }

    /// Keys of one owner (an appId or a provider's scope), or of all,
    /// ordered by id (issue order).
    async fn list_app_keys(&self, owner: Option<&str>) -> Result<Vec<AppKey>, StoreError> {
        let records = self.list_records(RecordKind::AppKey, owner).await?;
        records.iter().map(app_key_from).collect()
    }

    /// Revoke one key of an owner; `false` if it has no such key.
    async fn delete_app_key(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        match self.get_record(RecordKind::AppKey, id).await? {
            Some(record) if record.source == owner => {
                self.delete_record(RecordKind::AppKey, id).await
            }
            _ => Ok(false),
        }
    }

    /// The record id of a corp's operator-added set with this token.
    async fn find_corp_credentials(
        &self,
        corp: &CorpId,
        token: &str,
    ) -> Result<Option<String>, StoreError> {
        let records = self
            .list_records(RecordKind::CorpCredentials, Some(corp.as_str()))
            .await?;
        for record in records {
            let (_, set) = credentials_from(&record, self.sealer())?;
            if set.token.expose() == token {
                return Ok(Some(record.id));
            }
        }
        Ok(None)
    }
}

impl<T: Records + ?Sized> Channels for T {}

pub(super) fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(super) fn corrupt(record: &Record, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "{} {:.64}: {what}",
        record.kind.as_str(),
        record.id
    ))
}

pub(super) fn text<'a>(record: &'a Record, field: &str) -> Option<&'a str> {
    record.body.get(field).and_then(Value::as_str)
}

/// A sealed field, opened; `None` when absent.
pub(super) fn opened(
    record: &Record,
    field: &str,
    sealer: &Sealer,
) -> Result<Option<String>, StoreError> {
    text(record, field).map(|s| sealer.open(s)).transpose()
}

fn app_record(app: &App, sealer: &Sealer, now: UnixMillis) -> Record {
    let mut body = object(json!({
        "kind": app.kind.as_str(),
        "name": app.name,
        "token": sealer.seal(app.token.expose()),
        "requireEncryption": app.require_encryption,
    }));
    if let Some(key) = &app.key {
        body.insert("encodingAESKey".into(), sealer.seal(key.expose()).into());
    }
    if let Some(secret) = &app.app_secret {
        body.insert("appSecret".into(), sealer.seal(secret.expose()).into());
    }
    Record {
        kind: RecordKind::App,
        id: app.app_id.as_str().to_owned(),
        source: app.app_id.as_str().to_owned(),
        body,
        updated_at: now,
    }
}

fn app_from(record: &Record, sealer: &Sealer) -> Result<App, StoreError> {
    let app_id = AppId::parse(&record.id).map_err(|_| corrupt(record, "app id"))?;
    let body = AppBody {
        kind: text(record, "kind").map(str::to_owned),
        token: opened(record, "token", sealer)?,
        encoding_aes_key: opened(record, "encodingAESKey", sealer)?,
        app_secret: opened(record, "appSecret", sealer)?,
        require_encryption: record
            .body
            .get("requireEncryption")
            .and_then(Value::as_bool),
        name: text(record, "name").map(str::to_owned),
    };
    App::parse(app_id, body).map_err(|e| corrupt(record, &e.to_string()))
}

fn subscription_record(s: &Subscription, sealer: &Sealer, now: UnixMillis) -> Record {
    Record {
        kind: RecordKind::Subscription,
        id: s.id.to_string(),
        source: s.source.clone(),
        body: object(json!({
            "endpoint": s.endpoint.as_str(),
            "filter": s.filter,
            "description": s.description,
            "secret": sealer.seal(&s.secret.expose()),
            "createdAt": s.created_at,
        })),
        updated_at: now,
    }
}

fn subscription_from(record: &Record, sealer: &Sealer) -> Result<Subscription, StoreError> {
    let endpoint = text(record, "endpoint")
        .and_then(|e| EndpointUrl::from_stored(e).ok())
        .ok_or_else(|| corrupt(record, "endpoint"))?;
    let filter: SubscriptionFilter = record
        .body
        .get("filter")
        .map(|f| serde_json::from_value(f.clone()))
        .transpose()
        .map_err(|_| corrupt(record, "filter"))?
        .unwrap_or_default();
    let secret = opened(record, "secret", sealer)?
        .and_then(|s| WebhookSecret::parse(&s))
        .ok_or_else(|| corrupt(record, "secret"))?;
    Ok(Subscription {
        id: record.id.clone().into(),
        source: record.source.clone(),
        endpoint,
        filter,
        description: text(record, "description").unwrap_or_default().to_owned(),
        secret,
        created_at: record
            .body
            .get("createdAt")
            .and_then(Value::as_i64)
            .map_or(record.updated_at, UnixMillis::from_millis),
    })
}

fn app_key_from(record: &Record) -> Result<AppKey, StoreError> {
    Ok(AppKey {
        id: record.id.clone(),
        owner: Some(record.source.clone())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| corrupt(record, "owner"))?,
        hash: text(record, "hash")
            .filter(|h| h.len() == 64)
            .ok_or_else(|| corrupt(record, "hash"))?
            .to_owned(),
        description: text(record, "description").unwrap_or_default().to_owned(),
        created_at: record
            .body
            .get("createdAt")
            .and_then(Value::as_i64)
            .map_or(record.updated_at, UnixMillis::from_millis),
    })
}

fn credentials_from(
    record: &Record,
    sealer: &Sealer,
) -> Result<(CorpId, CredentialSet), StoreError> {
    let corp = CorpId::parse(&record.source).map_err(|_| corrupt(record, "corp id"))?;
    let token = opened(record, "token", sealer)?;
    let key = opened(record, "encodingAESKey", sealer)?;
    let set = CredentialSet::parse(token.as_deref(), key.as_deref())
        .map_err(|e| corrupt(record, &e.to_string()))?;
    Ok((corp, set))
}
