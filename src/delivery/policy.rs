//! The retry schedule: exponential from `base`, capped at `cap`, with ±20 %
//! jitter, until `window` after acceptance; then a dead letter.

use std::time::Duration;

use crate::clock::UnixMillis;
use crate::delivery::DeliveryConfig;
use crate::store::AttemptResult;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub window: Duration,
}

impl From<&DeliveryConfig> for RetryPolicy {
    fn from(c: &DeliveryConfig) -> Self {
        Self {
            base: c.retry_base,
            cap: c.retry_cap,
            window: c.retry_window,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1`, after `attempts` failures,
    /// before jitter.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }

    /// What to do after the `attempts`-th failed attempt of an event accepted
    /// at `received_at`. `jitter` is in [-1, 1]; `retry_after` is the
    /// puppet's own hint (429/503), honoured within the cap.
    pub fn after_failure(
        &self,
        attempts: u32,
        received_at: UnixMillis,
        now: UnixMillis,
        retry_after: Option<Duration>,
        jitter: f64,
        error: String,
    ) -> AttemptResult {
        let base = self.backoff(attempts);
        let jittered = base.mul_f64((1.0 + 0.2 * jitter.clamp(-1.0, 1.0)).max(0.0));
        let delay = retry_after
            .map_or(jittered, |hint| hint.max(jittered))
            .min(self.cap);
        let next = now.plus(delay);
        let deadline = received_at.plus(self.window);
        if next > deadline {
            AttemptResult::Dead { error }
        } else {
            AttemptResult::Retry {
                next_attempt_at: next,
                error,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> UnixMillis {
        UnixMillis::from_millis(ms)
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(600),
            window: Duration::from_secs(24 * 3600),
        }
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let p = policy();
        let secs: Vec<u64> = (1..=12).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let p = policy();
        for (j, expect) in [(-1.0, 3_200), (0.0, 4_000), (1.0, 4_800)] {
            match p.after_failure(3, at(0), at(0), None, j, "e".into()) {
                AttemptResult::Retry {
                    next_attempt_at, ..
                } => assert_eq!(next_attempt_at, at(expect)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let p = policy();
        let r = p.after_failure(
            1,
            at(0),
            at(0),
            Some(Duration::from_secs(30)),
            0.0,
            "e".into(),
        );
        assert_eq!(
            r,
            AttemptResult::Retry {
                next_attempt_at: at(30_000),
                error: "e".into()
            }
        );
        let r = p.after_failure(
            1,
            at(0),
            at(0),
            Some(Duration::from_secs(99_999)),
            0.0,
            "e".into(),
        );
        assert_eq!(
            r,
            AttemptResult::Retry {
                next_attempt_at: at(600_000),
                error: "e".into()
            }
        );
    }

    #[test]
    fn past_the_window_is_a_dead_letter() {
        let p = policy();
        let day = 24 * 3600 * 1000;
        let r = p.after_failure(40, at(0), at(day - 1000), None, 0.0, "HTTP 500".into());
        assert_eq!(
            r,
            AttemptResult::Dead {
                error: "HTTP 500".into()
            }
        );
    }

    #[test]
    fn the_default_schedule_spans_about_a_day() {
        let p = policy();
        let mut now = at(0);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match p.after_failure(attempts, at(0), now, None, 0.0, String::new()) {
                AttemptResult::Retry {
                    next_attempt_at, ..
                } => now = next_attempt_at,
                _ => break,
            }
        }
        // 10 doublings (~17 min) then every 10 minutes until 24 h: ~150 attempts.
        assert!((140..=160).contains(&attempts), "{attempts}");
    }
}
