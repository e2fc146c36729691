//! The daemon cannot answer: stopped (`kill -9`, nothing listening) or stalled
//! (`kill -STOP`, the connection hangs). Acquire returns within its deadline and the
//! breaker's fallback policy decides.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use cbd_client::{Client, DEFAULT_ACQUIRE_DEADLINE, Error, Fallback, Reported, State, pb};
use cbd_tests::Daemon;
use tempfile::TempDir;

use crate::support::{ContOnDrop, daemon, eventually, put, spec, status};

/// The bound on a decision without the daemon: the deadline plus scheduling.
const BOUND: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Boom;

/// A daemon with one breaker per policy, and a client (default deadline) that has
/// learned their specs. The client's default policy is `FailClosed`, so that a
/// fail-open decision shows that the spec's policy was used.
async fn setup() -> (TempDir, Daemon, Client) {
    let (dir, daemon) = daemon(&[]).await;
    let client = Client::builder(daemon.endpoint())
        .default_fallback(Fallback::FailClosed)
        .build()
        .expect("client");
    for (name, fallback) in [
        ("f/open", pb::Fallback::FailOpen),
        ("f/closed", pb::Fallback::FailClosed),
        ("f/local", pb::Fallback::Local),
    ] {
        let mut s = spec(2, 60_000);
        s.fallback = fallback as i32;
        put(&client, name, s).await;
        let breaker = client.breaker(name);
        // The daemon decides (a loaded machine may miss the 25 ms deadline once).
        let permit = eventually(&format!("a daemon permit for {name}"), || async {
            breaker
                .acquire()
                .await
                .ok()
                .filter(|p| p.fallback().is_none())
        })
        .await;
        permit.success().await.expect("report");
        // Learned lazily in the background on first use.
        let learned = eventually(&format!("{name}'s spec"), || async { breaker.spec() }).await;
        assert_eq!(
            learned.fallback,
            cbd_proto::convert::fallback_from_proto(fallback)
        );
    }
    (dir, daemon, client)
}

/// Awaits `f`, asserting it took less than the deadline plus [`BOUND`].
async fn timed<T>(what: &str, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    let took = started.elapsed();
    assert!(
        took < DEFAULT_ACQUIRE_DEADLINE + BOUND,
        "{what} took {took:?}, more than the {DEFAULT_ACQUIRE_DEADLINE:?} deadline + {BOUND:?}"
    );
    out
}

/// With the daemon unable to answer: each policy decides, in time, and counts.
async fn check_fallbacks(client: &Client) {
    let before = client.fallback_decisions();

    // Fail open: allowed, and the outcome goes nowhere.
    let open = client.breaker("f/open");
    let permit = timed("fail-open acquire", open.acquire())
        .await
        .expect("fail open allows");
    assert_eq!(permit.fallback(), Some(Fallback::FailOpen));
    assert_eq!(permit.state(), None);
    assert_eq!(permit.failure().await.expect("report"), Reported::Nowhere);
    let value = timed("fail-open call", open.call(|| async { Ok::<_, Boom>(5) })).await;
    assert_eq!(value.expect("allowed"), 5);

    // Fail closed: rejected.
    match timed("fail-closed acquire", client.breaker("f/closed").acquire()).await {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.fallback, Some(Fallback::FailClosed));
            assert_eq!(r.state, State::Open);
            assert_eq!(r.retry_after, None);
        }
        other => panic!("expected a fail-closed rejection, got {other:?}"),
    }

    // Local: a fresh in-process breaker with the last known spec (2 failures trip
    // it, open for 60 s).
    let local = client.breaker("f/local");
    for (i, expected) in [State::Closed, State::Open].into_iter().enumerate() {
        let permit = timed("local acquire", local.acquire())
            .await
            .expect("the local breaker allows while closed");
        assert_eq!(permit.fallback(), Some(Fallback::Local));
        assert_eq!(permit.state(), Some(State::Closed));
        match permit.failure().await.expect("report") {
            Reported::Local { state, stale } => {
                assert_eq!(state, expected, "after local failure {}", i + 1);
                assert!(!stale);
            }
            other => panic!("expected a local report, got {other:?}"),
        }
    }
    match timed("local acquire when tripped", local.acquire()).await {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.fallback, Some(Fallback::Local));
            assert_eq!(r.state, State::Open);
            let retry = r.retry_after.expect("retry_after from the local breaker");
            assert!(
                retry > Duration::from_secs(50) && retry <= Duration::from_secs(60),
                "{retry:?}"
            );
        }
        other => panic!("expected a local rejection, got {other:?}"),
    }
    let r = timed(
        "local call when tripped",
        local.call(|| async { Ok::<_, Boom>(()) }),
    )
    .await;
    assert!(r.expect_err("rejected").is_rejected());

    // Every one of those decisions was counted: 2 fail-open, 1 fail-closed, 4 local.
    assert_eq!(client.fallback_decisions(), before + 7);

    // A client that never reached the daemon knows no spec: its default applies.
    let fresh = Client::builder(client.endpoint())
        .default_fallback(Fallback::Local)
        .build()
        .expect("client");
    let permit = timed(
        "default-policy acquire",
        fresh.breaker("f/closed").acquire(),
    )
    .await
    .expect("the default policy (local) allows");
    assert_eq!(permit.fallback(), Some(Fallback::Local));
    assert_eq!(fresh.fallback_decisions(), 1);
}

#[tokio::test]
async fn stalled_daemon_acquire_meets_its_deadline_and_falls_back() {
    let (_dir, daemon, client) = setup().await;
    {
        daemon.signal(cbd_tests::Signal::STOP);
        let _cont = ContOnDrop(&daemon);
        check_fallbacks(&client).await;
    }

    // The daemon answers again: it decides, the local breaker is discarded, and the
    // outcomes seen while away were not replayed into the daemon.
    let local = client.breaker("f/local");
    let permit = eventually("the daemon to answer again", || async {
        local
            .acquire()
            .await
            .ok()
            .filter(|p| p.fallback().is_none())
    })
    .await;
    assert_eq!(permit.state(), Some(State::Closed));
    permit.success().await.expect("report");
    let s = status(&client, "f/local").await;
    assert_eq!(s.state(), pb::State::Closed);
    assert_eq!(s.window_failures, 0, "local outcomes are not replayed");
}

#[tokio::test]
async fn stopped_daemon_acquire_meets_its_deadline_and_falls_back() {
    let (_dir, mut daemon, client) = setup().await;
    daemon.kill9();
    check_fallbacks(&client).await;
}
