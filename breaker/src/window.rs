//! The sliding windows that rate conditions are computed over. Both are allocated
//! once, when built, and record in O(1) without allocating.

use crate::spec::{MAX_WINDOW_BUCKETS, MAX_WINDOW_CALLS};
use crate::time::nanos;
use crate::{Timestamp, WindowSpec};

/// What a window holds. `u64` so that a long time window at a high rate cannot
/// overflow; callers saturate to `u32` where the API wants one.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    fn sub(&mut self, other: Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }

    fn one(failure: bool, slow: bool) -> Self {
        Self {
            calls: 1,
            failures: u64::from(failure),
            slow: u64::from(slow),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Sizes are clamped to the spec limits, so an unvalidated spec cannot make it
    /// allocate gigabytes.
    pub fn new(spec: WindowSpec) -> Self {
        match spec {
            WindowSpec::Count { calls } => {
                Self::Count(CountWindow::new(calls.clamp(1, MAX_WINDOW_CALLS)))
            }
            WindowSpec::Time { duration, buckets } => {
                let buckets = buckets.clamp(1, MAX_WINDOW_BUCKETS);
                Self::Time(TimeWindow::new(
                    nanos(duration) / u64::from(buckets),
                    buckets,
                ))
            }
        }
    }

    /// Adds one counted outcome at `now`.
    pub fn record(&mut self, now: Timestamp, failure: bool, slow: bool) {
        match self {
            Self::Count(w) => w.record(failure, slow),
            Self::Time(w) => w.record(now, failure, slow),
        }
    }

    /// Adds a sequence of counted outcomes at `now`: `successes` fast successes, then
    /// `slow` slow successes, then `failures` failures (docs/DESIGN.md §10). A count
    /// window keeps the last N of that sequence; O(min(total, N)).
    pub fn record_many(&mut self, now: Timestamp, successes: u64, slow: u64, failures: u64) {
        match self {
            Self::Count(w) => {
                let keep = w.ring.len() as u64;
                let failures_kept = failures.min(keep);
                let slow_kept = slow.min(keep - failures_kept);
                let successes_kept = successes.min(keep - failures_kept - slow_kept);
                for (n, failure, is_slow) in [
                    (successes_kept, false, false),
                    (slow_kept, false, true),
                    (failures_kept, true, false),
                ] {
                    for _ in 0..n {
                        w.record(failure, is_slow);
                    }
                }
            }
            Self::Time(w) => {
                w.advance(now);
                let many = Counts {
                    calls: successes + slow + failures,
                    failures,
                    slow,
                };
                let n = w.buckets.len() as u64;
                w.buckets[(w.head % n) as usize].add(many);
                w.counts.add(many);
            }
        }
    }

    /// Drops what has fallen out of a time window by `now`.
    pub fn advance(&mut self, now: Timestamp) {
        if let Self::Time(w) = self {
            w.advance(now);
        }
    }

    /// The totals as of the last `record` or `advance`.
    pub fn counts(&self) -> Counts {
        match self {
            Self::Count(w) => w.counts,
            Self::Time(w) => w.counts,
        }
    }

    pub fn clear(&mut self) {
        match self {
            Self::Count(w) => w.clear(),
            Self::Time(w) => w.clear(),
        }
    }
}

const FAILURE: u8 = 1;
const SLOW: u8 = 2;

/// The last N outcomes, one byte each, in a ring with running totals.
#[derive(Debug)]
pub(crate) struct CountWindow {
    ring: Box<[u8]>,
    /// Where the next outcome goes; once full, the oldest outcome is there.
    next: usize,
    len: usize,
    counts: Counts,
}

impl CountWindow {
    fn new(calls: u32) -> Self {
        Self {
            ring: vec![0; calls as usize].into_boxed_slice(),
            next: 0,
            len: 0,
            counts: Counts::default(),
        }
    }

    fn record(&mut self, failure: bool, slow: bool) {
        let full = self.len == self.ring.len();
        let slot = &mut self.ring[self.next];
        if full {
            self.counts
                .sub(Counts::one(*slot & FAILURE != 0, *slot & SLOW != 0));
        } else {
            self.len += 1;
        }
        *slot = if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 };
        self.counts.add(Counts::one(failure, slow));
        self.next += 1;
        if self.next == self.ring.len() {
            self.next = 0;
        }
    }

    fn clear(&mut self) {
        self.next = 0;
        self.len = 0;
        self.counts = Counts::default();
    }
}

/// The last `buckets * bucket_nanos` of outcomes. Bucket `i` holds the outcomes of
/// the bucket-length period number `p` (`p = now / bucket_nanos`) with
/// `p % buckets == i`; the window is the newest period seen and the `buckets - 1`
/// before it.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: Box<[Counts]>,
    /// The newest period seen. An earlier `now` (a clock stepped back) is counted in
    /// it rather than resurrecting a bucket already reused.
    head: u64,
    counts: Counts,
}

impl TimeWindow {
    fn new(bucket_nanos: u64, buckets: u32) -> Self {
        Self {
            bucket_nanos: bucket_nanos.max(1),
            buckets: vec![Counts::default(); buckets as usize].into_boxed_slice(),
            head: 0,
            counts: Counts::default(),
        }
    }

    fn record(&mut self, now: Timestamp, failure: bool, slow: bool) {
        self.advance(now);
        let one = Counts::one(failure, slow);
        let n = self.buckets.len() as u64;
        self.buckets[(self.head % n) as usize].add(one);
        self.counts.add(one);
    }

    fn advance(&mut self, now: Timestamp) {
        let period = now.unix_nanos() / self.bucket_nanos;
        if period <= self.head {
            return;
        }
        let n = self.buckets.len() as u64;
        if period - self.head >= n {
            self.buckets.fill(Counts::default());
            self.counts = Counts::default();
        } else {
            for p in self.head + 1..=period {
                let bucket = &mut self.buckets[(p % n) as usize];
                self.counts.sub(*bucket);
                *bucket = Counts::default();
            }
        }
        self.head = period;
    }

    fn clear(&mut self) {
        self.buckets.fill(Counts::default());
        self.counts = Counts::default();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at_ms(ms: u64) -> Timestamp {
        Timestamp::from_unix_nanos(ms * 1_000_000)
    }

    fn counts(calls: u64, failures: u64, slow: u64) -> Counts {
        Counts {
            calls,
            failures,
            slow,
        }
    }

    #[test]
    fn record_many_is_recording_each_in_order() {
        let specs = [
            WindowSpec::Count { calls: 4 },
            WindowSpec::Time {
                duration: Duration::from_secs(1),
                buckets: 2,
            },
        ];
        for spec in specs {
            for (ok, slow, failed) in [(0, 0, 0), (1, 2, 3), (5, 0, 1), (0, 7, 0), (2, 1, 9)] {
                let (mut one, mut many) = (Window::new(spec), Window::new(spec));
                one.record(at_ms(0), true, false);
                many.record(at_ms(0), true, false);
                for (n, failure, is_slow) in [
                    (ok, false, false),
                    (slow, false, true),
                    (failed, true, false),
                ] {
                    for _ in 0..n {
                        one.record(at_ms(10), failure, is_slow);
                    }
                }
                many.record_many(at_ms(10), ok, slow, failed);
                assert_eq!(one.counts(), many.counts(), "{spec:?} {ok} {slow} {failed}");
                one.record(at_ms(20), false, false);
                many.record(at_ms(20), false, false);
                assert_eq!(one.counts(), many.counts(), "and after: {spec:?}");
            }
        }
    }

    #[test]
    fn count_window_keeps_the_last_n() {
        let mut w = Window::new(WindowSpec::Count { calls: 3 });
        let t = at_ms(0);
        w.record(t, true, false);
        w.record(t, false, true);
        assert_eq!(w.counts(), counts(2, 1, 1));
        w.record(t, true, false);
        assert_eq!(w.counts(), counts(3, 2, 1));
        // The first failure falls out.
        w.record(t, false, false);
        assert_eq!(w.counts(), counts(3, 1, 1));
        // Then the slow one.
        w.record(t, false, false);
        assert_eq!(w.counts(), counts(3, 1, 0));
        w.record(t, false, false);
        assert_eq!(w.counts(), counts(3, 0, 0));
        w.clear();
        assert_eq!(w.counts(), counts(0, 0, 0));
        w.record(t, true, false);
        assert_eq!(w.counts(), counts(1, 1, 0));
    }

    #[test]
    fn count_window_of_one() {
        let mut w = Window::new(WindowSpec::Count { calls: 1 });
        w.record(at_ms(0), true, false);
        w.record(at_ms(0), false, false);
        assert_eq!(w.counts(), counts(1, 0, 0));
    }

    #[test]
    fn time_window_drops_whole_buckets() {
        // 4 buckets of 250 ms.
        let spec = WindowSpec::Time {
            duration: Duration::from_secs(1),
            buckets: 4,
        };
        let mut w = Window::new(spec);
        w.record(at_ms(10_000), true, false); // period 40
        w.record(at_ms(10_249), false, true); // period 40
        w.record(at_ms(10_250), true, false); // period 41
        assert_eq!(w.counts(), counts(3, 2, 1));
        w.advance(at_ms(10_999)); // period 43: 40..=43 still in
        assert_eq!(w.counts(), counts(3, 2, 1));
        w.advance(at_ms(11_000)); // period 44: 40 is out
        assert_eq!(w.counts(), counts(1, 1, 0));
        w.record(at_ms(11_100), false, false);
        w.advance(at_ms(11_250)); // period 45: 41 is out
        assert_eq!(w.counts(), counts(1, 0, 0));
        w.advance(at_ms(60_000)); // long idle: everything is out
        assert_eq!(w.counts(), counts(0, 0, 0));
    }

    #[test]
    fn time_window_counts_a_stepped_back_clock_in_the_newest_bucket() {
        let spec = WindowSpec::Time {
            duration: Duration::from_secs(1),
            buckets: 2,
        };
        let mut w = Window::new(spec);
        w.record(at_ms(5_000), false, false);
        w.record(at_ms(1_000), true, false);
        assert_eq!(w.counts(), counts(2, 1, 0));
        w.advance(at_ms(5_999));
        assert_eq!(w.counts(), counts(2, 1, 0));
        w.advance(at_ms(6_000));
        assert_eq!(w.counts(), counts(0, 0, 0));
    }

    #[test]
    fn time_window_clear() {
        let spec = WindowSpec::Time {
            duration: Duration::from_secs(1),
            buckets: 10,
        };
        let mut w = Window::new(spec);
        w.record(at_ms(5_000), true, true);
        w.clear();
        assert_eq!(w.counts(), counts(0, 0, 0));
        w.record(at_ms(5_001), true, false);
        w.advance(at_ms(5_999));
        assert_eq!(w.counts(), counts(1, 1, 0));
    }
}
