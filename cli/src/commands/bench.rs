//! `cbctl bench`: a load generator of acquire+report pairs, with a live progress line
//! and latency percentiles from an HDR histogram. `--baseline` first measures
//! `grpc.health.v1/Check` at the same concurrency, so the ratio shows what the
//! breaker logic costs over the bare transport.

use std::{
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use cbd_proto::v1 as pb;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use parking_lot_free::FirstError;
use serde::Serialize;
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;

use crate::{
    conn::Ctx,
    error::Error,
    output::{self, Show},
    parse_duration,
};

mod lease;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Breakers to spread the load over (named `<prefix>0` .. `<prefix>N-1`, created first).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub breakers: u32,
    /// Concurrent tasks, each doing one pair (or batch) at a time.
    #[arg(long, default_value_t = 32, value_name = "C", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// HTTP/2 connections the tasks share.
    #[arg(long, default_value_t = 4, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub connections: u32,
    /// How long to run (each phase, with --baseline).
    #[arg(long, default_value = "10s", value_name = "DUR", value_parser = parse_duration)]
    pub duration: Duration,
    /// Report this percentage of the calls as failures (0-100; decimals allowed).
    #[arg(long, default_value_t = 0.0, value_name = "PCT", value_parser = parse_rate)]
    pub failure_rate: f64,
    /// unary: Acquire then Report per pair; batch: AcquireBatch then ReportBatch;
    /// override: durable changes, SetOverride flipping FORCED_OPEN / none (each task
    /// on its own breaker when --breakers >= --concurrency; every call waits for its
    /// group commit and fsync).
    #[arg(long, value_enum, default_value_t = Mode::Unary)]
    pub mode: Mode,
    /// Items per AcquireBatch / ReportBatch (batch mode).
    #[arg(long, default_value_t = 32, value_name = "B", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch_size: u32,
    /// First measure grpc.health.v1/Check at the same concurrency, and print the ratio.
    #[arg(long)]
    pub baseline: bool,
    /// Let the breakers trip (default spec: 5 consecutive failures, open for 1s).
    /// Without it they are put with a spec that never trips, so --failure-rate only
    /// exercises the counting.
    #[arg(long)]
    pub trip: bool,
    /// Name prefix of the bench breakers.
    #[arg(long, default_value = "bench/", value_name = "PREFIX")]
    pub prefix: String,
    /// Leave the bench breakers in place afterwards (by default they are deleted).
    #[arg(long)]
    pub keep: bool,
    /// Lease mode: leased clients in the revocation test.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// Lease mode: OS processes the revocation test's clients are spread over.
    #[arg(long, default_value_t = 8, value_name = "P", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub processes: u32,
    /// Lease mode: how often each client of the revocation test calls (a refusal is
    /// seen up to one interval after the lease was voided; at least 1ms, the timer's
    /// resolution).
    #[arg(long, default_value = "1ms", value_name = "DUR", value_parser = parse_duration)]
    pub call_interval: Duration,
    /// Internal: run as a lease-mode worker process with this many clients.
    #[arg(long, hide = true, value_name = "N")]
    pub lease_worker: Option<u32>,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One Acquire and one Report per pair.
    Unary,
    /// AcquireBatch then ReportBatch of --batch-size items.
    Batch,
    /// One SetOverride per unit: a durable change (commit + fsync) each.
    Override,
    /// Leases: leased calls/s through `Breaker::call` (1 and 2 threads) against the
    /// unary path, and the revocation latency over many clients and processes.
    Lease,
}

/// `--failure-rate`: a percentage, 0 to 100, fractions allowed.
fn parse_rate(s: &str) -> Result<f64, String> {
    cbd_proto::schema::parse_percent(s, 0.0..=100.0)
}

/// The first error of a phase, kept to explain a run with nothing but errors.
mod parking_lot_free {
    use std::sync::Mutex;

    use crate::error::Error;

    #[derive(Debug, Default)]
    pub struct FirstError(Mutex<Option<Error>>);

    impl FirstError {
        pub fn set(&self, e: Error) {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e);
            }
        }

        pub fn take(&self) -> Option<Error> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
        }
    }
}

/// Counters shared by the tasks of one phase and the progress line.
#[derive(Debug, Default)]
struct Counters {
    /// Completed units: pairs (acquire + report items) or health checks.
    done: AtomicU64,
    /// Acquire decisions (allowed or rejected).
    decisions: AtomicU64,
    /// Rejected acquires.
    rejected: AtomicU64,
    /// Failed RPCs or items.
    errors: AtomicU64,
    /// RPCs sent.
    rpcs: AtomicU64,
    first_error: FirstError,
}

/// What one phase measured.
#[derive(Debug)]
struct Phase {
    elapsed: Duration,
    done: u64,
    decisions: u64,
    rejected: u64,
    errors: u64,
    rpcs: u64,
    hist: Histogram<u64>,
    first_error: Option<Error>,
}

impl Phase {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Serialize)]
struct LatencyJson {
    /// What one sample is.
    sample: &'static str,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p99_9_us: f64,
    max_us: f64,
}

impl LatencyJson {
    fn new(sample: &'static str, h: &Histogram<u64>) -> Self {
        // Nanosecond precision: leased calls take well under a microsecond.
        let us = |ns: u64| (ns as f64).round() / 1000.0;
        let q = |q: f64| {
            us(if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            })
        };
        Self {
            sample,
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p99_9_us: q(0.999),
            max_us: us(h.max()),
        }
    }

    fn line(&self) -> String {
        let f = |us: f64| fmt_latency(us);
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (per {})",
            f(self.p50_us),
            f(self.p90_us),
            f(self.p99_us),
            f(self.p99_9_us),
            f(self.max_us),
            self.sample
        )
    }
}

/// 64ns, 812µs, 1.23ms, 1.20s.
fn fmt_latency(us: f64) -> String {
    if us < 1.0 {
        format!("{:.0}ns", us * 1000.0)
    } else if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

#[derive(Debug, Serialize)]
struct BaselineJson {
    checks: u64,
    checks_per_sec: f64,
    errors: u64,
    latency: LatencyJson,
    /// (2 × pairs/s) / checks/s: 1.0 means the breaker costs nothing over the transport.
    ratio: f64,
    /// RPCs/s under the bench / checks/s (equals `ratio` in unary mode without rejections).
    rpc_ratio: f64,
}

#[derive(Debug, Serialize)]
struct SummaryJson {
    endpoint: String,
    mode: Mode,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<u32>,
    breakers: u32,
    concurrency: u32,
    connections: u32,
    failure_rate_percent: f64,
    /// Measured wall time of the bench phase, e.g. "10.002s".
    duration: String,
    pairs: u64,
    pairs_per_sec: f64,
    decisions: u64,
    decisions_per_sec: f64,
    rejected: u64,
    errors: u64,
    rpcs: u64,
    rpcs_per_sec: f64,
    latency: LatencyJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<BaselineJson>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub async fn run(ctx: &Ctx, args: Args) -> Result<(), Error> {
    super::check_name(&format!("{}{}", args.prefix, args.breakers - 1))?;
    if args.duration.is_zero() {
        return Err(Error::Usage("--duration: must be more than zero".into()));
    }
    if args.mode == Mode::Lease {
        if args.call_interval < Duration::from_millis(1) {
            return Err(Error::Usage("--call-interval: at least 1ms".into()));
        }
        return match args.lease_worker {
            Some(clients) => lease::worker(ctx, &args, clients).await,
            None => lease::run(ctx, &args).await,
        };
    }
    let channels = connect(ctx, args.connections).await?;
    let names: Arc<Vec<String>> = Arc::new(
        (0..args.breakers)
            .map(|i| format!("{}{i}", args.prefix))
            .collect(),
    );
    setup(ctx, &channels, &names, args.trip).await?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Relaxed);
            }
        });
    }

    let baseline = if args.baseline {
        Some(run_phase(ctx, &args, &channels, &names, &stop, Workload::Health).await)
    } else {
        None
    };
    let workload = match args.mode {
        Mode::Unary => Workload::Unary,
        Mode::Batch => Workload::Batch,
        Mode::Override => Workload::Override,
        Mode::Lease => unreachable!("lease mode runs on its own"),
    };
    let mut bench = run_phase(ctx, &args, &channels, &names, &stop, workload).await;
    if !args.keep {
        cleanup(ctx, &channels, &names).await?;
    }

    if bench.done == 0
        && bench.decisions == 0
        && let Some(e) = bench.first_error.take()
    {
        return Err(e);
    }
    let sample = match args.mode {
        Mode::Unary => "acquire+report pair",
        Mode::Batch => "acquire_batch+report_batch round",
        Mode::Override => "set_override (durable change)",
        Mode::Lease => unreachable!("lease mode runs on its own"),
    };
    let pairs_per_sec = bench.rate(bench.done);
    let baseline_json = baseline.map(|b| {
        let checks_per_sec = b.rate(b.done);
        let ratio = |x: f64| {
            if checks_per_sec > 0.0 {
                round2(x / checks_per_sec)
            } else {
                0.0
            }
        };
        BaselineJson {
            checks: b.done,
            checks_per_sec: round2(checks_per_sec),
            errors: b.errors,
            latency: LatencyJson::new("health check", &b.hist),
            ratio: ratio(2.0 * pairs_per_sec),
            rpc_ratio: ratio(bench.rate(bench.rpcs)),
        }
    });
    let summary = SummaryJson {
        endpoint: ctx.endpoint.clone(),
        mode: args.mode,
        batch_size: (args.mode == Mode::Batch).then_some(args.batch_size),
        breakers: args.breakers,
        concurrency: args.concurrency,
        connections: args.connections,
        failure_rate_percent: args.failure_rate,
        duration: output::fmt_duration(Duration::from_millis(bench.elapsed.as_millis() as u64)),
        pairs: bench.done,
        pairs_per_sec: round2(pairs_per_sec),
        decisions: bench.decisions,
        decisions_per_sec: round2(bench.rate(bench.decisions)),
        rejected: bench.rejected,
        errors: bench.errors,
        rpcs: bench.rpcs,
        rpcs_per_sec: round2(bench.rate(bench.rpcs)),
        latency: LatencyJson::new(sample, &bench.hist),
        baseline: baseline_json,
    };
    ctx.output.print(&summary)
}

impl Show for SummaryJson {
    fn json(&self) -> impl Serialize + '_ {
        self
    }

    fn table(&self) -> Result<String, Error> {
        Ok(summary_text(self))
    }
}

fn summary_text(s: &SummaryJson) -> String {
    let how = match s.mode {
        Mode::Unary => "unary: Acquire + Report".to_owned(),
        Mode::Batch => format!(
            "batch: AcquireBatch + ReportBatch of {}",
            s.batch_size.unwrap_or(0)
        ),
        Mode::Override => {
            "override: SetOverride, one durable change per call (pairs = changes)".to_owned()
        }
        Mode::Lease => unreachable!("lease mode prints its own summary"),
    };
    let mut rows = vec![
        (
            "bench",
            format!(
                "{how}; {} tasks over {} connections; {} breakers; {}% failures",
                s.concurrency, s.connections, s.breakers, s.failure_rate_percent
            ),
        ),
        ("duration", s.duration.clone()),
        (
            "pairs/s",
            format!(
                "{:.0} ({} pairs){}",
                s.pairs_per_sec,
                s.pairs,
                mostly_rejected(s.decisions, s.rejected)
            ),
        ),
        (
            "decisions/s",
            format!(
                "{:.0} ({} decisions, {} rejected)",
                s.decisions_per_sec, s.decisions, s.rejected
            ),
        ),
        ("rpcs/s", format!("{:.0}", s.rpcs_per_sec)),
        ("errors", s.errors.to_string()),
        ("latency", s.latency.line()),
    ];
    if let Some(b) = &s.baseline {
        rows.push((
            "baseline",
            format!(
                "{:.0} checks/s (grpc.health.v1/Check, same tasks and connections), {} errors",
                b.checks_per_sec, b.errors
            ),
        ));
        rows.push(("baseline latency", b.latency.line()));
        rows.push((
            "ratio",
            format!(
                "{:.2} = 2 × pairs/s ÷ checks/s (1.0: the breaker costs nothing over the transport); RPCs/s ÷ checks/s = {:.2}",
                b.ratio, b.rpc_ratio
            ),
        ));
    }
    output::key_values(&rows)
}

/// A warning for the pairs/s line when most decisions were rejections: the rate then
/// measures fast refusals, not calls. Empty otherwise.
fn mostly_rejected(decisions: u64, rejected: u64) -> String {
    if decisions == 0 || rejected * 2 <= decisions {
        return String::new();
    }
    format!(
        "; {}% of the decisions were rejections (the breakers were open): \
         this measures refusals, not calls",
        rejected * 100 / decisions
    )
}

/// Deletes the bench breakers (not with --keep). A breaker already gone is fine.
async fn cleanup(ctx: &Ctx, channels: &[Channel], names: &[String]) -> Result<(), Error> {
    let results = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let mut admin = ctx.admin_on(channels[i % channels.len()].clone());
            async move {
                match ctx
                    .call(admin.delete_breaker(pb::DeleteBreakerRequest {
                        name: name.clone(),
                        ..Default::default()
                    }))
                    .await
                {
                    Ok(_) | Err(Error::NotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

/// K connected channels.
async fn connect(ctx: &Ctx, k: u32) -> Result<Vec<Channel>, Error> {
    let mut channels = Vec::with_capacity(k as usize);
    for _ in 0..k {
        channels.push(ctx.channel().await?);
    }
    Ok(channels)
}

/// Puts every bench breaker (unchanged when it already has the spec) and resets
/// those not CLOSED, so that runs start alike.
async fn setup(ctx: &Ctx, channels: &[Channel], names: &[String], trip: bool) -> Result<(), Error> {
    let spec = if trip {
        pb::BreakerSpec {
            consecutive_failures: Some(5),
            open_duration: Some(cbd_proto::convert::duration_to_proto(Duration::from_secs(
                1,
            ))),
            ..pb::BreakerSpec::default()
        }
    } else {
        pb::BreakerSpec {
            consecutive_failures: Some(u32::MAX),
            ..pb::BreakerSpec::default()
        }
    };
    let results = futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let mut admin = ctx.admin_on(channels[i % channels.len()].clone());
            async move {
                let put = ctx
                    .call(admin.put_breaker(pb::PutBreakerRequest {
                        name: name.clone(),
                        spec: Some(spec),
                        ..Default::default()
                    }))
                    .await?;
                let closed = put
                    .breaker
                    .as_ref()
                    .is_some_and(|b| b.state() == pb::State::Closed);
                if !closed {
                    ctx.call(admin.reset_breaker(pb::ResetBreakerRequest {
                        name: name.clone(),
                        ..Default::default()
                    }))
                    .await?;
                }
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Health,
    Unary,
    Batch,
    Override,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Self::Health => "baseline",
            Self::Unary | Self::Batch | Self::Override => "bench",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Health => "checks/s",
            Self::Unary | Self::Batch => "pairs/s",
            Self::Override => "changes/s",
        }
    }
}

async fn run_phase(
    ctx: &Ctx,
    args: &Args,
    channels: &[Channel],
    names: &Arc<Vec<String>>,
    stop: &Arc<AtomicBool>,
    workload: Workload,
) -> Phase {
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let end = start + args.duration;
    let mut tasks = JoinSet::new();
    for i in 0..args.concurrency {
        let channel = channels[i as usize % channels.len()].clone();
        let worker = Worker {
            ctx: ctx.clone(),
            channel,
            names: names.clone(),
            counters: counters.clone(),
            stop: stop.clone(),
            end,
            failure_rate: args.failure_rate / 100.0,
            batch_size: args.batch_size as usize,
            rng: fastrand::Rng::with_seed(u64::from(i) + 1),
            index: i as usize,
            forced: false,
        };
        tasks.spawn(worker.run(workload));
    }
    let progress = tokio::spawn(progress(counters.clone(), start, workload));
    let mut hist = new_histogram();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(h) = joined {
            let _ = hist.add(&h);
        }
    }
    let elapsed = start.elapsed();
    progress.abort();
    let _ = progress.await;
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    Phase {
        elapsed,
        done: counters.done.load(Relaxed),
        decisions: counters.decisions.load(Relaxed),
        rejected: counters.rejected.load(Relaxed),
        errors: counters.errors.load(Relaxed),
        rpcs: counters.rpcs.load(Relaxed),
        hist,
        first_error: counters.first_error.take(),
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Once a second on stderr: rate and errors (one overwritten line on a terminal).
async fn progress(counters: Arc<Counters>, start: Instant, workload: Workload) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start) + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last = 0;
    loop {
        tick.tick().await;
        let done = counters.done.load(Relaxed);
        let line = format!(
            "{}: {:>3}s  {:>8} {}  {} errors  {} rejected",
            workload.label(),
            start.elapsed().as_secs(),
            done - last,
            workload.unit(),
            counters.errors.load(Relaxed),
            counters.rejected.load(Relaxed),
        );
        last = done;
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

struct Worker {
    ctx: Ctx,
    channel: Channel,
    names: Arc<Vec<String>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    end: Instant,
    failure_rate: f64,
    batch_size: usize,
    rng: fastrand::Rng,
    /// This task's number; picks its breaker in override mode.
    index: usize,
    /// Override mode: whether this task last forced its breaker open.
    forced: bool,
}

impl Worker {
    fn more(&self) -> bool {
        !self.stop.load(Relaxed) && Instant::now() < self.end
    }

    fn name(&mut self) -> String {
        self.names[self.rng.usize(..self.names.len())].clone()
    }

    fn outcome(&mut self) -> pb::Outcome {
        if self.failure_rate > 0.0 && self.rng.f64() < self.failure_rate {
            pb::Outcome::Failure
        } else {
            pb::Outcome::Success
        }
    }

    fn error(&self, status: &tonic::Status) {
        self.counters.errors.fetch_add(1, Relaxed);
        self.counters
            .first_error
            .set(Error::from_status(status, &self.ctx.endpoint));
    }

    async fn run(mut self, workload: Workload) -> Histogram<u64> {
        let mut hist = new_histogram();
        let mut breakers = self.ctx.breakers_on(self.channel.clone());
        let mut health = self.ctx.health_on(self.channel.clone());
        let mut admin = self.ctx.admin_on(self.channel.clone());
        while self.more() {
            let t0 = Instant::now();
            let ok = match workload {
                Workload::Health => {
                    self.counters.rpcs.fetch_add(1, Relaxed);
                    let r = health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await;
                    self.completed(r)
                }
                Workload::Unary => self.unary(&mut breakers).await,
                Workload::Batch => self.batch(&mut breakers).await,
                Workload::Override => self.override_flip(&mut admin).await,
            };
            if ok {
                hist.saturating_record(t0.elapsed().as_nanos() as u64);
            } else {
                // Do not spin on a daemon that is gone.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        hist
    }

    async fn unary(
        &mut self,
        client: &mut pb::breakers_client::BreakersClient<crate::conn::Svc>,
    ) -> bool {
        self.counters.rpcs.fetch_add(1, Relaxed);
        let acquired = client
            .acquire(pb::AcquireRequest {
                name: self.name(),
                caller: String::new(),
            })
            .await;
        let acquired = match acquired {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.error(&s);
                return false;
            }
        };
        self.counters.decisions.fetch_add(1, Relaxed);
        if !acquired.allowed {
            self.counters.rejected.fetch_add(1, Relaxed);
            return true;
        }
        let outcome = self.outcome();
        self.counters.rpcs.fetch_add(1, Relaxed);
        let reported = client
            .report(pb::ReportRequest {
                permit: acquired.permit,
                outcome: outcome as i32,
                duration: None,
                caller: String::new(),
            })
            .await;
        self.completed(reported)
    }

    /// Flips this task's breaker between FORCED_OPEN and no override: a change that
    /// is answered only once durable.
    async fn override_flip(
        &mut self,
        admin: &mut pb::admin_client::AdminClient<crate::conn::Svc>,
    ) -> bool {
        self.forced = !self.forced;
        let r#override = if self.forced {
            pb::Override::ForcedOpen
        } else {
            pb::Override::Unspecified
        };
        let name = self.names[self.index % self.names.len()].clone();
        self.counters.rpcs.fetch_add(1, Relaxed);
        let set = admin
            .set_override(pb::SetOverrideRequest {
                name,
                r#override: r#override as i32,
                ..Default::default()
            })
            .await;
        self.completed(set)
    }

    /// Counts a finished unit of work, or its error; `true` when it succeeded.
    fn completed<T>(&self, result: Result<T, tonic::Status>) -> bool {
        match result {
            Ok(_) => {
                self.counters.done.fetch_add(1, Relaxed);
                true
            }
            Err(s) => {
                self.error(&s);
                false
            }
        }
    }

    async fn batch(
        &mut self,
        client: &mut pb::breakers_client::BreakersClient<crate::conn::Svc>,
    ) -> bool {
        let items = (0..self.batch_size)
            .map(|_| pb::AcquireRequest {
                name: self.name(),
                caller: String::new(),
            })
            .collect();
        self.counters.rpcs.fetch_add(1, Relaxed);
        let acquired = match client
            .acquire_batch(pb::AcquireBatchRequest { items })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.error(&s);
                return false;
            }
        };
        let mut reports = Vec::with_capacity(acquired.results.len());
        for result in acquired.results {
            match (result.response, result.error) {
                (Some(r), _) => {
                    self.counters.decisions.fetch_add(1, Relaxed);
                    if r.allowed {
                        let outcome = self.outcome();
                        reports.push(pb::ReportRequest {
                            permit: r.permit,
                            outcome: outcome as i32,
                            duration: None,
                            caller: String::new(),
                        });
                    } else {
                        self.counters.rejected.fetch_add(1, Relaxed);
                    }
                }
                (None, e) => {
                    self.counters.errors.fetch_add(1, Relaxed);
                    if let Some(e) = e {
                        let code = tonic::Code::from_i32(e.code);
                        self.counters.first_error.set(Error::from_status(
                            &tonic::Status::new(code, e.message),
                            &self.ctx.endpoint,
                        ));
                    }
                }
            }
        }
        if reports.is_empty() {
            return true;
        }
        self.counters.rpcs.fetch_add(1, Relaxed);
        let reported = match client
            .report_batch(pb::ReportBatchRequest { items: reports })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.error(&s);
                return false;
            }
        };
        let ok = reported
            .results
            .iter()
            .filter(|r| r.response.is_some())
            .count() as u64;
        let failed = reported.results.len() as u64 - ok;
        self.counters.done.fetch_add(ok, Relaxed);
        if failed > 0 {
            self.counters.errors.fetch_add(failed, Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_rejection_warning_shows_only_past_half() {
        assert_eq!(super::mostly_rejected(0, 0), "");
        assert_eq!(super::mostly_rejected(100, 50), "");
        let w = super::mostly_rejected(100, 90);
        assert!(
            w.starts_with("; 90% of the decisions were rejections"),
            "{w}"
        );
    }
}
