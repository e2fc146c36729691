//! Service tests in process: the daemon's own router (`cbd::server::router`, guard
//! included) served over in-memory duplex connections, on a registry over sled in a
//! temporary directory. No process, no port.

use std::sync::Arc;

use cbd::{
    auth::Auth,
    config::Config,
    metrics::Metrics,
    permit::{PermitKey, Permits},
    registry::{Registry, RegistryConfig},
    server::{Services, router},
    service::watch::Watcher,
    store::sled::SledStore,
};
use cbd_proto::v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ADMIN: &str = "admin-token";
const CLIENT: &str = "client-token";

/// A daemon router in memory; dropped with its data dir.
struct InMemory {
    channel: Channel,
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
    let metrics = Metrics::new(config.metrics_max_breakers);
    let registry = Registry::open(
        Arc::new(store),
        RegistryConfig {
            max_breakers: config.max_breakers,
            watch_retention: config.watch_retention,
            templates: Vec::new(),
            metrics: metrics.clone(),
            clock: cbd::clock::Clock::wall(),
        },
    )
    .expect("registry");
    let permits = Arc::new(
        Permits::for_this_boot(&PermitKey::load_or_create(dir.path()).expect("key"))
            .expect("permits"),
    );
    let (_stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let watcher = Watcher::new(registry.clone(), config.max_watchers, stopping);
    let (_health, health) = tonic_health::server::health_reporter();
    let router = router(
        &config,
        Services {
            registry,
            watcher,
            permits,
            auth,
            metrics,
            health,
        },
        None,
    )
    .expect("router");

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
    InMemory { channel, _dir: dir }
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
        spec: None,
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
            pb::AcquireRequest { name: "a".into() },
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
        })
        .await
        .expect_err("bad name");
    assert_eq!(bad_acquire.code(), Code::InvalidArgument, "{bad_acquire:?}");
    assert!(
        bad_acquire.message().starts_with("name: "),
        "{bad_acquire:?}"
    );
}
