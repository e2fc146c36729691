//! A breaker's configuration: [`Spec`], its defaults and its validation.

use std::time::Duration;

use crate::Error;

/// `consecutive_failures` when no trip condition at all is set (docs/DESIGN.md §3).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Upper bound of `open_duration`, `max_open_duration` and `permit_ttl`: 24 h.
pub const MAX_OPEN_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Upper bound of `slow_call_duration`: 1 h.
pub const MAX_SLOW_CALL_DURATION: Duration = Duration::from_secs(3600);
/// Upper bound of `cache_ttl`: 60 s.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
/// Upper bound of a count window's `calls` (one byte of memory each).
pub const MAX_WINDOW_CALLS: u32 = 100_000;
/// Upper bound of a time window's `buckets`.
pub const MAX_WINDOW_BUCKETS: u32 = 1000;
/// Upper bound of a time window's `duration`: 24 h.
pub const MAX_WINDOW_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Lower bound of a time window's bucket length (`duration / buckets`): 1 ms.
pub const MIN_BUCKET_DURATION: Duration = Duration::from_millis(1);
/// Upper bound of `half_open_permits` (the probe table is allocated up front).
pub const MAX_HALF_OPEN_PERMITS: u32 = 1000;

/// What a client does when the daemon is unreachable.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fallback {
    /// Allow the call (default): the breaker must never be the outage.
    #[default]
    FailOpen,
    /// Reject the call.
    FailClosed,
    /// Run this crate's machine locally, in-process, until the daemon is back.
    Local,
}

/// The window that rate conditions are computed over.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum WindowSpec {
    /// The last `calls` counted outcomes. Default: `Count { calls: 100 }`.
    Count {
        /// Outcomes kept: 1 to [`MAX_WINDOW_CALLS`].
        calls: u32,
    },
    /// The outcomes of the last `duration`, kept in `buckets` buckets of
    /// `duration / buckets` each; whole buckets fall out as time passes.
    Time {
        /// Span of the window, at least [`MIN_BUCKET_DURATION`] per bucket.
        duration: Duration,
        /// Number of buckets: 1 to [`MAX_WINDOW_BUCKETS`].
        buckets: u32,
    },
}

impl Default for WindowSpec {
    fn default() -> Self {
        Self::Count { calls: 100 }
    }
}

/// A breaker's configuration (docs/DESIGN.md §3). Every field has a default; see
/// [`Spec::validate`] for the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Trip after this many failures in a row. `None` = off, except that when no trip
    /// condition at all is set, [`DEFAULT_CONSECUTIVE_FAILURES`] applies
    /// (see [`Spec::effective_consecutive_failures`]). Default `None`.
    pub consecutive_failures: Option<u32>,
    /// Trip when this percentage (1..=100) of the window's calls failed. `None` = off.
    /// Default `None`.
    pub failure_rate_percent: Option<u32>,
    /// Trip when this percentage (1..=100) of the window's calls were slow successes.
    /// Requires `slow_call_duration`. `None` = off. Default `None`.
    pub slow_call_rate_percent: Option<u32>,
    /// A success that took longer than this is slow (up to 1 h). Only used with
    /// `slow_call_rate_percent`; then a slow probe also re-opens a half-open breaker.
    /// Default `None`.
    pub slow_call_duration: Option<Duration>,
    /// Rate conditions are only evaluated once the window holds at least this many
    /// counted outcomes. Default 10.
    pub minimum_calls: u32,
    /// The window rates are computed over. Default `Count { calls: 100 }`.
    pub window: WindowSpec,
    /// How long a tripped breaker stays open before probing (up to 24 h). Default 30 s.
    pub open_duration: Duration,
    /// `None` = no backoff (default): every open period lasts `open_duration`.
    /// `Some(max)`: the n-th re-open in a row (a failed half-open trial) lasts
    /// `open_duration * 2^n`, capped at `max` (at least `open_duration`, up to 24 h).
    pub max_open_duration: Option<Duration>,
    /// Most probes in flight at once while half-open (1..=1000). Default 1.
    pub half_open_permits: u32,
    /// Probe successes that close a half-open breaker (1..=`half_open_permits`).
    /// Default 1.
    pub success_threshold: u32,
    /// A half-open probe not reported within this counts as a failure, and its slot
    /// is freed (up to 24 h). Default 10 s.
    pub permit_ttl: Duration,
    /// How a half-open trial is judged. `None` (default): any failed or slow probe
    /// re-opens at once, and `success_threshold` successes close. `Some(pct)`
    /// (1..=100, resilience4j's rule): the trial is `half_open_permits` probes; it
    /// re-opens as soon as failures reach `pct` percent of them (or slow successes
    /// reach `slow_call_rate_percent`, with a slow-call condition) and closes when all
    /// of them are in otherwise. `success_threshold` is then unused; an ignored probe
    /// frees its place for another, an expired one counts as a failure
    /// (docs/DESIGN.md §3.1).
    pub half_open_failure_rate_percent: Option<u32>,
    /// `None` (default): HALF_OPEN waits for its first probe as long as it takes.
    /// `Some(d)` (up to 24 h, resilience4j's `maxWaitDurationInHalfOpenState`): a
    /// breaker HALF_OPEN for `d` with no probe taken goes back to OPEN (or CLOSED,
    /// with `half_open_max_wait_closes`).
    pub half_open_max_wait: Option<Duration>,
    /// Where `half_open_max_wait` sends a breaker: OPEN (`false`, default; the same
    /// backoff level, since nothing failed) or CLOSED (`true`).
    pub half_open_max_wait_closes: bool,
    /// Whether a failure slower than `slow_call_duration` also counts as a slow call
    /// (resilience4j counts it). Default `false`: only slow successes are slow. Such a
    /// breaker is not leased: lease outcomes carry the slowness of successes only.
    pub slow_includes_failures: bool,
    /// What a client does when the daemon is unreachable. Default `FailOpen`.
    pub fallback: Fallback,
    /// `None` = off (default). `Some(ttl)`: a CLOSED answer may be reused by the
    /// client until `now + ttl` without asking again (up to 60 s).
    pub cache_ttl: Option<Duration>,
    /// The consecutive-failure and failure-rate conditions trip only when the
    /// failures they count come from at least this many distinct callers
    /// (1..=[`MAX_CALLERS`](crate::MAX_CALLERS)): for `consecutive_failures`, the
    /// callers among the failures of the current run; for `failure_rate_percent`, the
    /// callers with a failure in the window. Calls without a caller count as one
    /// caller, and so do all callers beyond the tracked cap. The slow-call rate is
    /// not gated. Default 1: any failures trip, as without callers.
    pub min_distinct_callers: u32,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            consecutive_failures: None,
            failure_rate_percent: None,
            slow_call_rate_percent: None,
            slow_call_duration: None,
            minimum_calls: 10,
            window: WindowSpec::default(),
            open_duration: Duration::from_secs(30),
            max_open_duration: None,
            half_open_permits: 1,
            success_threshold: 1,
            permit_ttl: Duration::from_secs(10),
            half_open_failure_rate_percent: None,
            half_open_max_wait: None,
            half_open_max_wait_closes: false,
            slow_includes_failures: false,
            fallback: Fallback::default(),
            cache_ttl: None,
            min_distinct_callers: 1,
        }
    }
}

impl Spec {
    /// The consecutive-failure threshold in force: the field if set, else
    /// [`DEFAULT_CONSECUTIVE_FAILURES`] when no rate condition is set either, else `None`.
    pub fn effective_consecutive_failures(&self) -> Option<u32> {
        match self.consecutive_failures {
            Some(n) => Some(n),
            None if self.failure_rate_percent.is_none()
                && self.slow_call_rate_percent.is_none() =>
            {
                Some(DEFAULT_CONSECUTIVE_FAILURES)
            }
            None => None,
        }
    }

    /// The duration above which a success is slow, when a slow-call condition is set
    /// (both `slow_call_rate_percent` and `slow_call_duration`); else `None`.
    pub fn slow_call_threshold(&self) -> Option<Duration> {
        self.slow_call_rate_percent.and(self.slow_call_duration)
    }

    /// How long the breaker stays open when it trips at `backoff_level`:
    /// `open_duration * 2^backoff_level` capped at `max_open_duration`, or just
    /// `open_duration` when `max_open_duration` is `None`.
    pub fn open_duration_at(&self, backoff_level: u32) -> Duration {
        let Some(max) = self.max_open_duration else {
            return self.open_duration;
        };
        1u32.checked_shl(backoff_level)
            .and_then(|factor| self.open_duration.checked_mul(factor))
            .map_or(max, |d| d.min(max))
    }

    /// Checks every rule; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), Error> {
        if self.consecutive_failures == Some(0) {
            return invalid("consecutive_failures", "must be at least 1");
        }
        percent("failure_rate_percent", self.failure_rate_percent)?;
        percent("slow_call_rate_percent", self.slow_call_rate_percent)?;
        match self.slow_call_duration {
            None if self.slow_call_rate_percent.is_some() => {
                return invalid("slow_call_duration", "required by slow_call_rate_percent");
            }
            Some(d) => duration("slow_call_duration", d, MAX_SLOW_CALL_DURATION)?,
            None => {}
        }
        if self.minimum_calls == 0 {
            return invalid("minimum_calls", "must be at least 1");
        }
        self.validate_window()?;
        duration("open_duration", self.open_duration, MAX_OPEN_DURATION)?;
        if let Some(max) = self.max_open_duration {
            if max < self.open_duration {
                return invalid(
                    "max_open_duration",
                    format!(
                        "{max:?} is shorter than open_duration {:?}",
                        self.open_duration
                    ),
                );
            }
            duration("max_open_duration", max, MAX_OPEN_DURATION)?;
        }
        if !(1..=MAX_HALF_OPEN_PERMITS).contains(&self.half_open_permits) {
            return invalid(
                "half_open_permits",
                format!(
                    "{} is not in 1..={MAX_HALF_OPEN_PERMITS}",
                    self.half_open_permits
                ),
            );
        }
        if !(1..=self.half_open_permits).contains(&self.success_threshold) {
            return invalid(
                "success_threshold",
                format!(
                    "{} is not in 1..=half_open_permits ({})",
                    self.success_threshold, self.half_open_permits
                ),
            );
        }
        duration("permit_ttl", self.permit_ttl, MAX_OPEN_DURATION)?;
        percent(
            "half_open_failure_rate_percent",
            self.half_open_failure_rate_percent,
        )?;
        match self.half_open_max_wait {
            Some(d) => duration("half_open_max_wait", d, MAX_OPEN_DURATION)?,
            None if self.half_open_max_wait_closes => {
                return invalid("half_open_max_wait_closes", "needs half_open_max_wait");
            }
            None => {}
        }
        if self.slow_includes_failures && self.slow_call_threshold().is_none() {
            return invalid(
                "slow_includes_failures",
                "needs a slow-call condition (slow_call_rate_percent and slow_call_duration)",
            );
        }
        if let Some(ttl) = self.cache_ttl {
            duration("cache_ttl", ttl, MAX_CACHE_TTL)?;
        }
        if !(1..=crate::MAX_CALLERS as u32).contains(&self.min_distinct_callers) {
            return invalid(
                "min_distinct_callers",
                format!(
                    "{} is not in 1..={}",
                    self.min_distinct_callers,
                    crate::MAX_CALLERS
                ),
            );
        }
        Ok(())
    }

    fn validate_window(&self) -> Result<(), Error> {
        match self.window {
            WindowSpec::Count { calls } => {
                if !(1..=MAX_WINDOW_CALLS).contains(&calls) {
                    return invalid(
                        "window.calls",
                        format!("{calls} is not in 1..={MAX_WINDOW_CALLS}"),
                    );
                }
                // A count window never holds more than `calls`, so a rate condition
                // with a larger minimum could never fire.
                let rates =
                    self.failure_rate_percent.is_some() || self.slow_call_rate_percent.is_some();
                if rates && self.minimum_calls > calls {
                    return invalid(
                        "minimum_calls",
                        format!(
                            "{} is more than window.calls ({calls}), so the rate conditions could never fire",
                            self.minimum_calls
                        ),
                    );
                }
            }
            WindowSpec::Time { duration, buckets } => {
                if duration.is_zero() {
                    return invalid("window.duration", "must be more than zero");
                }
                if duration > MAX_WINDOW_DURATION {
                    return invalid(
                        "window.duration",
                        format!("{duration:?} is longer than {MAX_WINDOW_DURATION:?}"),
                    );
                }
                if !(1..=MAX_WINDOW_BUCKETS).contains(&buckets) {
                    return invalid(
                        "window.buckets",
                        format!("{buckets} is not in 1..={MAX_WINDOW_BUCKETS}"),
                    );
                }
                if duration / buckets < MIN_BUCKET_DURATION {
                    return invalid(
                        "window.buckets",
                        format!(
                            "{buckets} buckets over {duration:?} are shorter than {MIN_BUCKET_DURATION:?} each"
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Result<(), Error> {
    Err(Error::InvalidSpec {
        field,
        reason: reason.into(),
    })
}

fn percent(field: &'static str, value: Option<u32>) -> Result<(), Error> {
    match value {
        Some(p) if !(1..=100).contains(&p) => invalid(field, format!("{p} is not in 1..=100")),
        _ => Ok(()),
    }
}

fn duration(field: &'static str, d: Duration, max: Duration) -> Result<(), Error> {
    if d.is_zero() {
        invalid(field, "must be more than zero")
    } else if d > max {
        invalid(field, format!("{d:?} is longer than {max:?}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The field `validate` blames for `spec`.
    fn field(spec: Spec) -> &'static str {
        match spec.validate() {
            Err(Error::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec for {spec:?}, got {other:?}"),
        }
    }

    fn with(change: impl FnOnce(&mut Spec)) -> Spec {
        let mut spec = Spec::default();
        change(&mut spec);
        spec
    }

    #[test]
    fn defaults_are_documented_values_and_valid() {
        let s = Spec::default();
        s.validate().unwrap();
        assert_eq!(s.consecutive_failures, None);
        assert_eq!(s.effective_consecutive_failures(), Some(5));
        assert_eq!(s.minimum_calls, 10);
        assert_eq!(s.window, WindowSpec::Count { calls: 100 });
        assert_eq!(s.open_duration, 30 * S);
        assert_eq!(s.max_open_duration, None);
        assert_eq!(s.half_open_permits, 1);
        assert_eq!(s.success_threshold, 1);
        assert_eq!(s.permit_ttl, 10 * S);
        assert_eq!(s.fallback, Fallback::FailOpen);
        assert_eq!(s.cache_ttl, None);
        assert_eq!(s.min_distinct_callers, 1);
    }

    #[test]
    fn default_consecutive_failures_only_without_other_conditions() {
        assert_eq!(
            with(|s| s.consecutive_failures = Some(2)).effective_consecutive_failures(),
            Some(2)
        );
        assert_eq!(
            with(|s| s.failure_rate_percent = Some(50)).effective_consecutive_failures(),
            None
        );
        let slow = with(|s| {
            s.slow_call_rate_percent = Some(50);
            s.slow_call_duration = Some(S);
        });
        assert_eq!(slow.effective_consecutive_failures(), None);
        let both = with(|s| {
            s.failure_rate_percent = Some(50);
            s.consecutive_failures = Some(3);
        });
        assert_eq!(both.effective_consecutive_failures(), Some(3));
    }

    #[test]
    fn slow_call_threshold_needs_both_fields() {
        assert_eq!(
            with(|s| s.slow_call_duration = Some(S)).slow_call_threshold(),
            None
        );
        let slow = with(|s| {
            s.slow_call_rate_percent = Some(50);
            s.slow_call_duration = Some(S);
        });
        assert_eq!(slow.slow_call_threshold(), Some(S));
    }

    #[test]
    fn open_duration_backs_off_up_to_the_cap() {
        let fixed = with(|s| s.open_duration = 10 * S);
        assert_eq!(fixed.open_duration_at(0), 10 * S);
        assert_eq!(fixed.open_duration_at(5), 10 * S);
        let backoff = with(|s| {
            s.open_duration = 10 * S;
            s.max_open_duration = Some(60 * S);
        });
        assert_eq!(backoff.open_duration_at(0), 10 * S);
        assert_eq!(backoff.open_duration_at(1), 20 * S);
        assert_eq!(backoff.open_duration_at(2), 40 * S);
        assert_eq!(backoff.open_duration_at(3), 60 * S);
        assert_eq!(backoff.open_duration_at(40), 60 * S);
        assert_eq!(backoff.open_duration_at(u32::MAX), 60 * S);
    }

    #[test]
    fn accepts_edge_values() {
        with(|s| {
            s.consecutive_failures = Some(1);
            s.failure_rate_percent = Some(100);
            s.slow_call_rate_percent = Some(1);
            s.slow_call_duration = Some(MAX_SLOW_CALL_DURATION);
            s.minimum_calls = 1;
            s.window = WindowSpec::Count {
                calls: MAX_WINDOW_CALLS,
            };
            s.open_duration = MAX_OPEN_DURATION;
            s.max_open_duration = Some(MAX_OPEN_DURATION);
            s.half_open_permits = MAX_HALF_OPEN_PERMITS;
            s.success_threshold = MAX_HALF_OPEN_PERMITS;
            s.permit_ttl = MAX_OPEN_DURATION;
            s.cache_ttl = Some(MAX_CACHE_TTL);
        })
        .validate()
        .unwrap();
        with(|s| {
            s.window = WindowSpec::Time {
                duration: S,
                buckets: 1000,
            };
        })
        .validate()
        .unwrap();
        // Without a rate condition the minimum is unused, so it may exceed the window.
        with(|s| s.window = WindowSpec::Count { calls: 5 })
            .validate()
            .unwrap();
        // A slow-call duration alone is harmless.
        with(|s| s.slow_call_duration = Some(S)).validate().unwrap();
    }

    #[test]
    fn consecutive_failures_zero() {
        assert_eq!(
            field(with(|s| s.consecutive_failures = Some(0))),
            "consecutive_failures"
        );
    }

    #[test]
    fn failure_rate_out_of_range() {
        assert_eq!(
            field(with(|s| s.failure_rate_percent = Some(0))),
            "failure_rate_percent"
        );
        assert_eq!(
            field(with(|s| s.failure_rate_percent = Some(101))),
            "failure_rate_percent"
        );
    }

    #[test]
    fn slow_call_rate_out_of_range() {
        for p in [0, 101] {
            let spec = with(|s| {
                s.slow_call_rate_percent = Some(p);
                s.slow_call_duration = Some(S);
            });
            assert_eq!(field(spec), "slow_call_rate_percent");
        }
    }

    #[test]
    fn slow_call_rate_without_duration() {
        assert_eq!(
            field(with(|s| s.slow_call_rate_percent = Some(50))),
            "slow_call_duration"
        );
    }

    #[test]
    fn slow_call_duration_zero_or_too_long() {
        assert_eq!(
            field(with(|s| s.slow_call_duration = Some(Duration::ZERO))),
            "slow_call_duration"
        );
        let long = MAX_SLOW_CALL_DURATION + Duration::from_nanos(1);
        assert_eq!(
            field(with(|s| s.slow_call_duration = Some(long))),
            "slow_call_duration"
        );
    }

    #[test]
    fn minimum_calls_zero() {
        assert_eq!(field(with(|s| s.minimum_calls = 0)), "minimum_calls");
    }

    #[test]
    fn minimum_calls_beyond_count_window_with_rate_condition() {
        let spec = with(|s| {
            s.failure_rate_percent = Some(50);
            s.window = WindowSpec::Count { calls: 5 };
            s.minimum_calls = 6;
        });
        assert_eq!(field(spec), "minimum_calls");
    }

    #[test]
    fn window_calls_zero_or_too_many() {
        assert_eq!(
            field(with(|s| s.window = WindowSpec::Count { calls: 0 })),
            "window.calls"
        );
        let many = WindowSpec::Count {
            calls: MAX_WINDOW_CALLS + 1,
        };
        assert_eq!(field(with(|s| s.window = many)), "window.calls");
    }

    #[test]
    fn window_duration_zero() {
        let w = WindowSpec::Time {
            duration: Duration::ZERO,
            buckets: 10,
        };
        assert_eq!(field(with(|s| s.window = w)), "window.duration");
    }

    #[test]
    fn window_duration_too_long() {
        let w = WindowSpec::Time {
            duration: MAX_WINDOW_DURATION + S,
            buckets: 10,
        };
        assert_eq!(field(with(|s| s.window = w)), "window.duration");
        let max = WindowSpec::Time {
            duration: MAX_WINDOW_DURATION,
            buckets: 10,
        };
        with(|s| s.window = max).validate().unwrap();
    }

    #[test]
    fn window_buckets_zero_too_many_or_too_short() {
        for buckets in [0, MAX_WINDOW_BUCKETS + 1] {
            let w = WindowSpec::Time {
                duration: 60 * S,
                buckets,
            };
            assert_eq!(field(with(|s| s.window = w)), "window.buckets", "{buckets}");
        }
        // 10 ms over 11 buckets is under 1 ms each.
        let w = WindowSpec::Time {
            duration: Duration::from_millis(10),
            buckets: 11,
        };
        assert_eq!(field(with(|s| s.window = w)), "window.buckets");
    }

    #[test]
    fn open_duration_zero_or_too_long() {
        assert_eq!(
            field(with(|s| s.open_duration = Duration::ZERO)),
            "open_duration"
        );
        let long = MAX_OPEN_DURATION + S;
        let spec = with(|s| s.open_duration = long);
        assert_eq!(field(spec), "open_duration");
    }

    #[test]
    fn max_open_duration_shorter_than_open_duration_or_too_long() {
        let spec = with(|s| {
            s.open_duration = 10 * S;
            s.max_open_duration = Some(9 * S);
        });
        assert_eq!(field(spec), "max_open_duration");
        let spec = with(|s| s.max_open_duration = Some(MAX_OPEN_DURATION + S));
        assert_eq!(field(spec), "max_open_duration");
    }

    #[test]
    fn half_open_permits_zero_or_too_many() {
        assert_eq!(
            field(with(|s| s.half_open_permits = 0)),
            "half_open_permits"
        );
        let spec = with(|s| s.half_open_permits = MAX_HALF_OPEN_PERMITS + 1);
        assert_eq!(field(spec), "half_open_permits");
    }

    #[test]
    fn success_threshold_zero_or_above_permits() {
        assert_eq!(
            field(with(|s| s.success_threshold = 0)),
            "success_threshold"
        );
        let spec = with(|s| {
            s.half_open_permits = 2;
            s.success_threshold = 3;
        });
        assert_eq!(field(spec), "success_threshold");
    }

    #[test]
    fn permit_ttl_zero_or_too_long() {
        assert_eq!(field(with(|s| s.permit_ttl = Duration::ZERO)), "permit_ttl");
        assert_eq!(
            field(with(|s| s.permit_ttl = MAX_OPEN_DURATION + S)),
            "permit_ttl"
        );
    }

    #[test]
    fn half_open_compatibility_knobs_are_checked() {
        assert_eq!(
            field(with(|s| s.half_open_failure_rate_percent = Some(0))),
            "half_open_failure_rate_percent"
        );
        assert_eq!(
            field(with(|s| s.half_open_failure_rate_percent = Some(101))),
            "half_open_failure_rate_percent"
        );
        assert_eq!(
            field(with(|s| s.half_open_max_wait = Some(Duration::ZERO))),
            "half_open_max_wait"
        );
        assert_eq!(
            field(with(|s| s.half_open_max_wait = Some(MAX_OPEN_DURATION + S))),
            "half_open_max_wait"
        );
        assert_eq!(
            field(with(|s| s.half_open_max_wait_closes = true)),
            "half_open_max_wait_closes"
        );
        with(|s| {
            s.half_open_failure_rate_percent = Some(50);
            s.half_open_max_wait = Some(MAX_OPEN_DURATION);
            s.half_open_max_wait_closes = true;
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn slow_failures_need_a_slow_call_condition() {
        assert_eq!(
            field(with(|s| {
                s.slow_includes_failures = true;
                s.slow_call_duration = Some(S);
            })),
            "slow_includes_failures"
        );
        with(|s| {
            s.slow_includes_failures = true;
            s.slow_call_duration = Some(S);
            s.slow_call_rate_percent = Some(50);
        })
        .validate()
        .unwrap();
    }

    #[test]
    fn cache_ttl_zero_or_too_long() {
        assert_eq!(
            field(with(|s| s.cache_ttl = Some(Duration::ZERO))),
            "cache_ttl"
        );
        assert_eq!(field(with(|s| s.cache_ttl = Some(61 * S))), "cache_ttl");
    }

    #[test]
    fn min_distinct_callers_zero_or_above_the_cap() {
        for n in [0, crate::MAX_CALLERS as u32 + 1] {
            assert_eq!(
                field(with(|s| s.min_distinct_callers = n)),
                "min_distinct_callers"
            );
        }
        with(|s| s.min_distinct_callers = crate::MAX_CALLERS as u32)
            .validate()
            .unwrap();
    }

    #[test]
    fn reason_is_readable() {
        let err = with(|s| s.failure_rate_percent = Some(101))
            .validate()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid spec: failure_rate_percent: 101 is not in 1..=100"
        );
    }
}
