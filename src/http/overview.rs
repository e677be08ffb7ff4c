//! `GET /admin/api/overview`: what the dashboard shows at a glance, in one
//! answer: health, the last hour's charts, what waits for each target and
//! the subscriptions with their backlog.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::error::PuppetApiError;
use super::AppState;
use crate::history::{sample_backlogs, HourView};
use crate::store::{Backlog, Channels, DeliveryStatus, StoreError, Target};
use crate::views::SubscriptionView;

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Overview {
    health: Health,
    hour: HourView,
    /// Every puppet and subscription with something pending, parked or
    /// dead, the longest waiting first.
    targets: Vec<TargetBacklog>,
    subscriptions: Vec<SubscriptionBacklog>,
    /// Suites: ticket age (an error past its validity), customers, failed exchanges.
    providers: Vec<crate::providers::ProviderHealth>,
}

/// Red where something needs a person.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Health {
    /// The store answers and accepts writes (as `/readyz`).
    store_ready: bool,
    /// Why not, when not.
    store_problem: Option<String>,
    pending: u64,
    parked: u64,
    dead: u64,
    /// How long the oldest pending delivery has waited.
    oldest_pending_seconds: Option<u64>,
    /// Access-token refreshes that got no token since this manager started.
    token_refresh_failures: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TargetBacklog {
    /// `puppet CORP/KFID` or `subscription ID`, as the chart names it.
    label: String,
    /// `puppet` or `subscription`.
    kind: &'static str,
    /// The kfId or the subscription id.
    id: String,
    pending: u64,
    parked: u64,
    dead: u64,
    oldest_waiting_seconds: Option<u64>,
    last_error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct SubscriptionBacklog {
    #[serde(flatten)]
    subscription: SubscriptionView,
    pending: u64,
    dead: u64,
    oldest_waiting_seconds: Option<u64>,
    last_error: Option<String>,
}

#[utoipa::path(get, path = "/admin/api/overview", tag = "admin", responses((status = 200, description = "Health, the last hour by minute (this manager's own; a restart starts empty), what waits per target, subscriptions with their backlog", body = Overview), (status = 401, description = "No bearer token"), (status = 403, description = "Wrong token, or ADMIN_TOKEN not set"), (status = 503, description = "Store unavailable")))]
pub(super) async fn overview(state: web::Data<AppState>) -> Result<HttpResponse, PuppetApiError> {
    let now = state.clock.now();
    let stats = tokio::time::timeout(Duration::from_secs(2), state.store.queue_stats()).await;
    let (stats, store_problem) = match stats {
        Ok(Ok(stats)) => (stats, state.dispatcher.write_health().refusing()),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            let late = StoreError::Unavailable("did not answer in 2 s".into());
            return Err(late.into());
        }
    };
    let of = |status: DeliveryStatus| stats.iter().find(|s| s.0 == status);
    let count = |status| of(status).map_or(0, |s| s.1);
    let age = |since: crate::clock::UnixMillis| now.since(since).as_secs();
    let failures = state.metrics.token_refresh_failures_total();
    let health = Health {
        store_ready: store_problem.is_none(),
        store_problem,
        pending: count(DeliveryStatus::Pending),
        parked: count(DeliveryStatus::Parked),
        dead: count(DeliveryStatus::Dead),
        oldest_pending_seconds: of(DeliveryStatus::Pending).and_then(|s| s.2).map(age),
        token_refresh_failures: failures,
    };
    let backlogs = sample_backlogs(state.store.as_ref(), &state.metrics.history, now).await?;
    let by_subscription: HashMap<String, &Backlog> = backlogs
        .iter()
        .filter_map(|b| match &b.target {
            Target::Subscription(id) => Some((id.to_string(), b)),
            Target::Puppet { .. } => None,
        })
        .collect();
    let subscriptions = state
        .store
        .list_subscriptions(None)
        .await?
        .iter()
        .map(|s| {
            let view = SubscriptionView::from(s);
            let backlog = by_subscription.get(&view.id);
            SubscriptionBacklog {
                pending: backlog.map_or(0, |b| b.pending),
                dead: backlog.map_or(0, |b| b.dead),
                oldest_waiting_seconds: backlog.and_then(|b| b.oldest_waiting).map(age),
                last_error: backlog.and_then(|b| b.last_error.clone()),
                subscription: view,
            }
        })
        .collect();
    let mut providers = crate::providers::health(state.store.as_ref(), now).await?;
    for provider in &mut providers {
        provider.failed_exchanges = by_subscription
            .get(provider.exchanges.as_str())
            .map_or(0, |b| b.dead);
    }
    let targets = backlogs
        .into_iter()
        .map(|b| {
            let label = b.target.label();
            let (kind, id) = match b.target {
                Target::Puppet { kf_id, .. } => ("puppet", kf_id),
                Target::Subscription(id) => ("subscription", id.to_string()),
            };
            TargetBacklog {
                label,
                kind,
                id,
                pending: b.pending,
                parked: b.parked,
                dead: b.dead,
                oldest_waiting_seconds: b.oldest_waiting.map(age),
                last_error: b.last_error,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(Overview {
        health,
        hour: state.metrics.history.hour(now),
        targets,
        subscriptions,
        providers,
    }))
}
