//! What request handlers hold: a way to wake the dispatcher, and a place in
//! its in-memory queue reserved before an accepted callback is written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use crate::clock::UnixMillis;
use crate::delivery::routes::RouteCache;
use crate::delivery::slots::{HeldShare, SubscriptionSlots};
use crate::delivery::WriteHealth;
use crate::domain::{ClaimId, SubscriptionId};
use crate::store::{Delivery, InsertOutcome, Lease, NewEvent, Queue, StoreError};

/// How long an acknowledgement waits for the store: WeChat and WeCom give
/// a push 5 s, so a stalled store is answered 503 (they resend) well within.
pub const ACCEPT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3);

/// What request handlers hold: a way to wake the dispatcher.
#[derive(Clone)]
pub struct DispatcherHandle {
    pub(super) wake: Arc<Notify>,
    pub(super) routes: Arc<RouteCache>,
    pub(super) fresh: mpsc::Sender<Handed>,
    pub(super) subscriptions: Arc<SubscriptionSlots>,
    pub(super) owner: String,
    pub(super) lease: Duration,
    pub(super) queue: Arc<dyn Queue>,
    pub(super) health: Arc<WriteHealth>,
}

/// A delivery handed over in memory, with its subscription's share of
/// memory (held until it is finished).
pub(super) struct Handed {
    pub delivery: Delivery,
    pub share: Option<HeldShare>,
}

/// A place in the in-memory queue, taken before the write: an event stored
/// as claimed by this manager is then sure to reach the dispatcher.
struct FreshSlot {
    permit: mpsc::OwnedPermit<Handed>,
    lease: Lease,
    share: Option<HeldShare>,
}

impl FreshSlot {
    /// The claim to store the event with.
    fn lease(&self) -> Lease {
        self.lease.clone()
    }

    /// Hand the stored delivery over.
    fn deliver(self, delivery: Delivery) {
        self.permit.send(Handed {
            delivery,
            share: self.share,
        });
    }
}

impl DispatcherHandle {
    /// Store an accepted event durably and start its deliveries. Each
    /// routable delivery is stored already claimed by this manager when the
    /// in-memory queue has room (then handed over without a claim round
    /// trip); otherwise unclaimed, for the claim loop. Returns once the
    /// write is durable, or `Unavailable` after `ACCEPT_DEADLINE`: a store
    /// that stalls gets the sender's retry (503) in time, while the write
    /// goes on and, if it lands, hands its deliveries over all the same.
    pub async fn enqueue(&self, event: NewEvent) -> Result<InsertOutcome, StoreError> {
        let me = self.clone();
        let write = tokio::spawn(async move { me.store_and_hand_over(event).await });
        let written = match tokio::time::timeout(ACCEPT_DEADLINE, write).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(failed)) => Err(StoreError::Other(format!("the write stopped: {failed}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "the store did not answer within {} s",
                ACCEPT_DEADLINE.as_secs()
            ))),
        };
        self.health.note(&written);
        written
    }

    /// Whether accepting writes land (for `/readyz`).
    pub fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    async fn store_and_hand_over(&self, mut event: NewEvent) -> Result<InsertOutcome, StoreError> {
        let mut slots: Vec<Option<FreshSlot>> = Vec::with_capacity(event.deliveries.len());
        for delivery in &mut event.deliveries {
            let slot = if delivery.routed() {
                self.reserve(event.received_at, delivery.subscription_id.as_ref())
            } else {
                None
            };
            delivery.lease = slot.as_ref().map(FreshSlot::lease);
            slots.push(slot);
        }
        let outcome = self.queue.insert_event(&event).await?;
        if outcome == InsertOutcome::Stored {
            let mut unclaimed = false;
            for (delivery, slot) in event.into_deliveries().into_iter().zip(slots) {
                match slot {
                    Some(slot) => slot.deliver(delivery),
                    None => {
                        unclaimed |= delivery.kf_id.is_some() || delivery.subscription_id.is_some()
                    }
                }
            }
            if unclaimed {
                self.wake();
            }
        }
        Ok(outcome)
    }

    /// A slot for an event about to be stored, or `None` when the queue is
    /// full, its subscription holds its share of memory already, or the
    /// dispatcher stopped: then store it unclaimed and `wake`.
    fn reserve(&self, now: UnixMillis, subscription: Option<&SubscriptionId>) -> Option<FreshSlot> {
        let share = match subscription {
            Some(id) => Some(self.subscriptions.try_hold(id)?),
            None => None,
        };
        let permit = self.fresh.clone().try_reserve_owned().ok()?;
        Some(FreshSlot {
            share,
            permit,
            lease: Lease {
                owner: self.owner.clone(),
                until: now.plus(self.lease),
                claim_id: ClaimId::generate(),
            },
        })
    }

    /// New work is waiting: claim now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A kfId registered (`online`), deregistered or moved here: stop using
    /// what we knew of it.
    pub fn registration_changed(&self, kf_id: &str, online: bool) {
        self.routes.registration_changed(kf_id, online);
    }
}
