//! Prometheus metrics (OpenMetrics text at `/metrics`). Labels are fixed,
//! small sets (outcomes, statuses, WeCom errcodes): never an id or a secret.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::clock::{Clock, SystemClock};
use crate::history::History;
use crate::store::{Timed, Timings};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrcodeLabels {
    pub errcode: i64,
}

/// What a delivery attempt came to, as `wxkf_deliveries_total` labels it.
pub const DELIVERY_OUTCOMES: [&str; 6] = [
    "delivered",
    "failed",
    "dead",
    "parked",
    "superseded",
    "released",
];

/// Why a token refresh got no token, as `wxkf_token_refresh_failures_total`
/// labels it: WeChat or WeCom answered an errcode, or could not be reached.
pub const TOKEN_FAILURE_REASONS: [&str; 2] = ["refused", "unreachable"];

/// How one try at exchanging a provider's authorization code ended, as
/// `wxkf_provider_exchanges_total` labels it.
pub const EXCHANGE_OUTCOMES: [&str; 3] = ["granted", "refused", "retry"];

pub struct Metrics {
    registry: Registry,
    /// The last hour by minute, for the dashboard (not exported).
    pub history: History,
    pub callbacks: Family<CallbackLabels, Counter>,
    pub decrypt_seconds: Histogram,
    pub ack_seconds: Histogram,
    pub deliveries: Family<OutcomeLabels, Counter>,
    pub delivery_latency_seconds: Histogram,
    pub queue_depth: Family<StatusLabels, Gauge>,
    pub queue_oldest_age_seconds: Family<StatusLabels, Gauge>,
    pub token_hits: Counter,
    pub token_misses: Counter,
    pub token_upstream: Family<ErrcodeLabels, Counter>,
    /// Refreshes that got no token: `refused` (an errcode) or `unreachable`.
    pub token_refresh_failures: Family<ReasonLabels, Counter>,
    pub puppets_unreachable: Counter,
    /// 1 while the store answers and accepts writes (as `/readyz`), set at
    /// each scrape.
    pub store_ready: Gauge,
    pub claim_seconds: Histogram,
    /// The embedded store's own work (`store::Timed`): where a slow answer
    /// came from.
    pub wal_sync_seconds: Histogram,
    pub checkpoint_seconds: Histogram,
    pub batch_commit_seconds: Histogram,
    pub store_write_failures: Family<ReasonLabels, Counter>,
    /// MongoDB commands sent since start, by command name, and the
    /// documents they wrote (`MONGO_COMMAND_COUNTS`), set at each scrape.
    pub store_commands: Family<CommandLabels, Gauge>,
    pub store_documents_written: Family<CommandLabels, Gauge>,
    /// Tries at exchanging a provider's authorization code, by outcome.
    pub provider_exchanges: Family<OutcomeLabels, Counter>,
    /// Age of the newest ticket of each provider, set at each scrape.
    pub provider_ticket_age_seconds: Family<ProviderLabels, Gauge>,
}

/// A provider, as its metric names it: its kind and its id. Provider ids are
/// few (one per suite an operator registered), unlike callers' ids.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub kind: &'static str,
    pub provider: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wxkf");
        let m = Self {
            callbacks: Family::default(),
            // 10 µs .. ~5 s
            decrypt_seconds: Histogram::new(exponential_buckets(0.000_01, 2.5, 15)),
            ack_seconds: Histogram::new(exponential_buckets(0.000_05, 2.5, 15)),
            deliveries: Family::default(),
            delivery_latency_seconds: Histogram::new(exponential_buckets(0.001, 3.0, 14)),
            queue_depth: Family::default(),
            queue_oldest_age_seconds: Family::default(),
            token_hits: Counter::default(),
            token_misses: Counter::default(),
            token_upstream: Family::default(),
            token_refresh_failures: Family::default(),
            puppets_unreachable: Counter::default(),
            store_ready: Gauge::default(),
            // 50 µs .. ~3 s
            claim_seconds: Histogram::new(exponential_buckets(0.000_05, 2.5, 13)),
            wal_sync_seconds: Histogram::new(exponential_buckets(0.000_05, 2.5, 13)),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.000_05, 2.5, 13)),
            batch_commit_seconds: Histogram::new(exponential_buckets(0.000_05, 2.5, 13)),
            store_write_failures: Family::default(),
            store_commands: Family::default(),
            store_documents_written: Family::default(),
            provider_exchanges: Family::default(),
            provider_ticket_age_seconds: Family::default(),
            registry: Registry::default(),
            history: History::default(),
        };
        registry.register(
            "store_wal_sync_seconds",
            "One fdatasync of the embedded store's WAL (making a group of commits durable)",
            m.wal_sync_seconds.clone(),
        );
        registry.register(
            "store_checkpoint_seconds",
            "One passive checkpoint of the embedded store (WAL pages into the database file)",
            m.checkpoint_seconds.clone(),
        );
        registry.register(
            "store_batch_commit_seconds",
            "One group transaction of the embedded store (inserts and outcomes, up to its commit)",
            m.batch_commit_seconds.clone(),
        );
        registry.register(
            "store_ready",
            "1 while the store answers and accepts writes (as /readyz), 0 otherwise",
            m.store_ready.clone(),
        );
        registry.register(
            "token_refresh_failures",
            "Access-token refreshes that got no token, by reason (refused, unreachable)",
            m.token_refresh_failures.clone(),
        );
        registry.register(
            "callbacks",
            "Callbacks received, by kind and outcome",
            m.callbacks.clone(),
        );
        registry.register(
            "callback_verify_decrypt_seconds",
            "Signature check, decryption and parse of one callback",
            m.decrypt_seconds.clone(),
        );
        registry.register(
            "callback_ack_seconds",
            "Time to acknowledge a callback (stored)",
            m.ack_seconds.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts, by outcome",
            m.deliveries.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "From acceptance to successful delivery",
            m.delivery_latency_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Events waiting, by status",
            m.queue_depth.clone(),
        );
        registry.register(
            "queue_oldest_age_seconds",
            "Age of the oldest event, by status",
            m.queue_oldest_age_seconds.clone(),
        );
        registry.register(
            "token_cache_hits",
            "getToken answered from the cache",
            m.token_hits.clone(),
        );
        registry.register(
            "token_cache_misses",
            "getToken that needed a refresh",
            m.token_misses.clone(),
        );
        registry.register(
            "token_upstream_calls",
            "gettoken calls to WeCom, by errcode",
            m.token_upstream.clone(),
        );
        registry.register(
            "puppets_marked_offline",
            "Puppets marked offline after repeated connection failures",
            m.puppets_unreachable.clone(),
        );
        registry.register(
            "claim_seconds",
            "One claim of due deliveries from the store",
            m.claim_seconds.clone(),
        );
        registry.register(
            "store_write_failures",
            "Writes the store refused, by reason (disk_full, unavailable, other)",
            m.store_write_failures.clone(),
        );
        registry.register(
            "mongo_commands",
            "MongoDB commands sent since start, by command (MONGO_COMMAND_COUNTS)",
            m.store_commands.clone(),
        );
        registry.register(
            "mongo_documents_written",
            "Documents MongoDB commands wrote since start, by command (MONGO_COMMAND_COUNTS)",
            m.store_documents_written.clone(),
        );
        registry.register(
            "provider_exchanges",
            "Tries at exchanging a provider's authorization code, by outcome (granted, refused, retry)",
            m.provider_exchanges.clone(),
        );
        registry.register(
            "provider_ticket_age_seconds",
            "Age of each suite's or component's newest ticket (-1: none yet), set at each scrape",
            m.provider_ticket_age_seconds.clone(),
        );
        // Series an alert takes `increase()` of exist from the start, at 0:
        // a counter first seen at 1 would never count as an increase.
        for outcome in DELIVERY_OUTCOMES {
            drop(m.deliveries.get_or_create(&OutcomeLabels { outcome }));
        }
        for reason in ["disk_full", "unavailable", "other"] {
            drop(
                m.store_write_failures
                    .get_or_create(&ReasonLabels { reason }),
            );
        }
        for reason in TOKEN_FAILURE_REASONS {
            drop(
                m.token_refresh_failures
                    .get_or_create(&ReasonLabels { reason }),
            );
        }
        for kind in ["encrypted", "decrypted", "wechat"] {
            drop(m.callbacks.get_or_create(&CallbackLabels {
                kind,
                outcome: "accepted",
            }));
        }
        drop(
            m.token_upstream
                .get_or_create(&ErrcodeLabels { errcode: 0 }),
        );
        for outcome in EXCHANGE_OUTCOMES {
            drop(
                m.provider_exchanges
                    .get_or_create(&OutcomeLabels { outcome }),
            );
        }
        Self { registry, ..m }
    }
}

impl Metrics {
    pub fn callback(&self, kind: &'static str, outcome: &'static str) {
        self.callbacks
            .get_or_create(&CallbackLabels { kind, outcome })
            .inc();
        if outcome == "accepted" {
            self.history.accepted(SystemClock.now(), kind);
        }
    }

    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.history.delivery(SystemClock.now(), outcome);
    }

    /// A delivery succeeded `latency` after its event was accepted.
    pub fn delivered_after(&self, latency: Duration) {
        self.delivery_latency_seconds.observe(latency.as_secs_f64());
        self.history.delivered_after(SystemClock.now(), latency);
    }

    pub fn provider_exchange(&self, outcome: &'static str) {
        self.provider_exchanges
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Token refreshes that got no token since start, whatever the reason.
    pub fn token_refresh_failures_total(&self) -> u64 {
        TOKEN_FAILURE_REASONS
            .into_iter()
            .map(|reason| {
                self.token_refresh_failures
                    .get_or_create(&ReasonLabels { reason })
                    .get()
            })
            .sum()
    }

    /// The latency of the store's own work goes to its histogram.
    fn store_timing(&self, what: Timed) -> &Histogram {
        match what {
            Timed::WalSync => &self.wal_sync_seconds,
            Timed::Checkpoint => &self.checkpoint_seconds,
            Timed::BatchCommit => &self.batch_commit_seconds,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Timings for Metrics {
    fn observe(&self, what: Timed, took: Duration) {
        self.store_timing(what).observe(took.as_secs_f64());
    }
}
