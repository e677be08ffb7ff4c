//! One delivery: hold its lease (renewed while it waits), pass its kfId's
//! gate, take a sending slot, send, and hand the outcome to the finisher.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::finish::Finished;
use super::Dispatcher;
use crate::clock::UnixMillis;
use crate::delivery::gate::Passage;
use crate::delivery::sender::SendFailure;
use crate::domain::{ClaimId, DeliveryId, KfId, Puppet, SubscriptionId};
use crate::store::{AttemptResult, Channels, Delivery};

/// A delivery this manager holds, and until when its lease runs.
pub(super) struct Held {
    claim_id: ClaimId,
    until: UnixMillis,
    lost: bool,
}

impl Dispatcher {
    /// Renew the leases of held deliveries that are past half their lease
    /// (waiting for a busy puppet's turn); those taken over are marked lost.
    pub(super) async fn renew_leases(&self, now: UnixMillis) {
        let half = self.config.lease() / 2;
        let due: Vec<(DeliveryId, ClaimId)> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, h)| !h.lost && h.until.since(now) < half)
            .map(|(id, h)| (id.clone(), h.claim_id.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        let until = now.plus(self.config.lease());
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

    fn lease_lost(&self, id: &DeliveryId) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .is_some_and(|h| h.lost)
    }

    /// One attempt; the outcome goes to the finisher, which records
    /// outcomes in batches.
    pub(super) async fn deliver(
        &self,
        event: Delivery,
        finished: mpsc::Sender<Finished>,
        fresh: bool,
        lease_until: UnixMillis,
    ) {
        // Only a claimed delivery is sent: its outcome is recorded against the claim.
        let Some(claim_id) = event.claim_id.clone() else {
            tracing::error!(delivery_id = %event.id, "a delivery without a claim was not sent");
            return;
        };
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
            event.id.clone(),
            Held {
                claim_id: claim_id.clone(),
                until: lease_until,
                lost: false,
            },
        );
        let result = self.attempt(&event, fresh).await;
        let _ = finished
            .send(Finished {
                event,
                claim_id,
                result,
            })
            .await;
    }

    async fn attempt(&self, event: &Delivery, fresh: bool) -> AttemptResult {
        if let Some(subscription) = &event.subscription_id {
            if let Some(provider) = crate::providers::exchange_of(subscription) {
                return self.attempt_exchange(event, &provider).await;
            }
            return self.attempt_subscription(event, subscription).await;
        }
        let Some(kf) = event.kf_id.as_deref().and_then(|k| KfId::parse(k).ok()) else {
            return AttemptResult::Parked;
        };
        let routable = |p: &Puppet| p.online && p.registration.corp_id.as_str() == event.corp_id;
        let cached = self.routes.get(kf.as_str()).filter(|p| routable(p));
        let puppet = match cached {
            Some(p) => Ok(Some(p)),
            None => self.routes.read(self.store.as_ref(), &kf).await,
        };
        let puppet = match puppet {
            Ok(Some(p)) if routable(&p) => {
                self.routes.put(&p);
                p
            }
            Ok(_) => return AttemptResult::Parked,
            Err(e) => return self.store_retry(&e),
        };
        // The kfId's turn (and for a wake-up, its gap); a fresh wake-up
        // steps aside as soon as a newer one of its kfId arrives.
        let _turn = match self
            .gate
            .pass(
                &event.corp_id,
                kf.as_str(),
                event.id.as_str(),
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
        let Some(_sending) = self.sending_slot(&event.id).await else {
            return AttemptResult::Released;
        };
        let sent = self
            .sender
            .send(event, &puppet.registration.endpoint, event.attempts + 1)
            .await;
        if self.gone_offline(&kf, &puppet, &sent).await {
            return AttemptResult::Parked;
        }
        self.outcome(event, sent)
    }

    /// Count a puppet's consecutive connection failures; at `offline_after`
    /// it is marked offline (a container stopped without deregistering), so
    /// that its wake-ups park and coalesce until it registers again rather
    /// than retrying one by one. True when this delivery should park.
    async fn gone_offline(
        &self,
        kf: &KfId,
        puppet: &Puppet,
        sent: &Result<(), SendFailure>,
    ) -> bool {
        let failures = {
            let mut counts = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
            match sent {
                Err(failure) if failure.unreachable => {
                    let count = counts.entry(kf.as_str().to_owned()).or_insert(0);
                    *count += 1;
                    *count
                }
                _ => {
                    counts.remove(kf.as_str());
                    return false;
                }
            }
        };
        let limit = self.config.offline_after;
        if limit == 0 || failures < limit {
            return false;
        }
        let marked = self
            .store
            .set_unreachable(
                kf,
                &puppet.registration.corp_id,
                puppet.last_online_at,
                self.clock.now(),
            )
            .await;
        self.routes.forget(kf.as_str());
        match marked {
            Ok(true) => {
                self.unreachable
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(kf.as_str());
                self.metrics.puppets_unreachable.inc();
                tracing::warn!(
                    kf_id = %kf, corp_id = %puppet.registration.corp_id, failures,
                    "puppet unreachable: marked offline; its wake-ups wait parked until it registers"
                );
                true
            }
            // Offline already (another delivery or manager marked it): park
            // too. Registered again meanwhile: retry, the next attempt reads it.
            Ok(false) => matches!(
                self.store.get_puppet(kf).await,
                Ok(Some(p)) if !p.online
            ),
            Err(e) => {
                tracing::warn!(kf_id = %kf, error = %e, "could not mark an unreachable puppet offline");
                false
            }
        }
    }

    /// A subscription's delivery: no gate (a subscriber takes what comes),
    /// a sending slot, the signed JSON.
    async fn attempt_subscription(&self, event: &Delivery, id: &SubscriptionId) -> AttemptResult {
        let cached = self.directory.get().subscription(id).cloned();
        let subscription = match cached {
            Some(s) => s,
            // Created through another manager a moment ago, or deleted.
            None => match self.store.get_subscription(id.as_str()).await {
                Ok(Some(s)) => Arc::new(s),
                Ok(None) => {
                    return AttemptResult::Dead {
                        error: "the subscription was deleted".into(),
                    }
                }
                Err(e) => return self.store_retry(&e),
            },
        };
        let Some(body) = &event.message else {
            return AttemptResult::Dead {
                error: "the event holds no message for subscribers".into(),
            };
        };
        // This subscriber's share first, then a global slot.
        let Some(_share) = self.subscription_slots.acquire(id).await else {
            return AttemptResult::Released;
        };
        let Some(_sending) = self.sending_slot(&event.id).await else {
            return AttemptResult::Released;
        };
        let sent = self
            .sender
            .send_webhook(
                event,
                body,
                &subscription,
                event.attempts + 1,
                self.clock.now().as_secs(),
            )
            .await;
        self.outcome(event, sent)
    }

    /// A sending slot, unless the lease was lost meanwhile (another claimer
    /// holds the delivery now and sends it; recording would fail too).
    pub(super) async fn sending_slot(
        &self,
        id: &DeliveryId,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let slot = self.global.acquire().await.ok()?;
        (!self.lease_lost(id)).then_some(slot)
    }

    /// The store did not answer: try again at the next poll.
    pub(super) fn store_retry(&self, e: &crate::store::StoreError) -> AttemptResult {
        AttemptResult::Retry {
            next_attempt_at: self.clock.now().plus(self.config.poll_interval),
            error: format!("store: {e}"),
        }
    }

    /// Delivered, or what the retry policy makes of a failure.
    fn outcome(&self, event: &Delivery, sent: Result<(), SendFailure>) -> AttemptResult {
        match sent {
            Ok(()) => AttemptResult::Delivered,
            Err(failure) => self.policy.after_failure(
                event.attempts + 1,
                event.window_start,
                self.clock.now(),
                failure.retry_after,
                rand::random::<f64>() * 2.0 - 1.0,
                failure.error,
            ),
        }
    }
}
