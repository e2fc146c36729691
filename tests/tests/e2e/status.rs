//! `cbctl status` against a real daemon: the JSON parsed and checked against what
//! was done to the daemon, the table's row, and a restart (uptime and the last
//! commit start over, the revision does not).

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, cbctl, cbd_bin, ms, put};
use serde_json::Value;

async fn status_json(daemon: &Daemon) -> Value {
    let stdout = cbctl(daemon, &["-o", "json", "status"]).await;
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn cbctl_status_reports_what_the_daemon_holds() {
    let mut daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let spec = pb::BreakerSpec {
        consecutive_failures: Some(3),
        open_duration: Some(ms(60_000)),
        ..Default::default()
    };
    put(&mut admin, "status/a", spec).await;
    let last = put(&mut admin, "status/b", spec).await;
    // One Watch stays open while cbctl asks.
    let mut watch = daemon
        .breakers()
        .await
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    watch.message().await.expect("snapshot").expect("a message");

    let s = status_json(&daemon).await;
    assert_eq!(s["endpoint"], daemon.endpoint().as_str());
    // The same version and commit as the binary's `--version`.
    let version = std::process::Command::new(cbd_bin())
        .arg("--version")
        .output()
        .expect("cbd --version");
    let version = String::from_utf8(version.stdout).expect("utf-8");
    let (v, commit) = (
        s["version"].as_str().expect("version"),
        s["git_commit"].as_str().expect("commit"),
    );
    assert_eq!(version.trim(), format!("cbd {v} (commit {commit})"));
    assert_eq!(s["revision"], last.revision, "{s}");
    assert_eq!(s["oldest_retained_revision"], 1, "{s}");
    assert_eq!(s["breakers"], 2, "{s}");
    assert_eq!(s["watchers"], 1, "{s}");
    assert_eq!(s["sessions"], 0, "{s}");
    assert_eq!(s["leases"], 0, "{s}");
    assert!(s["store_size_bytes"].as_u64().is_some_and(|n| n > 0), "{s}");
    assert_eq!(s["last_commit"]["revision"], last.revision, "{s}");
    assert_eq!(s["last_commit"]["events"], 1, "{s}");
    assert!(s["last_commit"]["duration"].is_string(), "{s}");
    assert!(
        s["uptime"].is_string() && s["started_at"].is_string(),
        "{s}"
    );
    assert_eq!(s["store_fault"], "", "{s}");
    assert_eq!(s["role"], "REPLICATION_ROLE_STANDALONE", "{s}");
    assert_eq!(s["leader"], "", "{s}");
    // A standalone daemon decides: the leader's health service is SERVING on it.
    let leader = daemon
        .health_client()
        .await
        .check(tonic_health::pb::HealthCheckRequest {
            service: "cbd.v1.Leader".into(),
        })
        .await
        .expect("cbd.v1.Leader is a health service")
        .into_inner();
    assert_eq!(
        leader.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    // The table: a header and one row for the endpoint.
    let table = cbctl(&daemon, &["status"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("ENDPOINT "), "{table}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[0], daemon.endpoint(), "{table}");
    assert_eq!(cells[1], v, "{table}");
    assert_eq!(cells[cells.len() - 2..], ["standalone", "-"], "{table}");
    assert!(
        cells.contains(&last.revision.to_string().as_str()),
        "{table}"
    );

    // After a restart: the revision stays, the process and its commits start over.
    drop(watch);
    daemon.restart().await;
    let after = status_json(&daemon).await;
    assert_eq!(after["revision"], last.revision, "{after}");
    assert_eq!(after["breakers"], 2, "{after}");
    assert_eq!(after["watchers"], 0, "{after}");
    assert!(after["last_commit"].is_null(), "no commit yet: {after}");
    assert_ne!(after["started_at"], s["started_at"], "{after}");
}

/// cbctl with several endpoints (replicas): commands go to the one whose
/// `cbd.v1.Leader` health is SERVING; `status` asks each, a row per endpoint, the
/// unreachable one said on stderr with exit 4. The standby is the daemon's own
/// standby routes (`cbd_tests::Standby`).
#[tokio::test]
async fn cbctl_with_several_endpoints_goes_to_the_leader_and_shows_each() {
    let daemon = Daemon::fresh(&[]).await;
    let standby = cbd_tests::Standby::start(Some(&daemon.endpoint())).await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let run = |endpoints: String, args: &'static [&'static str]| async move {
        tokio::process::Command::new(cbd_tests::cbctl_bin())
            .arg("--endpoints")
            .arg(endpoints)
            .args(args)
            .env_remove("CBD_ENDPOINT")
            .env_remove("CBD_TOKEN")
            .output()
            .await
            .expect("run cbctl")
    };

    // The standby first: a write still reaches the leader.
    let both = format!("{},{}", standby.endpoint(), daemon.endpoint());
    let out = run(
        both.clone(),
        &["put", "replicas/a", "--consecutive-failures", "3"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let got = cbctl(&daemon, &["-o", "json", "get", "replicas/a"]).await;
    assert!(got.contains("replicas/a"), "{got}");

    let all = format!("{both},{dead}");
    let out = run(all, &["-o", "json", "status"]).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "one endpoint is unreachable: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&dead), "{stderr}");
    let rows: Value = serde_json::from_slice(&out.stdout).expect("a JSON array");
    assert_eq!(rows.as_array().map(Vec::len), Some(2), "{rows}");
    assert_eq!(rows[0]["endpoint"], standby.endpoint().as_str());
    assert_eq!(rows[0]["role"], "REPLICATION_ROLE_STANDBY");
    assert_eq!(rows[0]["leader"], daemon.endpoint().as_str());
    assert_eq!(rows[1]["endpoint"], daemon.endpoint().as_str());
    assert_eq!(rows[1]["role"], "REPLICATION_ROLE_STANDALONE");
    assert_eq!(rows[1]["breakers"], 1);
}
