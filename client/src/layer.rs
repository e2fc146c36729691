//! [`BreakerLayer`]: a `tower::Layer` that puts a breaker in front of any
//! `tower::Service` (a tonic channel, a hyper client, ...).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use cbd_breaker::Outcome;
use tonic::{Code, codegen::http};
use tower::{BoxError, Layer, Service};

use crate::Breaker;

/// Decides how a service's result counts for the breaker.
///
/// Implemented by [`ErrIsFailure`] (the default), [`GrpcClassifier`] and any
/// `Fn(Result<&Res, &E>) -> Outcome`.
pub trait Classify<Res, E> {
    /// The outcome of one call.
    fn classify(&self, result: Result<&Res, &E>) -> Outcome;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(Result<&Res, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: every `Ok` response is a success, every `Err` a failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrIsFailure;

impl<Res, E> Classify<Res, E> for ErrIsFailure {
    fn classify(&self, result: Result<&Res, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// A classifier for gRPC over HTTP/2 (a tonic `Channel`): a transport error is a
/// failure; a response is judged by the `grpc-status` in its headers, which is where
/// servers put the status of a call that fails before sending a message
/// ("trailers-only", what tonic and grpc-go send for a handler's error).
///
/// | status | outcome |
/// |---|---|
/// | none in the headers, or `OK` | success |
/// | `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `RESOURCE_EXHAUSTED`, `DATA_LOSS` | failure |
/// | any other (`INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, ...): the caller's business | ignored |
///
/// A status sent in the trailers after messages is not seen (the call counts as a
/// success once its headers arrive).
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcClassifier;

impl<B, E> Classify<http::Response<B>, E> for GrpcClassifier {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        let Ok(response) = result else {
            return Outcome::Failure;
        };
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i32>().ok())
            .map(Code::from_i32);
        match code {
            None | Some(Code::Ok) => Outcome::Success,
            Some(
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::Unknown
                | Code::ResourceExhausted
                | Code::DataLoss,
            ) => Outcome::Failure,
            Some(_) => Outcome::Ignored,
        }
    }
}

/// A `tower::Layer` that wraps a service with a breaker: each request acquires first
/// (a rejection fails the request without calling the service), then the response is
/// classified and reported with the call's duration.
///
/// The wrapped service's error type becomes [`tower::BoxError`]; a rejection (or an
/// acquire error that no fallback covers) is a boxed [`crate::Error`] in it, to be
/// found with `downcast_ref::<cbd_client::Error>()`. Under a tonic client the
/// rejection arrives as a `tonic::Status` (code `UNKNOWN`) whose
/// [`source`](std::error::Error::source) is that boxed error. The report is awaited
/// (bounded by the client's report deadline) before the response is returned.
///
/// ```no_run
/// use cbd_client::{BreakerLayer, Client, GrpcClassifier};
/// use tonic::transport::Channel;
/// use tower::ServiceBuilder;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let cbd = Client::connect("http://127.0.0.1:7411").await?;
/// let channel = Channel::from_static("http://127.0.0.1:50051").connect_lazy();
/// let guarded = ServiceBuilder::new()
///     .layer(BreakerLayer::new(cbd.breaker("inventory/grpc")).classifier(GrpcClassifier))
///     .service(channel);
/// // Any tonic-generated client takes it, e.g. `InventoryClient::new(guarded)`.
/// # let _ = guarded;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BreakerLayer<C = ErrIsFailure> {
    breaker: Breaker,
    classifier: C,
}

impl BreakerLayer {
    /// A layer for `breaker` with the default classifier ([`ErrIsFailure`]).
    pub fn new(breaker: Breaker) -> Self {
        Self {
            breaker,
            classifier: ErrIsFailure,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// The same layer with another classifier.
    pub fn classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service [`BreakerLayer`] makes.
#[derive(Clone)]
pub struct BreakerService<S, C = ErrIsFailure> {
    inner: S,
    breaker: Breaker,
    classifier: C,
}

impl<S, C> fmt::Debug for BreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("breaker", &self.breaker.name())
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for BreakerService<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The service that was polled ready serves this request; the clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let breaker = self.breaker.clone();
        let classifier = self.classifier.clone();
        Box::pin(async move {
            let permit = breaker.acquire().await.map_err(BoxError::from)?;
            let started = Instant::now();
            let result = inner.call(request).await;
            let outcome = classifier.classify(result.as_ref());
            if let Err(e) = permit.report(outcome, Some(started.elapsed())).await {
                tracing::debug!(breaker = %breaker.name(), error = %e, "report failed");
            }
            result.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: Option<&str>) -> http::Response<()> {
        let mut r = http::Response::new(());
        if let Some(s) = status {
            r.headers_mut()
                .insert("grpc-status", s.parse().expect("header"));
        }
        r
    }

    #[test]
    fn grpc_classifier_sorts_codes() {
        let c = GrpcClassifier;
        let ok = |s| Classify::<_, ()>::classify(&c, Ok(&response(s)));
        assert_eq!(ok(None), Outcome::Success);
        assert_eq!(ok(Some("0")), Outcome::Success);
        assert_eq!(ok(Some("14")), Outcome::Failure); // UNAVAILABLE
        assert_eq!(ok(Some("4")), Outcome::Failure); // DEADLINE_EXCEEDED
        assert_eq!(ok(Some("3")), Outcome::Ignored); // INVALID_ARGUMENT
        assert_eq!(ok(Some("5")), Outcome::Ignored); // NOT_FOUND
        assert_eq!(
            Classify::<http::Response<()>, _>::classify(&c, Err(&"boom")),
            Outcome::Failure
        );
    }

    #[test]
    fn closures_classify() {
        let c = |r: Result<&u16, &()>| match r {
            Ok(code) if *code >= 500 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(()) => Outcome::Ignored,
        };
        assert_eq!(c.classify(Ok(&503)), Outcome::Failure);
        assert_eq!(c.classify(Ok(&200)), Outcome::Success);
        assert_eq!(c.classify(Err(&())), Outcome::Ignored);
    }
}
