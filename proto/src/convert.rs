//! Conversions between the wire types and the state machine's types
//! (`cbd-breaker`), shared by the daemon and the Rust client.

use std::time::Duration;

use cbd_breaker::{Error, Fallback, Outcome, Override, Spec, State, Timestamp, WindowSpec};

use crate::v1 as pb;

/// Buckets of a time window when the request leaves `buckets` at 0.
pub const DEFAULT_TIME_WINDOW_BUCKETS: u32 = 10;

/// Most seconds a `google.protobuf.Duration` may hold (about 10,000 years).
pub const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// A wire duration as a `std` duration; `field` names it in the error. Rejects
/// negative values, nanos outside `0..1e9` and seconds past
/// [`MAX_DURATION_SECONDS`]; each field's own bound is checked by its caller.
pub fn duration_from_proto(
    d: &prost_types::Duration,
    field: &'static str,
) -> Result<Duration, Error> {
    let invalid = |reason: &str| Error::InvalidSpec {
        field,
        reason: reason.to_owned(),
    };
    if d.seconds < 0 || d.nanos < 0 {
        return Err(invalid("must not be negative"));
    }
    if d.nanos >= 1_000_000_000 {
        return Err(invalid("nanos must be below 1e9"));
    }
    if d.seconds > MAX_DURATION_SECONDS {
        return Err(invalid(&format!(
            "{} s is beyond the range of google.protobuf.Duration ({MAX_DURATION_SECONDS} s)",
            d.seconds
        )));
    }
    // In range and normalized, so prost-types' conversion cannot fail.
    Duration::try_from(*d).map_err(|e| invalid(&e.to_string()))
}

/// A `std` duration on the wire (saturating at the largest wire duration).
pub fn duration_to_proto(d: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(d).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: d.subsec_nanos() as i32,
    })
}

/// A wire duration for display: negative ones as zero (the daemon sends none).
pub fn std_duration(d: &prost_types::Duration) -> Duration {
    Duration::try_from(*d).unwrap_or_default()
}

/// A state-machine time on the wire.
pub fn timestamp_to_proto(t: Timestamp) -> prost_types::Timestamp {
    t.to_system_time().into()
}

/// A wire time as a state-machine time; times before the epoch become the epoch.
pub fn timestamp_from_proto(t: &prost_types::Timestamp) -> Timestamp {
    std::time::SystemTime::try_from(*t).map_or(Timestamp::from_unix_nanos(0), |st| {
        Timestamp::from_system_time(st)
    })
}

fn opt_duration(
    d: Option<&prost_types::Duration>,
    field: &'static str,
) -> Result<Option<Duration>, Error> {
    d.map(|d| duration_from_proto(d, field)).transpose()
}

/// A wire spec as a validated [`Spec`]: unset fields take their defaults, and every
/// error names the field.
pub fn spec_from_proto(p: &pb::BreakerSpec) -> Result<Spec, Error> {
    let defaults = Spec::default();
    let window = match &p.window {
        None => defaults.window,
        Some(pb::breaker_spec::Window::CountWindow(c)) => WindowSpec::Count { calls: c.calls },
        Some(pb::breaker_spec::Window::TimeWindow(t)) => WindowSpec::Time {
            duration: opt_duration(t.duration.as_ref(), "window.duration")?.unwrap_or_default(),
            buckets: if t.buckets == 0 {
                DEFAULT_TIME_WINDOW_BUCKETS
            } else {
                t.buckets
            },
        },
    };
    let spec = Spec {
        consecutive_failures: p.consecutive_failures,
        failure_rate_percent: p.failure_rate_percent,
        slow_call_rate_percent: p.slow_call_rate_percent,
        slow_call_duration: opt_duration(p.slow_call_duration.as_ref(), "slow_call_duration")?,
        minimum_calls: p.minimum_calls.unwrap_or(defaults.minimum_calls),
        window,
        open_duration: opt_duration(p.open_duration.as_ref(), "open_duration")?
            .unwrap_or(defaults.open_duration),
        max_open_duration: opt_duration(p.max_open_duration.as_ref(), "max_open_duration")?,
        half_open_permits: p.half_open_permits.unwrap_or(defaults.half_open_permits),
        success_threshold: p.success_threshold.unwrap_or(defaults.success_threshold),
        permit_ttl: opt_duration(p.permit_ttl.as_ref(), "permit_ttl")?
            .unwrap_or(defaults.permit_ttl),
        fallback: fallback_from_proto(pb::Fallback::try_from(p.fallback).map_err(|_| {
            Error::InvalidSpec {
                field: "fallback",
                reason: format!("unknown value {}", p.fallback),
            }
        })?),
        cache_ttl: opt_duration(p.cache_ttl.as_ref(), "cache_ttl")?,
        half_open_failure_rate_percent: p.half_open_failure_rate_percent,
        half_open_max_wait: opt_duration(p.half_open_max_wait.as_ref(), "half_open_max_wait")?,
        half_open_max_wait_closes: p.half_open_max_wait_closes,
        slow_includes_failures: p.slow_includes_failures,
        min_distinct_callers: p
            .min_distinct_callers
            .unwrap_or(defaults.min_distinct_callers),
    };
    spec.validate()?;
    Ok(spec)
}

/// A [`Spec`] on the wire with every default filled in.
pub fn spec_to_proto(s: &Spec) -> pb::BreakerSpec {
    let window = match &s.window {
        WindowSpec::Count { calls } => {
            pb::breaker_spec::Window::CountWindow(pb::CountWindow { calls: *calls })
        }
        WindowSpec::Time { duration, buckets } => {
            pb::breaker_spec::Window::TimeWindow(pb::TimeWindow {
                duration: Some(duration_to_proto(*duration)),
                buckets: *buckets,
            })
        }
    };
    pb::BreakerSpec {
        consecutive_failures: s.effective_consecutive_failures(),
        failure_rate_percent: s.failure_rate_percent,
        slow_call_rate_percent: s.slow_call_rate_percent,
        slow_call_duration: s.slow_call_duration.map(duration_to_proto),
        minimum_calls: Some(s.minimum_calls),
        window: Some(window),
        open_duration: Some(duration_to_proto(s.open_duration)),
        max_open_duration: s.max_open_duration.map(duration_to_proto),
        half_open_permits: Some(s.half_open_permits),
        success_threshold: Some(s.success_threshold),
        permit_ttl: Some(duration_to_proto(s.permit_ttl)),
        fallback: fallback_to_proto(s.fallback) as i32,
        cache_ttl: s.cache_ttl.map(duration_to_proto),
        half_open_failure_rate_percent: s.half_open_failure_rate_percent,
        half_open_max_wait: s.half_open_max_wait.map(duration_to_proto),
        half_open_max_wait_closes: s.half_open_max_wait_closes,
        slow_includes_failures: s.slow_includes_failures,
        min_distinct_callers: Some(s.min_distinct_callers),
    }
}

/// The wire form of a breaker's failing callers (`BreakerStatus.failing_callers`):
/// anonymous calls show as `""`, the overflow of callers beyond the cap as `"*"`.
pub fn failing_callers_to_proto(callers: &[cbd_breaker::CallerTally]) -> Vec<pb::CallerFailures> {
    callers
        .iter()
        .map(|t| pb::CallerFailures {
            caller: match &t.caller {
                cbd_breaker::CallerId::Anonymous => String::new(),
                cbd_breaker::CallerId::Named(name) => name.clone(),
                cbd_breaker::CallerId::Overflow => OVERFLOW_CALLER.to_owned(),
            },
            failures: t.failures,
            calls: t.calls,
        })
        .collect()
}

/// How `CallerFailures.caller` names every caller beyond the tracked cap, together.
pub const OVERFLOW_CALLER: &str = "*";

/// The wire form of a state.
pub fn state_to_proto(s: State) -> pb::State {
    match s {
        State::Closed => pb::State::Closed,
        State::Open => pb::State::Open,
        State::HalfOpen => pb::State::HalfOpen,
    }
}

/// A wire state; `None` for `STATE_UNSPECIFIED`.
pub fn state_from_proto(s: pb::State) -> Option<State> {
    match s {
        pb::State::Unspecified => None,
        pb::State::Closed => Some(State::Closed),
        pb::State::Open => Some(State::Open),
        pb::State::HalfOpen => Some(State::HalfOpen),
    }
}

/// The wire form of an override; `None` is `OVERRIDE_UNSPECIFIED`.
pub fn override_to_proto(o: Option<Override>) -> pb::Override {
    match o {
        None => pb::Override::Unspecified,
        Some(Override::ForcedOpen) => pb::Override::ForcedOpen,
        Some(Override::ForcedClosed) => pb::Override::ForcedClosed,
        Some(Override::Disabled) => pb::Override::Disabled,
        Some(Override::Shadow) => pb::Override::Shadow,
    }
}

/// A wire override; `OVERRIDE_UNSPECIFIED` is `None` (no override).
pub fn override_from_proto(o: pb::Override) -> Option<Override> {
    match o {
        pb::Override::Unspecified => None,
        pb::Override::ForcedOpen => Some(Override::ForcedOpen),
        pb::Override::ForcedClosed => Some(Override::ForcedClosed),
        pb::Override::Disabled => Some(Override::Disabled),
        pb::Override::Shadow => Some(Override::Shadow),
    }
}

/// A wire outcome; `None` for `OUTCOME_UNSPECIFIED`.
pub fn outcome_from_proto(o: pb::Outcome) -> Option<Outcome> {
    match o {
        pb::Outcome::Unspecified => None,
        pb::Outcome::Success => Some(Outcome::Success),
        pb::Outcome::Failure => Some(Outcome::Failure),
        pb::Outcome::Ignored => Some(Outcome::Ignored),
    }
}

/// The wire form of an outcome.
pub fn outcome_to_proto(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Success => pb::Outcome::Success,
        Outcome::Failure => pb::Outcome::Failure,
        Outcome::Ignored => pb::Outcome::Ignored,
    }
}

/// A wire fallback policy; unset means fail open.
pub fn fallback_from_proto(f: pb::Fallback) -> Fallback {
    match f {
        pb::Fallback::Unspecified | pb::Fallback::FailOpen => Fallback::FailOpen,
        pb::Fallback::FailClosed => Fallback::FailClosed,
        pb::Fallback::Local => Fallback::Local,
    }
}

/// The wire form of a fallback policy.
pub fn fallback_to_proto(f: Fallback) -> pb::Fallback {
    match f {
        Fallback::FailOpen => pb::Fallback::FailOpen,
        Fallback::FailClosed => pb::Fallback::FailClosed,
        Fallback::Local => pb::Fallback::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_spec_takes_the_defaults() {
        let spec = spec_from_proto(&pb::BreakerSpec::default()).expect("valid");
        assert_eq!(spec, Spec::default());
    }

    #[test]
    fn spec_round_trips_through_the_wire() {
        let spec = Spec {
            failure_rate_percent: Some(50),
            slow_call_rate_percent: Some(40),
            slow_call_duration: Some(Duration::from_millis(250)),
            window: WindowSpec::Time {
                duration: Duration::from_secs(60),
                buckets: 12,
            },
            max_open_duration: Some(Duration::from_secs(300)),
            half_open_permits: 3,
            success_threshold: 2,
            fallback: Fallback::Local,
            cache_ttl: Some(Duration::from_millis(100)),
            half_open_failure_rate_percent: Some(50),
            half_open_max_wait: Some(Duration::from_secs(20)),
            half_open_max_wait_closes: true,
            slow_includes_failures: true,
            ..Spec::default()
        };
        let back = spec_from_proto(&spec_to_proto(&spec)).expect("valid");
        assert_eq!(back, spec);
        assert_eq!(back.failure_rate_percent, Some(50));
        assert_eq!(back.window, spec.window);
        assert_eq!(back.fallback, Fallback::Local);
        assert_eq!(back.cache_ttl, spec.cache_ttl);
        assert_eq!(back.max_open_duration, spec.max_open_duration);
    }

    #[test]
    fn negative_duration_names_the_field() {
        let p = pb::BreakerSpec {
            open_duration: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        };
        match spec_from_proto(&p) {
            Err(Error::InvalidSpec { field, .. }) => assert_eq!(field, "open_duration"),
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn out_of_range_durations_name_the_field() {
        for (seconds, nanos) in [
            (-1, 0),
            (0, -1),
            (0, 1_000_000_000),
            (MAX_DURATION_SECONDS + 1, 0),
            (i64::MAX, 999_999_999),
        ] {
            let d = prost_types::Duration { seconds, nanos };
            match duration_from_proto(&d, "x") {
                Err(Error::InvalidSpec { field, .. }) => assert_eq!(field, "x"),
                other => panic!("{d:?}: expected InvalidSpec, got {other:?}"),
            }
        }
        let max = prost_types::Duration {
            seconds: MAX_DURATION_SECONDS,
            nanos: 999_999_999,
        };
        assert!(duration_from_proto(&max, "x").is_ok());
    }

    #[test]
    fn unknown_fallback_names_the_field() {
        let p = pb::BreakerSpec {
            fallback: 99,
            ..Default::default()
        };
        match spec_from_proto(&p) {
            Err(Error::InvalidSpec { field, .. }) => assert_eq!(field, "fallback"),
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        assert_eq!(timestamp_from_proto(&timestamp_to_proto(t)), t);
    }
}
