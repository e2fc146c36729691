//! Restarts and crashes: what was acknowledged is there afterwards (docs/DESIGN.md §6).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, acquire, ms, put, report};
use futures::StreamExt;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

async fn get(daemon: &Daemon, name: &str) -> pb::BreakerStatus {
    cbd_tests::get_breaker(&mut daemon.admin().await, name).await
}

/// The persisted part of a status (window counts start empty after a restart).
fn persisted(
    s: &pb::BreakerStatus,
) -> (
    Option<pb::BreakerSpec>,
    i32,
    i32,
    u64,
    Option<prost_types::Timestamp>,
    u32,
) {
    (
        s.spec,
        s.state,
        s.r#override,
        s.generation,
        s.open_until,
        s.backoff_level,
    )
}

#[tokio::test]
async fn sigterm_restart_brings_everything_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut daemon = Daemon::start(&data, &[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;

    put(
        &mut admin,
        "plain",
        pb::BreakerSpec {
            failure_rate_percent: Some(40),
            ..Default::default()
        },
    )
    .await;
    put(
        &mut admin,
        "tripped",
        pb::BreakerSpec {
            consecutive_failures: Some(1),
            open_duration: Some(ms(3_600_000)),
            max_open_duration: Some(ms(7_200_000)),
            ..Default::default()
        },
    )
    .await;
    let a = acquire(&mut client, "tripped").await;
    assert_eq!(
        report(&mut client, &a.permit, pb::Outcome::Failure)
            .await
            .state(),
        pb::State::Open
    );
    for (name, o) in [
        ("forced", pb::Override::ForcedOpen),
        ("shadowed", pb::Override::Shadow),
    ] {
        put(&mut admin, name, pb::BreakerSpec::default()).await;
        admin
            .set_override(pb::SetOverrideRequest {
                name: name.into(),
                r#override: o as i32,
                ..Default::default()
            })
            .await
            .expect("override");
    }
    let names = ["plain", "tripped", "forced", "shadowed"];
    let mut before = Vec::new();
    for name in names {
        before.push(persisted(&get(&daemon, name).await));
    }
    let revision = admin
        .list_breakers(pb::ListBreakersRequest::default())
        .await
        .expect("list")
        .into_inner()
        .revision;

    daemon.signal(cbd_tests::Signal::TERM);
    let status = daemon.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");

    daemon.restart().await;
    for (name, expected) in names.iter().zip(&before) {
        assert_eq!(
            &persisted(&get(&daemon, name).await),
            expected,
            "{name} after restart"
        );
    }
    let after = daemon
        .admin()
        .await
        .list_breakers(pb::ListBreakersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(after.revision, revision);
    assert_eq!(after.breakers.len(), names.len());
}

#[tokio::test]
async fn health_turns_not_serving_on_sigterm_before_exit() {
    let mut daemon = Daemon::fresh(&[]).await;
    let mut health = daemon.health_client().await;
    let mut updates = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let first = updates.next().await.expect("an update").expect("ok");
    assert_eq!(first.status(), ServingStatus::Serving);

    daemon.signal(cbd_tests::Signal::TERM);
    let next = tokio::time::timeout(Duration::from_secs(10), updates.next())
        .await
        .expect("an update after SIGTERM")
        .expect("stream open")
        .expect("ok");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(updates);
    drop(health);
    assert!(daemon.wait_exit(Duration::from_secs(20)).await.success());
}

/// Acknowledged writes of one crash round, to check after the restart.
#[derive(Debug, Default)]
struct Acked {
    /// (name, consecutive_failures) of acknowledged puts.
    puts: Mutex<Vec<(String, u32)>>,
    /// (name, override) of acknowledged overrides.
    overrides: Mutex<Vec<(String, i32)>>,
    /// (name, generation) of acknowledged trips.
    trips: Mutex<Vec<(String, u64)>>,
}

async fn load(
    daemon_endpoint: String,
    task: usize,
    round: usize,
    acked: Arc<Acked>,
    count: Arc<AtomicUsize>,
    revision: Arc<AtomicU64>,
) {
    let Ok(channel) = tonic::transport::Channel::from_shared(daemon_endpoint)
        .expect("uri")
        .connect()
        .await
    else {
        return;
    };
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    let mut client = pb::breakers_client::BreakersClient::new(channel);
    for i in 0.. {
        let name = format!("r{round}/t{task}/{i}");
        let threshold = 1 + (i % 5) as u32;
        let Ok(put) = admin
            .put_breaker(pb::PutBreakerRequest {
                name: name.clone(),
                spec: Some(pb::BreakerSpec {
                    consecutive_failures: Some(threshold),
                    open_duration: Some(ms(3_600_000)),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
        else {
            return;
        };
        revision.fetch_max(put.get_ref().revision, Ordering::SeqCst);
        acked
            .puts
            .lock()
            .expect("lock")
            .push((name.clone(), threshold));
        count.fetch_add(1, Ordering::SeqCst);
        match i % 3 {
            0 => {
                let o = [
                    pb::Override::ForcedOpen,
                    pb::Override::Disabled,
                    pb::Override::ForcedClosed,
                    pb::Override::Shadow,
                ][(task + i) % 4];
                let Ok(r) = admin
                    .set_override(pb::SetOverrideRequest {
                        name: name.clone(),
                        r#override: o as i32,
                        ..Default::default()
                    })
                    .await
                else {
                    return;
                };
                revision.fetch_max(r.get_ref().revision, Ordering::SeqCst);
                acked.overrides.lock().expect("lock").push((name, o as i32));
            }
            _ => {
                let mut generation = 0;
                for _ in 0..threshold {
                    let Ok(a) = client
                        .acquire(pb::AcquireRequest {
                            name: name.clone(),
                            caller: String::new(),
                        })
                        .await
                    else {
                        return;
                    };
                    let Ok(r) = client
                        .report(pb::ReportRequest {
                            permit: a.into_inner().permit,
                            outcome: pb::Outcome::Failure as i32,
                            duration: None,
                            caller: String::new(),
                        })
                        .await
                    else {
                        return;
                    };
                    let r = r.into_inner();
                    revision.fetch_max(r.revision, Ordering::SeqCst);
                    generation = r.generation;
                    if r.state() == pb::State::Open {
                        acked
                            .trips
                            .lock()
                            .expect("lock")
                            .push((name.clone(), generation));
                    }
                }
                assert!(generation > 0);
            }
        }
        count.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    const ROUNDS: usize = 20;
    const TASKS: usize = 8;
    let mut daemon = Daemon::fresh(&[]).await;
    let mut last_revision = 0;
    for round in 0..ROUNDS {
        let acked = Arc::new(Acked::default());
        let count = Arc::new(AtomicUsize::new(0));
        let revision = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                tokio::spawn(load(
                    daemon.endpoint(),
                    t,
                    round,
                    acked.clone(),
                    count.clone(),
                    revision.clone(),
                ))
            })
            .collect();
        // Kill at a different point each round, while the load is running.
        let kill_after = 10 + (round * 7) % 40;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while count.load(Ordering::SeqCst) < kill_after {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: load made no progress"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        daemon.kill9();
        for t in tasks {
            t.await.expect("load task");
        }
        daemon.restart().await;

        let seen = revision.load(Ordering::SeqCst);
        let mut admin = daemon.admin().await;
        let now = admin
            .list_breakers(pb::ListBreakersRequest {
                prefix: format!("r{round}/"),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .revision;
        assert!(
            now >= seen,
            "round {round}: revision went back from {seen} to {now}"
        );
        assert!(now >= last_revision, "round {round}: revision went back");
        last_revision = now;

        let puts = std::mem::take(&mut *acked.puts.lock().expect("lock"));
        let overrides = std::mem::take(&mut *acked.overrides.lock().expect("lock"));
        let trips = std::mem::take(&mut *acked.trips.lock().expect("lock"));
        assert!(!puts.is_empty(), "round {round}: nothing was acknowledged");
        for (name, threshold) in &puts {
            let s = get(&daemon, name).await;
            assert_eq!(
                s.spec.expect("spec").consecutive_failures,
                Some(*threshold),
                "round {round}: {name}"
            );
        }
        for (name, o) in &overrides {
            assert_eq!(
                get(&daemon, name).await.r#override,
                *o,
                "round {round}: override of {name}"
            );
        }
        for (name, generation) in &trips {
            let s = get(&daemon, name).await;
            assert_eq!(s.state(), pb::State::Open, "round {round}: trip of {name}");
            assert!(s.generation >= *generation);
        }
    }
}

#[tokio::test]
async fn recovery_half_opens_expired_breakers_and_frees_crashed_probes() {
    let mut daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    let short = pb::BreakerSpec {
        consecutive_failures: Some(1),
        open_duration: Some(ms(300)),
        permit_ttl: Some(ms(3_600_000)),
        ..Default::default()
    };
    // "probing": HALF_OPEN with its one probe in flight when the daemon dies.
    put(&mut admin, "probing", short).await;
    let a = acquire(&mut client, "probing").await;
    report(&mut client, &a.permit, pb::Outcome::Failure).await;
    cbd_tests::wait_state(
        &mut admin,
        "probing",
        pb::State::HalfOpen,
        Duration::from_secs(10),
    )
    .await;
    let probe = acquire(&mut client, "probing").await;
    assert!(probe.allowed);
    assert!(
        !acquire(&mut client, "probing").await.allowed,
        "the one slot is taken"
    );
    // "expired": tripped just before the kill; its deadline passes while cbd is down.
    put(
        &mut admin,
        "expired",
        pb::BreakerSpec {
            open_duration: Some(ms(1500)),
            ..short
        },
    )
    .await;
    let a = acquire(&mut client, "expired").await;
    report(&mut client, &a.permit, pb::Outcome::Failure).await;
    let open_until = get(&daemon, "expired")
        .await
        .open_until
        .expect("open_until");
    daemon.kill9();
    // Stay down until the deadline has passed (waiting for a known instant).
    let deadline =
        std::time::UNIX_EPOCH + Duration::new(open_until.seconds as u64, open_until.nanos as u32);
    if let Ok(left) = deadline.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(10)).await;
    }
    let logged_before = daemon.log().len();
    daemon.restart().await;

    let expired = get(&daemon, "expired").await;
    assert_eq!(
        expired.state(),
        pb::State::HalfOpen,
        "recovered past its deadline"
    );
    let probing = get(&daemon, "probing").await;
    assert_eq!(probing.state(), pb::State::HalfOpen);
    assert_eq!(
        probing.probes_in_flight, 0,
        "the crashed probe's slot is free"
    );
    let mut client = daemon.breakers().await;
    assert!(acquire(&mut client, "probing").await.allowed);
    let recovery_log = daemon.log()[logged_before..].to_owned();
    let line = recovery_log
        .lines()
        .find(|l| l.contains("state changed") && l.contains("breaker=expired"))
        .unwrap_or_else(|| panic!("the recovery transition is logged:\n{recovery_log}"));
    assert!(line.contains("open for 1.5s"), "{line}");
}
