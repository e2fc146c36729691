//! Scale benchmark (README "Performance", issue #15): for each N, starts its own cbd,
//! creates N breakers through a template with AcquireBatch, and prints RSS after
//! creating and after a restart, the restart's time to SERVING, the first List page
//! of 100, opening a one-name Watch, a SetOverride issued while such a Watch opens,
//! and durable changes/s (SetOverride at `--concurrency`) without and with idle
//! watchers on another breaker. `--baseline-redis` runs redis-server with
//! `appendonly yes, appendfsync always` and redis-benchmark SET at the same
//! concurrency in the same run, and prints cbd's rate over Redis's.
//!
//! `cargo build --release -p cbd -p cbd-tests && target/release/scale-bench --breakers 10000,100000 --baseline-redis`

use std::{
    net::TcpListener,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use cbd_proto::v1 as pb;
use cbd_tests::Daemon;
use clap::Parser;
use futures::StreamExt as _;
use tokio::sync::Mutex;

/// Scale benchmark: N breakers in one daemon (each N its own daemon and data dir).
#[derive(Debug, Parser)]
struct Args {
    /// Breaker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    breakers: Vec<usize>,
    /// Idle watchers (one-name watches of another breaker) for the fan-out row.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Concurrent writers for the durable-change rows (and redis-benchmark's -c).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long each durable-change row runs.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Repetitions of each latency row (List, Watch open, commit stall); medians shown.
    #[arg(long, default_value_t = 11)]
    samples: usize,
    /// Also run redis-server (appendfsync always) and redis-benchmark SET.
    #[arg(long)]
    baseline_redis: bool,
    /// SET requests redis-benchmark sends (`-n`).
    #[arg(long, default_value_t = 100_000)]
    redis_requests: usize,
}

const PREFIX: &str = "scale/";
const BATCH: usize = 1000;

fn name(i: usize) -> String {
    format!("{PREFIX}{i:08}")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{} MiB", kib / 1024)
}

/// One row of the table.
struct Row {
    breakers: usize,
    rss_created_kib: u64,
    rss_restarted_kib: u64,
    restart: Duration,
    list_page: Duration,
    watch_open: Duration,
    override_while_opening: Duration,
    durable_per_s: f64,
    durable_p99: Duration,
    durable_with_watchers_per_s: f64,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut rows = Vec::new();
    for &n in &args.breakers {
        rows.push(measure(n, &args).await);
    }
    let redis = args
        .baseline_redis
        .then(|| redis_set_per_s(args.concurrency, args.redis_requests));

    println!(
        "| breakers | RSS after creating | RSS after restart | restart to SERVING | List page of 100 | Watch open (one name) | SetOverride while a Watch opens | durable changes/s at c{c} (p99) | with {w} idle watchers |",
        c = args.concurrency,
        w = args.watchers
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2} s | {} | {} | {} | {:.0} ({}) | {:.0} ({:.2}×) |",
            r.breakers,
            mib(r.rss_created_kib),
            mib(r.rss_restarted_kib),
            r.restart.as_secs_f64(),
            ms(r.list_page),
            ms(r.watch_open),
            ms(r.override_while_opening),
            r.durable_per_s,
            ms(r.durable_p99),
            r.durable_with_watchers_per_s,
            r.durable_with_watchers_per_s / r.durable_per_s,
        );
    }
    match redis {
        Some(Ok(set)) => {
            println!(
                "redis-server appendfsync always, redis-benchmark SET at c{}: {set:.0}/s",
                args.concurrency
            );
            for r in &rows {
                println!(
                    "cbd durable changes / Redis SET at {} breakers: {:.2}×",
                    r.breakers,
                    r.durable_per_s / set
                );
            }
        }
        Some(Err(e)) => println!("Redis baseline not run: {e}"),
        None => {}
    }
}

async fn measure(n: usize, args: &Args) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cbd.toml");
    std::fs::write(
        &config,
        format!(
            "max_breakers = {}\n\n[[template]]\nprefix = \"{PREFIX}\"\nconsecutive_failures = 5\n",
            n + 10
        ),
    )
    .expect("write config");
    let watchers = (args.watchers + args.samples + 10).to_string();
    let config = config.to_string_lossy().into_owned();
    let extra = [
        "--config",
        config.as_str(),
        "--max-watchers",
        watchers.as_str(),
        "--log-level",
        "warn",
    ];
    let mut daemon = Daemon::start(&dir.path().join("data"), &extra).await;
    eprintln!("{n} breakers: creating");
    create(&daemon, n).await;
    let rss_created_kib = daemon.rss_kib();

    let started = Instant::now();
    daemon.restart().await;
    let restart = started.elapsed();
    let rss_restarted_kib = daemon.rss_kib();

    eprintln!("{n} breakers: List, Watch open");
    let mut admin = daemon.admin().await;
    let mut list = Vec::new();
    for _ in 0..args.samples {
        let t = Instant::now();
        let page = admin
            .list_breakers(pb::ListBreakersRequest {
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        list.push(t.elapsed());
        assert_eq!(page.breakers.len(), 100.min(n));
    }
    let mut opens = Vec::new();
    let mut stalls = Vec::new();
    for i in 0..args.samples {
        let target = name(i % n);
        let (open, stall) = watch_open_with_override(&daemon, &target, &name((i + 1) % n)).await;
        opens.push(open);
        stalls.push(stall);
    }

    eprintln!("{n} breakers: durable changes");
    let (durable_per_s, durable_p99) = durable(&daemon, n, args).await;
    let idle = idle_watchers(&daemon, n, args.watchers).await;
    let (durable_with_watchers_per_s, _) = durable(&daemon, n, args).await;
    drop(idle);
    Row {
        breakers: n,
        rss_created_kib,
        rss_restarted_kib,
        restart,
        list_page: median(list),
        watch_open: median(opens),
        override_while_opening: median(stalls),
        durable_per_s,
        durable_p99,
        durable_with_watchers_per_s,
    }
}

/// N breakers through the template: AcquireBatch of 1,000 names, 4 batches in flight.
async fn create(daemon: &Daemon, n: usize) {
    let next = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut client = daemon.breakers().await;
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let start = {
                    let mut next = next.lock().await;
                    let start = *next;
                    *next += BATCH;
                    start
                };
                if start >= n {
                    break;
                }
                let items = (start..(start + BATCH).min(n))
                    .map(|i| pb::AcquireRequest {
                        name: name(i),
                        ..Default::default()
                    })
                    .collect();
                let answer = client
                    .acquire_batch(pb::AcquireBatchRequest { items })
                    .await
                    .expect("acquire batch")
                    .into_inner();
                assert!(
                    answer.results.iter().all(|r| r.error.is_none()),
                    "every acquire creates its breaker"
                );
            }
        }));
    }
    for t in tasks {
        t.await.expect("creator");
    }
}

/// Opens a one-name watch of `watched` and, at the same moment, a SetOverride on
/// `other`: (time until the watch's first message, the SetOverride's latency).
async fn watch_open_with_override(
    daemon: &Daemon,
    watched: &str,
    other: &str,
) -> (Duration, Duration) {
    let mut client = daemon.breakers().await;
    let mut admin = daemon.admin().await;
    let request = pb::WatchRequest {
        filter: Some(pb::WatchFilter {
            names: vec![watched.into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let other = other.to_owned();
    let overriding = tokio::spawn(async move {
        let t = Instant::now();
        for o in [pb::Override::ForcedOpen, pb::Override::Unspecified] {
            admin
                .set_override(pb::SetOverrideRequest {
                    name: other.clone(),
                    r#override: o as i32,
                    ..Default::default()
                })
                .await
                .expect("set override");
        }
        t.elapsed() / 2
    });
    let t = Instant::now();
    let mut stream = client.watch(request).await.expect("watch").into_inner();
    let first = stream.next().await.expect("a first message").expect("ok");
    let open = t.elapsed();
    assert!(first.kind.is_some());
    (open, overriding.await.expect("override task"))
}

/// SetOverride FORCED_OPEN then clear, on `concurrency` breakers of their own, for
/// `duration`: (durable changes/s, p99 latency).
async fn durable(daemon: &Daemon, n: usize, args: &Args) -> (f64, Duration) {
    let end = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let mut admin = daemon.admin().await;
        let target = name(w % n);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut set = true;
            while Instant::now() < end {
                let o = if set {
                    pb::Override::ForcedOpen
                } else {
                    pb::Override::Unspecified
                };
                set = !set;
                let t = Instant::now();
                admin
                    .set_override(pb::SetOverrideRequest {
                        name: target.clone(),
                        r#override: o as i32,
                        ..Default::default()
                    })
                    .await
                    .expect("set override");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    all.sort();
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    (all.len() as f64 / args.duration.as_secs_f64(), p99)
}

/// `count` one-name watches of the last breaker (which no writer touches), spread
/// over 50 connections, each past its first message; dropped to end them.
async fn idle_watchers(
    daemon: &Daemon,
    n: usize,
    count: usize,
) -> Vec<tonic::Streaming<pb::WatchResponse>> {
    let mut clients = Vec::new();
    for _ in 0..50.min(count.max(1)) {
        clients.push(daemon.breakers().await);
    }
    let idle = name(n - 1);
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let client = &mut clients[i % 50.min(count.max(1))];
        let mut stream = client
            .watch(pb::WatchRequest {
                filter: Some(pb::WatchFilter {
                    names: vec![idle.clone()],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        match stream.next().await {
            Some(Ok(pb::WatchResponse { kind: Some(_), .. })) => {}
            other => panic!("idle watcher {i}: {other:?}"),
        }
        streams.push(stream);
    }
    streams
}

/// redis-server with `appendonly yes, appendfsync always` on a free port in its own
/// dir, and `redis-benchmark -t set` at `concurrency`: SET requests/s.
fn redis_set_per_s(concurrency: usize, requests: usize) -> Result<f64, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut server = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server (Debian package redis-server): {e}"))?;
    let result = (|| {
        wait_redis(port)?;
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-c",
                &concurrency.to_string(),
                "-n",
                &requests.to_string(),
                "-t",
                "set",
                "-q",
            ])
            .output()
            .map_err(|e| format!("redis-benchmark (Debian package redis-tools): {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // Progress lines, then "SET: 67567.57 requests per second, p50=0.879 msec".
        text.rsplit("SET:")
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| format!("no SET rate in redis-benchmark's output: {text:?}"))
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Until `redis-cli PING` answers PONG (at most 10 s).
fn wait_redis(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pong = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "ping"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
            .unwrap_or(false);
        if pong {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("redis-server did not answer PING on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
