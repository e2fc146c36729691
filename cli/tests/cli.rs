//! `cbctl` as a real process against a real `cbd`: every command, its JSON, its exit
//! codes. Build the daemon first (`cargo build -p cbd`): `cargo test -p cbctl` does
//! not build it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use cbd_tests::Daemon;
use serde_json::Value;

const CBCTL: &str = env!("CARGO_BIN_EXE_cbctl");

/// What one `cbctl` run did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "cbctl failed: {self:?}");
        self
    }

    #[track_caller]
    fn code(self, want: i32) -> Self {
        assert_eq!(self.code, want, "unexpected exit code: {self:?}");
        self
    }
}

fn command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(CBCTL);
    cmd.arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .env_remove("CBD_ENDPOINT")
        .env_remove("CBD_TOKEN");
    cmd
}

fn run_with_stdin(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = command(endpoint, args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cbctl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("cbctl output");
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

fn cbctl(endpoint: &str, args: &[&str]) -> Run {
    run_with_stdin(endpoint, args, None)
}

async fn daemon(dir: &Path) -> Daemon {
    Daemon::start(&dir.join("data"), &[]).await
}

#[tokio::test]
async fn admin_commands_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path()).await;
    let ep = d.endpoint();
    // host:port without a scheme works too.
    let bare = d.addr.to_string();

    let put = cbctl(
        &bare,
        &[
            "put",
            "payments/charge",
            "--failure-rate",
            "50",
            "--window-calls",
            "20",
            "--minimum-calls",
            "5",
            "--open-duration",
            "45s",
            "--fallback",
            "local",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(put["created"], true);
    assert_eq!(put["unchanged"], false);
    assert!(put["revision"].as_u64().unwrap() >= 1);
    let spec = &put["breaker"]["spec"];
    assert_eq!(spec["failure_rate_percent"], 50);
    assert_eq!(spec["count_window"]["calls"], 20);
    assert_eq!(spec["open_duration"], "45s");
    assert_eq!(spec["permit_ttl"], "10s");
    assert_eq!(spec["fallback"], "FALLBACK_LOCAL");

    let again = cbctl(
        &ep,
        &[
            "put",
            "payments/charge",
            "--failure-rate",
            "50",
            "--window-calls",
            "20",
            "--minimum-calls",
            "5",
            "--open-duration",
            "45s",
            "--fallback",
            "local",
        ],
    )
    .ok();
    assert!(
        again.stdout.starts_with("unchanged payments/charge"),
        "{again:?}"
    );
    let updated = cbctl(&ep, &["put", "payments/charge", "--open-duration", "1m"]).ok();
    assert!(
        updated.stdout.starts_with("updated payments/charge"),
        "{updated:?}"
    );
    cbctl(&ep, &["put", "payments/refund"]).ok();
    cbctl(
        &ep,
        &[
            "put",
            "search",
            "--window-duration",
            "1m",
            "--window-buckets",
            "6",
        ],
    )
    .ok();

    let get = cbctl(&ep, &["get", "payments/charge", "-o", "json"])
        .ok()
        .json();
    let b = &get["breaker"];
    assert_eq!(b["name"], "payments/charge");
    assert_eq!(b["state"], "STATE_CLOSED");
    assert_eq!(b["override"], "OVERRIDE_UNSPECIFIED");
    assert_eq!(b["spec"]["open_duration"], "1m");
    assert_eq!(b["spec"]["consecutive_failures"], 5, "defaults filled in");
    assert!(get["revision"].as_u64().unwrap() >= 3);
    let table = cbctl(&ep, &["get", "search"]).ok().stdout;
    assert!(
        table.contains("state:") && table.contains("CLOSED"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.trim_start().starts_with("window_duration") && l.ends_with("= \"1m\"")),
        "{table}"
    );

    let list = cbctl(&ep, &["list", "payments/", "-o", "json"]).ok().json();
    let names: Vec<&str> = list["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["payments/charge", "payments/refund"]);
    let all = cbctl(&ep, &["list"]).ok().stdout;
    let lines: Vec<&str> = all.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("RETRY-AFTER"),
        "{all}"
    );
    assert_eq!(lines.len(), 4, "{all}");

    // Overrides, each visible in the next get.
    for (verb, want_override, want_state) in [
        ("force-open", "OVERRIDE_FORCED_OPEN", "STATE_OPEN"),
        ("force-closed", "OVERRIDE_FORCED_CLOSED", "STATE_CLOSED"),
        ("disable", "OVERRIDE_DISABLED", "STATE_CLOSED"),
        ("shadow", "OVERRIDE_SHADOW", "STATE_CLOSED"),
        ("release", "OVERRIDE_UNSPECIFIED", "STATE_CLOSED"),
    ] {
        let out = cbctl(&ep, &[verb, "payments/refund", "-o", "json"])
            .ok()
            .json();
        assert_eq!(out["breaker"]["override"], want_override, "{verb}");
        let get = cbctl(&ep, &["get", "payments/refund", "-o", "json"])
            .ok()
            .json();
        assert_eq!(get["breaker"]["override"], want_override, "{verb}");
        assert_eq!(get["breaker"]["state"], want_state, "{verb}");
    }
    let forced = cbctl(&ep, &["force-open", "payments/refund"]).ok().stdout;
    assert!(forced.contains("override FORCED_OPEN"), "{forced}");
    let listed = cbctl(&ep, &["list", "payments/refund"]).ok().stdout;
    assert!(listed.contains("until released"), "{listed}");
    let reset = cbctl(&ep, &["reset", "payments/refund", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        reset["breaker"]["override"], "OVERRIDE_FORCED_OPEN",
        "reset keeps the override"
    );

    let deleted = cbctl(&ep, &["delete", "payments/refund", "-o", "json"])
        .ok()
        .json();
    assert_eq!(deleted["name"], "payments/refund");
    for verb in ["get", "delete", "reset", "force-open", "release", "acquire"] {
        let gone = cbctl(&ep, &[verb, "payments/refund"]).code(3);
        assert_eq!(
            gone.stderr.trim(),
            "error: breaker \"payments/refund\" not found",
            "{verb}"
        );
        assert!(gone.stdout.is_empty());
    }

    // A spec the daemon would refuse is refused before anything is sent.
    let bad = cbctl(
        &ep,
        &[
            "put",
            "x",
            "--open-duration",
            "1m",
            "--max-open-duration",
            "10s",
        ],
    )
    .code(2);
    assert!(bad.stderr.contains("max_open_duration"), "{bad:?}");
}

#[tokio::test]
async fn bad_usage_exits_2_with_a_usage_message() {
    let ep = "http://127.0.0.1:9"; // never contacted
    for args in [
        &["list", "--no-such-flag"][..],
        &["get"],
        &["frobnicate"],
        &["put", "a", "--failure-rate", "500"],
        &["put", "a", "--window-calls", "5", "--window-duration", "1s"],
        &["put", "a", "--window-buckets", "5"],
        &["put", "a", "--open-duration", "soon"],
        &["report", "abc", "maybe"],
        &["--timeout", "nope", "list"],
        &["-o", "yaml", "list"],
        &["bench", "--mode", "stream"],
        &["completion", "powershell"],
        &["release", "a", "--for", "5m"],
        &["force-open", "a", "--for", "soon"],
        &["history", "a", "--since", "yesterday"],
    ] {
        let out = cbctl(ep, args).code(2);
        assert!(
            out.stderr.contains("Usage:") || out.stderr.contains("--help"),
            "{args:?}: {out:?}"
        );
        assert!(out.stderr.starts_with("error:"), "{args:?}: {out:?}");
    }
    // Errors we find ourselves, after parsing: also 2, one line first.
    for args in [
        &["get", "bad name!"][..],
        &["report", "zz", "success"],
        &["--endpoint", "ftp://x:1", "list"],
        &["force-open", "a", "--for", "0s"],
        &["history", "bad name!"],
    ] {
        let out = command(ep, &[]).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    let none = Command::new(CBCTL).output().expect("run");
    assert_eq!(none.status.code(), Some(2), "no command: usage");
}

#[test]
fn help_documents_the_exit_codes_and_completions_generate() {
    let help = cbctl("x:1", &["--help"]).ok().stdout;
    for line in [
        "Exit codes:",
        "0  success",
        "2  usage",
        "3  not found",
        "4  daemon unavailable",
        "5  permission denied",
    ] {
        assert!(help.contains(line), "missing {line:?} in:\n{help}");
    }
    for verb in ["list", "watch", "bench", "apply"] {
        let out = cbctl("x:1", &[verb, "--help"]).ok().stdout;
        assert!(out.contains("Exit codes:"), "{verb} --help");
    }
    // A verb's own flags and the global ones under separate headings.
    let get = cbctl("x:1", &["get", "--help"]).ok().stdout;
    let (own, global) = get.split_once("Global options:").expect("a global heading");
    assert!(!own.contains("--endpoint"), "{get}");
    assert!(
        global.contains("--endpoint") && global.contains("--tls-ca"),
        "{get}"
    );
    let put = cbctl("x:1", &["put", "--help"]).ok().stdout;
    for flag in [
        "--consecutive-failures",
        "--failure-rate",
        "--slow-call-rate",
        "--slow-call-duration",
        "--minimum-calls",
        "--window-calls",
        "--window-duration",
        "--open-duration",
        "--max-open-duration",
        "--half-open-permits",
        "--success-threshold",
        "--permit-ttl",
        "--fallback",
    ] {
        assert!(put.contains(flag), "put --help lacks {flag}");
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cbctl"),
        ("fish", "complete -c cbctl"),
    ] {
        let out = cbctl("x:1", &["completion", shell]).ok().stdout;
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("force-open"), "{shell} completes verbs");
    }
}

#[tokio::test]
async fn acquire_and_report_trip_a_breaker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path()).await;
    let ep = d.endpoint();
    cbctl(&ep, &["put", "dep", "--consecutive-failures", "3"]).ok();

    let first = cbctl(&ep, &["acquire", "dep", "-o", "json"]).ok().json();
    assert_eq!(first["allowed"], true);
    assert_eq!(first["state"], "STATE_CLOSED");
    let permit = first["permit"].as_str().unwrap().to_owned();
    assert!(!permit.is_empty());
    let rep = cbctl(
        &ep,
        &[
            "report",
            &permit,
            "success",
            "--duration",
            "12ms",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(rep["state"], "STATE_CLOSED");
    assert_eq!(rep["stale"], false);

    for _ in 0..3 {
        let permit = cbctl(&ep, &["acquire", "dep", "-q"]).ok().stdout;
        assert!(!permit.trim().is_empty());
        cbctl(&ep, &["report", permit.trim(), "failure"]).ok();
    }
    let rejected = cbctl(&ep, &["acquire", "dep", "-o", "json"]).ok().json();
    assert_eq!(rejected["allowed"], false, "a rejection is a normal answer");
    assert_eq!(rejected["state"], "STATE_OPEN");
    assert_eq!(rejected["permit"], "");
    assert!(rejected["retry_after"].as_str().unwrap().ends_with('s'));
    let table = cbctl(&ep, &["acquire", "dep"]).ok().stdout;
    assert!(
        table.contains("allowed:") && table.contains("false"),
        "{table}"
    );
    assert!(table.contains("retry after:"), "{table}");
    let list = cbctl(&ep, &["list", "-o", "json"]).ok().json();
    assert_eq!(list["breakers"][0]["state"], "STATE_OPEN");
    assert!(
        list["breakers"][0]["open_until"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // An old permit after the trip: acknowledged, stale.
    let stale = cbctl(&ep, &["report", &permit, "ignored", "-o", "json"])
        .ok()
        .json();
    assert_eq!(stale["stale"], true);
    // A well-formed hex string that is no permit: the daemon says invalid argument.
    let bogus = cbctl(&ep, &["report", "00112233", "failure"]).code(1);
    assert!(
        bogus.stderr.starts_with("error: invalid argument: permit"),
        "{bogus:?}"
    );
}

#[tokio::test]
async fn acquire_and_report_as_callers_make_a_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path()).await;
    let ep = d.endpoint();
    let put = [
        "put",
        "dep",
        "--consecutive-failures",
        "2",
        "--min-distinct-callers",
        "2",
    ];
    cbctl(&ep, &put).ok();
    let fail_as = |caller: &'static str| {
        let ep = ep.clone();
        async move {
            let permit = cbctl(&ep, &["acquire", "dep", "-q", "--caller", caller])
                .ok()
                .stdout;
            cbctl(&ep, &["report", permit.trim(), "failure"]).ok();
        }
    };
    // Three failures in a row from one caller: no quorum of two.
    for _ in 0..3 {
        fail_as("checkout").await;
    }
    let get = cbctl(&ep, &["get", "dep", "-o", "json"]).ok().json();
    assert_eq!(get["breaker"]["state"], "STATE_CLOSED", "{get}");
    assert_eq!(get["breaker"]["failing_callers"][0]["caller"], "checkout");
    // A second caller's failure continues the run: tripped.
    fail_as("search").await;
    let get = cbctl(&ep, &["get", "dep", "-o", "json"]).ok().json();
    assert_eq!(get["breaker"]["state"], "STATE_OPEN", "{get}");
    let bad = cbctl(&ep, &["acquire", "dep", "--caller", "no spaces"]).code(1);
    assert!(bad.stderr.contains("caller"), "{bad:?}");
}

const APPLY_TOML: &str = r#"
# cbctl apply file
[[breaker]]
name = "svc/a"
consecutive_failures = 4
open_duration = "30s"

[[breaker]]
name = "svc/b"
failure_rate = 50
minimum_calls = 10
window_duration = "1m"
fallback = "closed"
"#;

#[tokio::test]
async fn apply_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path()).await;
    let ep = d.endpoint();
    let file = dir.path().join("breakers.toml");
    std::fs::write(&file, APPLY_TOML).unwrap();
    let file = file.to_str().unwrap();

    let dry = cbctl(&ep, &["apply", "-f", file, "--dry-run", "-o", "json"])
        .ok()
        .json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["results"][0]["result"], "created");
    cbctl(&ep, &["get", "svc/a"]).code(3); // the dry run wrote nothing

    let first = cbctl(&ep, &["apply", "-f", file]).ok().stdout;
    assert_eq!(first, "created    svc/a\ncreated    svc/b\n");
    let second = cbctl(&ep, &["apply", "-f", file, "-o", "json"]).ok().json();
    let results: Vec<(&str, &str)> = second["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["result"].as_str().unwrap()))
        .collect();
    assert_eq!(results, [("svc/a", "unchanged"), ("svc/b", "unchanged")]);
    let b = cbctl(&ep, &["get", "svc/b", "-o", "json"]).ok().json();
    assert_eq!(b["breaker"]["spec"]["time_window"]["duration"], "1m");
    assert_eq!(b["breaker"]["spec"]["fallback"], "FALLBACK_FAIL_CLOSED");

    // The same breakers in YAML on stdin: unchanged; one changed key: updated.
    let yaml = "- name: svc/a\n  consecutive_failures: 4\n  open_duration: 30s\n\
                - name: svc/b\n  failure_rate: 50\n  minimum_calls: 10\n  window_duration: 1m\n  fallback: closed\n";
    let same = run_with_stdin(&ep, &["apply", "-f", "-"], Some(yaml))
        .ok()
        .stdout;
    assert_eq!(same, "unchanged  svc/a\nunchanged  svc/b\n");
    let changed = yaml.replace("open_duration: 30s", "open_duration: 20s");
    let dry = run_with_stdin(&ep, &["apply", "-f", "-", "--dry-run"], Some(&changed))
        .ok()
        .stdout;
    assert_eq!(
        dry,
        "updated    svc/a (dry run)\nunchanged  svc/b (dry run)\n"
    );
    let a = cbctl(&ep, &["get", "svc/a", "-o", "json"]).ok().json();
    assert_eq!(
        a["breaker"]["spec"]["open_duration"], "30s",
        "dry run wrote nothing"
    );
    let applied = run_with_stdin(
        &ep,
        &["apply", "-f", "-", "--format", "yaml"],
        Some(&changed),
    )
    .ok()
    .stdout;
    assert_eq!(applied, "updated    svc/a\nunchanged  svc/b\n");

    // Mistakes in the file: exit 1, named, nothing written.
    let bad = APPLY_TOML.replace("failure_rate = 50", "failure_rat = 50")
        + "\n[[breaker]]\nname = \"svc/c\"\n";
    let out = run_with_stdin(&ep, &["apply", "-f", "-"], Some(&bad)).code(1);
    assert!(
        out.stderr
            .starts_with("error: stdin: breaker \"svc/b\": unknown field `failure_rat`"),
        "{out:?}"
    );
    cbctl(&ep, &["get", "svc/c"]).code(3);
    let missing = cbctl(&ep, &["apply", "-f", "/no/such/file.toml"]).code(1);
    assert!(
        missing.stderr.starts_with("error: /no/such/file.toml: "),
        "{missing:?}"
    );
}

#[tokio::test]
async fn health_is_0_only_when_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path()).await;
    let ep = d.endpoint();
    let out = cbctl(&ep, &["health", "-o", "json"]).ok().json();
    assert_eq!(out["status"], "SERVING");
    assert_eq!(out["endpoint"], ep);
    let table = cbctl(&ep, &["health"]).ok().stdout;
    assert!(table.trim_end().ends_with("SERVING"), "{table}");
    let unknown = cbctl(&ep, &["health", "--service", "no.such.Service"]).code(3);
    assert!(
        unknown
            .stderr
            .starts_with("error: health: cbd has no service \"no.such.Service\""),
        "{unknown:?}"
    );
    // --endpoint without a port goes to cbd's port, not 80: here nothing listens on
    // 127.0.0.2:7411, so the error names that address.
    let portless = cbctl("127.0.0.2", &["--timeout", "1s", "health"]).code(4);
    assert!(
        portless.stderr.contains("http://127.0.0.2:7411"),
        "{portless:?}"
    );
}

#[tokio::test]
async fn a_stopped_daemon_exits_4_within_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = daemon(dir.path()).await;
    let ep = d.endpoint();
    d.kill9();
    for args in [
        &["list"][..],
        &["get", "x"],
        &["put", "x"],
        &["health"],
        &["watch"],
        &["acquire", "x"],
        &["bench", "--duration", "1s"],
    ] {
        let start = Instant::now();
        let out = cbctl(&ep, &[&["--timeout", "1s"][..], args].concat()).code(4);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            start.elapsed()
        );
        assert!(
            out.stderr
                .starts_with(&format!("error: cbd at {ep} is unavailable")),
            "{out:?}"
        );
        assert_eq!(out.stderr.lines().count(), 1, "one line: {out:?}");
    }

    // A daemon that accepts connections but never answers: the deadline, not a hang.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("http://{}", silent.local_addr().unwrap());
    let start = Instant::now();
    let out = cbctl(&ep, &["--timeout", "1s", "get", "x"]).code(4);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(out.stderr.contains("unavailable"), "{out:?}");
}

#[tokio::test]
async fn bench_prints_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path()).await;
    let ep = d.endpoint();
    let unary = cbctl(
        &ep,
        &[
            "bench",
            "--duration",
            "2s",
            "--breakers",
            "10",
            "--concurrency",
            "8",
            "--connections",
            "2",
            "--failure-rate",
            "20",
            "-o",
            "json",
        ],
    )
    .ok();
    let s = unary.json();
    assert_eq!(s["mode"], "unary");
    assert!(s["pairs_per_sec"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["rejected"], 0, "the bench spec does not trip: {s}");
    assert!(s["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(s["latency"]["max_us"].as_f64().unwrap() >= s["latency"]["p99_us"].as_f64().unwrap());
    assert!(unary.stderr.contains("pairs/s"), "progress line: {unary:?}");
    let list = cbctl(&ep, &["list", "bench/", "-o", "json"]).ok().json();
    assert_eq!(
        list["breakers"].as_array().map_or(0, Vec::len),
        0,
        "the bench breakers are deleted afterwards: {list}"
    );

    let batch = cbctl(
        &ep,
        &[
            "bench",
            "--duration",
            "1s",
            "--breakers",
            "10",
            "--concurrency",
            "4",
            "--mode",
            "batch",
            "--batch-size",
            "16",
            "--baseline",
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(batch["mode"], "batch");
    assert_eq!(batch["batch_size"], 16);
    assert!(batch["pairs_per_sec"].as_f64().unwrap() > batch["rpcs_per_sec"].as_f64().unwrap());
    let base = &batch["baseline"];
    assert!(base["checks_per_sec"].as_f64().unwrap() > 0.0, "{batch}");
    assert!(base["ratio"].as_f64().unwrap() > 0.0, "{batch}");

    let table = cbctl(
        &ep,
        &[
            "bench",
            "--duration",
            "1s",
            "--breakers",
            "5",
            "--trip",
            "--failure-rate",
            "100",
            "--keep",
        ],
    )
    .ok()
    .stdout;
    for key in ["pairs/s:", "decisions/s:", "latency:", "p99.9"] {
        assert!(table.contains(key), "{key}: {table}");
    }
    // Every call fails and the breakers trip: the rate is of refusals, and says so.
    assert!(
        table.contains("of the decisions were rejections"),
        "{table}"
    );
    let kept = cbctl(&ep, &["list", "bench/", "-o", "json"]).ok().json();
    assert_eq!(
        kept["breakers"].as_array().unwrap().len(),
        5,
        "--keep: {kept}"
    );
}

#[tokio::test]
async fn bench_lease_mode_measures_leased_calls_and_revocation_across_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(dir.path()).await;
    let ep = d.endpoint();
    let args = [
        "bench",
        "--mode",
        "lease",
        "--duration",
        "300ms",
        "--clients",
        "6",
        "--processes",
        "3",
        "--prefix",
        "lb/",
        "-o",
        "json",
    ];
    let s = cbctl(&ep, &args).ok().json();
    assert_eq!(s["mode"], "lease");
    let runs = s["throughput"].as_array().expect("throughput runs");
    let shape: Vec<(&str, u64)> = runs
        .iter()
        .map(|r| (r["path"].as_str().unwrap(), r["threads"].as_u64().unwrap()))
        .collect();
    assert_eq!(shape, [("leased", 1), ("leased", 2), ("unary", 1)]);
    for leased in &runs[..2] {
        assert!(leased["calls"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(leased["rpc_decisions"], 0, "leased calls ask nothing: {s}");
    }
    let unary = &runs[2];
    assert_eq!(
        unary["rpc_decisions"], unary["calls"],
        "one Acquire per unary call: {s}"
    );
    let ratio = s["ratio"].as_f64().unwrap();
    let expected =
        runs[0]["calls_per_sec"].as_f64().unwrap() / unary["calls_per_sec"].as_f64().unwrap();
    assert!((ratio - expected).abs() <= 0.01 * expected + 0.01, "{s}");

    let r = &s["revocation"];
    assert_eq!(
        (r["clients"].as_u64(), r["processes"].as_u64()),
        (Some(6), Some(3))
    );
    let latency = &r["latency"];
    assert!(
        latency["p50_us"].as_f64().unwrap() > 0.0,
        "refused after the trip: {s}"
    );
    assert!(latency["max_us"].as_f64().unwrap() >= latency["p99_us"].as_f64().unwrap());
    let total = r["allowed_after_trip_total"].as_u64().unwrap();
    assert!(
        total <= 6 * r["allowed_after_trip_max"].as_u64().unwrap(),
        "{s}"
    );
    let list = cbctl(&ep, &["list", "lb/", "-o", "json"]).ok().json();
    assert_eq!(
        list["breakers"].as_array().map_or(0, Vec::len),
        0,
        "deleted afterwards: {list}"
    );
}

/// A running `cbctl watch`, its stdout and stderr lines on channels.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
}

/// Sends each line of `from` on a new channel, from a thread.
fn line_channel(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl Watcher {
    fn spawn(endpoint: &str, args: &[&str]) -> Self {
        let mut child = command(endpoint, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cbctl watch");
        let lines = line_channel(child.stdout.take().expect("stdout"));
        let errors = line_channel(child.stderr.take().expect("stderr"));
        Self {
            child,
            lines,
            errors,
        }
    }

    #[track_caller]
    fn error_line(&self) -> String {
        self.errors
            .recv_timeout(Duration::from_secs(10))
            .expect("a stderr line within 10 s")
    }

    #[track_caller]
    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a watch line within 10 s")
    }

    #[track_caller]
    fn json(&self) -> Value {
        let line = self.line();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn watch_follows_and_resumes_after_a_restart() {
    // A fixed port, so that the restarted daemon is where the watchers reconnect to.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = cbd_tests::Options {
        listen: Some(addr.to_string()),
        ..Default::default()
    };
    let mut d = Daemon::fresh_with(&[], options).await;
    let ep = d.endpoint();
    cbctl(&ep, &["put", "w/a"]).ok();
    cbctl(&ep, &["put", "other"]).ok();

    let json = Watcher::spawn(&ep, &["watch", "w/", "-o", "json"]);
    let snap = json.json();
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["resync"], false);
    let names: Vec<&str> = snap["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w/a"], "the prefix filters");
    let r0 = snap["revision"].as_u64().unwrap();

    // The table watcher starts right after the snapshot's revision: it misses nothing
    // however long it takes to subscribe.
    let from = (r0 + 1).to_string();
    let table = Watcher::spawn(
        &ep,
        &[
            "watch",
            "--name",
            "w/a",
            "--from-revision",
            &from,
            "--no-snapshot",
        ],
    );
    cbctl(&ep, &["force-open", "w/a"]).ok();
    cbctl(&ep, &["put", "other", "--consecutive-failures", "2"]).ok(); // filtered out
    let e1 = json.json();
    assert_eq!(e1["type"], "event");
    assert_eq!(e1["name"], "w/a");
    assert_eq!(e1["kind"], "EVENT_KIND_OVERRIDE_SET");
    assert_eq!(e1["override"], "OVERRIDE_FORCED_OPEN");
    assert_eq!(e1["state"], "STATE_OPEN");
    assert!(e1["time"].as_str().unwrap().ends_with('Z'));
    let r1 = e1["revision"].as_u64().unwrap();
    assert!(r1 > r0);
    let t1 = table.line();
    assert!(
        t1.starts_with(&format!("{r1}  ")) && t1.contains("w/a  OVERRIDE_SET  CLOSED -> OPEN"),
        "{t1}"
    );

    // kill -9 and back on the same address: the watchers resume by themselves.
    d.restart().await;
    cbctl(&ep, &["release", "w/a"]).ok();
    cbctl(&ep, &["put", "w/b", "--open-duration", "5s"]).ok();
    let e2 = json.json();
    assert_eq!(e2["type"], "event", "resumed, no new snapshot: {e2}");
    assert_eq!(e2["kind"], "EVENT_KIND_OVERRIDE_CLEARED");
    assert_eq!(
        e2["revision"].as_u64().unwrap(),
        r1 + 2,
        "nothing lost, nothing repeated"
    );
    let e3 = json.json();
    assert_eq!(e3["kind"], "EVENT_KIND_SPEC_PUT");
    assert_eq!(e3["name"], "w/b");
    assert_eq!(e3["spec"]["open_duration"], "5s");
    let t2 = table.line();
    assert!(t2.contains("w/a  OVERRIDE_CLEARED"), "{t2}");
    // The outage was said on stderr, once lost and once resumed; stdout had events only.
    let lost = json.error_line();
    assert!(lost.starts_with("cbctl: watch interrupted: "), "{lost}");
    let resumed = json.error_line();
    assert_eq!(
        resumed,
        format!("cbctl: watch resumed at revision {}", r1 + 1)
    );

    // --from-revision replays from there, without a snapshot.
    let replay = Watcher::spawn(
        &ep,
        &["watch", "--from-revision", &r1.to_string(), "-o", "json"],
    );
    let first = replay.json();
    assert_eq!(first["revision"].as_u64().unwrap(), r1);
    assert_eq!(first["kind"], "EVENT_KIND_OVERRIDE_SET");
}

#[tokio::test]
async fn watch_from_a_compacted_revision_fails_unless_resync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(&dir.path().join("data"), &["--watch-retention", "3"]).await;
    let ep = d.endpoint();
    for name in ["c/a", "c/b", "c/c", "c/d", "c/e"] {
        cbctl(&ep, &["put", name]).ok();
    }
    let failed = cbctl(&ep, &["watch", "--from-revision", "1"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stdout.is_empty(), "{failed:?}");
    assert!(
        failed
            .stderr
            .contains("revision 1 has been compacted; the oldest retained revision is 3"),
        "{failed:?}"
    );

    let resync = Watcher::spawn(
        &ep,
        &["watch", "--from-revision", "1", "--resync", "-o", "json"],
    );
    let snap = resync.json();
    assert_eq!(
        (&snap["type"], &snap["resync"]),
        (&"snapshot".into(), &true.into())
    );
    assert_eq!(snap["breakers"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn tokens_are_sent_and_refusals_exit_5() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = dir.path().join("auth.toml");
    std::fs::write(
        &auth,
        "[[token]]\nrole = \"admin\"\ntoken = \"admin-s3cret\"\n\n\
         [[token]]\nrole = \"client\"\ntoken = \"client-s3cret\"\n",
    )
    .unwrap();
    let d = Daemon::start(
        &dir.path().join("data"),
        &["--auth-file", auth.to_str().unwrap()],
    )
    .await;
    let ep = d.endpoint();

    let none = cbctl(&ep, &["list"]).code(5);
    assert!(
        none.stderr.starts_with("error: unauthenticated"),
        "{none:?}"
    );
    let wrong = cbctl(&ep, &["--token", "nope", "list"]).code(5);
    assert!(
        !wrong.stderr.contains("nope"),
        "the token is never printed: {wrong:?}"
    );
    cbctl(&ep, &["--token", "admin-s3cret", "put", "t/a"]).ok();
    let denied = cbctl(&ep, &["--token", "client-s3cret", "delete", "t/a"]).code(5);
    assert!(
        denied.stderr.starts_with("error: permission denied"),
        "{denied:?}"
    );
    assert!(!denied.stderr.contains("client-s3cret"));
    // CBD_TOKEN works as --token; the client role may read and acquire.
    let out = command(&ep, &["list", "-o", "json"])
        .env("CBD_TOKEN", "client-s3cret")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    cbctl(&ep, &["--token", "client-s3cret", "acquire", "t/a"]).ok();
    cbctl(&ep, &["health"]).ok(); // health needs no token

    // watch carries the token too (through cbd-client), and a refusal ends it with 5.
    let watch = Watcher::spawn(&ep, &["--token", "client-s3cret", "watch", "-o", "json"]);
    assert_eq!(watch.json()["type"], "snapshot");
    let start = Instant::now();
    cbctl(&ep, &["--token", "wrong", "watch"]).code(5);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn tls_flags_reach_a_tls_daemon() {
    use cbd_tests::{Options, Pki};
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = Pki::generate(&dir.path().join("pki"));
    let flags = pki.server_flags(true);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let options = Options {
        tls: Some(pki.client_tls(true)),
        ..Options::default()
    };
    let d = Daemon::start_with(&dir.path().join("data"), &flags, options).await;
    let ep = d.addr.to_string(); // no scheme: https because of --tls-ca
    let (ca, cert, key) = (
        pki.ca.to_str().unwrap(),
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap(),
    );
    let tls = [
        "--tls-ca",
        ca,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-server-name",
        "localhost",
    ];
    let with_tls = |args: &[&str]| {
        let all: Vec<&str> = tls.iter().chain(args).copied().collect();
        cbctl(&ep, &all)
    };
    with_tls(&["put", "tls/a", "--consecutive-failures", "2"]).ok();
    let got = with_tls(&["get", "tls/a", "-o", "json"]).ok().json();
    assert_eq!(got["breaker"]["name"], "tls/a", "{got}");
    with_tls(&["health"]).ok();

    // Plaintext against a TLS daemon: the HTTP/2 handshake fails (exit 1, one line).
    let plain = cbctl(&ep, &["--timeout", "2s", "list"]).code(1);
    assert!(
        plain.stderr.starts_with("error: ") && plain.stderr.lines().count() == 1,
        "{plain:?}"
    );
    // TLS without the client certificate the daemon asks for: refused at the handshake.
    let no_cert: Vec<&str> = vec![
        "--tls-ca",
        ca,
        "--tls-server-name",
        "localhost",
        "--timeout",
        "2s",
        "list",
    ];
    // (TLS 1.3: the daemon closes the connection once it sees no certificate.)
    let refused = cbctl(&ep, &no_cert).code(1);
    assert!(refused.stderr.starts_with("error: "), "{refused:?}");
    // A client certificate without a CA is a usage error.
    cbctl(&ep, &["--tls-cert", cert, "--tls-key", key, "list"]).code(2);
}
