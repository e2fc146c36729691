//! A replica on etcd (`--store etcd`, docs/DESIGN.md §11.3): stands by until its
//! campaign wins, then leads until its lease's deadline passes or the process stops,
//! and stands by again.
//!
//! - Standby: serves [`crate::standby::routes`] (health, and UNAVAILABLE naming the
//!   leader for every other call) while campaigning.
//! - Leader: loads every breaker from etcd, and serves the registry on an
//!   [`EtcdStore`] fenced on this leadership, with every guarded call checked
//!   against the lease's deadline ([`Lease`]). At the deadline, or when the fence
//!   goes, every connection is cut, the registry closed, and the replica stands by.
//! - Shutdown: a leader drains, flushes and resigns (revokes its lease), so a
//!   standby takes over at once instead of after the TTL.
//!
//! Both phases accept on the one socket bound at start ([`Prepared`]).

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};
use tonic_health::ServingStatus;

use crate::{
    config::Config,
    error::Error,
    layers::leader::Leading,
    permit::Permits,
    registry::Registry,
    server::{Ended, MetricsSlot, Prepared, Serving, registry_config, serve_registry, transport},
    sever::Severance,
    standby::{self, LEADER_HEALTH_SERVICE},
    status::ReplicationRole,
    store::etcd::{
        Connection, EtcdOptions, EtcdStore,
        election::{Election, ElectionOptions, Leadership},
        shared_permit_key,
        warm::Warm,
    },
};

/// The pause before a campaign that failed (etcd unreachable) is tried again.
const CAMPAIGN_RETRY: Duration = Duration::from_millis(200);
/// How long a new leader waits for its warm copy, once it has read everything, to see
/// its own election before it reads everything from etcd instead.
const WARM_CATCH_UP: Duration = Duration::from_secs(1);

/// Runs a replica until `shutdown` resolves.
pub(crate) async fn run(
    config: Config,
    prepared: Prepared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let advertised = config.advertised(prepared.addr);
    let conn = Connection::connect(&etcd_options(&config)?).await?;
    let mut options = ElectionOptions::new(&config.etcd_prefix, &advertised);
    options.ttl = config.etcd_lease_ttl;
    let election = Election::new(conn.clone(), options);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    // One metrics listener for the process: /metrics and /readyz follow whichever
    // phase leads (nothing held and not ready while standing by).
    let metrics_slot = match config.metrics_listen {
        Some(addr) => {
            let slot = Arc::new(MetricsSlot::default());
            let gauges = {
                let slot = slot.clone();
                move || slot.gauges()
            };
            let mut stopping = stop.clone();
            crate::metrics::serve(
                addr,
                prepared.metrics.clone(),
                gauges,
                slot.ready.subscribe(),
                axum::Router::new(),
                async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                },
            )
            .await?;
            Some(slot)
        }
        None => None,
    };
    tracing::info!(
        addr = %prepared.addr,
        %advertised,
        etcd = ?config.etcd_endpoints,
        prefix = %config.etcd_prefix,
        "cbd replica serving as a standby until elected"
    );
    loop {
        let Some((leadership, warm)) = stand_by(
            &config,
            &prepared,
            &conn,
            &election,
            &advertised,
            stop.clone(),
        )
        .await?
        else {
            break;
        };
        let won = Won {
            leadership,
            warm,
            advertised: &advertised,
            metrics_slot: metrics_slot.clone(),
        };
        match lead(&config, &prepared, &conn, &election, won, stop.clone()).await {
            Ok(Ended::Shutdown) => {
                if let Err(e) = election.resign().await {
                    tracing::warn!(error = %e, "cannot resign; the lease ends by itself");
                }
                break;
            }
            Ok(Ended::Lost) => tracing::warn!("standing by again"),
            Err(e) => {
                tracing::error!(error = %e, "cannot lead; standing by");
                election.abandon();
            }
        }
        if *stop.borrow() {
            break;
        }
    }
    tracing::info!("cbd replica stopped");
    Ok(())
}

/// How to reach etcd, from the `--etcd-*` settings; the files named are read here.
fn etcd_options(config: &Config) -> Result<EtcdOptions, Error> {
    let mut options = EtcdOptions::new(config.etcd_endpoints.clone());
    if let (Some(user), Some(path)) = (&config.etcd_user, &config.etcd_password_file) {
        let password = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid("--etcd-password-file", format!("{}: {e}", path.display()))
        })?;
        options.user = Some((
            user.clone(),
            password.trim_end_matches(['\r', '\n']).to_owned(),
        ));
    }
    if let Some(ca) = &config.etcd_ca {
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| Error::invalid(flag, format!("{}: {e}", path.display())))
        };
        let mut tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("--etcd-ca", ca)?));
        if let (Some(cert), Some(key)) = (&config.etcd_cert, &config.etcd_key) {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read("--etcd-cert", cert)?,
                read("--etcd-key", key)?,
            ));
        }
        options.tls = Some(tls);
    }
    Ok(options)
}

/// What a standby hands its next phase when its campaign wins.
struct Won<'a> {
    leadership: Leadership,
    /// The warm copy it kept while standing by.
    warm: Warm,
    advertised: &'a str,
    /// Where the process's metrics listener reads the leader's registry.
    metrics_slot: Option<Arc<MetricsSlot>>,
}

/// Serves the standby routes, keeping a warm copy of the breakers, until this
/// replica's campaign wins (its leadership and the copy) or the process stops
/// (`None`).
async fn stand_by(
    config: &Config,
    prepared: &Prepared,
    conn: &Connection,
    election: &Election,
    advertised: &str,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<(Leadership, Warm)>, Error> {
    let warm = Warm::follow(conn, &config.etcd_prefix);
    let (reporter, health) = tonic_health::server::health_reporter();
    // The process serves (health answers), but does not lead: routers send clients
    // to the replica whose cbd.v1.Leader is SERVING.
    reporter
        .set_service_status(LEADER_HEALTH_SERVICE, ServingStatus::NotServing)
        .await;
    let severance = Arc::new(Severance::default());
    let (done_tx, done) = watch::channel(false);
    let server = transport(config, prepared.tls.clone())?
        .add_routes(standby::routes(
            health,
            others(election.observe(), advertised),
        ))
        .serve_with_incoming_shutdown(prepared.incoming(config, &severance)?, async move {
            let mut done = done;
            let _ = done.wait_for(|done| *done).await;
        });
    let server = tokio::spawn(server);
    prepared.announce(config)?;
    let won = loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break None,
            campaign = election.campaign() => match campaign {
                Ok(leadership) => {
                    tracing::info!(lease = leadership.lease, "elected");
                    break Some(leadership);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?CAMPAIGN_RETRY, "campaign failed");
                    tokio::time::sleep(CAMPAIGN_RETRY).await;
                }
            }
        }
    };
    // Standby answers are instant: nothing worth draining. Clients reconnect to the
    // leader's routes on this same socket.
    done_tx.send_replace(true);
    severance.cut();
    let _ = server.await;
    Ok(won.map(|leadership| (leadership, warm)))
}

/// `leader` without ourselves: a standby that still sees its own old leadership (its
/// etcd watch lagging) says no leader is known rather than send clients back to it.
fn others(
    mut leader: watch::Receiver<Option<String>>,
    ourselves: &str,
) -> watch::Receiver<Option<String>> {
    let ourselves = ourselves.to_owned();
    let not_us = move |l: &Option<String>| l.clone().filter(|l| *l != ourselves);
    let (tx, rx) = watch::channel(not_us(&leader.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                // The standby phase that read it is over.
                () = tx.closed() => return,
                changed = leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tx.send_replace(not_us(&leader.borrow_and_update()));
                }
            }
        }
    });
    rx
}

/// Leads: loads the breakers, serves them until the leadership ends or the process
/// stops.
async fn lead(
    config: &Config,
    prepared: &Prepared,
    conn: &Connection,
    election: &Arc<Election>,
    won: Won<'_>,
    stop: watch::Receiver<bool>,
) -> Result<Ended, Error> {
    let advertised = won.advertised;
    let started = Instant::now();
    let store = EtcdStore::new(
        conn.clone(),
        &config.etcd_prefix,
        election.fence(),
        config.etcd_max_txn_ops,
    );
    // The warm copy once it has seen our own key: then it holds every commit of the
    // old leader. Otherwise the registry reads everything from etcd.
    let warm = won
        .warm
        .loaded_at(won.leadership.create_revision, WARM_CATCH_UP)
        .await;
    let from = if warm.is_some() { "warm copy" } else { "etcd" };
    if let Some(loaded) = warm {
        store.preload(loaded);
    }
    drop(won.warm);
    let permits = Arc::new(Permits::for_this_boot(
        &shared_permit_key(conn, &config.etcd_prefix).await?,
    )?);
    let registry_config = registry_config(config, prepared)?;
    // The load is blocking (the Store contract); the registry spawns its tasks on
    // this runtime, which a blocking thread of it may do.
    let registry = tokio::task::spawn_blocking(move || Registry::open(store, registry_config))
        .await
        .map_err(|e| Error::Storage(format!("loading from etcd: {e}")))??;
    tracing::info!(
        breakers = registry.len(),
        revision = registry.revision(),
        from,
        took = ?started.elapsed(),
        "leading"
    );
    let serving = Serving {
        registry: registry.clone(),
        permits,
        leader: Some(Arc::new(Lease {
            election: election.clone(),
            leader: election.observe(),
            advertised: advertised.to_owned(),
        })),
        role: ReplicationRole::Leader {
            advertised: advertised.to_owned(),
        },
        metrics_slot: won.metrics_slot,
    };
    let mut stop = stop;
    let ended = serve_registry(
        config,
        prepared,
        serving,
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        },
        until_lost(election.clone()),
    )
    .await;
    registry.close();
    if !matches!(ended, Ok(Ended::Shutdown)) {
        // The deadline may have passed before the keep-alive task noticed: without
        // this the next campaign would find the old leadership still held.
        election.abandon();
    }
    ended
}

/// Resolves when this replica may no longer decide: its lease's deadline passed
/// ([`Election::deadline`]), or the fence went (the lease ended, or `P/leader` is
/// not ours).
async fn until_lost(election: Arc<Election>) {
    let mut fence = election.fence();
    loop {
        let Some(deadline) = election.deadline() else {
            return;
        };
        if Instant::now() >= deadline || fence.borrow_and_update().is_none() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            changed = fence.changed() => if changed.is_err() { return },
        }
    }
}

/// The leadership check of every guarded call on a leader: before the lease's
/// deadline, or refused naming the leader as etcd last said.
#[derive(Debug)]
struct Lease {
    election: Arc<Election>,
    leader: watch::Receiver<Option<String>>,
    advertised: String,
}

impl Leading for Lease {
    fn check(&self) -> Result<(), Error> {
        match self.election.deadline() {
            Some(deadline) if Instant::now() < deadline => Ok(()),
            _ => {
                // Not ourselves: we just found we no longer lead.
                let leader = self
                    .leader
                    .borrow()
                    .clone()
                    .filter(|l| *l != self.advertised);
                Err(Error::NotLeader { leader })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_standby_never_names_itself_as_the_leader() {
        let (leader_tx, leader) = watch::channel(Some("http://a:7411".to_owned()));
        let mut hint = others(leader, "http://a:7411");
        // Its own old leadership, still in its watch: no leader known.
        assert_eq!(*hint.borrow_and_update(), None);
        leader_tx.send_replace(Some("http://b:7411".to_owned()));
        hint.changed().await.expect("forwarded");
        assert_eq!(hint.borrow_and_update().as_deref(), Some("http://b:7411"));
        leader_tx.send_replace(Some("http://a:7411".to_owned()));
        hint.changed().await.expect("forwarded");
        assert_eq!(*hint.borrow_and_update(), None);
    }
}
