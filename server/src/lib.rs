//! cbd, the circuit-breaker daemon.
//!
//! Three layers (docs/DESIGN.md §2): the pure state machine (crate `cbd-breaker`), [`store`]
//! (sled), and thin [`service`] handlers, joined by the [`registry`].

pub mod atomic_file;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod guard;
pub mod idle;
pub mod layers;
pub mod methods;
pub mod metrics;
pub mod permit;
pub mod registry;
#[cfg(feature = "etcd")]
pub mod replica;
pub mod server;
pub mod service;
pub mod sever;
pub mod standby;
pub mod status;
pub mod store;
pub mod tls;

/// Trailing-metadata key of an `OUT_OF_RANGE` watch error: the oldest retained revision.
pub const COMPACT_REVISION_METADATA: &str = "cbd-compact-revision";

/// This build's version (the crate's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from (12 hex digits), or "unknown".
pub const GIT_COMMIT: &str = env!("CBD_GIT_COMMIT");

/// `cbd --version`: the version and the commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CBD_GIT_COMMIT"),
    ")"
);
