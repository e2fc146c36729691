//! What a guarded call costs on a leased CLOSED breaker, next to the unary path in
//! the same run, and how long a pushed revocation takes to reach 100 leased clients.
//! Starts a real daemon on loopback (`$CBD_BIN`, else the one cargo built).
//!
//! `cargo build --release -p cbd && CBD_BIN=target/release/cbd cargo bench -p cbd-client --bench leased`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cbd_client::{Client, pb};
use cbd_tests::{Daemon, ms};
use hdrhistogram::Histogram;

const LEASED_CALLS: u64 = 20_000_000;
const UNARY_FOR: Duration = Duration::from_secs(3);
const CLIENTS: usize = 100;

async fn noop() -> Result<(), ()> {
    Ok(())
}

fn spec() -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(1_000_000),
        cache_ttl: Some(ms(60_000)),
        ..Default::default()
    }
}

async fn leased(endpoint: &str, name: &str) -> Client {
    let client = Client::builder(endpoint)
        .acquire_deadline(Duration::from_secs(2))
        .build()
        .expect("client");
    let breaker = client.breaker(name);
    while client.stats().leases_granted == 0 {
        breaker.call(noop).await.expect("allowed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    client
}

/// ns per call of `threads` threads each making `calls` leased calls.
fn leased_ns_per_call(client: &Client, name: &str, threads: usize, calls: u64) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let breaker = client.breaker(name);
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("rt");
                rt.block_on(async {
                    for _ in 0..calls {
                        breaker.call(noop).await.expect("leased");
                    }
                });
            });
        }
    });
    started.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = rt.block_on(Daemon::start(&dir.path().join("data"), &[]));
    let endpoint = daemon.endpoint();
    let admin = rt.block_on(async { Client::builder(&endpoint).build().expect("admin") });
    for name in ["bench/leased", "bench/unary", "bench/revoked"] {
        rt.block_on(admin.admin().put(name, spec())).expect("put");
    }

    // Unary: acquire + report per call, leases off.
    let unary = rt.block_on(async {
        let client = Client::builder(&endpoint)
            .leases(false)
            .build()
            .expect("client");
        let breaker = client.breaker("bench/unary");
        let started = Instant::now();
        let mut calls = 0u64;
        while started.elapsed() < UNARY_FOR {
            breaker.call(noop).await.expect("allowed");
            calls += 1;
        }
        started.elapsed().as_nanos() as f64 / calls as f64
    });

    let client = rt.block_on(leased(&endpoint, "bench/leased"));
    let one = leased_ns_per_call(&client, "bench/leased", 1, LEASED_CALLS);
    let two = leased_ns_per_call(&client, "bench/leased", 2, LEASED_CALLS);
    println!(
        "unary call (acquire + report RPCs), 1 task: {unary:>10.0} ns/call  {:>12.0} calls/s",
        1e9 / unary
    );
    println!(
        "leased call, 1 thread:                      {one:>10.1} ns/call  {:>12.0} calls/s  ({:.0}x unary)",
        1e9 / one,
        unary / one
    );
    println!(
        "leased call, 2 threads:                     {two:>10.1} ns/call  {:>12.0} calls/s  (each thread)",
        1e9 / two
    );
    println!(
        "  2 threads together:                                     {:>12.0} calls/s  ({:.2}x one thread)",
        2e9 / two,
        one * 2.0 / two
    );

    // Revocation: 100 leased clients, each on its own connection; a FORCED_OPEN is
    // pushed to all; time from the SetOverride's answer (the change is committed)
    // until each client's lease is void.
    let (latencies, overshoot) = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Arc::new(leased(&endpoint, "bench/revoked").await));
        }
        let mut admin_rpc = admin.admin_client();
        let sent = Instant::now();
        admin_rpc
            .set_override(pb::SetOverrideRequest {
                name: "bench/revoked".into(),
                r#override: pb::Override::ForcedOpen as i32,
                ..Default::default()
            })
            .await
            .expect("force open");
        let answered = Instant::now();
        let mut waits = Vec::new();
        for c in &clients {
            let c = c.clone();
            waits.push(tokio::spawn(async move {
                while c.stats().leases_revoked == 0 {
                    tokio::task::yield_now().await;
                }
                Instant::now()
            }));
        }
        let mut latencies = Histogram::<u64>::new(3).expect("histogram");
        for w in waits {
            let at = w.await.expect("join");
            latencies
                .record(at.saturating_duration_since(answered).as_micros() as u64)
                .expect("record");
        }
        (latencies, answered - sent)
    });
    println!(
        "revocation to {CLIENTS} clients after the change commits: p50 {} us, p99 {} us, max {} us (SetOverride itself took {} us)",
        latencies.value_at_quantile(0.5),
        latencies.value_at_quantile(0.99),
        latencies.max(),
        overshoot.as_micros()
    );
    drop(daemon);
}
