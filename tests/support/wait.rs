//! Waiting for what happens in other tasks and processes: poll until a
//! condition holds, and how long deliveries took after their acknowledgement.

use std::ops::AsyncFnMut;
use std::time::{Duration, Instant};

use super::Received;

/// Poll `check` every 50 ms for up to `within`; the last value it returned.
pub async fn eventually<T>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let until = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long after its push was acknowledged each follow reached a
/// subscriber: follower `{prefix}{i}` was acknowledged at `acked_at[i]`.
pub fn since_acknowledged(got: &[Received], acked_at: &[Instant], prefix: &str) -> Vec<Duration> {
    got.iter()
        .map(|r| {
            let user = r.json()["message"]["FromUserName"]
                .as_str()
                .unwrap()
                .to_owned();
            let i: usize = user.trim_start_matches(prefix).parse().unwrap();
            r.at.saturating_duration_since(acked_at[i])
        })
        .collect()
}
