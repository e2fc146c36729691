//! Service tests in process: the daemon's own router (`cbd::server::router`, guard
//! included) served over in-memory duplex connections, on a registry over sled in a
//! temporary directory. No process, no port.

use std::sync::Arc;

use cbd::{auth::Auth, config::Config, store::sled::SledStore};
use cbd_proto::v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

mod support;

const ADMIN: &str = "admin-token";
const CLIENT: &str = "client-token";

/// A daemon router in memory; dropped with its data dir.
struct InMemory {
    channel: Channel,
    /// Kept, not dropped: a closed shutdown channel ends every Watch stream.
    _stopping: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Serves the daemon's router for `config` over duplex pipes, with tokens for both
/// roles when `auth` is set.
async fn serve(mut config: Config, auth: bool) -> InMemory {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = auth.then(|| {
        let path = dir.path().join("tokens.toml");
        std::fs::write(
            &path,
            format!(
                "[[token]]\nrole = \"admin\"\ntoken = \"{ADMIN}\"\n\
                 [[token]]\nrole = \"client\"\ntoken = \"{CLIENT}\"\n"
            ),
        )
        .expect("write tokens");
        Arc::new(Auth::load(&path).expect("tokens"))
    });
    config.data_dir = dir.path().join("data");
    let store = SledStore::open(&config.data_dir).expect("open sled");
    let (router, stopping_tx) = support::daemon_router(&config, Arc::new(store), dir.path(), auth);

    // Each connect makes a pipe and hands its server end to the router.
    let (conns_tx, conns_rx) = mpsc::unbounded_channel();
    tokio::spawn(router.serve_with_incoming(
        tokio_stream::wrappers::UnboundedReceiverStream::new(conns_rx).map(Ok::<_, std::io::Error>),
    ));
    let channel = tonic::transport::Endpoint::from_static("http://in-memory")
        .connect_with_connector(tower::service_fn(move |_| {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let sent = conns_tx.send(server);
            async move {
                sent.map_err(|_| std::io::Error::other("router stopped"))?;
                Ok::<_, std::io::Error>(TokioIo::new(client))
            }
        }))
        .await
        .expect("connect");
    InMemory {
        channel,
        _stopping: stopping_tx,
        _dir: dir,
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
    }
    request
}

fn put(name: &str) -> pb::PutBreakerRequest {
    pb::PutBreakerRequest {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn no_token_is_unauthenticated_and_the_wrong_role_permission_denied() {
    let daemon = serve(Config::default(), true).await;
    let mut admin = AdminClient::new(daemon.channel.clone());
    let missing = admin.put_breaker(put("a")).await.expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let denied = admin
        .put_breaker(with_token(put("a"), Some(CLIENT)))
        .await
        .expect_err("client role");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert_eq!(
        denied.message(),
        "role client may not call cbd.v1.Admin/PutBreaker"
    );
    admin
        .put_breaker(with_token(put("a"), Some(ADMIN)))
        .await
        .expect("admin may put");
    // The client role may acquire.
    BreakersClient::new(daemon.channel.clone())
        .acquire(with_token(
            pb::AcquireRequest {
                name: "a".into(),
                caller: String::new(),
            },
            Some(CLIENT),
        ))
        .await
        .expect("client may acquire");
}

#[tokio::test]
async fn past_the_request_limit_is_resource_exhausted_but_health_is_unguarded() {
    // No slot at all, so every guarded request is refused without racing a held one.
    // (`validate` refuses 0 from a user; the guard's unit test holds the only slot.)
    let config = Config {
        max_concurrent_requests: 0,
        ..Config::default()
    };
    let daemon = serve(config, true).await;
    let refused = AdminClient::new(daemon.channel.clone())
        .put_breaker(with_token(put("a"), Some(ADMIN)))
        .await
        .expect_err("no slot");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-concurrent-requests"),
        "{refused:?}"
    );
    // Health needs no token and takes no slot.
    let health = HealthClient::new(daemon.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is unguarded");
    assert_eq!(
        health.into_inner().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn an_oversize_message_is_resource_exhausted_naming_the_flag() {
    let config = Config {
        max_message_size: 1024,
        ..Config::default()
    };
    config.validate().expect("a valid config");
    let daemon = serve(config, false).await;
    let too_large = AdminClient::new(daemon.channel.clone())
        .put_breaker(put(&"a".repeat(2000)))
        .await
        .expect_err("too large");
    assert_eq!(too_large.code(), Code::ResourceExhausted, "{too_large:?}");
    assert!(
        too_large
            .message()
            .starts_with("--max-message-size reached: request message of"),
        "{too_large:?}"
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let daemon = serve(Config::default(), false).await;
    let mut admin = AdminClient::new(daemon.channel.clone());
    let bad_name = admin.put_breaker(put("")).await.expect_err("empty name");
    assert_eq!(bad_name.code(), Code::InvalidArgument, "{bad_name:?}");
    assert!(bad_name.message().starts_with("name: "), "{bad_name:?}");
    let missing = admin
        .get_breaker(pb::GetBreakerRequest {
            name: "nope".into(),
        })
        .await
        .expect_err("absent");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let bad_acquire = BreakersClient::new(daemon.channel.clone())
        .acquire(pb::AcquireRequest {
            name: "bad name!".into(),
            caller: String::new(),
        })
        .await
        .expect_err("bad name");
    assert_eq!(bad_acquire.code(), Code::InvalidArgument, "{bad_acquire:?}");
    assert!(
        bad_acquire.message().starts_with("name: "),
        "{bad_acquire:?}"
    );
}

async fn status(admin: &mut AdminClient<Channel>) -> pb::StatusResponse {
    admin
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// Polls Status until `done` holds (the server learns of a closed stream when the
/// transport tells it, not when the client drops it); at most 10 s.
async fn status_until(
    admin: &mut AdminClient<Channel>,
    what: &str,
    done: impl Fn(&pb::StatusResponse) -> bool,
) -> pb::StatusResponse {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = status(admin).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {s:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn status_counts_revisions_breakers_and_open_streams() {
    let daemon = serve(Config::default(), false).await;
    let mut admin = AdminClient::new(daemon.channel.clone());
    let fresh = status(&mut admin).await;
    assert_eq!(
        (fresh.version.as_str(), fresh.git_commit.as_str()),
        (cbd::VERSION, cbd::GIT_COMMIT)
    );
    assert_eq!(fresh.role(), pb::ReplicationRole::Standalone);
    assert_eq!(fresh.leader, "");
    assert_eq!((fresh.revision, fresh.oldest_retained_revision), (0, 1));
    assert_eq!(
        (fresh.breakers, fresh.watchers, fresh.sessions, fresh.leases),
        (0, 0, 0, 0)
    );
    assert_eq!(fresh.last_commit, None);
    assert_eq!(fresh.store_fault, "");
    assert!(
        fresh.store_size_bytes.is_some_and(|n| n > 0),
        "sled has files: {fresh:?}"
    );
    assert!(fresh.started_at.is_some() && fresh.uptime.is_some());

    // The revision moves with each put, and the last commit is the latest put's.
    let a = admin
        .put_breaker(put("a"))
        .await
        .expect("put a")
        .into_inner();
    let b = admin
        .put_breaker(put("b"))
        .await
        .expect("put b")
        .into_inner();
    let two = status(&mut admin).await;
    assert_eq!(two.revision, b.revision);
    assert!(b.revision > a.revision && a.revision > fresh.revision);
    assert_eq!(two.breakers, 2);
    let commit = two.last_commit.expect("a commit");
    assert_eq!((commit.revision, commit.events), (b.revision, 1));
    assert!(commit.duration.is_some() && commit.committed_at.is_some());
    admin
        .delete_breaker(pb::DeleteBreakerRequest {
            name: "a".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    assert_eq!(status(&mut admin).await.breakers, 1);

    // A Watch counts while it is open.
    let mut watch = BreakersClient::new(daemon.channel.clone())
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("snapshot").expect("a message");
    assert_eq!(status(&mut admin).await.watchers, 1);
    drop(watch);
    status_until(&mut admin, "the watch ended", |s| s.watchers == 0).await;

    // So does a Session.
    let (items, rx) = mpsc::channel(4);
    let mut session = BreakersClient::new(daemon.channel.clone())
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    items
        .send(pb::SessionRequest {
            id: 1,
            kind: Some(pb::session_request::Kind::Acquire(pb::AcquireRequest {
                name: "b".into(),
                caller: String::new(),
            })),
        })
        .await
        .expect("send");
    let answer = session.message().await.expect("answer").expect("a message");
    assert_eq!(answer.id, 1);
    let open = status(&mut admin).await;
    assert_eq!((open.sessions, open.watchers), (1, 0));
    drop(items);
    drop(session);
    status_until(&mut admin, "the session ended", |s| s.sessions == 0).await;
}

#[tokio::test]
async fn status_is_read_access_for_the_client_role() {
    let daemon = serve(Config::default(), true).await;
    let mut admin = AdminClient::new(daemon.channel.clone());
    let missing = admin
        .status(pb::StatusRequest {})
        .await
        .expect_err("no token");
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    for token in [CLIENT, ADMIN] {
        admin
            .status(with_token(pb::StatusRequest {}, Some(token)))
            .await
            .unwrap_or_else(|e| panic!("{token} may call Status: {e:?}"));
    }
}
