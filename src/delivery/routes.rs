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
}

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
}
