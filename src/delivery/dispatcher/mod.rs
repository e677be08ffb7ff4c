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
//!
//! Here: the loops (claim, fresh hand-over) and shutdown. `attempt.rs`: one
//! delivery (lease held and renewed, the kfId's gate, the send);
//! `finish.rs`: outcomes recorded in batches; `handle.rs`: what request
//! handlers hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

mod attempt;
mod exchange;
mod finish;
mod handle;

pub use handle::DispatcherHandle;

use handle::Handed;

use attempt::Held;
use finish::Finished;

use super::gate::KfGate;
use super::routes::RouteCache;
use super::slots::SubscriptionSlots;
use super::{RetryPolicy, Sender};
use crate::clock::{Clock, UnixMillis};
use crate::delivery::DeliveryConfig;
use crate::delivery::WriteHealth;
use crate::directory::Directory;
use crate::domain::DeliveryId;
use crate::metrics::Metrics;
use crate::providers::ProviderService;
use crate::store::{Claim, Delivery, Retention, Store};

const MAX_BATCH: usize = 64;
const MAX_FINISH_BATCH: usize = 512;
const FINISH_GATHER: Duration = Duration::from_millis(20);
const FINISH_QUEUE: usize = 4096;
const FRESH_QUEUE: usize = 4096;
/// How long a partial batch waits for more before the next claim.
const CLAIM_GATHER: Duration = Duration::from_millis(5);
const PURGE_EVERY: Duration = Duration::from_secs(10 * 60);

/// What one `Dispatcher::step` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Deliveries taken (handed over or claimed) and attempted.
    pub taken: usize,
    /// Outcomes recorded.
    pub recorded: usize,
    /// The claim failed (the store did not answer): due deliveries may be
    /// left that this step did not see.
    pub claim_failed: bool,
}

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
    /// Per subscription: concurrent sends, and deliveries held in memory
    /// (the gate bounds each kfId's sends).
    subscription_slots: Arc<SubscriptionSlots>,
    /// Claimed deliveries held (a backlog being worked through): taken
    /// from the queue and not yet finished, waiting for their turn or being
    /// sent; `max_claimed` bounds the memory a slow endpoint can hold.
    taken: Arc<Semaphore>,
    /// Handed-over deliveries held: new events never queue behind a
    /// backlog the claim loop is holding.
    fresh_taken: Arc<Semaphore>,
    /// Per (corp, kfId): turns, the wake-up gap, newest-wins.
    gate: KfGate,
    /// Deliveries taken and not yet recorded, with their leases: renewed
    /// while they wait, so a long wait never lets another claimer send them.
    held: Mutex<HashMap<DeliveryId, Held>>,
    /// Consecutive connection failures per kfId (reset by any answer).
    unreachable: Mutex<HashMap<String, u32>>,
    routes: Arc<RouteCache>,
    /// Subscriptions (and the rest of what operators configured).
    directory: Arc<Directory>,
    /// Exchanges providers' authorization codes (the manager's own target).
    providers: Arc<ProviderService>,
    metrics: Arc<Metrics>,
    fresh: mpsc::Sender<Handed>,
    /// What accepting writes last came to (a full disk).
    health: Arc<WriteHealth>,
    fresh_rx: Mutex<Option<mpsc::Receiver<Handed>>>,
}

impl Dispatcher {
    // Each is a separate, shared service the dispatcher works with.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        sender: Sender,
        config: DeliveryConfig,
        owner: String,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        directory: Arc<Directory>,
        providers: Arc<ProviderService>,
    ) -> Self {
        let (fresh, fresh_rx) = mpsc::channel(FRESH_QUEUE);
        Self {
            fresh,
            fresh_rx: Mutex::new(Some(fresh_rx)),
            store,
            sender,
            policy: RetryPolicy::from(&config),
            global: Arc::new(Semaphore::new(config.max_concurrent)),
            subscription_slots: Arc::new(SubscriptionSlots::new(config.max_per_subscription)),
            taken: Arc::new(Semaphore::new(config.max_claimed.max(1))),
            fresh_taken: Arc::new(Semaphore::new(FRESH_QUEUE)),
            gate: KfGate::new(config.max_per_puppet, config.wakeup_gap),
            held: Mutex::new(HashMap::new()),
            unreachable: Mutex::new(HashMap::new()),
            config,
            owner,
            clock,
            wake: Arc::new(Notify::new()),
            routes: Arc::new(RouteCache::default()),
            directory,
            providers,
            health: Arc::new(WriteHealth::new(metrics.clone())),
            metrics,
        }
    }

    pub fn handle(&self) -> DispatcherHandle {
        DispatcherHandle {
            wake: self.wake.clone(),
            routes: self.routes.clone(),
            fresh: self.fresh.clone(),
            subscriptions: self.subscription_slots.clone(),
            owner: self.owner.clone(),
            lease: self.config.lease(),
            queue: self.store.clone(),
            health: self.health.clone(),
        }
    }

    /// One round by hand, for tests and tools (the dispatcher must not be
    /// running): take what request handlers handed over, claim what is due,
    /// attempt all of it, and record the outcomes in one write.
    pub async fn step(self: &Arc<Self>) -> Step {
        let mut taken: Vec<(Delivery, bool, UnixMillis)> = Vec::new();
        let mut _shares = Vec::new();
        let lease = self.config.lease();
        if let Some(fresh) = self
            .fresh_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            while let Ok(Handed {
                delivery: event,
                share,
            }) = fresh.try_recv()
            {
                _shares.push(share);
                self.note_newest(&event);
                let until = event.received_at.plus(lease);
                taken.push((event, true, until));
            }
        }
        let now = self.clock.now();
        let claimed = self.claim(now, now.plus(lease), MAX_BATCH).await;
        let claim_failed = claimed.is_err();
        for event in claimed.unwrap_or_default() {
            taken.push((event, false, now.plus(lease)));
        }
        let (finished, mut outcomes) = mpsc::channel(taken.len().max(1));
        let count = taken.len();
        futures_util::future::join_all(
            taken
                .into_iter()
                .map(|(event, fresh, until)| self.deliver(event, finished.clone(), fresh, until)),
        )
        .await;
        drop(finished);
        let mut batch = Vec::with_capacity(count);
        while let Ok(outcome) = outcomes.try_recv() {
            batch.push(outcome);
        }
        Step {
            taken: count,
            recorded: self.record(batch).await,
            claim_failed,
        }
    }

    fn note_newest(&self, event: &Delivery) {
        if let (Some(kf), true) = (&event.kf_id, event.coalesce) {
            self.gate.note_newest(&event.corp_id, kf, event.id.as_str());
        }
    }

    /// Give back the claims an earlier run of this instance left (it was
    /// killed), so they go at once rather than when their lease ends. Call
    /// before the first callback is accepted: a callback stored already
    /// claimed by this run must keep its claim, or the claim loop would send
    /// it a second time beside the in-memory hand-over (found by the stress
    /// loop: a duplicate right after a restart).
    pub async fn take_back_claims(&self) {
        match self.store.release_claims(&self.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "took back this instance's interrupted claims"),
            Err(e) => tracing::warn!(error = %e, "could not release earlier claims"),
        }
    }

    /// Run until `shutdown` turns true; then wait (bounded) for in-flight
    /// deliveries to finish.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
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
        let (mut last_purge, mut last_renewal) = (UnixMillis::EPOCH, UnixMillis::EPOCH);
        loop {
            if *shutdown.borrow() {
                break;
            }
            while in_flight.try_join_next().is_some() {}
            self.gate.prune();
            self.subscription_slots.prune();
            let now = self.clock.now();
            if now.since(last_renewal) >= self.config.poll_interval {
                last_renewal = now;
                self.renew_leases(now).await;
            }
            if now.since(last_purge) > PURGE_EVERY {
                last_purge = now;
                self.purge(now).await;
            }
            let batch = self.batch_size();
            let lease_until = now.plus(self.config.lease());
            let claimed = self.claim(now, lease_until, batch).await;
            // A full batch: look again at once. A partial one: more is arriving;
            // gather it for a moment so that each claim takes many events.
            let claimed_count = claimed.as_ref().map_or(0, Vec::len);
            for event in claimed.unwrap_or_default() {
                let Ok(permit) = self.taken.clone().acquire_owned().await else {
                    break;
                };
                let share = event
                    .subscription_id
                    .as_ref()
                    .map(|s| self.subscription_slots.hold_claimed(s));
                let (me, finished) = (self.clone(), finished.clone());
                in_flight.spawn(async move {
                    me.deliver(event, finished, false, lease_until).await;
                    drop((permit, share));
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
        mut fresh: mpsc::Receiver<Handed>,
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
            let Some(Handed {
                delivery: event,
                share,
            }) = event
            else {
                break;
            };
            while in_flight.try_join_next().is_some() {}
            self.note_newest(&event);
            let permit = tokio::select! {
                permit = self.fresh_taken.clone().acquire_owned() => permit,
                _ = shutdown.changed() => continue,
            };
            let Ok(permit) = permit else { break };
            let (me, finished) = (self.clone(), finished.clone());
            in_flight.spawn(async move {
                let lease_until = event.received_at.plus(me.config.lease());
                me.deliver(event, finished, true, lease_until).await;
                drop((permit, share));
            });
        }
        self.finish_in_flight(in_flight).await;
    }

    fn batch_size(&self) -> usize {
        self.taken.available_permits().clamp(1, MAX_BATCH)
    }

    async fn claim(
        &self,
        now: UnixMillis,
        lease_until: UnixMillis,
        batch: usize,
    ) -> Result<Vec<Delivery>, ()> {
        let claim = Claim {
            skip: self.subscription_slots.held_in_full(),
            ..Claim::new(&self.owner, now, lease_until)
        };
        let started = std::time::Instant::now();
        let claimed = self.store.claim_due(&claim, batch).await;
        self.metrics
            .claim_seconds
            .observe(started.elapsed().as_secs_f64());
        claimed.map_err(|e| {
            tracing::warn!(error = %e, "claiming due deliveries failed");
        })
    }

    async fn sleep_for(&self, now: UnixMillis) -> Duration {
        let poll = self.config.poll_interval;
        match self.store.next_due_at().await {
            Ok(Some(due)) if due > now => poll.min(due.since(now)),
            Ok(Some(_)) => Duration::from_millis(20),
            _ => poll,
        }
    }

    async fn purge(&self, now: UnixMillis) {
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
}
