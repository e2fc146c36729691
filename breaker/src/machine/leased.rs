//! Outcomes of leased calls, applied as one [`Aggregate`] (docs/DESIGN.md §10).

use std::time::Duration;

use crate::{Aggregate, Error, Override, Reason, Reported, State, Timestamp};

use super::Breaker;

/// Whether a lease may be granted now, and on what terms.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    /// Granted until `valid_until`, in `generation`; a success slower than
    /// `slow_call_duration` is a slow one (`None`: none is).
    Granted {
        valid_until: Timestamp,
        generation: u64,
        slow_call_duration: Option<Duration>,
    },
    /// The spec sets no `cache_ttl`, or counts slow failures
    /// (`slow_includes_failures`): a lease's outcomes carry successes' slowness only.
    NotLeasable,
    /// Not CLOSED, or under an override.
    NotClosed,
}

impl Breaker {
    /// A lease on this breaker's decisions until `now + cache_ttl`: only while CLOSED
    /// with no override, when the spec sets `cache_ttl` (docs/DESIGN.md §10). Changes
    /// nothing: a lease is a promise that every change to the breaker is pushed to its
    /// holder, which the daemon keeps, not the machine.
    pub fn lease(&self, now: Timestamp) -> Lease {
        let Some(ttl) = self
            .limits
            .cache_ttl
            .filter(|_| !self.cold.spec.slow_includes_failures)
        else {
            return Lease::NotLeasable;
        };
        if self.state != State::Closed || self.override_.is_some() {
            return Lease::NotClosed;
        }
        Lease::Granted {
            valid_until: now.saturating_add(ttl),
            generation: self.generation,
            slow_call_duration: self.limits.slow_threshold,
        }
    }

    /// Counts `outcomes`, observed by a client under a lease granted in `generation`,
    /// and trips the breaker if a condition now holds. Stale (counted nowhere) when
    /// the breaker has moved to a newer generation since, or is not CLOSED: the calls
    /// were allowed after a change the client had not yet heard of.
    ///
    /// Applied as if the sequence were its successes, then its slow successes, then
    /// its failures, with the conditions checked once, after; the consecutive-failure
    /// condition sees the longest run, and the leading run continuing the failures
    /// counted before it.
    pub fn report_aggregate(
        &mut self,
        generation: u64,
        outcomes: &Aggregate,
        now: Timestamp,
    ) -> Result<Reported, Error> {
        self.report_aggregate_as(generation, outcomes, None, now)
    }

    /// [`report_aggregate`](Self::report_aggregate) by `caller` (`None`: anonymous),
    /// as [`report_as`](Self::report_as) attributes one outcome. For
    /// `min_distinct_callers`, the longest run inside the aggregate is this caller's
    /// alone; the leading run adds it to the callers of the run before.
    pub fn report_aggregate_as(
        &mut self,
        generation: u64,
        outcomes: &Aggregate,
        caller: Option<&str>,
        now: Timestamp,
    ) -> Result<Reported, Error> {
        outcomes.validate()?;
        if generation > self.generation {
            return Err(Error::PermitFromFuture {
                permit: generation,
                current: self.generation,
            });
        }
        let stale = generation < self.generation
            || self.state != State::Closed
            || self.override_ == Some(Override::ForcedOpen);
        let mut transition = None;
        if !stale && self.override_ != Some(Override::Disabled) {
            let peak = self.count_aggregate(outcomes, caller, now);
            if self.override_ != Some(Override::ForcedClosed) {
                let reason = match self.limits.consecutive_threshold {
                    Some(n) if peak >= u64::from(n) => Some(Reason::ConsecutiveFailures {
                        count: u32::try_from(peak).unwrap_or(u32::MAX),
                    }),
                    _ => self.trip_reason(),
                };
                transition = reason.map(|r| self.trip(r, now));
            }
        }
        Ok(Reported {
            stale,
            state: self.state,
            generation: self.generation,
            transition,
        })
    }

    /// Adds the counts to the window and the failure run; returns the longest run of
    /// consecutive failures the sequence made, counting the run before it, among
    /// the runs whose failures come from `min_distinct_callers` callers (0: none).
    fn count_aggregate(&mut self, a: &Aggregate, caller: Option<&str>, now: Timestamp) -> u64 {
        let quorum = self.limits.min_distinct_callers;
        let before = u64::from(self.consecutive_failures);
        let successes = a.successes + a.slow_successes;
        if successes + a.failures == 0 {
            // Only ignored outcomes: nothing counts, the run stays as it was.
            return if self.callers_in_run() >= quorum {
                before
            } else {
                0
            };
        }
        let leading = if successes == 0 {
            a.failures
        } else {
            a.leading_failures
        };
        // Distinct callers of the run before, and of it continued by this caller.
        let tracked = caller.is_some() || self.tracks_callers;
        let (before_callers, with_caller) = if tracked {
            (self.callers_in_run(), self.callers_in_run_with(caller, now))
        } else {
            (u32::from(before > 0), 1)
        };
        let continued = (
            before + leading,
            if leading > 0 {
                with_caller
            } else {
                before_callers
            },
        );
        // A run inside the aggregate, after a success, is this caller's alone.
        let inside = (
            if successes == 0 {
                0
            } else {
                a.longest_failure_run
            },
            1,
        );
        let peak = [continued, inside]
            .into_iter()
            .filter(|&(run, callers)| run > 0 && callers >= quorum)
            .map(|(run, _)| run)
            .max()
            .unwrap_or(0);
        if tracked {
            // The window's order: the successes, then the failures (docs/DESIGN.md §10).
            self.count_caller(caller, false, successes, now);
            self.count_caller(caller, true, a.failures, now);
            if successes > 0 && a.trailing_failures == 0 {
                self.end_caller_run();
            }
        }
        self.window
            .record_many(now, a.successes, a.slow_successes, a.failures);
        let after = if successes == 0 {
            before + a.failures
        } else {
            a.trailing_failures
        };
        self.consecutive_failures = u32::try_from(after).unwrap_or(u32::MAX);
        peak
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{Aggregate, Breaker, Outcome, Override, Spec, State, Timestamp, WindowSpec};

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_unix_nanos(1_000_000_000_000 + ms * 1_000_000)
    }

    fn of(outcomes: &[Outcome]) -> Aggregate {
        let mut a = Aggregate::default();
        for &o in outcomes {
            a.record(o, false);
        }
        a
    }

    /// The reference: the same outcomes reported one permit at a time.
    fn one_by_one(spec: &Spec, outcomes: &[Outcome]) -> (State, u64) {
        let mut b = Breaker::new(spec.clone());
        for &o in outcomes {
            let Some(p) = b.acquire(at(0)).permit else {
                break;
            };
            b.report(p, o, None, at(0)).unwrap();
        }
        (b.status().state, b.status().window_failures.into())
    }

    #[test]
    fn an_aggregate_trips_when_the_same_outcomes_one_by_one_would() {
        use Outcome::{Failure as F, Success as S};
        let specs = [
            Spec {
                consecutive_failures: Some(3),
                ..Spec::default()
            },
            Spec {
                consecutive_failures: None,
                failure_rate_percent: Some(50),
                minimum_calls: 4,
                window: WindowSpec::Count { calls: 10 },
                ..Spec::default()
            },
        ];
        let seqs: &[&[Outcome]] = &[
            &[F, F, F],
            &[F, F, S, F, F],
            &[S, F, F, F, S],
            &[S, S, S, F],
            &[F, S, F, S, F, S],
            &[S, S, S, S, S, F],
        ];
        for spec in &specs {
            for seq in seqs {
                let mut b = Breaker::new(spec.clone());
                let generation = b.status().generation;
                let r = b.report_aggregate(generation, &of(seq), at(0)).unwrap();
                assert!(!r.stale);
                // Order inside an aggregate may differ, but whether it trips does
                // not, for a rate and for a run (the failures before a trip count).
                assert_eq!(r.state, one_by_one(spec, seq).0, "{spec:?} {seq:?}");
            }
        }
    }

    #[test]
    fn the_leading_run_continues_the_failures_before_it() {
        let mut b = Breaker::new(Spec {
            consecutive_failures: Some(4),
            ..Spec::default()
        });
        let g = b.status().generation;
        use Outcome::{Failure as F, Success as S};
        assert_eq!(
            b.report_aggregate(g, &of(&[S, F, F]), at(0)).unwrap().state,
            State::Closed
        );
        let r = b.report_aggregate(g, &of(&[F, F, S]), at(1)).unwrap();
        assert_eq!(r.state, State::Open, "2 trailing + 2 leading = 4 in a row");
        assert_eq!(
            r.transition.unwrap().reason.to_string(),
            "4 consecutive failures"
        );
    }

    #[test]
    fn an_aggregate_of_an_older_generation_or_another_state_is_stale() {
        let mut b = Breaker::new(Spec {
            consecutive_failures: Some(1),
            ..Spec::default()
        });
        let g = b.status().generation;
        let trip = b
            .report_aggregate(g, &of(&[Outcome::Failure]), at(0))
            .unwrap();
        assert_eq!(trip.state, State::Open);
        let late = b
            .report_aggregate(g, &of(&[Outcome::Failure, Outcome::Failure]), at(1))
            .unwrap();
        assert!(late.stale, "counted after the trip");
        assert!(
            b.report_aggregate(g + 1, &of(&[Outcome::Success]), at(1))
                .unwrap()
                .stale,
            "OPEN"
        );
        assert!(
            b.report_aggregate(g + 5, &Aggregate::default(), at(1))
                .is_err(),
            "from the future"
        );

        b.set_override(Some(Override::ForcedClosed), at(2));
        let g = b.status().generation;
        let r = b
            .report_aggregate(g, &of(&[Outcome::Failure; 5]), at(3))
            .unwrap();
        assert!(!r.stale);
        assert_eq!(
            r.state,
            State::Closed,
            "FORCED_CLOSED counts and never trips"
        );
        assert_eq!(b.status().window_failures, 5);
    }

    #[test]
    fn slow_successes_count_for_the_slow_rate() {
        let mut b = Breaker::new(Spec {
            consecutive_failures: None,
            slow_call_rate_percent: Some(50),
            slow_call_duration: Some(Duration::from_millis(100)),
            minimum_calls: 2,
            ..Spec::default()
        });
        let g = b.status().generation;
        let a = Aggregate {
            successes: 1,
            slow_successes: 1,
            ..Aggregate::default()
        };
        let r = b.report_aggregate(g, &a, at(0)).unwrap();
        assert_eq!(r.state, State::Open);
    }

    #[test]
    fn only_a_closed_breaker_without_override_and_with_cache_ttl_is_leased() {
        use crate::machine::leased::Lease;
        let ttl = Duration::from_secs(2);
        let mut b = Breaker::new(Spec {
            consecutive_failures: Some(1),
            cache_ttl: Some(ttl),
            ..Spec::default()
        });
        let g = b.status().generation;
        assert_eq!(
            b.lease(at(0)),
            Lease::Granted {
                valid_until: at(2_000),
                generation: g,
                slow_call_duration: None
            }
        );
        b.set_override(Some(Override::ForcedClosed), at(1));
        assert_eq!(b.lease(at(1)), Lease::NotClosed);
        b.set_override(None, at(2));
        let g = b.status().generation;
        b.report_aggregate(g, &of(&[Outcome::Failure]), at(3))
            .unwrap();
        assert_eq!(b.lease(at(3)), Lease::NotClosed, "OPEN");
        assert_eq!(
            Breaker::new(Spec::default()).lease(at(0)),
            Lease::NotLeasable
        );
    }

    #[test]
    fn an_invalid_aggregate_changes_nothing() {
        let mut b = Breaker::new(Spec::default());
        let g = b.status().generation;
        let bad = Aggregate {
            failures: 1,
            ..Aggregate::default()
        };
        assert!(b.report_aggregate(g, &bad, at(0)).is_err());
        assert_eq!(b.status().window_calls, 0);
    }
}
