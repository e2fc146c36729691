//! Per-caller attribution of the window's outcomes (docs/DESIGN.md §3.7): which
//! callers failed, for `min_distinct_callers` and the top failing callers a read shows.
//!
//! A [`Callers`] mirrors the breaker's window: a ring of caller ids for a count
//! window, buckets of per-caller tallies for a time window, fed the same outcomes at
//! the same times, so an outcome leaves both at once. Only named callers are tallied;
//! the anonymous caller's share is the window's totals minus theirs. At most
//! [`MAX_CALLERS`] names are tracked at once; a name's slot is freed when its last
//! outcome leaves the window (and the current failure run), and callers beyond the
//! cap share one overflow id, which counts as a single caller.

use crate::time::nanos;
use crate::window::Counts;
use crate::{Timestamp, WindowSpec};
use crate::{
    WindowSpec::{Count, Time},
    spec::{MAX_WINDOW_BUCKETS, MAX_WINDOW_CALLS},
};

/// Most caller names a breaker tracks at once; more share one overflow bucket.
pub const MAX_CALLERS: usize = 64;
/// How many callers [`Breaker::failing_callers`](crate::Breaker::failing_callers) lists.
pub const TOP_FAILING_CALLERS: usize = 5;

/// Id 0: no caller given. Ids `1..=MAX_CALLERS`: named slots. Then the overflow.
const ANONYMOUS: u8 = 0;
const OVERFLOW: u8 = MAX_CALLERS as u8 + 1;
const IDS: usize = MAX_CALLERS + 2;
/// A ring entry: the id in the low bits, this bit for a failure.
const FAILED: u8 = 0x80;

/// Who a [`CallerTally`] is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallerId {
    /// Calls reported without a caller.
    Anonymous,
    /// A named caller.
    Named(String),
    /// Every caller beyond the [`MAX_CALLERS`] tracked at once, together.
    Overflow,
}

/// One caller's share of the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerTally {
    /// The caller.
    pub caller: CallerId,
    /// Its counted outcomes in the window.
    pub calls: u64,
    /// Its failures among them.
    pub failures: u64,
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    calls: u64,
    failures: u64,
}

#[derive(Debug)]
enum Track {
    Count {
        ring: Box<[u8]>,
        next: usize,
        len: usize,
    },
    Time {
        bucket_nanos: u64,
        head: u64,
        /// Per bucket: the named ids with outcomes in it.
        buckets: Box<[Vec<(u8, Tally)>]>,
    },
}

/// The named callers of one breaker's window, and of its current failure run.
#[derive(Debug)]
pub(crate) struct Callers {
    /// Slot `i` holds the name of id `i + 1`.
    names: Vec<Option<Box<str>>>,
    /// Per id, what of it is in the window (index 0, anonymous, unused).
    totals: [Tally; IDS],
    /// Bit `id`: that caller has a failure in the current run of failures.
    run: u128,
    track: Track,
}

impl Callers {
    /// Mirrors a window of `spec` (sizes clamped as the window clamps them).
    pub fn new(spec: WindowSpec) -> Self {
        let track = match spec {
            Count { calls } => Track::Count {
                ring: vec![0; calls.clamp(1, MAX_WINDOW_CALLS) as usize].into_boxed_slice(),
                next: 0,
                len: 0,
            },
            Time { duration, buckets } => {
                let buckets = buckets.clamp(1, MAX_WINDOW_BUCKETS);
                Track::Time {
                    bucket_nanos: (nanos(duration) / u64::from(buckets)).max(1),
                    head: 0,
                    buckets: (0..buckets).map(|_| Vec::new()).collect(),
                }
            }
        };
        Self {
            names: vec![None; MAX_CALLERS],
            totals: [Tally::default(); IDS],
            run: 0,
            track,
        }
    }

    /// The id of `caller`, taking a free slot for a new name (the overflow when none
    /// is free).
    pub fn id(&mut self, caller: Option<&str>) -> u8 {
        let Some(name) = caller else {
            return ANONYMOUS;
        };
        let mut free = None;
        for (i, slot) in self.names.iter().enumerate() {
            match slot {
                Some(n) if &**n == name => return i as u8 + 1,
                None if free.is_none() => free = Some(i),
                _ => {}
            }
        }
        match free {
            Some(i) => {
                self.names[i] = Some(name.into());
                i as u8 + 1
            }
            None => OVERFLOW,
        }
    }

    /// Adds `n` outcomes of caller `id` at `now`, all failures or none; the window
    /// recorded the same. `n` beyond a count ring's size keeps the last ones.
    pub fn record(&mut self, now: Timestamp, id: u8, failure: bool, n: u64) {
        if n == 0 {
            return;
        }
        match &mut self.track {
            Track::Count { ring, next, len } => {
                let mut evicted = None;
                let keep = n.min(ring.len() as u64);
                for _ in 0..keep {
                    let full = *len == ring.len();
                    let old = ring[*next];
                    ring[*next] = id | if failure { FAILED } else { 0 };
                    *next = (*next + 1) % ring.len();
                    if full {
                        let old_id = old & !FAILED;
                        if old_id != ANONYMOUS {
                            let t = &mut self.totals[old_id as usize];
                            t.calls -= 1;
                            t.failures -= u64::from(old & FAILED != 0);
                            evicted = Some(old_id);
                        }
                    } else {
                        *len += 1;
                    }
                    if id != ANONYMOUS {
                        let t = &mut self.totals[id as usize];
                        t.calls += 1;
                        t.failures += u64::from(failure);
                    }
                }
                // Only the last one evicted needs a look: a multi-outcome record
                // that evicts several comes from leases, and sweeps below.
                if keep > 1 {
                    self.free_unused();
                } else if let Some(id) = evicted {
                    self.free_if_unused(id);
                }
            }
            Track::Time { .. } => {
                self.advance(now);
                if id == ANONYMOUS {
                    return;
                }
                let Track::Time { head, buckets, .. } = &mut self.track else {
                    unreachable!("matched above")
                };
                let n_buckets = buckets.len() as u64;
                let bucket = &mut buckets[(*head % n_buckets) as usize];
                let add = Tally {
                    calls: n,
                    failures: if failure { n } else { 0 },
                };
                match bucket.iter_mut().find(|(i, _)| *i == id) {
                    Some((_, t)) => {
                        t.calls += add.calls;
                        t.failures += add.failures;
                    }
                    None => bucket.push((id, add)),
                }
                let t = &mut self.totals[id as usize];
                t.calls += add.calls;
                t.failures += add.failures;
            }
        }
    }

    /// A failure of `id` continues the run of failures.
    pub fn failed_in_run(&mut self, id: u8) {
        self.run |= 1 << id;
    }

    /// A success ended the run of failures.
    pub fn end_run(&mut self) {
        let mut run = std::mem::take(&mut self.run);
        while run != 0 {
            let id = run.trailing_zeros() as u8;
            run &= run - 1;
            self.free_if_unused(id);
        }
    }

    /// Distinct callers among the failures of the current run.
    pub fn in_run(&self) -> u32 {
        self.run.count_ones()
    }

    /// [`in_run`](Self::in_run) were `id` to fail next.
    pub fn in_run_with(&self, id: u8) -> u32 {
        (self.run | 1 << id).count_ones()
    }

    /// Distinct callers with a failure in the window, the anonymous one included
    /// when `window` (the breaker's window's totals) holds failures no name has.
    pub fn failing(&self, window: Counts) -> u32 {
        let named = self.totals[1..].iter().filter(|t| t.failures > 0).count() as u32;
        let named_failures: u64 = self.totals[1..].iter().map(|t| t.failures).sum();
        named + u32::from(window.failures > named_failures)
    }

    /// Drops what has fallen out of a time window by `now`, as the window does.
    pub fn advance(&mut self, now: Timestamp) {
        let Track::Time {
            bucket_nanos,
            head,
            buckets,
        } = &mut self.track
        else {
            return;
        };
        let period = now.unix_nanos() / *bucket_nanos;
        if period <= *head {
            return;
        }
        let n = buckets.len() as u64;
        let first = if period - *head >= n {
            period - n + 1
        } else {
            *head + 1
        };
        let mut dropped = false;
        for p in first..=period {
            let bucket = &mut buckets[(p % n) as usize];
            for (id, t) in bucket.drain(..) {
                let total = &mut self.totals[id as usize];
                total.calls -= t.calls;
                total.failures -= t.failures;
                dropped = true;
            }
        }
        *head = period;
        if dropped {
            self.free_unused();
        }
    }

    /// Empties it, as a new generation empties the window.
    pub fn clear(&mut self) {
        self.names.fill(None);
        self.totals = [Tally::default(); IDS];
        self.run = 0;
        match &mut self.track {
            Track::Count { next, len, .. } => {
                *next = 0;
                *len = 0;
            }
            Track::Time { buckets, .. } => buckets.iter_mut().for_each(Vec::clear),
        }
    }

    /// The callers with failures in the window, most failures first (then most
    /// calls, then by id), at most `limit`.
    pub fn failing_callers(&self, window: Counts, limit: usize) -> Vec<CallerTally> {
        let named: Tally = self.totals[1..]
            .iter()
            .fold(Tally::default(), |a, t| Tally {
                calls: a.calls + t.calls,
                failures: a.failures + t.failures,
            });
        let mut all: Vec<CallerTally> = Vec::new();
        if window.failures > named.failures {
            all.push(CallerTally {
                caller: CallerId::Anonymous,
                calls: window.calls.saturating_sub(named.calls),
                failures: window.failures - named.failures,
            });
        }
        for (id, t) in self.totals.iter().enumerate().skip(1) {
            if t.failures == 0 {
                continue;
            }
            let caller = match self.names.get(id - 1) {
                Some(Some(name)) => CallerId::Named(name.to_string()),
                _ => CallerId::Overflow,
            };
            all.push(CallerTally {
                caller,
                calls: t.calls,
                failures: t.failures,
            });
        }
        all.sort_by(|a, b| {
            (b.failures, b.calls)
                .cmp(&(a.failures, a.calls))
                .then_with(|| a.caller.cmp(&b.caller))
        });
        all.truncate(limit);
        all
    }

    /// Frees the slots of names with nothing left in the window or the run.
    fn free_unused(&mut self) {
        for id in 1..=MAX_CALLERS as u8 {
            self.free_if_unused(id);
        }
    }

    /// Frees `id`'s slot if it is a name with nothing left in the window or the run.
    fn free_if_unused(&mut self, id: u8) {
        let unused = self.totals[id as usize].calls == 0 && self.run & (1 << id) == 0;
        if unused && let Some(slot) = self.names.get_mut(usize::from(id).wrapping_sub(1)) {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at_ms(ms: u64) -> Timestamp {
        Timestamp::from_unix_nanos(ms * 1_000_000)
    }

    fn counts(calls: u64, failures: u64) -> Counts {
        Counts {
            calls,
            failures,
            slow: 0,
        }
    }

    #[test]
    fn a_count_ring_forgets_a_caller_with_its_last_outcome() {
        let mut c = Callers::new(WindowSpec::Count { calls: 2 });
        let a = c.id(Some("a"));
        c.record(at_ms(0), a, true, 1);
        assert_eq!(c.failing(counts(1, 1)), 1);
        let b = c.id(Some("b"));
        assert_ne!(a, b);
        c.record(at_ms(0), b, false, 1);
        c.record(at_ms(0), b, false, 1);
        // "a"'s failure fell out: no failing caller, and its slot is free again.
        assert_eq!(c.failing(counts(2, 0)), 0);
        assert!(c.names.iter().flatten().all(|n| &**n != "a"));
    }

    #[test]
    fn a_time_window_drops_whole_buckets_of_callers() {
        let spec = WindowSpec::Time {
            duration: Duration::from_secs(1),
            buckets: 2,
        };
        let mut c = Callers::new(spec);
        let a = c.id(Some("a"));
        c.record(at_ms(10_000), a, true, 3);
        let b = c.id(Some("b"));
        c.record(at_ms(10_500), b, true, 1);
        assert_eq!(c.failing(counts(4, 4)), 2);
        c.advance(at_ms(11_000));
        assert_eq!(c.failing(counts(1, 1)), 1, "a's bucket is out");
        let top = c.failing_callers(counts(1, 1), 5);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].caller, CallerId::Named("b".into()));
    }

    #[test]
    fn callers_beyond_the_cap_share_the_overflow() {
        let mut c = Callers::new(WindowSpec::Count { calls: 1000 });
        for i in 0..MAX_CALLERS + 3 {
            let id = c.id(Some(&format!("c{i}")));
            c.record(at_ms(0), id, true, 1);
        }
        let window = counts(MAX_CALLERS as u64 + 3, MAX_CALLERS as u64 + 3);
        // 64 names and one overflow bucket holding the other three.
        assert_eq!(c.failing(window), MAX_CALLERS as u32 + 1);
        let top = c.failing_callers(window, 1);
        assert_eq!(top[0].caller, CallerId::Overflow);
        assert_eq!((top[0].failures, top[0].calls), (3, 3));
    }

    #[test]
    fn the_anonymous_share_is_what_no_name_has() {
        let mut c = Callers::new(WindowSpec::Count { calls: 10 });
        let a = c.id(Some("a"));
        c.record(at_ms(0), a, true, 1);
        c.record(at_ms(0), ANONYMOUS, true, 2);
        let top = c.failing_callers(counts(4, 3), 5);
        assert_eq!(top[0].caller, CallerId::Anonymous);
        assert_eq!((top[0].failures, top[0].calls), (2, 3));
        assert_eq!(c.failing(counts(4, 3)), 2);
    }

    #[test]
    fn a_name_in_the_current_run_keeps_its_slot() {
        let mut c = Callers::new(WindowSpec::Count { calls: 1 });
        let a = c.id(Some("a"));
        c.record(at_ms(0), a, true, 1);
        c.failed_in_run(a);
        c.record(at_ms(0), ANONYMOUS, true, 1);
        c.failed_in_run(ANONYMOUS);
        assert_eq!(c.in_run(), 2);
        assert_eq!(c.id(Some("a")), a, "still in the run: same id");
        c.end_run();
        assert_eq!(c.in_run(), 0);
        assert!(
            c.names.iter().all(Option::is_none),
            "freed once the run ended"
        );
    }
}
