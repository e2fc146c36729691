//! resilience4j's rules through a real daemon (README "Rules resilience4j users
//! know"): the knobs set with `cbctl put`'s flags, the half-open trial judged by its
//! rate, and the longest wait in half-open run on the daemon's own timers, each
//! change followed on Watch with its reason.

use std::time::Duration;

use cbd_proto::v1::{self as pb, watch_response::Kind};
use cbd_tests::{Daemon, acquire, cbctl, report};
use futures::StreamExt as _;

/// Generous: the timers here are a few hundred milliseconds, the machine is shared.
const WAIT: Duration = Duration::from_secs(15);

/// Watches `name` from the start of its history.
async fn watch(daemon: &Daemon, name: &str) -> tonic::Streaming<pb::WatchResponse> {
    daemon
        .breakers()
        .await
        .watch(pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                names: vec![name.into()],
                ..Default::default()
            }),
            start_revision: Some(1),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The next state change of the stream (snapshots, progress and spec puts skipped).
async fn next_change(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::Event {
    loop {
        let msg = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a watch message in time")
            .expect("stream open")
            .expect("no error");
        if let Some(Kind::Event(e)) = msg.kind
            && e.kind() == pb::EventKind::StateChanged
        {
            return e;
        }
    }
}

/// Acquires `name` (it must be allowed) and reports `outcome`.
async fn call(daemon: &Daemon, name: &str, outcome: pb::Outcome) {
    let mut client = daemon.breakers().await;
    let a = acquire(&mut client, name).await;
    assert!(a.allowed, "{a:?}");
    report(&mut client, &a.permit, outcome).await;
}

fn transition(e: &pb::Event) -> (pb::State, pb::State) {
    (e.previous_state(), e.state())
}

#[tokio::test]
async fn a_half_open_trial_is_judged_by_its_failure_rate() {
    let daemon = Daemon::fresh(&[]).await;
    let out = cbctl(
        &daemon,
        &[
            "put",
            "payments",
            "--consecutive-failures",
            "2",
            "--open-duration",
            "200ms",
            "--half-open-permits",
            "2",
            "--half-open-failure-rate",
            "50",
        ],
    )
    .await;
    assert!(out.contains("created"), "{out}");
    let shown = cbctl(&daemon, &["get", "payments"]).await;
    assert!(shown.contains("half_open_failure_rate = 50"), "{shown}");
    let mut stream = watch(&daemon, "payments").await;

    for _ in 0..2 {
        call(&daemon, "payments", pb::Outcome::Failure).await;
    }
    let trip = next_change(&mut stream).await;
    assert_eq!(transition(&trip), (pb::State::Closed, pb::State::Open));
    let half = next_change(&mut stream).await;
    assert_eq!(transition(&half), (pb::State::Open, pb::State::HalfOpen));

    // One failed probe of two is 50 %: re-opened at once, the other probe stale.
    let mut client = daemon.breakers().await;
    let first = acquire(&mut client, "payments").await;
    let second = acquire(&mut client, "payments").await;
    assert!(first.allowed && second.allowed, "{first:?} {second:?}");
    assert!(
        !acquire(&mut client, "payments").await.allowed,
        "a trial of two"
    );
    report(&mut client, &first.permit, pb::Outcome::Failure).await;
    let reopened = next_change(&mut stream).await;
    assert_eq!(
        transition(&reopened),
        (pb::State::HalfOpen, pb::State::Open)
    );
    assert_eq!(reopened.reason, "1 of 2 probes failed (>= 50%)");
    assert!(
        report(&mut client, &second.permit, pb::Outcome::Success)
            .await
            .stale
    );

    // The next trial: both probes succeed, and only the second closes it.
    let half = next_change(&mut stream).await;
    assert_eq!(transition(&half), (pb::State::Open, pb::State::HalfOpen));
    let first = acquire(&mut client, "payments").await;
    let second = acquire(&mut client, "payments").await;
    report(&mut client, &first.permit, pb::Outcome::Success).await;
    report(&mut client, &second.permit, pb::Outcome::Success).await;
    let closed = next_change(&mut stream).await;
    assert_eq!(
        transition(&closed),
        (pb::State::HalfOpen, pb::State::Closed)
    );
    assert_eq!(closed.reason, "0 of 2 probes failed (< 50%)");
}

#[tokio::test]
async fn half_open_with_no_probe_closes_after_its_max_wait() {
    let daemon = Daemon::fresh(&[]).await;
    cbctl(
        &daemon,
        &[
            "put",
            "search",
            "--consecutive-failures",
            "2",
            "--open-duration",
            "200ms",
            "--half-open-max-wait",
            "300ms",
            "--half-open-max-wait-closes",
            "true",
        ],
    )
    .await;
    let shown = cbctl(&daemon, &["get", "search"]).await;
    assert!(
        shown.contains("half_open_max_wait_closes = true"),
        "{shown}"
    );
    let mut stream = watch(&daemon, "search").await;

    for _ in 0..2 {
        call(&daemon, "search", pb::Outcome::Failure).await;
    }
    assert_eq!(
        transition(&next_change(&mut stream).await),
        (pb::State::Closed, pb::State::Open)
    );
    let half = next_change(&mut stream).await;
    assert_eq!(transition(&half), (pb::State::Open, pb::State::HalfOpen));
    // Nobody asks: the daemon's timer ends the wait, not an acquire.
    let closed = next_change(&mut stream).await;
    assert_eq!(
        transition(&closed),
        (pb::State::HalfOpen, pb::State::Closed)
    );
    assert_eq!(
        closed.reason,
        "no probe in 300ms of half-open, back to closed"
    );
    let waited = time_between(&half, &closed);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
}

#[tokio::test]
async fn the_compatibility_flags_refuse_bad_values_naming_the_key() {
    let daemon = Daemon::fresh(&[]).await;
    let cases: &[(&[&str], &str)] = &[
        (&["--half-open-failure-rate", "0"], "half-open-failure-rate"),
        (&["--half-open-max-wait", "25h"], "half_open_max_wait"),
        (
            &["--half-open-max-wait-closes", "true"],
            "half-open-max-wait",
        ),
        (
            &["--slow-includes-failures", "yes"],
            "slow-includes-failures",
        ),
        (&["--slow-includes-failures", "true"], "slow-call-rate"),
    ];
    for (flags, named) in cases {
        let out = tokio::process::Command::new(cbd_tests::cbctl_bin())
            .args(["--endpoint", &daemon.endpoint(), "put", "x"])
            .args(*flags)
            .env_remove("CBD_ENDPOINT")
            .env_remove("CBD_TOKEN")
            .output()
            .await
            .expect("run cbctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?} was accepted");
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
    }
    // Nothing was created by any of them.
    let missing = daemon
        .admin()
        .await
        .get_breaker(pb::GetBreakerRequest { name: "x".into() })
        .await
        .expect_err("no breaker x");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

fn time_between(a: &pb::Event, b: &pb::Event) -> Duration {
    let t = |e: &pb::Event| {
        let t = e.time.expect("a time");
        Duration::new(t.seconds as u64, t.nanos as u32)
    };
    t(b).saturating_sub(t(a))
}
