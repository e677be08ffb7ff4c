//! `/healthz`: the process answers. `/readyz`: the store answers too.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::AppState;
use crate::metrics::{CommandLabels, StatusLabels};
use crate::store::DeliveryStatus;

#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "The process answers")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, description = "The store answers"), (status = 503, description = "The store is unreachable, or cannot write (a full disk): the body says why")))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => match state.dispatcher.write_health().refusing() {
            None => HttpResponse::Ok().content_type("text/plain").body("ready"),
            Some(why) => HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body(why),
        },
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store unavailable");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body("store unavailable")
        }
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("store did not answer in 2s"),
    }
}

/// Prometheus text. Queue gauges are read from the store at scrape time.
#[utoipa::path(get, path = "/metrics", tag = "health", responses((status = 200, description = "OpenMetrics text")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let now = state.clock.now();
    let stats = tokio::time::timeout(Duration::from_secs(2), state.store.queue_stats()).await;
    let ready = matches!(stats, Ok(Ok(_))) && state.dispatcher.write_health().refusing().is_none();
    state.metrics.store_ready.set(i64::from(ready));
    match stats {
        Ok(Ok(stats)) => {
            for status in [
                DeliveryStatus::Pending,
                DeliveryStatus::Parked,
                DeliveryStatus::Dead,
            ] {
                let labels = StatusLabels {
                    status: status.as_str(),
                };
                let (count, oldest) = stats
                    .iter()
                    .find(|s| s.0 == status)
                    .map_or((0, None), |s| (s.1, s.2));
                state
                    .metrics
                    .queue_depth
                    .get_or_create(&labels)
                    .set(count as i64);
                let age = oldest.map_or(0, |at| now.since(at).as_secs() as i64);
                state
                    .metrics
                    .queue_oldest_age_seconds
                    .get_or_create(&labels)
                    .set(age);
            }
        }
        _ => tracing::warn!("metrics: queue depth unavailable (store did not answer)"),
    }
    match crate::providers::health(state.store.as_ref(), now).await {
        Ok(providers) => {
            for p in providers {
                let labels = crate::metrics::ProviderLabels {
                    kind: p.kind,
                    provider: p.id,
                };
                let age = p.ticket_age_seconds.map_or(-1, |a| a as i64);
                state
                    .metrics
                    .provider_ticket_age_seconds
                    .get_or_create(&labels)
                    .set(age);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: providers' tickets unavailable"),
    }
    for (command, count) in state.store.command_counts() {
        let labels = CommandLabels { command };
        let set = |family: &Family<CommandLabels, Gauge>, n: u64| {
            family.get_or_create(&labels).set(n as i64);
        };
        set(&state.metrics.store_commands, count.commands);
        set(&state.metrics.store_documents_written, count.written);
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.encode())
}
