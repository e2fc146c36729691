//! The pure circuit-breaker state machine shared by the cbd daemon and its Rust client
//! (docs/DESIGN.md §3).
//!
//! No I/O, no clock reads: every method that needs the time takes `now`. The daemon
//! wraps each [`Breaker`] in a lock, persists [`Persisted`] on every [`Transition`],
//! and calls [`Breaker::tick`] at [`Breaker::next_deadline`].
//!
//! ```
//! use std::time::Duration;
//! use cbd_breaker::{Breaker, Outcome, Spec, State, Timestamp};
//!
//! let spec = Spec { consecutive_failures: Some(1), ..Spec::default() };
//! spec.validate().unwrap();
//! let mut b = Breaker::new(spec);
//! let now = Timestamp::from_unix_nanos(0);
//! let a = b.acquire(now);
//! assert!(a.allowed);
//! let r = b.report(a.permit.unwrap(), Outcome::Failure, None, now).unwrap();
//! assert_eq!(r.state, State::Open);
//! assert_eq!(r.transition.unwrap().reason.to_string(), "1 consecutive failure");
//! assert_eq!(b.acquire(now).retry_after, Some(Duration::from_secs(30)));
//! ```

mod aggregate;
mod answer;
mod callers;
mod error;
mod ledger;
mod machine;
mod name;
mod reason;
mod spec;
mod state;
mod time;
mod window;

pub use aggregate::Aggregate;
pub use answer::{Acquired, PermitToken, Persisted, Reported, Status, Transition};
pub use callers::{CallerId, CallerTally, MAX_CALLERS, TOP_FAILING_CALLERS};
pub use error::Error;
pub use ledger::MAX_SPAN as MAX_PERMIT_SPAN;
pub use machine::{Breaker, Lease};
pub use name::{MAX_NAME_LEN, validate_name};
pub use reason::Reason;
pub use spec::{
    DEFAULT_CONSECUTIVE_FAILURES, Fallback, MAX_CACHE_TTL, MAX_HALF_OPEN_PERMITS,
    MAX_OPEN_DURATION, MAX_SLOW_CALL_DURATION, MAX_WINDOW_BUCKETS, MAX_WINDOW_CALLS,
    MAX_WINDOW_DURATION, MIN_BUCKET_DURATION, Spec, WindowSpec,
};
pub use state::{Outcome, Override, State};
pub use time::Timestamp;
