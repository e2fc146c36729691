//! Every transition of the machine, through the public API.

use std::time::Duration;

use cbd_breaker::{
    Breaker, Error, Outcome, Override, PermitToken, Persisted, Reason, Spec, State, Timestamp,
    Transition, WindowSpec,
};

mod support;
use support::{S, at, spec};

const MS: Duration = Duration::from_millis(1);

/// Acquires (it must be allowed) and reports `outcome`; returns the report's transition.
fn call(
    b: &mut Breaker,
    outcome: Outcome,
    duration: Option<Duration>,
    now: Timestamp,
) -> Option<Transition> {
    let a = b.acquire(now);
    assert!(a.allowed, "{a:?}");
    let r = b.report(a.permit.unwrap(), outcome, duration, now).unwrap();
    assert!(!r.stale);
    r.transition
}

/// A breaker (3 consecutive failures, open 10 s) tripped at `at(0)`.
fn tripped(change: impl FnOnce(&mut Spec)) -> Breaker {
    let mut b = Breaker::new(spec(change));
    for _ in 0..3 {
        call(&mut b, Outcome::Failure, None, at(0));
    }
    assert_eq!(b.status().state, State::Open);
    b
}

/// A breaker tripped at `at(0)` and moved to HALF_OPEN by a tick at `at(10_000)`.
fn half_open(change: impl FnOnce(&mut Spec)) -> Breaker {
    let mut b = tripped(change);
    assert_eq!(b.tick(at(10_000)).unwrap().to, State::HalfOpen);
    b
}

// ---- CLOSED ---------------------------------------------------------------------

#[test]
fn new_breaker_is_closed_at_generation_1() {
    let b = Breaker::new(Spec::default());
    let s = b.status();
    assert_eq!(
        (s.state, s.override_, s.generation),
        (State::Closed, None, 1)
    );
    assert_eq!(
        (s.window_calls, s.probes_in_flight, s.backoff_level),
        (0, 0, 0)
    );
    assert_eq!(b.next_deadline(), None);
}

#[test]
fn closed_allows_with_a_plain_permit() {
    let mut b = Breaker::new(spec(|_| {}));
    let a = b.acquire(at(0));
    assert!(a.allowed);
    assert_eq!(
        a.permit,
        Some(PermitToken {
            generation: 1,
            serial: 1,
            probe: false
        })
    );
    assert_eq!(
        (a.state, a.generation, a.retry_after),
        (State::Closed, 1, None)
    );
    assert_eq!(
        (a.valid_until, a.shadow_rejected, a.transition),
        (None, false, None)
    );
}

#[test]
fn consecutive_failures_trip() {
    let mut b = Breaker::new(spec(|_| {}));
    assert_eq!(call(&mut b, Outcome::Failure, None, at(0)), None);
    assert_eq!(call(&mut b, Outcome::Failure, None, at(1)), None);
    assert_eq!(b.status().consecutive_failures, 2);
    let t = call(&mut b, Outcome::Failure, None, at(2)).unwrap();
    assert_eq!(
        t,
        Transition {
            from: State::Closed,
            to: State::Open,
            from_override: None,
            to_override: None,
            generation: 2,
            reason: Reason::ConsecutiveFailures { count: 3 },
            at: at(2),
        }
    );
    let s = b.status();
    assert_eq!(s.open_until, Some(at(10_002)));
    // The window and counter are cleared on the trip.
    assert_eq!((s.consecutive_failures, s.window_calls), (0, 0));
}

#[test]
fn default_consecutive_failures_is_5_without_other_conditions() {
    let mut b = Breaker::new(Spec::default());
    for i in 0..4 {
        assert_eq!(call(&mut b, Outcome::Failure, None, at(i)), None);
    }
    let t = call(&mut b, Outcome::Failure, None, at(4)).unwrap();
    assert_eq!(t.reason, Reason::ConsecutiveFailures { count: 5 });
}

#[test]
fn success_resets_consecutive_failures_and_ignored_changes_nothing() {
    let mut b = Breaker::new(spec(|_| {}));
    call(&mut b, Outcome::Failure, None, at(0));
    call(&mut b, Outcome::Failure, None, at(0));
    call(&mut b, Outcome::Ignored, None, at(0));
    let s = b.status();
    assert_eq!((s.consecutive_failures, s.window_calls), (2, 2));
    call(&mut b, Outcome::Success, None, at(0));
    assert_eq!(b.status().consecutive_failures, 0);
    call(&mut b, Outcome::Failure, None, at(0));
    call(&mut b, Outcome::Failure, None, at(0));
    assert_eq!(b.status().state, State::Closed);
    assert!(call(&mut b, Outcome::Failure, None, at(0)).is_some());
}

#[test]
fn failure_rate_trips_once_minimum_calls_reached() {
    let mut b = Breaker::new(spec(|s| {
        s.consecutive_failures = None;
        s.failure_rate_percent = Some(50);
        s.minimum_calls = 4;
        s.window = WindowSpec::Count { calls: 10 };
    }));
    // 3 failures of 3 calls: 100%, but under the minimum.
    for _ in 0..3 {
        assert_eq!(call(&mut b, Outcome::Failure, None, at(0)), None);
    }
    // The 4th call, a success, reaches the minimum at 75%.
    let t = call(&mut b, Outcome::Success, None, at(0)).unwrap();
    assert_eq!(
        t.reason,
        Reason::FailureRate {
            rate_percent: 75,
            threshold_percent: 50,
            calls: 4
        }
    );
    assert_eq!(t.reason.to_string(), "failure rate 75% >= 50% over 4 calls");
}

#[test]
fn failure_rate_below_threshold_does_not_trip_and_old_outcomes_fall_out() {
    let mut b = Breaker::new(spec(|s| {
        s.consecutive_failures = None;
        s.failure_rate_percent = Some(50);
        s.minimum_calls = 4;
        s.window = WindowSpec::Count { calls: 4 };
    }));
    // F S S S: 25%, no trip.
    for o in [
        Outcome::Failure,
        Outcome::Success,
        Outcome::Success,
        Outcome::Success,
    ] {
        assert_eq!(call(&mut b, o, None, at(0)), None);
    }
    assert_eq!(b.status().window_failures, 1);
    // One more success pushes the failure out.
    call(&mut b, Outcome::Success, None, at(0));
    let s = b.status();
    assert_eq!((s.window_calls, s.window_failures), (4, 0));
    // S S S F: 25%; S S F F: 50% trips.
    assert_eq!(call(&mut b, Outcome::Failure, None, at(0)), None);
    let t = call(&mut b, Outcome::Failure, None, at(0)).unwrap();
    assert_eq!(
        t.reason,
        Reason::FailureRate {
            rate_percent: 50,
            threshold_percent: 50,
            calls: 4
        }
    );
}

#[test]
fn failure_rate_rounds_the_rate_it_shows() {
    let mut b = Breaker::new(spec(|s| {
        s.consecutive_failures = None;
        s.failure_rate_percent = Some(60);
        s.minimum_calls = 3;
        s.window = WindowSpec::Count { calls: 3 };
    }));
    // S F F: 66.67% shows as 67.
    call(&mut b, Outcome::Success, None, at(0));
    call(&mut b, Outcome::Failure, None, at(0));
    let t = call(&mut b, Outcome::Failure, None, at(0)).unwrap();
    assert_eq!(
        t.reason,
        Reason::FailureRate {
            rate_percent: 67,
            threshold_percent: 60,
            calls: 3
        }
    );
}

#[test]
fn slow_call_rate_trips() {
    let mut b = Breaker::new(spec(|s| {
        s.consecutive_failures = None;
        s.slow_call_rate_percent = Some(50);
        s.slow_call_duration = Some(2 * S);
        s.minimum_calls = 2;
        s.window = WindowSpec::Count { calls: 10 };
    }));
    // Exactly the threshold is not slow; no duration is not slow.
    call(&mut b, Outcome::Success, Some(2 * S), at(0));
    call(&mut b, Outcome::Success, None, at(0));
    call(&mut b, Outcome::Success, Some(3 * S), at(0));
    assert_eq!(b.status().window_slow_calls, 1);
    let t = call(&mut b, Outcome::Success, Some(3 * S), at(0)).unwrap();
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
fn slow_calls_are_not_counted_without_a_slow_condition() {
    let mut b = Breaker::new(spec(|s| s.slow_call_duration = Some(S)));
    call(&mut b, Outcome::Success, Some(5 * S), at(0));
    assert_eq!(b.status().window_slow_calls, 0);
}

#[test]
fn time_window_forgets_old_failures() {
    let mut b = Breaker::new(spec(|s| {
        s.consecutive_failures = None;
        s.failure_rate_percent = Some(50);
        s.minimum_calls = 4;
        s.window = WindowSpec::Time {
            duration: 10 * S,
            buckets: 10,
        };
    }));
    call(&mut b, Outcome::Failure, None, at(0));
    call(&mut b, Outcome::Failure, None, at(0));
    call(&mut b, Outcome::Failure, None, at(0));
    // 10 s later the three failures are out of the window.
    call(&mut b, Outcome::Success, None, at(10_000));
    assert_eq!(b.status().window_calls, 1);
    assert_eq!(b.status().state, State::Closed);
    // Within the window they still count.
    let mut b2 = Breaker::new(b.spec().clone());
    for _ in 0..3 {
        call(&mut b2, Outcome::Failure, None, at(0));
    }
    assert!(call(&mut b2, Outcome::Success, None, at(9_999)).is_some());
}

#[test]
fn tick_drops_a_time_windows_old_buckets() {
    let mut b = Breaker::new(spec(|s| {
        s.window = WindowSpec::Time {
            duration: 10 * S,
            buckets: 10,
        }
    }));
    call(&mut b, Outcome::Success, None, at(0));
    assert_eq!(b.tick(at(9_999)), None);
    assert_eq!(b.status().window_calls, 1);
    assert_eq!(b.tick(at(10_000)), None);
    assert_eq!(b.status().window_calls, 0);
}

#[test]
fn cache_ttl_gives_valid_until_only_in_closed_without_override() {
    let mut b = Breaker::new(spec(|s| s.cache_ttl = Some(5 * S)));
    assert_eq!(b.acquire(at(1)).valid_until, Some(at(5_001)));
    b.set_override(Some(Override::ForcedClosed), at(2));
    assert_eq!(b.acquire(at(3)).valid_until, None);
    b.set_override(Some(Override::Shadow), at(2));
    assert_eq!(b.acquire(at(3)).valid_until, None);
    b.set_override(None, at(4));
    for _ in 0..3 {
        call(&mut b, Outcome::Failure, None, at(5));
    }
    assert_eq!(b.acquire(at(6)).valid_until, None);
}

// ---- OPEN -----------------------------------------------------------------------

#[test]
fn open_rejects_with_time_left() {
    let mut b = tripped(|_| {});
    let a = b.acquire(at(2_500));
    assert!(!a.allowed);
    assert_eq!(a.permit, None);
    assert_eq!((a.state, a.generation), (State::Open, 2));
    assert_eq!(a.retry_after, Some(7_500 * MS));
    assert_eq!(b.acquire(at(9_999)).retry_after, Some(MS));
    assert_eq!(b.next_deadline(), Some(at(10_000)));
    assert_eq!(b.tick(at(9_999)), None);
}

#[test]
fn tick_moves_open_to_half_open_at_open_until() {
    let mut b = tripped(|_| {});
    let t = b.tick(at(10_000)).unwrap();
    assert_eq!(
        (t.from, t.to, t.generation),
        (State::Open, State::HalfOpen, 3)
    );
    assert_eq!(t.reason, Reason::OpenElapsed { open_for: 10 * S });
    assert_eq!(t.reason.to_string(), "open for 10s");
    let s = b.status();
    assert_eq!(
        (s.state, s.open_until, s.probes_in_flight),
        (State::HalfOpen, None, 0)
    );
    assert_eq!(b.next_deadline(), None);
}

#[test]
fn acquire_moves_open_to_half_open_lazily_and_admits_a_probe() {
    let mut b = tripped(|_| {});
    let a = b.acquire(at(12_000));
    assert!(a.allowed);
    assert_eq!(a.state, State::HalfOpen);
    assert_eq!(a.generation, 3);
    assert_eq!(
        a.permit,
        Some(PermitToken {
            generation: 3,
            serial: a.permit.unwrap().serial,
            probe: true
        })
    );
    let t = a.transition.unwrap();
    assert_eq!(
        (t.from, t.to, t.generation, t.at),
        (State::Open, State::HalfOpen, 3, at(12_000))
    );
}

#[test]
fn reports_of_closed_permits_are_stale_once_open() {
    let mut b = Breaker::new(spec(|_| {}));
    let late = b.acquire(at(0)).permit.unwrap();
    for _ in 0..3 {
        call(&mut b, Outcome::Failure, None, at(0));
    }
    let before = b.status();
    let r = b.report(late, Outcome::Failure, None, at(1)).unwrap();
    assert!(r.stale);
    assert_eq!(
        (r.state, r.generation, r.transition),
        (State::Open, 2, None)
    );
    assert_eq!(b.status(), before);
}

#[test]
fn permit_from_the_future_is_an_error() {
    let mut b = Breaker::new(spec(|_| {}));
    let forged = PermitToken {
        generation: 7,
        serial: 1,
        probe: false,
    };
    assert_eq!(
        b.report(forged, Outcome::Success, None, at(0)),
        Err(Error::PermitFromFuture {
            permit: 7,
            current: 1
        })
    );
}

#[test]
fn a_plain_permit_of_the_open_generation_is_stale() {
    let mut b = tripped(|_| {});
    let forged = PermitToken {
        generation: 2,
        serial: 1,
        probe: false,
    };
    assert!(
        b.report(forged, Outcome::Failure, None, at(1))
            .unwrap()
            .stale
    );
}

// ---- HALF_OPEN ------------------------------------------------------------------

#[test]
fn half_open_admits_at_most_half_open_permits() {
    let mut b = half_open(|s| {
        s.half_open_permits = 2;
        s.success_threshold = 2;
        s.permit_ttl = 5 * S;
    });
    let p1 = b.acquire(at(10_000));
    let p2 = b.acquire(at(11_000));
    assert!(p1.allowed && p2.allowed);
    assert_ne!(p1.permit.unwrap().serial, p2.permit.unwrap().serial);
    assert_eq!(b.status().probes_in_flight, 2);
    let full = b.acquire(at(12_000));
    assert!(!full.allowed);
    assert_eq!(full.state, State::HalfOpen);
    // The earliest probe expires at 15 s.
    assert_eq!(full.retry_after, Some(3 * S));
    assert_eq!(b.next_deadline(), Some(at(15_000)));
}

#[test]
fn probe_successes_close_it() {
    let mut b = half_open(|s| {
        s.half_open_permits = 2;
        s.success_threshold = 2;
        s.max_open_duration = Some(60 * S);
    });
    let p1 = b.acquire(at(10_000)).permit.unwrap();
    let p2 = b.acquire(at(10_000)).permit.unwrap();
    let r = b.report(p1, Outcome::Success, None, at(10_100)).unwrap();
    assert_eq!(
        (r.stale, r.state, r.transition),
        (false, State::HalfOpen, None)
    );
    assert_eq!(b.status().half_open_successes, 1);
    assert_eq!(b.status().probes_in_flight, 1);
    let t = b
        .report(p2, Outcome::Success, None, at(10_200))
        .unwrap()
        .transition
        .unwrap();
    assert_eq!(
        (t.from, t.to, t.generation),
        (State::HalfOpen, State::Closed, 4)
    );
    assert_eq!(t.reason, Reason::ProbesSucceeded { count: 2 });
    let s = b.status();
    assert_eq!(
        (s.state, s.backoff_level, s.window_calls, s.probes_in_flight),
        (State::Closed, 0, 0, 0)
    );
}

#[test]
fn a_freed_slot_admits_the_next_probe() {
    let mut b = half_open(|s| s.success_threshold = 1);
    let p = b.acquire(at(10_000)).permit.unwrap();
    assert!(!b.acquire(at(10_000)).allowed);
    b.report(p, Outcome::Ignored, None, at(10_000)).unwrap();
    assert_eq!(b.status().state, State::HalfOpen);
    assert!(b.acquire(at(10_000)).allowed);
}

#[test]
fn probe_failure_reopens_with_backoff() {
    let mut b = half_open(|s| s.max_open_duration = Some(25 * S));
    let p = b.acquire(at(10_000)).permit.unwrap();
    let t = b
        .report(p, Outcome::Failure, None, at(10_500))
        .unwrap()
        .transition
        .unwrap();
    assert_eq!(
        (t.from, t.to, t.generation),
        (State::HalfOpen, State::Open, 4)
    );
    assert_eq!(t.reason, Reason::ProbeFailed);
    let s = b.status();
    assert_eq!(s.backoff_level, 1);
    assert_eq!(s.open_until, Some(at(30_500))); // 10 s * 2
    // Next round: 40 s, capped at 25 s.
    let t = b.tick(at(30_500)).unwrap();
    assert_eq!(t.reason, Reason::OpenElapsed { open_for: 20 * S });
    let p = b.acquire(at(30_500)).permit.unwrap();
    b.report(p, Outcome::Failure, None, at(31_000)).unwrap();
    let s = b.status();
    assert_eq!((s.backoff_level, s.open_until), (2, Some(at(56_000))));
    // Closing resets the backoff: the next trip opens for 10 s again.
    b.tick(at(56_000)).unwrap();
    let p = b.acquire(at(56_000)).permit.unwrap();
    b.report(p, Outcome::Success, None, at(56_000)).unwrap();
    assert_eq!(b.status().backoff_level, 0);
    for _ in 0..3 {
        call(&mut b, Outcome::Failure, None, at(57_000));
    }
    assert_eq!(b.status().open_until, Some(at(67_000)));
}

#[test]
fn without_max_open_duration_there_is_no_backoff() {
    let mut b = half_open(|_| {});
    let p = b.acquire(at(10_000)).permit.unwrap();
    b.report(p, Outcome::Failure, None, at(10_000)).unwrap();
    assert_eq!(b.status().open_until, Some(at(20_000)));
}

#[test]
fn slow_probe_reopens() {
    let mut b = half_open(|s| {
        s.failure_rate_percent = Some(50);
        s.slow_call_rate_percent = Some(50);
        s.slow_call_duration = Some(2 * S);
    });
    let p = b.acquire(at(10_000)).permit.unwrap();
    let t = b
        .report(p, Outcome::Success, Some(3 * S), at(13_000))
        .unwrap()
        .transition
        .unwrap();
    assert_eq!(t.to, State::Open);
    assert_eq!(t.reason, Reason::ProbeSlow { threshold: 2 * S });
    assert_eq!(t.reason.to_string(), "probe slower than 2s");
}

#[test]
fn unreported_probe_expires_after_permit_ttl() {
    let mut b = half_open(|s| s.permit_ttl = 5 * S);
    let p = b.acquire(at(10_000)).permit.unwrap();
    assert_eq!(b.next_deadline(), Some(at(15_000)));
    assert_eq!(b.tick(at(14_999)), None);
    let t = b.tick(at(15_000)).unwrap();
    assert_eq!(
        (t.from, t.to, t.generation),
        (State::HalfOpen, State::Open, 4)
    );
    assert_eq!(t.reason, Reason::ProbeExpired);
    let s = b.status();
    assert_eq!((s.probes_in_flight, s.backoff_level), (0, 1));
    // The late report is stale.
    assert!(
        b.report(p, Outcome::Success, None, at(15_001))
            .unwrap()
            .stale
    );
}

#[test]
fn acquire_expires_probes_lazily() {
    let mut b = half_open(|s| s.permit_ttl = 5 * S);
    b.acquire(at(10_000));
    let a = b.acquire(at(15_000));
    assert!(!a.allowed);
    assert_eq!(a.state, State::Open);
    assert_eq!(a.transition.unwrap().reason, Reason::ProbeExpired);
    assert_eq!(a.retry_after, Some(10 * S));
}

#[test]
fn a_probe_reported_twice_is_stale_the_second_time() {
    let mut b = half_open(|s| {
        s.half_open_permits = 2;
        s.success_threshold = 2;
    });
    let p = b.acquire(at(10_000)).permit.unwrap();
    b.report(p, Outcome::Success, None, at(10_000)).unwrap();
    let before = b.status();
    let r = b.report(p, Outcome::Success, None, at(10_000)).unwrap();
    assert!(r.stale);
    assert_eq!(b.status(), before);
    // Nor does an id never handed out, or a plain permit, count.
    let unknown = PermitToken {
        generation: 3,
        serial: 999,
        probe: true,
    };
    assert!(
        b.report(unknown, Outcome::Failure, None, at(10_000))
            .unwrap()
            .stale
    );
    let plain = PermitToken {
        generation: 3,
        serial: p.serial,
        probe: false,
    };
    assert!(
        b.report(plain, Outcome::Failure, None, at(10_000))
            .unwrap()
            .stale
    );
    assert_eq!(b.status(), before);
}

// ---- overrides ------------------------------------------------------------------

#[test]
fn forced_open_rejects_everything_until_cleared() {
    let mut b = Breaker::new(spec(|_| {}));
    let plain = b.acquire(at(0)).permit.unwrap();
    let t = b.set_override(Some(Override::ForcedOpen), at(1));
    assert_eq!(
        t,
        Transition {
            from: State::Closed,
            to: State::Open,
            from_override: None,
            to_override: Some(Override::ForcedOpen),
            generation: 2,
            reason: Reason::OverrideSet(Override::ForcedOpen),
            at: at(1),
        }
    );
    let a = b.acquire(at(1_000_000));
    assert!(!a.allowed);
    assert_eq!(
        (a.state, a.retry_after, a.permit),
        (State::Open, None, None)
    );
    assert_eq!(b.tick(at(1_000_000)), None);
    assert_eq!(b.next_deadline(), None);
    assert_eq!(b.status().open_until, None);
    assert!(
        b.report(plain, Outcome::Success, None, at(2))
            .unwrap()
            .stale
    );
    let forged = PermitToken {
        generation: 2,
        serial: 1,
        probe: false,
    };
    assert!(
        b.report(forged, Outcome::Success, None, at(2))
            .unwrap()
            .stale
    );
}

#[test]
fn forced_open_from_open_freezes_the_timer() {
    let mut b = tripped(|_| {});
    b.set_override(Some(Override::ForcedOpen), at(1));
    assert_eq!(b.tick(at(20_000)), None);
    assert!(!b.acquire(at(20_000)).allowed);
    assert_eq!(b.status().state, State::Open);
}

#[test]
fn forced_closed_counts_but_never_trips() {
    let mut b = tripped(|_| {});
    let t = b.set_override(Some(Override::ForcedClosed), at(1));
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
    for i in 0..10 {
        assert_eq!(call(&mut b, Outcome::Failure, None, at(i)), None);
    }
    let s = b.status();
    assert_eq!(
        (s.state, s.window_calls, s.window_failures),
        (State::Closed, 10, 10)
    );
    assert_eq!(s.consecutive_failures, 10);
    assert_eq!(b.tick(at(100_000)), None);
}

#[test]
fn disabled_allows_all_and_counts_nothing() {
    let mut b = Breaker::new(spec(|_| {}));
    b.set_override(Some(Override::Disabled), at(0));
    for i in 0..10 {
        assert_eq!(call(&mut b, Outcome::Failure, None, at(i)), None);
    }
    let s = b.status();
    assert_eq!(
        (s.state, s.window_calls, s.consecutive_failures),
        (State::Closed, 0, 0)
    );
    let probe = PermitToken {
        generation: s.generation,
        serial: 1,
        probe: true,
    };
    assert!(
        b.report(probe, Outcome::Failure, None, at(0))
            .unwrap()
            .stale
    );
}

#[test]
fn shadow_runs_the_machine_but_allows_everything() {
    let mut b = tripped(|_| {});
    let t = b.set_override(Some(Override::Shadow), at(1));
    // Shadow starts CLOSED with an empty window.
    assert_eq!(
        (t.from, t.to, t.to_override),
        (State::Open, State::Closed, Some(Override::Shadow))
    );
    assert_eq!(b.status().window_calls, 0);
    for _ in 0..2 {
        call(&mut b, Outcome::Failure, None, at(2));
    }
    let t = call(&mut b, Outcome::Failure, None, at(2)).unwrap();
    assert_eq!((t.from, t.to), (State::Closed, State::Open));
    assert_eq!(
        (t.from_override, t.to_override),
        (Some(Override::Shadow), Some(Override::Shadow))
    );
    assert_eq!(t.reason, Reason::ConsecutiveFailures { count: 3 });
    // Would reject: allowed anyway, flagged, with a plain permit that counts nothing.
    let a = b.acquire(at(3));
    assert!(a.allowed && a.shadow_rejected);
    assert_eq!(
        (a.state, a.retry_after, a.valid_until),
        (State::Open, None, None)
    );
    assert_eq!(
        a.permit,
        Some(PermitToken {
            generation: t.generation,
            serial: a.permit.unwrap().serial,
            probe: false
        })
    );
    let r = b
        .report(a.permit.unwrap(), Outcome::Failure, None, at(3))
        .unwrap();
    assert!(!r.stale && r.transition.is_none());
    // Timers run: HALF_OPEN at open_until, one probe admitted, the rest flagged.
    assert_eq!(b.next_deadline(), Some(at(10_002)));
    let t = b.tick(at(10_002)).unwrap();
    assert_eq!(t.reason, Reason::OpenElapsed { open_for: 10 * S });
    let probe = b.acquire(at(10_002));
    assert!(probe.allowed && !probe.shadow_rejected && probe.permit.unwrap().probe);
    let extra = b.acquire(at(10_002));
    assert!(extra.allowed && extra.shadow_rejected && !extra.permit.unwrap().probe);
    let r = b
        .report(extra.permit.unwrap(), Outcome::Failure, None, at(10_003))
        .unwrap();
    assert!(!r.stale && r.transition.is_none());
    let t = b
        .report(probe.permit.unwrap(), Outcome::Success, None, at(10_004))
        .unwrap()
        .transition
        .unwrap();
    assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
    assert_eq!(b.status().override_, Some(Override::Shadow));
}

#[test]
fn clearing_an_override_returns_to_an_empty_closed_breaker() {
    let mut b = half_open(|s| s.max_open_duration = Some(60 * S));
    let p = b.acquire(at(10_000)).permit.unwrap();
    b.report(p, Outcome::Failure, None, at(10_000)).unwrap();
    assert_eq!(b.status().backoff_level, 1);
    b.set_override(Some(Override::ForcedClosed), at(11_000));
    call(&mut b, Outcome::Failure, None, at(11_000));
    let g = b.status().generation;
    let t = b.set_override(None, at(12_000));
    assert_eq!(t.reason, Reason::OverrideCleared);
    assert_eq!(
        (t.from_override, t.to_override, t.generation),
        (Some(Override::ForcedClosed), None, g + 1)
    );
    let s = b.status();
    assert_eq!(
        (
            s.state,
            s.window_calls,
            s.backoff_level,
            s.consecutive_failures
        ),
        (State::Closed, 0, 0, 0)
    );
}

#[test]
fn setting_the_same_override_still_bumps_the_generation() {
    let mut b = Breaker::new(spec(|_| {}));
    assert_eq!(b.set_override(None, at(0)).generation, 2);
    let t = b.set_override(Some(Override::Disabled), at(0));
    let t2 = b.set_override(Some(Override::Disabled), at(0));
    assert_eq!((t.generation, t2.generation), (3, 4));
    assert_eq!(
        (t2.from_override, t2.to_override),
        (Some(Override::Disabled), Some(Override::Disabled))
    );
}

// ---- reset ----------------------------------------------------------------------

#[test]
fn reset_closes_and_empties_but_keeps_the_override() {
    let mut b = half_open(|s| s.max_open_duration = Some(60 * S));
    let p = b.acquire(at(10_000)).permit.unwrap();
    b.report(p, Outcome::Failure, None, at(10_000)).unwrap();
    let t = b.reset(at(11_000));
    assert_eq!(
        (t.from, t.to, t.reason, t.generation),
        (State::Open, State::Closed, Reason::Reset, 5)
    );
    let s = b.status();
    assert_eq!(
        (s.state, s.backoff_level, s.open_until),
        (State::Closed, 0, None)
    );

    b.set_override(Some(Override::ForcedOpen), at(12_000));
    let t = b.reset(at(13_000));
    assert_eq!((t.from, t.to), (State::Open, State::Open));
    assert_eq!(
        (t.from_override, t.to_override),
        (Some(Override::ForcedOpen), Some(Override::ForcedOpen))
    );
    assert!(!b.acquire(at(13_000)).allowed);

    b.set_override(Some(Override::ForcedClosed), at(14_000));
    call(&mut b, Outcome::Failure, None, at(14_000));
    b.reset(at(15_000));
    let s = b.status();
    assert_eq!(
        (s.override_, s.window_calls),
        (Some(Override::ForcedClosed), 0)
    );
}

// ---- spec changes, persistence --------------------------------------------------

#[test]
fn set_spec_keeps_state_and_rebuilds_the_window_only_when_it_changed() {
    let mut b = Breaker::new(spec(|_| {}));
    call(&mut b, Outcome::Failure, None, at(0));
    b.set_spec(spec(|s| s.open_duration = 20 * S));
    let s = b.status();
    assert_eq!(
        (s.generation, s.window_calls, s.consecutive_failures),
        (1, 1, 1)
    );
    b.set_spec(spec(|s| s.window = WindowSpec::Count { calls: 50 }));
    let s = b.status();
    assert_eq!(
        (s.generation, s.window_calls, s.consecutive_failures),
        (1, 0, 1)
    );
    // A half-open breaker can take more probes at once after a spec change.
    let mut b = half_open(|_| {});
    b.acquire(at(10_000));
    assert!(!b.acquire(at(10_000)).allowed);
    b.set_spec(spec(|s| s.half_open_permits = 2));
    assert!(b.acquire(at(10_000)).allowed);
    assert_eq!(b.status().generation, 3);
}

#[test]
fn persisted_round_trips_through_restore() {
    let mut b = tripped(|s| s.max_open_duration = Some(60 * S));
    b.tick(at(10_000));
    let p = b.acquire(at(10_000)).permit.unwrap();
    b.report(p, Outcome::Failure, None, at(10_000)).unwrap();
    let saved = b.persisted();
    assert_eq!(
        saved,
        Persisted {
            state: State::Open,
            override_: None,
            generation: 4,
            open_until: Some(at(30_000)),
            backoff_level: 1,
            override_until: None,
        }
    );
    let mut r = Breaker::restore(b.spec().clone(), saved.clone());
    assert_eq!(r.persisted(), saved);
    assert_eq!(r.next_deadline(), Some(at(30_000)));
    assert_eq!(r.tick(at(29_999)), None);
    let t = r.tick(at(40_000)).unwrap();
    assert_eq!(t.reason, Reason::OpenElapsed { open_for: 20 * S });
}

#[test]
fn restore_frees_half_open_slots() {
    let mut b = half_open(|_| {});
    b.acquire(at(10_000));
    assert_eq!(b.status().probes_in_flight, 1);
    let mut r = Breaker::restore(b.spec().clone(), b.persisted());
    let s = r.status();
    assert_eq!(
        (s.state, s.probes_in_flight, s.generation),
        (State::HalfOpen, 0, 3)
    );
    assert!(r.acquire(at(10_001)).allowed);
}

#[test]
fn restore_keeps_overrides() {
    let mut b = Breaker::new(spec(|_| {}));
    b.set_override(Some(Override::ForcedOpen), at(0));
    let mut r = Breaker::restore(b.spec().clone(), b.persisted());
    assert_eq!(r.status().override_, Some(Override::ForcedOpen));
    assert!(!r.acquire(at(1)).allowed);
    assert_eq!(r.next_deadline(), None);
}

#[test]
fn restore_of_an_open_record_without_deadline_is_due_at_once() {
    let persisted = Persisted {
        state: State::Open,
        override_: None,
        generation: 9,
        open_until: None,
        backoff_level: 0,
        override_until: None,
    };
    let mut r = Breaker::restore(spec(|_| {}), persisted);
    assert_eq!(r.tick(at(0)).unwrap().to, State::HalfOpen);
}

// ---- single-use permits ---------------------------------------------------------

#[test]
fn a_closed_permit_counts_once() {
    let mut b = Breaker::new(spec(|_| {}));
    let p = b.acquire(at(0)).permit.unwrap();
    let first = b.report(p, Outcome::Failure, None, at(1)).unwrap();
    assert!(!first.stale);
    let counted = b.status();
    assert_eq!(counted.consecutive_failures, 1);
    for _ in 0..3 {
        let again = b.report(p, Outcome::Failure, None, at(2)).unwrap();
        assert!(again.stale, "a replayed permit is stale");
        assert_eq!(again.transition, None);
    }
    assert_eq!(b.status(), counted, "replays changed nothing");
    assert_eq!(b.status().state, State::Closed);
}

#[test]
fn a_closed_permit_never_issued_is_stale() {
    let mut b = Breaker::new(spec(|_| {}));
    let real = b.acquire(at(0)).permit.unwrap();
    for serial in [0, real.serial + 1, u64::MAX] {
        let forged = PermitToken { serial, ..real };
        assert!(
            b.report(forged, Outcome::Failure, None, at(1))
                .unwrap()
                .stale
        );
    }
    assert_eq!(b.status().consecutive_failures, 0);
    assert!(!b.report(real, Outcome::Failure, None, at(1)).unwrap().stale);
}

#[test]
fn permits_are_single_use_under_every_override() {
    for o in [Override::ForcedClosed, Override::Disabled, Override::Shadow] {
        let mut b = Breaker::new(spec(|_| {}));
        b.set_override(Some(o), at(0));
        let p = b.acquire(at(0)).permit.unwrap();
        assert!(!b.report(p, Outcome::Failure, None, at(1)).unwrap().stale);
        let before = b.status();
        assert!(
            b.report(p, Outcome::Failure, None, at(1)).unwrap().stale,
            "{o:?}: replay"
        );
        assert_eq!(b.status(), before, "{o:?}: replay changed nothing");
    }
}

#[test]
fn serials_are_unique_across_plain_and_probe_permits() {
    let mut b = Breaker::new(spec(|s| s.half_open_permits = 2));
    let mut serials = Vec::new();
    for _ in 0..3 {
        let a = b.acquire(at(0));
        serials.push(a.permit.unwrap().serial);
        b.report(a.permit.unwrap(), Outcome::Failure, None, at(0))
            .unwrap();
    }
    b.tick(at(10_000)).unwrap();
    for _ in 0..2 {
        serials.push(b.acquire(at(10_000)).permit.unwrap().serial);
    }
    let mut unique = serials.clone();
    unique.dedup();
    assert_eq!(unique, serials);
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");
}

#[test]
fn status_shows_a_time_window_as_of_now() {
    let mut b = Breaker::new(spec(|s| {
        s.consecutive_failures = None;
        s.failure_rate_percent = Some(90);
        s.minimum_calls = 2;
        s.window = WindowSpec::Time {
            duration: 500 * MS,
            buckets: 5,
        };
    }));
    call(&mut b, Outcome::Failure, None, at(0));
    call(&mut b, Outcome::Success, None, at(0));
    b.expire_window(at(100));
    assert_eq!(
        (b.status().window_calls, b.status().window_failures),
        (2, 1)
    );
    b.expire_window(at(1_700));
    let s = b.status();
    assert_eq!((s.window_calls, s.window_failures), (0, 0), "{s:?}");
    assert_eq!(s.state, State::Closed, "nothing else changes");
}

#[test]
fn an_override_with_a_duration_clears_itself_on_its_timer() {
    let mut b = Breaker::new(spec(|_| {}));
    let set = b.set_override_until(Some(Override::ForcedOpen), Some(at(5_000)), at(0));
    assert_eq!(set.reason, Reason::OverrideSet(Override::ForcedOpen));
    // FORCED_OPEN has no machine timer, but the expiry is one.
    assert_eq!(b.next_deadline(), Some(at(5_000)));
    assert_eq!(b.status().override_until, Some(at(5_000)));
    assert!(!b.acquire(at(4_999)).allowed);
    assert_eq!(b.tick(at(4_999)), None);
    let t = b.tick(at(5_000)).expect("the expiry is a transition");
    assert_eq!(t.reason, Reason::OverrideExpired(Override::ForcedOpen));
    assert_eq!(t.reason.to_string(), "FORCED_OPEN override expired");
    assert_eq!((t.from, t.to), (State::Open, State::Closed));
    assert_eq!(
        (t.from_override, t.to_override),
        (Some(Override::ForcedOpen), None)
    );
    let s = b.status();
    assert_eq!((s.override_, s.override_until), (None, None));
    assert_eq!(b.next_deadline(), None);
    assert!(b.acquire(at(5_001)).allowed);
}

#[test]
fn an_expired_override_clears_on_the_next_acquire_without_a_tick() {
    let mut b = Breaker::new(spec(|_| {}));
    b.set_override_until(Some(Override::Disabled), Some(at(1_000)), at(0));
    let a = b.acquire(at(1_000));
    let t = a.transition.expect("acquire ran the due timer");
    assert_eq!(t.reason, Reason::OverrideExpired(Override::Disabled));
    assert!(a.allowed);
    assert_eq!(b.status().override_, None);
}

#[test]
fn a_shadow_override_with_a_duration_keeps_the_machine_timers_and_its_own() {
    let mut b = tripped(|_| {});
    // Tripped at 0, open for 10 s; shadow set afresh, then tripped again in shadow.
    b.set_override_until(Some(Override::Shadow), Some(at(60_000)), at(0));
    for _ in 0..5 {
        let p = b.acquire(at(1)).permit.unwrap();
        b.report(p, Outcome::Failure, None, at(1)).unwrap();
    }
    assert_eq!(b.status().state, State::Open);
    let open_until = b.status().open_until.unwrap();
    assert!(open_until < at(60_000));
    assert_eq!(b.next_deadline(), Some(open_until));
    assert_eq!(b.tick(open_until).unwrap().to, State::HalfOpen);
    let t = b.tick(at(60_000)).unwrap();
    assert_eq!(t.reason, Reason::OverrideExpired(Override::Shadow));
}

#[test]
fn reset_keeps_the_override_and_its_expiry_and_clearing_drops_it() {
    let mut b = Breaker::new(spec(|_| {}));
    b.set_override_until(Some(Override::ForcedClosed), Some(at(9_000)), at(0));
    b.reset(at(1));
    assert_eq!(b.status().override_until, Some(at(9_000)));
    b.set_override(None, at(2));
    assert_eq!(b.status().override_until, None);
    assert_eq!(b.next_deadline(), None);
    // A later override without a duration holds: no expiry carried over.
    b.set_override_until(Some(Override::ForcedOpen), Some(at(9_000)), at(3));
    b.set_override(Some(Override::ForcedOpen), at(4));
    assert_eq!(b.next_deadline(), None);
}

#[test]
fn an_override_expiry_survives_restore() {
    let mut b = Breaker::new(spec(|_| {}));
    b.set_override_until(Some(Override::ForcedOpen), Some(at(7_000)), at(0));
    let saved = b.persisted();
    assert_eq!(saved.override_until, Some(at(7_000)));
    let mut r = Breaker::restore(b.spec().clone(), saved);
    assert_eq!(r.next_deadline(), Some(at(7_000)));
    // Down past the expiry: the catch-up tick clears it.
    let t = r.tick(at(8_000)).unwrap();
    assert_eq!(t.reason, Reason::OverrideExpired(Override::ForcedOpen));
}
