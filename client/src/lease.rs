//! A breaker's lease as the client holds it (docs/DESIGN.md §10): the hot path's
//! decision (a few atomic loads and a clock read) and its outcome counters (one
//! per thread shard, so threads do not share a lock or a cache line), plus the
//! per-lease books the session task sends from.

use std::{
    cell::Cell,
    collections::{HashMap, VecDeque},
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use cbd_breaker::{Aggregate, Outcome};
use cbd_proto::v1 as pb;
use parking_lot::Mutex;

/// A decision made under a lease: which lease (its epoch) and how it classifies
/// slow successes.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Ticket {
    epoch: u64,
    /// Successes slower than this are slow; `None`: none is.
    slow: Option<Duration>,
}

impl Ticket {
    /// Whether the call's duration matters (the lease classifies slow successes);
    /// if not, the hot path skips reading the clock twice more.
    #[inline]
    pub fn times_calls(&self) -> bool {
        self.slow.is_some()
    }
}

/// Outcomes of one thread shard, counted under the lease of `epoch`.
#[derive(Default)]
struct ShardCounts {
    epoch: u64,
    outcomes: Aggregate,
}

/// Keeps a shard on its own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

/// What the session task keeps of one lease until its outcomes are answered.
pub(crate) struct Book {
    /// The lease's bytes, sent with its outcomes.
    pub token: Vec<u8>,
    /// The last sequence number used.
    pub sequence: u64,
    /// Counted, not yet sent.
    pub pending: Aggregate,
    /// Sent and not yet answered, in sequence order: resent after a reconnect.
    pub unacked: VecDeque<pb::LeasedOutcomes>,
    /// When it stopped being the breaker's current lease.
    pub ended: Option<Instant>,
}

/// One breaker's lease state within a client.
pub(crate) struct LeaseSlot {
    /// Even while stable; odd while a grant is being written (a seqlock). Each grant
    /// takes the next even number, so a ticket names its lease.
    epoch: AtomicU64,
    /// Until when (on [`clock_nanos`]) calls may be allowed locally; 0: no lease.
    valid_until: AtomicU64,
    /// `slow_call_duration` of the current lease in nanoseconds; 0: none.
    slow_nanos: AtomicU64,
    /// A leased call was decided since the last renewal (written only when false,
    /// so the hot path mostly reads it).
    pub used: AtomicBool,
    /// A lease was asked for (or is held): the session task keeps it renewed.
    pub wanted: AtomicBool,
    /// Until when (on [`clock_nanos`]) calls are refused with no RPC: the daemon
    /// pushed a revocation saying the breaker went OPEN, not yet committed; 0: not
    /// refusing. Cleared by the push that follows up (the commit, or a later
    /// change) and when the stream is lost; read only off the leased path.
    refuse_until: AtomicU64,
    shards: Box<[Padded<Mutex<ShardCounts>>]>,
    pub books: Mutex<HashMap<u64, Book>>,
}

/// Shards per slot: enough that threads rarely share one.
fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .next_power_of_two()
        .clamp(2, 64)
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    // `const`-initialised (a plain TLS load, no lazy-init check); numbered on first
    // use.
    static THREAD_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's number, for picking a shard.
#[inline]
fn thread_index() -> usize {
    THREAD_INDEX.with(|index| {
        let mut i = index.get();
        if i == usize::MAX {
            i = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
            index.set(i);
        }
        i
    })
}

impl Default for LeaseSlot {
    fn default() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            valid_until: AtomicU64::new(0),
            slow_nanos: AtomicU64::new(0),
            used: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            refuse_until: AtomicU64::new(0),
            shards: (0..shard_count()).map(|_| Padded::default()).collect(),
            books: Mutex::new(HashMap::new()),
        }
    }
}

/// The clock leases are counted on, in nanoseconds: `CLOCK_BOOTTIME` on Linux, which
/// also counts while the machine is suspended (so a lease cannot outlive a suspend
/// that the monotonic clock, `Instant`'s, would not see), `CLOCK_MONOTONIC` on other
/// Unix systems. Read straight from the vDSO and kept as one integer: converting an
/// `Instant` to nanoseconds since a base took a fifth of a leased call.
#[cfg(unix)]
#[inline]
pub(crate) fn clock_nanos() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let id = rustix::time::ClockId::Boottime;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let id = rustix::time::ClockId::Monotonic;
    let t = rustix::time::clock_gettime(id);
    // Never negative; u64 nanoseconds last 584 years of uptime.
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The clock leases are counted on: nanoseconds on `Instant`'s clock (never 0).
#[cfg(not(unix))]
pub(crate) fn clock_nanos() -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX) + 1
}

impl LeaseSlot {
    /// A ticket when a lease is valid at `now`; `None`: decide by RPC.
    #[inline]
    pub fn check(&self, now: u64) -> Option<Ticket> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if epoch & 1 == 1 {
            return None;
        }
        let valid_until = self.valid_until.load(Ordering::Acquire);
        let slow = self.slow_nanos.load(Ordering::Acquire);
        if self.epoch.load(Ordering::Acquire) != epoch || now >= valid_until {
            return None;
        }
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        Some(Ticket {
            epoch,
            slow: (slow != 0).then(|| Duration::from_nanos(slow)),
        })
    }

    /// Counts the outcome of a call decided with `ticket`.
    #[inline]
    pub fn record(&self, ticket: Ticket, outcome: Outcome, duration: Option<Duration>) {
        let slow = matches!((ticket.slow, duration), (Some(t), Some(d)) if d > t);
        let index = thread_index() & (self.shards.len() - 1);
        let mut shard = self.shards[index].0.lock();
        if shard.epoch != ticket.epoch && !shard.outcomes.is_empty() {
            if ticket.epoch < shard.epoch {
                // A call decided under an older lease ended after newer ones were
                // counted here: straight to its lease's book.
                let mut one = Aggregate::default();
                one.record(outcome, slow);
                self.to_book(ticket.epoch, one);
                return;
            }
            let older = std::mem::take(&mut shard.outcomes);
            self.to_book(shard.epoch, older);
        }
        shard.epoch = ticket.epoch;
        shard.outcomes.record(outcome, slow);
    }

    fn to_book(&self, epoch: u64, outcomes: Aggregate) {
        if let Some(book) = self.books.lock().get_mut(&epoch) {
            book.pending = book.pending.then(outcomes);
        }
        // No book: the lease was given up long ago; the daemon would not count it.
    }

    /// Moves every shard's counts into the books (the session task, before a flush).
    pub fn collect(&self) {
        for shard in self.shards.iter() {
            let (epoch, outcomes) = {
                let mut shard = shard.0.lock();
                (shard.epoch, std::mem::take(&mut shard.outcomes))
            };
            if !outcomes.is_empty() {
                self.to_book(epoch, outcomes);
            }
        }
    }

    /// Makes a new lease current: its book first, then the decision fields.
    /// `valid_until` is on [`clock_nanos`].
    pub fn grant(&self, token: Vec<u8>, valid_until: u64, slow: Option<Duration>, now: Instant) {
        let epoch = self.epoch.load(Ordering::Acquire) + 2;
        {
            let mut books = self.books.lock();
            for book in books.values_mut() {
                book.ended.get_or_insert(now);
            }
            books.insert(
                epoch,
                Book {
                    token,
                    sequence: 0,
                    pending: Aggregate::default(),
                    unacked: VecDeque::new(),
                    ended: None,
                },
            );
        }
        self.epoch.store(epoch - 1, Ordering::Release);
        self.valid_until.store(valid_until, Ordering::Release);
        let slow = slow.map_or(0, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.slow_nanos.store(slow, Ordering::Release);
        self.epoch.store(epoch, Ordering::Release);
    }

    /// No more local decisions: the lease was revoked, or can no longer be trusted.
    /// Returns whether a lease had been installed (else there was nothing to void).
    pub fn void(&self, now: Instant) -> bool {
        let had = self.valid_until.swap(0, Ordering::AcqRel) != 0;
        for book in self.books.lock().values_mut() {
            book.ended.get_or_insert(now);
        }
        had
    }

    /// Refuses calls with no RPC until `until` (on [`clock_nanos`]).
    pub fn refuse_until(&self, until: u64) {
        self.refuse_until.store(until, Ordering::Release);
    }

    /// Back to asking the daemon.
    pub fn stop_refusing(&self) {
        self.refuse_until.store(0, Ordering::Release);
    }

    /// Whether a call now is refused with no RPC.
    pub fn refusing(&self, now: u64) -> bool {
        now < self.refuse_until.load(Ordering::Acquire)
    }

    /// Whether a lease is held now (for renewal).
    pub fn holds(&self, now: u64) -> bool {
        now < self.valid_until.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_granted_lease_decides_until_it_ends_and_counts_by_lease() {
        let slot = LeaseSlot::default();
        let t0 = Instant::now();
        assert!(slot.check(1).is_none(), "no lease yet");
        slot.grant(b"one".to_vec(), 1_000, None, t0);
        let first = slot.check(10).expect("leased");
        assert!(slot.check(1_000).is_none(), "never at or past valid_until");
        slot.record(first, Outcome::Failure, None);
        slot.grant(b"two".to_vec(), 2_000, Some(Duration::from_nanos(5)), t0);
        let second = slot.check(1_500).expect("renewed");
        slot.record(second, Outcome::Success, Some(Duration::from_nanos(9)));
        // A call decided under the first lease that ends now still counts there.
        slot.record(first, Outcome::Success, None);
        slot.collect();
        let books = slot.books.lock();
        let by_token = |t: &[u8]| books.values().find(|b| b.token == t).expect("book").pending;
        let one = by_token(b"one");
        assert_eq!((one.failures, one.successes), (1, 1));
        let two = by_token(b"two");
        assert_eq!(
            (two.slow_successes, two.successes),
            (1, 0),
            "slow by the second lease's terms"
        );
        drop(books);
        assert!(slot.void(t0), "a lease was installed: voided");
        assert!(slot.check(1_600).is_none(), "revoked");
        // A follow-up push finds nothing to void, so the session counts it nowhere
        // and keeps a lease request in flight.
        assert!(!slot.void(t0), "nothing left to void");
    }
}
