//! Service providers as records (API.md §7): suites and components, the
//! tickets pushed to them and their customers' grants. The one mapping for
//! every backend, with every secret (token, EncodingAESKey, suite secret or
//! AppSecret, ticket, permanent code or refresh token) sealed with
//! `SECRETS_KEY`.
//!
//! A ticket is a record of its own, named by the time WeChat stamped on it
//! (`{scope}/{issued:020}`), so "the newest wins" needs no compare-and-set:
//! pushes that arrive out of order, on any manager, each add their record,
//! and the newest is the last of the scope in id order.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::channels::{corrupt, object, opened, text};
use super::records::{Record, RecordKind, Records};
use super::StoreError;
use crate::clock::UnixMillis;
use crate::domain::{
    AppId, Component, ComponentBody, Grant, GrantStatus, Provider, Secret, Suite, SuiteBody,
    SuiteId,
};

/// How many tickets of a provider are kept (the newest few; older ones go).
const TICKETS_KEPT: usize = 3;

/// The typed view of `Records` for providers, for every backend.
#[async_trait]
pub trait Providers: Records {
    async fn put_suite(&self, suite: &Suite, now: UnixMillis) -> Result<(), StoreError> {
        let sealer = self.sealer();
        self.put_record(&Record {
            kind: RecordKind::Suite,
            id: suite.suite_id.as_str().to_owned(),
            source: suite.suite_id.as_str().to_owned(),
            body: object(json!({
                "providerCorpId": suite.provider_corp_id.as_str(),
                "name": suite.name,
                "token": sealer.seal(suite.token.expose()),
                "encodingAESKey": sealer.seal(suite.key.expose()),
                "suiteSecret": sealer.seal(suite.secret.expose()),
            })),
            updated_at: now,
        })
        .await
    }

    async fn get_suite(&self, id: &SuiteId) -> Result<Option<Suite>, StoreError> {
        let record = self.get_record(RecordKind::Suite, id.as_str()).await?;
        record.map(|r| suite_from(&r, self)).transpose()
    }

    async fn list_suites(&self) -> Result<Vec<Suite>, StoreError> {
        let records = self.list_records(RecordKind::Suite, None).await?;
        records.iter().map(|r| suite_from(r, self)).collect()
    }

    async fn put_component(
        &self,
        component: &Component,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let sealer = self.sealer();
        self.put_record(&Record {
            kind: RecordKind::Component,
            id: component.app_id.as_str().to_owned(),
            source: component.app_id.as_str().to_owned(),
            body: object(json!({
                "name": component.name,
                "token": sealer.seal(component.token.expose()),
                "encodingAESKey": sealer.seal(component.key.expose()),
                "appSecret": sealer.seal(component.secret.expose()),
            })),
            updated_at: now,
        })
        .await
    }

    async fn get_component(&self, id: &AppId) -> Result<Option<Component>, StoreError> {
        let record = self.get_record(RecordKind::Component, id.as_str()).await?;
        record.map(|r| component_from(&r, self)).transpose()
    }

    async fn list_components(&self) -> Result<Vec<Component>, StoreError> {
        let records = self.list_records(RecordKind::Component, None).await?;
        records.iter().map(|r| component_from(r, self)).collect()
    }

    /// Delete a suite or component and its keys; its grants and tickets are
    /// kept (sealed), so that registering it again serves its customers as
    /// before. `false` if there was no such provider.
    async fn delete_provider(&self, provider: &Provider) -> Result<bool, StoreError> {
        let scope = provider.scope();
        for key in self.list_records(RecordKind::AppKey, Some(&scope)).await? {
            self.delete_record(RecordKind::AppKey, &key.id).await?;
        }
        let kind = match provider {
            Provider::Suite(_) => RecordKind::Suite,
            Provider::Component(_) => RecordKind::Component,
        };
        self.delete_record(kind, provider.id()).await
    }

    /// Keep a ticket; older ones beyond the newest few are removed. Whether
    /// it is now the newest.
    async fn keep_ticket(
        &self,
        provider: &Provider,
        ticket: &crate::domain::Ticket,
    ) -> Result<bool, StoreError> {
        let scope = provider.scope();
        self.put_record(&Record {
            kind: RecordKind::Ticket,
            id: ticket_id(&scope, ticket.issued),
            source: scope.clone(),
            body: object(json!({
                "ticket": self.sealer().seal(ticket.value.expose()),
                "issued": ticket.issued,
                "receivedAt": ticket.received_at,
            })),
            updated_at: ticket.received_at,
        })
        .await?;
        let mut kept = self.list_records(RecordKind::Ticket, Some(&scope)).await?;
        let newest = kept.last().map(|r| r.id.clone());
        let surplus = kept.len().saturating_sub(TICKETS_KEPT);
        for old in kept.drain(..surplus) {
            self.delete_record(RecordKind::Ticket, &old.id).await?;
        }
        Ok(newest.as_deref() == Some(ticket_id(&scope, ticket.issued).as_str()))
    }

    /// The newest ticket pushed to a provider.
    async fn ticket(
        &self,
        provider: &Provider,
    ) -> Result<Option<crate::domain::Ticket>, StoreError> {
        let kept = self
            .list_records(RecordKind::Ticket, Some(&provider.scope()))
            .await?;
        let Some(newest) = kept.last() else {
            return Ok(None);
        };
        let value =
            opened(newest, "ticket", self.sealer())?.ok_or_else(|| corrupt(newest, "ticket"))?;
        Ok(Some(crate::domain::Ticket {
            value: Secret::new(value),
            issued: newest
                .body
                .get("issued")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            received_at: millis(newest, "receivedAt"),
        }))
    }

    async fn put_grant(
        &self,
        provider: &Provider,
        grant: &Grant,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut body = object(json!({
            "customer": grant.customer,
            "name": grant.name,
            "status": grant.status.as_str(),
            "authorizedAt": grant.authorized_at,
            "cancelledAt": grant.cancelled_at,
        }));
        if let Some(code) = &grant.code {
            body.insert("code".into(), self.sealer().seal(code.expose()).into());
        }
        let scope = provider.scope();
        self.put_record(&Record {
            kind: RecordKind::Grant,
            id: format!("{scope}/{}", grant.customer),
            source: scope,
            body,
            updated_at: now,
        })
        .await
    }

    async fn get_grant(
        &self,
        provider: &Provider,
        customer: &str,
    ) -> Result<Option<Grant>, StoreError> {
        let id = format!("{}/{customer}", provider.scope());
        let record = self.get_record(RecordKind::Grant, &id).await?;
        record.map(|r| grant_from(&r, self)).transpose()
    }

    /// A provider's grants, ordered by customer.
    async fn list_grants(&self, provider: &Provider) -> Result<Vec<Grant>, StoreError> {
        let records = self
            .list_records(RecordKind::Grant, Some(&provider.scope()))
            .await?;
        records.iter().map(|r| grant_from(r, self)).collect()
    }
}

impl<T: Records + ?Sized> Providers for T {}

/// Zero-padded, so that id order is the order of `issued`.
fn ticket_id(scope: &str, issued: i64) -> String {
    format!("{scope}/{:020}", issued.max(0))
}

fn millis(record: &Record, field: &str) -> UnixMillis {
    record
        .body
        .get(field)
        .and_then(Value::as_i64)
        .map_or(record.updated_at, UnixMillis::from_millis)
}

fn suite_from<S: Records + ?Sized>(record: &Record, store: &S) -> Result<Suite, StoreError> {
    let sealer = store.sealer();
    let suite_id = SuiteId::parse(&record.id).map_err(|_| corrupt(record, "suite id"))?;
    let body = SuiteBody {
        provider_corp_id: text(record, "providerCorpId").map(str::to_owned),
        token: opened(record, "token", sealer)?,
        encoding_aes_key: opened(record, "encodingAESKey", sealer)?,
        suite_secret: opened(record, "suiteSecret", sealer)?,
        name: text(record, "name").map(str::to_owned),
    };
    Suite::parse(suite_id, body).map_err(|e| corrupt(record, &e.to_string()))
}

fn component_from<S: Records + ?Sized>(
    record: &Record,
    store: &S,
) -> Result<Component, StoreError> {
    let sealer = store.sealer();
    let app_id = AppId::parse(&record.id).map_err(|_| corrupt(record, "component appId"))?;
    let body = ComponentBody {
        token: opened(record, "token", sealer)?,
        encoding_aes_key: opened(record, "encodingAESKey", sealer)?,
        app_secret: opened(record, "appSecret", sealer)?,
        name: text(record, "name").map(str::to_owned),
    };
    Component::parse(app_id, body).map_err(|e| corrupt(record, &e.to_string()))
}

fn grant_from<S: Records + ?Sized>(record: &Record, store: &S) -> Result<Grant, StoreError> {
    // Either kind of customer id follows the one id rule.
    let customer = text(record, "customer")
        .and_then(|c| AppId::parse(c).ok())
        .ok_or_else(|| corrupt(record, "customer"))?;
    let status = text(record, "status")
        .and_then(GrantStatus::parse)
        .ok_or_else(|| corrupt(record, "status"))?;
    Ok(Grant {
        customer: customer.as_str().to_owned(),
        name: text(record, "name").unwrap_or_default().to_owned(),
        status,
        code: opened(record, "code", store.sealer())?.map(Secret::new),
        authorized_at: millis(record, "authorizedAt"),
        cancelled_at: record
            .body
            .get("cancelledAt")
            .and_then(Value::as_i64)
            .map(UnixMillis::from_millis),
    })
}
