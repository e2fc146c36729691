//! End-to-end tests of the daemon: real `cbd` processes on ephemeral loopback ports,
//! ready once their health check answers, spoken to over real gRPC (and HTTP for
//! metrics). One test binary, so the workspace links it once; each module is one
//! concern, and every test starts its own daemon (`Daemon::fresh`).

mod bad_input;
mod callers;
mod compat;
mod connections;
mod damage;
mod dashboard;
mod deploy;
mod disk_full;
mod durability;
mod fsync;
mod leases;
mod limits;
mod metrics;
mod overrides;
mod permits;
mod scenarios;
mod security;
mod session;
mod status;
mod watch;
