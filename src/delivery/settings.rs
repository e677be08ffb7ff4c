//! How accepted events are delivered: the delivery side's settings, read
//! from the environment by `config` and owned here, where they are used.

use std::time::Duration;

/// How accepted events are delivered to puppets.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Per-attempt HTTP timeout.
    pub attempt_timeout: Duration,
    /// First retry delay; doubles each attempt up to `retry_cap`.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// After this long since acceptance a failing event becomes a dead letter.
    pub retry_window: Duration,
    pub max_concurrent: usize,
    pub max_per_puppet: usize,
    /// Concurrent sends to one subscription (every event goes to a
    /// subscriber, so more than to a puppet, whose wake-ups coalesce).
    pub max_per_subscription: usize,
    /// Claimed deliveries held in memory at once (waiting for their turn or
    /// being sent): bounds what a backlog costs; each subscription holds
    /// at most four per sending slot of it.
    pub max_claimed: usize,
    /// Consecutive connection failures after which a puppet is marked
    /// offline and its wake-ups park until it registers (0: never).
    pub offline_after: u32,
    /// Fallback poll interval when no notification arrives.
    pub poll_interval: Duration,
    /// Delivered and superseded events are kept this long (≥ the 24 h dedup window).
    pub retention: Duration,
    pub dead_retention: Duration,
    /// Deliver only the newest of several waiting wake-ups of one kfId.
    pub coalesce: bool,
    /// Least time between two wake-ups sent to one kfId; the ones arriving
    /// meanwhile collapse into the newest (zero: no gap).
    pub wakeup_gap: Duration,
    /// Where deliveries may go (CIDRs and host names); `None`: anywhere.
    pub endpoint_allow: Option<crate::domain::EndpointAllow>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(600),
            retry_window: Duration::from_secs(24 * 3600),
            max_concurrent: 1024,
            max_per_puppet: 8,
            max_per_subscription: 32,
            max_claimed: 8192,
            offline_after: 3,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(3 * 24 * 3600),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
            coalesce: true,
            wakeup_gap: Duration::from_millis(50),
            endpoint_allow: None,
        }
    }
}

impl DeliveryConfig {
    /// A lease outlives an attempt by a safe margin.
    pub fn lease(&self) -> Duration {
        self.attempt_timeout * 2 + Duration::from_secs(5)
    }
}
