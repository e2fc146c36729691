//! What the in-process service tests share: the daemon's own router
//! (`cbd::server::router`, guard included) over a registry on a given store.

use std::{path::Path, sync::Arc};

use cbd::{
    auth::Auth,
    config::Config,
    guard::GuardLayer,
    metrics::Metrics,
    permit::{PermitKey, Permits},
    registry::{Registry, RegistryConfig},
    server::{Services, router},
    service::watch::Watcher,
    store::Store,
};
use tower::layer::util::{Identity, Stack};

/// The router a daemon with `config` serves, over `store`, its permit key in `dir`;
/// and the shutdown sender, to keep: dropping it ends every Watch stream.
pub fn daemon_router(
    config: &Config,
    store: Arc<dyn Store>,
    dir: &Path,
    auth: Option<Arc<Auth>>,
) -> (
    tonic::transport::server::Router<Stack<GuardLayer, Identity>>,
    tokio::sync::watch::Sender<bool>,
) {
    let metrics = Metrics::new(config.metrics_max_breakers);
    let registry = Registry::open(
        store,
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
        Permits::for_this_boot(&PermitKey::load_or_create(dir).expect("key")).expect("permits"),
    );
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let watcher = Watcher::new(registry.clone(), config.max_watchers, stopping);
    let (_health, health) = tonic_health::server::health_reporter();
    let router = router(
        config,
        Services {
            registry,
            watcher,
            permits,
            auth,
            metrics,
            health,
            leader: None,
            role: cbd::status::ReplicationRole::Standalone,
        },
        None,
    )
    .expect("router");
    (router, stopping_tx)
}
