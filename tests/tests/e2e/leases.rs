//! Leases over Session, on the wire (docs/DESIGN.md §10): grants and refusals, leased
//! outcomes counted once by sequence number, revocations pushed to every session
//! holding a lease, and leases of an earlier run answered stale.

use std::time::Duration;

use cbd_proto::v1::{
    self as pb, breakers_client::BreakersClient, session_request::Kind as In,
    session_response::Kind as Out,
};
use cbd_tests::{Daemon, ms, put};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::UnboundedReceiverStream};
use tonic::{Code, transport::Channel};

const WAIT: Duration = Duration::from_secs(10);

/// One Session stream: send items, read answers.
struct Session {
    tx: mpsc::UnboundedSender<pb::SessionRequest>,
    answers: tonic::Streaming<pb::SessionResponse>,
    next_id: u64,
}

impl Session {
    async fn open(client: &mut BreakersClient<Channel>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = client
            .session(UnboundedReceiverStream::new(rx))
            .await
            .expect("session")
            .into_inner();
        Self {
            tx,
            answers,
            next_id: 0,
        }
    }

    /// Sends `kind` and returns the answer to it (pushes in between are returned
    /// in `pushed`).
    async fn ask(&mut self, kind: In, pushed: &mut Vec<pb::LeaseRevoked>) -> Out {
        self.next_id += 1;
        let id = self.next_id;
        self.tx
            .send(pb::SessionRequest {
                id,
                kind: Some(kind),
            })
            .expect("send");
        loop {
            let answer = tokio::time::timeout(WAIT, self.answers.next())
                .await
                .expect("an answer in time")
                .expect("stream open")
                .expect("no stream error");
            match answer.kind.expect("kind") {
                Out::Revoked(r) => pushed.push(r),
                kind if answer.id == id => return kind,
                other => panic!("answer to another id: {other:?}"),
            }
        }
    }

    async fn lease(&mut self, name: &str) -> pb::LeaseGrant {
        match self
            .ask(
                In::Lease(pb::LeaseRequest {
                    name: name.into(),
                    caller: String::new(),
                }),
                &mut Vec::new(),
            )
            .await
        {
            Out::Lease(grant) => grant,
            other => panic!("not a grant: {other:?}"),
        }
    }

    async fn outcomes(
        &mut self,
        item: pb::LeasedOutcomes,
        pushed: &mut Vec<pb::LeaseRevoked>,
    ) -> Result<pb::LeasedOutcomesAnswer, (i32, String)> {
        match self.ask(In::Outcomes(item), pushed).await {
            Out::Outcomes(a) => Ok(a),
            Out::Error(e) => Err((e.code, e.message)),
            other => panic!("not an outcomes answer: {other:?}"),
        }
    }

    /// The next push, within `WAIT`.
    async fn pushed(&mut self) -> pb::LeaseRevoked {
        let answer = tokio::time::timeout(WAIT, self.answers.next())
            .await
            .expect("a push in time")
            .expect("stream open")
            .expect("no stream error");
        assert_eq!(answer.id, 0, "pushes carry id 0");
        match answer.kind.expect("kind") {
            Out::Revoked(r) => r,
            other => panic!("not a revocation: {other:?}"),
        }
    }
}

fn leasable(consecutive_failures: u32) -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(consecutive_failures),
        open_duration: Some(ms(60_000)),
        cache_ttl: Some(ms(5_000)),
        ..Default::default()
    }
}

fn counts(lease: &[u8], sequence: u64, successes: u64, failures: u64) -> pb::LeasedOutcomes {
    pb::LeasedOutcomes {
        lease: lease.to_vec(),
        sequence,
        successes,
        failures,
        // Failures after the successes, as the daemon applies them.
        leading_failures: if successes == 0 { failures } else { 0 },
        longest_failure_run: failures,
        trailing_failures: failures,
        ..Default::default()
    }
}

async fn window(daemon: &Daemon, name: &str) -> (u32, u32, pb::State) {
    let b = cbd_tests::get_breaker(&mut daemon.admin().await, name).await;
    (b.window_calls, b.window_failures, b.state())
}

#[tokio::test]
async fn leases_are_granted_only_on_leasable_closed_breakers() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    put(&mut admin, "plain", pb::BreakerSpec::default()).await;
    put(&mut admin, "leased", leasable(3)).await;
    let mut session = Session::open(&mut daemon.breakers().await).await;

    let refused = session.lease("plain").await;
    assert!(!refused.granted && refused.lease.is_empty());
    assert_eq!(refused.refusal(), pb::LeaseRefusal::NotLeasable);

    let grant = session.lease("leased").await;
    assert!(grant.granted, "{grant:?}");
    assert_eq!(grant.state(), pb::State::Closed);
    assert_eq!(grant.valid_for, Some(ms(5_000)), "cache_ttl long");
    assert!(grant.valid_until.is_some() && grant.slow_call_duration.is_none());

    admin
        .set_override(pb::SetOverrideRequest {
            name: "leased".into(),
            r#override: pb::Override::ForcedClosed as i32,
            ..Default::default()
        })
        .await
        .expect("override");
    assert_eq!(
        session.lease("leased").await.refusal(),
        pb::LeaseRefusal::NotClosed,
        "under an override"
    );

    // A lease is not a permit, nor a permit a lease: each names its field.
    let mut client = daemon.breakers().await;
    let err = client
        .report(pb::ReportRequest {
            permit: grant.lease.clone(),
            outcome: pb::Outcome::Failure as i32,
            duration: None,
            caller: String::new(),
        })
        .await
        .expect_err("a lease reported as a permit");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("permit:"), "{}", err.message());
    let unknown = session
        .ask(
            In::Lease(pb::LeaseRequest {
                name: "nope".into(),
                caller: String::new(),
            }),
            &mut Vec::new(),
        )
        .await;
    assert!(matches!(unknown, Out::Error(e) if e.code == Code::NotFound as i32));
}

#[tokio::test]
async fn leased_outcomes_count_once_by_sequence_number() {
    let daemon = Daemon::fresh(&[]).await;
    put(&mut daemon.admin().await, "seq", leasable(100)).await;
    let mut session = Session::open(&mut daemon.breakers().await).await;
    let lease = session.lease("seq").await.lease;
    let mut pushed = Vec::new();

    let first = session
        .outcomes(counts(&lease, 1, 3, 1), &mut pushed)
        .await
        .expect("counted");
    assert!(!first.stale && !first.duplicate);
    assert_eq!(window(&daemon, "seq").await, (4, 1, pb::State::Closed));

    // Resent after a lost answer: acknowledged, counted nowhere.
    let again = session
        .outcomes(counts(&lease, 1, 3, 1), &mut pushed)
        .await
        .expect("answered");
    assert!(again.duplicate && !again.stale);
    assert_eq!(
        window(&daemon, "seq").await,
        (4, 1, pb::State::Closed),
        "not counted twice"
    );

    let gap = session
        .outcomes(counts(&lease, 3, 1, 0), &mut pushed)
        .await
        .expect_err("a gap");
    assert_eq!(gap.0, Code::FailedPrecondition as i32);
    assert!(
        gap.1.starts_with("sequence:") && gap.1.contains("next expected is 2"),
        "{}",
        gap.1
    );

    let bad = pb::LeasedOutcomes {
        longest_failure_run: 5,
        ..counts(&lease, 2, 1, 1)
    };
    let bad = session
        .outcomes(bad, &mut pushed)
        .await
        .expect_err("impossible counts");
    assert_eq!(bad.0, Code::InvalidArgument as i32);
    assert!(bad.1.starts_with("longest_failure_run:"), "{}", bad.1);

    let second = session
        .outcomes(counts(&lease, 2, 1, 0), &mut pushed)
        .await
        .expect("counted");
    assert!(!second.duplicate);
    assert_eq!(window(&daemon, "seq").await, (5, 1, pb::State::Closed));
    assert!(pushed.is_empty(), "nothing changed the breaker: {pushed:?}");
}

#[tokio::test]
async fn a_trip_is_pushed_to_every_session_holding_a_lease() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    put(&mut admin, "trip", leasable(3)).await;
    put(&mut admin, "other", leasable(3)).await;
    let mut client = daemon.breakers().await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let mut s = Session::open(&mut client).await;
        let lease = s.lease("trip").await.lease;
        assert!(s.lease("other").await.granted);
        sessions.push((s, lease));
    }
    // Two failures from one session and two from another: 2 + 2 in a row trips it.
    let mut pushed = Vec::new();
    let (s0, lease0) = &mut sessions[0];
    let a = s0
        .outcomes(counts(lease0, 1, 0, 2), &mut pushed)
        .await
        .expect("counted");
    assert_eq!(a.state(), pb::State::Closed);
    let (s1, lease1) = &mut sessions[1];
    let b = s1
        .outcomes(counts(lease1, 1, 0, 2), &mut pushed)
        .await
        .expect("counted");
    assert_eq!(
        b.state(),
        pb::State::Open,
        "the failure run continues across sessions"
    );

    for (i, (s, _)) in sessions.iter_mut().enumerate() {
        // Session 1 may have seen its push while waiting for its own answer.
        let revoked = if i == 1 && !pushed.is_empty() {
            pushed.remove(0)
        } else {
            s.pushed().await
        };
        assert_eq!(revoked.name, "trip", "session {i}");
        assert_eq!(revoked.cause(), pb::EventKind::StateChanged);
        assert_eq!(revoked.state(), pb::State::Open);
        assert_eq!(s.lease("trip").await.refusal(), pb::LeaseRefusal::NotClosed);
    }
    // Outcomes of calls allowed before the push: acknowledged, counted nowhere.
    let (s2, lease2) = &mut sessions[2];
    let late = s2
        .outcomes(counts(lease2, 1, 0, 5), &mut Vec::new())
        .await
        .expect("answered");
    assert!(late.stale);
    // The other breaker's leases hold: no push for it.
    let (s3, _) = &mut sessions[3];
    assert!(s3.lease("other").await.granted);
}

#[tokio::test]
async fn a_lease_of_an_earlier_run_counts_nothing() {
    let mut daemon = Daemon::fresh(&[]).await;
    put(&mut daemon.admin().await, "boot", leasable(100)).await;
    let mut session = Session::open(&mut daemon.breakers().await).await;
    let lease = session.lease("boot").await.lease;
    session
        .outcomes(counts(&lease, 1, 2, 0), &mut Vec::new())
        .await
        .expect("counted");
    drop(session);
    daemon.restart().await;
    let mut session = Session::open(&mut daemon.breakers().await).await;
    let again = session
        .outcomes(counts(&lease, 1, 2, 0), &mut Vec::new())
        .await
        .expect("answered");
    assert!(again.stale, "{again:?}");
    let next = session
        .outcomes(counts(&lease, 2, 7, 0), &mut Vec::new())
        .await
        .expect("answered");
    assert!(next.stale);
    assert_eq!(
        window(&daemon, "boot").await,
        (0, 0, pb::State::Closed),
        "nothing counted after the restart"
    );
}
