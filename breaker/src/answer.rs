//! What the machine hands back: answers, transitions, permits, status and the
//! persisted record.

use std::time::Duration;

use crate::{Override, Reason, State, Timestamp};

/// What the store keeps across restarts (docs/DESIGN.md §6). Window counts are NOT in it,
/// nor are half-open probes in flight: after a restart their slots are free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persisted {
    /// The machine's state (under `SHADOW`, the state it would enforce).
    pub state: State,
    /// The operator's override, if any.
    pub override_: Option<Override>,
    /// The breaker's generation.
    pub generation: u64,
    /// When an OPEN breaker goes HALF_OPEN. `None` unless OPEN; `None` under
    /// `FORCED_OPEN` (it holds until an operator clears it).
    pub open_until: Option<Timestamp>,
    /// Failed half-open trials in a row; drives the open-duration backoff.
    pub backoff_level: u32,
    /// When the override clears by itself (`cbctl force-open --for`). `None`: it
    /// holds until an operator clears it, or there is no override.
    pub override_until: Option<Timestamp>,
}

/// The breaker-side part of a permit (the daemon encodes it with the name into
/// opaque, authenticated bytes). Each permit counts at most once: a second report of
/// the same permit is stale.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PermitToken {
    /// The generation the permit was issued in; a report from an older one is stale.
    pub generation: u64,
    /// Unique among the permits this machine issued: 1, 2, 3, … in issue order.
    pub serial: u64,
    /// A half-open probe (it holds one of the `half_open_permits` slots).
    pub probe: bool,
}

/// The answer to [`Breaker::acquire`](crate::Breaker::acquire).
#[derive(Clone, Debug, PartialEq)]
pub struct Acquired {
    /// Whether the call may proceed.
    pub allowed: bool,
    /// `Some` iff `allowed`; the caller reports the outcome with it.
    pub permit: Option<PermitToken>,
    /// The effective state after this call: `FORCED_OPEN` shows `Open`,
    /// `FORCED_CLOSED` and `DISABLED` show `Closed`, `SHADOW` shows the machine's state.
    pub state: State,
    /// The breaker's generation after this call.
    pub generation: u64,
    /// When rejected: how long until asking again makes sense. While OPEN, the time
    /// until `open_until`; while HALF_OPEN and full, the time until the earliest probe
    /// expires. `None` when allowed, and under `FORCED_OPEN` (until an operator
    /// clears it).
    pub retry_after: Option<Duration>,
    /// Until when the client may reuse this answer without asking: `now + cache_ttl`.
    /// Only in CLOSED with no override and `cache_ttl` set; else `None`.
    pub valid_until: Option<Timestamp>,
    /// Under `SHADOW` only: the machine would have rejected this call.
    pub shadow_rejected: bool,
    /// A state change this call caused, e.g. a lazy OPEN → HALF_OPEN.
    pub transition: Option<Transition>,
}

/// The answer to [`Breaker::report`](crate::Breaker::report).
#[derive(Clone, Debug, PartialEq)]
pub struct Reported {
    /// The permit is from an older generation, or was never handed out in this one
    /// (e.g. a probe already reported or expired): acknowledged, nothing changed.
    pub stale: bool,
    /// The effective state after this report.
    pub state: State,
    /// The breaker's generation after this report.
    pub generation: u64,
    /// A state change this report caused.
    pub transition: Option<Transition>,
}

/// One state change, override change or reset. Each bumps the generation by one.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    /// The effective state before.
    pub from: State,
    /// The effective state after.
    pub to: State,
    /// The override before.
    pub from_override: Option<Override>,
    /// The override after.
    pub to_override: Option<Override>,
    /// The new generation.
    pub generation: u64,
    /// Why it happened.
    pub reason: Reason,
    /// When it happened (the `now` of the call that caused it).
    pub at: Timestamp,
}

/// A snapshot for operators ([`Breaker::status`](crate::Breaker::status)).
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// The effective state (see [`Acquired::state`]).
    pub state: State,
    /// The operator's override, if any.
    pub override_: Option<Override>,
    /// The breaker's generation.
    pub generation: u64,
    /// When an OPEN breaker goes HALF_OPEN; `None` unless OPEN, and under `FORCED_OPEN`.
    pub open_until: Option<Timestamp>,
    /// Failed half-open trials in a row.
    pub backoff_level: u32,
    /// When the override clears by itself; `None`: never, or no override.
    pub override_until: Option<Timestamp>,
    /// Failures in a row while CLOSED.
    pub consecutive_failures: u32,
    /// Counted outcomes in the window, as of the last report or tick (a time window
    /// only drops old buckets when given a `now`).
    pub window_calls: u32,
    /// Failures among `window_calls`.
    pub window_failures: u32,
    /// Slow successes among `window_calls`.
    pub window_slow_calls: u32,
    /// Half-open probes handed out and not yet reported or expired.
    pub probes_in_flight: u32,
    /// Probe successes so far in this HALF_OPEN period.
    pub half_open_successes: u32,
}
