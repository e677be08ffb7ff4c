//! Sending slots per subscription: a subscriber that hangs, trickles or
//! drains a long backlog holds at most `per` of the global slots, so every
//! other endpoint's deliveries keep going at their own pace. (Puppets get the
//! same bound from their kfId's gate.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct SubscriptionSlots {
    per: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl SubscriptionSlots {
    pub fn new(per: usize) -> Self {
        Self {
            per: per.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Wait for one of this subscription's slots.
    pub async fn acquire(&self, subscription: &str) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut all = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            all.entry(subscription.to_owned())
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
        let a1 = slots.acquire("a").await.unwrap();
        let _a2 = slots.acquire("a").await.unwrap();
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire("a"));
        assert!(third.await.is_err(), "a third send to `a` waits");
        let b = tokio::time::timeout(std::time::Duration::from_millis(50), slots.acquire("b"));
        assert!(b.await.is_ok(), "`b` does not wait for `a`");
        drop(a1);
        assert!(slots.acquire("a").await.is_some());
        slots.prune();
        assert_eq!(
            slots.slots.lock().unwrap().len(),
            1,
            "only `a` is still held"
        );
    }
}
