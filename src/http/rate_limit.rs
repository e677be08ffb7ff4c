//! A token bucket per client address for the puppet registration routes.
//!
//! Each address may send `per_minute` requests at once and gets them back at
//! `per_minute` a minute. IPv6 clients are counted per /64 (one host usually
//! holds a whole /64). Behind a reverse proxy every client shares the
//! proxy's bucket, which is why the default is generous. Memory is bounded:
//! a bucket that has refilled is forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::UnixMillis;

/// Addresses tracked before refilled buckets are dropped.
const TRACKED: usize = 10_000;

struct Bucket {
    tokens: f64,
    updated: UnixMillis,
}

pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: UnixMillis) {
        let elapsed = now.since(bucket.updated).as_millis() as f64;
        bucket.tokens = (bucket.tokens + elapsed * self.per_minute / 60_000.0).min(self.per_minute);
        bucket.updated = now;
    }

    /// Take one request from `ip`'s bucket, or say how long until one is back.
    pub fn check(&self, ip: IpAddr, now: UnixMillis) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= TRACKED {
            buckets.retain(|_, b| {
                self.refill(b, now);
                b.tokens < self.per_minute
            });
            if buckets.len() >= TRACKED {
                // Many addresses at once: start over rather than grow.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(client_key(ip)).or_insert(Bucket {
            tokens: self.per_minute,
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let missing_ms = (1.0 - bucket.tokens) * 60_000.0 / self.per_minute;
        Err(Duration::from_millis(missing_ms.ceil() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> UnixMillis {
        UnixMillis::from_millis(ms)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(60);
        for _ in 0..60 {
            assert!(limiter.check(ip("10.0.0.1"), at(0)).is_ok());
        }
        let wait = limiter.check(ip("10.0.0.1"), at(0)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(
            limiter.check(ip("10.0.0.2"), at(0)).is_ok(),
            "others have their own"
        );
        assert!(limiter.check(ip("10.0.0.1"), at(999)).is_err());
        assert!(limiter.check(ip("10.0.0.1"), at(1_000)).is_ok());
        assert!(limiter.check(ip("10.0.0.1"), at(1_000)).is_err());
    }

    #[test]
    fn one_ipv6_host_is_one_client_across_its_slash_64() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.check(ip("2001:db8::1"), at(0)).is_ok());
        assert!(limiter.check(ip("2001:db8::ffff:2"), at(0)).is_ok());
        assert!(limiter.check(ip("2001:db8::3"), at(0)).is_err());
        assert!(limiter.check(ip("2001:db8:0:1::1"), at(0)).is_ok());
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let limiter = RateLimiter::new(5);
        for i in 0..(3 * TRACKED as u32) {
            let _ = limiter.check(IpAddr::V4(i.into()), at(0));
        }
        assert!(limiter.buckets.lock().unwrap().len() <= TRACKED);
    }
}
