//! The breaker's scenarios end to end, against a real daemon over gRPC.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, acquire, ms, put, report, wait_state};
use futures::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn tutorial_three_failures_open_then_one_probe_closes() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(
        &mut admin,
        "tutorial",
        pb::BreakerSpec {
            consecutive_failures: Some(3),
            open_duration: Some(ms(1000)),
            ..Default::default()
        },
    )
    .await;

    for i in 1..=3 {
        let a = acquire(&mut client, "tutorial").await;
        assert!(a.allowed, "call {i} allowed while closed");
        let r = report(&mut client, &a.permit, pb::Outcome::Failure).await;
        let expected = if i < 3 {
            pb::State::Closed
        } else {
            pb::State::Open
        };
        assert_eq!(r.state(), expected, "after failure {i}");
    }

    let rejected = acquire(&mut client, "tutorial").await;
    assert!(!rejected.allowed);
    assert_eq!(rejected.state(), pb::State::Open);
    assert!(rejected.permit.is_empty());
    let retry = rejected.retry_after.expect("retry_after while open");
    let retry_ms = retry.seconds * 1000 + i64::from(retry.nanos) / 1_000_000;
    assert!((1..=1000).contains(&retry_ms), "retry_after {retry_ms} ms");

    // The timer moves it to HALF_OPEN with no traffic.
    wait_state(&mut admin, "tutorial", pb::State::HalfOpen, WAIT).await;
    let probe = acquire(&mut client, "tutorial").await;
    assert!(probe.allowed, "the probe goes through");
    assert_eq!(probe.state(), pb::State::HalfOpen);
    let second = acquire(&mut client, "tutorial").await;
    assert!(!second.allowed, "a second concurrent probe is refused");

    let closed = report(&mut client, &probe.permit, pb::Outcome::Success).await;
    assert_eq!(closed.state(), pb::State::Closed);
    assert!(!closed.stale);
    assert!(acquire(&mut client, "tutorial").await.allowed);

    let log = daemon.log();
    assert!(log.contains("3 consecutive failures"), "{log}");
    assert!(log.contains("1 probe succeeded"), "{log}");
}

#[tokio::test]
async fn failure_rate_trips_once_minimum_calls_are_in_the_window() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(
        &mut admin,
        "rate",
        pb::BreakerSpec {
            consecutive_failures: Some(100),
            failure_rate_percent: Some(50),
            minimum_calls: Some(10),
            window: Some(pb::breaker_spec::Window::CountWindow(pb::CountWindow {
                calls: 20,
            })),
            ..Default::default()
        },
    )
    .await;
    for i in 1..=10 {
        let a = acquire(&mut client, "rate").await;
        assert!(a.allowed, "call {i}");
        let outcome = if i % 2 == 0 {
            pb::Outcome::Failure
        } else {
            pb::Outcome::Success
        };
        let r = report(&mut client, &a.permit, outcome).await;
        let expected = if i < 10 {
            pb::State::Closed
        } else {
            pb::State::Open
        };
        assert_eq!(r.state(), expected, "after call {i}");
    }
    let log = daemon.log();
    assert!(
        log.contains("failure rate 50% >= 50% over 10 calls"),
        "{log}"
    );
}

#[tokio::test]
async fn slow_calls_trip_on_slow_call_rate() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(
        &mut admin,
        "slow",
        pb::BreakerSpec {
            consecutive_failures: Some(100),
            slow_call_rate_percent: Some(50),
            slow_call_duration: Some(ms(100)),
            minimum_calls: Some(4),
            ..Default::default()
        },
    )
    .await;
    // fast, slow, fast, slow: 50% slow after 4 calls, all of them successes.
    for (i, took) in [10u64, 500, 20, 800].into_iter().enumerate() {
        let a = acquire(&mut client, "slow").await;
        let r = client
            .report(pb::ReportRequest {
                permit: a.permit,
                outcome: pb::Outcome::Success as i32,
                duration: Some(ms(took)),
                caller: String::new(),
            })
            .await
            .expect("report")
            .into_inner();
        let expected = if i < 3 {
            pb::State::Closed
        } else {
            pb::State::Open
        };
        assert_eq!(r.state(), expected, "after call {}", i + 1);
    }
    assert!(
        daemon
            .log()
            .contains("slow call rate 50% >= 50% over 4 calls")
    );
}

#[tokio::test]
async fn unreported_probe_expires_after_permit_ttl() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(
        &mut admin,
        "ttl",
        pb::BreakerSpec {
            consecutive_failures: Some(1),
            open_duration: Some(ms(100)),
            permit_ttl: Some(ms(200)),
            ..Default::default()
        },
    )
    .await;
    // The transitions are short-lived: follow them on a watch rather than by polling.
    let mut events = client
        .watch(pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                prefix: String::new(),
                names: vec!["ttl".into()],
            }),
            start_revision: Some(1),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut next_state_change = async || loop {
        let msg = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("ok");
        if let Some(pb::watch_response::Kind::Event(e)) = msg.kind
            && e.kind() == pb::EventKind::StateChanged
        {
            return e;
        }
    };

    let a = acquire(&mut client, "ttl").await;
    report(&mut client, &a.permit, pb::Outcome::Failure).await;
    assert_eq!(next_state_change().await.state(), pb::State::Open);
    assert_eq!(next_state_change().await.state(), pb::State::HalfOpen);
    let probe = acquire(&mut client, "ttl").await;
    assert!(probe.allowed);

    // Never reported: the timer expires it, which counts as a failure and re-opens.
    let expired = next_state_change().await;
    assert_eq!(
        (expired.previous_state(), expired.state()),
        (pb::State::HalfOpen, pb::State::Open)
    );
    assert_eq!(expired.reason, "probe expired");
    assert!(expired.generation > probe.generation);

    // The breaker moves on: half-open again with the slot free, and the late report is stale.
    assert_eq!(next_state_change().await.state(), pb::State::HalfOpen);
    let late = report(&mut client, &probe.permit, pb::Outcome::Success).await;
    assert!(late.stale);
    assert_eq!(late.state(), pb::State::HalfOpen);
    assert!(
        acquire(&mut client, "ttl").await.allowed,
        "the expired probe's slot is free"
    );
}

#[tokio::test]
async fn sixty_four_clients_never_hold_more_than_half_open_permits() {
    const PERMITS: usize = 3;
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(
        &mut admin,
        "hot",
        pb::BreakerSpec {
            consecutive_failures: Some(1),
            open_duration: Some(ms(50)),
            half_open_permits: Some(PERMITS as u32),
            success_threshold: Some(PERMITS as u32),
            permit_ttl: Some(ms(60_000)),
            ..Default::default()
        },
    )
    .await;
    let a = acquire(&mut client, "hot").await;
    report(&mut client, &a.permit, pb::Outcome::Failure).await;
    wait_state(&mut admin, "hot", pb::State::HalfOpen, WAIT).await;

    // Held permits as the clients see them: counted up after the daemon granted one
    // and down before it is given back, so it never exceeds the daemon's own count.
    let held = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let channel = daemon.channel().await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (held, most) = (held.clone(), most.clone());
            let mut client = pb::breakers_client::BreakersClient::new(channel.clone());
            tokio::spawn(async move {
                for _ in 0..20 {
                    let a = acquire(&mut client, "hot").await;
                    if !a.allowed {
                        continue;
                    }
                    let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    held.fetch_sub(1, Ordering::SeqCst);
                    // Ignored frees the slot and keeps the breaker half-open.
                    report(&mut client, &a.permit, pb::Outcome::Ignored).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most >= 1, "some probe was granted");
    assert!(
        most <= PERMITS,
        "{most} permits held at once, limit {PERMITS}"
    );
    let status = wait_state(&mut admin, "hot", pb::State::HalfOpen, WAIT).await;
    assert_eq!(status.probes_in_flight, 0);
}

#[tokio::test]
async fn a_time_windows_counts_in_get_and_list_are_as_of_now() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(
        &mut admin,
        "windowed",
        pb::BreakerSpec {
            failure_rate_percent: Some(90),
            minimum_calls: Some(2),
            window: Some(pb::breaker_spec::Window::TimeWindow(pb::TimeWindow {
                duration: Some(ms(500)),
                buckets: 5,
            })),
            ..Default::default()
        },
    )
    .await;
    for outcome in [pb::Outcome::Failure, pb::Outcome::Success] {
        let a = acquire(&mut client, "windowed").await;
        report(&mut client, &a.permit, outcome).await;
    }
    // Nothing is called after this: only the clock moves the window on.
    cbd_tests::eventually(WAIT, "GetBreaker shows an empty window", || {
        let mut admin = admin.clone();
        async move {
            let b = admin
                .get_breaker(pb::GetBreakerRequest {
                    name: "windowed".into(),
                })
                .await
                .expect("get")
                .into_inner()
                .breaker
                .expect("breaker");
            (b.window_calls == 0 && b.window_failures == 0).then_some(())
        }
    })
    .await;
    let listed = admin
        .list_breakers(pb::ListBreakersRequest {
            prefix: "windowed".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.breakers[0].window_calls, 0, "{listed:?}");
}
