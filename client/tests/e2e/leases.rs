//! Leased decisions through `cbd-client` (docs/DESIGN.md §10) against real daemons:
//! calls decided in process with no RPC, outcomes counted exactly, trips and
//! overrides pushed to every client, leases that end when the daemon stops.

use std::time::Duration;

use cbd_client::{CallError, Client, Fallback, pb};
use cbd_tests::ms;

use crate::support::{ContOnDrop, RELAXED_DEADLINE, daemon, eventually, put, status};

/// A client that flushes leased outcomes every 5 ms.
fn leasing_client(endpoint: String) -> Client {
    Client::builder(endpoint)
        .acquire_deadline(RELAXED_DEADLINE)
        .lease_flush_interval(Duration::from_millis(5))
        .build()
        .expect("client")
}

fn leasable(cache_ttl_ms: u64) -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: None,
        failure_rate_percent: Some(90),
        minimum_calls: Some(20),
        window: Some(pb::breaker_spec::Window::CountWindow(pb::CountWindow {
            calls: 1000,
        })),
        open_duration: Some(ms(60_000)),
        cache_ttl: Some(ms(cache_ttl_ms)),
        ..Default::default()
    }
}

async fn ok() -> Result<(), std::io::Error> {
    Ok(())
}

async fn fail() -> Result<(), std::io::Error> {
    Err(std::io::Error::other("down"))
}

/// Calls until a lease is held: the first calls go by RPC and ask for one.
async fn until_leased(client: &Client, name: &str) -> u64 {
    let breaker = client.breaker(name);
    let calls = std::sync::atomic::AtomicU64::new(0);
    eventually("a lease", || async {
        breaker.call(ok).await.expect("allowed");
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (client.stats().leases_granted >= 1).then_some(())
    })
    .await;
    calls.into_inner()
}

#[tokio::test]
async fn leased_clients_count_every_outcome_once_and_all_stop_at_the_trip() {
    let (_dir, cbd) = daemon(&[]).await;
    let clients: Vec<Client> = (0..8).map(|_| leasing_client(cbd.endpoint())).collect();
    put(&clients[0], "shared", leasable(10_000)).await;

    let mut ran = 0u64;
    let mut failed = 0u64;
    for client in &clients {
        ran += until_leased(client, "shared").await;
    }
    // Leased now: 50 calls per client, 1 in 5 failing, with no RPC.
    for client in &clients {
        let rpcs = client.stats().rpc_decisions;
        let breaker = client.breaker("shared");
        for i in 0..50 {
            let result = if i % 5 == 0 {
                breaker.call(fail).await
            } else {
                breaker.call(ok).await
            };
            ran += 1;
            if i % 5 == 0 {
                failed += 1;
                assert!(matches!(result, Err(CallError::Inner(_))));
            }
        }
        assert_eq!(client.stats().rpc_decisions, rpcs, "decided in process");
    }
    for client in &clients {
        client.flush().await;
    }
    let s = status(&clients[0], "shared").await;
    assert_eq!(
        (u64::from(s.window_calls), u64::from(s.window_failures)),
        (ran, failed),
        "every outcome counted once"
    );
    let leased: u64 = clients.iter().map(|c| c.stats().leased_decisions).sum();
    // The 400 above, and any of the first calls that found the lease already there.
    assert!((8 * 50..=ran).contains(&leased), "{leased} of {ran}");

    // Now every call fails: the aggregates trip the breaker (about 900 more
    // failures fill the window to 90 %), the trip is pushed, and every client stops
    // allowing calls.
    let first = clients[0].breaker("shared");
    for tries in 0.. {
        assert!(tries < 20_000, "the breaker never tripped");
        if matches!(first.call(fail).await, Err(CallError::Rejected(_))) {
            break;
        }
        // Leased calls never wait: let the flush task send the counts.
        tokio::task::yield_now().await;
    }
    for (i, client) in clients.iter().enumerate() {
        let breaker = client.breaker("shared");
        let stopped = eventually(&format!("client {i} rejects"), || async {
            match breaker.call(fail).await {
                Err(CallError::Rejected(r)) => Some(r),
                _ => None,
            }
        })
        .await;
        assert_eq!(stopped.fallback, None, "the daemon decided");
        assert_eq!(stopped.state, cbd_client::State::Open);
    }
    // A client may refuse on the pushed trip before it is committed (then it
    // refuses locally until the commit's follow-up): the committed status follows.
    eventually("the trip is committed", || async {
        (status(&clients[0], "shared").await.state() == pb::State::Open).then_some(())
    })
    .await;
    let revoked: u64 = clients.iter().map(|c| c.stats().leases_revoked).sum();
    assert!(revoked >= 8, "every client heard the push: {revoked}");
}

#[tokio::test]
async fn a_pushed_override_stops_every_leased_client_and_release_leases_again() {
    let (_dir, cbd) = daemon(&[]).await;
    let clients: Vec<Client> = (0..3).map(|_| leasing_client(cbd.endpoint())).collect();
    put(&clients[0], "forced", leasable(10_000)).await;
    for client in &clients {
        until_leased(client, "forced").await;
    }
    let admin = clients[0].admin_client();
    let set = |o: pb::Override| {
        let mut admin = admin.clone();
        async move {
            admin
                .set_override(pb::SetOverrideRequest {
                    name: "forced".into(),
                    r#override: o as i32,
                    ..Default::default()
                })
                .await
                .expect("override");
        }
    };
    set(pb::Override::ForcedOpen).await;
    for client in &clients {
        let breaker = client.breaker("forced");
        eventually("rejected after the push", || async {
            matches!(breaker.call(ok).await, Err(CallError::Rejected(_))).then_some(())
        })
        .await;
        assert_eq!(client.stats().leases_revoked, 1);
    }
    set(pb::Override::Unspecified).await;
    for client in &clients {
        let before = client.stats().leases_granted;
        let breaker = client.breaker("forced");
        eventually("leased again", || async {
            breaker.call(ok).await.expect("allowed");
            (client.stats().leases_granted > before).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn while_the_daemon_is_stopped_a_lease_ends_at_valid_until_and_the_fallback_decides() {
    let (_dir, cbd) = daemon(&[]).await;
    let client = Client::builder(cbd.endpoint())
        .acquire_deadline(Duration::from_millis(100))
        .lease_flush_interval(Duration::from_millis(5))
        .build()
        .expect("client");
    let spec = pb::BreakerSpec {
        fallback: pb::Fallback::FailClosed as i32,
        ..leasable(400)
    };
    put(&client, "stopped", spec).await;
    until_leased(&client, "stopped").await;
    let breaker = client.breaker("stopped");
    eventually("the spec learned", || async {
        (breaker.fallback() == Fallback::FailClosed).then_some(())
    })
    .await;

    cbd.signal(cbd_tests::Signal::STOP);
    let _cont = ContOnDrop(&cbd);
    let rejected = eventually("the fallback decides", || async {
        match breaker.call(ok).await {
            Err(CallError::Rejected(r)) => Some(r),
            Ok(()) => None,
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    assert_eq!(rejected.fallback, Some(Fallback::FailClosed));
    // A fallback decision means the lease was no longer used: it ended at its
    // valid_until (no push could come from a stopped daemon).
    assert!(client.stats().fallback_decisions >= 1);

    cbd.signal(cbd_tests::Signal::CONT);
    let before = client.stats().leases_granted;
    eventually("leased again once the daemon is back", || async {
        let _ = breaker.call(ok).await;
        (client.stats().leases_granted > before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn half_open_is_never_leased_and_the_probe_cap_holds_across_clients() {
    let (_dir, cbd) = daemon(&[]).await;
    let clients: Vec<Client> = (0..4).map(|_| leasing_client(cbd.endpoint())).collect();
    let spec = pb::BreakerSpec {
        consecutive_failures: Some(1),
        open_duration: Some(ms(100)),
        half_open_permits: Some(2),
        cache_ttl: Some(ms(10_000)),
        ..Default::default()
    };
    put(&clients[0], "probe", spec).await;
    for client in &clients {
        until_leased(client, "probe").await;
    }
    let _ = clients[0].breaker("probe").call(fail).await;
    clients[0].flush().await;
    crate::support::wait_state(&clients[0], "probe", pb::State::HalfOpen).await;
    // Every client now asks the daemon, which admits two probes in all.
    let mut permits = Vec::new();
    let mut rejected = 0;
    for client in &clients {
        for _ in 0..3 {
            match client.breaker("probe").acquire().await {
                Ok(p) => permits.push(p),
                Err(cbd_client::Error::Rejected(_)) => rejected += 1,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(permits.len(), 2, "the fleet-wide probe cap");
    assert_eq!(rejected, 10);
}

/// Leased calls on `client`: `calls` of them, every fifth failing; returns the
/// failures. Asserts each was decided under the lease (no Acquire RPC).
async fn leased_calls(client: &Client, name: &str, calls: u32) -> u32 {
    let rpcs = client.stats().rpc_decisions;
    let breaker = client.breaker(name);
    let mut failures = 0;
    for i in 0..calls {
        if i % 5 == 0 {
            failures += 1;
            assert!(matches!(breaker.call(fail).await, Err(CallError::Inner(_))));
        } else {
            breaker.call(ok).await.expect("allowed");
        }
    }
    assert_eq!(client.stats().rpc_decisions, rpcs, "decided in process");
    failures
}

#[tokio::test]
async fn after_kill9_and_restart_on_the_same_port_clients_lease_again_and_nothing_counts_twice() {
    let (dir, cbd) = daemon(&[]).await;
    let addr = cbd.addr;
    let clients: Vec<Client> = (0..4).map(|_| leasing_client(cbd.endpoint())).collect();
    put(&clients[0], "boot", leasable(10_000)).await;
    for client in &clients {
        until_leased(client, "boot").await;
        leased_calls(client, "boot", 25).await;
        client.flush().await;
    }
    assert!(status(&clients[0], "boot").await.window_calls >= 100);

    // Outcomes sent and never answered: the daemon is stopped, then killed. They
    // stay unacknowledged and are resent, in order, to the next run of the daemon.
    cbd.signal(cbd_tests::Signal::STOP);
    let mut cbd = cbd;
    for client in &clients {
        leased_calls(client, "boot", 10).await;
        let flushed = tokio::time::timeout(Duration::from_millis(200), client.flush()).await;
        assert!(flushed.is_err(), "a stopped daemon acknowledges nothing");
    }
    cbd.kill9();
    drop(cbd);

    let granted: Vec<u64> = clients.iter().map(|c| c.stats().leases_granted).collect();
    let cbd = cbd_tests::Daemon::start_with(
        &dir.path().join("data"),
        &[],
        cbd_tests::Options {
            listen: Some(addr.to_string()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(cbd.addr, addr, "the same port");
    // The old run's window is gone with it (in memory only).
    assert_eq!(status(&clients[0], "boot").await.window_calls, 0);
    for (client, before) in clients.iter().zip(granted) {
        // Each client's session reconnects on its own and asks again for the lease
        // it wanted: no call needed.
        eventually("leased again after the restart", || async {
            (client.stats().leases_granted > before).then_some(())
        })
        .await;
    }

    let mut calls = 0u32;
    let mut failures = 0u32;
    let mut leased_before = 0u64;
    let mut leased_after = 0u64;
    for client in &clients {
        leased_before += client.stats().leased_decisions;
        failures += leased_calls(client, "boot", 40).await;
        calls += 40;
        tokio::time::timeout(crate::support::WAIT, client.flush())
            .await
            .expect("the new run answers every outcome, resent ones included");
        leased_after += client.stats().leased_decisions;
    }
    // The stopped run's unanswered aggregates were resent (the flush above waited for
    // their answers) and answered stale: only the calls after the restart count.
    assert_eq!(leased_after - leased_before, u64::from(calls));
    let s = status(&clients[0], "boot").await;
    assert_eq!(
        (s.window_calls, s.window_failures),
        (calls, failures),
        "the daemon counted exactly the outcomes after the restart"
    );
    assert_eq!(s.state(), pb::State::Closed);
    let fallbacks: u64 = clients.iter().map(|c| c.stats().fallback_decisions).sum();
    assert_eq!(fallbacks, 0, "no call was made while the daemon was away");
}
