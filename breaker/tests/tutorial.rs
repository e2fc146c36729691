//! The tutorial scenario: 3 consecutive failures, open for 10 s, one probe.

use std::time::Duration;

use cbd_breaker::{Breaker, Outcome, Reason, Spec, State, Timestamp};

#[test]
fn tutorial() {
    let spec = Spec {
        consecutive_failures: Some(3),
        open_duration: Duration::from_secs(10),
        ..Spec::default()
    };
    spec.validate().unwrap();
    assert_eq!(spec.half_open_permits, 1);
    let t0 = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);
    let after = |secs: f64| t0.saturating_add(Duration::from_secs_f64(secs));
    let mut b = Breaker::new(spec);

    // Three failures open it.
    for i in 0..3 {
        let a = b.acquire(after(0.0));
        assert!(a.allowed);
        let r = b
            .report(a.permit.unwrap(), Outcome::Failure, None, after(0.0))
            .unwrap();
        if i < 2 {
            assert_eq!(r.state, State::Closed);
        } else {
            assert_eq!(r.state, State::Open);
            assert_eq!(
                r.transition.unwrap().reason,
                Reason::ConsecutiveFailures { count: 3 }
            );
        }
    }

    // Rejected, with the right retry_after, until 10 s have passed.
    for (secs, left) in [(0.0, 10.0), (1.0, 9.0), (9.5, 0.5), (9.999, 0.001)] {
        let a = b.acquire(after(secs));
        assert!(!a.allowed, "at {secs}s");
        assert_eq!(a.state, State::Open);
        assert_eq!(
            a.retry_after,
            Some(Duration::from_secs_f64(left)),
            "at {secs}s"
        );
    }

    // At 10 s the first acquire gets a probe; a concurrent second one is refused.
    let probe = b.acquire(after(10.0));
    assert!(probe.allowed);
    assert_eq!(probe.state, State::HalfOpen);
    assert!(probe.permit.unwrap().probe);
    assert_eq!(probe.transition.unwrap().reason.to_string(), "open for 10s");
    let second = b.acquire(after(10.0));
    assert!(!second.allowed);
    assert_eq!(second.state, State::HalfOpen);

    // The probe's success closes it.
    let r = b
        .report(probe.permit.unwrap(), Outcome::Success, None, after(10.2))
        .unwrap();
    assert_eq!(r.state, State::Closed);
    assert_eq!(
        r.transition.unwrap().reason.to_string(),
        "1 probe succeeded"
    );
    assert!(b.acquire(after(10.3)).allowed);
}
