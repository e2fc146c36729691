//! Lease revocations are pushed at the change, before its commit (docs/DESIGN.md §10):
//! the daemon's own router on an ephemeral 127.0.0.1 port, over a store whose
//! commits the test stalls (`cbd::store::faults`), talked to with real gRPC.

use std::{sync::Arc, time::Duration};

use cbd::{
    config::Config,
    store::{
        faults::{Fault, FaultStore, When},
        memory::MemoryStore,
    },
};
use cbd_proto::v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt as _, wrappers::UnboundedReceiverStream};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod support;

/// How long a test waits for something that should come at once before failing.
const PATIENCE: Duration = Duration::from_secs(10);

struct Daemon {
    channel: Channel,
    endpoint: String,
    store: Arc<FaultStore>,
    _stopping: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// The daemon's router over a fault store on 127.0.0.1:0, ready (health answered).
async fn start() -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::default();
    let store = FaultStore::wrap(MemoryStore::new());
    let (router, stopping_tx) = support::daemon_router(&config, store.clone(), dir.path(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_lazy();
    // Ready when health answers (the listener is bound already; this checks serving).
    let mut health = HealthClient::new(channel.clone());
    tokio::time::timeout(PATIENCE, async {
        while health.check(HealthCheckRequest::default()).await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the daemon serves");
    Daemon {
        channel,
        endpoint: format!("http://{addr}"),
        store,
        _stopping: stopping_tx,
        _dir: dir,
    }
}

/// One Session stream: what the test sends, and what comes back.
struct Session {
    tx: mpsc::UnboundedSender<pb::SessionRequest>,
    rx: tonic::Streaming<pb::SessionResponse>,
}

impl Session {
    async fn open(channel: &Channel) -> Self {
        let (tx, requests) = mpsc::unbounded_channel();
        let rx = BreakersClient::new(channel.clone())
            .session(UnboundedReceiverStream::new(requests))
            .await
            .expect("session")
            .into_inner();
        Self { tx, rx }
    }

    async fn next(&mut self) -> pb::session_response::Kind {
        tokio::time::timeout(PATIENCE, self.rx.next())
            .await
            .expect("an answer in time")
            .expect("the stream is open")
            .expect("no stream error")
            .kind
            .expect("a kind")
    }

    /// Asks for a lease on `name` and expects it granted.
    async fn leased(&mut self, name: &str) {
        self.tx
            .send(pb::SessionRequest {
                id: 1,
                kind: Some(pb::session_request::Kind::Lease(pb::LeaseRequest {
                    name: name.into(),
                    ..Default::default()
                })),
            })
            .expect("send");
        match self.next().await {
            pb::session_response::Kind::Lease(g) => assert!(g.granted, "{g:?}"),
            other => panic!("not a grant: {other:?}"),
        }
    }

    async fn revoked(&mut self) -> pb::LeaseRevoked {
        match self.next().await {
            pb::session_response::Kind::Revoked(r) => r,
            other => panic!("not a revocation: {other:?}"),
        }
    }
}

/// Puts `name`: tripped by one failure, leased for a minute.
async fn put_leasable(daemon: &Daemon, name: &str) {
    AdminClient::new(daemon.channel.clone())
        .put_breaker(pb::PutBreakerRequest {
            name: name.into(),
            spec: Some(pb::BreakerSpec {
                consecutive_failures: Some(1),
                cache_ttl: Some(cbd_proto::convert::duration_to_proto(Duration::from_secs(
                    60,
                ))),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("put");
}

/// Trips `name` (one failure) with its commit stalled; the report's task waits for
/// the release.
async fn trip_stalled(
    daemon: &Daemon,
    name: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::ReportResponse>, tonic::Status>> {
    let mut breakers = BreakersClient::new(daemon.channel.clone());
    let permit = breakers
        .acquire(pb::AcquireRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("acquire")
        .into_inner()
        .permit;
    daemon.store.inject(When::Nth(1), Fault::Stall);
    let tripping = tokio::spawn(async move {
        breakers
            .report(pb::ReportRequest {
                permit,
                outcome: pb::Outcome::Failure as i32,
                ..Default::default()
            })
            .await
    });
    tokio::time::timeout(PATIENCE, daemon.store.stalled(1))
        .await
        .expect("the trip's commit stalls");
    tripping
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_revokes_every_leased_session_while_its_commit_is_held() {
    let daemon = start().await;
    put_leasable(&daemon, "t").await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let mut s = Session::open(&daemon.channel).await;
        s.leased("t").await;
        sessions.push(s);
    }
    // The trip's commit stalls until released: its report waits, the push must not.
    let tripping = trip_stalled(&daemon, "t").await;
    for s in &mut sessions {
        let r = s.revoked().await;
        assert_eq!(r.name, "t");
        assert_eq!(r.cause(), pb::EventKind::StateChanged);
        assert_eq!(r.state(), pb::State::Open);
        assert_eq!(r.revision, 0, "pushed before the commit: no revision yet");
    }
    assert!(
        !tripping.is_finished(),
        "the report still waits for its commit"
    );

    daemon.store.release();
    let reported = tokio::time::timeout(PATIENCE, tripping)
        .await
        .expect("answered once committed")
        .expect("task")
        .expect("report")
        .into_inner();
    assert_eq!(reported.state(), pb::State::Open);
    // The commit seen, each session follows up with its revision: a client that
    // refused locally on the uncommitted OPEN now asks the daemon again.
    for s in &mut sessions {
        let r = s.revoked().await;
        assert_eq!((r.name.as_str(), r.state()), ("t", pb::State::Open));
        assert!(r.revision > 0, "committed: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_refuses_locally_while_the_trip_commits_then_asks_the_daemon() {
    use cbd_client::{CallError, Client, Outcome};
    let daemon = start().await;
    put_leasable(&daemon, "r").await;
    let client = Client::builder(daemon.endpoint.clone())
        .build()
        .expect("client");
    let breaker = client.breaker("r");
    let ok = || std::future::ready(Ok::<(), std::io::Error>(()));
    tokio::time::timeout(PATIENCE, async {
        while client.stats().leases_granted == 0 {
            breaker
                .call_with(|_| Outcome::Ignored, ok)
                .await
                .expect("allowed");
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("leased");

    let tripping = trip_stalled(&daemon, "r").await;
    let before = client.stats();
    // Every call returns at once: under the lease until the push, then refused in
    // process. An Acquire now would wait for the stalled commit and time out here.
    let refused = tokio::time::timeout(PATIENCE, async {
        loop {
            match breaker.call_with(|_| Outcome::Ignored, ok).await {
                Err(CallError::Rejected(r)) => break r,
                Ok(()) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("refused while the commit is held");
    assert_eq!(refused.state, cbd_client::State::Open);
    assert_eq!(refused.fallback, None);
    let during = client.stats();
    assert_eq!(during.refused_locally, before.refused_locally + 1);
    assert_eq!(
        during.rpc_decisions, before.rpc_decisions,
        "no Acquire answered"
    );
    assert_eq!(during.leases_revoked, before.leases_revoked + 1);
    assert!(!tripping.is_finished(), "the trip is not committed yet");

    daemon.store.release();
    tokio::time::timeout(PATIENCE, tripping)
        .await
        .expect("committed")
        .expect("task")
        .expect("report");
    // The follow-up push ends the local refusal: the daemon decides again.
    let asked = tokio::time::timeout(PATIENCE, async {
        loop {
            match breaker.call(ok).await {
                Err(CallError::Rejected(r))
                    if client.stats().rpc_decisions > during.rpc_decisions =>
                {
                    break r;
                }
                Err(CallError::Rejected(_)) => tokio::task::yield_now().await,
                other => panic!("an OPEN breaker allowed a call: {other:?}"),
            }
        }
    })
    .await
    .expect("the daemon is asked again once the trip committed");
    assert_eq!(asked.state, cbd_client::State::Open);
    assert_eq!(
        client.stats().leases_revoked,
        during.leases_revoked,
        "the follow-up is not a second revocation"
    );
}
