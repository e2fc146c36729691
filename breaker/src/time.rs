//! Wall-clock instants as plain numbers, so the machine never reads a clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch. The machine never reads a clock; callers pass `now`.
///
/// All arithmetic saturates: `u64` nanoseconds reach the year 2554, and a breaker that
/// sees a clamped instant is better than one that panics.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The instant `n` nanoseconds after the Unix epoch.
    pub const fn from_unix_nanos(n: u64) -> Self {
        Self(n)
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn unix_nanos(self) -> u64 {
        self.0
    }

    /// Converts a system time, saturating: a time before the epoch gives 0, one past
    /// the year 2554 gives the largest timestamp.
    pub fn from_system_time(t: SystemTime) -> Self {
        t.duration_since(UNIX_EPOCH)
            .map_or(Self(0), |d| Self(nanos(d)))
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        // Every u64 of nanoseconds fits in a SystemTime on the platforms Rust supports.
        UNIX_EPOCH + Duration::from_nanos(self.0)
    }

    /// `self + d`, clamped to the largest timestamp.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(nanos(d)))
    }

    /// `self - earlier`, or zero when `earlier` is later than `self`.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in whole nanoseconds, clamped to `u64::MAX`.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_system_time() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        let ts = Timestamp::from_system_time(t);
        assert_eq!(ts.unix_nanos(), 1_700_000_000_000_000_123);
        assert_eq!(ts.to_system_time(), t);
    }

    #[test]
    fn pre_epoch_is_zero() {
        let t = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            Timestamp::from_system_time(t),
            Timestamp::from_unix_nanos(0)
        );
    }

    #[test]
    fn far_future_saturates() {
        let t = UNIX_EPOCH + Duration::from_secs(u64::MAX / 1_000_000_000 + 10);
        assert_eq!(Timestamp::from_system_time(t).unix_nanos(), u64::MAX);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_unix_nanos(u64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)).unix_nanos(),
            u64::MAX
        );
        assert_eq!(t.saturating_add(Duration::MAX).unix_nanos(), u64::MAX);
        let a = Timestamp::from_unix_nanos(5);
        let b = Timestamp::from_unix_nanos(8);
        assert_eq!(b.saturating_duration_since(a), Duration::from_nanos(3));
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
    }
}
