//! Replicas on etcd, end to end (docs/DESIGN.md §11.3): real etcd processes, real cbd
//! replicas (`target/debug/cbd` built with `--features etcd`; tests/etcd/check.sh
//! builds it), real gRPC. Needs the `etcd` feature of this package.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use cbd_proto::{
    LEADER_METADATA,
    v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient},
};
use cbd_tests::{Daemon, Signal, etcd::Etcd};
use parking_lot::Mutex;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long anything in these tests may take to happen.
const PATIENCE: Duration = Duration::from_secs(30);

/// Flags of a replica of the cluster under `prefix` on `endpoints`.
fn replica_flags(endpoints: &[String], prefix: &str, ttl: &str) -> Vec<String> {
    vec![
        "--store".into(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        endpoints.join(","),
        "--etcd-prefix".into(),
        prefix.into(),
        "--etcd-lease-ttl".into(),
        ttl.into(),
    ]
}

/// A replica on a port of its own that it keeps across restarts, as a replica of a
/// real deployment does (clients know it by that address).
async fn start_replica(flags: &[String]) -> Daemon {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let options = cbd_tests::Options {
        listen: Some(format!("127.0.0.1:{port}")),
        ..Default::default()
    };
    Daemon::fresh_with(&flags, options).await
}

/// Whether `daemon` says it leads (`cbd.v1.Leader` SERVING).
async fn leads(daemon: &Daemon) -> bool {
    let Ok(channel) = Channel::from_shared(daemon.endpoint())
        .expect("uri")
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: cbd::standby::LEADER_HEALTH_SERVICE.into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// The index of the one replica that leads, once one does.
async fn wait_leader(replicas: &[&Daemon]) -> usize {
    let deadline = Instant::now() + PATIENCE;
    loop {
        for (i, r) in replicas.iter().enumerate() {
            if leads(r).await {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no replica leads");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The leader a standby names in `status` (`None`: a status that is not a standby's).
fn named_leader(status: &Status) -> Option<String> {
    (status.code() == Code::Unavailable)
        .then(|| status.metadata().get(LEADER_METADATA))
        .flatten()
        .map(|v| v.to_str().expect("ascii").to_owned())
}

/// A client that follows the leader as every cbd client does: a standby's
/// `cbd-leader` names where to go; an empty one, or no answer, means the next
/// endpoint. Retries until `PATIENCE` runs out.
#[derive(Clone)]
struct Follower {
    endpoints: Vec<String>,
    current: Arc<Mutex<usize>>,
}

impl Follower {
    fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            current: Arc::default(),
        }
    }

    async fn channel(&self) -> Option<(usize, Channel)> {
        let i = *self.current.lock();
        let channel = Channel::from_shared(self.endpoints[i].clone())
            .expect("uri")
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .ok()?;
        Some((i, channel))
    }

    /// After a failure on endpoint `i`: where to go next.
    fn move_on(&self, i: usize, leader: Option<String>) {
        let mut current = self.current.lock();
        if *current != i {
            return;
        }
        *current = match leader.and_then(|l| self.endpoints.iter().position(|e| *e == l)) {
            Some(named) => named,
            None => (i + 1) % self.endpoints.len(),
        };
    }

    /// Runs `call` on the leader until it answers anything but UNAVAILABLE.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let failed = match self.channel().await {
                None => (*self.current.lock(), None),
                Some((i, channel)) => match call(channel).await {
                    Ok(answer) => return Ok(answer.into_inner()),
                    Err(status) if status.code() == Code::Unavailable => {
                        (i, named_leader(&status).filter(|l| !l.is_empty()))
                    }
                    // The connection broke mid-call (a replica killed): try again.
                    Err(status) if std::error::Error::source(&status).is_some() => (i, None),
                    Err(status) => return Err(status),
                },
            };
            self.move_on(failed.0, failed.1);
            assert!(
                Instant::now() < deadline,
                "no leader answered in {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn put(&self, name: &str, consecutive_failures: u32) -> pb::PutBreakerResponse {
        let name = name.to_owned();
        self.call(|channel| {
            let name = name.clone();
            async move {
                AdminClient::new(channel)
                    .put_breaker(pb::PutBreakerRequest {
                        name,
                        spec: Some(pb::BreakerSpec {
                            consecutive_failures: Some(consecutive_failures),
                            open_duration: Some(cbd_tests::ms(60_000)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
            }
        })
        .await
        .expect("put")
    }

    async fn get(&self, name: &str) -> pb::BreakerStatus {
        let name = name.to_owned();
        self.call(|channel| {
            let name = name.clone();
            async move {
                AdminClient::new(channel)
                    .get_breaker(pb::GetBreakerRequest { name })
                    .await
            }
        })
        .await
        .expect("get")
        .breaker
        .expect("breaker")
    }
}

/// Puts `name` on `daemon` with `consecutive_failures` and the rest defaults.
async fn put_on(daemon: &Daemon, name: &str, consecutive_failures: u32) -> pb::PutBreakerResponse {
    let spec = pb::BreakerSpec {
        consecutive_failures: Some(consecutive_failures),
        ..Default::default()
    };
    cbd_tests::put(&mut daemon.admin().await, name, spec).await
}

fn spec_failures(status: &pb::BreakerStatus) -> Option<u32> {
    status.spec.as_ref().and_then(|s| s.consecutive_failures)
}

/// `GET path` on the metrics listener `daemon` logged: the status line and the body.
fn http_get(daemon: &Daemon, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let log = daemon.log();
    let addr = log
        .lines()
        .find(|l| l.contains("metrics serving"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .map(|a| a.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':'))
        .unwrap_or_else(|| panic!("no metrics address in:\n{log}"));
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to metrics");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// The value of the sample line `name value` in a Prometheus text scrape.
fn sample(scrape: &str, name: &str) -> Option<String> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

#[tokio::test]
async fn one_replica_leads_and_a_standby_names_it() {
    let Some(etcd) = Etcd::single() else { return };
    let mut flags = replica_flags(&etcd.endpoints(), "one", "1s");
    flags.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
    let a = start_replica(&flags).await;
    let b = start_replica(&flags).await;
    let leader_index = wait_leader(&[&a, &b]).await;
    let (leader, standby) = if leader_index == 0 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(!leads(standby).await, "two leaders");

    // The leader decides and writes.
    let put = put_on(leader, "payments", 3).await;
    assert!(put.created);
    let acquired = cbd_tests::acquire(&mut leader.breakers().await, "payments").await;
    assert!(acquired.allowed);
    let status = leader
        .admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.role(), pb::ReplicationRole::Leader);
    assert_eq!(status.leader, leader.endpoint());
    assert_eq!(status.revision, put.revision);

    // One metrics listener per process: the leader's is ready and counts the breaker,
    // the standby's answers but is not ready and holds nothing.
    let (ready, _) = http_get(leader, "/readyz");
    assert!(ready.contains("200"), "{ready}");
    let (_, scrape) = http_get(leader, "/metrics");
    assert_eq!(
        sample(&scrape, "cbd_breakers").as_deref(),
        Some("1"),
        "{scrape}"
    );
    let (not_ready, _) = http_get(standby, "/readyz");
    assert!(not_ready.contains("503"), "{not_ready}");
    let (_, scrape) = http_get(standby, "/metrics");
    assert_eq!(
        sample(&scrape, "cbd_breakers").as_deref(),
        Some("0"),
        "{scrape}"
    );

    // The standby serves health (it is alive) but not cbd.v1.Leader, and sends every
    // call to the leader.
    assert_eq!(standby.health().await, Some(ServingStatus::Serving));
    let refused = BreakersClient::new(standby.channel().await)
        .acquire(pb::AcquireRequest {
            name: "payments".into(),
            caller: String::new(),
        })
        .await
        .expect_err("a standby does not decide");
    assert_eq!(
        named_leader(&refused),
        Some(leader.endpoint()),
        "{refused:?}"
    );

    // cbctl over both endpoints: one row each, roles and the leader.
    let both = format!("{},{}", a.endpoint(), b.endpoint());
    let out = tokio::process::Command::new(cbd_tests::cbctl_bin())
        .args(["--endpoints", &both, "status"])
        .output()
        .await
        .expect("cbctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(" leader ") && text.contains(" standby "),
        "{text}"
    );
    assert!(text.contains(&leader.endpoint()), "{text}");
}

#[tokio::test]
async fn a_leader_that_stops_hands_over_at_once_and_the_watch_resumes_on_the_next() {
    let Some(etcd) = Etcd::single() else { return };
    // A long lease: a takeover well within it proves the leader resigned.
    let flags = replica_flags(&etcd.endpoints(), "handover", "10s");
    let mut a = start_replica(&flags).await;
    assert_eq!(wait_leader(&[&a]).await, 0);
    let b = start_replica(&flags).await;
    let follower = Follower::new(vec![a.endpoint(), b.endpoint()]);
    let first = follower.put("orders", 1).await;
    let permit = cbd_tests::acquire(&mut a.breakers().await, "orders").await;
    assert!(permit.allowed);

    a.signal(Signal::TERM);
    let stopped = Instant::now();
    let exit = a.wait_exit(PATIENCE).await;
    assert!(exit.success(), "{exit:?}\n{}", a.log());
    assert_eq!(wait_leader(&[&b]).await, 0);
    let took = stopped.elapsed();
    println!("handover after SIGTERM to the leader (--etcd-lease-ttl 10s): {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "took over after {took:?}: not at once\n{}",
        a.log()
    );

    // B served from the copy it kept warm while standing by, not a fresh read.
    assert!(
        b.log().contains("from=\"warm copy\""),
        "b did not lead from its warm copy:\n{}",
        b.log()
    );
    // What the old leader acknowledged is there; revisions go on from it.
    assert_eq!(spec_failures(&follower.get("orders").await), Some(1));
    // The old leader's permit is known for what it is (all replicas share the permit
    // key): stale, counted nowhere. With consecutive_failures 1 a counted failure
    // would have tripped the breaker.
    let reported = cbd_tests::report(
        &mut b.breakers().await,
        &permit.permit,
        pb::Outcome::Failure,
    )
    .await;
    assert!(reported.stale, "{reported:?}");
    assert_eq!(reported.state(), pb::State::Closed);

    let second = follower.put("orders", 2).await;
    assert!(
        second.revision > first.revision,
        "{second:?} after {first:?}"
    );

    // A watch resumed from the old leader's last revision + 1 on the new one gets the
    // next change, and nothing before it.
    let mut watch = BreakersClient::new(b.channel().await)
        .watch(pb::WatchRequest {
            filter: None,
            start_revision: Some(first.revision + 1),
            progress_interval: None,
        })
        .await
        .expect("watch")
        .into_inner();
    let next = tokio::time::timeout(PATIENCE, watch.message())
        .await
        .expect("an event")
        .expect("stream")
        .expect("message");
    match next.kind {
        Some(pb::watch_response::Kind::Event(event)) => {
            assert_eq!(event.revision, second.revision);
            assert_eq!(event.name, "orders");
        }
        other => panic!("expected the event of the second put, got {other:?}"),
    }
}

/// What the writers had acknowledged: each breaker's last value, and every revision.
#[derive(Default)]
struct Acked {
    last: BTreeMap<String, u32>,
    revisions: Vec<u64>,
}

#[tokio::test]
async fn kill_9_the_leader_under_load_twenty_times() {
    let Some(etcd) = Etcd::single() else { return };
    let rounds: usize = std::env::var("CBD_FAILOVER_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let flags = replica_flags(&etcd.endpoints(), "kill9", "1s");
    let mut replicas = [start_replica(&flags).await, start_replica(&flags).await];
    let endpoints: Vec<String> = replicas.iter().map(Daemon::endpoint).collect();
    let follower = Follower::new(endpoints.clone());
    let first = follower.put("load/0", 1).await;

    // A watcher of everything from the first revision on, resuming from last + 1 on
    // whichever replica leads.
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (follower, seen, stop) = (follower.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = first.revision;
            while !stop.load(Ordering::SeqCst) {
                let opened = follower
                    .call(|channel| async move {
                        BreakersClient::new(channel)
                            .watch(pb::WatchRequest {
                                filter: None,
                                start_revision: Some(next),
                                progress_interval: None,
                            })
                            .await
                    })
                    .await;
                let Ok(mut stream) = opened else { continue };
                while let Ok(Some(message)) = stream.message().await {
                    if let Some(pb::watch_response::Kind::Event(event)) = message.kind {
                        assert_eq!(
                            event.revision, next,
                            "the watch skipped or repeated a revision"
                        );
                        seen.lock().push(event.revision);
                        next += 1;
                    }
                }
            }
        })
    };
    // Writers: each puts its own breakers over and over, a new value each time.
    let acked = Arc::new(Mutex::new(Acked::default()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (follower, acked, stop) = (follower.clone(), acked.clone(), stop.clone());
            tokio::spawn(async move {
                let mut value = 1u32;
                let mut last_revision = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("load/{w}");
                    let put = follower.put(&name, value).await;
                    assert!(
                        put.revision >= last_revision,
                        "revision went back: {} after {last_revision}",
                        put.revision
                    );
                    last_revision = put.revision;
                    let mut acked = acked.lock();
                    acked.last.insert(name, value);
                    acked.revisions.push(put.revision);
                    value += 1;
                }
            })
        })
        .collect();

    let mut failovers = Vec::new();
    for round in 0..rounds {
        let refs: Vec<&Daemon> = replicas.iter().collect();
        let leader = wait_leader(&refs).await;
        // Some load on this leader before it dies.
        let before = acked.lock().revisions.len();
        let deadline = Instant::now() + PATIENCE;
        while acked.lock().revisions.len() < before + 20 {
            assert!(Instant::now() < deadline, "round {round}: no writes");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        replicas[leader].kill9();
        let killed = Instant::now();
        let survivor = 1 - leader;
        assert_eq!(wait_leader(&[&replicas[survivor]]).await, 0);
        failovers.push(killed.elapsed());
        // The killed one comes back, as a standby.
        replicas[leader].restart().await;
        assert!(
            !(leads(&replicas[leader]).await && leads(&replicas[survivor]).await),
            "round {round}: two leaders"
        );
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }

    // Nothing acknowledged is lost.
    let acked = std::mem::take(&mut *acked.lock());
    for (name, value) in &acked.last {
        assert_eq!(
            spec_failures(&follower.get(name).await),
            Some(*value),
            "{name}: the last acknowledged put is lost"
        );
    }
    // The watch saw every acknowledged revision, in order, once.
    let last = acked.revisions.iter().max().copied().unwrap_or(0);
    let deadline = Instant::now() + PATIENCE;
    while seen.lock().last().copied().unwrap_or(0) < last {
        assert!(Instant::now() < deadline, "the watch never reached {last}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    watcher.abort();
    let seen = seen.lock().clone();
    for revision in &acked.revisions {
        assert!(
            seen.binary_search(revision).is_ok(),
            "revision {revision} acknowledged but never watched"
        );
    }
    failovers.sort();
    let pick = |q: f64| failovers[((failovers.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "failover after kill -9 (--etcd-lease-ttl 1s), {} rounds: p50 {:?}, p99 {:?}, max {:?}; {} acknowledged puts, {} events watched",
        failovers.len(),
        pick(0.5),
        pick(0.99),
        failovers.last().expect("rounds"),
        acked.revisions.len(),
        seen.len()
    );
    let slowest = *failovers.last().expect("rounds");
    assert!(
        slowest < Duration::from_secs(2),
        "a failover took {slowest:?}"
    );
}

/// One Acquire on `daemon` over a fresh connection, within 300 ms.
async fn try_acquire(daemon: &Daemon, name: &str) -> Result<pb::AcquireResponse, Status> {
    let channel = Channel::from_shared(daemon.endpoint())
        .expect("uri")
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    BreakersClient::new(channel)
        .acquire(pb::AcquireRequest {
            name: name.into(),
            caller: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_leader_cut_off_from_etcd_stops_deciding_before_a_standby_starts() {
    let Some(etcd) = Etcd::single() else { return };
    let proxy = cbd_tests::etcd::Proxy::start(etcd.client_addr(0)).await;
    let a = start_replica(&replica_flags(&[proxy.endpoint()], "partition", "1s")).await;
    assert_eq!(wait_leader(&[&a]).await, 0);
    let b = start_replica(&replica_flags(&etcd.endpoints(), "partition", "1s")).await;
    let put = put_on(&a, "inventory", 5).await;
    assert!(
        try_acquire(&a, "inventory")
            .await
            .expect("a decides")
            .allowed
    );

    proxy.cut();
    let cut = Instant::now();
    // A decides until its lease's deadline, then answers as a standby.
    let a_decides = async {
        let mut last_decision = None;
        loop {
            match try_acquire(&a, "inventory").await {
                Ok(_) => last_decision = Some(Instant::now()),
                Err(status) if named_leader(&status).is_some() => return last_decision,
                Err(_) => {}
            }
            assert!(
                cut.elapsed() < PATIENCE,
                "a never answered as a standby after the cut (last decision: {:?} after it)\n{}",
                last_decision.map(|at: Instant| at - cut),
                a.log()
            );
        }
    };
    // B leads once A's lease is gone from etcd.
    let b_leads = async {
        assert_eq!(wait_leader(&[&b]).await, 0);
        Instant::now()
    };
    let (last_decision_of_a, b_led) = tokio::join!(a_decides, b_leads);
    let last_decision_of_a = last_decision_of_a.expect("a decided after the cut");
    assert!(
        last_decision_of_a < b_led,
        "two leaders: a decided {:?} after b led",
        last_decision_of_a - b_led
    );
    println!(
        "partition: a stopped deciding {:?} after the cut; b led {:?} after it",
        last_decision_of_a - cut,
        b_led - cut
    );
    // B has what A acknowledged.
    let got = cbd_tests::get_breaker(&mut b.admin().await, "inventory").await;
    assert_eq!(spec_failures(&got), Some(5));
    assert!(
        b.admin()
            .await
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .revision
            >= put.revision
    );

    // Healed, A rejoins as a standby that names B.
    proxy.heal();
    let deadline = Instant::now() + PATIENCE;
    loop {
        match try_acquire(&a, "inventory").await {
            Err(status) if named_leader(&status) == Some(b.endpoint()) => break,
            other => assert!(
                Instant::now() < deadline,
                "a does not name b after healing: {other:?}\n{}",
                a.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(leads(&b).await && !leads(&a).await);
}

#[tokio::test]
async fn three_etcd_members_survive_one_loss_and_quorum_loss_refuses_writes() {
    let Some(mut etcd) = Etcd::cluster(3) else {
        return;
    };
    let flags = replica_flags(&etcd.endpoints(), "quorum", "1s");
    let a = start_replica(&flags).await;
    let b = start_replica(&flags).await;
    let follower = Follower::new(vec![a.endpoint(), b.endpoint()]);
    follower.put("quorum/x", 1).await;

    // One member down: the cluster keeps its quorum, cbd keeps serving.
    etcd.kill(0);
    follower.put("quorum/x", 2).await;
    assert_eq!(spec_failures(&follower.get("quorum/x").await), Some(2));

    // Two down: no quorum. No write is acknowledged; every replica answers UNAVAILABLE.
    etcd.kill(1);
    for replica in [&a, &b] {
        let channel = Channel::from_shared(replica.endpoint())
            .expect("uri")
            .timeout(Duration::from_secs(15))
            .connect()
            .await
            .expect("connect");
        let refused = AdminClient::new(channel)
            .put_breaker(pb::PutBreakerRequest {
                name: "quorum/x".into(),
                spec: Some(pb::BreakerSpec {
                    consecutive_failures: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("no quorum, no acknowledgement");
        // Refused, timed out, or cut as its replica stopped leading: never OK.
        assert!(
            matches!(refused.code(), Code::Unavailable | Code::DeadlineExceeded)
                || std::error::Error::source(&refused).is_some(),
            "{refused:?}"
        );
    }
    let deadline = Instant::now() + PATIENCE;
    while leads(&a).await || leads(&b).await {
        assert!(Instant::now() < deadline, "a leader without etcd quorum");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Quorum back: a leader again, with everything acknowledged.
    etcd.restart(1);
    etcd.restart(0);
    wait_leader(&[&a, &b]).await;
    // What was acknowledged (2) is there; the put refused meanwhile (3) may have
    // landed after all, as an etcd request that timed out may: its outcome was unknown.
    let after = spec_failures(&follower.get("quorum/x").await);
    assert!(matches!(after, Some(2 | 3)), "{after:?}");
}

#[tokio::test]
async fn a_replica_reaches_etcd_over_mtls_as_a_user_with_a_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = cbd_tests::Pki::generate(&dir.path().join("pki"));
    let tls = cbd_tests::etcd::EtcdTls {
        ca: pki.ca.clone(),
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_cert: pki.client_cert.clone(),
        client_key: pki.client_key.clone(),
    };
    let Some(mut etcd) = Etcd::single_tls(tls) else {
        return;
    };
    etcd.enable_auth("s3cret");
    let password = dir.path().join("etcd-password");
    std::fs::write(&password, "s3cret\n").expect("write");
    let path = |p: &std::path::Path| p.display().to_string();
    let mut flags = replica_flags(&etcd.endpoints(), "secure", "1s");
    flags.extend([
        "--etcd-ca".into(),
        path(&pki.ca),
        "--etcd-cert".into(),
        path(&pki.client_cert),
        "--etcd-key".into(),
        path(&pki.client_key),
        "--etcd-user".into(),
        "root".into(),
        "--etcd-password-file".into(),
        path(&password),
    ]);
    let replica = start_replica(&flags).await;
    assert_eq!(wait_leader(&[&replica]).await, 0, "{}", replica.log());
    put_on(&replica, "ledger", 2).await;
    // The record is in etcd, under the prefix, as etcd's own client reads it.
    let keys = etcd.etcdctl(&["get", "--prefix", "--keys-only", "secure/breakers/"]);
    assert!(keys.contains("secure/breakers/ledger"), "{keys}");

    // A wrong password is refused at the start, naming etcd.
    std::fs::write(&password, "wrong\n").expect("write");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let refused = Daemon::try_start(&dir.path().join("data"), &flags)
        .await
        .expect_err("a wrong etcd password");
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("etcd"), "{}", refused.stderr);
}
