//! Watch fan-out benchmark: attaches many watchers to one daemon, triggers
//! transitions, and prints the delay from each transition (the event's time, taken
//! by the daemon) to its delivery at every watcher: p50, p99, max. With `--idle N`,
//! N more watchers follow another breaker, which no transition touches: the cost of
//! watchers an event does not match (docs/DESIGN.md §5).
//!
//! `cargo run --release -p cbd-tests --bin watch-bench -- --watchers 10000`
//! `cargo run --release -p cbd-tests --bin watch-bench -- --watchers 1 --idle 10000 --transitions 200`

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use cbd_proto::v1::{self as pb, breakers_client::BreakersClient, watch_response::Kind};
use cbd_tests::Daemon;
use clap::Parser;
use futures::StreamExt;

/// Watch fan-out latency benchmark (starts its own cbd in a temporary directory).
#[derive(Debug, Parser)]
struct Args {
    /// Watchers to attach.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// HTTP/2 connections the watchers are spread over.
    #[arg(long, default_value_t = 20)]
    connections: usize,
    /// Transitions to trigger (each is one event to every watcher).
    #[arg(long, default_value_t = 20)]
    transitions: usize,
    /// Watchers of another breaker (one name each), attached before the others.
    #[arg(long, default_value_t = 0)]
    idle: usize,
}

fn micros_since(t: &prost_types::Timestamp) -> u64 {
    let sent = SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32);
    SystemTime::now()
        .duration_since(sent)
        .unwrap_or_default()
        .as_micros() as u64
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &[
            "--max-watchers",
            &(args.watchers + args.idle + 10).to_string(),
            "--log-level",
            "warn",
        ],
    )
    .await;
    let mut admin = daemon.admin().await;
    let name = "bench/target";
    admin
        .put_breaker(pb::PutBreakerRequest {
            name: name.into(),
            spec: None,
            ..Default::default()
        })
        .await
        .expect("put");

    let attach = Instant::now();
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(daemon.channel().await);
    }
    // Idle watchers: opened, past their snapshot, then held open and never sent an event.
    let mut idle = Vec::with_capacity(args.idle);
    for i in 0..args.idle {
        let mut client = BreakersClient::new(channels[i % channels.len()].clone());
        let req = pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                prefix: String::new(),
                names: vec!["bench/idle".into()],
            }),
            ..Default::default()
        };
        let mut stream = client.watch(req).await.expect("watch").into_inner();
        match stream.next().await {
            Some(Ok(pb::WatchResponse {
                kind: Some(Kind::Snapshot(_)),
            })) => {}
            other => panic!("idle watcher {i}: {other:?}"),
        }
        idle.push(stream);
    }
    if args.idle > 0 {
        println!(
            "{} idle watchers attached in {:?}",
            args.idle,
            attach.elapsed()
        );
    }
    let ready = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let delays = Arc::new(Mutex::new(Vec::with_capacity(
        args.watchers * args.transitions,
    )));
    for i in 0..args.watchers {
        let mut client = BreakersClient::new(channels[i % channels.len()].clone());
        let (ready, delivered, delays) = (ready.clone(), delivered.clone(), delays.clone());
        tokio::spawn(async move {
            let req = pb::WatchRequest {
                filter: Some(pb::WatchFilter {
                    prefix: String::new(),
                    names: vec![name.into()],
                }),
                ..Default::default()
            };
            let mut stream = client.watch(req).await.expect("watch").into_inner();
            // Kept per watcher and merged when its stream ends: no shared lock while measuring.
            let mut mine = Vec::new();
            while let Some(Ok(msg)) = stream.next().await {
                match msg.kind {
                    Some(Kind::Snapshot(s)) if s.done => {
                        ready.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(Kind::Event(e)) => {
                        mine.push(micros_since(e.time.as_ref().expect("event time")));
                        delivered.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
            delays.lock().expect("lock").extend(mine);
        });
    }
    while ready.load(Ordering::SeqCst) < args.watchers {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "{} watchers attached in {:?}",
        args.watchers,
        attach.elapsed()
    );

    let run = Instant::now();
    for t in 0..args.transitions {
        let value = if t % 2 == 0 {
            pb::Override::ForcedOpen
        } else {
            pb::Override::Unspecified
        };
        admin
            .set_override(pb::SetOverrideRequest {
                name: name.into(),
                r#override: value as i32,
                ..Default::default()
            })
            .await
            .expect("override");
        let target = (t + 1) * args.watchers;
        let deadline = Instant::now() + Duration::from_secs(60);
        while delivered.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "transition {t} not delivered to every watcher in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // Stop the daemon: every stream ends and its watcher hands in its delays.
    drop(idle);
    drop(daemon);
    while Arc::strong_count(&delays) > 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut delays = std::mem::take(&mut *delays.lock().expect("lock"));
    delays.sort_unstable();
    let pct =
        |p: f64| delays[((delays.len() as f64 * p) as usize).min(delays.len() - 1)] as f64 / 1000.0;
    println!(
        "watchers={} idle={} transitions={} deliveries={} in {:?}: delay p50={:.2} ms p99={:.2} ms max={:.2} ms",
        args.watchers,
        args.idle,
        args.transitions,
        delays.len(),
        run.elapsed(),
        pct(0.50),
        pct(0.99),
        delays.last().copied().unwrap_or(0) as f64 / 1000.0
    );
}
