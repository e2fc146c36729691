//! End-to-end tests of `cbd-client` against real `cbd` processes on `127.0.0.1:0`
//! (started by the `cbd-tests` harness, ready once their health check answers).
//!
//! One test binary, so the workspace links it once.

mod admin;
mod callers;
mod calls;
mod fallback;
mod follow;
mod layer;
mod leases;
mod quickstart;
mod security;
mod support;
mod watch;
