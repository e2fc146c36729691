//! Outcomes counted by a client under a lease and reported as one (docs/DESIGN.md §10).
//!
//! A leased client allows calls with no RPC, so it reports their outcomes as counts.
//! An aggregate describes a sequence of outcomes in the order the client saw them
//! complete: how many of each kind, plus the three failure runs the
//! consecutive-failure condition needs (before the first success, the longest, after
//! the last success). The daemon applies it as if the sequence were its successes,
//! then its slow successes, then its failures (the one difference from reporting each
//! call: the order inside an aggregate), and checks the trip conditions once, after.

use crate::{Error, Outcome};

/// Counts of one sequence of outcomes. `Default` is the empty sequence.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// Successes no slower than the spec's `slow_call_duration`.
    pub successes: u64,
    /// Successes slower than `slow_call_duration`.
    pub slow_successes: u64,
    /// Failures.
    pub failures: u64,
    /// Outcomes that count for nothing (`Outcome::Ignored`); they break no failure run.
    pub ignored: u64,
    /// Failures before the first success; all of them when there is no success.
    pub leading_failures: u64,
    /// The longest run of failures with no success between them.
    pub longest_failure_run: u64,
    /// Failures after the last success; all of them when there is no success.
    pub trailing_failures: u64,
}

impl Aggregate {
    /// Adds one outcome at the end of the sequence. `slow` matters for successes only.
    pub fn record(&mut self, outcome: Outcome, slow: bool) {
        match outcome {
            Outcome::Ignored => self.ignored += 1,
            Outcome::Success => {
                if slow {
                    self.slow_successes += 1;
                } else {
                    self.successes += 1;
                }
                self.trailing_failures = 0;
            }
            Outcome::Failure => {
                if !self.has_success() {
                    self.leading_failures += 1;
                }
                self.failures += 1;
                self.trailing_failures += 1;
                self.longest_failure_run = self.longest_failure_run.max(self.trailing_failures);
            }
        }
    }

    /// This sequence followed by `later`.
    #[must_use]
    pub fn then(self, later: Self) -> Self {
        let leading = if self.has_success() {
            self.leading_failures
        } else {
            self.failures + later.leading_failures
        };
        let trailing = if later.has_success() {
            later.trailing_failures
        } else {
            self.trailing_failures + later.failures
        };
        Self {
            successes: self.successes + later.successes,
            slow_successes: self.slow_successes + later.slow_successes,
            failures: self.failures + later.failures,
            ignored: self.ignored + later.ignored,
            leading_failures: leading,
            longest_failure_run: self
                .longest_failure_run
                .max(later.longest_failure_run)
                .max(self.trailing_failures + later.leading_failures),
            trailing_failures: trailing,
        }
    }

    /// Outcomes of every kind, ignored ones included.
    pub fn total(&self) -> u64 {
        self.successes + self.slow_successes + self.failures + self.ignored
    }

    /// Whether the sequence holds no outcome.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    fn has_success(&self) -> bool {
        self.successes + self.slow_successes > 0
    }

    /// Checks that some sequence of outcomes has these counts; the error names the
    /// first field at fault (as the proto spells it).
    pub fn validate(&self) -> Result<(), Error> {
        let bad =
            |field: &'static str, reason: String| Err(Error::InvalidAggregate { field, reason });
        let total = [
            self.successes,
            self.slow_successes,
            self.failures,
            self.ignored,
        ]
        .into_iter()
        .try_fold(0u64, u64::checked_add);
        if total.is_none() {
            return bad("failures", "the counts add up to more than 2^64".into());
        }
        let f = self.failures;
        for (field, run) in [
            ("leading_failures", self.leading_failures),
            ("longest_failure_run", self.longest_failure_run),
            ("trailing_failures", self.trailing_failures),
        ] {
            if run > f {
                return bad(field, format!("{run} is more than the {f} failures"));
            }
        }
        let (lead, long, trail) = (
            self.leading_failures,
            self.longest_failure_run,
            self.trailing_failures,
        );
        if !self.has_success() {
            for (field, run) in [
                ("leading_failures", lead),
                ("longest_failure_run", long),
                ("trailing_failures", trail),
            ] {
                if run != f {
                    return bad(
                        field,
                        format!(
                            "{run}, but with no success every one of the {f} failures is in it"
                        ),
                    );
                }
            }
            return Ok(());
        }
        if lead + trail > f {
            return bad(
                "trailing_failures",
                format!("leading {lead} + trailing {trail} is more than the {f} failures"),
            );
        }
        if long < lead.max(trail) {
            return bad(
                "longest_failure_run",
                format!("{long} is shorter than the leading ({lead}) or trailing ({trail}) run"),
            );
        }
        if long > lead.max(trail) && lead + long + trail > f {
            return bad(
                "longest_failure_run",
                format!(
                    "a middle run of {long} besides leading {lead} and trailing {trail} is more than the {f} failures"
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Outcome::{Failure as F, Ignored as I, Success as S};

    fn of(outcomes: &[Outcome]) -> Aggregate {
        let mut a = Aggregate::default();
        for &o in outcomes {
            a.record(o, false);
        }
        a
    }

    #[test]
    fn runs_are_counted_in_order() {
        let a = of(&[F, F, S, F, F, F, I, S, F]);
        assert_eq!(
            a,
            Aggregate {
                successes: 2,
                failures: 6,
                ignored: 1,
                leading_failures: 2,
                longest_failure_run: 3,
                trailing_failures: 1,
                ..Aggregate::default()
            }
        );
        assert_eq!(a.total(), 9);
        a.validate().unwrap();
        let only_failures = of(&[F, I, F]);
        assert_eq!(
            (
                only_failures.leading_failures,
                only_failures.longest_failure_run,
                only_failures.trailing_failures
            ),
            (2, 2, 2),
            "an ignored outcome breaks no run"
        );
    }

    #[test]
    fn then_is_the_aggregate_of_the_concatenation() {
        let seqs: &[&[Outcome]] = &[
            &[],
            &[F],
            &[S],
            &[F, F],
            &[F, S, F],
            &[S, F, F],
            &[F, F, S],
            &[I, F, S, S, F, F, F],
        ];
        for a in seqs {
            for b in seqs {
                let joined: Vec<Outcome> = a.iter().chain(b.iter()).copied().collect();
                assert_eq!(of(a).then(of(b)), of(&joined), "{a:?} then {b:?}");
            }
        }
    }

    #[test]
    fn every_recorded_sequence_validates() {
        // All sequences of up to 8 outcomes of S and F.
        for len in 0..=8u32 {
            for bits in 0..1u32 << len {
                let seq: Vec<Outcome> = (0..len)
                    .map(|i| if bits >> i & 1 == 1 { F } else { S })
                    .collect();
                of(&seq)
                    .validate()
                    .unwrap_or_else(|e| panic!("{seq:?}: {e}"));
            }
        }
    }

    #[test]
    fn impossible_counts_are_refused_naming_the_field() {
        let field = |a: Aggregate| match a.validate() {
            Err(Error::InvalidAggregate { field, .. }) => field,
            other => panic!("{a:?}: {other:?}"),
        };
        let base = Aggregate {
            successes: 1,
            failures: 4,
            ..Aggregate::default()
        };
        assert_eq!(
            field(Aggregate {
                leading_failures: 5,
                ..base
            }),
            "leading_failures"
        );
        assert_eq!(
            field(Aggregate {
                trailing_failures: 3,
                leading_failures: 2,
                longest_failure_run: 3,
                ..base
            }),
            "trailing_failures"
        );
        assert_eq!(
            field(Aggregate {
                leading_failures: 2,
                longest_failure_run: 1,
                ..base
            }),
            "longest_failure_run"
        );
        assert_eq!(
            field(Aggregate {
                leading_failures: 1,
                trailing_failures: 1,
                longest_failure_run: 3,
                ..base
            }),
            "longest_failure_run"
        );
        let no_success = Aggregate {
            failures: 3,
            leading_failures: 3,
            longest_failure_run: 3,
            trailing_failures: 2,
            ..Aggregate::default()
        };
        assert_eq!(field(no_success), "trailing_failures");
        assert_eq!(
            field(Aggregate {
                successes: u64::MAX,
                failures: 1,
                leading_failures: 1,
                longest_failure_run: 1,
                ..Aggregate::default()
            }),
            "failures"
        );
    }
}
