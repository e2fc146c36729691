//! The daemon's one error type and its one mapping to gRPC status codes.
//! Clients decide by the code, never by the message.

use tonic::{Code, Status};

/// Every way a request or the daemon can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is invalid; `field` names it (e.g. `name`, `spec.open_duration`).
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// No breaker by that name, and no template for its prefix.
    #[error("breaker {name:?} not found")]
    NotFound { name: String },
    /// The permit's breaker was deleted.
    #[error("permit: breaker {name:?} no longer exists")]
    PermitOfDeletedBreaker { name: String },
    /// Leased outcomes skipped a sequence number (docs/DESIGN.md §10): the ones before
    /// must be sent first.
    #[error("sequence: {got} skips ahead; the next expected is {expected}")]
    SequenceGap { expected: u64, got: u64 },
    /// A configured limit was hit; `limit` names the flag.
    #[error("{limit} reached ({max})")]
    LimitReached { limit: &'static str, max: u64 },
    /// A watch asked for a revision the log no longer holds.
    #[error("revision {requested} has been compacted; the oldest retained revision is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    /// The store failed; what was asked may not be durable.
    #[error("storage error: {0}")]
    Storage(String),
    /// The store cannot commit right now (e.g. the disk is full); the writer keeps
    /// retrying. The change asked for is not acknowledged: it was either refused
    /// before it touched anything, or it is queued and may still be applied once the
    /// store recovers. Retrying a put, an override or a reset is idempotent.
    #[error("store cannot commit: {cause}; retrying")]
    StoreUnavailable { cause: String },
    /// A conditional commit found the store at another revision than the writer
    /// expected: another writer moved it on (docs/DESIGN.md §9). Nothing was applied.
    #[error("store is at revision {found}, not {expected}: another writer moved it on")]
    StoreConflict { expected: u64, found: u64 },
    /// This replica is not the leader (or no longer is: its etcd lease ended and the
    /// fenced commit failed): it may not decide or write. Nothing was applied.
    /// `leader` is who leads, when known.
    #[error("not the leader{}", leader.as_ref().map(|l| format!("; the leader is {l}")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    /// The data dir holds less than was committed (or cannot be read); the daemon
    /// refuses to serve it unless started with `--force-recover`.
    #[error("data dir {} is damaged: {reason}", data_dir.display())]
    Damaged {
        data_dir: std::path::PathBuf,
        reason: String,
    },
    /// The daemon is shutting down.
    #[error("cbd is shutting down")]
    ShuttingDown,
    /// No bearer token, or one the daemon does not know. `reason` never holds the token.
    #[error("{reason}")]
    Unauthenticated { reason: &'static str },
    /// A known token whose role may not call `rpc` (e.g. `cbd.v1.Admin/PutBreaker`).
    #[error("role {role} may not call {rpc}")]
    PermissionDenied { role: &'static str, rpc: String },
    /// A named token claimed to be another caller (docs/DESIGN.md §3.7).
    #[error("caller: the token named {token:?} may not act as caller {claimed:?}")]
    CallerNotYours { token: String, claimed: String },
    /// A request message above `--max-message-size`.
    #[error("--max-message-size reached: {reason}")]
    MessageTooLarge { reason: String },
    /// A unary request ran past `--request-timeout`.
    #[error("--request-timeout reached ({after:?})")]
    RequestTimeout { after: std::time::Duration },
}

impl Error {
    /// An invalid-argument error naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC code this error maps to (the one table; see `From<Error> for Status`).
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument { .. } => Code::InvalidArgument,
            Self::NotFound { .. } | Self::PermitOfDeletedBreaker { .. } => Code::NotFound,
            Self::LimitReached { .. } => Code::ResourceExhausted,
            Self::SequenceGap { .. } => Code::FailedPrecondition,
            Self::Compacted { .. } => Code::OutOfRange,
            Self::Storage(_) => Code::Internal,
            Self::StoreUnavailable { .. }
            | Self::StoreConflict { .. }
            | Self::NotLeader { .. }
            | Self::ShuttingDown => Code::Unavailable,
            Self::Damaged { .. } => Code::DataLoss,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::PermissionDenied { .. } | Self::CallerNotYours { .. } => Code::PermissionDenied,
            Self::MessageTooLarge { .. } => Code::ResourceExhausted,
            Self::RequestTimeout { .. } => Code::DeadlineExceeded,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Self::Storage(format!("corrupt record: {e}"))
    }
}

/// Maps state-machine errors, prefixing spec fields with `spec.` as the request has them.
impl From<cbd_breaker::Error> for Error {
    fn from(e: cbd_breaker::Error) -> Self {
        match e {
            cbd_breaker::Error::InvalidSpec { field, reason } => {
                Self::invalid(format!("spec.{field}"), reason)
            }
            cbd_breaker::Error::InvalidName { reason } => Self::invalid("name", reason),
            e @ cbd_breaker::Error::PermitFromFuture { .. } => {
                Self::invalid("permit", e.to_string())
            }
            cbd_breaker::Error::InvalidAggregate { field, reason } => Self::invalid(field, reason),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = e.code();
        let message = e.to_string();
        match e {
            // The oldest retained revision, machine-readable, so a client need not parse text.
            Error::Compacted { oldest, .. } => {
                let mut status = Status::new(code, message);
                status.metadata_mut().insert(
                    crate::COMPACT_REVISION_METADATA,
                    oldest
                        .to_string()
                        .parse()
                        .expect("digits are valid metadata"),
                );
                status
            }
            // Who leads, in the metadata every client follows (docs/DESIGN.md §11.2).
            Error::NotLeader { leader } => crate::standby::not_leader(leader.as_deref()),
            _ => Status::new(code, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_code() {
        let table: Vec<(Error, Code)> = vec![
            (Error::invalid("name", "empty"), Code::InvalidArgument),
            (Error::NotFound { name: "a".into() }, Code::NotFound),
            (
                Error::PermitOfDeletedBreaker { name: "a".into() },
                Code::NotFound,
            ),
            (
                Error::LimitReached {
                    limit: "--max-breakers",
                    max: 1,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::Compacted {
                    requested: 1,
                    oldest: 5,
                },
                Code::OutOfRange,
            ),
            (Error::Storage("io".into()), Code::Internal),
            (
                Error::Damaged {
                    data_dir: "cbd-data".into(),
                    reason: "it holds revision 0".into(),
                },
                Code::DataLoss,
            ),
            (
                Error::StoreConflict {
                    expected: 4,
                    found: 6,
                },
                Code::Unavailable,
            ),
            (Error::ShuttingDown, Code::Unavailable),
            (
                Error::NotLeader {
                    leader: Some("10.0.0.2:7411".into()),
                },
                Code::Unavailable,
            ),
            (
                Error::StoreUnavailable {
                    cause: "No space left on device (os error 28)".into(),
                },
                Code::Unavailable,
            ),
            (
                Error::Unauthenticated {
                    reason: "missing bearer token",
                },
                Code::Unauthenticated,
            ),
            (
                Error::PermissionDenied {
                    role: "client",
                    rpc: "cbd.v1.Admin/PutBreaker".into(),
                },
                Code::PermissionDenied,
            ),
            (
                Error::MessageTooLarge {
                    reason: "found 2 bytes".into(),
                },
                Code::ResourceExhausted,
            ),
            (
                Error::RequestTimeout {
                    after: std::time::Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
        ];
        for (err, code) in table {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{}", status.message());
        }
    }

    #[test]
    fn invalid_argument_message_names_the_field() {
        let status = Status::from(Error::from(cbd_breaker::Error::InvalidSpec {
            field: "half_open_permits",
            reason: "must be at least 1".into(),
        }));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("spec.half_open_permits:"));
    }

    #[test]
    fn compacted_carries_the_oldest_revision_in_metadata() {
        let status = Status::from(Error::Compacted {
            requested: 2,
            oldest: 40,
        });
        let oldest = status
            .metadata()
            .get(crate::COMPACT_REVISION_METADATA)
            .expect("metadata present");
        assert_eq!(oldest.to_str().expect("ascii"), "40");
        assert!(status.message().contains("40"));
    }
}
