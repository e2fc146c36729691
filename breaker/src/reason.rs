//! Why a breaker changed state, in words a person can read.

use std::fmt;
use std::time::Duration;

use crate::{Override, State};

/// Why a [`Transition`](crate::Transition) happened. `Display` gives the text events
/// and logs carry, e.g. `failure rate 62% >= 50% over 100 calls`.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// CLOSED → OPEN: `count` failures in a row reached `consecutive_failures`.
    ConsecutiveFailures {
        /// Failures in a row.
        count: u32,
    },
    /// CLOSED → OPEN: the window's failure rate reached `failure_rate_percent`.
    FailureRate {
        /// The rate, in percent, rounded to the nearest integer.
        rate_percent: u32,
        /// The spec's threshold, in percent.
        threshold_percent: u32,
        /// Counted calls in the window.
        calls: u32,
    },
    /// CLOSED → OPEN: the window's slow-call rate reached `slow_call_rate_percent`.
    SlowCallRate {
        /// The rate, in percent, rounded to the nearest integer.
        rate_percent: u32,
        /// The spec's threshold, in percent.
        threshold_percent: u32,
        /// Counted calls in the window.
        calls: u32,
    },
    /// OPEN → HALF_OPEN: the open period ended.
    OpenElapsed {
        /// How long this open period was configured to last (backoff included).
        open_for: Duration,
    },
    /// HALF_OPEN → CLOSED: `count` probes succeeded (`success_threshold`).
    ProbesSucceeded {
        /// Successful probes.
        count: u32,
    },
    /// HALF_OPEN → OPEN: a probe failed.
    ProbeFailed,
    /// HALF_OPEN → OPEN: a probe succeeded, but took longer than `threshold`
    /// (the spec's `slow_call_duration`).
    ProbeSlow {
        /// The spec's `slow_call_duration` at the time.
        threshold: Duration,
    },
    /// HALF_OPEN → OPEN: a probe went unreported for `permit_ttl`.
    ProbeExpired,
    /// HALF_OPEN → OPEN under the rate rule: failed (or expired) probes reached
    /// `half_open_failure_rate_percent` of the trial.
    ProbeFailureRate {
        /// Probes of the trial that failed or expired.
        failures: u32,
        /// The trial's size (`half_open_permits`).
        probes: u32,
        /// The spec's `half_open_failure_rate_percent`.
        threshold_percent: u32,
    },
    /// HALF_OPEN → OPEN under the rate rule: slow probes reached
    /// `slow_call_rate_percent` of the trial.
    ProbeSlowRate {
        /// Probes of the trial that were slow.
        slow: u32,
        /// The trial's size (`half_open_permits`).
        probes: u32,
        /// The spec's `slow_call_rate_percent`.
        threshold_percent: u32,
    },
    /// HALF_OPEN → CLOSED under the rate rule: every probe of the trial is in and
    /// the failures stayed below `half_open_failure_rate_percent`.
    ProbeTrialPassed {
        /// Probes of the trial that failed or expired.
        failures: u32,
        /// The trial's size (`half_open_permits`).
        probes: u32,
        /// The spec's `half_open_failure_rate_percent`.
        threshold_percent: u32,
    },
    /// HALF_OPEN → OPEN or CLOSED: no probe was taken for `half_open_max_wait`.
    HalfOpenMaxWait {
        /// The spec's `half_open_max_wait`.
        waited: Duration,
        /// Where the spec sends the breaker (`half_open_max_wait_closes`).
        to: State,
    },
    /// An operator set this override.
    OverrideSet(Override),
    /// An operator cleared the override.
    OverrideCleared,
    /// The override an operator set with a duration ran out and cleared itself.
    OverrideExpired(Override),
    /// An operator reset the breaker.
    Reset,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConsecutiveFailures { count: 1 } => f.write_str("1 consecutive failure"),
            Self::ConsecutiveFailures { count } => write!(f, "{count} consecutive failures"),
            Self::FailureRate {
                rate_percent,
                threshold_percent,
                calls,
            } => write!(
                f,
                "failure rate {rate_percent}% >= {threshold_percent}% over {calls} calls"
            ),
            Self::SlowCallRate {
                rate_percent,
                threshold_percent,
                calls,
            } => write!(
                f,
                "slow call rate {rate_percent}% >= {threshold_percent}% over {calls} calls"
            ),
            Self::OpenElapsed { open_for } => write!(f, "open for {}", Human(*open_for)),
            Self::ProbesSucceeded { count: 1 } => f.write_str("1 probe succeeded"),
            Self::ProbesSucceeded { count } => write!(f, "{count} probes succeeded"),
            Self::ProbeFailed => f.write_str("probe failed"),
            Self::ProbeSlow { threshold } => write!(f, "probe slower than {}", Human(*threshold)),
            Self::ProbeExpired => f.write_str("probe expired"),
            Self::ProbeFailureRate {
                failures,
                probes,
                threshold_percent,
            } => write!(
                f,
                "{failures} of {probes} probes failed (>= {threshold_percent}%)"
            ),
            Self::ProbeSlowRate {
                slow,
                probes,
                threshold_percent,
            } => write!(
                f,
                "{slow} of {probes} probes slow (>= {threshold_percent}%)"
            ),
            Self::ProbeTrialPassed {
                failures,
                probes,
                threshold_percent,
            } => write!(
                f,
                "{failures} of {probes} probes failed (< {threshold_percent}%)"
            ),
            Self::HalfOpenMaxWait { waited, to } => write!(
                f,
                "no probe in {} of half-open, back to {}",
                Human(*waited),
                match to {
                    State::Closed => "closed",
                    _ => "open",
                }
            ),
            Self::OverrideSet(o) => f.write_str(match o {
                Override::ForcedOpen => "forced open by operator",
                Override::ForcedClosed => "forced closed by operator",
                Override::Disabled => "disabled by operator",
                Override::Shadow => "shadow mode set by operator",
            }),
            Self::OverrideCleared => f.write_str("override cleared by operator"),
            Self::OverrideExpired(o) => write!(f, "{} override expired", o.as_str()),
            Self::Reset => f.write_str("reset by operator"),
        }
    }
}

/// A duration the way a person writes it: `30s`, `1m30s`, `2h`, `1.5s`, `250ms`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ns = d.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns < 1_000 {
            return write!(f, "{ns}ns");
        }
        if ns < 1_000_000 {
            return decimal(f, ns, 1_000, "µs");
        }
        if ns < 1_000_000_000 {
            return decimal(f, ns, 1_000_000, "ms");
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        let sub = d.subsec_nanos();
        if s > 0 || sub > 0 {
            decimal(
                f,
                u128::from(s) * 1_000_000_000 + u128::from(sub),
                1_000_000_000,
                "s",
            )?;
        }
        Ok(())
    }
}

/// Writes `value / unit` with the fraction's trailing zeros dropped, then `suffix`.
fn decimal(f: &mut fmt::Formatter<'_>, value: u128, unit: u128, suffix: &str) -> fmt::Result {
    write!(f, "{}", value / unit)?;
    let mut frac = value % unit;
    if frac > 0 {
        let mut width = unit.ilog10() as usize;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        write!(f, ".{frac:0width$}")?;
    }
    f.write_str(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human(d: Duration) -> String {
        Human(d).to_string()
    }

    #[test]
    fn formats_durations_for_people() {
        assert_eq!(human(Duration::ZERO), "0s");
        assert_eq!(human(Duration::from_nanos(7)), "7ns");
        assert_eq!(human(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_micros(1_005)), "1.005ms");
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(human(Duration::from_millis(1_050)), "1.05s");
        assert_eq!(human(Duration::from_secs(60)), "1m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
        assert_eq!(human(Duration::from_secs(3661)), "1h1m1s");
        assert_eq!(human(Duration::from_secs(86_400)), "24h");
        assert_eq!(human(Duration::new(60, 1)), "1m0.000000001s");
    }

    #[test]
    fn reasons_read_like_the_design() {
        let cases = [
            (
                Reason::ProbeFailureRate {
                    failures: 2,
                    probes: 4,
                    threshold_percent: 50,
                },
                "2 of 4 probes failed (>= 50%)",
            ),
            (
                Reason::ProbeSlowRate {
                    slow: 3,
                    probes: 4,
                    threshold_percent: 60,
                },
                "3 of 4 probes slow (>= 60%)",
            ),
            (
                Reason::ProbeTrialPassed {
                    failures: 1,
                    probes: 4,
                    threshold_percent: 50,
                },
                "1 of 4 probes failed (< 50%)",
            ),
            (
                Reason::HalfOpenMaxWait {
                    waited: Duration::from_secs(30),
                    to: State::Open,
                },
                "no probe in 30s of half-open, back to open",
            ),
            (
                Reason::HalfOpenMaxWait {
                    waited: Duration::from_secs(90),
                    to: State::Closed,
                },
                "no probe in 1m30s of half-open, back to closed",
            ),
            (
                Reason::ConsecutiveFailures { count: 5 },
                "5 consecutive failures",
            ),
            (
                Reason::ConsecutiveFailures { count: 1 },
                "1 consecutive failure",
            ),
            (
                Reason::FailureRate {
                    rate_percent: 62,
                    threshold_percent: 50,
                    calls: 100,
                },
                "failure rate 62% >= 50% over 100 calls",
            ),
            (
                Reason::SlowCallRate {
                    rate_percent: 60,
                    threshold_percent: 50,
                    calls: 20,
                },
                "slow call rate 60% >= 50% over 20 calls",
            ),
            (
                Reason::OpenElapsed {
                    open_for: Duration::from_secs(30),
                },
                "open for 30s",
            ),
            (
                Reason::OpenElapsed {
                    open_for: Duration::from_secs(120),
                },
                "open for 2m",
            ),
            (Reason::ProbesSucceeded { count: 3 }, "3 probes succeeded"),
            (Reason::ProbesSucceeded { count: 1 }, "1 probe succeeded"),
            (Reason::ProbeFailed, "probe failed"),
            (
                Reason::ProbeSlow {
                    threshold: Duration::from_secs(2),
                },
                "probe slower than 2s",
            ),
            (Reason::ProbeExpired, "probe expired"),
            (
                Reason::OverrideSet(Override::ForcedOpen),
                "forced open by operator",
            ),
            (
                Reason::OverrideSet(Override::ForcedClosed),
                "forced closed by operator",
            ),
            (
                Reason::OverrideSet(Override::Disabled),
                "disabled by operator",
            ),
            (
                Reason::OverrideSet(Override::Shadow),
                "shadow mode set by operator",
            ),
            (Reason::OverrideCleared, "override cleared by operator"),
            (Reason::Reset, "reset by operator"),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text, "{reason:?}");
        }
    }
}
