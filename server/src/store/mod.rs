//! Durable storage: breaker records, the event log and the revision counter.
//!
//! [`Store`] is the interface (docs/DESIGN.md §9): [`sled::SledStore`] is the default,
//! [`memory::MemoryStore`] serves tests, `etcd::EtcdStore` (feature `etcd`) keeps a
//! replicated cluster's state in etcd, [`faults::FaultStore`] wraps either to fail,
//! delay or stall commits. Only the registry's writer task commits, one batch at a
//! time, so a backend never sees concurrent commits (sled 0.34.7 deadlocks on
//! concurrent `flush_async`; see docs/DESIGN.md §6).

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod faults;
pub mod manifest;
pub mod memory;
pub mod record;
pub mod sled;

use std::sync::Arc;

use cbd_proto::v1 as pb;
use futures::future::BoxFuture;

pub use record::StoredBreaker;

use crate::error::Error;

/// What a store's asynchronous operations return (boxed, so `Store` stays
/// dyn-compatible; `'static`, so a backend may run the work on another thread).
pub type StoreFuture<T> = BoxFuture<'static, Result<T, Error>>;

/// What a store holds when the daemon starts.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every breaker, in name order.
    pub breakers: Vec<(String, StoredBreaker)>,
    /// The revision of the last committed change; 0 for an empty store.
    pub revision: u64,
    /// The oldest revision still in the event log; `revision + 1` when the log is empty.
    pub oldest_retained: u64,
}

/// One group commit: applied atomically and made durable before `commit` resolves.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// The revision the store must be at for this batch to apply (the `revision` of
    /// the batch before it): a conditional commit. Another writer having moved the
    /// store on is [`Error::StoreConflict`], and nothing is applied.
    pub expect_revision: u64,
    /// Records to create or replace.
    pub puts: Vec<(String, StoredBreaker)>,
    /// Records to remove.
    pub deletes: Vec<String>,
    /// Events to append, in revision order, with their revisions set
    /// (`expect_revision + 1` up to `revision`, one each).
    pub events: Vec<pb::Event>,
    /// The revision after this batch.
    pub revision: u64,
    /// Events below this revision are dropped from the log (compaction).
    pub oldest_retained: u64,
}

/// What a commit made durable, as the backend confirms it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The store's revision after the commit.
    pub revision: u64,
}

/// A durable home for breakers and their event log (docs/DESIGN.md §9).
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Reads everything back at start, before anything is served. Blocking.
    fn load(&self) -> Result<Loaded, Error>;
    /// Applies `batch` atomically, if the store is at `batch.expect_revision`, and
    /// makes it durable; resolves with what was committed. Never called concurrently.
    /// Retried with the very same batch after a failure, so a backend whose failed
    /// commit may still have landed (sled: the fdatasync failed after the write)
    /// also accepts a store already at `batch.revision` and applies it again.
    fn commit(self: Arc<Self>, batch: Arc<WriteBatch>) -> StoreFuture<Committed>;
    /// Up to `limit` logged events from revision `from` on, in revision order.
    /// Compacted revisions are simply absent: the caller checks for gaps.
    fn events(self: Arc<Self>, from: u64, limit: usize) -> StoreFuture<Vec<pb::Event>>;
    /// Bytes the store's files take on disk (`cbctl status`). `None`: it keeps
    /// nothing on disk. Reads file metadata, so a backend runs it off the workers.
    fn size_on_disk(self: Arc<Self>) -> StoreFuture<Option<u64>> {
        Box::pin(async { Ok(None) })
    }
    /// Most changes (puts, deletes and events together) one batch may carry: the
    /// writer splits larger ones. `None`: no limit (sled, memory). etcd's
    /// `--max-txn-ops` bounds a transaction, so the etcd store has one.
    fn max_batch(&self) -> Option<usize> {
        None
    }
}

/// The conditional part of a commit: `found` is the store's revision before it.
/// Accepts the expected revision; or, for the retry of a batch whose failed attempt
/// still landed (docs/DESIGN.md §6.3), a store at `batch.revision` whose event there
/// is this batch's last one (`landed` reads it). Anything else is another writer's.
pub fn check_expected(
    batch: &WriteBatch,
    found: u64,
    landed: impl FnOnce() -> Result<Option<pb::Event>, Error>,
) -> Result<(), Error> {
    if found == batch.expect_revision {
        return Ok(());
    }
    if found == batch.revision
        && batch.events.last().is_some()
        && landed()? == batch.events.last().cloned()
    {
        return Ok(());
    }
    Err(Error::StoreConflict {
        expected: batch.expect_revision,
        found,
    })
}
