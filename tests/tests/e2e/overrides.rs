//! Accountable overrides against a real daemon: an override set with `cbctl
//! force-open --for` clears itself on the daemon's timer (followed on Watch), and
//! who made each change and why is kept in the event log and the breaker's record,
//! read back with `cbctl history` after a restart.

use std::time::Duration;

use cbd_proto::v1::{self as pb, watch_response::Kind};
use cbd_tests::{Daemon, acquire, cbctl, get_breaker, ms, put, with_token};
use futures::StreamExt as _;
use serde_json::Value;

/// Generous: the override lasts 2 s, and the machine is shared.
const WAIT: Duration = Duration::from_secs(15);

/// The next event of `name` on the stream (snapshots and progress skipped).
async fn next_event(stream: &mut tonic::Streaming<pb::WatchResponse>) -> pb::Event {
    loop {
        let msg = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a watch message in time")
            .expect("stream open")
            .expect("no error");
        if let Some(Kind::Event(e)) = msg.kind {
            return e;
        }
    }
}

fn spec() -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(3),
        open_duration: Some(ms(60_000)),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_override_for_a_duration_clears_itself_seen_on_watch() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    let created = put(&mut admin, "payments", spec()).await;
    let mut stream = client
        .watch(pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                names: vec!["payments".into()],
                ..Default::default()
            }),
            start_revision: Some(created.revision + 1),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();

    let out = cbctl(
        &daemon,
        &[
            "force-open",
            "payments",
            "--for",
            "2s",
            "--reason",
            "INC-123",
        ],
    )
    .await;
    assert!(out.contains("override FORCED_OPEN until "), "{out}");

    let set = next_event(&mut stream).await;
    assert_eq!(set.kind(), pb::EventKind::OverrideSet);
    let operator = set.operator.clone().expect("an operator change");
    assert_eq!(operator.actor, "anonymous", "no --auth-file");
    assert!(operator.peer.starts_with("127.0.0.1:"), "{operator:?}");
    assert_eq!(operator.reason, "INC-123");
    let until = set.override_until.expect("an expiry");
    let set_at = set.time.expect("a time");
    let lasted =
        (until.seconds - set_at.seconds) * 1_000_000_000 + i64::from(until.nanos - set_at.nanos);
    assert_eq!(lasted, 2_000_000_000, "until = set time + 2s");
    assert!(!acquire(&mut client, "payments").await.allowed);

    // The daemon clears it by itself; the test waits on the stream, not a clock.
    let expired = next_event(&mut stream).await;
    assert_eq!(
        expired.kind(),
        pb::EventKind::OverrideExpired,
        "{expired:?}"
    );
    assert_eq!(expired.r#override(), pb::Override::Unspecified);
    assert_eq!(expired.state(), pb::State::Closed);
    assert_eq!(expired.operator, None, "a timer, not an operator");
    assert_eq!(expired.reason, "FORCED_OPEN override expired");
    let expired_at = expired.time.expect("a time");
    assert!(
        (expired_at.seconds, expired_at.nanos) >= (until.seconds, until.nanos),
        "not before its time: {expired_at:?} < {until:?}"
    );
    let b = get_breaker(&mut admin, "payments").await;
    assert_eq!(b.r#override(), pb::Override::Unspecified);
    assert_eq!((b.override_operator, b.override_until), (None, None));
    assert!(acquire(&mut client, "payments").await.allowed);
}

#[tokio::test]
async fn bad_override_durations_and_reasons_are_refused_naming_the_field() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    put(&mut admin, "o", spec()).await;
    let cases = [
        (Some(ms(0)), "", pb::Override::ForcedOpen, "duration"),
        (
            Some(ms(31 * 24 * 3_600_000)),
            "",
            pb::Override::ForcedOpen,
            "duration",
        ),
        (Some(ms(1000)), "", pb::Override::Unspecified, "duration"),
        (None, "line\nbreak", pb::Override::ForcedOpen, "reason"),
    ];
    for (duration, reason, which, field) in cases {
        let status = admin
            .set_override(pb::SetOverrideRequest {
                name: "o".into(),
                r#override: which as i32,
                reason: reason.into(),
                duration,
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    let long = "x".repeat(257);
    let status = admin
        .reset_breaker(pb::ResetBreakerRequest {
            name: "o".into(),
            reason: long,
        })
        .await
        .expect_err("too long");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("reason"), "{status:?}");
    // Nothing of that was applied.
    let b = get_breaker(&mut admin, "o").await;
    assert_eq!(b.r#override(), pb::Override::Unspecified);
}

#[tokio::test]
async fn history_shows_actor_and_reason_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nrole = \"admin\"\ntoken = \"alice-token\"\nname = \"alice\"\n\n\
         [[token]]\nrole = \"admin\"\ntoken = \"ops-token\"\n",
    )
    .expect("write tokens");
    let mut daemon = Daemon::start(
        &dir.path().join("data"),
        &["--auth-file", tokens.to_str().expect("utf-8")],
    )
    .await;
    let mut admin = daemon.admin().await;
    admin
        .put_breaker(with_token(
            pb::PutBreakerRequest {
                name: "payments".into(),
                spec: Some(spec()),
                reason: "onboarding payments".into(),
            },
            "alice-token",
        ))
        .await
        .expect("put");
    for (token, which, reason) in [
        (
            "alice-token",
            pb::Override::ForcedOpen,
            "INC-123: provider down",
        ),
        ("ops-token", pb::Override::Unspecified, ""),
    ] {
        admin
            .set_override(with_token(
                pb::SetOverrideRequest {
                    name: "payments".into(),
                    r#override: which as i32,
                    reason: reason.into(),
                    duration: None,
                },
                token,
            ))
            .await
            .expect("override");
    }
    // The one in force now is kept with the breaker, and survives the restart too.
    admin
        .set_override(with_token(
            pb::SetOverrideRequest {
                name: "payments".into(),
                r#override: pb::Override::ForcedClosed as i32,
                reason: "INC-124".into(),
                duration: Some(ms(3_600_000)),
            },
            "alice-token",
        ))
        .await
        .expect("force closed");
    daemon.restart().await;

    let out = cbctl(
        &daemon,
        &[
            "--token",
            "alice-token",
            "-o",
            "json",
            "history",
            "payments",
        ],
    )
    .await;
    let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let events = json["events"].as_array().expect("events");
    let rows: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind"),
                e["operator"]["actor"].as_str().unwrap_or("-"),
                e["operator"]["reason"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("EVENT_KIND_SPEC_PUT", "alice", "onboarding payments"),
            ("EVENT_KIND_OVERRIDE_SET", "alice", "INC-123: provider down"),
            ("EVENT_KIND_OVERRIDE_CLEARED", "admin", ""),
            ("EVENT_KIND_OVERRIDE_SET", "alice", "INC-124"),
        ]
    );
    for e in events {
        let peer = e["operator"]["peer"].as_str().expect("peer");
        assert!(peer.starts_with("127.0.0.1:"), "{e}");
    }
    assert!(events[3]["override_until"].is_string(), "{}", events[3]);

    let table = cbctl(&daemon, &["--token", "ops-token", "history", "payments"]).await;
    assert!(table.starts_with("REVISION"), "{table}");
    assert!(table.contains("INC-123: provider down"), "{table}");
    assert!(table.contains("alice@127.0.0.1:"), "{table}");

    let b = get_breaker_as(&mut daemon, "payments").await;
    assert_eq!(b.r#override(), pb::Override::ForcedClosed);
    let op = b.override_operator.expect("kept across the restart");
    assert_eq!(
        (op.actor.as_str(), op.reason.as_str()),
        ("alice", "INC-124")
    );
    assert!(b.override_until.is_some());
}

async fn get_breaker_as(daemon: &mut Daemon, name: &str) -> pb::BreakerStatus {
    daemon
        .admin()
        .await
        .get_breaker(with_token(
            pb::GetBreakerRequest { name: name.into() },
            "ops-token",
        ))
        .await
        .expect("get")
        .into_inner()
        .breaker
        .expect("breaker")
}
