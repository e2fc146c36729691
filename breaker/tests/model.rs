//! Random operation sequences against a naive reference model.
//!
//! The model keeps every outcome since the window was last emptied in a `Vec` and
//! recomputes the window from it on demand; the backoff is a loop of doublings; rates
//! use the spec's integer definition (`count * 100 / calls`). Besides agreeing with
//! the model at every step, the machine must keep the invariants of docs/DESIGN.md §3, which
//! are checked directly.

use std::time::Duration;

use cbd_breaker::{
    Acquired, Breaker, CallerId, CallerTally, Error, Outcome, Override, PermitToken, Reason, Spec,
    State, Status, TOP_FAILING_CALLERS, Timestamp, Transition, WindowSpec,
};
use proptest::prelude::*;

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

// ---- the reference model --------------------------------------------------------

#[derive(Clone, Debug)]
struct Rec {
    at: u64,
    failure: bool,
    slow: bool,
    /// Who reported it: one of [`CALLERS`], or `None` (anonymous).
    caller: Option<usize>,
}

/// The callers reports come from (well under the tracked cap).
const CALLERS: [&str; 3] = ["alpha", "beta", "gamma"];

#[derive(Clone, Debug, PartialEq)]
struct ExpectedTransition {
    from: State,
    to: State,
    from_override: Option<Override>,
    to_override: Option<Override>,
    generation: u64,
    reason: Reason,
}

#[derive(Clone, Debug)]
struct Model {
    spec: Spec,
    ov: Option<Override>,
    state: State,
    generation: u64,
    open_until: Option<u64>,
    open_for: Duration,
    backoff: u32,
    consecutive: u32,
    /// The callers of the failures of the current run (with repeats).
    run_callers: Vec<Option<usize>>,
    outcomes: Vec<Rec>,
    /// (probe serial as the machine issued it, expiry in ns)
    probes: Vec<(u64, u64)>,
    /// Serials of the plain permits of this generation not yet reported.
    plain: Vec<u64>,
    successes: u32,
    /// Under the rate rule, the probes of this trial judged so far: (failed, slow).
    trial: Vec<(bool, bool)>,
    /// Probes admitted since HALF_OPEN began.
    taken: u32,
    /// When HALF_OPEN began.
    half_open_since: Option<u64>,
}

#[derive(Debug, PartialEq)]
enum Admit {
    Plain,
    Probe,
    No { retry_after: Option<Duration> },
}

impl Model {
    fn new(spec: Spec) -> Self {
        Self {
            open_for: spec.open_duration,
            spec,
            ov: None,
            state: State::Closed,
            generation: 1,
            open_until: None,
            backoff: 0,
            consecutive: 0,
            run_callers: Vec::new(),
            outcomes: Vec::new(),
            probes: Vec::new(),
            plain: Vec::new(),
            successes: 0,
            trial: Vec::new(),
            taken: 0,
            half_open_since: None,
        }
    }

    fn bucket_ns(&self) -> Option<(u64, u64)> {
        match self.spec.window {
            WindowSpec::Time { duration, buckets } => {
                let b = u64::from(buckets);
                Some((duration.as_nanos() as u64 / b, b))
            }
            WindowSpec::Count { .. } => None,
        }
    }

    /// (calls, failures, slow) in the window as seen at `now`.
    fn window(&self, now: u64) -> (u32, u32, u32) {
        let kept = self.kept(now);
        let failures = kept.iter().filter(|r| r.failure).count() as u32;
        let slow = kept.iter().filter(|r| r.slow).count() as u32;
        (kept.len() as u32, failures, slow)
    }

    /// Distinct callers (anonymous being one) with a failure in the window at `now`.
    fn failing_callers(&self, now: u64) -> u32 {
        let mut callers: Vec<Option<usize>> = self
            .kept(now)
            .iter()
            .filter(|r| r.failure)
            .map(|r| r.caller)
            .collect();
        callers.sort();
        callers.dedup();
        callers.len() as u32
    }

    /// The callers with failures in the window at `now`, as `failing_callers` ranks
    /// them: most failures, then most calls, then anonymous first and by name.
    fn top_failing(&self, now: u64) -> Vec<CallerTally> {
        let kept = self.kept(now);
        let mut all: Vec<CallerTally> = Vec::new();
        for caller in std::iter::once(None).chain((0..CALLERS.len()).map(Some)) {
            let mine: Vec<&&Rec> = kept.iter().filter(|r| r.caller == caller).collect();
            let failures = mine.iter().filter(|r| r.failure).count() as u64;
            if failures > 0 {
                all.push(CallerTally {
                    caller: caller.map_or(CallerId::Anonymous, |i| {
                        CallerId::Named(CALLERS[i].to_owned())
                    }),
                    calls: mine.len() as u64,
                    failures,
                });
            }
        }
        all.sort_by(|a, b| {
            (b.failures, b.calls)
                .cmp(&(a.failures, a.calls))
                .then_with(|| a.caller.cmp(&b.caller))
        });
        all.truncate(TOP_FAILING_CALLERS);
        all
    }

    /// Distinct callers among the failures of the current run.
    fn run_callers(&self) -> u32 {
        let mut callers = self.run_callers.clone();
        callers.sort();
        callers.dedup();
        callers.len() as u32
    }

    /// The outcomes in the window as seen at `now`.
    fn kept(&self, now: u64) -> Vec<&Rec> {
        match self.spec.window {
            WindowSpec::Count { calls } => {
                self.outcomes.iter().rev().take(calls as usize).collect()
            }
            WindowSpec::Time { .. } => {
                let (len, buckets) = self.bucket_ns().unwrap();
                self.outcomes
                    .iter()
                    .filter(|r| now / len - r.at / len < buckets)
                    .collect()
            }
        }
    }

    fn frozen(&self) -> bool {
        matches!(
            self.ov,
            Some(Override::ForcedOpen | Override::ForcedClosed | Override::Disabled)
        )
    }

    fn open_duration(&self) -> Duration {
        let Some(max) = self.spec.max_open_duration else {
            return self.spec.open_duration;
        };
        let mut d = self.spec.open_duration;
        for _ in 0..self.backoff {
            d = (d * 2).min(max);
        }
        d
    }

    fn change(&mut self, to: State, ov: Option<Override>, reason: Reason) -> ExpectedTransition {
        let t = ExpectedTransition {
            from: self.state,
            to,
            from_override: self.ov,
            to_override: ov,
            generation: self.generation + 1,
            reason,
        };
        self.state = to;
        self.ov = ov;
        self.generation += 1;
        self.open_until = None;
        self.consecutive = 0;
        self.run_callers.clear();
        self.outcomes.clear();
        self.probes.clear();
        self.plain.clear();
        self.successes = 0;
        self.trial.clear();
        self.taken = 0;
        self.half_open_since = None;
        t
    }

    fn trip(&mut self, reason: Reason, now: u64) -> ExpectedTransition {
        let d = self.open_duration();
        let t = self.change(State::Open, self.ov, reason);
        self.open_until = Some(now + d.as_nanos() as u64);
        self.open_for = d;
        t
    }

    fn reopen(&mut self, reason: Reason, now: u64) -> ExpectedTransition {
        self.backoff += 1;
        self.trip(reason, now)
    }

    fn timers(&mut self, now: u64) -> Option<ExpectedTransition> {
        if self.frozen() {
            return None;
        }
        match self.state {
            State::Open if now >= self.open_until.unwrap() => {
                let t = self.change(
                    State::HalfOpen,
                    self.ov,
                    Reason::OpenElapsed {
                        open_for: self.open_for,
                    },
                );
                self.half_open_since = Some(now);
                Some(t)
            }
            State::HalfOpen => {
                if let Some(wait) = self.max_wait_deadline()
                    && now >= wait
                {
                    let waited = self.spec.half_open_max_wait.unwrap();
                    return Some(if self.spec.half_open_max_wait_closes {
                        self.backoff = 0;
                        let to = State::Closed;
                        self.change(to, self.ov, Reason::HalfOpenMaxWait { waited, to })
                    } else {
                        let to = State::Open;
                        self.trip(Reason::HalfOpenMaxWait { waited, to }, now)
                    });
                }
                if !self.probes.iter().any(|&(_, exp)| exp <= now) {
                    return None;
                }
                if self.spec.half_open_failure_rate_percent.is_none() {
                    return Some(self.reopen(Reason::ProbeExpired, now));
                }
                while let Some(i) = self.probes.iter().position(|&(_, exp)| exp <= now) {
                    self.probes.remove(i);
                    self.trial.push((true, false));
                }
                self.verdict(now)
            }
            _ => None,
        }
    }

    /// `half_open_max_wait`'s end while HALF_OPEN with no probe taken.
    fn max_wait_deadline(&self) -> Option<u64> {
        let wait = self.spec.half_open_max_wait?;
        (self.state == State::HalfOpen && self.taken == 0)
            .then(|| self.half_open_since.unwrap() + wait.as_nanos() as u64)
    }

    /// The rate rule over the whole trial of `half_open_permits` probes.
    fn verdict(&mut self, now: u64) -> Option<ExpectedTransition> {
        let pct = self.spec.half_open_failure_rate_percent.unwrap();
        let probes = self.spec.half_open_permits;
        let failures = self.trial.iter().filter(|t| t.0).count() as u32;
        let slow = self.trial.iter().filter(|t| t.1).count() as u32;
        if failures * 100 >= pct * probes {
            let threshold_percent = pct;
            let reason = Reason::ProbeFailureRate {
                failures,
                probes,
                threshold_percent,
            };
            return Some(self.reopen(reason, now));
        }
        if let Some(threshold_percent) = self.spec.slow_call_rate_percent
            && slow * 100 >= threshold_percent * probes
        {
            let reason = Reason::ProbeSlowRate {
                slow,
                probes,
                threshold_percent,
            };
            return Some(self.reopen(reason, now));
        }
        if self.trial.len() < probes as usize {
            return None;
        }
        self.backoff = 0;
        let reason = Reason::ProbeTrialPassed {
            failures,
            probes,
            threshold_percent: pct,
        };
        Some(self.change(State::Closed, self.ov, reason))
    }

    fn enforce(&self, now: u64) -> Admit {
        match self.state {
            State::Closed => Admit::Plain,
            State::Open => Admit::No {
                retry_after: Some(Duration::from_nanos(self.open_until.unwrap() - now)),
            },
            State::HalfOpen
                if self.probes.len() < self.spec.half_open_permits as usize
                    && (self.spec.half_open_failure_rate_percent.is_none()
                        || self.trial.len() + self.probes.len()
                            < self.spec.half_open_permits as usize) =>
            {
                Admit::Probe
            }
            State::HalfOpen => Admit::No {
                retry_after: self
                    .probes
                    .iter()
                    .map(|&(_, exp)| Duration::from_nanos(exp - now))
                    .min(),
            },
        }
    }

    fn slow(&self, duration: Option<Duration>) -> bool {
        match (
            self.spec.slow_call_rate_percent,
            self.spec.slow_call_duration,
            duration,
        ) {
            (Some(_), Some(limit), Some(d)) => d > limit,
            _ => false,
        }
    }

    /// Records a CLOSED outcome; true if counted.
    fn record(
        &mut self,
        outcome: Outcome,
        duration: Option<Duration>,
        caller: Option<usize>,
        now: u64,
    ) -> bool {
        match outcome {
            Outcome::Ignored => false,
            Outcome::Success => {
                let slow = self.slow(duration);
                self.outcomes.push(Rec {
                    at: now,
                    failure: false,
                    slow,
                    caller,
                });
                self.consecutive = 0;
                self.run_callers.clear();
                true
            }
            Outcome::Failure => {
                let slow = self.spec.slow_includes_failures && self.slow(duration);
                self.outcomes.push(Rec {
                    at: now,
                    failure: true,
                    slow,
                    caller,
                });
                self.consecutive += 1;
                self.run_callers.push(caller);
                true
            }
        }
    }

    fn trip_reason(&self, now: u64) -> Option<Reason> {
        let s = &self.spec;
        let consecutive = match (
            s.consecutive_failures,
            s.failure_rate_percent,
            s.slow_call_rate_percent,
        ) {
            (Some(n), _, _) => Some(n),
            (None, None, None) => Some(5),
            _ => None,
        };
        let quorum = s.min_distinct_callers;
        if consecutive.is_some_and(|n| self.consecutive >= n) && self.run_callers() >= quorum {
            return Some(Reason::ConsecutiveFailures {
                count: self.consecutive,
            });
        }
        let (calls, failures, slow) = self.window(now);
        if calls == 0 || calls < s.minimum_calls {
            return None;
        }
        let round = |n: u32| (f64::from(n) * 100.0 / f64::from(calls)).round() as u32;
        if let Some(t) = s.failure_rate_percent
            && failures * 100 / calls >= t
            && self.failing_callers(now) >= quorum
        {
            return Some(Reason::FailureRate {
                rate_percent: round(failures),
                threshold_percent: t,
                calls,
            });
        }
        if let Some(t) = s.slow_call_rate_percent
            && slow * 100 / calls >= t
        {
            return Some(Reason::SlowCallRate {
                rate_percent: round(slow),
                threshold_percent: t,
                calls,
            });
        }
        None
    }

    /// (stale, transition) for a current-or-older-generation permit.
    fn report(
        &mut self,
        permit: PermitToken,
        outcome: Outcome,
        duration: Option<Duration>,
        caller: Option<usize>,
        now: u64,
    ) -> (bool, Option<ExpectedTransition>) {
        if permit.generation < self.generation {
            return (true, None);
        }
        if !permit.probe {
            // Single use: only an outstanding plain permit of this generation counts.
            let Some(i) = self.plain.iter().position(|&s| s == permit.serial) else {
                return (true, None);
            };
            self.plain.remove(i);
        }
        let shadow = self.ov == Some(Override::Shadow);
        match (self.ov, self.state, permit.probe) {
            (Some(Override::ForcedOpen), _, _) => (true, None),
            (Some(Override::ForcedClosed | Override::Disabled), _, true) => (true, None),
            (Some(Override::Disabled), _, false) => (false, None),
            (Some(Override::ForcedClosed), _, false) => {
                self.record(outcome, duration, caller, now);
                (false, None)
            }
            (_, State::Closed, false) => {
                if !self.record(outcome, duration, caller, now) {
                    return (false, None);
                }
                (false, self.trip_reason(now).map(|r| self.trip(r, now)))
            }
            (_, State::HalfOpen, true) => {
                let Some(i) = self.probes.iter().position(|&(p, _)| p == permit.serial) else {
                    return (true, None);
                };
                self.probes.remove(i);
                if self.spec.half_open_failure_rate_percent.is_some() {
                    let slow = self.slow(duration);
                    let t = match outcome {
                        Outcome::Ignored => None,
                        Outcome::Success => {
                            self.successes += 1;
                            self.trial.push((false, slow));
                            self.verdict(now)
                        }
                        Outcome::Failure => {
                            self.trial
                                .push((true, slow && self.spec.slow_includes_failures));
                            self.verdict(now)
                        }
                    };
                    return (false, t);
                }
                let t = match outcome {
                    Outcome::Ignored => None,
                    Outcome::Failure => Some(self.reopen(Reason::ProbeFailed, now)),
                    Outcome::Success if self.slow(duration) => {
                        let threshold = self.spec.slow_call_duration.unwrap();
                        Some(self.reopen(Reason::ProbeSlow { threshold }, now))
                    }
                    Outcome::Success => {
                        self.successes += 1;
                        (self.successes >= self.spec.success_threshold).then(|| {
                            self.backoff = 0;
                            let count = self.successes;
                            self.change(State::Closed, self.ov, Reason::ProbesSucceeded { count })
                        })
                    }
                };
                (false, t)
            }
            (_, State::Open | State::HalfOpen, false) if shadow => (false, None),
            _ => (true, None),
        }
    }

    fn start_over(&mut self, ov: Option<Override>, reason: Reason) -> ExpectedTransition {
        self.backoff = 0;
        let to = if ov == Some(Override::ForcedOpen) {
            State::Open
        } else {
            State::Closed
        };
        self.change(to, ov, reason)
    }
}

// ---- operations -----------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Acquire,
    /// Report the `pick`-th outstanding permit.
    Report {
        pick: usize,
        outcome: Outcome,
        slow: bool,
        timed: bool,
        /// An index into [`CALLERS`]; `None`: anonymous.
        caller: Option<usize>,
    },
    /// Report a permit from an older generation.
    ReportStale {
        pick: usize,
        outcome: Outcome,
    },
    /// Report a permit (plain or probe) again after it was reported.
    ReportUsed {
        pick: usize,
        outcome: Outcome,
    },
    /// Report a permit from a generation not reached yet.
    ReportFuture,
    Advance {
        ms: u64,
    },
    /// Jump to the machine's next deadline exactly, to hit the timer boundaries.
    AdvanceToDeadline,
    Tick,
    SetOverride(Override),
    ClearOverride,
    Reset,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![3 => Just(Outcome::Success), 3 => Just(Outcome::Failure), 1 => Just(Outcome::Ignored)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => Just(Op::Acquire),
        5 => (any::<usize>(), outcome(), any::<bool>(), any::<bool>(), proptest::option::of(0..CALLERS.len()))
            .prop_map(|(pick, outcome, slow, timed, caller)| Op::Report { pick, outcome, slow, timed, caller }),
        1 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Op::ReportStale { pick, outcome }),
        1 => (any::<usize>(), outcome()).prop_map(|(pick, outcome)| Op::ReportUsed { pick, outcome }),
        1 => Just(Op::ReportFuture),
        2 => (0u64..50).prop_map(|ms| Op::Advance { ms }),
        2 => (100u64..3_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::AdvanceToDeadline),
        2 => Just(Op::Tick),
        1 => prop_oneof![
            Just(Override::ForcedOpen),
            Just(Override::ForcedClosed),
            Just(Override::Disabled),
            Just(Override::Shadow),
        ]
        .prop_map(Op::SetOverride),
        1 => Just(Op::ClearOverride),
        1 => Just(Op::Reset),
    ]
}

/// Small valid specs, so that trips, timers and probes all happen in 40 steps.
fn spec() -> impl Strategy<Value = Spec> {
    let rate = || proptest::option::of(prop_oneof![Just(25u32), Just(50), Just(75), Just(100)]);
    let window = prop_oneof![
        (1u32..=6).prop_map(|calls| WindowSpec::Count { calls }),
        (1u64..=4, 1u32..=4).prop_map(|(s, buckets)| WindowSpec::Time {
            duration: Duration::from_secs(s),
            buckets
        }),
    ];
    (
        (proptest::option::of(1u32..=4), rate(), rate(), any::<u32>()),
        (
            window,
            1u64..=5,
            proptest::option::of(0u64..=10),
            1u32..=3,
            any::<u32>(),
            1u64..=5,
        ),
        (
            proptest::option::of(1u64..=5),
            rate(),
            proptest::option::of(1u64..=5),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![2 => Just(1u32), 1 => 2u32..=3],
        ),
    )
        .prop_map(
            |(
                (consecutive, failure_rate, slow_rate, min),
                (window, open, max, permits, threshold, ttl),
                (cache, half_open_rate, max_wait, max_wait_closes, slow_failures, quorum),
            )| {
                let limit = match window {
                    WindowSpec::Count { calls } => calls,
                    WindowSpec::Time { .. } => 6,
                };
                let spec = Spec {
                    consecutive_failures: consecutive,
                    failure_rate_percent: failure_rate,
                    slow_call_rate_percent: slow_rate,
                    slow_call_duration: slow_rate.map(|_| Duration::from_millis(100)),
                    minimum_calls: 1 + min % limit,
                    window,
                    open_duration: Duration::from_secs(open),
                    max_open_duration: max.map(|extra| Duration::from_secs(open + extra)),
                    half_open_permits: permits,
                    success_threshold: 1 + threshold % permits,
                    permit_ttl: Duration::from_secs(ttl),
                    cache_ttl: cache.map(Duration::from_secs),
                    half_open_failure_rate_percent: half_open_rate,
                    half_open_max_wait: max_wait.map(Duration::from_secs),
                    half_open_max_wait_closes: max_wait.is_some() && max_wait_closes,
                    slow_includes_failures: slow_rate.is_some() && slow_failures,
                    min_distinct_callers: quorum,
                    ..Spec::default()
                };
                spec.validate().expect("strategy makes valid specs");
                spec
            },
        )
}

// ---- the harness ----------------------------------------------------------------

fn ts(ns: u64) -> Timestamp {
    Timestamp::from_unix_nanos(ns)
}

fn check_transition(t: &Option<Transition>, expected: &Option<ExpectedTransition>, now: u64) {
    let actual = t.as_ref().map(|t| {
        assert_eq!(t.at, ts(now));
        ExpectedTransition {
            from: t.from,
            to: t.to,
            from_override: t.from_override,
            to_override: t.to_override,
            generation: t.generation,
            reason: t.reason.clone(),
        }
    });
    assert_eq!(&actual, expected);
}

/// Compares everything `status` shows with the model. The time window's counts are
/// only compared when `window_at` says when the machine last saw the time.
fn check_status(b: &Breaker, m: &Model, window_at: Option<u64>) {
    let s = b.status();
    assert_eq!(s.state, m.state, "state");
    assert_eq!(s.override_, m.ov, "override");
    assert_eq!(s.generation, m.generation, "generation");
    assert_eq!(s.open_until, m.open_until.map(ts), "open_until");
    assert_eq!(s.backoff_level, m.backoff, "backoff_level");
    assert_eq!(
        s.consecutive_failures, m.consecutive,
        "consecutive_failures"
    );
    assert_eq!(
        s.probes_in_flight,
        m.probes.len() as u32,
        "probes_in_flight"
    );
    assert_eq!(s.half_open_successes, m.successes, "half_open_successes");
    let at = match m.spec.window {
        WindowSpec::Count { .. } => Some(0),
        WindowSpec::Time { .. } => window_at,
    };
    if let Some(at) = at {
        let (calls, failures, slow) = m.window(at);
        assert_eq!(
            (s.window_calls, s.window_failures, s.window_slow_calls),
            (calls, failures, slow),
            "window"
        );
        assert_eq!(b.failing_callers(), m.top_failing(at), "failing callers");
    }
    let next = if m.frozen() {
        None
    } else {
        match m.state {
            State::Closed => None,
            State::Open => m.open_until,
            State::HalfOpen => m
                .probes
                .iter()
                .map(|&(_, e)| e)
                .chain(m.max_wait_deadline())
                .min(),
        }
    };
    assert_eq!(b.next_deadline(), next.map(ts), "next_deadline");
}

fn check_acquire(a: &Acquired, m: &mut Model, now: u64, expected_t: Option<ExpectedTransition>) {
    check_transition(&a.transition, &expected_t, now);
    assert_eq!(a.state, m.state);
    assert_eq!(a.generation, m.generation);
    assert_eq!(a.permit.is_some(), a.allowed, "permit iff allowed");
    if let Some(p) = a.permit {
        assert_eq!(p.generation, m.generation);
    }
    let (allowed, shadow_rejected, retry_after, probe) = match m.ov {
        Some(Override::ForcedOpen) => (false, false, None, false),
        Some(Override::ForcedClosed | Override::Disabled) => (true, false, None, false),
        Some(Override::Shadow) => match m.enforce(now) {
            Admit::Plain => (true, false, None, false),
            Admit::Probe => (true, false, None, true),
            Admit::No { .. } => (true, true, None, false),
        },
        None => match m.enforce(now) {
            Admit::Plain => (true, false, None, false),
            Admit::Probe => (true, false, None, true),
            Admit::No { retry_after } => (false, false, retry_after, false),
        },
    };
    assert_eq!(a.allowed, allowed, "allowed");
    assert_eq!(a.shadow_rejected, shadow_rejected, "shadow_rejected");
    assert_eq!(a.retry_after, retry_after, "retry_after");
    assert_eq!(a.permit.is_some_and(|p| p.probe), probe, "probe");
    let cached = m.ov.is_none() && m.state == State::Closed;
    let valid_until = m
        .spec
        .cache_ttl
        .filter(|_| cached)
        .map(|ttl| ts(now + ttl.as_nanos() as u64));
    assert_eq!(a.valid_until, valid_until, "valid_until");
    match a.permit {
        Some(p) if p.probe => {
            m.taken += 1;
            m.probes
                .push((p.serial, now + m.spec.permit_ttl.as_nanos() as u64));
        }
        Some(p) => m.plain.push(p.serial),
        None => {}
    }
}

fn run(spec: Spec, ops: Vec<Op>) {
    let mut b = Breaker::new(spec.clone());
    let mut m = Model::new(spec.clone());
    let mut now = T0;
    // Permits handed out and not reported yet; every permit ever handed out; permits
    // already reported.
    let mut outstanding: Vec<(PermitToken, u64)> = Vec::new();
    let mut issued: Vec<PermitToken> = Vec::new();
    let mut used: Vec<PermitToken> = Vec::new();
    check_status(&b, &m, Some(now));

    for op in ops {
        let before: Status = b.status();
        let forced = before.override_.filter(|o| *o != Override::Shadow);
        let mut transition = None;
        let mut window_at = None;
        match op {
            Op::Acquire => {
                let rejected_by_design = match before.override_ {
                    Some(Override::ForcedOpen) => true,
                    None => {
                        before.state == State::Open
                            && before.open_until.is_some_and(|u| ts(now) < u)
                    }
                    _ => false,
                };
                let expected_t = m.timers(now);
                let a = b.acquire(ts(now));
                if rejected_by_design {
                    assert!(!a.allowed, "OPEN allows nothing before open_until");
                }
                check_acquire(&a, &mut m, now, expected_t);
                if let Some(p) = a.permit {
                    assert!(
                        issued.iter().all(|q| q.serial != p.serial),
                        "serials are never reused"
                    );
                    outstanding.push((p, now + spec.permit_ttl.as_nanos() as u64));
                    issued.push(p);
                }
                transition = a.transition;
            }
            Op::Report {
                pick,
                outcome,
                slow,
                timed,
                caller,
            } => {
                if outstanding.is_empty() {
                    continue;
                }
                let (permit, _) = outstanding.remove(pick % outstanding.len());
                let duration = match (slow, timed) {
                    (true, _) => Some(Duration::from_millis(101)),
                    (false, true) => Some(Duration::from_millis(100)),
                    (false, false) => None,
                };
                let (stale, expected_t) = m.report(permit, outcome, duration, caller, now);
                let name = caller.map(|i| CALLERS[i]);
                let r = b
                    .report_as(permit, outcome, duration, name, ts(now))
                    .unwrap();
                assert_eq!(r.stale, stale, "stale");
                check_transition(&r.transition, &expected_t, now);
                assert_eq!((r.state, r.generation), (m.state, m.generation));
                used.push(permit);
                if stale {
                    assert_eq!(b.status(), before, "a stale report changes nothing");
                }
                if !stale && outcome != Outcome::Ignored {
                    window_at = Some(now);
                }
                transition = r.transition;
            }
            Op::ReportStale { pick, outcome } => {
                let old: Vec<PermitToken> = issued
                    .iter()
                    .copied()
                    .filter(|p| p.generation < before.generation)
                    .collect();
                let permit = match old.len() {
                    0 if before.generation > 1 => PermitToken {
                        generation: before.generation - 1,
                        serial: 1,
                        probe: false,
                    },
                    0 => continue,
                    n => old[pick % n],
                };
                let r = b.report(permit, outcome, None, ts(now)).unwrap();
                assert!(r.stale);
                assert_eq!(r.transition, None);
                assert_eq!(b.status(), before, "a stale report changes nothing");
            }
            Op::ReportUsed { pick, outcome } => {
                if used.is_empty() {
                    continue;
                }
                let permit = used[pick % used.len()];
                let r = b.report(permit, outcome, None, ts(now)).unwrap();
                assert!(r.stale, "a permit counts once: {permit:?}");
                let (stale, _) = m.report(permit, outcome, None, None, now);
                assert!(stale, "the model agrees");
                assert_eq!(b.status(), before, "a stale report changes nothing");
            }
            Op::ReportFuture => {
                let permit = PermitToken {
                    generation: before.generation + 1,
                    serial: 1,
                    probe: false,
                };
                assert_eq!(
                    b.report(permit, Outcome::Failure, None, ts(now)),
                    Err(Error::PermitFromFuture {
                        permit: before.generation + 1,
                        current: before.generation
                    })
                );
                assert_eq!(b.status(), before);
            }
            Op::Advance { ms } => now += ms * MS,
            Op::AdvanceToDeadline => {
                if let Some(d) = b.next_deadline() {
                    now = now.max(d.unix_nanos());
                }
            }
            Op::Tick => {
                let probe_due = forced.is_none()
                    && before.state == State::HalfOpen
                    && outstanding.iter().any(|(p, exp)| {
                        p.generation == before.generation && p.probe && *exp <= now
                    });
                let expected_t = m.timers(now);
                let t = b.tick(ts(now));
                check_transition(&t, &expected_t, now);
                if probe_due && spec.half_open_failure_rate_percent.is_none() {
                    // An unreported probe past its ttl frees its slot and re-opens.
                    let t = t.as_ref().expect("expired probe re-opens");
                    assert_eq!((t.to, &t.reason), (State::Open, &Reason::ProbeExpired));
                    assert_eq!(b.status().probes_in_flight, 0);
                }
                for (p, _) in &outstanding {
                    if p.probe && p.generation == b.status().generation {
                        assert_eq!(b.status().state, State::HalfOpen);
                    }
                }
                window_at = Some(now);
                transition = t;
            }
            Op::SetOverride(o) => {
                let expected = m.start_over(Some(o), Reason::OverrideSet(o));
                let t = b.set_override(Some(o), ts(now));
                check_transition(&Some(t.clone()), &Some(expected), now);
                transition = Some(t);
            }
            Op::ClearOverride => {
                let expected = m.start_over(None, Reason::OverrideCleared);
                let t = b.set_override(None, ts(now));
                check_transition(&Some(t.clone()), &Some(expected), now);
                transition = Some(t);
            }
            Op::Reset => {
                let expected = m.start_over(m.ov, Reason::Reset);
                let t = b.reset(ts(now));
                check_transition(&Some(t.clone()), &Some(expected), now);
                transition = Some(t);
            }
        }

        let after = b.status();
        // The generation moves by exactly one per transition, and never otherwise.
        match &transition {
            Some(t) => {
                assert_eq!(
                    after.generation,
                    before.generation + 1,
                    "one transition = +1"
                );
                assert_eq!(t.generation, after.generation);
            }
            None => {
                assert_eq!(
                    after.generation, before.generation,
                    "no transition, same generation"
                );
                assert_eq!(after.state, before.state, "no transition, same state");
            }
        }
        // Forced states hold until an operator changes them.
        let operator = matches!(op_kind(&transition), Some(true));
        if let Some(o) = forced
            && !operator
        {
            assert_eq!(after.override_, Some(o));
            let held = if o == Override::ForcedOpen {
                State::Open
            } else {
                State::Closed
            };
            assert_eq!(after.state, held, "forced state holds");
            assert!(
                transition.is_none(),
                "nothing changes a forced state but an operator"
            );
        }
        assert!(
            after.probes_in_flight <= spec.half_open_permits,
            "probes within half_open_permits"
        );
        check_status(&b, &m, window_at);
    }
}

/// `Some(true)` for an operator's transition, `Some(false)` for the machine's own.
fn op_kind(t: &Option<Transition>) -> Option<bool> {
    t.as_ref().map(|t| {
        matches!(
            t.reason,
            Reason::OverrideSet(_) | Reason::OverrideCleared | Reason::Reset
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn machine_matches_the_model(spec in spec(), ops in proptest::collection::vec(op(), 1..=40)) {
        run(spec, ops);
    }
}
