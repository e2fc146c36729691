//! The knobs that match resilience4j's rules (docs/DESIGN.md §3.1): the half-open
//! trial judged by its failure rate, the longest wait in HALF_OPEN, slow failures.

use std::time::Duration;

use cbd_breaker::{
    Breaker, Lease, Outcome, PermitToken, Persisted, Reason, Spec, State, Timestamp, Transition,
};

mod support;
use support::{S, at, spec};

/// Tripped at `at(0)`, HALF_OPEN from `at(10_000)`.
fn half_open(change: impl FnOnce(&mut Spec)) -> Breaker {
    let mut b = Breaker::new(spec(change));
    for _ in 0..3 {
        let p = b.acquire(at(0)).permit.unwrap();
        b.report(p, Outcome::Failure, None, at(0)).unwrap();
    }
    assert_eq!(b.tick(at(10_000)).unwrap().to, State::HalfOpen);
    b
}

fn probes(b: &mut Breaker, n: usize, now: Timestamp) -> Vec<PermitToken> {
    (0..n)
        .map(|_| {
            let a = b.acquire(now);
            assert!(a.allowed, "{a:?}");
            a.permit.unwrap()
        })
        .collect()
}

fn report(
    b: &mut Breaker,
    p: PermitToken,
    outcome: Outcome,
    duration: Option<Duration>,
    now: Timestamp,
) -> Option<Transition> {
    let r = b.report(p, outcome, duration, now).unwrap();
    assert!(!r.stale);
    r.transition
}

/// A trial of 4 probes, re-opening at 50 % failed.
fn rate_rule(s: &mut Spec) {
    s.half_open_permits = 4;
    s.half_open_failure_rate_percent = Some(50);
}

// ---- the half-open trial judged by its rate ------------------------------------

#[test]
fn under_the_rate_rule_one_failure_below_the_rate_does_not_reopen() {
    let mut b = half_open(rate_rule);
    let p = probes(&mut b, 4, at(10_000));
    assert_eq!(
        report(&mut b, p[0], Outcome::Failure, None, at(10_001)),
        None
    );
    for &permit in &p[1..3] {
        assert_eq!(
            report(&mut b, permit, Outcome::Success, None, at(10_002)),
            None
        );
    }
    assert_eq!(b.status().state, State::HalfOpen);
    let t = report(&mut b, p[3], Outcome::Success, None, at(10_003)).unwrap();
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
    assert_eq!(
        t.reason,
        Reason::ProbeTrialPassed {
            failures: 1,
            probes: 4,
            threshold_percent: 50
        }
    );
    assert_eq!(b.status().backoff_level, 0);
}

#[test]
fn under_the_rate_rule_reaching_the_rate_reopens_at_once() {
    let mut b = half_open(|s| {
        rate_rule(s);
        s.max_open_duration = Some(60 * S);
    });
    let p = probes(&mut b, 4, at(10_000));
    assert_eq!(
        report(&mut b, p[0], Outcome::Failure, None, at(10_001)),
        None
    );
    // Two of four is 50 %: decided, whatever the other two do.
    let t = report(&mut b, p[1], Outcome::Failure, None, at(10_002)).unwrap();
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
    assert_eq!(
        t.reason,
        Reason::ProbeFailureRate {
            failures: 2,
            probes: 4,
            threshold_percent: 50
        }
    );
    // A failed trial backs off like a failed probe.
    assert_eq!(b.status().backoff_level, 1);
    assert_eq!(b.status().open_until, Some(at(10_002 + 20_000)));
    // The other two probes are of the old generation now.
    assert!(
        b.report(p[2], Outcome::Success, None, at(10_003))
            .unwrap()
            .stale
    );
}

#[test]
fn under_the_rate_rule_the_trial_holds_exactly_half_open_permits_probes() {
    let mut b = half_open(rate_rule);
    let p = probes(&mut b, 4, at(10_000));
    // All four slots are taken; a success frees a slot but not a place in the trial.
    report(&mut b, p[0], Outcome::Success, None, at(10_001));
    let a = b.acquire(at(10_001));
    assert!(!a.allowed, "a fifth probe in a trial of four: {a:?}");
    // An ignored probe frees its place for another.
    report(&mut b, p[1], Outcome::Ignored, None, at(10_002));
    let again = probes(&mut b, 1, at(10_002));
    assert!(!b.acquire(at(10_002)).allowed);
    for permit in [p[2], p[3], again[0]] {
        report(&mut b, permit, Outcome::Success, None, at(10_003));
    }
    assert_eq!(b.status().state, State::Closed);
}

#[test]
fn under_the_rate_rule_an_expired_probe_counts_as_a_failed_one() {
    let mut b = half_open(|s| {
        rate_rule(s);
        s.permit_ttl = 5 * S;
    });
    let p = probes(&mut b, 4, at(10_000));
    for &permit in &p[..3] {
        report(&mut b, permit, Outcome::Success, None, at(10_001));
    }
    // The fourth never reports: at its expiry it is the trial's one failure of four
    // (25 % < 50 %), and the trial is complete.
    assert_eq!(b.next_deadline(), Some(at(15_000)));
    assert_eq!(b.tick(at(14_999)), None);
    let t = b.tick(at(15_000)).unwrap();
    assert_eq!(
        (t.to, t.reason.clone()),
        (
            State::Closed,
            Reason::ProbeTrialPassed {
                failures: 1,
                probes: 4,
                threshold_percent: 50
            }
        )
    );
}

#[test]
fn under_the_rate_rule_two_expired_probes_reopen() {
    let mut b = half_open(|s| {
        rate_rule(s);
        s.permit_ttl = 5 * S;
    });
    probes(&mut b, 2, at(10_000));
    let t = b.tick(at(15_000)).unwrap();
    assert_eq!(
        (t.to, t.reason),
        (
            State::Open,
            Reason::ProbeFailureRate {
                failures: 2,
                probes: 4,
                threshold_percent: 50
            }
        )
    );
}

#[test]
fn under_the_rate_rule_slow_probes_reopen_at_the_slow_call_rate() {
    let mut b = half_open(|s| {
        rate_rule(s);
        s.slow_call_rate_percent = Some(75);
        s.slow_call_duration = Some(2 * S);
    });
    let p = probes(&mut b, 4, at(10_000));
    // A slow success alone does not re-open under the rate rule.
    for &permit in &p[..2] {
        assert_eq!(
            report(&mut b, permit, Outcome::Success, Some(3 * S), at(10_001)),
            None
        );
    }
    let t = report(&mut b, p[2], Outcome::Success, Some(3 * S), at(10_002)).unwrap();
    assert_eq!(
        t.reason,
        Reason::ProbeSlowRate {
            slow: 3,
            probes: 4,
            threshold_percent: 75
        }
    );
}

#[test]
fn without_the_rate_rule_one_failed_probe_still_reopens() {
    let mut b = half_open(|s| s.half_open_permits = 4);
    let p = probes(&mut b, 4, at(10_000));
    let t = report(&mut b, p[0], Outcome::Failure, None, at(10_001)).unwrap();
    assert_eq!(t.reason, Reason::ProbeFailed);
}

// ---- the longest wait in HALF_OPEN ----------------------------------------------

#[test]
fn half_open_with_no_probe_for_max_wait_goes_back_to_open_at_the_same_backoff() {
    let mut b = half_open(|s| {
        s.half_open_max_wait = Some(5 * S);
        s.max_open_duration = Some(60 * S);
    });
    assert_eq!(b.next_deadline(), Some(at(15_000)));
    assert_eq!(b.tick(at(14_999)), None);
    let t = b.tick(at(15_000)).unwrap();
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Open));
    assert_eq!(
        t.reason,
        Reason::HalfOpenMaxWait {
            waited: 5 * S,
            to: State::Open
        }
    );
    // Nothing failed: no backoff step, so open for `open_duration` again.
    assert_eq!(b.status().backoff_level, 0);
    assert_eq!(b.status().open_until, Some(at(25_000)));
}

#[test]
fn half_open_max_wait_can_close_instead() {
    let mut b = half_open(|s| {
        s.half_open_max_wait = Some(5 * S);
        s.half_open_max_wait_closes = true;
    });
    // The acquire that comes after the wait finds the breaker CLOSED and is allowed.
    let a = b.acquire(at(15_000));
    assert!(a.allowed);
    assert_eq!(a.state, State::Closed);
    assert_eq!(
        a.transition.unwrap().reason,
        Reason::HalfOpenMaxWait {
            waited: 5 * S,
            to: State::Closed
        }
    );
    assert!(!a.permit.unwrap().probe);
}

#[test]
fn a_probe_taken_stops_the_max_wait() {
    let mut b = half_open(|s| {
        s.half_open_max_wait = Some(5 * S);
        s.permit_ttl = 60 * S;
    });
    let p = probes(&mut b, 1, at(12_000));
    // Only the probe's own expiry is pending now.
    assert_eq!(b.next_deadline(), Some(at(72_000)));
    assert_eq!(b.tick(at(15_000)), None);
    assert_eq!(b.status().state, State::HalfOpen);
    // Even once the probe is reported and ignored, the wait does not come back.
    report(&mut b, p[0], Outcome::Ignored, None, at(16_000));
    assert_eq!(b.next_deadline(), None);
    assert_eq!(b.tick(at(100_000)), None);
}

#[test]
fn a_restored_half_open_breaker_waits_from_its_first_tick() {
    let spec = spec(|s| s.half_open_max_wait = Some(5 * S));
    let persisted = Persisted {
        state: State::HalfOpen,
        override_: None,
        generation: 7,
        open_until: None,
        backoff_level: 0,
        override_until: None,
    };
    let mut b = Breaker::restore(spec, persisted);
    // Due at once, so the recovery tick starts the wait.
    assert_eq!(b.next_deadline(), Some(Timestamp::default()));
    assert_eq!(b.tick(at(50_000)), None);
    assert_eq!(b.next_deadline(), Some(at(55_000)));
    assert_eq!(b.tick(at(55_000)).unwrap().to, State::Open);
}

// ---- slow failures --------------------------------------------------------------

/// A slow-call condition of 50 % over a window of 4, slow above 2 s.
fn slow_rate(s: &mut Spec) {
    s.consecutive_failures = None;
    s.slow_call_rate_percent = Some(50);
    s.slow_call_duration = Some(2 * S);
    s.minimum_calls = 4;
    s.window = cbd_breaker::WindowSpec::Count { calls: 4 };
}

fn run(b: &mut Breaker, calls: &[(Outcome, Duration)]) -> Option<Transition> {
    let mut last = None;
    for &(outcome, d) in calls {
        let p = b.acquire(at(0)).permit.unwrap();
        last = b.report(p, outcome, Some(d), at(0)).unwrap().transition;
    }
    last
}

#[test]
fn slow_failures_count_as_slow_only_when_asked() {
    let calls = [
        (Outcome::Failure, 3 * S),
        (Outcome::Failure, 3 * S),
        (Outcome::Success, S),
        (Outcome::Success, S),
    ];
    let mut default = Breaker::new(spec(slow_rate));
    assert_eq!(run(&mut default, &calls), None);
    assert_eq!(default.status().window_slow_calls, 0);

    let mut counted = Breaker::new(spec(|s| {
        slow_rate(s);
        s.slow_includes_failures = true;
    }));
    let t = run(&mut counted, &calls).unwrap();
    assert_eq!(
        t.reason,
        Reason::SlowCallRate {
            rate_percent: 50,
            threshold_percent: 50,
            calls: 4
        }
    );
}

#[test]
fn a_breaker_counting_slow_failures_is_not_leased() {
    let leased = Breaker::new(spec(|s| {
        slow_rate(s);
        s.cache_ttl = Some(S);
    }));
    assert!(matches!(leased.lease(at(0)), Lease::Granted { .. }));
    let not = Breaker::new(spec(|s| {
        slow_rate(s);
        s.cache_ttl = Some(S);
        s.slow_includes_failures = true;
    }));
    assert_eq!(not.lease(at(0)), Lease::NotLeasable);
}
