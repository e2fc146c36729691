//! `cbctl bench --mode lease`: what leases (docs/DESIGN.md §10) buy and cost.
//!
//! (a) Guarded calls per second through `Breaker::call` with a no-op closure: leased
//! on 1 and 2 OS threads, then the unary path (Acquire + Report per call), and the
//! ratio. (b) Revocation latency: `--clients` leased clients spread over
//! `--processes` OS processes (this binary again, with the hidden `--lease-worker`),
//! a trip caused by reports, then from the daemon's stamped time of the trip to
//! each client's first refusal, and the calls each allowed after the trip.

use std::{
    collections::VecDeque,
    convert::Infallible,
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use cbd_client::{CallError, Client, Outcome, WatchEvent, WatchFilter, pb};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    process::Command,
};

use super::{Args, LatencyJson, fmt_latency, new_histogram, round2};
use crate::{conn::Ctx, error::Error, output, output::Show};

/// Leased calls are timed in batches of this many (a clock read per call would be
/// a third of what is measured); unary calls one by one.
const BATCH: u64 = 256;

/// Lease length of the bench breakers: renewed at half while used.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// How long a worker's client may take to refuse after the trip before the run
/// fails.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(30);

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn spec(consecutive_failures: u32) -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(consecutive_failures),
        open_duration: Some(cbd_proto::convert::duration_to_proto(Duration::from_secs(
            60,
        ))),
        cache_ttl: Some(cbd_proto::convert::duration_to_proto(CACHE_TTL)),
        ..pb::BreakerSpec::default()
    }
}

/// Puts `name` with `spec` and resets it when not CLOSED, so runs start alike.
async fn setup(client: &Client, ctx: &Ctx, name: &str, spec: pb::BreakerSpec) -> Result<(), Error> {
    let put = ctx.run(client.admin().put(name, spec)).await?;
    let closed = put
        .breaker
        .as_ref()
        .is_some_and(|b| b.state() == pb::State::Closed);
    if !closed {
        ctx.run(client.admin().reset(name)).await?;
    }
    Ok(())
}

/// A client on its own connection, leasing or not.
async fn new_client(ctx: &Ctx, leases: bool) -> Result<Client, Error> {
    let channel = ctx.channel().await?;
    ctx.client_builder()
        .leases(leases)
        .acquire_deadline(ctx.timeout)
        .build_on(channel)
        .map_err(|e| Error::from_client(&e, &ctx.endpoint))
}

/// Calls (classified by `outcome`) until `client` holds a lease on `name`.
async fn until_leased(
    ctx: &Ctx,
    client: &Client,
    name: &str,
    outcome: Outcome,
) -> Result<(), Error> {
    let breaker = client.breaker(name);
    let deadline = Instant::now() + ctx.timeout;
    while client.stats().leases_granted == 0 {
        if Instant::now() > deadline {
            return Err(Error::Other(format!(
                "{name}: no lease granted within {:?} (the daemon answers, but grants none)",
                ctx.timeout
            )));
        }
        match breaker
            .call_with(|_| outcome, || std::future::ready(Ok::<(), Infallible>(())))
            .await
        {
            Ok(()) => {}
            Err(CallError::Client(e)) => return Err(Error::from_client(&e, &ctx.endpoint)),
            Err(e) => return Err(Error::Other(format!("{name}: {e}"))),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// One throughput phase.
#[derive(Debug, Serialize)]
struct ThroughputJson {
    path: &'static str,
    threads: u32,
    calls: u64,
    calls_per_sec: f64,
    /// Acquire RPCs the client made during the phase (0 when every call was leased).
    rpc_decisions: u64,
    latency: LatencyJson,
    #[serde(skip)]
    ns_per_call: f64,
}

async fn throughput(
    ctx: &Ctx,
    name: &str,
    leased: bool,
    threads: u32,
    duration: Duration,
) -> Result<ThroughputJson, Error> {
    let client = new_client(ctx, leased).await?;
    if leased {
        until_leased(ctx, &client, name, Outcome::Success).await?;
    }
    let before = client.stats();
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now();
    let end = start + duration;
    let mut results = Vec::new();
    for _ in 0..threads {
        let breaker = client.breaker(name);
        let runtime = runtime.clone();
        let (done, result) = tokio::sync::oneshot::channel();
        results.push(result);
        // An OS thread each, driving its calls itself: the leased path never waits.
        std::thread::spawn(move || {
            let batch = if leased { BATCH } else { 1 };
            let mut hist = new_histogram();
            let mut calls = 0u64;
            let mut failed = None;
            runtime.block_on(async {
                while Instant::now() < end {
                    let t0 = Instant::now();
                    for _ in 0..batch {
                        let r = breaker
                            .call(|| std::future::ready(Ok::<(), Infallible>(())))
                            .await;
                        if let Err(e) = r {
                            failed = Some(e.to_string());
                            return;
                        }
                    }
                    let per_call = t0.elapsed().as_nanos() as u64 / batch;
                    hist.saturating_record(per_call.max(1));
                    calls += batch;
                }
            });
            let _ = done.send((calls, hist, failed));
        });
    }
    let mut hist = new_histogram();
    let mut calls = 0;
    for result in results {
        let (n, h, failed) = result
            .await
            .map_err(|_| Error::Other("a bench thread panicked".into()))?;
        if let Some(e) = failed {
            return Err(Error::Other(format!("{name}: a guarded call failed: {e}")));
        }
        calls += n;
        let _ = hist.add(&h);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = client.stats();
    let per_sec = calls as f64 / elapsed.max(1e-9);
    Ok(ThroughputJson {
        path: if leased { "leased" } else { "unary" },
        threads,
        calls,
        calls_per_sec: round2(per_sec),
        rpc_decisions: after.rpc_decisions - before.rpc_decisions,
        latency: LatencyJson::new(
            if leased {
                "call, averaged over 256-call batches"
            } else {
                "call: Acquire + Report"
            },
            &hist,
        ),
        ns_per_call: 1e9 * f64::from(threads) / per_sec.max(1e-9),
    })
}

/// What the revocation phase measured.
#[derive(Debug, Serialize)]
struct RevocationJson {
    clients: u32,
    processes: u32,
    /// Each client calls once per this many microseconds, so a refusal is seen up
    /// to one interval after the lease was voided.
    call_interval_us: u64,
    /// The trip's time as the daemon stamped it on its event (unix ns).
    trip_time_unix_ns: u64,
    /// From the trip's event time to each client's first refused call.
    latency: LatencyJson,
    /// Calls each client allowed after the trip's event time.
    allowed_after_trip_p50: u64,
    allowed_after_trip_p99: u64,
    allowed_after_trip_max: u64,
    allowed_after_trip_total: u64,
}

/// What one worker's client saw: when it refused, and how many calls it allowed
/// after the trip.
#[derive(Debug, serde::Deserialize, Serialize)]
struct ClientResult {
    refused_at_unix_ns: u64,
    allowed_after_trip: u64,
}

async fn revocation(ctx: &Ctx, args: &Args, name: &str) -> Result<RevocationJson, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Other(format!("cannot find this program to re-run it: {e}")))?;
    let processes = args.processes.min(args.clients);
    let mut workers = Vec::new();
    for i in 0..processes {
        let share = args.clients / processes + u32::from(i < args.clients % processes);
        // The same command line (endpoint, token, TLS, bench flags), as a worker.
        let mut child = Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .arg("--lease-worker")
            .arg(share.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Other(format!("cannot start a worker process: {e}")))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        workers.push((child, stdin, stdout));
    }
    for (_, _, out) in &mut workers {
        match tokio::time::timeout(ctx.timeout * 4, out.next_line()).await {
            Ok(Ok(Some(line))) if line == "ready" => {}
            other => {
                return Err(Error::Other(format!(
                    "a worker did not get its leases: {other:?}"
                )));
            }
        }
    }

    let client = new_client(ctx, false).await?;
    let mut watch = client.watch(WatchFilter::names([name]), None);
    match watch.next().await {
        Some(Ok(WatchEvent::Snapshot { .. })) => {}
        other => return Err(Error::Other(format!("watch {name}: {other:?}"))),
    }
    // The trip: failures reported through the daemon (the workers' calls are
    // ignored outcomes, which break no failure run).
    let breaker = client.breaker(name);
    let trip = async {
        loop {
            match breaker
                .call(|| std::future::ready(Err::<(), _>("failing")))
                .await
            {
                Err(CallError::Rejected(_)) => return Ok(()),
                Err(CallError::Client(e)) => return Err(Error::from_client(&e, &ctx.endpoint)),
                _ => {}
            }
        }
    };
    ctx.run(async { Ok(trip.await) }).await??;
    let trip_time = loop {
        match tokio::time::timeout(ctx.timeout, watch.next()).await {
            Ok(Some(Ok(WatchEvent::Event(e)))) if e.state() == pb::State::Open => {
                let t = e.time.unwrap_or_default();
                break u64::try_from(t.seconds).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(t.nanos).unwrap_or(0);
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(Error::Other(format!("no trip event for {name}: {other:?}"))),
        }
    };
    for (_, stdin, _) in &mut workers {
        stdin
            .write_all(format!("{trip_time}\n").as_bytes())
            .await
            .map_err(|e| Error::Other(format!("worker: {e}")))?;
        stdin
            .flush()
            .await
            .map_err(|e| Error::Other(format!("worker: {e}")))?;
    }
    let mut results = Vec::new();
    for (mut child, _, mut out) in workers {
        loop {
            let line = tokio::time::timeout(REFUSE_TIMEOUT + ctx.timeout, out.next_line()).await;
            match line {
                Ok(Ok(Some(line))) if line == "done" => break,
                Ok(Ok(Some(line))) => results.push(
                    serde_json::from_str::<ClientResult>(&line)
                        .map_err(|e| Error::Other(format!("worker said {line:?}: {e}")))?,
                ),
                other => return Err(Error::Other(format!("a worker failed: {other:?}"))),
            }
        }
        let _ = child.wait().await;
    }
    let mut latency = new_histogram();
    let mut allowed = Histogram::<u64>::new(3).expect("histogram");
    for r in &results {
        latency.saturating_record(r.refused_at_unix_ns.saturating_sub(trip_time).max(1));
        allowed.saturating_record(r.allowed_after_trip);
    }
    Ok(RevocationJson {
        clients: args.clients,
        processes,
        call_interval_us: args.call_interval.as_micros() as u64,
        trip_time_unix_ns: trip_time,
        latency: LatencyJson::new("client: trip event time to its first refusal", &latency),
        allowed_after_trip_p50: allowed.value_at_quantile(0.5),
        allowed_after_trip_p99: allowed.value_at_quantile(0.99),
        allowed_after_trip_max: allowed.max(),
        allowed_after_trip_total: results.iter().map(|r| r.allowed_after_trip).sum(),
    })
}

/// A worker process: `clients` leased clients calling `name` once per
/// `--call-interval` until each is refused; prints `ready` once all hold a lease,
/// reads the trip's time (unix ns) from stdin, then prints one JSON line per client
/// and `done`.
pub(super) async fn worker(ctx: &Ctx, args: &Args, clients: u32) -> Result<(), Error> {
    let name = format!("{}revoke", args.prefix);
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..clients {
        let client = new_client(ctx, true).await?;
        until_leased(ctx, &client, &name, Outcome::Ignored).await?;
        let breaker = client.breaker(&name);
        let interval = args.call_interval;
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // Times of the recent allowed calls (unix ns): enough for REFUSE_TIMEOUT.
            let mut allowed: VecDeque<u64> = VecDeque::new();
            let _ = ready.send(());
            let refused_at = tokio::time::timeout(REFUSE_TIMEOUT * 2, async {
                loop {
                    tick.tick().await;
                    let r = breaker
                        .call_with(
                            |_| Outcome::Ignored,
                            || std::future::ready(Ok::<(), Infallible>(())),
                        )
                        .await;
                    let now = unix_nanos(SystemTime::now());
                    match r {
                        Err(CallError::Rejected(_)) => return now,
                        _ => {
                            if allowed.len() == 1 << 16 {
                                allowed.pop_front();
                            }
                            allowed.push_back(now);
                        }
                    }
                }
            })
            .await
            .ok();
            (refused_at, allowed)
        }));
    }
    drop(ready_tx);
    for _ in 0..clients {
        let _ = ready_rx.recv().await;
    }
    println!("ready");
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| Error::Other(format!("worker stdin: {e}")))?
    .map_err(|e| Error::Other(format!("worker stdin: {e}")))?;
    let trip: u64 = line
        .trim()
        .parse()
        .map_err(|_| Error::Usage(format!("--lease-worker: expected a time, got {line:?}")))?;
    for task in tasks {
        let (refused_at, allowed) = task
            .await
            .map_err(|e| Error::Other(format!("worker client: {e}")))?;
        let Some(refused_at) = refused_at else {
            return Err(Error::Other(format!(
                "a client still allowed calls {:?} after the trip",
                REFUSE_TIMEOUT * 2
            )));
        };
        let result = ClientResult {
            refused_at_unix_ns: refused_at,
            allowed_after_trip: allowed.iter().filter(|t| **t >= trip).count() as u64,
        };
        println!("{}", serde_json::to_string(&result).expect("json"));
    }
    println!("done");
    Ok(())
}

#[derive(Debug, Serialize)]
struct LeaseSummaryJson {
    endpoint: String,
    mode: super::Mode,
    throughput: Vec<ThroughputJson>,
    /// Leased calls/s on 1 thread ÷ unary calls/s on 1 thread.
    ratio: f64,
    revocation: RevocationJson,
}

impl Show for LeaseSummaryJson {
    fn json(&self) -> impl Serialize + '_ {
        self
    }

    fn table(&self) -> Result<String, Error> {
        let mut rows = Vec::new();
        for t in &self.throughput {
            rows.push((
                format!(
                    "{} {} thread{}",
                    t.path,
                    t.threads,
                    if t.threads == 1 { "" } else { "s" }
                ),
                format!(
                    "{:.0} calls/s ({:.1} ns per call per thread), {} Acquire RPCs; {}",
                    t.calls_per_sec,
                    t.ns_per_call,
                    t.rpc_decisions,
                    t.latency.line()
                ),
            ));
        }
        rows.push((
            "ratio".to_owned(),
            format!("{:.1} = leased ÷ unary calls/s, 1 thread each", self.ratio),
        ));
        let r = &self.revocation;
        rows.push((
            "revocation".to_owned(),
            format!(
                "{} leased clients in {} processes, a call each every {}; {}",
                r.clients,
                r.processes,
                fmt_latency(r.call_interval_us as f64),
                r.latency.line()
            ),
        ));
        rows.push((
            "allowed after the trip".to_owned(),
            format!(
                "per client p50 {}  p99 {}  max {}; {} in all",
                r.allowed_after_trip_p50,
                r.allowed_after_trip_p99,
                r.allowed_after_trip_max,
                r.allowed_after_trip_total
            ),
        ));
        let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        Ok(output::key_values(&rows))
    }
}

/// The lease bench in the main process.
pub(super) async fn run(ctx: &Ctx, args: &Args) -> Result<(), Error> {
    let admin = new_client(ctx, false).await?;
    let calls = format!("{}calls", args.prefix);
    let revoke = format!("{}revoke", args.prefix);
    super::super::check_name(&calls)?;
    setup(&admin, ctx, &calls, spec(u32::MAX)).await?;
    setup(&admin, ctx, &revoke, spec(5)).await?;

    let mut throughput_runs = Vec::new();
    for (leased, threads) in [(true, 1), (true, 2), (false, 1)] {
        let t = throughput(ctx, &calls, leased, threads, args.duration).await?;
        eprintln!(
            "{} {} thread(s): {:.0} calls/s",
            t.path, t.threads, t.calls_per_sec
        );
        throughput_runs.push(t);
    }
    let ratio =
        round2(throughput_runs[0].calls_per_sec / throughput_runs[2].calls_per_sec.max(1e-9));
    let revocation = revocation(ctx, args, &revoke).await;
    if !args.keep {
        for name in [&calls, &revoke] {
            match ctx.run(admin.admin().delete(name)).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let summary = LeaseSummaryJson {
        endpoint: ctx.endpoint.clone(),
        mode: args.mode,
        throughput: throughput_runs,
        ratio,
        revocation: revocation?,
    };
    ctx.output.print(&summary)
}
