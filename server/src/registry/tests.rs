//! The registry over a store whose commits fail on demand: a failed commit is a
//! fault the writer retries, never a permanent state, and nothing uncommitted is
//! shown.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use cbd_breaker::{Outcome, Override, PermitToken, Spec, State};
use cbd_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::Code;

use super::{Registry, RegistryConfig, StoreHealth, writer};
use crate::{
    error::Error,
    metrics::Metrics,
    store::{Loaded, Store, StoredBreaker, WriteBatch, sled::SledStore},
};

const ENOSPC: &str = "No space left on device (os error 28)";

/// A sled store whose commits fail while `failures` is above zero, each failure
/// counting it down (`u32::MAX`: until [`Faulty::heal`]).
#[derive(Debug)]
struct Faulty {
    inner: SledStore,
    failures: AtomicU32,
    /// When each commit was attempted (tokio time, so paused in these tests).
    attempts: Mutex<Vec<Instant>>,
}

impl Faulty {
    fn fail(&self, n: u32) {
        self.failures.store(n, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.failures.store(0, Ordering::SeqCst);
    }

    fn attempts(&self) -> Vec<Instant> {
        self.attempts.lock().clone()
    }
}

impl Store for Faulty {
    fn load(&self) -> Result<Loaded, Error> {
        self.inner.load()
    }

    fn commit(&self, batch: &WriteBatch) -> Result<(), Error> {
        self.attempts.lock().push(Instant::now());
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            });
        if failing.is_ok() {
            return Err(Error::Storage(ENOSPC.into()));
        }
        self.inner.commit(batch)
    }

    fn events(&self, from: u64, to: u64) -> Result<Vec<pb::Event>, Error> {
        self.inner.events(from, to)
    }

    fn breakers(&self, prefix: &str) -> Result<Vec<(String, StoredBreaker)>, Error> {
        self.inner.breakers(prefix)
    }
}

fn open(dir: &tempfile::TempDir) -> (Registry, Arc<Faulty>) {
    let store = Arc::new(Faulty {
        inner: SledStore::open(dir.path()).expect("open sled"),
        failures: AtomicU32::new(0),
        attempts: Mutex::new(Vec::new()),
    });
    let registry = Registry::open(
        store.clone(),
        RegistryConfig {
            max_breakers: 100,
            watch_retention: 1000,
            templates: Vec::new(),
            metrics: Metrics::new(100),
            // Timers move when a test moves this clock, never by themselves.
            clock: crate::clock::Clock::manual(crate::clock::now()),
        },
    )
    .expect("open registry");
    (registry, store)
}

fn spec(consecutive_failures: u32) -> Spec {
    Spec {
        consecutive_failures: Some(consecutive_failures),
        ..Spec::default()
    }
}

fn assert_unavailable(result: Result<impl std::fmt::Debug, Error>, what: &str) {
    let e = result.expect_err(what);
    let status = tonic::Status::from(e);
    assert_eq!(status.code(), Code::Unavailable, "{what}: {status:?}");
    assert!(
        status.message().contains(ENOSPC) && status.message().contains("store cannot commit"),
        "{what}: the message names the cause: {}",
        status.message()
    );
}

/// The waits between commit attempts double from the first retry delay up to the
/// cap; `failed` is how many attempts failed before the last one.
fn assert_backoff(attempts: &[Instant], failed: usize) {
    assert_eq!(
        attempts.len(),
        failed + 1,
        "one attempt per failure, then one that succeeds"
    );
    let mut expected = writer::RETRY_FIRST;
    for (i, pair) in attempts.windows(2).enumerate() {
        assert_eq!(pair[1] - pair[0], expected, "wait before retry {}", i + 1);
        expected = (expected * 2).min(writer::RETRY_MAX);
    }
}

fn revisions(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

fn drain(feed: &mut tokio::sync::broadcast::Receiver<Arc<pb::Event>>) -> Vec<pb::Event> {
    std::iter::from_fn(|| feed.try_recv().ok().map(|e| (*e).clone())).collect()
}

/// Waits (in paused time, so at once) for the store to be healthy again; a minute
/// of virtual time is far more than the backoff needs.
async fn wait_serving(registry: &Registry) {
    let mut health = registry.store_health();
    tokio::time::timeout(
        Duration::from_secs(60),
        health.wait_for(|h| *h == StoreHealth::Serving),
    )
    .await
    .expect("the store recovers within a minute")
    .expect("health sender alive");
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_is_retried_with_backoff_until_it_succeeds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, store) = open(&dir);
    let mut feed = registry.subscribe().feed;
    store.fail(5);

    assert_unavailable(registry.put("a", spec(3)).await, "put during the fault");
    assert_eq!(
        *registry.store_health().borrow(),
        StoreHealth::Failing {
            cause: format!("storage error: {ENOSPC}")
        }
    );
    assert!(
        matches!(registry.get("a"), Err(Error::NotFound { .. })),
        "a breaker whose creation is not committed is not shown"
    );
    assert!(registry.list("", 10, "").expect("list").breakers.is_empty());
    assert_eq!(registry.revision(), 0);
    assert!(
        drain(&mut feed).is_empty(),
        "no uncommitted event on the feed"
    );

    wait_serving(&registry).await;
    assert_backoff(&store.attempts(), 5);
    let (a, revision) = registry.get("a").expect("committed after recovery");
    assert_eq!((a.mod_revision, revision), (1, 1));
    assert_eq!(a.spec.expect("spec").consecutive_failures, Some(3));
    let events = drain(&mut feed);
    assert_eq!(
        revisions(&events),
        [1],
        "committed exactly once: {events:?}"
    );
    assert_eq!(revisions(&registry.events(1, 100).expect("log")), [1]);

    // Retrying the put the client saw fail is idempotent, and writes go on.
    let again = registry.put("a", spec(3)).await.expect("retry");
    assert!(again.unchanged);
    let b = registry
        .put("b", spec(1))
        .await
        .expect("put after recovery");
    assert_eq!(b.revision, 2);
    assert_eq!(revisions(&drain(&mut feed)), [2]);
}

#[tokio::test(start_paused = true)]
async fn during_a_fault_writes_are_refused_and_reads_show_only_what_is_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, store) = open(&dir);
    registry.put("a", spec(3)).await.expect("put");
    let mut feed = registry.subscribe().feed;
    store.fail(u32::MAX);
    let before = store.attempts().len();

    // Queued in the batch that fails: not acknowledged, not shown.
    assert_unavailable(registry.put("a", spec(7)).await, "put");
    let (a, revision) = registry.get("a").expect("get");
    assert_eq!(a.spec.expect("spec").consecutive_failures, Some(3));
    assert_eq!((a.mod_revision, revision), (1, 1));
    let listed = registry.list("", 10, "").expect("list").breakers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].spec.expect("spec").consecutive_failures, Some(3));
    let (sub, records) = registry.subscribe_with_snapshot("").expect("snapshot");
    assert_eq!(sub.revision, 1);
    assert_eq!(
        records[0].1.spec.expect("spec").consecutive_failures,
        Some(3)
    );

    // Refused before they change anything.
    assert_unavailable(registry.put("new", spec(1)).await, "create");
    assert_unavailable(
        registry.set_override("a", Some(Override::ForcedOpen)).await,
        "override",
    );
    assert_unavailable(registry.delete("a").await, "delete");
    assert_unavailable(registry.reset("a").await, "reset");
    assert_eq!(registry.len(), 1, "nothing created during the fault");

    // Long enough for the backoff to reach its cap; still failing, still refusing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(matches!(
        *registry.store_health().borrow(),
        StoreHealth::Failing { .. }
    ));
    assert_unavailable(registry.put("a", spec(7)).await, "put, later");

    store.heal();
    wait_serving(&registry).await;
    let attempts = store.attempts()[before..].to_vec();
    assert!(
        attempts.len() > 8,
        "retried past the cap: {}",
        attempts.len()
    );
    assert_backoff(&attempts, attempts.len() - 1);
    let (a, revision) = registry.get("a").expect("get");
    assert_eq!(a.spec.expect("spec").consecutive_failures, Some(7));
    assert_eq!(a.r#override, pb::Override::Unspecified as i32);
    assert_eq!((a.mod_revision, revision), (2, 2));
    assert!(matches!(registry.get("new"), Err(Error::NotFound { .. })));
    let events = drain(&mut feed);
    assert_eq!(
        revisions(&events),
        [2],
        "no lost or duplicated event: {events:?}"
    );
    assert_eq!(revisions(&registry.events(1, 100).expect("log")), [1, 2]);
    drop(registry);

    // What was committed is what a restart finds.
    let loaded = store.load().expect("load");
    assert_eq!(loaded.revision, 2);
    assert_eq!(loaded.breakers.len(), 1);
    assert_eq!(
        loaded.breakers[0]
            .1
            .spec
            .expect("spec")
            .consecutive_failures,
        Some(7)
    );
}

#[tokio::test(start_paused = true)]
async fn a_trip_during_a_fault_is_not_served_until_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, store) = open(&dir);
    registry.put("t", spec(1)).await.expect("put t");
    registry.put("u", spec(1)).await.expect("put u");
    let mut feed = registry.subscribe().feed;
    store.fail(u32::MAX);

    // Durable breakers keep serving: an acquire changes nothing durable.
    let a = registry.acquire("t").await.expect("acquire t");
    assert!(a.acquired.allowed);
    let permit = a.acquired.permit.expect("permit");
    assert_unavailable(
        registry.report("t", permit, Outcome::Failure, None).await,
        "the report that trips t",
    );
    assert_unavailable(registry.acquire("t").await, "acquire of undurable t");
    let (t, _) = registry.get("t").expect("get t");
    assert_eq!(
        t.state,
        pb::State::Closed as i32,
        "the trip is not committed"
    );
    assert!(
        registry
            .acquire("u")
            .await
            .expect("acquire u")
            .acquired
            .allowed
    );
    assert!(drain(&mut feed).is_empty());

    store.heal();
    wait_serving(&registry).await;
    let (t, revision) = registry.get("t").expect("get t");
    assert_eq!(t.state, pb::State::Open as i32);
    assert_eq!((t.mod_revision, revision), (3, 3));
    let a = registry
        .acquire("t")
        .await
        .expect("acquire t after recovery");
    assert!(!a.acquired.allowed);
    assert_eq!(a.acquired.state, State::Open);
    let events = drain(&mut feed);
    assert_eq!(revisions(&events), [3], "{events:?}");
}

/// Puts `name`: one failure trips it, open for 20 ms (returned), one probe slot that
/// an unreported probe holds for an hour. Returns a permit acquired on it.
async fn one_probe_breaker(registry: &Registry, name: &str) -> (Duration, PermitToken) {
    let open_for = Duration::from_millis(20);
    let spec = Spec {
        consecutive_failures: Some(1),
        open_duration: open_for,
        half_open_permits: 1,
        permit_ttl: Duration::from_secs(3600),
        ..Spec::default()
    };
    registry.put(name, spec).await.expect("put");
    let permit = registry
        .acquire(name)
        .await
        .expect("acquire")
        .acquired
        .permit;
    (open_for, permit.expect("closed: a permit"))
}

/// Once the store recovers, `name`'s one probe slot is free: no refused call took it.
async fn assert_probe_slot_free_after_recovery(registry: &Registry, name: &str) {
    wait_serving(registry).await;
    let probe = registry
        .acquire(name)
        .await
        .expect("acquire after recovery");
    assert!(
        probe.acquired.allowed,
        "the probe slot was not taken by the refused acquire: {probe:?}"
    );
    assert_eq!(probe.acquired.state, State::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn traffic_on_an_undurable_breaker_is_refused_before_it_changes_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, store) = open(&dir);
    let (open_for, permit) = one_probe_breaker(&registry, "t").await;
    store.fail(u32::MAX);
    assert_unavailable(
        registry.report("t", permit, Outcome::Failure, None).await,
        "the trip",
    );
    // Let its open period pass, so that an acquire now would take the one half-open
    // probe slot.
    registry
        .clock()
        .advance(open_for + Duration::from_millis(10));
    assert_unavailable(
        registry.acquire("t").await,
        "acquire while OPEN is undurable",
    );

    store.heal();
    assert_probe_slot_free_after_recovery(&registry, "t").await;
}

#[tokio::test]
async fn a_timer_due_during_a_fault_is_refused_before_it_admits_a_probe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, store) = open(&dir);
    let (open_for, permit) = one_probe_breaker(&registry, "t").await;
    let tripped = registry
        .report("t", permit, Outcome::Failure, None)
        .await
        .expect("the trip is committed");
    assert_eq!(tripped.reported.state, State::Open);
    store.fail(u32::MAX);
    assert_unavailable(registry.put("u", spec(1)).await, "a put finds the fault");
    // This runtime has one thread and nothing yields between the clock's move and the
    // acquire, so the timer task cannot tick `t` first: the acquire finds the timer due.
    registry
        .clock()
        .advance(open_for + Duration::from_millis(10));
    assert_unavailable(
        registry.acquire("t").await,
        "the OPEN -> HALF_OPEN it would cause cannot be made durable",
    );

    store.heal();
    assert_probe_slot_free_after_recovery(&registry, "t").await;
}
