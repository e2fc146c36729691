//! Metrics end to end: scrape `--metrics-listen` with a plain HTTP GET and parse the
//! Prometheus text exposition.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, acquire, eventually, ms, put, report};

const WAIT: Duration = Duration::from_secs(10);

/// One sample: name, labels, value.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition (label values here hold no `,`, `"` or `}`).
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels = body
                        .split(',')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label");
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("sample value"),
            }
        })
        .collect()
}

/// The value of `name` with exactly these labels (among others it may have: none).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// GET /metrics with a bare HTTP/1.1 request and, if given, an `Accept` header;
/// returns the response head (lowercased) and the body.
fn get_metrics(addr: SocketAddr, accept: Option<&str>) -> (String, String) {
    let (head, body) = http_get(addr, "/metrics", accept);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    (head, body)
}

/// GET `path` on the metrics listener: the response head (lowercased) and body.
fn http_get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("http response");
    (head.to_ascii_lowercase(), body.to_owned())
}

/// A scrape as curl or promtool makes it: the classic text format.
pub(crate) fn scrape(addr: SocketAddr) -> String {
    let (head, body) = get_metrics(addr, Some("*/*"));
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The metrics address, from the daemon's log line.
pub(crate) fn metrics_addr(daemon: &Daemon) -> SocketAddr {
    let log = strip_ansi(&daemon.log());
    let line = log
        .lines()
        .find(|l| l.contains("metrics serving"))
        .unwrap_or_else(|| panic!("no metrics line in:\n{log}"));
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .expect("addr= in the metrics line");
    addr.parse().expect("metrics address")
}

/// The text without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A daemon serving metrics on a free port, and that port's address.
pub(crate) async fn with_metrics() -> (Daemon, SocketAddr) {
    let daemon = Daemon::fresh(&["--metrics-listen", "127.0.0.1:0", "--log-format", "text"]).await;
    let addr = metrics_addr(&daemon);
    (daemon, addr)
}

/// Creates `name` tripping after `failures` in a row, trips it, and checks that the
/// next Acquire is rejected: a trip, a rejection and outcomes in every family.
pub(crate) async fn scripted_trip(daemon: &Daemon, name: &str, failures: u32) {
    let mut client = daemon.breakers().await;
    put(
        &mut daemon.admin().await,
        name,
        pb::BreakerSpec {
            consecutive_failures: Some(failures),
            open_duration: Some(ms(60_000)),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..failures {
        let a = acquire(&mut client, name).await;
        assert!(a.allowed);
        report(&mut client, &a.permit, pb::Outcome::Failure).await;
    }
    assert!(!acquire(&mut client, name).await.allowed, "open: rejected");
}

#[tokio::test]
async fn plaintext_probes_answer_on_the_metrics_listener() {
    let (daemon, addr) = with_metrics().await;
    let (head, body) = http_get(addr, "/healthz", None);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
    // The harness waited for gRPC SERVING, so the daemon is ready.
    let (head, body) = http_get(addr, "/readyz", None);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "ready\n");
    drop(daemon);
}

#[tokio::test]
async fn a_scripted_trip_shows_in_the_metrics() {
    let (daemon, addr) = with_metrics().await;
    scripted_trip(&daemon, "dep", 3).await;

    let samples = eventually(WAIT, "the trip in the metrics", || async move {
        let samples = parse(&scrape(addr));
        (value(
            &samples,
            "cbd_breaker_state",
            &[("breaker", "dep"), ("state", "OPEN")],
        ) == Some(1.0))
        .then_some(samples)
    })
    .await;
    let dep = |name: &str, extra: &[(&str, &str)]| {
        let mut labels = vec![("breaker", "dep")];
        labels.extend_from_slice(extra);
        value(&samples, name, &labels)
    };
    assert_eq!(dep("cbd_breaker_state", &[("state", "CLOSED")]), Some(0.0));
    assert_eq!(
        dep("cbd_breaker_state", &[("state", "HALF_OPEN")]),
        Some(0.0)
    );
    assert_eq!(dep("cbd_calls_total", &[("outcome", "failure")]), Some(3.0));
    assert_eq!(dep("cbd_calls_total", &[("outcome", "success")]), Some(0.0));
    assert_eq!(
        dep(
            "cbd_transitions_total",
            &[("from", "CLOSED"), ("to", "OPEN")]
        ),
        Some(1.0)
    );
    let transitions: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "cbd_transitions_total")
        .collect();
    assert_eq!(transitions.len(), 1, "{transitions:?}");
    assert_eq!(dep("cbd_rejections_total", &[]), Some(1.0));
    assert_eq!(dep("cbd_probes_in_flight", &[]), Some(0.0));
    assert_eq!(value(&samples, "cbd_breakers", &[]), Some(1.0));
    assert_eq!(value(&samples, "cbd_watchers", &[]), Some(0.0));
    let acquires = value(
        &samples,
        "cbd_rpc_duration_seconds_count",
        &[("method", "cbd.v1.Breakers/Acquire"), ("code", "OK")],
    );
    assert_eq!(acquires, Some(4.0));
    assert!(
        value(&samples, "cbd_store_flush_duration_seconds_count", &[]).is_some_and(|n| n >= 1.0)
    );
    assert!(value(&samples, "cbd_store_batch_events_count", &[]).is_some_and(|n| n >= 1.0));
}

#[tokio::test]
async fn per_breaker_series_are_capped() {
    let daemon = Daemon::fresh(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--metrics-max-breakers",
        "3",
    ])
    .await;
    let addr = metrics_addr(&daemon);
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    for i in 0..10 {
        let name = format!("b{i}");
        put(&mut admin, &name, pb::BreakerSpec::default()).await;
        let a = acquire(&mut client, &name).await;
        report(&mut client, &a.permit, pb::Outcome::Success).await;
    }
    let samples = parse(&scrape(addr));
    let breakers: BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s.labels.get("breaker").map(String::as_str))
        .collect();
    assert!(breakers.len() <= 4, "{breakers:?}");
    assert!(breakers.contains("_other"), "{breakers:?}");
    // The shared series add up: 7 breakers closed, 7 successes.
    assert_eq!(
        value(
            &samples,
            "cbd_breaker_state",
            &[("breaker", "_other"), ("state", "CLOSED")]
        ),
        Some(7.0)
    );
    assert_eq!(
        value(
            &samples,
            "cbd_calls_total",
            &[("breaker", "_other"), ("outcome", "success")]
        ),
        Some(7.0)
    );
    assert_eq!(value(&samples, "cbd_breakers", &[]), Some(10.0));

    // A deleted breaker's own series go, and its place under the cap is free.
    admin
        .delete_breaker(pb::DeleteBreakerRequest {
            name: "b0".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let samples = eventually(WAIT, "b0's series gone", || async move {
        let samples = parse(&scrape(addr));
        (!samples
            .iter()
            .any(|s| s.labels.get("breaker").map(String::as_str) == Some("b0")))
        .then_some(samples)
    })
    .await;
    assert_eq!(value(&samples, "cbd_breakers", &[]), Some(9.0));
}

#[tokio::test]
async fn promtool_accepts_a_scrape_and_openmetrics_is_served_when_asked() {
    let (daemon, addr) = with_metrics().await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "scraped", pb::BreakerSpec::default()).await;
    let a = acquire(&mut client, "scraped").await;
    report(&mut client, &a.permit, pb::Outcome::Success).await;

    let text = scrape(addr);
    let samples = parse(&text);
    let build = samples
        .iter()
        .find(|s| s.name == "cbd_build_info")
        .expect("cbd_build_info");
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build.labels["commit"].is_empty());
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let v = value(&samples, name, &[]).unwrap_or_else(|| panic!("{name} in\n{text}"));
        assert!(v > 0.0, "{name} = {v}");
    }
    // Every sample's family has HELP and TYPE lines under the sample's own name
    // (or its histogram base), which is what promtool checks first.
    for s in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| s.name.strip_suffix(suffix))
            .filter(|base| text.contains(&format!("# TYPE {base} histogram")))
            .unwrap_or(&s.name);
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
    }

    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Err(e) => eprintln!(
            "skipping promtool check: promtool not runnable ({e}); .ci/run installs Debian's prometheus package"
        ),
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("feed promtool");
            let out = child.wait_with_output().expect("promtool ran");
            assert!(
                out.status.success(),
                "promtool check metrics: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let (head, open) = get_metrics(addr, Some("application/openmetrics-text; version=1.0.0"));
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    assert!(open.contains("# TYPE cbd_calls counter"), "{open}");
}
