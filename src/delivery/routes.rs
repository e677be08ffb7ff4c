//! Where each kfId's events go, kept in memory for a moment so that a burst
//! of deliveries does not read the same registration from the store again
//! and again.
//!
//! Only positive answers (an online puppet) are cached, for a short time, and
//! a registration or deregistration through this manager drops its entry at
//! once. A miss, or an entry that does not fit the event (other corp), always
//! reads the store, so a puppet that registered through another manager is
//! never parked by a stale "offline".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::Puppet;

const TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct RouteCache {
    online: Mutex<HashMap<String, (Puppet, Instant)>>,
    /// kfIds registered or deregistered here lately, and when.
    changed: Mutex<HashMap<String, Instant>>,
}

/// How long a registration counts as recent (`changed_within`).
const RECENT: Duration = Duration::from_secs(10);

impl RouteCache {
    pub fn get(&self, kf_id: &str) -> Option<Puppet> {
        let map = self.online.lock().unwrap_or_else(|p| p.into_inner());
        map.get(kf_id)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(p, _)| p.clone())
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

    /// A registration or deregistration of this kfId went through here.
    pub fn registration_changed(&self, kf_id: &str) {
        self.forget(kf_id);
        let mut changed = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        changed.retain(|_, at| at.elapsed() < RECENT);
        changed.insert(kf_id.to_owned(), Instant::now());
    }

    /// Whether this kfId's registration changed here within the last 10 s.
    pub fn changed_lately(&self, kf_id: &str) -> bool {
        let changed = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        changed.get(kf_id).is_some_and(|at| at.elapsed() < RECENT)
    }
}
