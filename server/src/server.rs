//! Wiring: storage, registry, services, health, reflection, and graceful shutdown.

use futures::TryStreamExt as _;
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use cbd_proto::v1::{admin_server::AdminServer, breakers_server::BreakersServer};
use tokio::{net::TcpListener, sync::watch};
use tonic::transport::{
    Server, ServerTlsConfig,
    server::{Router, TcpIncoming},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::{Health, HealthServer},
};
use tower::layer::util::{Identity, Stack};

use crate::{
    auth::Auth,
    config::{Config, StoreKind},
    error::Error,
    guard::{GuardConfig, GuardLayer},
    idle::{IdleTimeout, Timeouts},
    layers::leader::Leading,
    metrics::Metrics,
    permit::{PermitKey, Permits},
    registry::{Registry, RegistryConfig, StoreHealth},
    service::{AdminService, BreakersService, watch::Watcher},
    sever::{Severable, Severance},
    status::{ReplicationRole, StatusSources},
    store::sled::SledStore,
};

/// How long in-flight RPCs get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the daemon until `shutdown` resolves, then drains and flushes: one daemon on
/// sled, or a replica on etcd (`--store etcd`, [`crate::replica`]).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let prepared = Prepared::new(&config).await?;
    match config.store {
        StoreKind::Sled => run_on_sled(config, prepared, shutdown).await,
        #[cfg(feature = "etcd")]
        StoreKind::Etcd => crate::replica::run(config, prepared, shutdown).await,
        #[cfg(not(feature = "etcd"))]
        StoreKind::Etcd => Err(Error::invalid("--store", crate::config::NO_ETCD)),
    }
}

/// What is set up once per process, before any store is opened: everything that can
/// be wrong with the configuration files is found, and the address bound.
pub(crate) struct Prepared {
    pub(crate) auth: Option<Arc<Auth>>,
    pub(crate) tls: Option<ServerTlsConfig>,
    pub(crate) metrics: Metrics,
    /// The bound `--listen` socket; each serving phase accepts on a duplicate of it,
    /// so the port stays bound between a replica's phases.
    listener: std::net::TcpListener,
    /// The address bound.
    pub(crate) addr: SocketAddr,
}

impl Prepared {
    async fn new(config: &Config) -> Result<Self, Error> {
        let auth = match &config.auth_file {
            Some(path) => Some(Arc::new(Auth::load(path)?)),
            None => None,
        };
        let tls = crate::tls::server_config(config)?;
        let metrics = Metrics::new(config.metrics_max_breakers);
        // The address too is checked before the store is opened (and its files copied).
        let bind_error = |e: std::io::Error| {
            Error::invalid("--listen", format!("cannot bind {}: {e}", config.listen))
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(bind_error)?
            .into_std()
            .map_err(bind_error)?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::invalid("--listen", e.to_string()))?;
        spawn_reload_on_sighup(auth.clone());
        Ok(Self {
            auth,
            tls,
            metrics,
            listener,
            addr,
        })
    }

    /// A listener accepting on the bound socket, for one serving phase.
    pub(crate) fn listener(&self) -> Result<TcpListener, Error> {
        self.listener
            .try_clone()
            .and_then(TcpListener::from_std)
            .map_err(|e| Error::Storage(format!("listener: {e}")))
    }

    /// The connections of one serving phase, accepted on the bound socket. Nagle off:
    /// otherwise two overlapping RPCs on one connection can wait ~40 ms for a delayed
    /// ACK, longer than a client's Acquire deadline. Silent connections are closed
    /// (crate::idle), and every one ends when `severance` cuts.
    pub(crate) fn incoming(
        &self,
        config: &Config,
        severance: &Arc<Severance>,
    ) -> Result<
        impl futures::Stream<Item = std::io::Result<Severable<IdleTimeout<tokio::net::TcpStream>>>>
        + Send
        + 'static,
        Error,
    > {
        let timeouts = Timeouts {
            handshake: config.handshake_timeout,
            idle: config.idle_timeout,
        };
        let severance = severance.clone();
        Ok(TcpIncoming::from(self.listener()?)
            .with_nodelay(Some(true))
            .map_ok(move |tcp| severance.wrap(IdleTimeout::new(tcp, timeouts))))
    }

    /// Writes `--addr-file`, once the address is served.
    pub(crate) fn announce(&self, config: &Config) -> Result<(), Error> {
        match &config.addr_file {
            Some(path) => write_addr_file(path, self.addr),
            None => Ok(()),
        }
    }
}

/// One daemon on the sled store in `--data-dir`.
async fn run_on_sled(
    config: Config,
    prepared: Prepared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let data_dir = config.data_dir.clone();
    let force_recover = config.force_recover;
    let (store, permit_key) = tokio::task::spawn_blocking(move || {
        let store = SledStore::open_with(&data_dir, force_recover)?;
        Ok::<_, Error>((store, PermitKey::load_or_create(&data_dir)?))
    })
    .await
    .map_err(|e| Error::Storage(e.to_string()))??;
    let permits = Arc::new(Permits::for_this_boot(&permit_key)?);
    let registry = Registry::open(Arc::new(store), registry_config(&config, &prepared)?)?;
    tracing::info!(
        addr = %prepared.addr,
        data_dir = %config.data_dir.display(),
        tls = config.tls_cert.is_some(),
        mtls = config.tls_client_ca.is_some(),
        auth = config.auth_file.is_some(),
        "cbd serving"
    );
    let serving = Serving {
        registry,
        permits,
        leader: None,
        role: ReplicationRole::Standalone,
        metrics_slot: None,
    };
    serve_registry(
        &config,
        &prepared,
        serving,
        shutdown,
        std::future::pending(),
    )
    .await?;
    Ok(())
}

/// The registry's settings from the configuration.
pub(crate) fn registry_config(
    config: &Config,
    prepared: &Prepared,
) -> Result<RegistryConfig, Error> {
    Ok(RegistryConfig {
        max_breakers: config.max_breakers,
        watch_retention: config.watch_retention,
        templates: config.template_specs()?,
        metrics: prepared.metrics.clone(),
        clock: crate::clock::Clock::wall(),
    })
}

/// A registry to serve, and how.
pub(crate) struct Serving {
    pub(crate) registry: Registry,
    pub(crate) permits: Arc<Permits>,
    /// Whether this replica still leads; `None` on a daemon of its own.
    pub(crate) leader: Option<Arc<dyn Leading>>,
    pub(crate) role: ReplicationRole,
    /// A replica's metrics listener, which outlives this phase: it reads the registry
    /// from here. `None`: this phase serves `--metrics-listen` itself.
    pub(crate) metrics_slot: Option<Arc<MetricsSlot>>,
}

/// What a replica's process-wide metrics listener reads (docs/DESIGN.md §11.3): the
/// registry of the phase that leads, and readiness.
#[derive(Default)]
pub(crate) struct MetricsSlot {
    /// The leading phase's registry and Watch streams; `None` while standing by.
    current: parking_lot::Mutex<Option<(Registry, Watcher)>>,
    /// What `/readyz` says: the leader's health.
    pub(crate) ready: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for MetricsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSlot")
            .field("leading", &self.current.lock().is_some())
            .finish_non_exhaustive()
    }
}

impl MetricsSlot {
    /// Breakers held and Watch streams open; zero while standing by.
    #[cfg_attr(
        not(feature = "etcd"),
        expect(dead_code, reason = "only replicas (feature etcd) have a slot to read")
    )]
    pub(crate) fn gauges(&self) -> (usize, usize) {
        self.current
            .lock()
            .as_ref()
            .map_or((0, 0), |(registry, watcher)| {
                (registry.len(), watcher.active())
            })
    }
}

/// Empties the slot when its phase ends, however it ends.
struct Occupied(Arc<MetricsSlot>);

impl Drop for Occupied {
    fn drop(&mut self) {
        self.0.current.lock().take();
        self.0.ready.send_replace(false);
    }
}

/// How [`serve_registry`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `shutdown` resolved: drained, and every change flushed.
    Shutdown,
    /// `lost` resolved (leadership ended): every connection was cut at once and
    /// nothing more was committed.
    Lost,
}

/// Serves `serving.registry` on the prepared listener until `shutdown` (drain and
/// flush) or `lost` (cut every connection now: this replica no longer leads).
pub(crate) async fn serve_registry(
    config: &Config,
    prepared: &Prepared,
    serving: Serving,
    shutdown: impl Future<Output = ()> + Send + 'static,
    lost: impl Future<Output = ()> + Send + 'static,
) -> Result<Ended, Error> {
    let Serving {
        registry,
        permits,
        leader,
        role,
        metrics_slot,
    } = serving;
    let replica = leader.is_some();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let ready = metrics_slot.as_ref().map_or_else(
        || Arc::new(watch::Sender::new(false)),
        |slot| slot.ready.clone(),
    );
    let ready_rx = ready.subscribe();
    let health = Probes { reporter, ready };
    // NOT_SERVING until what recovery changed (OPEN breakers whose deadline passed
    // while the daemon was down are HALF_OPEN now) is durable: reads show only what
    // is committed, so a client that waits for SERVING sees the recovered states.
    set_health(&health, false).await;

    let (stopping_tx, stopping) = watch::channel(false);
    let watcher = Watcher::new(registry.clone(), config.max_watchers, stopping.clone());
    // Health follows the store (NOT_SERVING while a commit is being retried) until
    // shutdown. Shutdown: NOT_SERVING first, then end watch streams, then stop
    // accepting and let in-flight RPCs finish. One task does both, so a recovering
    // store can never turn a stopping daemon SERVING again. Leadership lost: the same,
    // and every connection is cut instead of drained.
    let (drain_tx, drain) = watch::channel(false);
    let (lost_tx, lost_rx) = watch::channel(false);
    let mut store_health = registry.store_health();
    let recovered = registry.clone();
    let mut ending = Box::pin(async move {
        tokio::select! {
            () = shutdown => Ended::Shutdown,
            () = lost => Ended::Lost,
        }
    });
    tokio::spawn(async move {
        let mut serving = false;
        let mut ended = tokio::select! {
            ended = &mut ending => Some(ended),
            synced = recovered.sync() => {
                serving = synced.is_ok() && *store_health.borrow_and_update() == StoreHealth::Serving;
                set_health(&health, serving).await;
                None
            }
        };
        while ended.is_none() {
            tokio::select! {
                e = &mut ending => ended = Some(e),
                changed = store_health.changed() => {
                    if changed.is_err() {
                        ended = Some(ending.as_mut().await);
                        break;
                    }
                    let ok = *store_health.borrow_and_update() == StoreHealth::Serving;
                    if ok != serving {
                        serving = ok;
                        tracing::warn!(serving, "health follows the store");
                        set_health(&health, ok).await;
                    }
                }
            }
        }
        set_health(&health, false).await;
        if ended == Some(Ended::Lost) {
            tracing::warn!("leadership lost: cutting every connection");
            let _ = lost_tx.send(true);
        } else {
            tracing::info!("shutdown requested: draining");
        }
        let _ = stopping_tx.send(true);
        let _ = drain_tx.send(true);
    });

    let occupied = metrics_slot.map(|slot| {
        *slot.current.lock() = Some((registry.clone(), watcher.clone()));
        Occupied(slot)
    });
    // A replica's own listener serves its metrics; a daemon of its own serves them here.
    if occupied.is_none()
        && let Some(metrics_addr) = config.metrics_listen
    {
        let gauges = {
            let registry = registry.clone();
            let watcher = watcher.clone();
            move || (registry.len(), watcher.active())
        };
        let dashboard = crate::dashboard::Dashboard {
            registry: registry.clone(),
            watcher: watcher.clone(),
            auth: prepared.auth.clone(),
            allow_actions: config.dashboard_allow_actions,
        };
        crate::metrics::serve(
            metrics_addr,
            prepared.metrics.clone(),
            gauges,
            ready_rx.clone(),
            dashboard.router(),
            wait_true(drain.clone()),
        )
        .await?;
    }

    let router = router(
        config,
        Services {
            registry: registry.clone(),
            watcher,
            permits,
            auth: prepared.auth.clone(),
            metrics: prepared.metrics.clone(),
            health: health_service,
            leader,
            role,
        },
        prepared.tls.clone(),
    )?;
    // Only a leader cuts its connections (when it stops leading).
    let severance = Arc::new(if replica {
        Severance::default()
    } else {
        Severance::never()
    });
    let server = router.serve_with_incoming_shutdown(
        prepared.incoming(config, &severance)?,
        wait_true(drain.clone()),
    );
    prepared.announce(config)?;

    let mut server = std::pin::pin!(server);
    let mut served = None;
    // The server also ends on the drain signal that follows a loss: the flag, not the
    // branch taken, says which end this is.
    let mut lost_signal = lost_rx.clone();
    let lost = tokio::select! {
        result = &mut server => {
            served = Some(result);
            *lost_rx.borrow()
        }
        // Err: the sender is gone, the health task having ended by shutdown.
        Ok(_) = lost_signal.wait_for(|lost| *lost) => true,
        () = async {
            wait_true(drain).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain timed out; closing remaining streams");
            false
        }
    };
    severance.cut();
    if lost {
        if served.is_none() {
            // Every connection fails at once; the server ends with them.
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, server).await;
        }
        tracing::warn!(revision = registry.revision(), "stopped leading");
        return Ok(Ended::Lost);
    }
    if let Some(result) = served {
        result.map_err(|e| Error::Storage(format!("transport: {e}")))?;
    }
    // Every change is durable before it is answered; this only waits for changes
    // whose callers went away mid-flight.
    match tokio::time::timeout(DRAIN_TIMEOUT, registry.sync()).await {
        Ok(synced) => synced?,
        Err(_) => tracing::warn!("final sync timed out"),
    }
    tracing::info!(revision = registry.revision(), "cbd stopped");
    Ok(Ended::Shutdown)
}

/// What the gRPC router serves.
#[allow(missing_debug_implementations)] // HealthServer is not Debug.
pub struct Services<H> {
    /// The breakers.
    pub registry: Registry,
    /// Watch streams, capped by `--max-watchers`.
    pub watcher: Watcher,
    /// This boot's permit key.
    pub permits: Arc<Permits>,
    /// Tokens, when `--auth-file` is set.
    pub auth: Option<Arc<Auth>>,
    /// Where RPC durations go.
    pub metrics: Metrics,
    /// The health service (its reporter stays with the caller).
    pub health: HealthServer<H>,
    /// Whether this replica leads; `None` on a daemon of its own store.
    pub leader: Option<Arc<dyn Leading>>,
    /// What `Status` says of this daemon among replicas.
    pub role: ReplicationRole,
}

/// The gRPC router the daemon serves: connection settings, TLS, the guard, health,
/// reflection and both cbd services. Tests serve the same router in memory.
pub fn router<H: Health>(
    config: &Config,
    services: Services<H>,
    tls: Option<ServerTlsConfig>,
) -> Result<Router<Stack<GuardLayer, Identity>>, Error> {
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cbd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Storage(format!("reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cbd_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| Error::Storage(format!("reflection: {e}")))?;

    let max = config.max_message_size;
    let breakers_service = BreakersService::new(
        services.registry.clone(),
        services.watcher.clone(),
        services.permits,
    );
    let status = StatusSources::new(
        services.registry.clone(),
        services.watcher,
        breakers_service.sessions().clone(),
        services.role,
    );
    let breakers = BreakersServer::new(breakers_service)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(4 * 1024 * 1024));
    let admin = AdminServer::new(AdminService::new(services.registry, status))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max.max(4 * 1024 * 1024));

    let builder = transport(config, tls)?;
    let guard = crate::guard::layer(GuardConfig {
        auth: services.auth,
        max_requests: config.max_concurrent_requests,
        timeout: config.request_timeout,
        max_message_size: max,
        metrics: services.metrics,
        leader: services.leader,
    });
    Ok(builder
        .layer(guard)
        .add_service(services.health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(breakers)
        .add_service(admin))
}

/// The transport every serving phase uses, a standby's included: connection settings
/// and TLS.
pub(crate) fn transport(config: &Config, tls: Option<ServerTlsConfig>) -> Result<Server, Error> {
    let builder = Server::builder()
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_keepalive_interval(Some(config.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout));
    match tls {
        Some(tls) => builder
            .tls_config(tls.timeout(config.handshake_timeout))
            .map_err(|e| Error::invalid("--tls-cert/--tls-key", e.to_string())),
        None => Ok(builder),
    }
}

/// Where health is shown: gRPC health, and `/readyz` on the metrics listener.
struct Probes {
    reporter: tonic_health::server::HealthReporter,
    ready: Arc<watch::Sender<bool>>,
}

/// Sets the overall status and that of each service, and what `/readyz` answers.
async fn set_health(health: &Probes, serving: bool) {
    health.ready.send_replace(serving);
    let health = &health.reporter;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <BreakersServer<BreakersService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    health
        .set_service_status(
            <AdminServer<AdminService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
    // A daemon on its own store decides: it is its own leader (docs/DESIGN.md §11).
    health
        .set_service_status(crate::standby::LEADER_HEALTH_SERVICE, status)
        .await;
}

/// The TLS settings, when `--tls-cert` is set; unreadable files name their flag.
/// Re-reads the auth file on SIGHUP; a bad file keeps the tokens in force. Without
/// an auth file SIGHUP is logged and ignored (it does not stop the daemon).
fn spawn_reload_on_sighup(auth: Option<Arc<Auth>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; the auth file will not be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match &auth {
                None => tracing::info!("SIGHUP: no --auth-file, nothing to reload"),
                Some(auth) => match auth.reload() {
                    Ok(tokens) => tracing::info!(tokens, "SIGHUP: auth file reloaded"),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: auth file not reloaded; the previous tokens stay in force"
                    ),
                },
            }
        }
    });
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Writes the address atomically, so a reader never sees half of it.
fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::invalid("--addr-file", format!("{}: {e}", path.display())))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signals() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
