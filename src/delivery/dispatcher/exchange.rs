//! The manager's own delivery target: a provider's authorization push is
//! "delivered" by exchanging its code (`ProviderService::exchange`). Once
//! the exchange has ended, the push goes to the provider's subscriptions
//! with `authorization` added (API.md §7.1, §7.2), as an event of its own whose
//! body keeps the push's id.

use std::time::Duration;

use serde_json::{Map, Value};

use super::Dispatcher;
use crate::domain::{CorpId, EventId, Provider};
use crate::providers::{Exchanged, CODE_VALIDITY};
use crate::store::{AttemptResult, Delivery, NewDelivery, NewEvent, PayloadKind};

/// Between tries while the code is valid: doubling from 1 s, at most a minute.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(Duration::from_secs(60))
}

impl Dispatcher {
    pub(super) async fn attempt_exchange(
        &self,
        event: &Delivery,
        provider: &Provider,
    ) -> AttemptResult {
        let registered = match self.providers.registered(provider).await {
            Ok(Some(registered)) => registered,
            Ok(None) => {
                return AttemptResult::Dead {
                    error: format!("the {} was deleted", provider.kind()),
                }
            }
            Err(e) => return self.store_retry(&e),
        };
        let sealed: Value = serde_json::from_slice(&event.body).unwrap_or_default();
        let code = match sealed["authCode"]
            .as_str()
            .map(|c| self.store.sealer().open(c))
        {
            Some(Ok(code)) => code,
            _ => {
                return AttemptResult::Dead {
                    error: "the push holds no authorization code".into(),
                }
            }
        };
        let Some(_sending) = self.sending_slot(&event.id).await else {
            return AttemptResult::Released;
        };
        let outcome = self.providers.exchange(&registered, &code).await;
        let now = self.clock.now();
        match outcome {
            Exchanged::Granted { customer, name } => {
                let mut granted = Map::new();
                match provider {
                    Provider::Suite(_) => {
                        granted.insert("corpId".into(), customer.into());
                        granted.insert("corpName".into(), name.into());
                    }
                    Provider::Component(_) => {
                        granted.insert("appId".into(), customer.into());
                    }
                }
                self.announce(event, provider, granted).await;
                AttemptResult::Delivered
            }
            Exchanged::Refused { error } => self.exchange_failed(event, provider, error).await,
            Exchanged::Retry { error } if now.since(event.received_at) >= CODE_VALIDITY => {
                let error = format!(
                    "the authorization code expired before it could be exchanged ({error})"
                );
                self.exchange_failed(event, provider, error).await
            }
            Exchanged::Retry { error } => AttemptResult::Retry {
                next_attempt_at: now.plus(backoff(event.attempts)),
                error,
            },
        }
    }

    async fn exchange_failed(
        &self,
        event: &Delivery,
        provider: &Provider,
        error: String,
    ) -> AttemptResult {
        tracing::warn!(provider = %provider.scope(), event_id = %event.event_id, error = %error, "an authorization code could not be exchanged");
        let mut failed = Map::new();
        failed.insert("error".into(), error.clone().into());
        self.announce(event, provider, failed).await;
        AttemptResult::Dead { error }
    }

    /// The push, with how its exchange ended, to the provider's subscriptions.
    async fn announce(
        &self,
        event: &Delivery,
        provider: &Provider,
        authorization: Map<String, Value>,
    ) {
        let Some(Ok(Value::Object(mut body))) = event
            .message
            .as_deref()
            .map(serde_json::from_slice::<Value>)
        else {
            return;
        };
        let Ok(source) = CorpId::parse(provider.id()) else {
            return;
        };
        let fields = match body.get("message") {
            Some(Value::Object(fields)) => fields.clone(),
            _ => Map::new(),
        };
        body.insert("authorization".into(), Value::Object(authorization));
        let deliveries: Vec<NewDelivery> = self
            .directory
            .get()
            .matching(provider.id(), &fields)
            .map(|s| NewDelivery::to_subscription(source.clone(), &s.id))
            .collect();
        if deliveries.is_empty() {
            return;
        }
        let announced = NewEvent {
            id: EventId::generate(),
            source: provider.id().to_owned(),
            // Once per push, whoever ends its exchange.
            dedup_key: format!("exchanged/{}", event.event_id.as_str()),
            kind: PayloadKind::Json,
            body: Vec::new(),
            query: String::new(),
            received_at: self.clock.now(),
            message: Some(Value::Object(body).to_string().into_bytes()),
            deliveries,
        };
        for attempt in 0..5u32 {
            match self.store.insert_event(&announced).await {
                Ok(_) => {
                    self.wake.notify_one();
                    return;
                }
                Err(e) => {
                    tracing::warn!(event_id = %event.event_id, attempt, error = %e, "could not store an exchange's outcome for subscribers; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
                }
            }
        }
        tracing::error!(event_id = %event.event_id, "an exchange's outcome was not stored: subscribers will not receive it");
    }
}
