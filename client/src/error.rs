//! The client's errors: typed by gRPC status code (never by message text), plus the
//! breaker's rejection.

use std::{fmt, time::Duration};

use cbd_breaker::{Fallback, State};
use tonic::{Code, Status};

/// Trailing-metadata key of an `OUT_OF_RANGE` watch error: the oldest retained
/// revision (the daemon's `cbd::COMPACT_REVISION_METADATA`).
pub const COMPACT_REVISION_METADATA: &str = "cbd-compact-revision";

/// A breaker said no: the call must not be made.
///
/// A rejection is a normal answer, not a failure of the daemon. `fallback` tells who
/// decided: `None` for the daemon, `Some(policy)` when the daemon could not be reached
/// in time and the breaker's fallback policy decided (`FailClosed`, or the in-process
/// breaker of `Local`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The breaker's name.
    pub breaker: String,
    /// The breaker's effective state as the decider saw it. A `FailClosed` fallback
    /// reports `Open`.
    pub state: State,
    /// How long until asking again makes sense; `None` when it cannot be known
    /// (`FORCED_OPEN`, or a `FailClosed` fallback).
    pub retry_after: Option<Duration>,
    /// `None`: the daemon decided. `Some(policy)`: the fallback policy did.
    pub fallback: Option<Fallback>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "breaker {:?} rejected the call ({}",
            self.breaker, self.state
        )?;
        if let Some(after) = self.retry_after {
            write!(f, ", retry after {after:?}")?;
        }
        match self.fallback {
            None => {}
            Some(Fallback::FailClosed) => f.write_str(", daemon unreachable: fail closed")?,
            Some(Fallback::Local) => f.write_str(", daemon unreachable: local breaker")?,
            Some(Fallback::FailOpen) => f.write_str(", daemon unreachable")?,
        }
        f.write_str(")")
    }
}

impl std::error::Error for Rejected {}

/// Everything the client can fail with.
///
/// RPC failures are sorted by their gRPC code into variants; codes without a variant
/// of their own land in [`Error::Rpc`]. [`Error::code`] gives the code back for any of
/// them. The client never looks at message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The breaker rejected the call (or the fallback policy did).
    #[error(transparent)]
    Rejected(Rejected),
    /// `INVALID_ARGUMENT`: a bad name, spec, filter or permit.
    #[error("invalid argument: {}", .0.message())]
    InvalidArgument(Status),
    /// `NOT_FOUND`: no such breaker (and no template for its prefix).
    #[error("not found: {}", .0.message())]
    NotFound(Status),
    /// `ALREADY_EXISTS`.
    #[error("already exists: {}", .0.message())]
    AlreadyExists(Status),
    /// `RESOURCE_EXHAUSTED`: a daemon limit (breakers, watchers) was reached.
    #[error("resource exhausted: {}", .0.message())]
    ResourceExhausted(Status),
    /// `OUT_OF_RANGE`: a watch asked for a revision that was compacted away.
    /// `oldest_retained` is read from the `cbd-compact-revision` trailer.
    #[error("revision compacted (oldest retained: {oldest_retained:?}): {}", .status.message())]
    Compacted {
        /// The oldest revision the daemon still holds, when it said so.
        oldest_retained: Option<u64>,
        /// The daemon's status.
        status: Status,
    },
    /// `UNAVAILABLE`: the daemon could not be reached (connection refused, reset,
    /// shutting down).
    #[error("unavailable: {}", .0.message())]
    Unavailable(Status),
    /// `DEADLINE_EXCEEDED`: no answer in time (the client's own deadlines included).
    #[error("deadline exceeded: {}", .0.message())]
    DeadlineExceeded(Status),
    /// `UNAUTHENTICATED`: missing or bad token.
    #[error("unauthenticated: {}", .0.message())]
    Unauthenticated(Status),
    /// `PERMISSION_DENIED`: the token's role may not do this.
    #[error("permission denied: {}", .0.message())]
    PermissionDenied(Status),
    /// Any other gRPC code (`INTERNAL`, `UNKNOWN`, `CANCELLED`, ...).
    #[error("rpc failed: {status}")]
    Rpc {
        /// The status as received.
        status: Status,
    },
    /// The client was configured wrongly (bad endpoint or token); nothing was sent.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The gRPC code of an RPC failure; `None` for a rejection or a configuration error.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// The daemon's status, for RPC failures.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Rejected(_) | Self::Config(_) => None,
            Self::InvalidArgument(s)
            | Self::NotFound(s)
            | Self::AlreadyExists(s)
            | Self::ResourceExhausted(s)
            | Self::Unavailable(s)
            | Self::DeadlineExceeded(s)
            | Self::Unauthenticated(s)
            | Self::PermissionDenied(s)
            | Self::Compacted { status: s, .. }
            | Self::Rpc { status: s } => Some(s),
        }
    }

    /// The rejection, if this is one.
    pub fn rejection(&self) -> Option<&Rejected> {
        match self {
            Self::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the daemon could not be reached or could not answer properly, so that
    /// trying again later may work: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`,
    /// `UNKNOWN`, `INTERNAL`, `ABORTED`, `DATA_LOSS`. Answers about the request itself
    /// (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, ...) are not transient,
    /// and neither is a rejection.
    ///
    /// On a transient error `acquire` applies the breaker's fallback policy; every
    /// other error is returned to the caller.
    pub fn is_transient(&self) -> bool {
        self.code().is_some_and(is_transient_code)
    }

    /// An RPC failure as a client error, by its code.
    pub fn from_status(status: Status) -> Self {
        match status.code() {
            Code::InvalidArgument => Self::InvalidArgument(status),
            Code::NotFound => Self::NotFound(status),
            Code::AlreadyExists => Self::AlreadyExists(status),
            Code::ResourceExhausted => Self::ResourceExhausted(status),
            Code::OutOfRange => Self::Compacted {
                oldest_retained: status
                    .metadata()
                    .get(COMPACT_REVISION_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
                status,
            },
            Code::Unavailable => Self::Unavailable(status),
            Code::DeadlineExceeded => Self::DeadlineExceeded(status),
            Code::Unauthenticated => Self::Unauthenticated(status),
            Code::PermissionDenied => Self::PermissionDenied(status),
            _ => Self::Rpc { status },
        }
    }

    /// The client's own deadline passed.
    pub(crate) fn deadline(what: &str, deadline: Duration) -> Self {
        Self::DeadlineExceeded(Status::deadline_exceeded(format!(
            "{what}: no answer within {deadline:?}"
        )))
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::from_status(status)
    }
}

impl From<Rejected> for Error {
    fn from(r: Rejected) -> Self {
        Self::Rejected(r)
    }
}

/// The codes after which trying again may work.
pub(crate) fn is_transient_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::DataLoss
    )
}

/// What [`Breaker::call`](crate::Breaker::call) returns when it does not return the
/// function's value.
#[derive(Debug)]
pub enum CallError<E> {
    /// The breaker rejected the call; the function did not run.
    Rejected(Rejected),
    /// The function ran and returned this error (its outcome was reported).
    Inner(E),
    /// The breaker could not be asked and no fallback applied (e.g. `NOT_FOUND` for an
    /// unknown breaker, `PERMISSION_DENIED`); the function did not run.
    Client(Error),
}

impl<E> CallError<E> {
    /// The rejection, if the breaker said no.
    pub fn rejection(&self) -> Option<&Rejected> {
        match self {
            Self::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// Whether the breaker said no.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Self::Rejected(_))
    }

    /// The function's own error, if it ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// Sorts an `acquire` error: rejections apart, the rest as client errors.
    pub(crate) fn from_acquire(e: Error) -> Self {
        match e {
            Error::Rejected(r) => Self::Rejected(r),
            e => Self::Client(e),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => r.fmt(f),
            Self::Inner(e) => e.fmt(f),
            Self::Client(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected(_) => None,
            Self::Inner(e) => Some(e),
            Self::Client(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_typed_by_code_not_text() {
        let e = Error::from(Status::new(Code::NotFound, "whatever the text says"));
        assert!(matches!(e, Error::NotFound(_)));
        assert_eq!(e.code(), Some(Code::NotFound));
        assert!(!e.is_transient());

        let e = Error::from(Status::new(Code::Unavailable, "invalid argument"));
        assert!(matches!(e, Error::Unavailable(_)));
        assert!(e.is_transient());

        let e = Error::from(Status::new(Code::Internal, "x"));
        assert!(matches!(e, Error::Rpc { .. }));
        assert!(e.is_transient());
    }

    #[test]
    fn compacted_reads_the_oldest_revision_from_metadata() {
        let mut status = Status::new(Code::OutOfRange, "no digits here");
        status
            .metadata_mut()
            .insert(COMPACT_REVISION_METADATA, "42".parse().expect("ascii"));
        match Error::from(status) {
            Error::Compacted {
                oldest_retained, ..
            } => assert_eq!(oldest_retained, Some(42)),
            other => panic!("expected Compacted, got {other:?}"),
        }
        match Error::from(Status::new(Code::OutOfRange, "revision 7")) {
            Error::Compacted {
                oldest_retained, ..
            } => assert_eq!(oldest_retained, None),
            other => panic!("expected Compacted, got {other:?}"),
        }
    }

    #[test]
    fn rejection_display_says_who_decided() {
        let r = Rejected {
            breaker: "payments".into(),
            state: State::Open,
            retry_after: Some(Duration::from_millis(250)),
            fallback: None,
        };
        assert_eq!(
            r.to_string(),
            "breaker \"payments\" rejected the call (OPEN, retry after 250ms)"
        );
        let r = Rejected {
            fallback: Some(Fallback::FailClosed),
            retry_after: None,
            ..r
        };
        assert!(r.to_string().contains("fail closed"), "{r}");
    }
}
