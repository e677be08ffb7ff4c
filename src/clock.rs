//! Time, injected where retries and expiry are decided, and the one type
//! every stored instant has.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| UnixMillis::from_millis(d.as_millis() as i64))
            .unwrap_or(UnixMillis::EPOCH)
    }
}

/// An instant as Unix time in whole milliseconds: what both stores keep
/// (an SQLite integer, a MongoDB Int64, so databases written before this
/// type existed read unchanged) and what the API shows as a number.
/// Arithmetic saturates, so a retention of "forever" or a hostile
/// timestamp cannot wrap around.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(i64);

impl UnixMillis {
    pub const EPOCH: Self = Self(0);
    /// Earlier than any instant a store holds.
    pub const MIN: Self = Self(i64::MIN);
    /// Later than any instant a store holds.
    pub const MAX: Self = Self(i64::MAX);

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds, as WeChat's timestamps and signatures count them.
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    pub fn plus(self, by: Duration) -> Self {
        Self(self.0.saturating_add(millis_of(by)))
    }

    pub fn minus(self, by: Duration) -> Self {
        Self(self.0.saturating_sub(millis_of(by)))
    }

    /// How long after `earlier` this is; zero when it is not after it.
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// RFC 3339 / ISO 8601 UTC with milliseconds (`2026-12-01T20:16:59.123Z`):
    /// the date by H. Hinnant's civil-from-days era arithmetic, so no date
    /// crate is needed.
    pub fn iso8601(self) -> String {
        let ms = self.0;
        let secs = ms.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms.rem_euclid(1000)
        )
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iso8601())
    }
}

fn millis_of(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::UnixMillis;

    fn at(ms: i64) -> UnixMillis {
        UnixMillis::from_millis(ms)
    }

    #[test]
    fn iso8601_formats_utc_milliseconds_across_leap_years_and_the_epoch() {
        assert_eq!(at(0).iso8601(), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_700_000_000_123).iso8601(), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(951_782_400_000).iso8601(), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(4_107_542_399_999).iso8601(), "2100-02-28T23:59:59.999Z");
        assert_eq!(at(-1).iso8601(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping_and_never_goes_negative() {
        assert_eq!(
            UnixMillis::MAX.plus(Duration::from_secs(1)),
            UnixMillis::MAX
        );
        assert_eq!(
            UnixMillis::MIN.minus(Duration::from_secs(1)),
            UnixMillis::MIN
        );
        assert_eq!(at(5).plus(Duration::MAX), UnixMillis::MAX);
        assert_eq!(at(1_000).since(at(250)), Duration::from_millis(750));
        assert_eq!(at(250).since(at(1_000)), Duration::ZERO);
        assert_eq!(at(-1).as_secs(), -1);
        assert_eq!(at(1_999).as_secs(), 1);
    }

    #[test]
    fn it_is_a_plain_number_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&at(1_700_000_000_123)).unwrap(),
            "1700000000123"
        );
        let back: UnixMillis = serde_json::from_str("42").unwrap();
        assert_eq!(back, at(42));
    }
}
