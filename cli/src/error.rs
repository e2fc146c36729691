//! The crate's one error type and its one mapping to exit codes.
//!
//! Every command returns [`Error`]; `main` prints it as a single `error: ...` line on
//! stderr and exits with [`Error::exit_code`]. gRPC statuses and transport failures
//! are classified here and nowhere else.

use std::{fmt::Write as _, time::Duration};

use tonic::Code;

/// Exit codes, as documented in `cbctl --help` and the README.
pub mod exit {
    /// The command did what it was asked.
    pub const OK: u8 = 0;
    /// Any other failure: an invalid request, a bad file, a daemon-side error.
    pub const ERROR: u8 = 1;
    /// Bad flags or arguments (a usage message is printed).
    pub const USAGE: u8 = 2;
    /// The breaker does not exist (for `health --service`: no such service).
    pub const NOT_FOUND: u8 = 3;
    /// The daemon could not be reached: connection refused, timeout, shutting down.
    pub const UNAVAILABLE: u8 = 4;
    /// The daemon refused the credentials (PERMISSION_DENIED or UNAUTHENTICATED).
    pub const PERMISSION_DENIED: u8 = 5;
}

/// The exit-code table for `--help` (`after_help`).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error (invalid request or file, daemon-side error, health not SERVING)
  2  usage (bad flags or arguments)
  3  not found (no such breaker; for health --service, no such service)
  4  daemon unavailable (connection refused, timeout, shutting down)
  5  permission denied (or unauthenticated)";

/// Everything that can go wrong in `cbctl`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, arguments or values found after clap's own checks.
    #[error("{0}")]
    Usage(String),
    /// The breaker (or a permit's breaker) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The daemon could not be reached or did not answer in time.
    #[error("cbd at {endpoint} is unavailable: {reason}")]
    Unavailable {
        /// The endpoint tried.
        endpoint: String,
        /// Why, in one line.
        reason: String,
    },
    /// The daemon refused the request's credentials.
    #[error("{0}")]
    PermissionDenied(String),
    /// Any other gRPC error, with its code's name.
    #[error("{code}: {message}")]
    Rpc {
        /// The code, in words (`invalid argument`).
        code: String,
        /// The daemon's message.
        message: String,
    },
    /// A file (apply) could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file (`-` for stdin).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The health check answered, but not SERVING.
    #[error("cbd at {endpoint} is {status}")]
    NotServing {
        /// The endpoint asked.
        endpoint: String,
        /// The serving status name.
        status: String,
    },
    /// Stdout was closed (`cbctl list | head`): stop quietly.
    #[error("stdout closed")]
    StdoutClosed,
    /// Anything else (I/O on stdout, a bench with nothing but errors, ...).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// The process exit code for this error: the one table.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::StdoutClosed => exit::OK,
            Self::Usage(_) => exit::USAGE,
            Self::NotFound(_) => exit::NOT_FOUND,
            Self::Unavailable { .. } => exit::UNAVAILABLE,
            Self::PermissionDenied(_) => exit::PERMISSION_DENIED,
            Self::Rpc { .. } | Self::File { .. } | Self::NotServing { .. } | Self::Other(_) => {
                exit::ERROR
            }
        }
    }

    /// Classifies a gRPC status from the daemon at `endpoint`.
    pub fn from_status(status: &tonic::Status, endpoint: &str) -> Self {
        let message = status_message(status);
        match status.code() {
            Code::NotFound => Self::NotFound(message),
            Code::Unavailable | Code::DeadlineExceeded => Self::Unavailable {
                endpoint: endpoint.to_owned(),
                reason: message,
            },
            // tonic reports its own client-side timeout as CANCELLED "Timeout expired".
            Code::Cancelled if message.to_ascii_lowercase().contains("timeout") => {
                Self::Unavailable {
                    endpoint: endpoint.to_owned(),
                    reason: "deadline exceeded".into(),
                }
            }
            Code::PermissionDenied => {
                Self::PermissionDenied(format!("permission denied: {message}"))
            }
            Code::Unauthenticated => Self::PermissionDenied(format!("unauthenticated: {message}")),
            code => Self::Rpc {
                code: code_words(code),
                message,
            },
        }
    }

    /// A `cbd-client` failure talking to `endpoint`: RPC failures by their status,
    /// a bad endpoint, token or TLS setting as usage.
    pub fn from_client(e: &cbd_client::Error, endpoint: &str) -> Self {
        match (e.status(), e) {
            (Some(status), _) => Self::from_status(status, endpoint),
            (None, cbd_client::Error::Config(reason)) => Self::Usage(reason.clone()),
            (None, other) => Self::Other(other.to_string()),
        }
    }

    /// A transport failure (connecting) to `endpoint`.
    pub fn from_transport(err: &tonic::transport::Error, endpoint: &str) -> Self {
        Self::Unavailable {
            endpoint: endpoint.to_owned(),
            reason: root_cause(err),
        }
    }

    /// No answer from `endpoint` within `timeout`.
    pub fn deadline(endpoint: &str, timeout: Duration) -> Self {
        Self::Unavailable {
            endpoint: endpoint.to_owned(),
            reason: format!(
                "no answer within {} (deadline exceeded)",
                humantime::format_duration(timeout)
            ),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Other(e.to_string())
    }
}

/// The status message on one line; a transport failure's root cause when the daemon
/// said nothing itself.
fn status_message(status: &tonic::Status) -> String {
    let mut message = status.message().trim().to_owned();
    if let Some(source) = std::error::Error::source(status) {
        let cause = root_cause(source);
        if message.is_empty() {
            message = cause;
        } else if !message.contains(&cause) {
            let _ = write!(message, ": {cause}");
        }
    }
    if message.is_empty() {
        message = code_words(status.code());
    }
    one_line(&message)
}

/// The innermost error of a chain, which is the one a person can act on
/// ("Connection refused (os error 111)"), on one line.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    let text = current.to_string();
    let text = if text.is_empty() {
        err.to_string()
    } else {
        text
    };
    one_line(&text)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `INVALID_ARGUMENT` → `invalid argument`.
fn code_words(code: Code) -> String {
    let s = match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    };
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_exit_codes() {
        let e = "http://x";
        let cases = [
            (Code::NotFound, exit::NOT_FOUND),
            (Code::Unavailable, exit::UNAVAILABLE),
            (Code::DeadlineExceeded, exit::UNAVAILABLE),
            (Code::PermissionDenied, exit::PERMISSION_DENIED),
            (Code::Unauthenticated, exit::PERMISSION_DENIED),
            (Code::InvalidArgument, exit::ERROR),
            (Code::ResourceExhausted, exit::ERROR),
            (Code::Internal, exit::ERROR),
        ];
        for (code, want) in cases {
            let err = Error::from_status(&tonic::Status::new(code, "m"), e);
            assert_eq!(err.exit_code(), want, "{code:?}");
        }
        let timeout = tonic::Status::cancelled("Timeout expired");
        assert_eq!(
            Error::from_status(&timeout, e).exit_code(),
            exit::UNAVAILABLE
        );
    }

    #[test]
    fn messages_are_one_line() {
        let err = Error::from_status(
            &tonic::Status::invalid_argument("spec.failure_rate_percent:\n  500 is not in 1..=100"),
            "http://x",
        );
        assert_eq!(
            err.to_string(),
            "invalid argument: spec.failure_rate_percent: 500 is not in 1..=100"
        );
    }
}
