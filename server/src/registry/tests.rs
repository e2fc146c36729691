//! The registry over an in-memory store, wrapped to inject faults into commits, on
//! paused tokio time and a manual clock: delete and revive, durability waits,
//! timers, storage failure and recovery, and watch subscriptions during a commit.
//! No real time passes in these tests except a bounded wait in one of them.

use std::{sync::Arc, time::Duration};

use cbd_breaker::{Outcome, Override, PermitToken, Spec, State};
use cbd_proto::v1 as pb;
use tokio::time::Instant;
use tonic::Code;

use super::{Registry, RegistryConfig, StoreHealth, writer};
use crate::{
    error::Error,
    metrics::Metrics,
    store::{
        Store,
        faults::{Fault, FaultStore, When},
        memory::MemoryStore,
    },
};

const ENOSPC: &str = "No space left on device (os error 28)";

fn enospc() -> Fault {
    Fault::Fail(ENOSPC.into())
}

/// A registry on `memory` behind a fault store (the returned handle).
fn open_on(memory: &Arc<MemoryStore>) -> (Registry, Arc<FaultStore>) {
    open_on_at(memory, crate::clock::now())
}

/// [`open_on`] with the manual clock starting at `start`.
fn open_on_at(
    memory: &Arc<MemoryStore>,
    start: cbd_breaker::Timestamp,
) -> (Registry, Arc<FaultStore>) {
    let store = FaultStore::wrap(memory.clone());
    let registry = Registry::open(
        store.clone(),
        RegistryConfig {
            max_breakers: 100,
            watch_retention: 1000,
            templates: Vec::new(),
            metrics: Metrics::new(100),
            // Timers move when a test moves this clock, never by themselves.
            clock: crate::clock::Clock::manual(start),
        },
    )
    .expect("open registry");
    (registry, store)
}

fn open() -> (Registry, Arc<FaultStore>) {
    open_on(&MemoryStore::new())
}

fn spec(consecutive_failures: u32) -> Spec {
    Spec {
        consecutive_failures: Some(consecutive_failures),
        ..Spec::default()
    }
}

/// The operator of a test's changes.
fn op() -> pb::Operator {
    pb::Operator {
        actor: "tester".into(),
        peer: "127.0.0.1:1".into(),
        reason: String::new(),
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
    let (registry, store) = open();
    let mut feed = registry.subscribe().feed;
    store.inject(When::Next(5), enospc());

    assert_unavailable(
        registry.put("a", spec(3), &op()).await,
        "put during the fault",
    );
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
    assert_eq!(revisions(&registry.events(1, 100).await.expect("log")), [1]);

    // Retrying the put the client saw fail is idempotent, and writes go on.
    let again = registry.put("a", spec(3), &op()).await.expect("retry");
    assert!(again.unchanged);
    let b = registry
        .put("b", spec(1), &op())
        .await
        .expect("put after recovery");
    assert_eq!(b.revision, 2);
    assert_eq!(revisions(&drain(&mut feed)), [2]);
}

#[tokio::test(start_paused = true)]
async fn a_closed_registry_stops_retrying_and_lets_go_of_its_tasks() {
    let (registry, store) = open();
    store.inject(When::Always, enospc());
    assert_unavailable(
        registry.put("a", spec(3), &op()).await,
        "put during the fault",
    );
    // The writer and the timers each hold the registry's shared state.
    assert!(Arc::strong_count(&registry.shared) > 1);

    registry.close();
    for _ in 0..1000 {
        if Arc::strong_count(&registry.shared) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        Arc::strong_count(&registry.shared),
        1,
        "the writer and the timers ended"
    );
    let attempts = store.attempts().len();
    tokio::time::sleep(writer::RETRY_MAX * 10).await;
    assert_eq!(store.attempts().len(), attempts, "no commit after close");
    assert!(matches!(registry.get("a"), Err(Error::NotFound { .. })));
}

#[tokio::test(start_paused = true)]
async fn during_a_fault_writes_are_refused_and_reads_show_only_what_is_committed() {
    let (registry, store) = open();
    registry.put("a", spec(3), &op()).await.expect("put");
    let mut feed = registry.subscribe().feed;
    store.inject(When::Always, enospc());
    let before = store.attempts().len();

    // Queued in the batch that fails: not acknowledged, not shown.
    assert_unavailable(registry.put("a", spec(7), &op()).await, "put");
    let (a, revision) = registry.get("a").expect("get");
    assert_eq!(a.spec.expect("spec").consecutive_failures, Some(3));
    assert_eq!((a.mod_revision, revision), (1, 1));
    let listed = registry.list("", 10, "").expect("list").breakers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].spec.expect("spec").consecutive_failures, Some(3));
    let (sub, records) = registry.subscribe_with_snapshot("");
    assert_eq!(sub.revision, 1);
    assert_eq!(
        records[0].1.spec.expect("spec").consecutive_failures,
        Some(3)
    );

    // Refused before they change anything.
    assert_unavailable(registry.put("new", spec(1), &op()).await, "create");
    assert_unavailable(
        registry
            .set_override("a", Some(Override::ForcedOpen), None, &op())
            .await,
        "override",
    );
    assert_unavailable(registry.delete("a", &op()).await, "delete");
    assert_unavailable(registry.reset("a", &op()).await, "reset");
    assert_eq!(registry.len(), 1, "nothing created during the fault");

    // Long enough for the backoff to reach its cap; still failing, still refusing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(matches!(
        *registry.store_health().borrow(),
        StoreHealth::Failing { .. }
    ));
    assert_unavailable(registry.put("a", spec(7), &op()).await, "put, later");

    store.clear();
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
    assert_eq!(
        revisions(&registry.events(1, 100).await.expect("log")),
        [1, 2]
    );
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
    let (registry, store) = open();
    registry.put("t", spec(1), &op()).await.expect("put t");
    registry.put("u", spec(1), &op()).await.expect("put u");
    let mut feed = registry.subscribe().feed;
    store.inject(When::Always, enospc());

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

    store.clear();
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
    registry.put(name, spec, &op()).await.expect("put");
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
    let (registry, store) = open();
    let (open_for, permit) = one_probe_breaker(&registry, "t").await;
    store.inject(When::Always, enospc());
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

    store.clear();
    assert_probe_slot_free_after_recovery(&registry, "t").await;
}

#[tokio::test]
async fn a_timer_due_during_a_fault_is_refused_before_it_admits_a_probe() {
    let (registry, store) = open();
    let (open_for, permit) = one_probe_breaker(&registry, "t").await;
    let tripped = registry
        .report("t", permit, Outcome::Failure, None)
        .await
        .expect("the trip is committed");
    assert_eq!(tripped.reported.state, State::Open);
    store.inject(When::Always, enospc());
    assert_unavailable(
        registry.put("u", spec(1), &op()).await,
        "a put finds the fault",
    );
    // This runtime has one thread and nothing yields between the clock's move and the
    // acquire, so the timer task cannot tick `t` first: the acquire finds the timer due.
    registry
        .clock()
        .advance(open_for + Duration::from_millis(10));
    assert_unavailable(
        registry.acquire("t").await,
        "the OPEN -> HALF_OPEN it would cause cannot be made durable",
    );

    store.clear();
    assert_probe_slot_free_after_recovery(&registry, "t").await;
}

fn kinds(events: &[pb::Event]) -> Vec<(u64, pb::EventKind)> {
    events.iter().map(|e| (e.revision, e.kind())).collect()
}

#[tokio::test(start_paused = true)]
async fn a_name_deleted_and_put_again_starts_above_every_generation_it_had() {
    let (registry, _store) = open();
    registry.put("d", spec(1), &op()).await.expect("put");
    let first = registry.acquire("d").await.expect("acquire").acquired;
    let second = registry.acquire("d").await.expect("acquire").acquired;
    let tripped = registry
        .report("d", first.permit.expect("permit"), Outcome::Failure, None)
        .await
        .expect("trip");
    assert_eq!(tripped.reported.state, State::Open);
    let before = tripped.reported.generation;

    registry.delete("d", &op()).await.expect("delete");
    assert!(matches!(registry.get("d"), Err(Error::NotFound { .. })));
    assert!(registry.is_empty(), "a committed delete drops the entry");
    assert!(matches!(
        registry
            .report("d", second.permit.expect("permit"), Outcome::Success, None)
            .await,
        Err(Error::PermitOfDeletedBreaker { .. })
    ));

    let again = registry.put("d", spec(1), &op()).await.expect("put again");
    assert!(again.created);
    assert_eq!(again.breaker.state, pb::State::Closed as i32);
    assert!(
        again.breaker.generation > before,
        "generation {} went back from {before}",
        again.breaker.generation
    );
    let stale = registry
        .report("d", second.permit.expect("permit"), Outcome::Failure, None)
        .await
        .expect("a permit of the old incarnation is answered");
    assert!(stale.reported.stale, "and counts nothing: {stale:?}");
    assert_eq!(stale.reported.state, State::Closed);
    assert_eq!(
        kinds(&registry.events(1, 100).await.expect("log")),
        [
            (1, pb::EventKind::SpecPut),
            (2, pb::EventKind::StateChanged),
            (3, pb::EventKind::Deleted),
            (4, pb::EventKind::SpecPut),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_put_while_its_delete_commits_revives_the_entry_with_a_newer_generation() {
    let memory = MemoryStore::new();
    let (registry, store) = open_on(&memory);
    let put = registry.put("d", spec(1), &op()).await.expect("put");
    let before = put.breaker.generation;
    store.inject(When::Nth(1), Fault::Stall);
    let deleting = tokio::spawn({
        let registry = registry.clone();
        async move { registry.delete("d", &op()).await }
    });
    store.stalled(1).await;
    let reviving = tokio::spawn({
        let registry = registry.clone();
        async move { registry.put("d", spec(2), &op()).await }
    });
    tokio::task::yield_now().await;
    store.release();
    // Answered with the revision current when it woke: the delete's or later.
    assert!(deleting.await.expect("task").expect("delete") >= 2);
    let revived = reviving.await.expect("task").expect("revive");
    assert!(!revived.created, "the deleted entry itself came back");
    assert!(revived.breaker.generation > before);
    let (d, _) = registry.get("d").expect("revived entry is in the map");
    assert_eq!(d.spec.expect("spec").consecutive_failures, Some(2));
    assert_eq!(registry.len(), 1);
    assert_eq!(memory.breakers("").len(), 1, "and in the store");
    assert_eq!(
        kinds(&registry.events(1, 100).await.expect("log")),
        [
            (1, pb::EventKind::SpecPut),
            (2, pb::EventKind::Deleted),
            (3, pb::EventKind::SpecPut),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_is_answered_only_after_its_commit_and_a_stall_keeps_it_waiting() {
    let memory = MemoryStore::new();
    let (registry, store) = open_on(&memory);
    registry.put("a", spec(3), &op()).await.expect("put");
    store.inject(When::Nth(1), Fault::Stall);
    let put = tokio::spawn({
        let registry = registry.clone();
        async move { registry.put("a", spec(5), &op()).await }
    });
    store.stalled(1).await;
    // An hour of paused time: nothing but the release lets the caller go.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(!put.is_finished(), "answered before its commit");
    assert_eq!((registry.revision(), memory.revision()), (1, 1));
    assert_eq!(
        registry
            .get("a")
            .expect("get")
            .0
            .spec
            .expect("spec")
            .consecutive_failures,
        Some(3),
        "readers see the committed spec meanwhile"
    );
    store.release();
    let answer = put.await.expect("task").expect("put");
    assert_eq!(answer.revision, 2);
    assert_eq!(memory.revision(), 2, "answered after the store has it");

    // A slow commit: the answer comes after exactly that delay.
    let slow = Duration::from_millis(250);
    store.inject(When::Nth(1), Fault::Delay(slow));
    let started = Instant::now();
    registry.put("a", spec(6), &op()).await.expect("put");
    assert!(started.elapsed() >= slow, "{:?}", started.elapsed());
    assert_eq!(memory.revision(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_half_opens_by_the_clock_and_an_unreported_probe_expires() {
    let (registry, _store) = open();
    let open_for = Duration::from_millis(20);
    let ttl = Duration::from_secs(2);
    let spec = Spec {
        consecutive_failures: Some(1),
        open_duration: open_for,
        half_open_permits: 1,
        permit_ttl: ttl,
        ..Spec::default()
    };
    registry.put("t", spec, &op()).await.expect("put");
    let permit = registry
        .acquire("t")
        .await
        .expect("acquire")
        .acquired
        .permit;
    registry
        .report("t", permit.expect("permit"), Outcome::Failure, None)
        .await
        .expect("trip");
    let mut feed = registry.subscribe().feed;

    // The timer task sleeps in (paused) tokio time and reads the manual clock.
    registry.clock().advance(open_for);
    tokio::time::sleep(open_for * 2).await;
    assert_eq!(
        registry.get("t").expect("get").0.state,
        pb::State::HalfOpen as i32
    );
    let probe = registry.acquire("t").await.expect("probe").acquired;
    assert!(probe.allowed && probe.state == State::HalfOpen);
    assert!(
        !registry
            .acquire("t")
            .await
            .expect("acquire")
            .acquired
            .allowed,
        "one slot"
    );

    // Unreported past its permit_ttl: counted as a failure, back to OPEN.
    registry.clock().advance(ttl);
    tokio::time::sleep(ttl * 2).await;
    let (t, _) = registry.get("t").expect("get");
    assert_eq!(t.state, pb::State::Open as i32);
    assert_eq!(t.backoff_level, 1);
    let late = registry
        .report("t", probe.permit.expect("permit"), Outcome::Success, None)
        .await
        .expect("late report");
    assert!(
        late.reported.stale,
        "the expired probe's report counts nothing"
    );
    let events = drain(&mut feed);
    let moves: Vec<_> = events
        .iter()
        .map(|e| (e.previous_state(), e.state()))
        .collect();
    assert_eq!(
        moves,
        [
            (pb::State::Open, pb::State::HalfOpen),
            (pb::State::HalfOpen, pb::State::Open)
        ],
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_commit_that_landed_before_failing_is_retried_without_skipping_or_reusing_a_revision() {
    let memory = MemoryStore::new();
    let (registry, store) = open_on(&memory);
    registry.put("a", spec(1), &op()).await.expect("put a");
    let mut feed = registry.subscribe().feed;
    store.inject(When::Nth(1), Fault::FailAfterApply(ENOSPC.into()));

    assert_unavailable(
        registry.put("b", spec(1), &op()).await,
        "the put whose fsync fails",
    );
    assert_eq!(memory.revision(), 2, "the batch reached the store");
    assert_eq!(registry.revision(), 1, "but is not acknowledged");
    assert!(matches!(registry.get("b"), Err(Error::NotFound { .. })));
    assert_unavailable(registry.put("c", spec(1), &op()).await, "operator write");
    assert_eq!(
        *registry.store_health().borrow(),
        StoreHealth::Failing {
            cause: format!("storage error: {ENOSPC}")
        }
    );

    wait_serving(&registry).await;
    assert_eq!(store.attempts().len(), 3, "a, b, then b's retry");
    assert_eq!(registry.get("b").expect("b").0.mod_revision, 2);
    assert_eq!(
        registry
            .put("c", spec(1), &op())
            .await
            .expect("put c")
            .revision,
        3
    );
    assert_eq!(
        revisions(&registry.events(1, 100).await.expect("log")),
        [1, 2, 3]
    );
    assert_eq!(revisions(&drain(&mut feed)), [2, 3]);
    drop(registry);

    let (restarted, _) = open_on(&memory);
    assert_eq!(restarted.revision(), 3);
    assert_eq!(restarted.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_second_writer_behind_the_store_is_refused_and_applies_nothing() {
    let memory = MemoryStore::new();
    let (first, _) = open_on(&memory);
    // Opened at revision 0: its batches expect the store there.
    let (second, _) = open_on(&memory);
    first.put("a", spec(1), &op()).await.expect("put");
    let refused = second.put("b", spec(1), &op()).await;
    let status = tonic::Status::from(refused.expect_err("a conflicting commit"));
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("another writer"), "{status:?}");
    assert!(matches!(
        *second.store_health().borrow(),
        StoreHealth::Failing { .. }
    ));
    let names: Vec<_> = memory.breakers("").into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a"]);
    assert_eq!(memory.revision(), 1);
    assert_eq!(
        first.events(1, 10).await.expect("log")[0].name,
        "a",
        "revision 1 is the first writer's"
    );
}

#[test]
fn a_snapshot_during_a_stalled_commit_returns_at_once_without_it_and_the_feed_brings_it() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (registry, store) = runtime.block_on(async {
        let (registry, store) = open();
        registry.put("a", spec(3), &op()).await.expect("put");
        store.inject(When::Nth(1), Fault::Stall);
        (registry, store)
    });
    let put = runtime.spawn({
        let registry = registry.clone();
        async move { registry.put("a", spec(7), &op()).await }
    });
    runtime.block_on(store.stalled(1));

    // From another thread, with a bound, so that a subscription blocked behind the
    // commit fails the test instead of hanging it. A correct one returns at once.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn({
        let registry = registry.clone();
        move || {
            let _ = tx.send(registry.subscribe_with_snapshot(""));
        }
    });
    let (mut sub, records) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the snapshot waits for no commit");
    assert_eq!(sub.revision, 1);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].1.spec.expect("spec").consecutive_failures,
        Some(3)
    );
    assert!(
        sub.feed.try_recv().is_err(),
        "nothing uncommitted on the feed"
    );

    store.release();
    runtime.block_on(async {
        assert_eq!(put.await.expect("task").expect("put").revision, 2);
        let event = sub
            .feed
            .recv()
            .await
            .expect("the stalled change, once committed");
        assert_eq!(event.revision, 2);
        assert_eq!(event.spec.expect("spec").consecutive_failures, Some(7));
        assert!(sub.feed.try_recv().is_err(), "delivered once");
        let (after, records) = registry.subscribe_with_snapshot("");
        assert_eq!(after.revision, 2);
        assert_eq!(records[0].1.mod_revision, 2);
    });
}

#[tokio::test(start_paused = true)]
async fn a_put_holding_an_entry_forgotten_after_its_delete_looks_the_name_up_again() {
    let memory = MemoryStore::new();
    let (registry, _store) = open_on(&memory);
    registry.put("d", spec(1), &op()).await.expect("put");
    // What a racing put looked up before the writer dropped the committed delete.
    let stale = registry.shared.lookup("d").expect("entry");
    registry.delete("d", &op()).await.expect("delete");
    assert!(
        registry.is_empty(),
        "the committed delete dropped the entry"
    );
    let put = registry.put_into(&stale, false, &spec(2), &op()).await;
    assert!(
        put.expect("no error").is_none(),
        "the forgotten entry is not revived"
    );
    assert!(memory.breakers("").is_empty(), "and wrote nothing");
    let put = registry.put("d", spec(2), &op()).await.expect("put again");
    assert!(put.created);
    assert!(registry.get("d").is_ok());
    assert_eq!(memory.breakers("").len(), 1);
}

#[test]
fn a_put_racing_a_committed_delete_never_leaves_a_stored_breaker_unserved() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let memory = MemoryStore::new();
    let (registry, _store) = runtime.block_on(async { open_on(&memory) });
    // The race is narrow (a put's lookup against the writer dropping the entry):
    // many rounds, each checking the invariant; about a second in all.
    for round in 0..3000 {
        runtime.block_on(async {
            registry.put("d", spec(1), &op()).await.expect("put");
            let deleting = tokio::spawn({
                let registry = registry.clone();
                async move { registry.delete("d", &op()).await }
            });
            let putting = tokio::spawn({
                let registry = registry.clone();
                async move {
                    // Until the put lands after the delete (an identical spec before
                    // it is unchanged; this one differs, so it is a change either way).
                    registry.put("d", spec(2), &op()).await
                }
            });
            deleting.await.expect("task").expect("delete");
            putting.await.expect("task").expect("put");
            registry.sync().await.expect("sync");
            let served = registry.get("d").is_ok();
            let stored = !memory.breakers("d").is_empty();
            assert_eq!(
                served, stored,
                "round {round}: served {served}, stored {stored}"
            );
            if served {
                registry.delete("d", &op()).await.expect("clean up");
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn list_pages_walk_a_prefix_in_name_order_and_skip_deleted_breakers() {
    let (registry, _store) = open();
    let mut expected = Vec::new();
    for i in 0..40 {
        let name = format!("svc/{i}");
        registry.put(&name, spec(3), &op()).await.expect("put");
        registry
            .put(&format!("other/{i}"), spec(3), &op())
            .await
            .expect("put");
        expected.push(name);
    }
    registry.delete("svc/17", &op()).await.expect("delete");
    expected.retain(|n| n != "svc/17");
    expected.sort();
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = registry.list("svc/", 7, &token).expect("list");
        assert!(page.breakers.len() <= 7);
        listed.extend(page.breakers.into_iter().map(|b| b.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(listed, expected);
    // An exact page leaves no token behind it.
    let page = registry.list("svc/", 39, "").expect("list");
    assert_eq!(page.breakers.len(), 39);
    assert!(page.next_page_token.is_empty());
    let (_, records) = registry.subscribe_with_snapshot("svc/");
    let names: Vec<String> = records.into_iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, expected, "snapshots come in name order too");
}

#[tokio::test(start_paused = true)]
async fn an_override_for_a_duration_clears_itself_on_the_timer_with_its_own_event() {
    let (registry, _store) = open();
    registry.put("o", spec(3), &op()).await.expect("put");
    let alice = pb::Operator {
        actor: "alice".into(),
        peer: "127.0.0.1:4242".into(),
        reason: "INC-123".into(),
    };
    let lasts = Duration::from_secs(2);
    let (set, _) = registry
        .set_override("o", Some(Override::ForcedOpen), Some(lasts), &alice)
        .await
        .expect("force open");
    assert_eq!(set.override_operator.as_ref(), Some(&alice));
    let until = set.override_until.expect("an expiry");
    assert!(
        !registry
            .acquire("o")
            .await
            .expect("acquire")
            .acquired
            .allowed
    );
    let mut feed = registry.subscribe().feed;

    // The timer task sleeps in (paused) tokio time and reads the manual clock.
    registry.clock().advance(lasts);
    tokio::time::sleep(lasts * 2).await;
    let (o, _) = registry.get("o").expect("get");
    assert_eq!(o.r#override(), pb::Override::Unspecified);
    assert_eq!((o.override_operator, o.override_until), (None, None));
    assert!(
        registry
            .acquire("o")
            .await
            .expect("acquire")
            .acquired
            .allowed
    );
    let expired = drain(&mut feed);
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0].kind(), pb::EventKind::OverrideExpired);
    assert_eq!(expired[0].operator, None, "a timer, not an operator");
    assert_eq!(expired[0].reason, "FORCED_OPEN override expired");

    let log = registry.events(1, 100).await.expect("log");
    let set_event = log
        .iter()
        .find(|e| e.kind() == pb::EventKind::OverrideSet)
        .expect("logged");
    assert_eq!(set_event.operator.as_ref(), Some(&alice));
    assert_eq!(set_event.override_until, Some(until));
}

#[tokio::test(start_paused = true)]
async fn the_override_operator_and_expiry_survive_a_restart() {
    let memory = MemoryStore::new();
    let alice = pb::Operator {
        actor: "alice".into(),
        peer: String::new(),
        reason: "maintenance".into(),
    };
    {
        let (registry, _store) = open_on(&memory);
        registry.put("o", spec(3), &op()).await.expect("put");
        registry
            .set_override(
                "o",
                Some(Override::Disabled),
                Some(Duration::from_secs(60)),
                &alice,
            )
            .await
            .expect("disable");
    }
    let (registry, _store) = open_on(&memory);
    let (o, _) = registry.get("o").expect("get");
    assert_eq!(o.r#override(), pb::Override::Disabled);
    assert_eq!(o.override_operator, Some(alice));
    assert!(o.override_until.is_some());
}

#[tokio::test(start_paused = true)]
async fn an_override_that_ran_out_while_down_clears_at_the_start() {
    let memory = MemoryStore::new();
    let start = crate::clock::now();
    {
        let (registry, _store) = open_on_at(&memory, start);
        registry.put("o", spec(3), &op()).await.expect("put");
        registry
            .set_override(
                "o",
                Some(Override::ForcedOpen),
                Some(Duration::from_secs(60)),
                &op(),
            )
            .await
            .expect("force open");
    }
    let (registry, _store) = open_on_at(&memory, start.saturating_add(Duration::from_secs(61)));
    // Cleared by the recovery tick, with its own event, once the writer committed it
    // (reads show what is committed).
    let history = eventually_history(&registry, "o", 3).await;
    assert_eq!(
        history.last().map(pb::Event::kind),
        Some(pb::EventKind::OverrideExpired)
    );
    let (o, _) = registry.get("o").expect("get");
    assert_eq!(o.r#override(), pb::Override::Unspecified);
    assert_eq!((o.override_operator, o.override_until), (None, None));
}

/// `name`'s logged events, once there are `n` (paused time: each wait lets the
/// writer run).
async fn eventually_history(registry: &Registry, name: &str, n: usize) -> Vec<pb::Event> {
    for _ in 0..100 {
        let h = registry.history(name, None, 100, 0).await.expect("history");
        if h.events.len() >= n {
            return h.events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name}: fewer than {n} events logged");
}

#[tokio::test(start_paused = true)]
async fn history_shows_one_breakers_events_with_operators_in_pages() {
    let (registry, _store) = open();
    registry.put("h", spec(1), &op()).await.expect("put");
    registry.put("other", spec(1), &op()).await.expect("put");
    let permit = registry
        .acquire("h")
        .await
        .expect("acquire")
        .acquired
        .permit;
    registry
        .report("h", permit.expect("permit"), Outcome::Failure, None)
        .await
        .expect("trip");
    let bob = pb::Operator {
        actor: "bob".into(),
        peer: "127.0.0.1:9".into(),
        reason: "INC-7".into(),
    };
    registry.reset("h", &bob).await.expect("reset");
    registry.put("other", spec(2), &op()).await.expect("put");

    let all = registry.history("h", None, 100, 0).await.expect("history");
    let kinds: Vec<_> = all.events.iter().map(pb::Event::kind).collect();
    assert_eq!(
        kinds,
        [
            pb::EventKind::SpecPut,
            pb::EventKind::StateChanged,
            pb::EventKind::Reset
        ]
    );
    assert!(all.events.iter().all(|e| e.name == "h"));
    assert_eq!(all.events[1].operator, None, "the trip is the machine's");
    assert_eq!(all.events[2].operator.as_ref(), Some(&bob));
    assert_eq!(all.next_page_token, "");

    let first = registry.history("h", None, 2, 0).await.expect("page 1");
    assert_eq!(first.events.len(), 2);
    let after: u64 = first.next_page_token.parse().expect("a revision");
    let second = registry.history("h", None, 2, after).await.expect("page 2");
    assert_eq!(second.events.len(), 1);
    assert_eq!(second.events[0].kind(), pb::EventKind::Reset);
    assert_eq!(second.next_page_token, "");

    // `since` is inclusive, on the registry's clock.
    registry.clock().advance(Duration::from_secs(10));
    let later = registry.clock().now();
    registry.reset("h", &bob).await.expect("reset");
    let since = registry
        .history("h", Some(later), 100, 0)
        .await
        .expect("since");
    assert_eq!(since.events.len(), 1);
    assert_eq!(since.events[0].kind(), pb::EventKind::Reset);
}

#[tokio::test(start_paused = true)]
async fn a_trip_is_on_the_changes_feed_at_once_while_its_commit_stalls() {
    let memory = MemoryStore::new();
    let (registry, store) = open_on(&memory);
    registry.put("t", spec(1), &op()).await.expect("put");
    let mut changes = registry.changes();
    let mut committed = registry.subscribe().feed;
    let revision = registry.revision();
    store.inject(When::Nth(1), Fault::Stall);
    let permit = registry
        .acquire("t")
        .await
        .expect("acquire")
        .acquired
        .permit
        .expect("closed: a permit");
    let tripping = tokio::spawn({
        let registry = registry.clone();
        async move { registry.report("t", permit, Outcome::Failure, None).await }
    });
    store.stalled(1).await;
    // Paused time: the timeout fires at once if the change never came.
    let change = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("the trip, before its commit")
        .expect("not lagged");
    assert_eq!(&*change.name, "t");
    assert_eq!(change.kind, pb::EventKind::StateChanged as i32);
    assert_eq!(change.state, pb::State::Open as i32);
    assert!(!tripping.is_finished(), "the report waits for the commit");
    assert_eq!(registry.revision(), revision, "nothing committed");
    assert!(
        committed.try_recv().is_err(),
        "the committed feed has nothing yet"
    );

    store.release();
    let reported = tripping.await.expect("task").expect("report");
    assert_eq!(reported.reported.state, State::Open);
    let event = committed.recv().await.expect("the committed event follows");
    assert_eq!(
        (event.name.as_str(), event.state, event.generation),
        ("t", change.state, change.generation),
        "the same change"
    );
    assert!(changes.try_recv().is_err(), "one change, signalled once");
}

#[tokio::test(start_paused = true)]
async fn operator_changes_and_deletes_are_on_the_changes_feed_and_plain_traffic_is_not() {
    let (registry, _store) = open();
    registry.put("o", spec(3), &op()).await.expect("put");
    let mut changes = registry.changes();
    let a = registry.acquire("o").await.expect("acquire");
    let permit = a.acquired.permit.expect("permit");
    registry
        .report("o", permit, Outcome::Success, None)
        .await
        .expect("report");
    assert!(
        changes.try_recv().is_err(),
        "a decision and a report change nothing"
    );
    registry
        .set_override("o", Some(Override::ForcedOpen), None, &op())
        .await
        .expect("force open");
    registry.put("o", spec(4), &op()).await.expect("spec put");
    registry.delete("o", &op()).await.expect("delete");
    let kinds: Vec<i32> = std::iter::from_fn(|| changes.try_recv().ok())
        .map(|c| c.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            pb::EventKind::OverrideSet as i32,
            pb::EventKind::SpecPut as i32,
            pb::EventKind::Deleted as i32,
        ]
    );
}

#[tokio::test]
async fn leases_held_visits_only_breakers_with_live_leases() {
    let (registry, _store) = open();
    let leasable = Spec {
        cache_ttl: Some(Duration::from_secs(10)),
        ..Spec::default()
    };
    for i in 0..50 {
        registry
            .put(&format!("plain/{i}"), Spec::default(), &op())
            .await
            .expect("put");
    }
    for name in ["a", "b"] {
        registry
            .put(name, leasable.clone(), &op())
            .await
            .expect("put");
        registry.lease(name).await.expect("lease");
    }
    // A breaker without cache_ttl is refused a lease and never tracked.
    registry
        .lease("plain/0")
        .await
        .expect("refused, not an error");
    assert_eq!(registry.leases_held(), 2);
    assert_eq!(
        registry.leased_breakers(),
        2,
        "not the 50 unleased breakers"
    );

    registry.delete("b", &op()).await.expect("delete");
    assert_eq!(registry.leases_held(), 1);
    assert_eq!(
        registry.leased_breakers(),
        1,
        "a deleted breaker leaves the set"
    );

    // Past its term the lease no longer counts; past its report grace it is forgotten.
    registry.clock().advance(Duration::from_secs(11));
    assert_eq!(registry.leases_held(), 0);
    assert_eq!(registry.leased_breakers(), 1, "outcomes may still come");
    registry.clock().advance(super::leases::REPORT_GRACE);
    assert_eq!(registry.leases_held(), 0);
    assert_eq!(registry.leased_breakers(), 0);
    // A new grant brings it back.
    registry.lease("a").await.expect("lease again");
    assert_eq!((registry.leases_held(), registry.leased_breakers()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_writer_splits_batches_to_the_stores_bound_keeping_every_revision() {
    let memory = MemoryStore::new();
    let (registry, store) = open_on(&memory);
    // As the etcd store would advertise: at most 5 changes per commit.
    store.set_max_batch(5);
    registry.put("first", spec(1), &op()).await.expect("put");
    // While a commit stalls, 9 breakers change: each an event and a put, 18 changes.
    store.inject(When::Nth(1), Fault::Stall);
    let stalled = tokio::spawn({
        let registry = registry.clone();
        async move { registry.put("stall", spec(1), &op()).await }
    });
    store.stalled(1).await;
    let puts: Vec<_> = (0..9)
        .map(|i| {
            let registry = registry.clone();
            tokio::spawn(async move { registry.put(&format!("b{i}"), spec(1), &op()).await })
        })
        .collect();
    tokio::task::yield_now().await;
    store.release();
    stalled.await.expect("task").expect("put");
    for put in puts {
        put.await.expect("task").expect("put");
    }
    let changes = store.batch_changes();
    assert!(
        changes.iter().all(|&c| c <= 5),
        "every batch within the bound: {changes:?}"
    );
    // The stalled commit and then 9 entries of 2 changes, 2 per batch: 5 more.
    assert!(
        changes.len() >= 2 + 5,
        "the 18 changes were split: {changes:?}"
    );
    assert_eq!(memory.revision(), 11);
    let revisions: Vec<u64> = registry
        .events(1, 100)
        .await
        .expect("log")
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(
        revisions,
        (1..=11).collect::<Vec<_>>(),
        "none skipped or reused"
    );
    assert_eq!(memory.breakers("b").len(), 9);
}

fn interest(prefix: &str, names: &[&str]) -> super::Interest {
    super::Interest {
        prefix: prefix.into(),
        names: names.iter().map(|n| (*n).to_owned()).collect(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_names_snapshot_holds_the_listed_names_and_the_prefix_in_name_order() {
    let (registry, _store) = open();
    for name in ["svc/b", "svc/a", "other/x", "other/y", "zed"] {
        registry.put(name, spec(3), &op()).await.expect("put");
    }
    let snapshot_names = |i: &super::Interest| -> Vec<String> {
        let (_, records) = registry.watch_with_snapshot(i);
        records.into_iter().map(|(n, _)| n.to_string()).collect()
    };
    assert_eq!(
        snapshot_names(&interest("", &["zed", "other/x", "missing"])),
        ["other/x", "zed"]
    );
    assert_eq!(
        snapshot_names(&interest("svc/", &["zed", "svc/a"])),
        ["svc/a", "svc/b", "zed"],
        "a name also under the prefix appears once"
    );
    assert_eq!(snapshot_names(&interest("svc/", &[])), ["svc/a", "svc/b"]);
    assert_eq!(snapshot_names(&interest("", &[])).len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_watch_feed_gets_only_the_committed_events_it_matches() {
    let (registry, _store) = open();
    registry.put("a", spec(3), &op()).await.expect("put");
    let (sub, _) = registry.watch_with_snapshot(&interest("", &["a"]));
    let mut feed = sub.feed;
    let mut all = registry.watch(&interest("", &[])).feed;
    registry.put("b", spec(3), &op()).await.expect("put");
    let revision = registry
        .put("a", spec(4), &op())
        .await
        .expect("put")
        .revision;
    let event = feed.recv().await.expect("a's event");
    assert_eq!((event.name.as_str(), event.revision), ("a", revision));
    assert_eq!(feed.progress(), Some(revision), "nothing else queued");
    let names: Vec<String> = [all.recv().await, all.recv().await]
        .into_iter()
        .map(|e| e.expect("event").name.clone())
        .collect();
    assert_eq!(names, ["b", "a"]);
}
