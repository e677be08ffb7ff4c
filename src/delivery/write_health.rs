//! Whether the store refuses writes for lack of space, as accepting a
//! callback last found it. `/readyz` says so (a load balancer stops sending
//! traffic), a metric counts every refused write by reason, and the state
//! clears at the next write that lands or once the data directory has room
//! again, so the manager comes back without a restart even while no traffic
//! reaches it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::metrics::{Metrics, ReasonLabels};
use crate::store::StoreError;

/// Room that must come back, beyond what was free when writes failed, for
/// the disk to count as no longer full.
const ROOM_BACK: u64 = 1 << 20;

pub struct WriteHealth {
    metrics: Arc<Metrics>,
    /// The embedded store's directory, whose free space is watched.
    dir: OnceLock<PathBuf>,
    /// Whether `full` holds a state: the acknowledgement path checks this
    /// without taking the lock.
    is_full: AtomicBool,
    full: Mutex<Option<Full>>,
}

struct Full {
    since: Instant,
    free_then: Option<u64>,
}

impl WriteHealth {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            dir: OnceLock::new(),
            is_full: AtomicBool::new(false),
            full: Mutex::new(None),
        }
    }

    /// Watch this directory's free space while the disk is full.
    pub fn watch_space(&self, dir: PathBuf) {
        let _ = self.dir.set(dir);
    }

    /// Note what an accepting write came to.
    pub fn note<T>(&self, written: &Result<T, StoreError>) {
        let reason = match written {
            Ok(_) => {
                if self.is_full.load(Ordering::Relaxed) && self.clear() {
                    tracing::info!("the store writes again: accepting callbacks");
                }
                return;
            }
            Err(StoreError::DiskFull(_)) => "disk_full",
            Err(StoreError::Unavailable(_)) => "unavailable",
            Err(_) => "other",
        };
        self.metrics
            .store_write_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
        if let Err(e @ StoreError::DiskFull(_)) = written {
            let mut full = self.lock();
            if full.is_none() {
                let free_then = self.free();
                tracing::error!(error = %e, free_bytes = free_then, "the store cannot write: disk full; answering 503 until space returns");
                *full = Some(Full {
                    since: Instant::now(),
                    free_then,
                });
                self.is_full.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Why the store cannot take writes now, if it cannot.
    pub fn refusing(&self) -> Option<String> {
        let mut full = self.lock();
        let since = full.as_ref()?.since;
        let free = self.free();
        let room_back = match (free, full.as_ref().and_then(|f| f.free_then)) {
            (Some(now), Some(then)) => now >= then.saturating_add(ROOM_BACK),
            _ => false,
        };
        if room_back {
            *full = None;
            self.is_full.store(false, Ordering::Relaxed);
            tracing::info!(free_bytes = free, "space returned to the data directory");
            return None;
        }
        let free = free.map_or_else(String::new, |b| format!(", {b} bytes free"));
        Some(format!(
            "disk full for {} s: the store cannot write and callbacks are answered 503{free}",
            since.elapsed().as_secs()
        ))
    }

    /// Leave the full state; true when it was full.
    fn clear(&self) -> bool {
        let mut full = self.lock();
        self.is_full.store(false, Ordering::Relaxed);
        full.take().is_some()
    }

    fn free(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(self.dir.get()?).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Full>> {
        self.full.lock().unwrap_or_else(|p| p.into_inner())
    }
}
