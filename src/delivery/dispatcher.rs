//! The delivery loop. Claims due events in batches (leased in the store, so
//! several managers can share one queue), sends each in its own task within
//! a global and a per-puppet concurrency cap, and records the outcome against
//! its claim. Wakes immediately when a callback is accepted or a puppet
//! registers; otherwise polls.
//!
//! The fast path: a callback accepted here is stored already claimed by this
//! manager and handed over in memory (`FreshSlot`), so in normal operation
//! the store sees one insert and one outcome per event and no claim. The
//! slot is reserved before the write; when the in-memory queue is full the
//! event is stored unclaimed and the claim loop takes it. Fresh wake-ups of
//! one kfId coalesce in memory: one still waiting for the puppet's turn when
//! a newer one arrives is recorded as superseded by it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::gate::{KfGate, Passage};
use super::routes::RouteCache;
use super::{RetryPolicy, Sender};
use crate::clock::Clock;
use crate::config::DeliveryConfig;
use crate::domain::{KfId, Puppet};
use crate::metrics::Metrics;
use crate::store::{AttemptResult, Claim, Lease, Retention, Store, StoredEvent};

const MAX_BATCH: usize = 64;
const MAX_FINISH_BATCH: usize = 512;
const FINISH_GATHER: Duration = Duration::from_millis(20);
const FINISH_QUEUE: usize = 4096;
const FRESH_QUEUE: usize = 4096;
/// Events taken from the queues and not yet finished: waiting for their
/// puppet's turn or being sent. Bounds the memory a slow puppet can hold.
const TAKEN_MAX: usize = 8192;
/// How long a partial batch waits for more before the next claim.
const CLAIM_GATHER: Duration = Duration::from_millis(5);
const PURGE_EVERY_MS: i64 = 10 * 60 * 1000;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    sender: Sender,
    policy: RetryPolicy,
    config: DeliveryConfig,
    owner: String,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    /// Concurrent sends, over all puppets.
    global: Arc<Semaphore>,
    taken: Arc<Semaphore>,
    /// Per (corp, kfId): turns, the wake-up gap, newest-wins.
    gate: KfGate,
    /// Deliveries taken and not yet recorded, with their leases: renewed
    /// while they wait, so a long wait never lets another claimer send them.
    held: Mutex<HashMap<String, Held>>,
    routes: Arc<RouteCache>,
    metrics: Arc<Metrics>,
    fresh: mpsc::Sender<StoredEvent>,
    fresh_rx: Mutex<Option<mpsc::Receiver<StoredEvent>>>,
}

/// What request handlers hold: a way to wake the dispatcher.
#[derive(Clone)]
pub struct DispatcherHandle {
    wake: Arc<Notify>,
    routes: Arc<RouteCache>,
    fresh: mpsc::Sender<StoredEvent>,
    owner: String,
    lease_ms: i64,
}

/// A place in the in-memory queue, taken before the write: an event stored
/// as claimed by this manager is then sure to reach the dispatcher.
pub struct FreshSlot {
    permit: mpsc::OwnedPermit<StoredEvent>,
    lease: Lease,
}

impl FreshSlot {
    /// The claim to store the event with.
    pub fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// Hand the stored event over for delivery.
    pub fn deliver(self, event: StoredEvent) {
        self.permit.send(event);
    }
}

impl DispatcherHandle {
    /// A slot for an event about to be stored, or `None` when the queue is
    /// full (or the dispatcher stopped): then store it unclaimed and `wake`.
    pub fn reserve(&self, now: i64) -> Option<FreshSlot> {
        let permit = self.fresh.clone().try_reserve_owned().ok()?;
        Some(FreshSlot {
            permit,
            lease: Lease {
                owner: self.owner.clone(),
                until: now + self.lease_ms,
                claim_id: uuid::Uuid::new_v4().to_string(),
            },
        })
    }

    /// New work is waiting: claim now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A kfId registered or deregistered here: stop using what we knew of it.
    pub fn registration_changed(&self, kf_id: &str) {
        self.routes.forget(kf_id);
    }
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        sender: Sender,
        config: DeliveryConfig,
        owner: String,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (fresh, fresh_rx) = mpsc::channel(FRESH_QUEUE);
        Self {
            fresh,
            fresh_rx: Mutex::new(Some(fresh_rx)),
            store,
            sender,
            policy: RetryPolicy::from(&config),
            global: Arc::new(Semaphore::new(config.max_concurrent)),
            taken: Arc::new(Semaphore::new(TAKEN_MAX)),
            gate: KfGate::new(config.max_per_puppet, config.wakeup_gap),
            held: Mutex::new(HashMap::new()),
            config,
            owner,
            clock,
            wake: Arc::new(Notify::new()),
            routes: Arc::new(RouteCache::default()),
            metrics,
        }
    }

    pub fn handle(&self) -> DispatcherHandle {
        DispatcherHandle {
            wake: self.wake.clone(),
            routes: self.routes.clone(),
            fresh: self.fresh.clone(),
            owner: self.owner.clone(),
            lease_ms: self.config.lease().as_millis() as i64,
        }
    }

    /// Run until `shutdown` turns true; then wait (bounded) for in-flight
    /// deliveries to finish.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        match self.store.release_claims(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "took back this instance's interrupted claims"),
            Err(e) => tracing::warn!(error = %e, "could not release earlier claims"),
        }
        let mut in_flight = JoinSet::new();
        let (finished, finished_rx) = mpsc::channel(FINISH_QUEUE);
        let finisher = tokio::spawn(self.clone().finish_loop(finished_rx));
        let fresh_rx = self
            .fresh_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let fresh = fresh_rx.map(|rx| {
            tokio::spawn(
                self.clone()
                    .fresh_loop(rx, finished.clone(), shutdown.clone()),
            )
        });
        let (mut last_purge, mut last_renewal) = (0i64, 0i64);
        loop {
            if *shutdown.borrow() {
                break;
            }
            while in_flight.try_join_next().is_some() {}
            self.gate.prune();
            let now = self.clock.now_ms();
            if now - last_renewal >= self.config.poll_interval.as_millis() as i64 {
                last_renewal = now;
                self.renew_leases(now).await;
            }
            if now - last_purge > PURGE_EVERY_MS {
                last_purge = now;
                self.purge(now).await;
            }
            let batch = self.batch_size();
            let lease_until = now + self.lease_ms();
            let claimed = self.claim(now, lease_until, batch).await;
            // A full batch: look again at once. A partial one: more is arriving;
            // gather it for a moment so that each claim takes many events.
            let claimed_count = claimed.as_ref().map_or(0, Vec::len);
            for event in claimed.unwrap_or_default() {
                let Ok(permit) = self.taken.clone().acquire_owned().await else {
                    break;
                };
                let (me, finished) = (self.clone(), finished.clone());
                in_flight.spawn(async move {
                    me.deliver(event, finished, false, lease_until).await;
                    drop(permit);
                });
            }
            if claimed_count == batch {
                continue;
            }
            if claimed_count > 0 {
                tokio::time::sleep(CLAIM_GATHER).await;
                continue;
            }
            let sleep = self.sleep_for(now).await;
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.finish_in_flight(in_flight).await;
        if let Some(fresh) = fresh {
            let _ = fresh.await;
        }
        // The last sender goes with the aborted tasks: the finisher records
        // what is queued and stops.
        drop(finished);
        let _ = finisher.await;
    }

    /// At shutdown: let in-flight deliveries finish, within a bound.
    async fn finish_in_flight(&self, mut in_flight: JoinSet<()>) {
        let grace = self.config.attempt_timeout + Duration::from_secs(1);
        if tokio::time::timeout(grace, async {
            while in_flight.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("deliveries still running at shutdown; their leases will expire and they will be retried");
        }
        in_flight.abort_all();
    }

    /// Deliver what request handlers hand over, as it comes. What is still
    /// queued at shutdown stays claimed by this instance in the store: the
    /// next start takes it back (another manager, when its lease expires).
    async fn fresh_loop(
        self: Arc<Self>,
        mut fresh: mpsc::Receiver<StoredEvent>,
        finished: mpsc::Sender<Finished>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut in_flight = JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let event = tokio::select! {
                event = fresh.recv() => event,
                _ = shutdown.changed() => continue,
            };
            let Some(event) = event else { break };
            while in_flight.try_join_next().is_some() {}
            if let (Some(kf), true) = (&event.kf_id, event.coalesce) {
                self.gate.note_newest(&event.corp_id, kf, &event.id);
            }
            let permit = tokio::select! {
                permit = self.taken.clone().acquire_owned() => permit,
                _ = shutdown.changed() => continue,
            };
            let Ok(permit) = permit else { break };
            let (me, finished) = (self.clone(), finished.clone());
            in_flight.spawn(async move {
                let lease_until = event.received_at + me.lease_ms();
                me.deliver(event, finished, true, lease_until).await;
                drop(permit);
            });
        }
        self.finish_in_flight(in_flight).await;
    }

    fn batch_size(&self) -> usize {
        self.taken.available_permits().clamp(1, MAX_BATCH)
    }

    fn lease_ms(&self) -> i64 {
        self.config.lease().as_millis() as i64
    }

    async fn claim(
        &self,
        now: i64,
        lease_until: i64,
        batch: usize,
    ) -> Result<Vec<StoredEvent>, ()> {
        let claim = Claim {
            owner: self.owner.clone(),
            now,
            lease_until,
        };
        self.store.claim_due(&claim, batch).await.map_err(|e| {
            tracing::warn!(error = %e, "claiming due deliveries failed");
        })
    }

    async fn sleep_for(&self, now: i64) -> Duration {
        let poll = self.config.poll_interval;
        match self.store.next_due_at().await {
            Ok(Some(due)) if due > now => poll.min(Duration::from_millis((due - now) as u64)),
            Ok(Some(_)) => Duration::from_millis(20),
            _ => poll,
        }
    }

    async fn purge(&self, now: i64) {
        let retention = Retention {
            finished: self.config.retention,
            dead: self.config.dead_retention,
        };
        match self.store.purge(&retention, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "purged events past retention"),
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
    }

    /// Renew the leases of held deliveries that are past half their lease
    /// (waiting for a busy puppet's turn); those taken over are marked lost.
    async fn renew_leases(&self, now: i64) {
        let half = self.lease_ms() / 2;
        let due: Vec<(String, String)> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, h)| !h.lost && h.until - now < half)
            .map(|(id, h)| (id.clone(), h.claim_id.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        let until = now + self.lease_ms();
        match self.store.renew_leases(&self.owner, &due, until).await {
            Ok(renewed) => {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                for (id, _) in &due {
                    if let Some(h) = held.get_mut(id) {
                        if renewed.contains(id) {
                            h.until = until;
                        } else {
                            h.lost = true;
                            tracing::warn!(delivery_id = %id, "lease taken over while waiting; not sending it");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, held = due.len(), "could not renew delivery leases")
            }
        }
    }

    fn lease_lost(&self, id: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|h| h.lost)
    }

    /// One attempt; the outcome goes to the finisher, which records
    /// outcomes in batches.
    async fn deliver(
        &self,
        event: StoredEvent,
        finished: mpsc::Sender<Finished>,
        fresh: bool,
        lease_until: i64,
    ) {
        if let Some(claim_id) = &event.claim_id {
            self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
                event.id.clone(),
                Held {
                    claim_id: claim_id.clone(),
                    until: lease_until,
                    lost: false,
                },
            );
        }
        let result = self.attempt(&event, fresh).await;
        if let Some(kf) = &event.kf_id {
            self.gate.done(&event.corp_id, kf, &event.id);
        }
        let _ = finished.send((event, result)).await;
    }

    /// Record outcomes as they come, many per store write.
    async fn finish_loop(self: Arc<Self>, mut finished: mpsc::Receiver<Finished>) {
        while let Some(first) = finished.recv().await {
            // Outcomes are not urgent (a lease lasts far longer): gather them
            // for a moment, so that each write records many.
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + FINISH_GATHER;
            while batch.len() < MAX_FINISH_BATCH {
                match tokio::time::timeout_at(until, finished.recv()).await {
                    Ok(Some(item)) => batch.push(item),
                    Ok(None) | Err(_) => break,
                }
            }
            let now = self.clock.now_ms();
            let items: Vec<(String, String, AttemptResult)> = batch
                .iter()
                .filter_map(|(e, r)| Some((e.id.clone(), e.claim_id.clone()?, r.clone())))
                .collect();
            let outcome = self.store.finish_attempts(&items, now).await;
            {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                for (event, _) in &batch {
                    held.remove(&event.id);
                }
            }
            match outcome {
                Ok(recorded) => {
                    for ((event, result), recorded) in batch.iter().zip(recorded) {
                        self.record_metrics(event, result, now);
                        log_outcome(event, result, recorded, now);
                    }
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    outcomes = batch.len(),
                    "could not record delivery outcomes; their leases will expire and they will be retried"
                ),
            }
        }
    }

    fn record_metrics(&self, event: &StoredEvent, result: &AttemptResult, now: i64) {
        self.metrics.delivery(match result {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Retry { .. } => "failed",
            AttemptResult::Dead { .. } => "dead",
            AttemptResult::Parked => "parked",
            AttemptResult::Superseded { .. } => "superseded",
            AttemptResult::Released => "released",
        });
        if *result == AttemptResult::Delivered {
            let latency = (now - event.received_at).max(0) as f64 / 1000.0;
            self.metrics.delivery_latency_seconds.observe(latency);
        }
    }

    async fn attempt(&self, event: &StoredEvent, fresh: bool) -> AttemptResult {
        let Some(kf) = event.kf_id.as_deref().and_then(|k| KfId::parse(k).ok()) else {
            return AttemptResult::Parked;
        };
        let routable = |p: &Puppet| p.online && p.registration.corp_id.as_str() == event.corp_id;
        let cached = self.routes.get(kf.as_str()).filter(|p| routable(p));
        let puppet = match cached {
            Some(p) => Ok(Some(p)),
            None => self.store.get_puppet(&kf).await,
        };
        let puppet = match puppet {
            Ok(Some(p)) if routable(&p) => {
                self.routes.put(&p);
                p
            }
            Ok(_) => return AttemptResult::Parked,
            Err(e) => {
                let now = self.clock.now_ms();
                return AttemptResult::Retry {
                    next_attempt_at: now + self.config.poll_interval.as_millis() as i64,
                    error: format!("store: {e}"),
                };
            }
        };
        // The kfId's turn (and for a wake-up, its gap); a fresh wake-up
        // steps aside as soon as a newer one of its kfId arrives.
        let _turn = match self
            .gate
            .pass(
                &event.corp_id,
                kf.as_str(),
                &event.id,
                event.coalesce,
                fresh && event.coalesce,
            )
            .await
        {
            Passage::Go(turn) => turn,
            Passage::SteppedAside { by } => return AttemptResult::Superseded { by },
            Passage::Closed => return AttemptResult::Released,
        };
        // Then for a sending slot: a slow puppet holds only its own turns.
        let Ok(_sending) = self.global.acquire().await else {
            return AttemptResult::Released;
        };
        if self.lease_lost(&event.id) {
            // Another claimer holds it now and sends it; recording fails too.
            return AttemptResult::Released;
        }
        match self
            .sender
            .send(event, &puppet.registration.endpoint, event.attempts + 1)
            .await
        {
            Ok(()) => AttemptResult::Delivered,
            Err(failure) => self.policy.after_failure(
                event.attempts + 1,
                event.window_start,
                self.clock.now_ms(),
                failure.retry_after,
                rand::random::<f64>() * 2.0 - 1.0,
                failure.error,
            ),
        }
    }
}

type Finished = (StoredEvent, AttemptResult);

/// A delivery this manager holds, and until when its lease runs.
struct Held {
    claim_id: String,
    until: i64,
    lost: bool,
}

fn log_outcome(event: &StoredEvent, result: &AttemptResult, recorded: bool, now: i64) {
    let (id, corp, kf) = (
        &event.id,
        &event.corp_id,
        event.kf_id.as_deref().unwrap_or(""),
    );
    let attempt = event.attempts + 1;
    if !recorded {
        tracing::warn!(delivery_id = %id, corp_id = %corp, kf_id = kf, "lease was taken over before the attempt finished; outcome not recorded");
        return;
    }
    match result {
        AttemptResult::Delivered => {
            tracing::debug!(delivery_id = %id, corp_id = %corp, kf_id = kf, attempt, latency_ms = now - event.received_at, "delivered")
        }
        AttemptResult::Retry {
            error,
            next_attempt_at,
        } => tracing::warn!(
            delivery_id = %id, corp_id = %corp, kf_id = kf, attempt, error = %error,
            retry_in_ms = next_attempt_at - now, "delivery failed; will retry"
        ),
        AttemptResult::Dead { error } => tracing::error!(
            delivery_id = %id, corp_id = %corp, kf_id = kf, attempt, error = %error,
            "retry window exhausted: dead letter"
        ),
        AttemptResult::Parked => {
            tracing::info!(delivery_id = %id, corp_id = %corp, kf_id = kf, "no online puppet; parked until it registers")
        }
        AttemptResult::Superseded { by } => {
            tracing::debug!(delivery_id = %id, corp_id = %corp, kf_id = kf, superseded_by = %by, "a newer wake-up of this kfId stands for this one")
        }
        AttemptResult::Released => {
            tracing::debug!(delivery_id = %id, corp_id = %corp, kf_id = kf, "not attempted; claim given back")
        }
    }
}
