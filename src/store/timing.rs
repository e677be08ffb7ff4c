//! How long the embedded store's own work takes (WAL syncs, checkpoints,
//! batch commits), so that a slow answer in production is attributed from
//! `/metrics`. The store measures; whoever set a `Timings` (the server, to
//! its metrics) is told; the store knows nothing of metrics.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// What was timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timed {
    /// One `fdatasync` of the WAL (it makes a group of commits durable).
    WalSync,
    /// One passive checkpoint (WAL pages copied into the database file).
    Checkpoint,
    /// One group transaction: inserts and outcomes, up to its commit.
    BatchCommit,
}

pub trait Timings: Send + Sync + 'static {
    fn observe(&self, what: Timed, took: Duration);
}

/// Shared by the store's threads; told once where to report.
#[derive(Clone, Default)]
pub struct TimingHook(Arc<OnceLock<Arc<dyn Timings>>>);

impl TimingHook {
    /// Report from now on (the first call wins).
    pub fn report_to(&self, timings: Arc<dyn Timings>) {
        let _ = self.0.set(timings);
    }

    /// Run `work`, and report how long it took.
    pub fn time<T>(&self, what: Timed, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let done = work();
        if let Some(timings) = self.0.get() {
            timings.observe(what, started.elapsed());
        }
        done
    }
}
