//! The dashboard's wire shapes: breakers and events as the page reads them (enum
//! names without their proto prefix, times as Unix milliseconds), and errors.

use axum::response::{IntoResponse, Response};
use cbd_proto::v1 as pb;
use serde::Serialize;

use crate::error::Error;

/// One breaker's status.
#[derive(Debug, Serialize)]
pub struct Breaker {
    pub name: String,
    /// `CLOSED`, `OPEN` or `HALF_OPEN`.
    pub state: &'static str,
    /// `FORCED_OPEN`, `FORCED_CLOSED`, `DISABLED`, `SHADOW`, or absent.
    #[serde(rename = "override")]
    pub override_: Option<&'static str>,
    pub generation: u64,
    pub window_calls: u32,
    pub window_failures: u32,
    pub window_slow_calls: u32,
    pub consecutive_failures: u32,
    /// While OPEN: when it may move to HALF_OPEN.
    pub open_until_unix_ms: Option<i64>,
    pub backoff_level: u32,
    pub probes_in_flight: u32,
    pub half_open_successes: u32,
    pub mod_revision: u64,
}

/// One committed event, with the breaker's status when it was sent (absent once
/// the breaker is deleted).
#[derive(Debug, Serialize)]
pub struct Event {
    pub revision: u64,
    pub name: String,
    /// `STATE_CHANGED`, `SPEC_PUT`, `DELETED`, `OVERRIDE_SET`, `OVERRIDE_CLEARED`,
    /// `RESET`.
    pub kind: &'static str,
    pub previous_state: Option<&'static str>,
    pub state: Option<&'static str>,
    #[serde(rename = "override")]
    pub override_: Option<&'static str>,
    pub generation: u64,
    pub reason: String,
    pub time_unix_ms: Option<i64>,
    pub breaker: Option<Breaker>,
}

/// An error answer: the gRPC code's name (what to branch on) and the message.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

fn state(value: i32) -> Option<&'static str> {
    match pb::State::try_from(value).ok()? {
        pb::State::Unspecified => None,
        s => s.as_str_name().strip_prefix("STATE_"),
    }
}

fn override_(value: i32) -> Option<&'static str> {
    match pb::Override::try_from(value).ok()? {
        pb::Override::Unspecified => None,
        o => o.as_str_name().strip_prefix("OVERRIDE_"),
    }
}

fn unix_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}

impl From<pb::BreakerStatus> for Breaker {
    fn from(b: pb::BreakerStatus) -> Self {
        Self {
            state: state(b.state).unwrap_or("CLOSED"),
            override_: override_(b.r#override),
            generation: b.generation,
            window_calls: b.window_calls,
            window_failures: b.window_failures,
            window_slow_calls: b.window_slow_calls,
            consecutive_failures: b.consecutive_failures,
            open_until_unix_ms: b.open_until.as_ref().map(unix_ms),
            backoff_level: b.backoff_level,
            probes_in_flight: b.probes_in_flight,
            half_open_successes: b.half_open_successes,
            mod_revision: b.mod_revision,
            name: b.name,
        }
    }
}

impl Event {
    /// `event` with `breaker`, the status to show with it.
    pub fn new(event: pb::Event, breaker: Option<pb::BreakerStatus>) -> Self {
        Self {
            revision: event.revision,
            kind: pb::EventKind::try_from(event.kind)
                .ok()
                .and_then(|k| k.as_str_name().strip_prefix("EVENT_KIND_"))
                .unwrap_or("UNSPECIFIED"),
            previous_state: state(event.previous_state),
            state: state(event.state),
            override_: override_(event.r#override),
            generation: event.generation,
            reason: event.reason,
            time_unix_ms: event.time.as_ref().map(unix_ms),
            breaker: breaker.map(Breaker::from),
            name: event.name,
        }
    }
}

/// The HTTP status for a gRPC code, so that the page and scripts can branch on
/// either.
pub fn http_status(code: tonic::Code) -> http::StatusCode {
    use http::StatusCode as H;
    use tonic::Code as C;
    match code {
        C::Ok => H::OK,
        C::InvalidArgument => H::BAD_REQUEST,
        // Only a compacted revision: what was asked for is gone for good.
        C::OutOfRange => H::GONE,
        C::NotFound => H::NOT_FOUND,
        C::Unauthenticated => H::UNAUTHORIZED,
        C::PermissionDenied => H::FORBIDDEN,
        C::ResourceExhausted => H::TOO_MANY_REQUESTS,
        C::FailedPrecondition => H::CONFLICT,
        C::Unavailable => H::SERVICE_UNAVAILABLE,
        C::DeadlineExceeded => H::GATEWAY_TIMEOUT,
        _ => H::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        let body = ErrorBody {
            code: code_name(code),
            message: self.to_string(),
        };
        (http_status(code), axum::Json(body)).into_response()
    }
}

/// The gRPC code's canonical name (`NOT_FOUND`).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_the_page_expects() {
        let b = Breaker::from(pb::BreakerStatus {
            name: "a/b".into(),
            state: pb::State::HalfOpen as i32,
            r#override: pb::Override::ForcedClosed as i32,
            open_until: Some(prost_types::Timestamp {
                seconds: 2,
                nanos: 345_000_000,
            }),
            ..Default::default()
        });
        assert_eq!(b.state, "HALF_OPEN");
        assert_eq!(b.override_, Some("FORCED_CLOSED"));
        assert_eq!(b.open_until_unix_ms, Some(2345));
        let none = Breaker::from(pb::BreakerStatus::default());
        assert_eq!(none.override_, None);
        assert_eq!(none.open_until_unix_ms, None);
        let e = Event::new(
            pb::Event {
                revision: 7,
                kind: pb::EventKind::StateChanged as i32,
                previous_state: pb::State::Closed as i32,
                state: pb::State::Open as i32,
                reason: "5 consecutive failures".into(),
                ..Default::default()
            },
            None,
        );
        let json = serde_json::to_value(&e).expect("serialises");
        assert_eq!(json["kind"], "STATE_CHANGED");
        assert_eq!(json["previous_state"], "CLOSED");
        assert_eq!(json["state"], "OPEN");
        assert_eq!(json["override"], serde_json::Value::Null);
        assert_eq!(json["breaker"], serde_json::Value::Null);
    }

    #[test]
    fn errors_keep_their_grpc_code_in_http() {
        let answer = Error::NotFound { name: "x".into() }.into_response();
        assert_eq!(answer.status(), http::StatusCode::NOT_FOUND);
        let answer = Error::Compacted {
            requested: 1,
            oldest: 5,
        }
        .into_response();
        assert_eq!(answer.status(), http::StatusCode::GONE);
        let answer = Error::invalid("prefix", "bad").into_response();
        assert_eq!(answer.status(), http::StatusCode::BAD_REQUEST);
    }
}
