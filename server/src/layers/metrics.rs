//! The RPC duration metric, by method and status code, for every path. Methods
//! outside the table are labelled `other`, so labels stay bounded.

use std::time::Instant;

use http::Request;
use tonic::{Code, body::Body};

use super::{Answer, Around, Next, response_code, rpc_path};
use crate::{methods, metrics::Metrics};

/// Records each answer's duration in `.0`.
#[derive(Clone, Debug)]
pub struct RecordRpcs(pub Metrics);

/// The metric label of `rpc`: its path if served, else `other`.
pub fn method_label(rpc: &str) -> &'static str {
    methods::find(rpc).map_or("other", |m| m.path.as_str())
}

impl Around for RecordRpcs {
    fn around<S: Next>(&self, request: Request<Body>, mut next: S) -> Answer<S::Error> {
        let started = Instant::now();
        let method = method_label(rpc_path(&request));
        let metrics = self.0.clone();
        let answered = next.call(request);
        Box::pin(async move {
            let response = answered.await?;
            metrics.rpc(
                method,
                code_name(response_code(&response)),
                started.elapsed(),
            );
            Ok(response)
        })
    }
}

/// `OK`, `NOT_FOUND`, ...: the canonical names, for metric labels.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            method_label("cbd.v1.Admin/PutBreaker"),
            "cbd.v1.Admin/PutBreaker"
        );
        assert_eq!(method_label("cbd.v1.Admin/Whatever"), "other");
    }
}
