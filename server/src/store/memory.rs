//! A store in memory, for tests: the same semantics as sled (an atomic batch, the
//! conditional commit, the event log with compaction, breakers in name order) and
//! no durability at all. A test "restarts" by opening a new registry on the same
//! `Arc<MemoryStore>`.

use std::{collections::BTreeMap, sync::Arc};

use cbd_proto::v1 as pb;
use parking_lot::Mutex;

use super::{Committed, Loaded, Store, StoreFuture, StoredBreaker, WriteBatch, check_expected};
use crate::error::Error;

/// Breakers, events and the revision behind one lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    breakers: BTreeMap<String, StoredBreaker>,
    events: BTreeMap<u64, pb::Event>,
    revision: u64,
    /// `None`: nothing committed yet, so the log starts at `revision + 1`.
    oldest_retained: Option<u64>,
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Committed records whose names start with `prefix`, in name order.
    pub fn breakers(&self, prefix: &str) -> Vec<(String, StoredBreaker)> {
        self.held
            .lock()
            .breakers
            .range(prefix.to_owned()..)
            .take_while(|(name, _)| name.starts_with(prefix))
            .map(|(name, record)| (name.clone(), record.clone()))
            .collect()
    }

    /// The revision of the last commit.
    pub fn revision(&self) -> u64 {
        self.held.lock().revision
    }

    fn apply(&self, batch: &WriteBatch) -> Result<Committed, Error> {
        let mut held = self.held.lock();
        check_expected(batch, held.revision, || {
            Ok(held.events.get(&batch.revision).cloned())
        })?;
        for (name, record) in &batch.puts {
            held.breakers.insert(name.clone(), record.clone());
        }
        for name in &batch.deletes {
            held.breakers.remove(name);
        }
        for event in &batch.events {
            held.events.insert(event.revision, event.clone());
        }
        held.events = held.events.split_off(&batch.oldest_retained);
        held.revision = batch.revision;
        held.oldest_retained = Some(batch.oldest_retained);
        Ok(Committed {
            revision: batch.revision,
        })
    }
}

impl Store for MemoryStore {
    fn load(&self) -> Result<Loaded, Error> {
        let held = self.held.lock();
        Ok(Loaded {
            breakers: held
                .breakers
                .iter()
                .map(|(name, record)| (name.clone(), record.clone()))
                .collect(),
            revision: held.revision,
            oldest_retained: held.oldest_retained.unwrap_or(held.revision + 1),
        })
    }

    fn commit(self: Arc<Self>, batch: Arc<WriteBatch>) -> StoreFuture<Committed> {
        Box::pin(async move { self.apply(&batch) })
    }

    fn events(self: Arc<Self>, from: u64, limit: usize) -> StoreFuture<Vec<pb::Event>> {
        let events = self
            .held
            .lock()
            .events
            .range(from..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect();
        Box::pin(async move { Ok(events) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::store::conformance::store_conformance!(async {
        Some((MemoryStore::new() as Arc<dyn Store>, ()))
    });

    fn batch(expect: u64, name: &str, delete: &[&str], oldest: u64) -> Arc<WriteBatch> {
        let revision = expect + 1;
        Arc::new(WriteBatch {
            expect_revision: expect,
            puts: vec![(
                name.into(),
                StoredBreaker {
                    mod_revision: revision,
                    ..Default::default()
                },
            )],
            deletes: delete.iter().map(|d| (*d).to_owned()).collect(),
            events: vec![pb::Event {
                revision,
                name: name.into(),
                ..Default::default()
            }],
            revision,
            oldest_retained: oldest,
        })
    }

    fn revisions(events: &[pb::Event]) -> Vec<u64> {
        events.iter().map(|e| e.revision).collect()
    }

    #[tokio::test]
    async fn batches_apply_in_order_and_compaction_drops_old_events() {
        let store = MemoryStore::new();
        for (expect, name) in [(0, "b"), (1, "a"), (2, "ab"), (3, "c")] {
            store
                .clone()
                .commit(batch(expect, name, &[], 1))
                .await
                .expect("commit");
        }
        let committed = store
            .clone()
            .commit(batch(4, "a", &["c"], 3))
            .await
            .expect("commit");
        assert_eq!(committed.revision, 5);
        let names: Vec<_> = store.breakers("a").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "ab"], "by prefix, in name order");
        let loaded = store.load().expect("load");
        assert_eq!((loaded.revision, loaded.oldest_retained), (5, 3));
        assert_eq!(loaded.breakers.len(), 3, "c deleted");
        let events = store.clone().events(1, 10).await.expect("events");
        assert_eq!(revisions(&events), [3, 4, 5]);
        let events = store.clone().events(4, 1).await.expect("events");
        assert_eq!(revisions(&events), [4], "at most `limit`");
    }

    #[tokio::test]
    async fn a_commit_expecting_another_revision_is_refused_and_applies_nothing() {
        let store = MemoryStore::new();
        store
            .clone()
            .commit(batch(0, "a", &[], 1))
            .await
            .expect("commit");
        store
            .clone()
            .commit(batch(1, "b", &[], 1))
            .await
            .expect("commit");
        // A writer that still believes the store is at 0: its revision 1 is taken.
        let stale = store.clone().commit(batch(0, "x", &["a"], 1)).await;
        assert!(
            matches!(
                stale,
                Err(Error::StoreConflict {
                    expected: 0,
                    found: 2
                })
            ),
            "{stale:?}"
        );
        assert_eq!(store.revision(), 2);
        let names: Vec<_> = store.breakers("").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b"]);
        let events = store.clone().events(1, 10).await.expect("events");
        assert_eq!(revisions(&events), [1, 2]);
        assert_eq!(events[0].name, "a", "revision 1 kept its event");
    }
}
