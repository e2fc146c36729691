//! The Rust client of `cbd`, the circuit-breaker daemon (docs/DESIGN.md §8).
//!
//! One [`Client`] per process (cheap to clone: clones share one HTTP/2 channel) hands
//! out [`Breaker`] handles by name. A breaker guards calls in two ways:
//!
//! - [`Breaker::call`]: acquire, run an async function, report `Ok` as success and
//!   `Err` as failure with its duration ([`Breaker::call_with`] takes a classifier);
//!   a rejection is [`CallError::Rejected`] with the state and `retry_after`;
//! - [`Breaker::acquire`] → [`Permit`] with [`success`](Permit::success),
//!   [`failure`](Permit::failure), [`ignore`](Permit::ignore); a permit dropped
//!   unreported counts as ignored.
//!
//! [`BreakerLayer`] does the same for any `tower::Service`, and [`Client::watch`]
//! follows state changes with a stream that resumes by revision across daemon
//! restarts. When the daemon cannot be reached within the Acquire deadline (25 ms by
//! default), the breaker's spec says what happens: fail open, fail closed, or an
//! in-process breaker running the same state machine (`cbd-breaker`); see
//! [`Breaker`].
//!
//! ```no_run
//! use std::time::Duration;
//! use cbd_client::{CallError, Client};
//!
//! # async fn charge_card(cents: u64) -> Result<String, std::io::Error> { Ok(String::new()) }
//! #[tokio::main]
//! async fn main() -> Result<(), cbd_client::Error> {
//!     let client = Client::builder("http://127.0.0.1:7411")
//!         .acquire_deadline(Duration::from_millis(25))
//!         .build()?;
//!     let payments = client.breaker("payments/charge");
//!
//!     match payments.call(|| charge_card(1999)).await {
//!         Ok(receipt) => println!("charged: {receipt}"),
//!         Err(CallError::Rejected(r)) => {
//!             println!("payments are failing; try again in {:?}", r.retry_after)
//!         }
//!         Err(CallError::Inner(e)) => println!("charge failed (counted): {e}"),
//!         Err(CallError::Client(e)) => return Err(e),
//!     }
//!     println!("decisions made without the daemon: {}", client.fallback_decisions());
//!     Ok(())
//! }
//! ```
//!
//! Errors are typed by gRPC status code ([`Error`]), never by message text.
//! Spec management (get, list, put, delete, overrides, reset) goes through
//! [`Client::admin`] ([`Admin`]); the generated messages are in [`pb`].

mod admin;
mod breaker;
mod client;
mod error;
mod follow;
mod layer;
mod lease;
mod lease_session;
mod watch;

pub use admin::Admin;
pub use breaker::{Breaker, Permit, Reported, default_outcome};
pub use client::{
    AuthChannel, Client, ClientBuilder, ClientStats, DEFAULT_ACQUIRE_DEADLINE,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_LEASE_FLUSH_INTERVAL, DEFAULT_REPORT_DEADLINE,
    DEFAULT_SPEC_REFRESH, DEFAULT_WATCH_PROGRESS_INTERVAL, TokenInterceptor,
};
pub use error::{COMPACT_REVISION_METADATA, CallError, Error, Rejected};
pub use follow::Follow;
pub use layer::{BreakerLayer, BreakerService, Classify, ErrIsFailure, GrpcClassifier};
pub use watch::{OnCompaction, WatchEvent, WatchFilter, WatchStream};

pub use cbd_breaker::{Fallback, Outcome, Spec, State};
/// The generated `cbd.v1` messages and service clients.
pub use cbd_proto::v1 as pb;
