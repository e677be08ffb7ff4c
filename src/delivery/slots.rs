//! A subscription's share: a subscriber that hangs, trickles or drains a
//! long backlog holds at most `per` of the global sending slots and
//! `per * HELD_PER_SLOT` deliveries in memory (handed over or claimed), so
//! every other endpoint's deliveries keep going at their own pace and a
//! subscriber that cannot keep up costs memory for its share only; the
//! rest waits in the store. (Puppets get the same bound on sending from
//! their kfId's gate.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::SubscriptionId;

/// Deliveries a subscription may hold in memory per sending slot: enough
/// to keep its slots busy between claims, not enough to fill the claims.
const HELD_PER_SLOT: usize = 4;

pub struct SubscriptionSlots {
    per: usize,
    slots: Mutex<HashMap<SubscriptionId, Arc<Semaphore>>>,
    /// Deliveries held per subscription (handed over or claimed, not yet
    /// finished).
    held: Arc<Mutex<HashMap<SubscriptionId, usize>>>,
}

/// One delivery of a subscription held in memory, counted until dropped.
pub struct HeldShare {
    subscription: SubscriptionId,
    held: Arc<Mutex<HashMap<SubscriptionId, usize>>>,
}

impl Drop for HeldShare {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.subscription) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.subscription);
            }
        }
    }
}

impl SubscriptionSlots {
    pub fn new(per: usize) -> Self {
        Self {
            per: per.max(1),
            slots: Mutex::new(HashMap::new()),
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Count a claimed delivery of `subscription` until the share is
    /// dropped (claims skip a subscription holding its share, so a claim
    /// adds at most one batch beyond it).
    pub fn hold_claimed(&self, subscription: &SubscriptionId) -> HeldShare {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        self.count(&mut held, subscription)
    }

    /// Count a delivery about to be handed over, unless `subscription`
    /// holds its whole share already (then it waits in the store).
    pub fn try_hold(&self, subscription: &SubscriptionId) -> Option<HeldShare> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held
            .get(subscription)
            .is_some_and(|n| *n >= self.per * HELD_PER_SLOT)
        {
            return None;
        }
        Some(self.count(&mut held, subscription))
    }

    fn count(
        &self,
        held: &mut HashMap<SubscriptionId, usize>,
        subscription: &SubscriptionId,
    ) -> HeldShare {
        *held.entry(subscription.clone()).or_insert(0) += 1;
        HeldShare {
            subscription: subscription.clone(),
            held: self.held.clone(),
        }
    }

    /// Subscriptions holding their whole share: the next claim takes none
    /// of theirs.
    pub fn held_in_full(&self) -> Vec<SubscriptionId> {
        let share = self.per * HELD_PER_SLOT;
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, n)| **n >= share)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Wait for one of this subscription's slots.
    pub async fn acquire(&self, subscription: &SubscriptionId) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut all = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            all.entry(subscription.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per)))
                .clone()
        };
        slots.acquire_owned().await.ok()
    }

    /// Forget subscriptions nobody is sending to or waiting for.
    pub fn prune(&self) {
        let per = self.per;
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < per);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscription_holds_at_most_its_share_and_others_are_not_held_up() {
        let slots = SubscriptionSlots::new(2);
        let (a, b) = (SubscriptionId::from("a"), SubscriptionId::from("b"));
        let a1 = slots.acquire(&a).await.unwrap();
        let _a2 = slots.acquire(&a).await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire(&a));
        assert!(third.await.is_err(), "a third send to `a` waits");
        let b = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire(&b));
        assert!(b.await.is_ok(), "`b` does not wait for `a`");
        drop(a1);
        assert!(slots.acquire(&a).await.is_some());
        slots.prune();
        assert_eq!(
            slots.slots.lock().unwrap().len(),
            1,
            "only `a` is still held"
        );
    }

    #[test]
    fn a_subscription_holding_its_share_is_skipped_and_handed_no_more_until_one_finishes() {
        let slots = SubscriptionSlots::new(2);
        let mut held: Vec<HeldShare> = (0..2 * HELD_PER_SLOT - 1)
            .map(|_| slots.hold_claimed(&"a".into()))
            .collect();
        let _b = slots.hold_claimed(&"b".into());
        assert!(slots.held_in_full().is_empty(), "one short of the share");
        held.push(slots.hold_claimed(&"a".into()));
        assert_eq!(slots.held_in_full(), [SubscriptionId::from("a")]);
        assert!(
            slots.try_hold(&"a".into()).is_none(),
            "no hand-over beyond the share"
        );
        held.extend(slots.try_hold(&"b".into()));
        held.pop();
        held.pop();
        assert!(slots.held_in_full().is_empty(), "one finished: room again");
        held.extend(slots.try_hold(&"a".into()));
        held.clear();
        assert_eq!(slots.held.lock().unwrap().len(), 1, "only `b` counted");
    }
}
