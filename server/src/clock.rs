//! The daemon's one clock. The state machine never reads a clock; everything that
//! calls it passes the `now` taken here. Tests use a [`Clock::manual`] one and move it
//! themselves, so timer behaviour costs no real time.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cbd_breaker::Timestamp;

/// Wall-clock now. Wall time, not monotonic, because open deadlines are persisted
/// and must mean the same after a restart.
pub fn now() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

/// Where the registry reads the time: the wall clock, or a manual one for tests.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the wall clock. `Some`: nanoseconds since the Unix epoch, set by hand.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The wall clock (what the daemon uses).
    pub fn wall() -> Self {
        Self::default()
    }

    /// A clock that stands at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: Timestamp) -> Self {
        Self {
            manual: Some(Arc::new(AtomicU64::new(start.unix_nanos()))),
        }
    }

    /// Now, by this clock.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            None => now(),
            Some(n) => Timestamp::from_unix_nanos(n.load(Ordering::Acquire)),
        }
    }

    /// Moves a manual clock on by `d`. A wall clock cannot be moved: panics (tests only).
    pub fn advance(&self, d: Duration) {
        let n = self.manual.as_ref().expect("only a manual clock moves");
        let step = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        n.fetch_add(step, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = Clock::manual(Timestamp::from_unix_nanos(1_000));
        assert_eq!(c.now().unix_nanos(), 1_000);
        c.advance(Duration::from_nanos(500));
        assert_eq!(c.now().unix_nanos(), 1_500);
        assert!(Clock::wall().now().unix_nanos() > 1_700_000_000_000_000_000);
    }
}
