//! Durable storage: breaker records, the event log and the revision counter.
//!
//! [`Store`] is the interface (docs/DESIGN.md §9: sled is the first backend, etcd may follow);
//! [`sled::SledStore`] implements it. Only the registry's writer task commits, so a
//! backend never sees concurrent commits (sled 0.34.7 deadlocks on concurrent
//! `flush_async`; see docs/DESIGN.md §6).

pub mod manifest;
pub mod record;
pub mod sled;

use cbd_proto::v1 as pb;

pub use record::StoredBreaker;

use crate::error::Error;

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

/// One group commit: applied atomically and made durable before `commit` returns.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Records to create or replace.
    pub puts: Vec<(String, StoredBreaker)>,
    /// Records to remove.
    pub deletes: Vec<String>,
    /// Events to append, in revision order, with their revisions set.
    pub events: Vec<pb::Event>,
    /// The revision after this batch.
    pub revision: u64,
    /// Events below this revision are dropped from the log (compaction).
    pub oldest_retained: u64,
}

/// A durable home for breakers and their event log.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Reads everything back after a start.
    fn load(&self) -> Result<Loaded, Error>;
    /// Applies `batch` atomically and flushes it to disk. Blocking: call it from a
    /// blocking thread. Never called concurrently.
    fn commit(&self, batch: &WriteBatch) -> Result<(), Error>;
    /// Logged events with `from <= revision <= to`, in revision order.
    fn events(&self, from: u64, to: u64) -> Result<Vec<pb::Event>, Error>;
    /// Committed breaker records whose names start with `prefix`, in name order.
    fn breakers(&self, prefix: &str) -> Result<Vec<(String, StoredBreaker)>, Error>;
}
