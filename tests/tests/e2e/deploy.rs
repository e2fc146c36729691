//! The files under `deploy/` agree with the daemon: every metric the Grafana dashboard
//! and the alert rules query is one a real daemon exports, every query parses, and
//! each alert passes its unit tests (`promtool test rules`).

use std::{collections::BTreeSet, path::Path, process::Command};

use crate::metrics::{parse, scrape, scripted_trip, with_metrics};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy");

/// Every query of the dashboard, with Grafana's variables given values PromQL parses.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(DEPLOY).join("grafana/cbd.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "the dashboard has panels");
    let mut queries = Vec::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            !targets.is_empty(),
            "panel {} queries something",
            panel["title"]
        );
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            queries.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$job", ".*")
                    .replace("$breaker", ".*"),
            );
        }
    }
    queries
}

/// Every `expr:` of the alert rules (one line each).
fn alert_queries() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(DEPLOY).join("prometheus/alerts.yml")).expect("alerts");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_owned)
        .collect()
}

/// The cbd and process metric names a query mentions.
fn metric_names(query: &str) -> BTreeSet<String> {
    query
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("cbd_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let (daemon, addr) = with_metrics().await;
    // Traffic that makes every family show samples: a trip, a rejection.
    scripted_trip(&daemon, "dep", 1).await;

    let exported: BTreeSet<String> = parse(&scrape(addr)).into_iter().map(|s| s.name).collect();
    let queries: Vec<String> = dashboard_queries()
        .into_iter()
        .chain(alert_queries())
        .collect();
    let mut queried = BTreeSet::new();
    for query in &queries {
        queried.extend(metric_names(query));
    }
    assert!(
        queried.len() >= 10,
        "found the queries' metrics: {queried:?}"
    );
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}

/// Runs promtool with `args` in `dir`; `None` when promtool cannot run here.
fn promtool(dir: &Path, args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            println!(
                "skipped: promtool not runnable ({e}); .ci/run installs Debian's prometheus package"
            );
            None
        }
    }
}

fn assert_success(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_and_dashboard_queries_pass_promtool() {
    let rules = Path::new(DEPLOY).join("prometheus");
    let Some(out) = promtool(&rules, &["check", "rules", "alerts.yml"]) else {
        return;
    };
    assert_success("promtool check rules alerts.yml", &out);
    let out = promtool(&rules, &["test", "rules", "alerts.test.yml"]).expect("promtool");
    assert_success("promtool test rules alerts.test.yml", &out);

    // The dashboard's queries, as recording rules, so that promtool parses each one.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in dashboard_queries().iter().enumerate() {
        let quoted = serde_json::to_string(query).expect("quote");
        file.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {quoted}\n"
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), file).expect("write rules");
    let out = promtool(dir.path(), &["check", "rules", "dashboard.yml"]).expect("promtool");
    assert_success("promtool check rules (the dashboard's queries)", &out);
}
