//! What `cbd.v1.Admin/Status` answers (`cbctl status`): the daemon's numbers, read
//! from where they already live — the registry (revisions, breakers, leases, the last
//! commit, the store) and the Watch and Session stream counters — into one struct.
//! The handler only converts it to the wire.

use std::time::Duration;

use cbd_breaker::Timestamp;

use crate::{
    registry::{LastCommit, Registry, StoreHealth},
    service::{session::Sessions, watch::Watcher},
};

/// Where a daemon stands among replicas (docs/DESIGN.md §11). A standby serves no
/// Status: it answers UNAVAILABLE naming the leader, which `cbctl status` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationRole {
    /// One daemon on its own store.
    Standalone,
    /// The replica that decides, reachable at `advertised` (`--advertise-url`).
    Leader {
        /// This replica's advertised URL.
        advertised: String,
    },
}

/// One daemon's status, as of [`StatusSources::gather`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonStatus {
    /// The crate version (`cbd --version`).
    pub version: &'static str,
    /// The git commit built from (12 hex digits, or "unknown").
    pub git_commit: &'static str,
    /// When the registry was opened, on its clock.
    pub started_at: Timestamp,
    /// Since `started_at`, on the same clock.
    pub uptime: Duration,
    /// The last committed revision (0: none ever).
    pub revision: u64,
    /// The oldest revision in the event log (`revision + 1` when it is empty).
    pub oldest_retained: u64,
    /// Breakers held.
    pub breakers: usize,
    /// Open Watch streams.
    pub watchers: usize,
    /// Open Session streams.
    pub sessions: usize,
    /// Leases in their term and generation ([`Registry::leases_held`]).
    pub leases: usize,
    /// Bytes of the store's files; `None`: nothing on disk, or not measurable.
    pub store_size_bytes: Option<u64>,
    /// The latest group commit; `None` before the first of this run.
    pub last_commit: Option<LastCommit>,
    /// Why commits fail, while they do; `None` while the store commits.
    pub store_fault: Option<String>,
    /// Standalone, or the leader of replicas.
    pub role: ReplicationRole,
}

/// The places [`DaemonStatus`] is read from. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StatusSources {
    registry: Registry,
    watcher: Watcher,
    sessions: Sessions,
    role: ReplicationRole,
}

impl StatusSources {
    /// Reads `registry`, the Watch streams of `watcher` and the Session streams
    /// counted in `sessions`, on a daemon in `role`.
    pub fn new(
        registry: Registry,
        watcher: Watcher,
        sessions: Sessions,
        role: ReplicationRole,
    ) -> Self {
        Self {
            registry,
            watcher,
            sessions,
            role,
        }
    }

    /// The status now. Never fails: a store that cannot be measured leaves the size
    /// unset (logged), since the rest is still worth showing.
    pub async fn gather(&self) -> DaemonStatus {
        let registry = &self.registry;
        let store_size_bytes = match registry.store_size().await {
            Ok(size) => size,
            Err(e) => {
                tracing::warn!(error = %e, "status: cannot measure the store's size");
                None
            }
        };
        let started_at = registry.started_at();
        let store_fault = match &*registry.store_health().borrow() {
            StoreHealth::Serving => None,
            StoreHealth::Failing { cause } => Some(cause.clone()),
        };
        DaemonStatus {
            version: crate::VERSION,
            git_commit: crate::GIT_COMMIT,
            started_at,
            uptime: registry.clock().now().saturating_duration_since(started_at),
            revision: registry.revision(),
            oldest_retained: registry.oldest_retained(),
            breakers: registry.len(),
            watchers: self.watcher.active(),
            sessions: self.sessions.count(),
            leases: registry.leases_held(),
            store_size_bytes,
            last_commit: registry.last_commit(),
            store_fault,
            role: self.role.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cbd_breaker::{Override, Spec};

    use super::*;
    use crate::{
        clock::Clock, metrics::Metrics, registry::RegistryConfig, store::memory::MemoryStore,
    };

    /// Sources over a registry on a memory store and a manual clock.
    fn sources() -> (StatusSources, Registry) {
        let registry = Registry::open(
            MemoryStore::new(),
            RegistryConfig {
                max_breakers: 10,
                watch_retention: 100,
                templates: Vec::new(),
                metrics: Metrics::new(10),
                clock: Clock::manual(crate::clock::now()),
            },
        )
        .expect("registry");
        let (_stop, stopping) = tokio::sync::watch::channel(false);
        let watcher = Watcher::new(registry.clone(), 10, stopping);
        let sources = StatusSources::new(
            registry.clone(),
            watcher,
            Sessions::default(),
            ReplicationRole::Standalone,
        );
        (sources, registry)
    }

    #[tokio::test]
    async fn uptime_follows_the_clock_and_leases_count_in_their_term_and_generation() {
        let (sources, registry) = sources();
        let first = sources.gather().await;
        assert_eq!(first.uptime, Duration::ZERO);
        assert_eq!(
            (first.revision, first.oldest_retained, first.breakers),
            (0, 1, 0)
        );
        assert_eq!(first.last_commit, None, "nothing committed yet");
        assert_eq!(first.store_size_bytes, None, "a memory store has no files");
        assert_eq!(first.store_fault, None);
        assert_eq!(
            (first.version, first.git_commit),
            (crate::VERSION, crate::GIT_COMMIT)
        );

        let spec = Spec {
            cache_ttl: Some(Duration::from_secs(10)),
            ..Spec::default()
        };
        let put = registry
            .put("leased", spec, &cbd_proto::v1::Operator::default())
            .await
            .expect("put");
        registry.lease("leased").await.expect("lease");
        registry.clock().advance(Duration::from_secs(4));
        registry.lease("leased").await.expect("renewal");
        let now = sources.gather().await;
        assert_eq!(now.uptime, Duration::from_secs(4));
        assert_eq!(now.breakers, 1);
        assert_eq!(now.leases, 2, "a renewal is a lease of its own");
        let commit = now.last_commit.expect("the put committed");
        assert_eq!((commit.revision, commit.events), (put.revision, 1));

        // The first lease's term ends 10 s after it was granted; the renewal's at 14 s.
        registry.clock().advance(Duration::from_secs(7));
        assert_eq!(sources.gather().await.leases, 1);
        // A new generation voids the other one before its term ends.
        registry
            .set_override(
                "leased",
                Some(Override::ForcedOpen),
                None,
                &cbd_proto::v1::Operator::default(),
            )
            .await
            .expect("override");
        let forced = sources.gather().await;
        assert_eq!(forced.leases, 0);
        assert_eq!(forced.revision, put.revision + 1);
        assert_eq!(
            forced.last_commit.map(|c| c.revision),
            Some(put.revision + 1)
        );
    }
}
