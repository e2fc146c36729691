//! The state machine itself (docs/DESIGN.md §3).

use std::fmt;
use std::time::Duration;

mod leased;

pub use leased::Lease;

use crate::callers::{CallerId, CallerTally, Callers, TOP_FAILING_CALLERS};
use crate::ledger::Ledger;
use crate::spec::MAX_HALF_OPEN_PERMITS;
use crate::window::Window;
use crate::{
    Acquired, Error, Outcome, Override, PermitToken, Persisted, Reason, Reported, Spec, State,
    Status, Timestamp, Transition,
};

/// One circuit breaker. Pure: no I/O, no clock reads, every `now` is an argument.
///
/// Every state change, override change and reset bumps the generation by exactly one
/// and returns a [`Transition`]; nothing else bumps it. Permits carry the generation
/// they were issued in, so a report that arrives after a change is `stale`, and a
/// serial number, so that each permit counts at most once.
///
/// Under `FORCED_OPEN` the machine sits in `Open` (without `open_until`), under
/// `FORCED_CLOSED` and `DISABLED` in `Closed`, so `state` is always the effective
/// state; under `SHADOW` it runs as if enforcing.
///
/// `acquire` and `report` do not allocate once the permit ledger has grown to the
/// breaker's working size (a few words for calls that get reported).
#[repr(C)] // the field order is the cache-line layout (docs/DESIGN.md §3.6)
pub struct Breaker {
    // What every acquire + report pair reads or writes, first and together.
    state: State,
    override_: Option<Override>,
    /// `cold.callers` is `Some`: a named caller was seen (in what was padding).
    tracks_callers: bool,
    consecutive_failures: u32,
    generation: u64,
    /// The serial of the next permit, plain or probe; never reused by this machine.
    next_serial: u64,
    /// Plain permits of this generation not yet reported.
    ledger: Ledger,
    /// What the pair needs of the spec, copied out of it.
    limits: Limits,
    window: Window,
    /// `Some` iff OPEN and not forced.
    open_until: Option<Timestamp>,
    /// The rest, touched by transitions, probes and reads only.
    cold: Box<Cold>,
}

/// The spec's fields that every pair reads, cached next to the counters so that the
/// spec itself stays out of the hot cache lines.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// `spec.effective_consecutive_failures()`.
    consecutive_threshold: Option<u32>,
    minimum_calls: u32,
    failure_rate_percent: Option<u32>,
    slow_call_rate_percent: Option<u32>,
    /// `spec.slow_call_threshold()`.
    slow_threshold: Option<Duration>,
    cache_ttl: Option<Duration>,
    min_distinct_callers: u32,
}

impl Limits {
    fn of(spec: &Spec) -> Self {
        Self {
            consecutive_threshold: spec.effective_consecutive_failures(),
            minimum_calls: spec.minimum_calls,
            failure_rate_percent: spec.failure_rate_percent,
            slow_call_rate_percent: spec.slow_call_rate_percent,
            slow_threshold: spec.slow_call_threshold(),
            cache_ttl: spec.cache_ttl,
            min_distinct_callers: spec.min_distinct_callers,
        }
    }
}

/// The part of a breaker that acquire and report touch only on a transition or in
/// HALF_OPEN.
struct Cold {
    spec: Spec,
    /// How long the current open period was set to last (for `OpenElapsed`).
    open_for: Duration,
    backoff_level: u32,
    /// Probes of this half-open trial that succeeded (slow ones included under the
    /// rate rule, where a slow success does not re-open by itself).
    half_open_successes: u32,
    /// Under the rate rule: probes of this trial that failed or expired.
    half_open_failures: u32,
    /// Under the rate rule: probes of this trial that were slow.
    half_open_slow: u32,
    /// Probes admitted since HALF_OPEN began (for `half_open_max_wait`).
    half_open_taken: u32,
    /// When HALF_OPEN began; `None` when not HALF_OPEN, or HALF_OPEN as restored
    /// (then the next timer run starts the wait: a restart never shortens it).
    half_open_since: Option<Timestamp>,
    /// When the override clears by itself; `None`: it holds until cleared.
    override_until: Option<Timestamp>,
    /// Half-open probes in flight; capacity `half_open_permits`, reserved up front.
    probes: Vec<Probe>,
    /// Who the window's outcomes came from; made when a named caller first reports.
    callers: Option<Box<Callers>>,
}

#[derive(Copy, Clone, Debug)]
struct Probe {
    serial: u64,
    expires_at: Timestamp,
}

/// What the machine (enforcing, or in shadow) says about one call.
enum Admission {
    Allowed(PermitToken),
    Rejected { retry_after: Option<Duration> },
}

impl Breaker {
    /// A CLOSED breaker at generation 1 with an empty window.
    ///
    /// `spec` should have passed [`Spec::validate`]; an invalid one does not panic,
    /// but its out-of-range sizes are clamped.
    pub fn new(spec: Spec) -> Self {
        Self {
            state: State::Closed,
            override_: None,
            tracks_callers: false,
            consecutive_failures: 0,
            generation: 1,
            next_serial: 1,
            ledger: Ledger::default(),
            limits: Limits::of(&spec),
            window: Window::new(spec.window),
            open_until: None,
            cold: Box::new(Cold {
                open_for: spec.open_duration,
                backoff_level: 0,
                half_open_successes: 0,
                half_open_failures: 0,
                half_open_slow: 0,
                half_open_taken: 0,
                half_open_since: None,
                override_until: None,
                probes: Vec::with_capacity(probe_slots(&spec)),
                callers: None,
                spec,
            }),
        }
    }

    /// A breaker as it was persisted. Probes in flight are gone (their slots are
    /// free) and the window is empty; the caller then calls [`tick`](Self::tick) to
    /// catch up with timers that fell due while it was down.
    ///
    /// An OPEN record without `open_until` (not forced) is treated as already due.
    pub fn restore(spec: Spec, persisted: Persisted) -> Self {
        let mut b = Self::new(spec);
        b.generation = persisted.generation;
        b.override_ = persisted.override_;
        b.cold.backoff_level = persisted.backoff_level;
        b.cold.override_until = persisted
            .override_until
            .filter(|_| persisted.override_.is_some());
        b.state = match persisted.override_ {
            Some(Override::ForcedOpen) => State::Open,
            Some(Override::ForcedClosed | Override::Disabled) => State::Closed,
            Some(Override::Shadow) | None => persisted.state,
        };
        if b.state == State::Open && b.override_.is_none_or(|o| o == Override::Shadow) {
            b.open_until = Some(persisted.open_until.unwrap_or_default());
            b.cold.open_for = b.cold.spec.open_duration_at(b.cold.backoff_level);
        }
        b
    }

    /// The breaker's spec.
    pub fn spec(&self) -> &Spec {
        &self.cold.spec
    }

    /// Replaces the spec, keeping state, generation, override, deadlines and counters.
    /// The window is rebuilt (empty) only if `spec.window` changed.
    pub fn set_spec(&mut self, spec: Spec) {
        if spec.window != self.cold.spec.window {
            self.window = Window::new(spec.window);
            self.cold.callers = None;
            self.tracks_callers = false;
        }
        // Reserved now so that admitting a probe never allocates.
        self.cold
            .probes
            .reserve_exact(probe_slots(&spec).saturating_sub(self.cold.probes.len()));
        self.limits = Limits::of(&spec);
        self.cold.spec = spec;
    }

    /// Asks whether a call may proceed now. Runs due timers first (a lazy
    /// OPEN → HALF_OPEN or probe expiry), so the answer never lags the clock.
    // Inline here and in its hot helpers: otherwise answers go through memory, and
    // re-reading them stalls store forwarding (docs/DESIGN.md §3.6).
    #[inline]
    pub fn acquire(&mut self, now: Timestamp) -> Acquired {
        let transition = self.run_timers(now);
        let mut answer = Acquired {
            allowed: false,
            permit: None,
            state: self.state,
            generation: self.generation,
            retry_after: None,
            valid_until: None,
            shadow_rejected: false,
            transition: None,
        };
        match self.override_ {
            Some(Override::ForcedOpen) => {}
            Some(Override::ForcedClosed | Override::Disabled) => {
                answer.allowed = true;
                answer.permit = Some(self.plain_permit());
            }
            Some(Override::Shadow) => {
                answer.allowed = true;
                answer.permit = Some(match self.admit(now) {
                    Admission::Allowed(permit) => permit,
                    Admission::Rejected { .. } => {
                        answer.shadow_rejected = true;
                        self.plain_permit()
                    }
                });
            }
            None => match self.admit(now) {
                Admission::Allowed(permit) => {
                    answer.allowed = true;
                    answer.permit = Some(permit);
                    if self.state == State::Closed {
                        answer.valid_until =
                            self.limits.cache_ttl.map(|ttl| now.saturating_add(ttl));
                    }
                }
                Admission::Rejected { retry_after } => answer.retry_after = retry_after,
            },
        }
        answer.transition = transition;
        answer
    }

    /// Records how a call went. `duration` is how long it took, if the caller measured
    /// it (used to classify slow successes).
    ///
    /// A permit from an older generation, one already reported, or one this generation
    /// never handed out (a probe that expired) is `stale`: acknowledged, nothing
    /// changes. A plain permit is also stale once [`MAX_PERMIT_SPAN`](crate::MAX_PERMIT_SPAN)
    /// newer permits of this breaker were issued. A permit from a newer generation is
    /// an error.
    #[inline]
    pub fn report(
        &mut self,
        permit: PermitToken,
        outcome: Outcome,
        duration: Option<Duration>,
        now: Timestamp,
    ) -> Result<Reported, Error> {
        self.report_as(permit, outcome, duration, None, now)
    }

    /// [`report`](Self::report) by `caller` (`None`: anonymous): a counted outcome is
    /// attributed to it, for `min_distinct_callers` and
    /// [`failing_callers`](Self::failing_callers). The name is not checked here.
    #[inline]
    pub fn report_as(
        &mut self,
        permit: PermitToken,
        outcome: Outcome,
        duration: Option<Duration>,
        caller: Option<&str>,
        now: Timestamp,
    ) -> Result<Reported, Error> {
        if permit.generation > self.generation {
            return Err(Error::PermitFromFuture {
                permit: permit.generation,
                current: self.generation,
            });
        }
        let (stale, transition) = if permit.generation < self.generation
            || (!permit.probe && !self.ledger.take(permit.serial))
        {
            (true, None)
        } else {
            match self.override_ {
                // FORCED_OPEN hands out no permits, and the others only plain ones.
                Some(Override::ForcedOpen) => (true, None),
                Some(Override::ForcedClosed | Override::Disabled) if permit.probe => (true, None),
                Some(Override::Disabled) => (false, None),
                Some(Override::ForcedClosed) => {
                    self.count(outcome, duration, caller, now);
                    (false, None)
                }
                Some(Override::Shadow) => {
                    self.machine_report(permit, outcome, duration, caller, now, true)
                }
                None => self.machine_report(permit, outcome, duration, caller, now, false),
            }
        };
        Ok(Reported {
            stale,
            state: self.state,
            generation: self.generation,
            transition,
        })
    }

    /// Runs the timers due at `now`: OPEN → HALF_OPEN at `open_until`, and half-open
    /// probes unreported for `permit_ttl` (counted as a failure: back to OPEN).
    /// Also drops a time window's old buckets. Does nothing to the state under
    /// `FORCED_OPEN`, `FORCED_CLOSED` and `DISABLED`.
    pub fn tick(&mut self, now: Timestamp) -> Option<Transition> {
        self.advance_window(now);
        self.run_timers(now)
    }

    /// Drops what has fallen out of a time window by `now`, so that
    /// [`status`](Self::status) shows the window as of `now`. Runs no timer and
    /// changes nothing else: a read may call it.
    pub fn expire_window(&mut self, now: Timestamp) {
        self.advance_window(now);
    }

    /// The callers with failures in the window, most failures first, at most
    /// [`TOP_FAILING_CALLERS`](crate::TOP_FAILING_CALLERS) (docs/DESIGN.md §3.7).
    /// Calls reported without a caller show as [`CallerId::Anonymous`](crate::CallerId).
    pub fn failing_callers(&self) -> Vec<CallerTally> {
        let counts = self.window.counts();
        match &self.cold.callers {
            Some(c) => c.failing_callers(counts, TOP_FAILING_CALLERS),
            None if counts.failures > 0 => vec![CallerTally {
                caller: CallerId::Anonymous,
                calls: counts.calls,
                failures: counts.failures,
            }],
            None => Vec::new(),
        }
    }

    /// Moves the window (and its caller mirror) on to `now`.
    fn advance_window(&mut self, now: Timestamp) {
        self.window.advance(now);
        if let Some(c) = &mut self.cold.callers {
            c.advance(now);
        }
    }

    /// When [`tick`](Self::tick) must next run: the override's expiry if it has one,
    /// else `open_until` while OPEN, the earliest probe expiry or the end of
    /// `half_open_max_wait` while HALF_OPEN (also under `SHADOW`, whichever is earlier); `None` when no timer is pending (CLOSED,
    /// or under `FORCED_OPEN`, `FORCED_CLOSED` and `DISABLED` without an expiry).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let machine = if self.timers_frozen() {
            None
        } else {
            match self.state {
                State::Closed => None,
                State::Open => self.open_until,
                State::HalfOpen => {
                    let expiry = self.cold.probes.iter().map(|p| p.expires_at).min();
                    match (expiry, self.max_wait_deadline()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                }
            }
        };
        match (machine, self.cold.override_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sets (`Some`) or clears (`None`) the operator's override, to hold until
    /// cleared. Always a transition, even to the same override. Every override
    /// starts afresh: empty window, backoff 0, no probes; `FORCED_OPEN` sits OPEN,
    /// the others start CLOSED.
    pub fn set_override(&mut self, o: Option<Override>, now: Timestamp) -> Transition {
        self.set_override_until(o, None, now)
    }

    /// [`set_override`](Self::set_override) that clears itself at `until` (a timer:
    /// [`tick`](Self::tick) at or after it, or the next acquire, clears the override
    /// with [`Reason::OverrideExpired`], like an operator clearing it). `until` is
    /// ignored when `o` is `None`.
    pub fn set_override_until(
        &mut self,
        o: Option<Override>,
        until: Option<Timestamp>,
        now: Timestamp,
    ) -> Transition {
        let reason = o.map_or(Reason::OverrideCleared, Reason::OverrideSet);
        let t = self.start_over(o, reason, now);
        self.cold.override_until = until.filter(|_| o.is_some());
        t
    }

    /// Back to CLOSED with an empty window and backoff 0; the override is kept (under
    /// `FORCED_OPEN` the breaker stays OPEN). Always a transition.
    pub fn reset(&mut self, now: Timestamp) -> Transition {
        self.start_over(self.override_, Reason::Reset, now)
    }

    /// What the store keeps (docs/DESIGN.md §6).
    pub fn persisted(&self) -> Persisted {
        Persisted {
            state: self.state,
            override_: self.override_,
            generation: self.generation,
            open_until: self.open_until,
            backoff_level: self.cold.backoff_level,
            override_until: self.cold.override_until,
        }
    }

    /// A snapshot for operators.
    pub fn status(&self) -> Status {
        let counts = self.window.counts();
        let sat = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Status {
            state: self.state,
            override_: self.override_,
            generation: self.generation,
            open_until: self.open_until,
            backoff_level: self.cold.backoff_level,
            override_until: self.cold.override_until,
            consecutive_failures: self.consecutive_failures,
            window_calls: sat(counts.calls),
            window_failures: sat(counts.failures),
            window_slow_calls: sat(counts.slow),
            probes_in_flight: sat(self.cold.probes.len() as u64),
            half_open_successes: self.cold.half_open_successes,
        }
    }

    /// The next serial, as a permit of this generation.
    #[inline]
    fn permit(&mut self, probe: bool) -> PermitToken {
        let serial = self.next_serial;
        self.next_serial += 1;
        PermitToken {
            generation: self.generation,
            serial,
            probe,
        }
    }

    /// A plain permit, recorded as outstanding.
    #[inline]
    fn plain_permit(&mut self) -> PermitToken {
        let permit = self.permit(false);
        self.ledger.issue(permit.serial);
        permit
    }

    #[inline]
    fn timers_frozen(&self) -> bool {
        matches!(
            self.override_,
            Some(Override::ForcedOpen | Override::ForcedClosed | Override::Disabled)
        )
    }

    /// The enforcing machine's decision. Timers have run, so OPEN means `now` is
    /// before `open_until`, and no probe in flight has expired.
    #[inline(always)]
    fn admit(&mut self, now: Timestamp) -> Admission {
        match self.state {
            State::Closed => Admission::Allowed(self.plain_permit()),
            State::Open => Admission::Rejected {
                retry_after: self.open_until.map(|u| u.saturating_duration_since(now)),
            },
            State::HalfOpen => {
                if !self.probe_room() {
                    let earliest = self.cold.probes.iter().map(|p| p.expires_at).min();
                    return Admission::Rejected {
                        retry_after: earliest.map(|e| e.saturating_duration_since(now)),
                    };
                }
                let permit = self.permit(true);
                self.cold.half_open_taken = self.cold.half_open_taken.saturating_add(1);
                self.cold.probes.push(Probe {
                    serial: permit.serial,
                    expires_at: now.saturating_add(self.cold.spec.permit_ttl),
                });
                Admission::Allowed(permit)
            }
        }
    }

    /// A current-generation report to the running machine (no override, or shadow).
    #[inline(always)]
    fn machine_report(
        &mut self,
        permit: PermitToken,
        outcome: Outcome,
        duration: Option<Duration>,
        caller: Option<&str>,
        now: Timestamp,
        shadow: bool,
    ) -> (bool, Option<Transition>) {
        match (self.state, permit.probe) {
            (State::Closed, false) => {
                let counted = self.count(outcome, duration, caller, now);
                let reason = if counted { self.trip_reason() } else { None };
                (false, reason.map(|r| self.trip(r, now)))
            }
            (State::HalfOpen, true) => {
                let Some(i) = self
                    .cold
                    .probes
                    .iter()
                    .position(|p| p.serial == permit.serial)
                else {
                    return (true, None); // already reported, or never handed out
                };
                self.cold.probes.swap_remove(i);
                (false, self.probe_outcome(outcome, duration, now))
            }
            // Shadow hands plain permits to the calls it would have rejected; they
            // count nothing.
            (State::Open | State::HalfOpen, false) if shadow => (false, None),
            // This generation never handed out such a permit.
            _ => (true, None),
        }
    }

    /// Counts a CLOSED outcome; returns whether it was counted (IGNORED is not).
    #[inline(always)]
    fn count(
        &mut self,
        outcome: Outcome,
        duration: Option<Duration>,
        caller: Option<&str>,
        now: Timestamp,
    ) -> bool {
        if outcome == Outcome::Ignored {
            return false;
        }
        if caller.is_some() || self.tracks_callers {
            self.count_caller(caller, outcome == Outcome::Failure, 1, now);
        }
        match outcome {
            Outcome::Ignored => return false,
            Outcome::Success => {
                let slow = self.is_slow(duration);
                self.window.record(now, false, slow);
                self.consecutive_failures = 0;
            }
            Outcome::Failure => {
                // The flag lives in the cold spec (the hot lines are full); it is read
                // only for a slow failure of a breaker with a slow-call condition.
                let slow = self.is_slow(duration) && self.cold.spec.slow_includes_failures;
                self.window.record(now, true, slow);
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            }
        }
        true
    }

    /// Attributes `n` counted outcomes, all failures or all successes, to `caller`
    /// (before the failure run is updated). Out of line: only breakers whose
    /// callers name themselves come here.
    #[inline(never)]
    fn count_caller(&mut self, caller: Option<&str>, failure: bool, n: u64, now: Timestamp) {
        let run_so_far = self.consecutive_failures > 0;
        let spec = self.cold.spec.window;
        let callers = self.cold.callers.get_or_insert_with(|| {
            let mut c = Box::new(Callers::new(spec));
            // The run so far was anonymous: nobody named themselves before.
            if run_so_far {
                let anonymous = c.id(None);
                c.failed_in_run(anonymous);
            }
            c
        });
        self.tracks_callers = true;
        // First: moving on may free the slot of this very name.
        callers.advance(now);
        let id = callers.id(caller);
        callers.record(now, id, failure, n);
        if failure {
            callers.failed_in_run(id);
        } else if n > 0 {
            callers.end_run();
        }
    }

    /// Distinct callers among the failures of the current run, were `caller` to
    /// fail next.
    fn callers_in_run_with(&mut self, caller: Option<&str>, now: Timestamp) -> u32 {
        // Tracks the caller from here on (a no-op record makes the mirror).
        self.count_caller(caller, false, 0, now);
        let c = self.cold.callers.as_mut().expect("made just above");
        c.advance(now);
        let id = c.id(caller);
        c.in_run_with(id)
    }

    /// Ends the callers' failure run (a success ended the breaker's).
    fn end_caller_run(&mut self) {
        if let Some(c) = &mut self.cold.callers {
            c.end_run();
        }
    }

    /// Distinct callers among the failures of the current run.
    fn callers_in_run(&self) -> u32 {
        match &self.cold.callers {
            Some(c) => c.in_run(),
            None => u32::from(self.consecutive_failures > 0),
        }
    }

    /// Distinct callers with a failure in the window.
    fn failing_callers_in_window(&self) -> u32 {
        let counts = self.window.counts();
        match &self.cold.callers {
            Some(c) => c.failing(counts),
            None => u32::from(counts.failures > 0),
        }
    }

    #[inline]
    fn is_slow(&self, duration: Option<Duration>) -> bool {
        matches!((self.limits.slow_threshold, duration), (Some(t), Some(d)) if d > t)
    }

    /// The first trip condition that holds, if any.
    #[inline]
    fn trip_reason(&self) -> Option<Reason> {
        let quorum = self.limits.min_distinct_callers;
        if let Some(n) = self.limits.consecutive_threshold
            && self.consecutive_failures >= n
            && (quorum <= 1 || self.callers_in_run() >= quorum)
        {
            return Some(Reason::ConsecutiveFailures {
                count: self.consecutive_failures,
            });
        }
        let c = self.window.counts();
        if c.calls == 0 || c.calls < u64::from(self.limits.minimum_calls) {
            return None;
        }
        let calls = u32::try_from(c.calls).unwrap_or(u32::MAX);
        // `count * 100 >= threshold * calls` is `floor(rate) >= threshold`, without
        // the rounding of an integer division.
        let reached = |count: u64, threshold: u32| count * 100 >= u64::from(threshold) * c.calls;
        let rounded = |count: u64| ((count * 100 + c.calls / 2) / c.calls) as u32;
        if let Some(t) = self.limits.failure_rate_percent
            && reached(c.failures, t)
            && (quorum <= 1 || self.failing_callers_in_window() >= quorum)
        {
            return Some(Reason::FailureRate {
                rate_percent: rounded(c.failures),
                threshold_percent: t,
                calls,
            });
        }
        if let Some(t) = self.limits.slow_call_rate_percent
            && reached(c.slow, t)
        {
            return Some(Reason::SlowCallRate {
                rate_percent: rounded(c.slow),
                threshold_percent: t,
                calls,
            });
        }
        None
    }

    /// A half-open probe's outcome (its slot is already free).
    fn probe_outcome(
        &mut self,
        outcome: Outcome,
        duration: Option<Duration>,
        now: Timestamp,
    ) -> Option<Transition> {
        if let Some(percent) = self.cold.spec.half_open_failure_rate_percent {
            return self.trial_outcome(percent, outcome, duration, now);
        }
        match outcome {
            Outcome::Ignored => None,
            Outcome::Failure => Some(self.reopen(Reason::ProbeFailed, now)),
            Outcome::Success if self.is_slow(duration) => {
                let threshold = self.limits.slow_threshold.unwrap_or_default();
                Some(self.reopen(Reason::ProbeSlow { threshold }, now))
            }
            Outcome::Success => {
                self.cold.half_open_successes += 1;
                if self.cold.half_open_successes < self.cold.spec.success_threshold {
                    return None;
                }
                let count = self.cold.half_open_successes;
                self.cold.backoff_level = 0;
                Some(self.switch(
                    State::Closed,
                    self.override_,
                    Reason::ProbesSucceeded { count },
                    now,
                ))
            }
        }
    }

    #[inline]
    fn run_timers(&mut self, now: Timestamp) -> Option<Transition> {
        // The common case, checked inline: no timer runs while CLOSED.
        if self.override_.is_none() {
            if self.state == State::Closed {
                return None;
            }
            return self.run_open_timers(now);
        }
        self.run_override_timers(now)
    }

    /// [`run_timers`](Self::run_timers) under an override: its expiry first, then
    /// (under `SHADOW`) the machine's own timers.
    fn run_override_timers(&mut self, now: Timestamp) -> Option<Transition> {
        if let (Some(until), Some(o)) = (self.cold.override_until, self.override_)
            && now >= until
        {
            return Some(self.start_over(None, Reason::OverrideExpired(o), now));
        }
        if self.timers_frozen() || self.state == State::Closed {
            return None;
        }
        self.run_open_timers(now)
    }

    /// [`run_timers`](Self::run_timers) while OPEN or HALF_OPEN.
    fn run_open_timers(&mut self, now: Timestamp) -> Option<Transition> {
        match self.state {
            State::Closed => None,
            State::Open => {
                let due = self.open_until.is_some_and(|until| now >= until);
                due.then(|| {
                    let open_for = self.cold.open_for;
                    self.switch(
                        State::HalfOpen,
                        self.override_,
                        Reason::OpenElapsed { open_for },
                        now,
                    )
                })
            }
            State::HalfOpen => {
                let since = *self.cold.half_open_since.get_or_insert(now);
                if let Some(wait) = self.cold.spec.half_open_max_wait
                    && self.cold.half_open_taken == 0
                    && now >= since.saturating_add(wait)
                {
                    return Some(self.half_open_timed_out(wait, now));
                }
                let expired = self.cold.probes.iter().any(|p| p.expires_at <= now);
                if !expired {
                    return None;
                }
                match self.cold.spec.half_open_failure_rate_percent {
                    None => Some(self.reopen(Reason::ProbeExpired, now)),
                    Some(percent) => {
                        // Each expired probe is a failed one of the trial.
                        let before = self.cold.probes.len();
                        self.cold.probes.retain(|p| p.expires_at > now);
                        let gone = (before - self.cold.probes.len()) as u32;
                        self.cold.half_open_failures += gone;
                        self.judge_trial(percent, now)
                    }
                }
            }
        }
    }

    /// The end of `half_open_max_wait` while no probe was taken: `Some(epoch)` (due
    /// now) when the wait has not started yet, after a restore.
    fn max_wait_deadline(&self) -> Option<Timestamp> {
        let wait = self.cold.spec.half_open_max_wait?;
        if self.cold.half_open_taken > 0 {
            return None;
        }
        Some(
            self.cold
                .half_open_since
                .map_or(Timestamp::default(), |since| since.saturating_add(wait)),
        )
    }

    /// HALF_OPEN for `half_open_max_wait` with no probe: to CLOSED afresh, or back to
    /// OPEN at the same backoff level (nothing failed).
    fn half_open_timed_out(&mut self, waited: Duration, now: Timestamp) -> Transition {
        if self.cold.spec.half_open_max_wait_closes {
            self.cold.backoff_level = 0;
            let reason = Reason::HalfOpenMaxWait {
                waited,
                to: State::Closed,
            };
            return self.switch(State::Closed, self.override_, reason, now);
        }
        self.trip(
            Reason::HalfOpenMaxWait {
                waited,
                to: State::Open,
            },
            now,
        )
    }

    /// Whether HALF_OPEN may admit another probe: a free slot, and under the rate
    /// rule a place left in the trial of `half_open_permits` probes.
    #[inline]
    fn probe_room(&self) -> bool {
        let permits = self.cold.spec.half_open_permits as usize;
        let in_flight = self.cold.probes.len();
        if in_flight >= permits {
            return false;
        }
        match self.cold.spec.half_open_failure_rate_percent {
            None => true,
            Some(_) => {
                let judged =
                    (self.cold.half_open_successes + self.cold.half_open_failures) as usize;
                judged + in_flight < permits
            }
        }
    }

    /// A probe's outcome under the rate rule (its slot is already free).
    fn trial_outcome(
        &mut self,
        percent: u32,
        outcome: Outcome,
        duration: Option<Duration>,
        now: Timestamp,
    ) -> Option<Transition> {
        let slow = self.is_slow(duration);
        match outcome {
            Outcome::Ignored => return None,
            Outcome::Success => self.cold.half_open_successes += 1,
            Outcome::Failure => self.cold.half_open_failures += 1,
        }
        let counts_slow = match outcome {
            Outcome::Failure => self.cold.spec.slow_includes_failures,
            _ => true,
        };
        if slow && counts_slow {
            self.cold.half_open_slow += 1;
        }
        self.judge_trial(percent, now)
    }

    /// The rate rule's verdict so far: re-open as soon as the failures (or the slow
    /// probes) reach their threshold of the whole trial, which more probes cannot
    /// undo; close once every probe of the trial is in; else wait.
    fn judge_trial(&mut self, percent: u32, now: Timestamp) -> Option<Transition> {
        let probes = self.cold.spec.half_open_permits;
        let reached = |count: u32, threshold: u32| {
            u64::from(count) * 100 >= u64::from(threshold) * u64::from(probes)
        };
        let failures = self.cold.half_open_failures;
        if reached(failures, percent) {
            let reason = Reason::ProbeFailureRate {
                failures,
                probes,
                threshold_percent: percent,
            };
            return Some(self.reopen(reason, now));
        }
        if let (Some(threshold), Some(_)) = (
            self.limits.slow_call_rate_percent,
            self.limits.slow_threshold,
        ) && reached(self.cold.half_open_slow, threshold)
        {
            let reason = Reason::ProbeSlowRate {
                slow: self.cold.half_open_slow,
                probes,
                threshold_percent: threshold,
            };
            return Some(self.reopen(reason, now));
        }
        if self.cold.half_open_successes + failures < probes {
            return None;
        }
        self.cold.backoff_level = 0;
        let reason = Reason::ProbeTrialPassed {
            failures,
            probes,
            threshold_percent: percent,
        };
        Some(self.switch(State::Closed, self.override_, reason, now))
    }

    /// HALF_OPEN → OPEN, one backoff level up.
    fn reopen(&mut self, reason: Reason, now: Timestamp) -> Transition {
        self.cold.backoff_level = self.cold.backoff_level.saturating_add(1);
        self.trip(reason, now)
    }

    /// → OPEN for the open duration of the current backoff level.
    fn trip(&mut self, reason: Reason, now: Timestamp) -> Transition {
        let open_for = self.cold.spec.open_duration_at(self.cold.backoff_level);
        let t = self.switch(State::Open, self.override_, reason, now);
        self.cold.open_for = open_for;
        self.open_until = Some(now.saturating_add(open_for));
        t
    }

    /// Operator changes: a fresh start under override `o`.
    fn start_over(&mut self, o: Option<Override>, reason: Reason, now: Timestamp) -> Transition {
        self.cold.backoff_level = 0;
        if o.is_none() {
            self.cold.override_until = None;
        }
        let state = if o == Some(Override::ForcedOpen) {
            State::Open
        } else {
            State::Closed
        };
        self.switch(state, o, reason, now)
    }

    /// Enters `state` under `to_override` afresh (empty window, no probes, no
    /// deadline) as a new generation.
    fn switch(
        &mut self,
        state: State,
        to_override: Option<Override>,
        reason: Reason,
        now: Timestamp,
    ) -> Transition {
        let (from, from_override) = (self.state, self.override_);
        self.state = state;
        self.override_ = to_override;
        self.open_until = None;
        self.consecutive_failures = 0;
        self.window.clear();
        if let Some(c) = &mut self.cold.callers {
            c.clear();
        }
        self.cold.probes.clear();
        self.ledger.clear();
        self.cold.half_open_successes = 0;
        self.cold.half_open_failures = 0;
        self.cold.half_open_slow = 0;
        self.cold.half_open_taken = 0;
        self.cold.half_open_since = (state == State::HalfOpen).then_some(now);
        // Saturating: 2^64 changes will not happen; a restored record might be corrupt.
        self.generation = self.generation.saturating_add(1);
        Transition {
            from,
            to: state,
            from_override,
            to_override,
            generation: self.generation,
            reason,
            at: now,
        }
    }
}

/// Probe slots to reserve: `half_open_permits`, clamped for an unvalidated spec.
fn probe_slots(spec: &Spec) -> usize {
    spec.half_open_permits.min(MAX_HALF_OPEN_PERMITS) as usize
}

impl fmt::Debug for Breaker {
    // The window's ring can be large; show its totals instead.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("spec", &self.cold.spec)
            .field("status", &self.status())
            .field("probes", &self.cold.probes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    /// The layout budget of docs/DESIGN.md §3.6: a breaker was 344 bytes with the
    /// spec inline; what a CLOSED pair touches is the first 176 bytes (the key of
    /// a map entry comes before it).
    #[test]
    fn breaker_layout_stays_in_budget() {
        assert!(
            size_of::<Breaker>() <= 208,
            "{} bytes",
            size_of::<Breaker>()
        );
        let hot_end = offset_of!(Breaker, window) + size_of::<Window>();
        assert!(hot_end <= 176, "hot fields end at byte {hot_end}");
        assert_eq!(offset_of!(Breaker, open_until), hot_end);
    }
}
