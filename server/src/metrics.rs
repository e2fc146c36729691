//! Prometheus metrics (`--metrics-listen`), with prometheus-client.
//!
//! Per-breaker handles are resolved once, when a breaker's entry is created, and kept
//! in the entry ([`BreakerMetrics`]): Acquire and Report only touch atomics. The
//! first `--metrics-max-breakers` breakers get their own series; the rest share the
//! label value `breaker="_other"`, whose state gauges count breakers per state.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cbd_breaker::State;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text, text},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
        info::Info,
    },
    registry::Registry,
};

/// The exposition formats `/metrics` serves, chosen by the scrape's `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`, for scrapers that ask for it.
    OpenMetrics,
    /// The classic `text/plain; version=0.0.4` (promtool, curl, older scrapers).
    Text,
}

impl Format {
    /// OpenMetrics only when the `Accept` header names it, as Prometheus' own client
    /// libraries do; anything else gets the classic text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The standard `process_*` metrics, read from `/proc/self` at scrape time (Linux;
/// elsewhere they are absent).
#[derive(Debug)]
struct ProcessCollector {
    /// Clock ticks per second of `/proc/self/stat` times (`sysconf(_SC_CLK_TCK)`).
    ticks_per_second: f64,
    /// Bytes per page of `/proc/self/stat`'s resident set size.
    page_size: f64,
}

impl ProcessCollector {
    fn read(&self) -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the `(comm)`, which may hold spaces: state is field 3.
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|l| l.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse::<f64>()
            .ok()?;
        Some(ProcessSample {
            cpu_seconds: (field(14)? + field(15)?) / self.ticks_per_second,
            start_time_seconds: boot + field(22)? / self.ticks_per_second,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * self.page_size,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
            max_fds,
        })
    }
}

struct ProcessSample {
    cpu_seconds: f64,
    start_time_seconds: f64,
    virtual_bytes: f64,
    resident_bytes: f64,
    open_fds: f64,
    max_fds: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = self.read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(p.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                p.start_time_seconds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                p.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                p.max_fds,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Label value shared by every breaker past the cap.
pub const OTHER: &str = "_other";

/// Seconds: 100µs to 10s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    breaker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    breaker: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    breaker: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    breaker: String,
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

const STATES: [State; 3] = [State::Closed, State::Open, State::HalfOpen];
const OUTCOMES: [&str; 4] = ["success", "failure", "ignored", "stale"];

fn state_index(s: State) -> usize {
    match s {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

struct Inner {
    registry: Registry,
    state: Family<StateLabels, Gauge>,
    calls: Family<CallLabels, Counter>,
    rejections: Family<BreakerLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    probes: Family<BreakerLabels, Gauge>,
    rpc: Family<RpcLabels, Histogram, fn() -> Histogram>,
    watchers: Gauge,
    breakers: Gauge,
    flush: Histogram,
    batch: Histogram,
    max_breakers: usize,
    labelled: AtomicUsize,
}

/// The daemon's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("max_breakers", &self.inner.max_breakers)
            .field("labelled", &self.inner.labelled.load(Ordering::Relaxed))
            .finish()
    }
}

impl Metrics {
    /// Metrics with at most `max_breakers` breakers labelled by name.
    pub fn new(max_breakers: usize) -> Self {
        let mut registry = Registry::default();
        let state = Family::<StateLabels, Gauge>::default();
        let calls = Family::<CallLabels, Counter>::default();
        let rejections = Family::<BreakerLabels, Counter>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let probes = Family::<BreakerLabels, Gauge>::default();
        let rpc = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let watchers = Gauge::default();
        let breakers = Gauge::default();
        let flush = latency_histogram();
        let batch = Histogram::new([
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
        ]);
        registry.register(
            "cbd_breaker_state",
            "Breaker state: 1 for the state a breaker is in, else 0 (for breaker=\"_other\": how many breakers are in it)",
            state.clone(),
        );
        registry.register(
            "cbd_calls",
            "Reported call outcomes (success, failure, ignored; stale: reports that changed nothing)",
            calls.clone(),
        );
        registry.register(
            "cbd_rejections",
            "Acquires answered not allowed",
            rejections.clone(),
        );
        registry.register(
            "cbd_transitions",
            "State changes by from and to state",
            transitions.clone(),
        );
        registry.register(
            "cbd_probes_in_flight",
            "Half-open probe permits handed out and not yet reported",
            probes.clone(),
        );
        registry.register(
            "cbd_rpc_duration_seconds",
            "gRPC request handling time (for streams: until the stream is opened), by method and status code",
            rpc.clone(),
        );
        registry.register("cbd_watchers", "Open Watch streams", watchers.clone());
        registry.register("cbd_breakers", "Breakers held", breakers.clone());
        registry.register(
            "cbd_store_flush_duration_seconds",
            "Time to commit and flush one write batch",
            flush.clone(),
        );
        registry.register(
            "cbd_store_batch_events",
            "Events per committed write batch",
            batch.clone(),
        );
        registry.register(
            "cbd_build",
            "The running cbd: version and git commit (always 1)",
            Info::new(vec![
                ("version", crate::VERSION),
                ("commit", crate::GIT_COMMIT),
            ]),
        );
        registry.register_collector(Box::new(ProcessCollector {
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
            page_size: rustix::param::page_size() as f64,
        }));
        Self {
            inner: Arc::new(Inner {
                registry,
                state,
                calls,
                rejections,
                transitions,
                probes,
                rpc,
                watchers,
                breakers,
                flush,
                batch,
                max_breakers,
                labelled: AtomicUsize::new(0),
            }),
        }
    }

    /// Handles for a new breaker named `name`: its own series while under the cap,
    /// else the shared `_other` ones. Call [`BreakerMetrics::release`] when the breaker
    /// is gone.
    pub fn breaker(&self, name: &str) -> BreakerMetrics {
        let inner = &self.inner;
        // A breaker named `_other` itself is always counted in the shared series.
        let own = name != OTHER
            && inner
                .labelled
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < inner.max_breakers).then_some(n + 1)
                })
                .is_ok();
        let label: Arc<str> = if own { name.into() } else { OTHER.into() };
        let breaker = label.to_string();
        let state = STATES.map(|s| {
            inner
                .state
                .get_or_create(&StateLabels {
                    breaker: breaker.clone(),
                    state: s.as_str(),
                })
                .clone()
        });
        let calls = [0, 1, 2, 3].map(|i| {
            inner
                .calls
                .get_or_create(&CallLabels {
                    breaker: breaker.clone(),
                    outcome: OUTCOMES[i],
                })
                .clone()
        });
        let labels = BreakerLabels { breaker };
        BreakerMetrics {
            metrics: self.clone(),
            label,
            own,
            state,
            calls,
            rejections: inner.rejections.get_or_create(&labels).clone(),
            probes: inner.probes.get_or_create(&labels).clone(),
        }
    }

    /// Records one gRPC request.
    pub fn rpc(&self, method: &'static str, code: &'static str, elapsed: Duration) {
        self.inner
            .rpc
            .get_or_create(&RpcLabels { method, code })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one group commit.
    pub fn flush(&self, elapsed: Duration, events: usize) {
        self.inner.flush.observe(elapsed.as_secs_f64());
        self.inner.batch.observe(events as f64);
    }

    /// The exposition in `format`, with the gauges read at scrape time set first.
    pub fn encode(&self, format: Format, breakers: usize, watchers: usize) -> String {
        self.inner.breakers.set(breakers as i64);
        self.inner.watchers.set(watchers as i64);
        let mut out = String::new();
        let written = match format {
            Format::OpenMetrics => text::encode(&mut out, &self.inner.registry),
            Format::Text => prometheus_text::encode(&mut out, &self.inner.registry),
        };
        written.expect("writing to a String cannot fail");
        out
    }
}

/// One breaker's metric handles, kept in its registry entry.
#[derive(Debug)]
pub struct BreakerMetrics {
    metrics: Metrics,
    label: Arc<str>,
    own: bool,
    state: [Gauge; 3],
    calls: [Counter; 4],
    rejections: Counter,
    probes: Gauge,
}

/// What the gauges of one breaker last showed; kept under the breaker's lock.
#[derive(Clone, Copy, Debug, Default)]
pub struct Shown {
    state: Option<State>,
    probes: u32,
}

impl BreakerMetrics {
    /// An Acquire answered not allowed.
    pub fn rejected(&self) {
        self.rejections.inc();
    }

    /// A report with `outcome`; `stale` ones are counted apart.
    pub fn reported(&self, outcome: cbd_breaker::Outcome, stale: bool) {
        let i = match (stale, outcome) {
            (true, _) => 3,
            (false, cbd_breaker::Outcome::Success) => 0,
            (false, cbd_breaker::Outcome::Failure) => 1,
            (false, cbd_breaker::Outcome::Ignored) => 2,
        };
        self.calls[i].inc();
    }

    /// Leased outcomes (docs/DESIGN.md §10), counted as that many reports.
    pub fn reported_many(&self, outcomes: &cbd_breaker::Aggregate, stale: bool) {
        if stale {
            self.calls[3].inc_by(outcomes.total());
            return;
        }
        self.calls[0].inc_by(outcomes.successes + outcomes.slow_successes);
        self.calls[1].inc_by(outcomes.failures);
        self.calls[2].inc_by(outcomes.ignored);
    }

    /// A state change.
    pub fn transition(&self, from: State, to: State) {
        if from == to {
            return;
        }
        self.metrics
            .inner
            .transitions
            .get_or_create(&TransitionLabels {
                breaker: self.label.to_string(),
                from: from.as_str(),
                to: to.as_str(),
            })
            .inc();
    }

    /// Moves the gauges from what `shown` says to `state` / `probes`, so that the
    /// shared `_other` gauges stay sums. Called under the breaker's lock.
    pub fn show(&self, shown: &mut Shown, state: State, probes: u32) {
        if shown.state != Some(state) {
            if let Some(old) = shown.state {
                self.state[state_index(old)].dec();
            }
            self.state[state_index(state)].inc();
            shown.state = Some(state);
        }
        if shown.probes != probes {
            self.probes
                .inc_by(i64::from(probes) - i64::from(shown.probes));
            shown.probes = probes;
        }
    }

    /// The breaker is gone: take it out of the gauges, and drop its own series.
    /// Called under the registry's map lock, so no breaker of the same name can be
    /// created meanwhile.
    pub fn release(&self, shown: &mut Shown) {
        if let Some(old) = shown.state.take() {
            self.state[state_index(old)].dec();
        }
        self.probes.dec_by(i64::from(shown.probes));
        shown.probes = 0;
        if !self.own {
            return;
        }
        let inner = &self.metrics.inner;
        let breaker = self.label.to_string();
        for s in STATES {
            inner.state.remove(&StateLabels {
                breaker: breaker.clone(),
                state: s.as_str(),
            });
            for t in STATES {
                inner.transitions.remove(&TransitionLabels {
                    breaker: breaker.clone(),
                    from: s.as_str(),
                    to: t.as_str(),
                });
            }
        }
        for outcome in OUTCOMES {
            inner.calls.remove(&CallLabels {
                breaker: breaker.clone(),
                outcome,
            });
        }
        let labels = BreakerLabels { breaker };
        inner.rejections.remove(&labels);
        inner.probes.remove(&labels);
        inner.labelled.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `GET /metrics` on `addr` until `shutdown` resolves. `gauges` gives the
/// breaker and watcher counts at scrape time. Also the plaintext probes: `/healthz`
/// (200 while the process serves HTTP at all) and `/readyz` (200 while `ready`, that
/// is while gRPC health says SERVING; else 503), for probes that cannot speak gRPC
/// over TLS. `more` is served beside them (the dashboard).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    gauges: impl Fn() -> (usize, usize) + Clone + Send + Sync + 'static,
    ready: tokio::sync::watch::Receiver<bool>,
    more: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, crate::error::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::error::Error::invalid("--metrics-listen", format!("cannot bind {addr}: {e}"))
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| crate::error::Error::invalid("--metrics-listen", e.to_string()))?;
    let app = probes(ready).merge(more).route(
        "/metrics",
        axum::routing::get(move |headers: http::HeaderMap| {
            let metrics = metrics.clone();
            let gauges = gauges.clone();
            async move {
                let accept = headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let format = Format::negotiate(accept);
                let (breakers, watchers) = gauges();
                (
                    [(http::header::CONTENT_TYPE, format.content_type())],
                    metrics.encode(format, breakers, watchers),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(addr = %bound, "metrics serving on /metrics");
    Ok(bound)
}

/// `/healthz` and `/readyz` (see [`serve`]).
fn probes(ready: tokio::sync::watch::Receiver<bool>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let serving = *ready.borrow();
                async move {
                    if serving {
                        (http::StatusCode::OK, "ready\n")
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readyz_follows_health_and_healthz_is_always_ok() {
        use tower::ServiceExt;
        let (ready, rx) = tokio::sync::watch::channel(false);
        let get = |path: &'static str| {
            let app = probes(rx.clone());
            async move {
                let request = http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .expect("request");
                app.oneshot(request).await.expect("answer").status()
            }
        };
        assert_eq!(get("/healthz").await, http::StatusCode::OK);
        assert_eq!(get("/readyz").await, http::StatusCode::SERVICE_UNAVAILABLE);
        ready.send_replace(true);
        assert_eq!(get("/readyz").await, http::StatusCode::OK);
        assert_eq!(get("/healthz").await, http::StatusCode::OK);
    }

    #[test]
    fn past_the_cap_breakers_share_the_other_label() {
        let metrics = Metrics::new(2);
        let mut shown: Vec<(BreakerMetrics, Shown)> = (0..5)
            .map(|i| (metrics.breaker(&format!("b{i}")), Shown::default()))
            .collect();
        for (m, s) in &mut shown {
            m.show(s, State::Closed, 0);
        }
        let (m, s) = &mut shown[4];
        m.show(s, State::Open, 0);
        m.transition(State::Closed, State::Open);
        let text = metrics.encode(Format::Text, 5, 0);
        assert!(
            text.contains(r#"cbd_breaker_state{breaker="_other",state="CLOSED"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cbd_breaker_state{breaker="_other",state="OPEN"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cbd_breaker_state{breaker="b0",state="CLOSED"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"breaker="b2""#), "{text}");
        // Releasing a labelled breaker frees its series and its place under the cap.
        let (m, mut s) = shown.remove(0);
        m.release(&mut s);
        let text = metrics.encode(Format::Text, 4, 0);
        assert!(!text.contains(r#"breaker="b0""#), "{text}");
        let (m, mut s) = (metrics.breaker("b9"), Shown::default());
        m.show(&mut s, State::HalfOpen, 1);
        let text = metrics.encode(Format::Text, 5, 0);
        assert!(
            text.contains(r#"cbd_probes_in_flight{breaker="b9"} 1"#),
            "{text}"
        );
    }
}
