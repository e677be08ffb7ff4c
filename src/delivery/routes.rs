//! Where each kfId's events go, kept in memory for a moment so that a burst
//! of deliveries does not read the same registration from the store again
//! and again.
//!
//! Only positive answers (an online puppet) are cached, for a short time, and
//! a registration or deregistration through this manager drops its entry at
//! once. A miss, or an entry that does not fit the event (other corp), always
//! reads the store, so a puppet that registered through another manager is
//! never parked by a stale "offline". Lookups of one kfId that arrive while
//! its read is under way share that read: a burst of wake-ups for a puppet
//! that is away costs one read at a time per kfId, not one per wake-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::domain::{KfId, Puppet};
use crate::store::{Registrations, StoreError};

/// One read of a kfId's registration, shared by the lookups that wait for it.
type Lookup = Arc<OnceCell<Option<Puppet>>>;

const TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct RouteCache {
    online: Mutex<HashMap<String, (Puppet, Instant)>>,
    /// kfIds registered here lately (and not deregistered here since), and when.
    registered: Mutex<HashMap<String, Instant>>,
    /// Reads under way, by kfId.
    reading: Mutex<HashMap<String, Lookup>>,
}

/// How long a registration counts as recent (`registered_lately`).
const RECENT: Duration = Duration::from_secs(10);

impl RouteCache {
    pub fn get(&self, kf_id: &str) -> Option<Puppet> {
        let map = self.online.lock().unwrap_or_else(|p| p.into_inner());
        map.get(kf_id)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(p, _)| p.clone())
    }

    /// Read a kfId's registration from the store, sharing a read of it that
    /// is already under way.
    pub async fn read(
        &self,
        store: &dyn Registrations,
        kf_id: &KfId,
    ) -> Result<Option<Puppet>, StoreError> {
        let lookup = self
            .reading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kf_id.to_string())
            .or_default()
            .clone();
        let read = lookup
            .get_or_try_init(|| store.get_puppet(kf_id))
            .await
            .cloned();
        // The next lookup reads afresh: drop this read once it is done.
        let mut reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
        if reading
            .get(kf_id.as_str())
            .is_some_and(|l| Arc::ptr_eq(l, &lookup))
        {
            reading.remove(kf_id.as_str());
        }
        read
    }

    pub fn put(&self, puppet: &Puppet) {
        let mut map = self.online.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, at)| at.elapsed() < TTL);
        }
        map.insert(
            puppet.registration.kf_id.to_string(),
            (puppet.clone(), Instant::now()),
        );
    }

    pub fn forget(&self, kf_id: &str) {
        let mut map = self.online.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(kf_id);
    }

    /// A registration (`online`), deregistration or move of this kfId went
    /// through here.
    pub fn registration_changed(&self, kf_id: &str, online: bool) {
        self.forget(kf_id);
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        registered.retain(|_, at| at.elapsed() < RECENT);
        if online {
            registered.insert(kf_id.to_owned(), Instant::now());
        } else {
            registered.remove(kf_id);
        }
    }

    /// Whether this kfId registered here within the last 10 s (and has not
    /// deregistered here since).
    pub fn registered_lately(&self, kf_id: &str) -> bool {
        let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        registered
            .get(kf_id)
            .is_some_and(|at| at.elapsed() < RECENT)
    }
}
