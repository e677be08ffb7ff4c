//! The last hour, one minute at a time, kept in memory by each manager for
//! the dashboard's charts: pushes accepted by kind, deliveries by outcome,
//! delivery latency (acceptance to 2xx) and the oldest waiting delivery of
//! each target. Bounded: sixty minutes, a fixed set of latency buckets and
//! at most `TARGETS_PER_MINUTE` targets a minute. A restart starts an empty
//! hour, and each manager of a cluster shows its own share; `/metrics`
//! (and Prometheus) is where history survives both.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::clock::UnixMillis;
use crate::store::{Backlog, Store, StoreError};

/// How many minutes are kept.
pub const MINUTES: usize = 60;
/// Targets charted per minute: the ones that waited longest.
pub const TARGETS_PER_MINUTE: usize = 8;

/// Latency buckets grow by a fifth from 1 ms: 90 of them reach about
/// 3.7 hours, and a quantile read from them is within 10 % of the truth.
const LATENCY_BUCKETS: usize = 90;
const LATENCY_GROWTH: f64 = 1.2;

#[derive(Default)]
pub struct History {
    minutes: Mutex<Vec<Minute>>,
}

#[derive(Clone)]
struct Minute {
    /// Unix minute (seconds / 60).
    index: i64,
    accepted: BTreeMap<&'static str, u64>,
    deliveries: BTreeMap<&'static str, u64>,
    latency: [u32; LATENCY_BUCKETS],
    /// Target label to how long its oldest waiting delivery had waited
    /// when last sampled this minute.
    oldest_waiting: BTreeMap<String, Duration>,
}

impl Minute {
    fn new(index: i64) -> Self {
        Self {
            index,
            accepted: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            latency: [0; LATENCY_BUCKETS],
            oldest_waiting: BTreeMap::new(),
        }
    }

    fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, &n) in self.latency.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(bucket_middle_ms(bucket));
            }
        }
        None
    }
}

fn bucket_of(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    ((ms.ln() / LATENCY_GROWTH.ln()) as usize + 1).min(LATENCY_BUCKETS - 1)
}

/// The geometric middle of a bucket, in milliseconds.
fn bucket_middle_ms(bucket: usize) -> f64 {
    if bucket == 0 {
        return 1.0;
    }
    LATENCY_GROWTH.powf(bucket as f64 - 0.5)
}

fn minute_of(at: UnixMillis) -> i64 {
    at.as_secs().div_euclid(60)
}

impl History {
    /// The slot of `at`'s minute, started if new; minutes older than the
    /// hour are dropped. A clock that went back lands in the newest slot.
    fn with_minute(&self, at: UnixMillis, change: impl FnOnce(&mut Minute)) {
        let index = minute_of(at);
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if minutes.last().is_none_or(|m| m.index < index) {
            minutes.push(Minute::new(index));
            let keep_from = index - MINUTES as i64 + 1;
            minutes.retain(|m| m.index >= keep_from);
        }
        if let Some(minute) = minutes.last_mut() {
            change(minute);
        }
    }

    pub fn accepted(&self, at: UnixMillis, kind: &'static str) {
        self.with_minute(at, |m| *m.accepted.entry(kind).or_default() += 1);
    }

    pub fn delivery(&self, at: UnixMillis, outcome: &'static str) {
        self.with_minute(at, |m| *m.deliveries.entry(outcome).or_default() += 1);
    }

    pub fn delivered_after(&self, at: UnixMillis, latency: Duration) {
        self.with_minute(at, |m| {
            let bucket = &mut m.latency[bucket_of(latency)];
            *bucket = bucket.saturating_add(1);
        });
    }

    /// How long each target's oldest waiting delivery has waited, sampled
    /// at `at`: the minute keeps the longest `TARGETS_PER_MINUTE`.
    pub fn waiting(&self, at: UnixMillis, targets: impl IntoIterator<Item = (String, Duration)>) {
        let mut longest: Vec<(String, Duration)> = targets.into_iter().collect();
        longest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        longest.truncate(TARGETS_PER_MINUTE);
        self.with_minute(at, |m| m.oldest_waiting = longest.into_iter().collect());
    }

    /// The hour up to `now`, a value per minute (oldest first); a minute
    /// with nothing recorded is zero for counts and absent (`null`) for
    /// latencies and waits.
    pub fn hour(&self, now: UnixMillis) -> HourView {
        let last = minute_of(now);
        let first = last - MINUTES as i64 + 1;
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        let at = |index: i64| minutes.iter().find(|m| m.index == index);
        let range = || first..=last;
        let series = |names: Vec<&'static str>,
                      pick: &dyn Fn(&Minute) -> &BTreeMap<&'static str, u64>| {
            names
                .into_iter()
                .map(|name| {
                    let values = range()
                        .map(|i| at(i).and_then(|m| pick(m).get(name)).copied().unwrap_or(0))
                        .collect();
                    (name, values)
                })
                .collect::<BTreeMap<_, Vec<u64>>>()
        };
        let names_in = |pick: &dyn Fn(&Minute) -> Vec<&'static str>| {
            let mut all: Vec<&'static str> = minutes.iter().flat_map(pick).collect();
            all.sort_unstable();
            all.dedup();
            all
        };
        let kinds = names_in(&|m| m.accepted.keys().copied().collect());
        let outcomes = names_in(&|m| m.deliveries.keys().copied().collect());
        let mut targets: Vec<&String> = minutes
            .iter()
            .filter(|m| m.index >= first)
            .flat_map(|m| m.oldest_waiting.keys())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        HourView {
            minutes: range().map(|i| i * 60).collect(),
            accepted: series(kinds, &|m| &m.accepted),
            deliveries: series(outcomes, &|m| &m.deliveries),
            latency_p50_ms: range()
                .map(|i| at(i).and_then(|m| m.latency_quantile(0.5)))
                .collect(),
            latency_p99_ms: range()
                .map(|i| at(i).and_then(|m| m.latency_quantile(0.99)))
                .collect(),
            oldest_waiting_seconds: targets
                .into_iter()
                .map(|target| {
                    let values = range()
                        .map(|i| {
                            at(i)
                                .and_then(|m| m.oldest_waiting.get(target))
                                .map(Duration::as_secs)
                        })
                        .collect();
                    (target.clone(), values)
                })
                .collect(),
        }
    }
}

/// Read what waits for each target and note, for this minute, how long
/// the longest waiting have waited (the dashboard's chart of it).
pub async fn sample_backlogs(
    store: &dyn Store,
    history: &History,
    now: UnixMillis,
) -> Result<Vec<Backlog>, StoreError> {
    let backlogs = store.backlogs().await?;
    history.waiting(
        now,
        backlogs.iter().filter_map(|b| {
            b.oldest_waiting
                .map(|since| (b.target.label(), now.since(since)))
        }),
    );
    Ok(backlogs)
}

/// The charts' data: `minutes` are the Unix seconds each value starts at.
#[derive(Serialize, Debug, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HourView {
    pub minutes: Vec<i64>,
    /// Pushes accepted (stored, not repeated) per minute, by kind
    /// (`encrypted`, `decrypted`, `wechat`).
    pub accepted: BTreeMap<&'static str, Vec<u64>>,
    /// Delivery attempts per minute, by outcome.
    pub deliveries: BTreeMap<&'static str, Vec<u64>>,
    /// Acceptance to 2xx, of the deliveries that succeeded that minute.
    pub latency_p50_ms: Vec<Option<f64>>,
    pub latency_p99_ms: Vec<Option<f64>>,
    /// Per target (`puppet CORP/KFID`, `subscription ID`): how long its
    /// oldest waiting delivery had waited, in seconds.
    pub oldest_waiting_seconds: BTreeMap<String, Vec<Option<u64>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_minute(minute: i64, second: i64) -> UnixMillis {
        UnixMillis::from_millis((minute * 60 + second) * 1000)
    }

    #[test]
    fn counts_land_in_their_minute_and_the_hour_has_sixty_points() {
        let history = History::default();
        let start = 29_000_000;
        history.accepted(at_minute(start, 1), "encrypted");
        history.accepted(at_minute(start, 59), "encrypted");
        history.accepted(at_minute(start + 2, 0), "wechat");
        history.delivery(at_minute(start + 2, 5), "delivered");
        let hour = history.hour(at_minute(start + 2, 30));
        assert_eq!(hour.minutes.len(), MINUTES);
        assert_eq!(*hour.minutes.last().unwrap(), (start + 2) * 60);
        let encrypted = &hour.accepted["encrypted"];
        assert_eq!(encrypted.len(), MINUTES);
        assert_eq!(&encrypted[MINUTES - 3..], [2, 0, 0]);
        assert_eq!(&hour.accepted["wechat"][MINUTES - 3..], [0, 0, 1]);
        assert_eq!(&hour.deliveries["delivered"][MINUTES - 1..], [1]);
    }

    #[test]
    fn only_the_last_hour_is_kept() {
        let history = History::default();
        for minute in 0..200 {
            history.accepted(at_minute(minute, 0), "decrypted");
        }
        assert!(history.minutes.lock().unwrap().len() <= MINUTES);
        let hour = history.hour(at_minute(199, 0));
        assert!(hour.accepted["decrypted"].iter().all(|&n| n == 1));
        // An hour later nothing of it is shown.
        let later = history.hour(at_minute(199 + MINUTES as i64, 0));
        assert!(later.accepted["decrypted"].iter().all(|&n| n == 0));
    }

    #[test]
    fn latency_quantiles_are_within_ten_percent() {
        let history = History::default();
        let now = at_minute(1_000, 0);
        for ms in 1..=1000u64 {
            history.delivered_after(now, Duration::from_millis(ms));
        }
        let hour = history.hour(now);
        let p50 = hour.latency_p50_ms[MINUTES - 1].unwrap();
        let p99 = hour.latency_p99_ms[MINUTES - 1].unwrap();
        assert!((450.0..=550.0).contains(&p50), "p50 {p50}");
        assert!((890.0..=1090.0).contains(&p99), "p99 {p99}");
        assert_eq!(
            hour.latency_p50_ms[MINUTES - 2],
            None,
            "no deliveries: no point"
        );
    }

    #[test]
    fn the_longest_waiting_targets_of_a_minute_are_kept() {
        let history = History::default();
        let now = at_minute(5_000, 0);
        let targets = (0..20).map(|i| (format!("subscription s{i:02}"), Duration::from_secs(i)));
        history.waiting(now, targets);
        let hour = history.hour(now);
        assert_eq!(hour.oldest_waiting_seconds.len(), TARGETS_PER_MINUTE);
        assert_eq!(
            hour.oldest_waiting_seconds["subscription s19"][MINUTES - 1],
            Some(19)
        );
        assert!(!hour.oldest_waiting_seconds.contains_key("subscription s00"));
    }
}
