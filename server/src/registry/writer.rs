//! The one writer (docs/DESIGN.md §6): drains the entries that changed, gives their events
//! revisions in order, commits record + events + revision as one conditional batch
//! (group commit; the store does its blocking work off the Tokio workers), awaits it
//! holding no lock, then publishes the events to watchers and wakes the callers
//! waiting for durability. Nothing else commits, and one commit runs at a time.
//!
//! A failed commit is retried, the very same batch, with exponential backoff until
//! it succeeds: its revisions are already handed out, so retrying it as built keeps
//! them neither skipped nor reused. New changes wait in the channel meanwhile and go
//! into the next batch, after this one.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{Shared, entry::Entry};
use crate::{
    error::Error,
    store::{StoredBreaker, WriteBatch},
};

/// Most entries drained into one batch; bounds the batch and its latency.
const MAX_ENTRIES_PER_BATCH: usize = 4096;

/// Wait before the first retry of a failed commit; doubles on every failure.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(10);
/// Longest wait between two retries.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(1);

/// The latest group commit, for `cbctl status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastCommit {
    /// When the store confirmed it, on the registry's clock.
    pub committed_at: cbd_breaker::Timestamp,
    /// How long the successful attempt took (flush and fdatasyncs included).
    pub duration: Duration,
    /// Events it wrote.
    pub events: usize,
    /// The store's revision after it.
    pub revision: u64,
}

/// A batch as laid out, with what its commit makes durable.
#[derive(Debug)]
pub(crate) struct Built {
    pub batch: Arc<WriteBatch>,
    pub drained: Vec<Drained>,
}

/// One entry in a batch.
#[derive(Debug)]
pub(crate) struct Drained {
    pub entry: Arc<Entry>,
    /// The entry's change sequence the batch covers.
    pub seq: u64,
    /// The record the batch writes; `None`: the batch deletes it.
    pub record: Option<Arc<StoredBreaker>>,
}

/// Runs until every sender of `dirty` is gone, committing what is pending; or until
/// the registry is closed, when what is not committed is dropped unacknowledged.
pub(crate) async fn run(shared: Arc<Shared>, mut dirty: mpsc::UnboundedReceiver<Arc<Entry>>) {
    let mut entries = Vec::new();
    let mut closed = shared.closed.subscribe();
    loop {
        let received = tokio::select! {
            n = dirty.recv_many(&mut entries, MAX_ENTRIES_PER_BATCH) => n,
            _ = closed.wait_for(|closed| *closed) => 0,
        };
        if received == 0 {
            break;
        }
        let mut rest = &entries[..];
        while !rest.is_empty() {
            // The store's own bound on one batch (etcd: its --max-txn-ops).
            let (built, used) = build_batch(&shared, rest, shared.store.max_batch());
            rest = &rest[used..];
            if built.batch.events.is_empty() {
                continue;
            }
            if !commit_until_done(&shared, &built).await {
                tracing::debug!("writer stopped: the registry was closed");
                return;
            }
            shared.publish(&built);
            for drained in &built.drained {
                shared.forget_if_deleted(&drained.entry);
            }
            shared.commits.send_modify(|n| *n += 1);
        }
        entries.clear();
    }
    tracing::debug!("writer stopped");
}

/// Commits `built`, retrying with backoff (tokio time) until the store takes it:
/// `true`; or until the registry is closed: `false`, nothing acknowledged.
async fn commit_until_done(shared: &Shared, built: &Built) -> bool {
    let mut delay = RETRY_FIRST;
    let mut failures = 0u32;
    let batch = &built.batch;
    let mut closed = shared.closed.subscribe();
    loop {
        let started = tokio::time::Instant::now();
        let result = shared.store.clone().commit(batch.clone()).await;
        let elapsed = started.elapsed();
        tracing::debug!(
            events = batch.events.len(),
            revision = batch.revision,
            ?elapsed,
            ok = result.is_ok(),
            "group commit"
        );
        let cause = match result {
            Ok(committed) if committed.revision == batch.revision => {
                shared.config.metrics.flush(elapsed, batch.events.len());
                *shared.last_commit.lock() = Some(LastCommit {
                    committed_at: shared.config.clock.now(),
                    duration: elapsed,
                    events: batch.events.len(),
                    revision: batch.revision,
                });
                break;
            }
            Ok(committed) => format!(
                "store committed revision {} for batch {}",
                committed.revision, batch.revision
            ),
            // Already phrased as a fault (the store could not reopen): keep its cause.
            Err(Error::StoreUnavailable { cause }) => cause,
            Err(e) => e.to_string(),
        };
        failures += 1;
        let revision = batch.revision;
        if failures == 1 {
            tracing::error!(%cause, revision, retry_in = ?delay, "commit failed; not serving until it succeeds");
        } else {
            tracing::warn!(%cause, revision, failures, retry_in = ?delay, "commit failed again");
        }
        shared.store_failed(cause);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = closed.wait_for(|closed| *closed) => return false,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
    if failures > 0 {
        shared.store_recovered();
        tracing::info!(
            failures,
            revision = batch.revision,
            "commit succeeded; serving again"
        );
    }
    true
}

/// Takes the pending changes out of `entries` and lays them out as one batch of at
/// most `max_changes` puts, deletes and events, if the store has a bound; returns it
/// and how many entries it took. An entry is never split (its record and its events
/// commit together), so the first one is always taken, whatever its size; the
/// entries after the last one taken wait for the next batch.
fn build_batch(
    shared: &Shared,
    entries: &[Arc<Entry>],
    max_changes: Option<usize>,
) -> (Built, usize) {
    let mut batch = WriteBatch::default();
    let mut drained = Vec::with_capacity(entries.len());
    let mut revision = shared.next_revision.load(Ordering::Relaxed);
    // The batch before this one is committed (one at a time): the store is here.
    batch.expect_revision = revision;
    let mut changes = 0;
    let mut used = 0;
    for entry in entries {
        let mut state = entry.state.lock();
        if state.pending.is_empty() {
            used += 1;
            continue;
        }
        // Its events and its one put or delete.
        let cost = state.pending.len() + 1;
        if changes > 0 && max_changes.is_some_and(|max| changes + cost > max) {
            break;
        }
        if max_changes.is_some_and(|max| cost > max) {
            tracing::error!(breaker = %entry.name, changes = cost, max = ?max_changes, "one breaker's pending changes exceed what the store takes in one batch");
        }
        changes += cost;
        used += 1;
        for mut event in std::mem::take(&mut state.pending) {
            revision += 1;
            event.revision = revision;
            batch.events.push(event);
        }
        state.mod_revision = revision;
        let record = if state.deleted {
            batch.deletes.push(entry.name.to_string());
            None
        } else {
            let record =
                StoredBreaker::of(&state.machine, state.override_operator.as_ref(), revision);
            batch.puts.push((entry.name.to_string(), record.clone()));
            Some(Arc::new(record))
        };
        drained.push(Drained {
            entry: entry.clone(),
            seq: state.change_seq,
            record,
        });
    }
    shared.next_revision.store(revision, Ordering::Release);
    batch.revision = revision;
    let retention = shared.config.watch_retention.max(1);
    batch.oldest_retained = shared
        .oldest_retained
        .load(Ordering::Relaxed)
        .max((revision + 1).saturating_sub(retention));
    (
        Built {
            batch: Arc::new(batch),
            drained,
        },
        used,
    )
}
