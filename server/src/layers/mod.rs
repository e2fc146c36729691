//! The tower layers in front of every gRPC service, one concern each
//! (docs/DESIGN.md §7), outermost first: [`metrics`], [`auth`], [`leader`], [`limit`],
//! [`timeout`], [`message_size`]. [`crate::guard`] stacks them.
//!
//! Each concern is an [`Around`]: it sees the request and the next service and
//! answers, usually by calling through. [`AroundLayer`] makes any of them a layer,
//! so the tower plumbing is written once.

pub mod auth;
pub mod leader;
pub mod limit;
pub mod message_size;
pub mod metrics;
pub mod timeout;

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http::{Request, Response};
use tonic::{Status, body::Body};
use tower::{Layer, Service};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The request path without its leading `/`: `package.Service/Method`.
pub fn rpc_path<B>(request: &Request<B>) -> &str {
    request.uri().path().trim_start_matches('/')
}

/// An error answered as a gRPC status, without calling through.
pub fn reject(e: crate::error::Error) -> Response<Body> {
    Status::from(e).into_http()
}

/// The status a response carries in its headers (`OK` when none: a stream's status
/// comes in its trailers).
pub fn response_code(response: &Response<Body>) -> tonic::Code {
    Status::from_header_map(response.headers()).map_or(tonic::Code::Ok, |s| s.code())
}

/// What an [`Around`] answers with.
pub type Answer<E> = BoxFuture<Result<Response<Body>, E>>;

/// The next service, as every layer sees it.
pub trait Next:
    Service<Request<Body>, Response = Response<Body>, Future: Send + 'static, Error: Send + 'static>
    + Send
    + 'static
{
}

impl<S> Next for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Future: Send + 'static,
            Error: Send + 'static,
        > + Send
        + 'static
{
}

/// One concern around the next service.
pub trait Around: Clone + Send + Sync + 'static {
    /// Answers `request`, calling `next` (ready to be called) or not.
    fn around<S: Next>(&self, request: Request<Body>, next: S) -> Answer<S::Error>;
}

/// The layer of an [`Around`].
#[derive(Clone, Debug)]
pub struct AroundLayer<A>(pub A);

impl<S, A: Clone> Layer<S> for AroundLayer<A> {
    type Service = AroundService<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundService {
            inner,
            around: self.0.clone(),
        }
    }
}

/// The service of an [`Around`] over `S`.
#[derive(Clone, Debug)]
pub struct AroundService<S, A> {
    inner: S,
    around: A,
}

impl<S: Next + Clone, A: Around> Service<Request<Body>> for AroundService<S, A> {
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone is not ready; the one that was polled ready serves this call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        self.around.around(request, ready)
    }
}
