//! `BreakerLayer` around a small tonic service and around a plain tower service.

use std::{
    error::Error as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use cbd_client::{BreakerLayer, Error, GrpcClassifier, Outcome, State, pb};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::support::{client, daemon, put, spec, status, wait_state};

/// A tonic health server in this process: the guarded dependency.
struct Dependency {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Dependency {
    async fn start(addr: SocketAddr) -> (Self, SocketAddr) {
        let listener = TcpListener::bind(addr).await.expect("bind dependency");
        let addr = listener.local_addr().expect("addr");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .expect("dependency serves");
        });
        (
            Self {
                stop: Some(stop),
                task,
            },
            addr,
        )
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Dependency {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn layer_around_a_tonic_service_trips_and_recovers() {
    let (_dir, daemon) = daemon(&[]).await;
    let cbd = client(daemon.endpoint());
    put(&cbd, "layer/health", spec(2, 200)).await;

    let (dependency, addr) = Dependency::start("127.0.0.1:0".parse().expect("addr")).await;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_lazy();
    let guarded = ServiceBuilder::new()
        .layer(BreakerLayer::new(cbd.breaker("layer/health")).classifier(GrpcClassifier))
        .service(channel);
    let mut health = HealthClient::new(guarded);
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    let up = health.check(check()).await.expect("dependency up");
    assert_eq!(up.into_inner().status(), ServingStatus::Serving);
    assert_eq!(status(&cbd, "layer/health").await.window_calls, 1);

    // The dependency goes away: transport errors are failures; two trip the breaker.
    dependency.stop().await;
    for i in 1..=2 {
        let e = health.check(check()).await.expect_err("dependency down");
        assert_eq!(e.code(), tonic::Code::Unavailable, "failure {i}: {e:?}");
    }
    assert_eq!(status(&cbd, "layer/health").await.state(), pb::State::Open);

    // Now the breaker answers for it, without calling the dependency.
    let rejected = health.check(check()).await.expect_err("rejected");
    let cause = rejected
        .source()
        .and_then(|s| s.downcast_ref::<Error>())
        .unwrap_or_else(|| panic!("the rejection as the status's source: {rejected:?}"));
    let r = cause.rejection().expect("a rejection");
    assert_eq!(r.state, State::Open);
    assert!(r.retry_after.is_some());

    // Back on the same address; after the open period one probe closes it.
    let (_dependency, _) = Dependency::start(addr).await;
    wait_state(&cbd, "layer/health", pb::State::HalfOpen).await;
    let probe = health.check(check()).await.expect("the probe goes through");
    assert_eq!(probe.into_inner().status(), ServingStatus::Serving);
    assert_eq!(
        status(&cbd, "layer/health").await.state(),
        pb::State::Closed
    );
    health.check(check()).await.expect("closed again");
}

#[tokio::test]
async fn layer_around_a_tower_service_with_a_classifier() {
    let (_dir, daemon) = daemon(&[]).await;
    let cbd = client(daemon.endpoint());
    put(&cbd, "layer/fn", spec(2, 200)).await;

    // Answers with an HTTP-like status code; `healthy` decides which.
    let healthy = Arc::new(AtomicBool::new(true));
    let dependency = tower::service_fn({
        let healthy = healthy.clone();
        move |path: &'static str| {
            let healthy = healthy.load(Ordering::SeqCst);
            async move {
                match (healthy, path) {
                    (_, "/missing") => Ok::<u16, std::io::Error>(404),
                    (true, _) => Ok(200),
                    (false, _) => Ok(503),
                }
            }
        }
    });
    let classify = |r: Result<&u16, &std::io::Error>| match r {
        Ok(code) if *code >= 500 => Outcome::Failure,
        Ok(code) if *code >= 400 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let mut svc = ServiceBuilder::new()
        .layer(BreakerLayer::new(cbd.breaker("layer/fn")).classifier(classify))
        .service(dependency);

    assert_eq!(
        svc.ready().await.expect("ready").call("/").await.ok(),
        Some(200)
    );
    for _ in 0..3 {
        let code = svc.ready().await.expect("ready").call("/missing").await;
        assert_eq!(code.ok(), Some(404), "the caller's mistakes do not count");
    }
    healthy.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let code = svc.ready().await.expect("ready").call("/").await;
        assert_eq!(code.ok(), Some(503));
    }
    let e = svc
        .ready()
        .await
        .expect("ready")
        .call("/")
        .await
        .expect_err("rejected");
    let r = e
        .downcast_ref::<Error>()
        .and_then(Error::rejection)
        .expect("a rejection");
    assert_eq!(r.state, State::Open);

    healthy.store(true, Ordering::SeqCst);
    wait_state(&cbd, "layer/fn", pb::State::HalfOpen).await;
    assert_eq!(
        svc.ready().await.expect("ready").call("/").await.ok(),
        Some(200)
    );
    assert_eq!(status(&cbd, "layer/fn").await.state(), pb::State::Closed);
}

#[tokio::test]
async fn layer_on_a_leased_closed_breaker_sends_no_acquire_and_counts_every_outcome_once() {
    let (_dir, daemon) = daemon(&[]).await;
    let cbd = cbd_client::Client::builder(daemon.endpoint())
        .acquire_deadline(crate::support::RELAXED_DEADLINE)
        .lease_flush_interval(std::time::Duration::from_millis(5))
        .build()
        .expect("client");
    // CLOSED with cache_ttl: leasable; a rate condition the test's failures stay under.
    let leasable = pb::BreakerSpec {
        failure_rate_percent: Some(90),
        minimum_calls: Some(20),
        window: Some(pb::breaker_spec::Window::CountWindow(pb::CountWindow {
            calls: 1000,
        })),
        open_duration: Some(cbd_tests::ms(60_000)),
        cache_ttl: Some(cbd_tests::ms(10_000)),
        ..Default::default()
    };
    put(&cbd, "layer/leased", leasable).await;
    // Answers with the status code it is asked for.
    let dependency = tower::service_fn(|code: u16| async move { Ok::<u16, std::io::Error>(code) });
    let classify = |r: Result<&u16, &std::io::Error>| match r {
        Ok(code) if *code >= 500 => Outcome::Failure,
        Ok(code) if *code >= 400 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let mut svc = ServiceBuilder::new()
        .layer(BreakerLayer::new(cbd.breaker("layer/leased")).classifier(classify))
        .service(dependency);

    // The first calls go by Acquire; the first CLOSED answer asks for a lease.
    let mut successes = 0u32;
    let deadline = std::time::Instant::now() + crate::support::WAIT;
    while cbd.stats().leases_granted == 0 {
        assert!(std::time::Instant::now() < deadline, "never leased");
        let code = svc.ready().await.expect("ready").call(200).await;
        assert_eq!(code.ok(), Some(200));
        successes += 1;
    }
    cbd.flush().await;
    let before = cbd.stats();
    assert!(before.rpc_decisions >= 1, "the first call asked the daemon");

    // Leased now: 300 calls through the layer, one in five failing, one in ten the
    // caller's business.
    let mut failures = 0u32;
    let calls = 300u32;
    for i in 0..calls {
        let code = match i % 10 {
            0 | 5 => 503,
            3 => 404,
            _ => 200,
        };
        let answer = svc.ready().await.expect("ready").call(code).await;
        assert_eq!(answer.ok(), Some(code), "allowed, the dependency answered");
        match code {
            503 => failures += 1,
            200 => successes += 1,
            _ => {}
        }
    }
    cbd.flush().await;
    let after = cbd.stats();
    assert_eq!(after.rpc_decisions, before.rpc_decisions, "no Acquire RPC");
    assert_eq!(
        after.leased_decisions - before.leased_decisions,
        u64::from(calls),
        "every call decided under the lease"
    );
    assert_eq!(after.fallback_decisions, 0);
    let s = status(&cbd, "layer/leased").await;
    assert_eq!(s.state(), pb::State::Closed);
    assert_eq!(
        (s.window_calls, s.window_failures),
        (successes + failures, failures),
        "the daemon counted each outcome once, ignored ones not at all"
    );
}
