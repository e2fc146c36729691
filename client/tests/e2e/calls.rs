//! `call`, `call_with` and two-step `acquire` against a real daemon.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use cbd_client::{CallError, Error, Outcome, Reported, State, pb};

use crate::support::{client, daemon, eventually, put, spec, status, wait_state};

#[derive(Debug, PartialEq)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

#[tokio::test]
async fn call_trips_on_failures_then_rejects_with_retry_after() {
    let (_dir, daemon) = daemon(&[]).await;
    let client = client(daemon.endpoint());
    put(&client, "calls/trip", spec(3, 2_000)).await;
    let breaker = client.breaker("calls/trip");

    // Successes and ignored errors do not count towards the trip.
    assert_eq!(
        breaker.call(|| async { Ok::<_, Boom>(7) }).await.ok(),
        Some(7)
    );
    for _ in 0..5 {
        let r = breaker
            .call_with(|_| Outcome::Ignored, || async { Err::<(), _>(Boom) })
            .await;
        assert!(matches!(r, Err(CallError::Inner(Boom))), "{r:?}");
    }
    assert_eq!(
        status(&client, "calls/trip").await.state(),
        pb::State::Closed
    );

    for i in 1..=3 {
        let r = breaker.call(|| async { Err::<(), _>(Boom) }).await;
        assert!(
            matches!(r, Err(CallError::Inner(Boom))),
            "failure {i}: {r:?}"
        );
    }
    let ran = AtomicBool::new(false);
    let r = breaker
        .call(|| async {
            ran.store(true, Ordering::SeqCst);
            Ok::<_, Boom>(())
        })
        .await;
    let Err(CallError::Rejected(rejected)) = r else {
        panic!("expected a rejection, got {r:?}");
    };
    assert!(!ran.load(Ordering::SeqCst), "a rejected call does not run");
    assert_eq!(rejected.breaker, "calls/trip");
    assert_eq!(rejected.state, State::Open);
    assert_eq!(rejected.fallback, None, "the daemon decided");
    let retry = rejected.retry_after.expect("retry_after while open");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(2),
        "{retry:?}"
    );
    assert_eq!(client.fallback_decisions(), 0);

    // The same through the two-step API.
    match breaker.acquire().await {
        Err(Error::Rejected(r)) => assert_eq!(r.state, State::Open),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// The README's tutorial, through the library: threshold 3, a short open duration,
/// one probe, its success closes the breaker.
#[tokio::test]
async fn tutorial_through_the_library() {
    let (_dir, daemon) = daemon(&[]).await;
    let client = client(daemon.endpoint());
    put(&client, "tutorial", spec(3, 300)).await;
    let breaker = client.breaker("tutorial");

    for _ in 0..3 {
        let permit = breaker.acquire().await.expect("allowed while closed");
        assert_eq!(permit.state(), Some(State::Closed));
        assert_eq!(permit.fallback(), None);
        permit.failure().await.expect("report");
    }
    let r = breaker.call(|| async { Ok::<_, Boom>(()) }).await;
    let rejected = r
        .expect_err("open")
        .rejection()
        .cloned()
        .expect("rejection");
    assert_eq!(rejected.state, State::Open);
    assert!(rejected.retry_after.expect("retry_after") <= Duration::from_millis(300));

    wait_state(&client, "tutorial", pb::State::HalfOpen).await;
    let probe = breaker.acquire().await.expect("the probe goes through");
    assert_eq!(probe.state(), Some(State::HalfOpen));
    match breaker.acquire().await {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.state, State::HalfOpen, "a second probe is refused");
            assert!(r.retry_after.is_some(), "until the probe's ttl");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    match probe.success().await.expect("report") {
        Reported::Daemon { state, stale, .. } => {
            assert_eq!(state, State::Closed);
            assert!(!stale);
        }
        other => panic!("expected a daemon report, got {other:?}"),
    }
    assert_eq!(
        breaker.call(|| async { Ok::<_, Boom>(1) }).await.ok(),
        Some(1)
    );
    let log = daemon.log();
    assert!(log.contains("3 consecutive failures"), "{log}");
    assert!(log.contains("1 probe succeeded"), "{log}");
}

/// A dropped permit (and a cancelled `call`) is reported as IGNORED: in half-open
/// the probe slot is freed, and the breaker neither closes nor re-opens.
#[tokio::test]
async fn dropped_permit_is_reported_as_ignored() {
    let (_dir, daemon) = daemon(&[]).await;
    let client = client(daemon.endpoint());
    let mut s = spec(1, 100);
    s.permit_ttl = Some(cbd_tests::ms(60_000)); // no expiry may free the slot instead
    put(&client, "drop/probe", s).await;
    let breaker = client.breaker("drop/probe");

    // CLOSED: an ignored outcome is not counted.
    drop(breaker.acquire().await.expect("allowed"));
    breaker
        .call(|| async { Ok::<_, Boom>(()) })
        .await
        .expect("closed");
    let closed = status(&client, "drop/probe").await;
    assert_eq!(closed.state(), pb::State::Closed);
    assert_eq!(closed.window_calls, 1, "only the success counts");

    breaker
        .acquire()
        .await
        .expect("allowed")
        .failure()
        .await
        .expect("report");
    let half_open = wait_state(&client, "drop/probe", pb::State::HalfOpen).await;

    let probe = breaker.acquire().await.expect("probe");
    assert_eq!(status(&client, "drop/probe").await.probes_in_flight, 1);
    assert!(breaker.acquire().await.is_err(), "the only slot is taken");
    drop(probe);
    let freed = eventually("the dropped probe's slot to be freed", || async {
        let s = status(&client, "drop/probe").await;
        (s.probes_in_flight == 0).then_some(s)
    })
    .await;
    assert_eq!(
        freed.state(),
        pb::State::HalfOpen,
        "neither closed nor opened"
    );
    assert_eq!(freed.generation, half_open.generation);
    assert_eq!(freed.half_open_successes, 0);

    // A `call` cancelled while its function runs: the same.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        breaker.call(|| async {
            std::future::pending::<()>().await;
            Ok::<_, Boom>(())
        }),
    )
    .await;
    assert!(cancelled.is_err(), "the call was cancelled");
    let freed = eventually("the cancelled call's slot to be freed", || async {
        let s = status(&client, "drop/probe").await;
        (s.probes_in_flight == 0).then_some(s)
    })
    .await;
    assert_eq!(freed.state(), pb::State::HalfOpen);
    assert_eq!(freed.generation, half_open.generation);

    // The slot is usable again; a success closes the breaker.
    breaker
        .call(|| async { Ok::<_, Boom>(()) })
        .await
        .expect("probe allowed again");
    assert_eq!(
        status(&client, "drop/probe").await.state(),
        pb::State::Closed
    );
}

#[tokio::test]
async fn request_errors_are_typed_by_code_and_not_fallen_back() {
    let (_dir, daemon) = daemon(&[]).await;
    let client = client(daemon.endpoint());

    match client.breaker("no/such/breaker").acquire().await {
        Err(e @ Error::NotFound(_)) => assert_eq!(e.code(), Some(tonic::Code::NotFound)),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    let r = client
        .breaker("bad name!")
        .call(|| async { Ok::<_, Boom>(()) })
        .await;
    assert!(
        matches!(r, Err(CallError::Client(Error::InvalidArgument(_)))),
        "{r:?}"
    );
    assert_eq!(client.fallback_decisions(), 0);
}
