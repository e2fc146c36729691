//! What every [`Store`] must do, as tests each backend runs on a fresh, empty store
//! of its own (memory, sled, etcd): the same semantics behind one interface.

use std::sync::Arc;

use cbd_proto::v1 as pb;

use super::{Store, StoredBreaker, WriteBatch};
use crate::error::Error;

/// A batch moving the store from `expect` to `expect + names.len()`: one put and one
/// event per name, deleting `delete`, keeping events from `oldest` on.
pub(crate) fn batch(expect: u64, names: &[&str], delete: &[&str], oldest: u64) -> Arc<WriteBatch> {
    let mut b = WriteBatch {
        expect_revision: expect,
        deletes: delete.iter().map(|d| (*d).to_owned()).collect(),
        oldest_retained: oldest,
        ..Default::default()
    };
    for (i, name) in names.iter().enumerate() {
        let revision = expect + 1 + i as u64;
        b.puts.push((
            (*name).to_owned(),
            StoredBreaker {
                generation: revision,
                mod_revision: revision,
                ..Default::default()
            },
        ));
        b.events.push(pb::Event {
            revision,
            name: (*name).to_owned(),
            kind: pb::EventKind::SpecPut as i32,
            ..Default::default()
        });
    }
    b.revision = expect + names.len() as u64;
    Arc::new(b)
}

fn revisions(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

fn load(store: &Arc<dyn Store>) -> super::Loaded {
    store.load().expect("load")
}

/// An empty store loads at revision 0 with an empty log.
pub(crate) async fn empty_store_is_at_revision_zero(store: Arc<dyn Store>) {
    let loaded = load(&store);
    assert_eq!((loaded.revision, loaded.oldest_retained), (0, 1));
    assert!(loaded.breakers.is_empty());
    assert!(store.events(1, 10).await.expect("events").is_empty());
}

/// Batches apply in order; records come back in name order, deletes remove them,
/// compaction drops the events below `oldest_retained`, `events` honours `limit`.
pub(crate) async fn batches_apply_in_order_and_compaction_drops_old_events(store: Arc<dyn Store>) {
    for (expect, name) in [(0, "b"), (1, "a"), (2, "ab"), (3, "c")] {
        let committed = store
            .clone()
            .commit(batch(expect, &[name], &[], 1))
            .await
            .expect("commit");
        assert_eq!(committed.revision, expect + 1);
    }
    let committed = store
        .clone()
        .commit(batch(4, &["a"], &["c"], 3))
        .await
        .expect("commit");
    assert_eq!(committed.revision, 5);
    let loaded = load(&store);
    assert_eq!((loaded.revision, loaded.oldest_retained), (5, 3));
    let names: Vec<_> = loaded.breakers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "ab", "b"], "c deleted, the rest in name order");
    assert_eq!(loaded.breakers[0].1.mod_revision, 5, "a rewritten at 5");
    let events = store.clone().events(1, 10).await.expect("events");
    assert_eq!(revisions(&events), [3, 4, 5]);
    assert_eq!(events[2].name, "a");
    let events = store.clone().events(4, 1).await.expect("events");
    assert_eq!(revisions(&events), [4], "at most `limit`");
}

/// A commit expecting another revision is a conflict and applies nothing.
pub(crate) async fn a_stale_commit_is_refused_and_applies_nothing(store: Arc<dyn Store>) {
    store
        .clone()
        .commit(batch(0, &["a", "b"], &[], 1))
        .await
        .expect("commit");
    // A writer that still believes the store is at 1: its revision 2 is taken.
    let stale = store.clone().commit(batch(1, &["x"], &["a"], 1)).await;
    assert!(
        matches!(
            stale,
            Err(Error::StoreConflict {
                expected: 1,
                found: 2
            })
        ),
        "{stale:?}"
    );
    let loaded = load(&store);
    assert_eq!(loaded.revision, 2);
    let names: Vec<_> = loaded.breakers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let events = store.clone().events(1, 10).await.expect("events");
    assert_eq!(revisions(&events), [1, 2]);
    assert_eq!(events[1].name, "b", "revision 2 kept its event");
}

/// The retry of a batch that already landed is accepted (docs/DESIGN.md §6.3); a
/// different batch for the same revisions is not.
pub(crate) async fn the_retry_of_a_landed_batch_is_accepted(store: Arc<dyn Store>) {
    let first = batch(0, &["a"], &[], 1);
    store.clone().commit(first.clone()).await.expect("commit");
    let again = store.clone().commit(first).await.expect("retry");
    assert_eq!(again.revision, 1);
    let other = store.clone().commit(batch(0, &["z"], &[], 1)).await;
    assert!(
        matches!(other, Err(Error::StoreConflict { found: 1, .. })),
        "{other:?}"
    );
    assert_eq!(load(&store).breakers.len(), 1);
}

/// Many records (more than one page of a paged backend) load back, all of them.
pub(crate) async fn many_records_load_back(store: Arc<dyn Store>) {
    let names: Vec<String> = (0..1200).map(|i| format!("svc-{i:05}")).collect();
    let per_batch = store.max_batch().unwrap_or(usize::MAX).min(100) / 2;
    let mut revision = 0;
    for chunk in names.chunks(per_batch) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        revision = store
            .clone()
            .commit(batch(
                revision,
                &refs,
                &[],
                revision.saturating_sub(50).max(1),
            ))
            .await
            .expect("commit")
            .revision;
    }
    let loaded = load(&store);
    assert_eq!(loaded.revision, 1200);
    let got: Vec<_> = loaded.breakers.into_iter().map(|(n, _)| n).collect();
    assert_eq!(got, names);
}

/// Runs every conformance test, each on a fresh store from `fresh`.
/// `$fresh`: a future of `Option<(Arc<dyn Store>, guard)>`, the guard kept for the
/// test's length (a temp dir, an etcd process); `None`: skip (printed by `$fresh`).
macro_rules! store_conformance {
    ($fresh:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_empty_store_is_at_revision_zero() {
            let Some((store, _guard)) = $fresh.await else {
                return;
            };
            crate::store::conformance::empty_store_is_at_revision_zero(store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_batches_apply_in_order_and_compaction_drops_old_events() {
            let Some((store, _guard)) = $fresh.await else {
                return;
            };
            crate::store::conformance::batches_apply_in_order_and_compaction_drops_old_events(
                store,
            )
            .await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_a_stale_commit_is_refused_and_applies_nothing() {
            let Some((store, _guard)) = $fresh.await else {
                return;
            };
            crate::store::conformance::a_stale_commit_is_refused_and_applies_nothing(store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_the_retry_of_a_landed_batch_is_accepted() {
            let Some((store, _guard)) = $fresh.await else {
                return;
            };
            crate::store::conformance::the_retry_of_a_landed_batch_is_accepted(store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_many_records_load_back() {
            let Some((store, _guard)) = $fresh.await else {
                return;
            };
            crate::store::conformance::many_records_load_back(store).await;
        }
    };
}
pub(crate) use store_conformance;
