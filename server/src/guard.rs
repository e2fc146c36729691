//! The one tower layer in front of every gRPC service: authentication and roles,
//! the overall request limit, the request timeout, the message-size status, and the
//! RPC duration metric.
//!
//! Only `cbd.*` paths are guarded; `grpc.health.v1` and reflection need no token and
//! are never limited, so probes and tooling keep working. For streaming RPCs (Watch,
//! Session) the limit and the timeout cover only opening the stream, i.e. until the
//! handler returns it: an open stream holds no request slot and has no deadline
//! (watch streams have their own cap, `--max-watchers`).

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use http::{Request, Response};
use tokio::sync::Semaphore;
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};

use crate::{auth::Auth, error::Error, metrics::Metrics};

/// Settings of the guard.
#[derive(Debug)]
pub struct GuardConfig {
    /// Tokens, when `--auth-file` is set.
    pub auth: Option<Arc<Auth>>,
    /// `--max-concurrent-requests`.
    pub max_requests: usize,
    /// `--request-timeout`.
    pub timeout: Duration,
    /// Where RPC durations go.
    pub metrics: Metrics,
}

/// The layer; see the module docs.
#[derive(Clone, Debug)]
pub struct GuardLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: GuardConfig,
    requests: Arc<Semaphore>,
}

impl GuardLayer {
    /// A layer with `config`.
    pub fn new(config: GuardConfig) -> Self {
        let requests = Arc::new(Semaphore::new(config.max_requests));
        Self {
            shared: Arc::new(Shared { config, requests }),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service the layer wraps around the router.
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The methods we know, for bounded metric labels.
const METHODS: &[&str] = &[
    "cbd.v1.Breakers/Acquire",
    "cbd.v1.Breakers/Report",
    "cbd.v1.Breakers/AcquireBatch",
    "cbd.v1.Breakers/ReportBatch",
    "cbd.v1.Breakers/Watch",
    "cbd.v1.Breakers/Session",
    "cbd.v1.Admin/PutBreaker",
    "cbd.v1.Admin/GetBreaker",
    "cbd.v1.Admin/ListBreakers",
    "cbd.v1.Admin/DeleteBreaker",
    "cbd.v1.Admin/SetOverride",
    "cbd.v1.Admin/ResetBreaker",
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
];

/// Streaming RPCs: no timeout, and the request slot only while opening.
fn is_stream(rpc: &str) -> bool {
    matches!(rpc, "cbd.v1.Breakers/Watch" | "cbd.v1.Breakers/Session")
}

fn method_label(rpc: &str) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == rpc)
        .copied()
        .unwrap_or("other")
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

fn reject(e: Error) -> Response<Body> {
    Status::from(e).into_http()
}

/// tonic answers a request above `max_decoding_message_size` with OUT_OF_RANGE
/// "decoded message length too large"; we answer RESOURCE_EXHAUSTED naming the flag.
fn rewrite_message_too_large(response: &mut Response<Body>) {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return;
    };
    let Some(error) = message_too_large(&status) else {
        return;
    };
    let headers = response.headers_mut();
    headers.remove("grpc-status");
    headers.remove("grpc-message");
    headers.remove("grpc-status-details-bin");
    let _ = Status::from(error).add_header(headers);
}

/// tonic's status for a request message above `max_decoding_message_size`, as ours:
/// RESOURCE_EXHAUSTED naming `--max-message-size`. `None` for any other status.
/// Streams need it too: their messages are decoded after the headers went out.
pub fn message_too_large(status: &Status) -> Option<Error> {
    if status.code() != Code::OutOfRange
        || !status
            .message()
            .contains("decoded message length too large")
    {
        return None;
    }
    let reason = status
        .message()
        .trim_start_matches("Error, ")
        .replace(
            "decoded message length too large: found",
            "request message of",
        )
        .replace(", the limit is:", " is above the limit of");
    Some(Error::MessageTooLarge { reason })
}

impl<S, B> Service<Request<B>> for Guard<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone is not ready; the one that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            let started = Instant::now();
            let path = request.uri().path().trim_start_matches('/');
            let method = method_label(path);
            // Known methods (every real call) need no allocation.
            let rpc: std::borrow::Cow<'static, str> = if method == "other" {
                path.to_owned().into()
            } else {
                method.into()
            };
            let mut response = if rpc.starts_with("cbd.") {
                shared.guarded(&mut inner, request, &rpc).await?
            } else {
                inner.call(request).await?
            };
            rewrite_message_too_large(&mut response);
            let code = Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code());
            shared
                .config
                .metrics
                .rpc(method, code_name(code), started.elapsed());
            Ok(response)
        })
    }
}

impl Shared {
    async fn guarded<S, B>(
        &self,
        inner: &mut S,
        request: Request<B>,
        rpc: &str,
    ) -> Result<Response<Body>, S::Error>
    where
        S: Service<Request<B>, Response = Response<Body>>,
    {
        if let Some(auth) = &self.config.auth {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            if let Err(e) = auth.check(header, rpc) {
                return Ok(reject(e));
            }
        }
        let Ok(_slot) = self.requests.clone().try_acquire_owned() else {
            return Ok(reject(Error::LimitReached {
                limit: "--max-concurrent-requests",
                max: self.config.max_requests as u64,
            }));
        };
        if is_stream(rpc) {
            return inner.call(request).await;
        }
        match tokio::time::timeout(self.config.timeout, inner.call(request)).await {
            Ok(answered) => answered,
            Err(_) => Ok(reject(Error::RequestTimeout {
                after: self.config.timeout,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_too_large_becomes_resource_exhausted_naming_the_flag() {
        let mut response: Response<Body> = Status::out_of_range(
            "Error, decoded message length too large: found 102405 bytes, the limit is: 65536 bytes",
        )
        .into_http();
        rewrite_message_too_large(&mut response);
        let status = Status::from_header_map(response.headers()).expect("status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "--max-message-size reached: request message of 102405 bytes is above the limit of 65536 bytes"
        );
        // Other OUT_OF_RANGE answers (a compacted watch) are left alone.
        let mut response: Response<Body> = Status::out_of_range("compacted").into_http();
        rewrite_message_too_large(&mut response);
        let status = Status::from_header_map(response.headers()).expect("status");
        assert_eq!(status.code(), Code::OutOfRange);
    }

    /// A router stand-in that answers OK after `delay`, counting calls.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
        calls: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Service<Request<()>> for Slow {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<Response<Body>, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(Response::new(Body::default()))
            })
        }
    }

    fn guard(delay: Duration, max_requests: usize, timeout: Duration) -> Guard<Slow> {
        GuardLayer::new(GuardConfig {
            auth: None,
            max_requests,
            timeout,
            metrics: Metrics::new(10),
        })
        .layer(Slow {
            delay,
            calls: Arc::default(),
        })
    }

    fn request(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).expect("request")
    }

    fn code(response: &Response<Body>) -> Code {
        Status::from_header_map(response.headers()).map_or(Code::Ok, |s| s.code())
    }

    #[tokio::test]
    async fn unary_requests_time_out_but_streams_do_not() {
        let mut g = guard(Duration::from_millis(200), 10, Duration::from_millis(20));
        let r = g
            .call(request("/cbd.v1.Admin/PutBreaker"))
            .await
            .expect("infallible");
        let status = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("--request-timeout"), "{status:?}");
        let r = g
            .call(request("/cbd.v1.Breakers/Watch"))
            .await
            .expect("infallible");
        assert_eq!(code(&r), Code::Ok);
        // Health is never limited.
        let r = g
            .call(request("/grpc.health.v1.Health/Check"))
            .await
            .expect("infallible");
        assert_eq!(code(&r), Code::Ok);
    }

    #[tokio::test]
    async fn past_the_request_limit_answers_at_once_without_calling_through() {
        let mut g = guard(Duration::from_millis(300), 1, Duration::from_secs(5));
        let mut first = g.clone();
        let held =
            tokio::spawn(async move { first.call(request("/cbd.v1.Admin/PutBreaker")).await });
        // Wait until the first call holds the only slot.
        while g.shared.requests.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let r = g
            .call(request("/cbd.v1.Breakers/Acquire"))
            .await
            .expect("infallible");
        assert!(started.elapsed() < Duration::from_millis(200), "not queued");
        let status = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("--max-concurrent-requests"));
        assert_eq!(g.inner.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            code(&held.await.expect("join").expect("infallible")),
            Code::Ok
        );
        // The slot is back.
        let r = g
            .call(request("/cbd.v1.Breakers/Acquire"))
            .await
            .expect("infallible");
        assert_eq!(code(&r), Code::Ok);
    }

    #[test]
    fn method_labels_are_bounded() {
        assert_eq!(
            method_label("cbd.v1.Admin/PutBreaker"),
            "cbd.v1.Admin/PutBreaker"
        );
        assert_eq!(method_label("cbd.v1.Admin/Whatever"), "other");
        assert!(is_stream("cbd.v1.Breakers/Watch"));
    }
}
