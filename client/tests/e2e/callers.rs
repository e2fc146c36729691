//! `ClientBuilder::caller` against a real daemon (docs/DESIGN.md §3.7): every
//! Acquire, Report and leased outcome carries it, so the daemon's quorum and its
//! failing callers see who failed.

use std::time::Duration;

use cbd_client::{CallError, Client, pb};
use cbd_tests::ms;

use crate::support::{RELAXED_DEADLINE, daemon, eventually, put, status};

fn client_as(endpoint: String, caller: &str) -> Client {
    Client::builder(endpoint)
        .acquire_deadline(RELAXED_DEADLINE)
        .lease_flush_interval(Duration::from_millis(5))
        .caller(Some(caller.to_owned()))
        .build()
        .expect("client")
}

async fn fail() -> Result<(), std::io::Error> {
    Err(std::io::Error::other("down"))
}

async fn ok() -> Result<(), std::io::Error> {
    Ok(())
}

/// `(caller, failures)` of the breaker's failing callers.
async fn failing(client: &Client, name: &str) -> Vec<(String, u64)> {
    status(client, name)
        .await
        .failing_callers
        .into_iter()
        .map(|c| (c.caller, c.failures))
        .collect()
}

#[tokio::test]
async fn per_call_reports_carry_the_callers_and_two_make_the_quorum() {
    let (_dir, cbd) = daemon(&[]).await;
    let a = client_as(cbd.endpoint(), "svc-a");
    let b = client_as(cbd.endpoint(), "svc-b");
    put(
        &a,
        "quorum",
        pb::BreakerSpec {
            consecutive_failures: Some(2),
            min_distinct_callers: Some(2),
            open_duration: Some(ms(60_000)),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..4 {
        let r = a.breaker("quorum").call(fail).await;
        assert!(matches!(r, Err(CallError::Inner(_))), "{r:?}");
    }
    assert_eq!(status(&a, "quorum").await.state(), pb::State::Closed);
    assert_eq!(failing(&a, "quorum").await, [("svc-a".to_owned(), 4)]);
    let r = b.breaker("quorum").call(fail).await;
    assert!(matches!(r, Err(CallError::Inner(_))), "{r:?}");
    assert_eq!(status(&a, "quorum").await.state(), pb::State::Open);
    let r = a.breaker("quorum").call(ok).await;
    assert!(matches!(r, Err(CallError::Rejected(_))), "{r:?}");
}

#[tokio::test]
async fn leased_outcomes_carry_the_caller() {
    let (_dir, cbd) = daemon(&[]).await;
    let a = client_as(cbd.endpoint(), "svc-leased");
    put(
        &a,
        "leased",
        pb::BreakerSpec {
            failure_rate_percent: Some(90),
            minimum_calls: Some(100),
            cache_ttl: Some(ms(10_000)),
            ..Default::default()
        },
    )
    .await;
    let breaker = a.breaker("leased");
    eventually("a lease", || async {
        breaker.call(ok).await.expect("allowed");
        (a.stats().leases_granted >= 1).then_some(())
    })
    .await;
    let rpcs = a.stats().rpc_decisions;
    for _ in 0..3 {
        let r = breaker.call(fail).await;
        assert!(matches!(r, Err(CallError::Inner(_))), "{r:?}");
    }
    assert_eq!(a.stats().rpc_decisions, rpcs, "decided under the lease");
    a.flush().await;
    let seen = eventually("leased failures counted", || async {
        let f = failing(&a, "leased").await;
        (f.iter().map(|(_, n)| n).sum::<u64>() == 3).then_some(f)
    })
    .await;
    assert_eq!(seen, [("svc-leased".to_owned(), 3)]);
}
