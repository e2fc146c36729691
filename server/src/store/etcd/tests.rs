//! The etcd store and election against real etcd (`cbd_tests::etcd`): skipped with a
//! printed reason only when etcd is missing and `CI` is unset.

use std::time::{Duration, Instant};

use cbd_tests::etcd::Etcd;

use super::{
    election::{Election, ElectionOptions},
    *,
};
use crate::store::conformance::{batch, store_conformance};

/// A unique prefix per test, so tests sharing nothing still prove nothing by accident.
fn prefix(test: &str) -> String {
    format!("cbd-test/{test}")
}

async fn connect(etcd: &Etcd) -> Connection {
    Connection::connect(&EtcdOptions::new(etcd.endpoints()))
        .await
        .expect("connect")
}

/// A leader's store on `prefix`: an election won, and the store fenced by it.
async fn leader_store(etcd: &Etcd, prefix: &str, id: &str) -> (Arc<EtcdStore>, Arc<Election>) {
    leader_on(connect(etcd).await, prefix, id).await
}

/// Campaigns as `id` over `conn` and returns the store fenced by what it won.
async fn leader_on(conn: Connection, prefix: &str, id: &str) -> (Arc<EtcdStore>, Arc<Election>) {
    let election = Election::new(conn.clone(), ElectionOptions::new(prefix, id));
    election.campaign().await.expect("campaign");
    let store = EtcdStore::new(conn, prefix, election.fence(), DEFAULT_MAX_TXN_OPS);
    (store, election)
}

store_conformance!(async {
    let etcd = Etcd::single()?;
    let (store, election) = leader_store(&etcd, "conformance", "a").await;
    Some((store as Arc<dyn Store>, (election, etcd)))
});

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Refused as UNAVAILABLE, whichever the cause: etcd unreachable, or, when the
/// commit's retries outlast the leadership deadline (no keep-alive answered
/// meanwhile), no longer the leader. Neither is acknowledged.
fn refused_as_unavailable<T>(result: &Result<T, Error>) -> bool {
    matches!(
        result,
        Err(Error::StoreUnavailable { .. } | Error::NotLeader { .. })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_was_revoked_cannot_commit() {
    let Some(etcd) = Etcd::single() else { return };
    let p = prefix("fencing");
    let conn = connect(&etcd).await;
    let a = Election::new(conn.clone(), ElectionOptions::new(&p, "replica-a"));
    let won = a.campaign().await.expect("campaign");
    // A's store keeps the fence it won with, as a deposed leader that has not noticed
    // yet would: only etcd's compare can stop it.
    let (_stale_fence_tx, stale_fence) = watch::channel(Some(won.create_revision));
    let store_a = EtcdStore::new(conn.clone(), &p, stale_fence, DEFAULT_MAX_TXN_OPS);
    store_a
        .clone()
        .commit(batch(0, &["a"], &[], 1))
        .await
        .expect("leader commits");

    // Revoked behind A's back (as an expiry would): etcd deletes `P/leader`.
    conn.client().lease_revoke(won.lease).await.expect("revoke");
    let refused = store_a.clone().commit(batch(1, &["b"], &[], 1)).await;
    assert!(
        matches!(refused, Err(Error::NotLeader { leader: None })),
        "{refused:?}"
    );

    // B takes over; A's write still fails, now naming B; B's succeeds.
    let b_conn = connect(&etcd).await;
    let b = Election::new(b_conn.clone(), ElectionOptions::new(&p, "replica-b"));
    b.campaign().await.expect("b campaigns");
    let refused = store_a.clone().commit(batch(1, &["b"], &[], 1)).await;
    assert!(
        matches!(&refused, Err(Error::NotLeader { leader: Some(l) }) if l == "replica-b"),
        "{refused:?}"
    );
    assert_eq!(
        tonic::Status::from(refused.unwrap_err()).code(),
        tonic::Code::Unavailable
    );
    let store_b = EtcdStore::new(b_conn, &p, b.fence(), DEFAULT_MAX_TXN_OPS);
    store_b
        .clone()
        .commit(batch(1, &["c"], &[], 1))
        .await
        .expect("b commits");
    let loaded = store_b.load().expect("load");
    let names: Vec<_> = loaded.breakers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "c"], "nothing of A's refused writes landed");
    // A noticed too (keep-alive or watch): its fence is gone.
    wait_until("A sees it lost", Duration::from_secs(5), || {
        a.fence().borrow().is_none()
    })
    .await;
    let own = EtcdStore::new(conn, &p, a.fence(), DEFAULT_MAX_TXN_OPS);
    let refused = own.commit(batch(2, &["d"], &[], 1)).await;
    assert!(
        matches!(refused, Err(Error::NotLeader { .. })),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leaders_lease_is_revoked() {
    let Some(etcd) = Etcd::single() else { return };
    let p = prefix("handover");
    let a_conn = connect(&etcd).await;
    let a = Election::new(a_conn.clone(), ElectionOptions::new(&p, "10.0.0.1:7411"));
    let a_won = a.campaign().await.expect("a campaigns");
    let deadline = a.deadline().expect("leading, so a deadline");
    assert!(
        deadline > tokio::time::Instant::now(),
        "the deadline is ahead"
    );
    assert!(
        deadline <= tokio::time::Instant::now() + Duration::from_secs(2),
        "no later than TTL from now"
    );

    let b = Election::new(
        connect(&etcd).await,
        ElectionOptions::new(&p, "10.0.0.2:7411"),
    );
    let mut b_sees = b.observe();
    b_sees
        .wait_for(|l| l.as_deref() == Some("10.0.0.1:7411"))
        .await
        .expect("b observes a");
    let campaign = tokio::spawn({
        let b = b.clone();
        async move { b.campaign().await }
    });
    // B waits while A leads (A keeps its lease alive past one TTL).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!campaign.is_finished(), "b must not lead while a does");
    assert_eq!(
        a.leadership(),
        Some(a_won),
        "a still leads after a TTL: kept alive"
    );

    let revoked = Instant::now();
    a_conn
        .client()
        .lease_revoke(a_won.lease)
        .await
        .expect("revoke");
    let b_won = tokio::time::timeout(Duration::from_secs(5), campaign)
        .await
        .expect("b leads in time")
        .expect("task")
        .expect("campaign");
    let handover = revoked.elapsed();
    println!("handover after the leader's lease was revoked: {handover:?}");
    assert!(b_won.create_revision > a_won.create_revision);
    assert!(b.deadline().is_some());
    b_sees
        .wait_for(|l| l.as_deref() == Some("10.0.0.2:7411"))
        .await
        .expect("b observes itself");
    let mut a_sees = a.observe();
    a_sees
        .wait_for(|l| l.as_deref() == Some("10.0.0.2:7411"))
        .await
        .expect("a observes b");
    wait_until("a steps down", Duration::from_secs(2), || {
        a.leadership().is_none()
    })
    .await;
    assert_eq!(a.deadline(), None);

    // A graceful resign hands over without waiting for the TTL.
    let a_again = tokio::spawn({
        let a = a.clone();
        async move { a.campaign().await }
    });
    let resigned = Instant::now();
    b.resign().await.expect("resign");
    tokio::time::timeout(Duration::from_secs(2), a_again)
        .await
        .expect("a leads again well within a TTL")
        .expect("task")
        .expect("campaign");
    println!("handover after a resign: {:?}", resigned.elapsed());
    assert!(b.fence().borrow().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_under_different_prefixes_share_nothing() {
    let Some(etcd) = Etcd::single() else { return };
    let (one, _e1) = leader_store(&etcd, "shared/one", "a").await;
    // A trailing slash names the same prefix; "shared/one-b" is another one.
    let (two, _e2) = leader_store(&etcd, "shared/one-b/", "b").await;
    one.clone()
        .commit(batch(0, &["x", "y"], &[], 1))
        .await
        .expect("one");
    two.clone()
        .commit(batch(0, &["z"], &[], 1))
        .await
        .expect("two: its own revision 0");
    let (l1, l2) = (one.load().expect("load"), two.load().expect("load"));
    assert_eq!((l1.revision, l1.breakers.len()), (2, 2));
    assert_eq!((l2.revision, l2.breakers.len()), (1, 1));
    assert_eq!(l2.breakers[0].0, "z");
    let events = two.clone().events(1, 10).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_is_store_unavailable() {
    let Some(mut etcd) = Etcd::single() else {
        return;
    };
    let (store, _election) = leader_store(&etcd, &prefix("down"), "a").await;
    store
        .clone()
        .commit(batch(0, &["a"], &[], 1))
        .await
        .expect("commit");
    etcd.kill(0);
    let started = Instant::now();
    let failed = store.clone().commit(batch(1, &["b"], &[], 1)).await;
    assert!(refused_as_unavailable(&failed), "{failed:?}");
    assert_eq!(
        tonic::Status::from(failed.unwrap_err()).code(),
        tonic::Code::Unavailable
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the timeouts"
    );
    let events = store.clone().events(1, 10).await;
    assert!(
        matches!(events, Err(Error::StoreUnavailable { .. })),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_at_the_advertised_maximum_fits_one_etcd_txn() {
    let Some(etcd) = Etcd::single() else { return };
    let (store, _election) = leader_store(&etcd, &prefix("max-batch"), "a").await;
    let max = store.max_batch().expect("etcd has a limit");
    assert_eq!(max, DEFAULT_MAX_TXN_OPS - 3);
    // `max` changes: max/2 puts + max/2 events, plus one delete if odd.
    let names: Vec<String> = (0..max / 2).map(|i| format!("m{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    store
        .clone()
        .commit(batch(0, &refs, &[], 1))
        .await
        .expect("at the limit");
    // One more change than that is more than etcd takes in one txn.
    let over: Vec<String> = (0..max / 2 + 1).map(|i| format!("o{i:03}")).collect();
    let refs: Vec<&str> = over.iter().map(String::as_str).collect();
    let refused = store
        .clone()
        .commit(batch(max as u64 / 2, &refs, &["m000"], 1))
        .await;
    assert!(matches!(refused, Err(Error::Storage(_))), "{refused:?}");
}

/// Durable commits per second, one txn per batch, on etcd and on sled, same batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_commits_per_second_etcd_vs_sled() {
    let Some(etcd) = Etcd::single() else { return };
    const COMMITS: u64 = 300;
    async fn run(store: Arc<dyn Store>, per_batch: usize) -> f64 {
        let names: Vec<String> = (0..per_batch).map(|i| format!("b{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let started = Instant::now();
        let mut revision = 0u64;
        for _ in 0..COMMITS {
            let oldest = revision.saturating_sub(1000).max(1);
            revision = store
                .clone()
                .commit(batch(revision, &refs, &[], oldest))
                .await
                .expect("commit")
                .revision;
        }
        assert_eq!(
            store.load().expect("load").revision,
            COMMITS * per_batch as u64
        );
        COMMITS as f64 / started.elapsed().as_secs_f64()
    }
    for per_batch in [1, 60] {
        let (etcd_store, _election) =
            leader_store(&etcd, &prefix(&format!("bench-{per_batch}")), "a").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let sled_store = Arc::new(crate::store::sled::SledStore::open(dir.path()).expect("sled"));
        let on_etcd = run(etcd_store, per_batch).await;
        let on_sled = run(sled_store, per_batch).await;
        println!(
            "{per_batch} breaker(s)/batch: etcd {on_etcd:.0} commits/s ({:.0} changes/s), sled {on_sled:.0} commits/s ({:.0} changes/s)",
            on_etcd * per_batch as f64,
            on_sled * per_batch as f64
        );
        assert!(on_etcd > 0.0 && on_sled > 0.0);
    }
}

fn registry_on(store: Arc<dyn Store>) -> crate::registry::Registry {
    crate::registry::Registry::open(
        store,
        crate::registry::RegistryConfig {
            max_breakers: 10_000,
            watch_retention: 100_000,
            templates: Vec::new(),
            metrics: crate::metrics::Metrics::new(100),
            clock: crate::clock::Clock::wall(),
        },
    )
    .expect("open registry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_on_etcd_splits_big_batches_and_a_new_leader_loads_everything() {
    let Some(etcd) = Etcd::single() else { return };
    let p = prefix("registry");
    let (store, election) = leader_store(&etcd, &p, "a").await;
    let registry = registry_on(store);
    let operator = pb::Operator {
        actor: "tester".into(),
        ..Default::default()
    };
    // 600 puts at once: 1200 changes, ten times what one etcd txn takes.
    let puts: Vec<_> = (0..600)
        .map(|i| {
            let (registry, operator) = (registry.clone(), operator.clone());
            tokio::spawn(async move {
                let spec = cbd_breaker::Spec {
                    consecutive_failures: Some(1 + i % 7),
                    ..Default::default()
                };
                registry.put(&format!("svc-{i:04}"), spec, &operator).await
            })
        })
        .collect();
    for put in puts {
        put.await.expect("task").expect("durable put");
    }
    assert_eq!(registry.revision(), 600);
    // Hand over; the new leader's registry loads it all back from etcd.
    election.resign().await.expect("resign");
    drop(registry);
    let (store_b, _b) = leader_store(&etcd, &p, "b").await;
    let reloaded = registry_on(store_b);
    assert_eq!(reloaded.revision(), 600);
    assert_eq!(reloaded.len(), 600);
    let (status, _) = reloaded.get("svc-0599").expect("there");
    assert_eq!(
        status.spec.expect("spec").consecutive_failures,
        Some(1 + 599 % 7)
    );
    let events = reloaded.events(1, 1000).await.expect("events");
    let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
    assert_eq!(revisions, (1..=600).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_before_its_successor_starts() {
    let Some(etcd) = Etcd::single() else { return };
    let p = prefix("partition");
    let proxy = cbd_tests::etcd::Proxy::start(etcd.client_addr(0)).await;
    let mut through = EtcdOptions::new(vec![proxy.endpoint()]);
    through.request_timeout = Duration::from_secs(1);
    let (store_a, a) = leader_on(
        Connection::connect(&through).await.expect("connect"),
        &p,
        "a",
    )
    .await;
    store_a
        .clone()
        .commit(batch(0, &["a"], &[], 1))
        .await
        .expect("a commits");

    let b_conn = connect(&etcd).await;
    let b = Election::new(b_conn.clone(), ElectionOptions::new(&p, "b"));
    let campaign = tokio::spawn({
        let b = b.clone();
        async move { b.campaign().await }
    });

    let cut_at = tokio::time::Instant::now();
    proxy.cut();
    // A's latest deadline, as it moves until A gives up: an answer already on its way
    // at the cut may still move it once.
    let last_deadline = tokio::spawn({
        let a = a.clone();
        async move {
            let mut last = a.deadline();
            while let Some(deadline) = a.deadline() {
                last = last.max(Some(deadline));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last.expect("a led at the cut")
        }
    });
    let during = store_a.clone().commit(batch(1, &["x"], &[], 1)).await;
    assert!(refused_as_unavailable(&during), "{during:?}");

    let b_won = tokio::time::timeout(Duration::from_secs(10), campaign)
        .await
        .expect("b leads in time")
        .expect("task")
        .expect("campaign");
    let b_won_at = tokio::time::Instant::now();
    println!("failover after a partition: {:?}", b_won_at - cut_at);
    let a_deadline = tokio::time::timeout(Duration::from_secs(3), last_deadline)
        .await
        .expect("a gives up")
        .expect("task");
    // Nothing passes the proxy after the cut, so every keep-alive that moved A's
    // deadline was sent before it.
    assert!(
        a_deadline <= cut_at + Duration::from_secs(2),
        "at most a TTL past the cut"
    );
    assert!(
        b_won_at >= a_deadline,
        "b leads {:?} before a's deadline: two leaders",
        a_deadline - b_won_at
    );

    // Healed, A's writes still fail: it is a standby now, and etcd's fence agrees.
    proxy.heal();
    let after = store_a.clone().commit(batch(1, &["x"], &[], 1)).await;
    assert!(matches!(after, Err(Error::NotLeader { .. })), "{after:?}");
    let store_b = EtcdStore::new(b_conn, &p, b.fence(), DEFAULT_MAX_TXN_OPS);
    assert!(
        b.fence()
            .borrow()
            .is_some_and(|f| f == b_won.create_revision)
    );
    store_b
        .clone()
        .commit(batch(1, &["b"], &[], 1))
        .await
        .expect("b commits");
    let names: Vec<_> = store_b
        .load()
        .expect("load")
        .breakers
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["a", "b"], "nothing of A's after the cut");
    let mut a_sees = a.observe();
    tokio::time::timeout(
        Duration::from_secs(10),
        a_sees.wait_for(|l| l.as_deref() == Some("b")),
    )
    .await
    .expect("a follows b once healed")
    .expect("observer");
}

/// Commits `b`, retrying (as the writer does) while the store is unavailable, for at
/// most `limit`.
async fn commit_retrying(store: &Arc<EtcdStore>, b: Arc<WriteBatch>, limit: Duration) -> Committed {
    let deadline = Instant::now() + limit;
    loop {
        match store.clone().commit(b.clone()).await {
            Ok(committed) => return committed,
            Err(Error::StoreUnavailable { cause }) if Instant::now() < deadline => {
                tracing::debug!(%cause, "retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("commit: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_one_loss_and_quorum_loss_is_unavailable_and_loses_nothing() {
    let Some(mut etcd) = Etcd::cluster(3) else {
        return;
    };
    let p = prefix("three");
    let mut options = EtcdOptions::new(etcd.endpoints());
    options.request_timeout = Duration::from_secs(2);
    let (store, election) = leader_on(
        Connection::connect(&options).await.expect("connect"),
        &p,
        "a",
    )
    .await;
    store
        .clone()
        .commit(batch(0, &["a"], &[], 1))
        .await
        .expect("commit");

    // One member of three gone: etcd keeps its quorum, and so does cbd's leader.
    etcd.kill(0);
    commit_retrying(&store, batch(1, &["b"], &[], 1), Duration::from_secs(10)).await;
    assert!(
        election.leadership().is_some(),
        "one member lost deposes nobody"
    );

    // Two gone: no quorum. Writes are UNAVAILABLE, within the request timeout.
    etcd.kill(1);
    let started = Instant::now();
    let failed = store.clone().commit(batch(2, &["c"], &[], 1)).await;
    assert!(
        matches!(failed, Err(Error::StoreUnavailable { .. })),
        "{failed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Quorum back: the leader (again, if its deadline passed meanwhile) commits, and
    // everything acknowledged is there.
    etcd.restart(1);
    tokio::time::timeout(Duration::from_secs(15), election.campaign())
        .await
        .expect("leads again in time")
        .expect("campaign");
    commit_retrying(&store, batch(2, &["c"], &[], 1), Duration::from_secs(10)).await;
    let loaded = store.load().expect("load");
    let names: Vec<_> = loaded.breakers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!((loaded.revision, names), (3, vec!["a", "b", "c"]));
}

#[test]
fn etcd_errors_map_to_unavailable_only_when_etcd_cannot_answer() {
    use etcd_client::Error as E;
    for status in [
        tonic::Status::unavailable("etcdserver: no leader"),
        tonic::Status::deadline_exceeded("etcdserver: request timed out"),
    ] {
        let mapped = etcd_error(E::GRpcStatus(status));
        assert!(
            matches!(mapped, Error::StoreUnavailable { .. }),
            "{mapped:?}"
        );
    }
    let io = E::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(matches!(etcd_error(io), Error::StoreUnavailable { .. }));
    for status in [
        tonic::Status::invalid_argument("etcdserver: too many operations in txn request"),
        tonic::Status::permission_denied("etcdserver: permission denied"),
    ] {
        let mapped = etcd_error(E::GRpcStatus(status));
        assert!(matches!(mapped, Error::Storage(_)), "{mapped:?}");
        assert_eq!(tonic::Status::from(mapped).code(), tonic::Code::Internal);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_copy_holds_what_a_fresh_read_does_once_it_saw_the_new_leader() {
    let Some(etcd) = Etcd::single() else { return };
    let p = prefix("warm");
    let (store_a, a) = leader_store(&etcd, &p, "a").await;
    store_a
        .clone()
        .commit(batch(0, &["x", "y"], &[], 1))
        .await
        .expect("commit");
    // Started after the first commit (its first read has it) and before the rest
    // (its watch has them): puts, a delete, compaction of the log.
    let b_conn = connect(&etcd).await;
    let warm = warm::Warm::follow(&b_conn, &p);
    store_a
        .clone()
        .commit(batch(2, &["z", "y"], &["x"], 3))
        .await
        .expect("commit");
    a.resign().await.expect("resign");
    let b = Election::new(b_conn.clone(), ElectionOptions::new(&p, "b"));
    let won = b.campaign().await.expect("b campaigns");
    let copy = warm
        .loaded_at(won.create_revision, Duration::from_secs(5))
        .await
        .expect("the copy sees the new leader's key");
    let fresh = EtcdStore::new(b_conn, &p, b.fence(), DEFAULT_MAX_TXN_OPS)
        .load()
        .expect("load");
    assert_eq!(copy.breakers, fresh.breakers);
    let names: Vec<_> = copy.breakers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["y", "z"]);
    assert_eq!((copy.revision, copy.oldest_retained), (4, 3));
    assert_eq!(
        (copy.revision, copy.oldest_retained),
        (fresh.revision, fresh.oldest_retained)
    );
    // A revision it has not seen: no copy, the caller reads etcd.
    let ahead = warm
        .loaded_at(won.create_revision + 1000, Duration::from_millis(100))
        .await;
    assert!(ahead.is_none());
}
