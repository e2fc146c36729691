//! `min_distinct_callers` and the failing callers (docs/DESIGN.md §3.7).

use std::time::Duration;

use cbd_breaker::{
    Aggregate, Breaker, CallerId, MAX_CALLERS, Outcome, Reason, Spec, State, Timestamp, WindowSpec,
};

fn at(ms: u64) -> Timestamp {
    Timestamp::from_unix_nanos(1_700_000_000_000_000_000 + ms * 1_000_000)
}

/// Acquires and reports one call of `caller`; the state after.
fn call(b: &mut Breaker, caller: Option<&str>, outcome: Outcome) -> State {
    let permit = b.acquire(at(0)).permit.expect("allowed");
    b.report_as(permit, outcome, None, caller, at(0))
        .unwrap()
        .state
}

fn rate_spec(quorum: u32) -> Spec {
    Spec {
        failure_rate_percent: Some(50),
        minimum_calls: 6,
        window: WindowSpec::Count { calls: 100 },
        min_distinct_callers: quorum,
        ..Spec::default()
    }
}

#[test]
fn a_failure_rate_of_one_caller_does_not_trip_a_quorum_of_two() {
    let mut b = Breaker::new(rate_spec(2));
    for _ in 0..4 {
        call(&mut b, Some("good-1"), Outcome::Success);
        call(&mut b, Some("good-2"), Outcome::Success);
        assert_eq!(call(&mut b, Some("bad-1"), Outcome::Failure), State::Closed);
        assert_eq!(call(&mut b, Some("bad-1"), Outcome::Failure), State::Closed);
    }
    assert_eq!(b.status().window_failures, 8, "50% of 16 calls, one caller");
    // A second caller's failure makes the quorum.
    assert_eq!(call(&mut b, Some("bad-2"), Outcome::Failure), State::Open);
}

#[test]
fn without_a_quorum_the_same_calls_trip() {
    let mut b = Breaker::new(rate_spec(1));
    call(&mut b, Some("good-1"), Outcome::Success);
    call(&mut b, Some("good-2"), Outcome::Success);
    call(&mut b, Some("bad-1"), Outcome::Failure);
    call(&mut b, Some("bad-1"), Outcome::Failure);
    call(&mut b, Some("good-1"), Outcome::Success);
    assert_eq!(call(&mut b, Some("bad-1"), Outcome::Failure), State::Open);
}

#[test]
fn consecutive_failures_need_distinct_callers_in_the_run() {
    let mut b = Breaker::new(Spec {
        consecutive_failures: Some(3),
        min_distinct_callers: 2,
        ..Spec::default()
    });
    for _ in 0..10 {
        assert_eq!(call(&mut b, Some("a"), Outcome::Failure), State::Closed);
    }
    // A success ends the run: "a"'s failures before it do not count for the next.
    call(&mut b, Some("c"), Outcome::Success);
    call(&mut b, Some("a"), Outcome::Failure);
    call(&mut b, Some("a"), Outcome::Failure);
    assert_eq!(b.status().consecutive_failures, 2);
    let permit = b.acquire(at(0)).permit.unwrap();
    let r = b
        .report_as(permit, Outcome::Failure, None, Some("b"), at(0))
        .unwrap();
    assert_eq!(r.state, State::Open);
    assert_eq!(
        r.transition.unwrap().reason,
        Reason::ConsecutiveFailures { count: 3 }
    );
}

#[test]
fn anonymous_calls_are_one_caller() {
    let mut b = Breaker::new(Spec {
        consecutive_failures: Some(2),
        min_distinct_callers: 2,
        ..Spec::default()
    });
    for _ in 0..5 {
        assert_eq!(call(&mut b, None, Outcome::Failure), State::Closed);
    }
    assert_eq!(call(&mut b, Some("named"), Outcome::Failure), State::Open);
}

#[test]
fn callers_beyond_the_cap_count_as_one() {
    let mut b = Breaker::new(Spec {
        consecutive_failures: Some(1),
        min_distinct_callers: 2,
        ..Spec::default()
    });
    // Fill every slot with a caller that stays in the window.
    for i in 0..MAX_CALLERS {
        call(&mut b, Some(&format!("ok-{i}")), Outcome::Success);
    }
    assert_eq!(
        call(&mut b, Some("over-1"), Outcome::Failure),
        State::Closed
    );
    assert_eq!(
        call(&mut b, Some("over-2"), Outcome::Failure),
        State::Closed,
        "both beyond the cap: one overflow caller"
    );
    let top = b.failing_callers();
    assert_eq!(top.len(), 1);
    assert_eq!(
        (top[0].caller.clone(), top[0].failures),
        (CallerId::Overflow, 2)
    );
    assert_eq!(call(&mut b, Some("ok-0"), Outcome::Failure), State::Open);
}

#[test]
fn failing_callers_rank_by_failures_and_leave_with_the_window() {
    let mut b = Breaker::new(Spec {
        failure_rate_percent: Some(100),
        minimum_calls: 100,
        window: WindowSpec::Time {
            duration: Duration::from_secs(10),
            buckets: 10,
        },
        ..Spec::default()
    });
    let report = |b: &mut Breaker, caller, outcome, ms| {
        let p = b.acquire(at(ms)).permit.unwrap();
        b.report_as(p, outcome, None, caller, at(ms)).unwrap();
    };
    report(&mut b, Some("a"), Outcome::Failure, 0);
    for _ in 0..3 {
        report(&mut b, Some("b"), Outcome::Failure, 5_000);
    }
    report(&mut b, Some("b"), Outcome::Success, 5_000);
    report(&mut b, None, Outcome::Failure, 5_000);
    report(&mut b, Some("c"), Outcome::Success, 5_000);
    let top: Vec<(CallerId, u64, u64)> = b
        .failing_callers()
        .into_iter()
        .map(|t| (t.caller, t.failures, t.calls))
        .collect();
    assert_eq!(
        top,
        [
            (CallerId::Named("b".into()), 3, 4),
            (CallerId::Anonymous, 1, 1),
            (CallerId::Named("a".into()), 1, 1),
        ]
    );
    // 10 s on, "a"'s bucket is out of the window.
    b.expire_window(at(10_000));
    assert_eq!(b.failing_callers().len(), 2);
    assert!(
        b.failing_callers()
            .iter()
            .all(|t| t.caller != CallerId::Named("a".into()))
    );
}

#[test]
fn aggregates_of_two_callers_make_a_quorum() {
    let spec = Spec {
        consecutive_failures: Some(4),
        min_distinct_callers: 2,
        cache_ttl: Some(Duration::from_secs(1)),
        ..Spec::default()
    };
    let failures = |n| {
        let mut a = Aggregate::default();
        for _ in 0..n {
            a.record(Outcome::Failure, false);
        }
        a
    };
    let mut b = Breaker::new(spec);
    let g = b.status().generation;
    let r = b
        .report_aggregate_as(g, &failures(6), Some("a"), at(0))
        .unwrap();
    assert_eq!(r.state, State::Closed, "6 in a row, all of one caller");
    let r = b
        .report_aggregate_as(g, &failures(1), Some("b"), at(0))
        .unwrap();
    assert_eq!(r.state, State::Open, "the run now has two callers");
}
