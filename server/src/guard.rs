//! The guard in front of every gRPC service (docs/DESIGN.md §7): the one-concern
//! layers of [`crate::layers`] stacked in their order, outermost first: the RPC
//! duration metric, authentication and roles, leadership (replicas only), the
//! overall request limit, the request timeout, and the message-size limit.
//!
//! Only `cbd.*` paths are guarded; `grpc.health.v1` and reflection need no token and
//! are never limited, so probes and tooling keep working. For streaming RPCs (Watch,
//! Session) the limit covers only opening the stream, i.e. until the handler returns
//! it: an open stream holds no request slot and has no deadline (watch streams have
//! their own cap, `--max-watchers`). Which paths stream, and which role each needs,
//! is the method table of [`crate::methods`].

use std::{sync::Arc, time::Duration};

use tower::{
    ServiceBuilder,
    layer::util::{Identity, Stack},
};

use crate::{
    auth::Auth,
    layers::{
        AroundLayer,
        auth::Authenticate,
        leader::{LeaderOnly, Leading},
        limit::RequestLimit,
        message_size::MessageSize,
        metrics::RecordRpcs,
        timeout::RequestTimeout,
    },
    metrics::Metrics,
};

/// Settings of the guard.
#[derive(Debug)]
pub struct GuardConfig {
    /// Tokens, when `--auth-file` is set.
    pub auth: Option<Arc<Auth>>,
    /// `--max-concurrent-requests`.
    pub max_requests: usize,
    /// `--request-timeout`.
    pub timeout: Duration,
    /// `--max-message-size`, in bytes.
    pub max_message_size: usize,
    /// Where RPC durations go.
    pub metrics: Metrics,
    /// Whether this replica leads; `None`: a daemon on its own store, which always does.
    pub leader: Option<Arc<dyn Leading>>,
}

/// The stacked layers; see the module docs.
pub type GuardLayer = ServiceBuilder<
    Stack<
        AroundLayer<MessageSize>,
        Stack<
            AroundLayer<RequestTimeout>,
            Stack<
                AroundLayer<RequestLimit>,
                Stack<
                    AroundLayer<LeaderOnly>,
                    Stack<AroundLayer<Authenticate>, Stack<AroundLayer<RecordRpcs>, Identity>>,
                >,
            >,
        >,
    >,
>;

/// The guard with `config`.
pub fn layer(config: GuardConfig) -> GuardLayer {
    let limit = RequestLimit::new(config.max_requests);
    stack(config, limit)
}

/// The stack, with the request slots passed in (tests watch them).
fn stack(config: GuardConfig, limit: RequestLimit) -> GuardLayer {
    ServiceBuilder::new()
        .layer(AroundLayer(RecordRpcs(config.metrics)))
        .layer(AroundLayer(Authenticate(config.auth)))
        .layer(AroundLayer(LeaderOnly(config.leader)))
        .layer(AroundLayer(limit))
        .layer(AroundLayer(RequestTimeout(config.timeout)))
        .layer(AroundLayer(MessageSize(config.max_message_size)))
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        task::{Context, Poll},
        time::Instant,
    };

    use http::{Request, Response};
    use tonic::{Code, Status, body::Body};
    use tower::Service;

    use super::*;
    use crate::layers::{BoxFuture, response_code};

    /// A router stand-in that answers OK after `delay`, counting calls.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
        calls: Arc<AtomicUsize>,
    }

    impl Service<Request<Body>> for Slow {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<Response<Body>, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(Response::new(Body::default()))
            })
        }
    }

    type Guarded = <GuardLayer as tower::Layer<Slow>>::Service;

    fn guard(delay: Duration, limit: &RequestLimit, timeout: Duration) -> (Guarded, Slow) {
        let slow = Slow {
            delay,
            calls: Arc::default(),
        };
        let config = GuardConfig {
            auth: None,
            // Unused: the slots are `limit`.
            max_requests: 0,
            timeout,
            max_message_size: 1024,
            metrics: Metrics::new(10),
            leader: None,
        };
        (stack(config, limit.clone()).service(slow.clone()), slow)
    }

    fn request(path: &str) -> Request<Body> {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .expect("request")
    }

    #[tokio::test(start_paused = true)]
    async fn unary_requests_time_out_but_streams_do_not() {
        let limit = RequestLimit::new(10);
        let (mut g, _) = guard(
            Duration::from_millis(200),
            &limit,
            Duration::from_millis(20),
        );
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
        assert_eq!(response_code(&r), Code::Ok);
        // Health is never limited.
        let r = g
            .call(request("/grpc.health.v1.Health/Check"))
            .await
            .expect("infallible");
        assert_eq!(response_code(&r), Code::Ok);
    }

    /// A replica whose leadership `leads` says.
    #[derive(Debug)]
    struct Replica {
        leads: std::sync::atomic::AtomicBool,
    }

    impl Leading for Replica {
        fn check(&self) -> Result<(), crate::error::Error> {
            if self.leads.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(crate::error::Error::NotLeader {
                    leader: Some("http://127.0.0.1:7412".into()),
                })
            }
        }
    }

    #[tokio::test]
    async fn a_replica_that_stopped_leading_refuses_without_calling_through() {
        let replica = Arc::new(Replica { leads: true.into() });
        let slow = Slow {
            delay: Duration::ZERO,
            calls: Arc::default(),
        };
        let config = GuardConfig {
            auth: None,
            max_requests: 10,
            timeout: Duration::from_secs(5),
            max_message_size: 1024,
            metrics: Metrics::new(10),
            leader: Some(replica.clone()),
        };
        let mut g = layer(config).service(slow.clone());
        let r = g
            .call(request("/cbd.v1.Breakers/Acquire"))
            .await
            .expect("infallible");
        assert_eq!(response_code(&r), Code::Ok);
        replica.leads.store(false, Ordering::SeqCst);
        let r = g
            .call(request("/cbd.v1.Breakers/Acquire"))
            .await
            .expect("infallible");
        let status = Status::from_header_map(r.headers()).expect("status");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(cbd_proto::LEADER_METADATA)
                .expect("leader named"),
            "http://127.0.0.1:7412"
        );
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "not called through");
        // Health still answers: probes see a standby, not a dead process.
        let r = g
            .call(request("/grpc.health.v1.Health/Check"))
            .await
            .expect("infallible");
        assert_eq!(response_code(&r), Code::Ok);
    }

    #[tokio::test]
    async fn past_the_request_limit_answers_at_once_without_calling_through() {
        let limit = RequestLimit::new(1);
        let (mut g, slow) = guard(Duration::from_millis(300), &limit, Duration::from_secs(5));
        let mut first = g.clone();
        let held =
            tokio::spawn(async move { first.call(request("/cbd.v1.Admin/PutBreaker")).await });
        // Wait until the first call holds the only slot.
        while limit.available() > 0 {
            tokio::task::yield_now().await;
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
        assert_eq!(slow.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            response_code(&held.await.expect("join").expect("infallible")),
            Code::Ok
        );
        // The slot is back.
        let r = g
            .call(request("/cbd.v1.Breakers/Acquire"))
            .await
            .expect("infallible");
        assert_eq!(response_code(&r), Code::Ok);
    }
}
