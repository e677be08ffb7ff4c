//! Clocks a test moves by hand, so that retries and expiry are decided
//! without sleeping.

use std::sync::Arc;
use std::time::Duration;

use wxkf_manager::clock::{Clock, UnixMillis};

/// A clock the test moves by hand.
#[derive(Default)]
pub struct ManualClock(pub std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_millis() as i64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// A manual clock starting at the real time (whole seconds). Not a fixed
/// date: MongoDB's TTL monitor sweeps by the real clock, so documents
/// stamped years in the past would vanish during a test.
pub fn manual_clock() -> Arc<ManualClock> {
    let clock = Arc::new(ManualClock::default());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    clock.advance(Duration::from_secs(now.as_secs()));
    clock
}
