//! The flat, human-written form of a spec: the keys of `cbctl put`'s flags in
//! snake_case, as used by `cbctl apply` files and the daemon's `[[template]]` tables.
//!
//! ```toml
//! consecutive_failures = 4
//! failure_rate = 50
//! open_duration = "30s"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{convert::duration_to_proto, v1 as pb};

/// The key a person writes (a `cbctl put` flag in snake_case, an apply-file or
/// `[[template]]` key) for a field of the state machine's spec, as its errors name it
/// (`failure_rate_percent` is written `failure_rate`).
pub fn key_of(field: &str) -> &str {
    match field {
        "failure_rate_percent" => "failure_rate",
        "slow_call_rate_percent" => "slow_call_rate",
        "window.calls" => "window_calls",
        "window.duration" => "window_duration",
        "window.buckets" => "window_buckets",
        other => other,
    }
}

/// A spec error in the words of the keys (`failure_rate: ...`).
pub fn spec_error(e: &cbd_breaker::Error) -> String {
    match e {
        cbd_breaker::Error::InvalidSpec { field, reason } => {
            format!("{}: {reason}", key_of(field))
        }
        other => other.to_string(),
    }
}

/// Every spec key; unset keys take the spec's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFields {
    /// Trip after this many failures in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Trip at this failure percentage (1-100) over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<u32>,
    /// Trip at this slow-call percentage (1-100) over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call_rate: Option<u32>,
    /// A success slower than this is a slow call ("2s", "500ms").
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_call_duration: Option<Duration>,
    /// Outcomes needed in the window before rates count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_calls: Option<u32>,
    /// Count-based window: the last N outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_calls: Option<u32>,
    /// Time-based window: the last D.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub window_duration: Option<Duration>,
    /// Buckets of a time-based window (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_buckets: Option<u32>,
    /// How long the breaker stays open.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub open_duration: Option<Duration>,
    /// Cap of the exponential backoff of the open duration.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_open_duration: Option<Duration>,
    /// Half-open probes in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_permits: Option<u32>,
    /// Probe successes that close the breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    /// An unreported probe counts as a failure after this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub permit_ttl: Option<Duration>,
    /// When the daemon is unreachable: "open", "closed" or "local".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackName>,
    /// Cacheable CLOSED answers for this long.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_ttl: Option<Duration>,
}

/// The fallback policy as people write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackName {
    /// Allow calls.
    Open,
    /// Reject calls.
    Closed,
    /// Run a local breaker.
    Local,
}

impl SpecFields {
    /// The wire spec; a window given both ways is an error naming both keys.
    pub fn to_proto(&self) -> Result<pb::BreakerSpec, String> {
        let window = match (self.window_calls, self.window_duration) {
            (Some(_), Some(_)) => {
                return Err("window_calls and window_duration are exclusive: pick one".into());
            }
            (Some(calls), None) => Some(pb::breaker_spec::Window::CountWindow(pb::CountWindow {
                calls,
            })),
            (None, Some(d)) => Some(pb::breaker_spec::Window::TimeWindow(pb::TimeWindow {
                duration: Some(duration_to_proto(d)),
                buckets: self.window_buckets.unwrap_or(0),
            })),
            (None, None) if self.window_buckets.is_some() => {
                return Err("window_buckets needs window_duration".into());
            }
            (None, None) => None,
        };
        Ok(pb::BreakerSpec {
            consecutive_failures: self.consecutive_failures,
            failure_rate_percent: self.failure_rate,
            slow_call_rate_percent: self.slow_call_rate,
            slow_call_duration: self.slow_call_duration.map(duration_to_proto),
            minimum_calls: self.minimum_calls,
            window,
            open_duration: self.open_duration.map(duration_to_proto),
            max_open_duration: self.max_open_duration.map(duration_to_proto),
            half_open_permits: self.half_open_permits,
            success_threshold: self.success_threshold,
            permit_ttl: self.permit_ttl.map(duration_to_proto),
            fallback: match self.fallback {
                None => pb::Fallback::Unspecified,
                Some(FallbackName::Open) => pb::Fallback::FailOpen,
                Some(FallbackName::Closed) => pb::Fallback::FailClosed,
                Some(FallbackName::Local) => pb::Fallback::Local,
            } as i32,
            cache_ttl: self.cache_ttl.map(duration_to_proto),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_keys() {
        let fields: SpecFields = toml::from_str(
            r#"
            consecutive_failures = 4
            failure_rate = 50
            open_duration = "30s"
            window_duration = "1m"
            fallback = "local"
            "#,
        )
        .expect("valid toml");
        let spec = fields.to_proto().expect("valid");
        assert_eq!(spec.consecutive_failures, Some(4));
        assert_eq!(spec.failure_rate_percent, Some(50));
        assert_eq!(spec.open_duration.map(|d| d.seconds), Some(30));
        assert_eq!(spec.fallback(), pb::Fallback::Local);
        assert!(matches!(
            spec.window,
            Some(pb::breaker_spec::Window::TimeWindow(_))
        ));
    }

    #[test]
    fn unknown_keys_and_double_windows_are_errors() {
        assert!(toml::from_str::<SpecFields>("failure_rat = 5").is_err());
        let both = SpecFields {
            window_calls: Some(10),
            window_duration: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert!(both.to_proto().unwrap_err().contains("window_calls"));
    }
}
