//! The one writer (docs/DESIGN.md §6): drains the entries that changed, gives their events
//! revisions in order, commits record + events + revision as one batch, flushes once
//! per batch on a blocking thread (group commit), then publishes the events to
//! watchers and wakes the callers waiting for durability. Nothing else flushes.

use std::sync::{Arc, atomic::Ordering};

use tokio::sync::mpsc;

use super::{Shared, entry::Entry};
use crate::store::{StoredBreaker, WriteBatch};

/// Most entries drained into one batch; bounds the batch and its latency.
const MAX_ENTRIES_PER_BATCH: usize = 4096;

/// Runs until every sender of `dirty` is gone, committing what is pending.
pub(crate) async fn run(shared: Arc<Shared>, mut dirty: mpsc::UnboundedReceiver<Arc<Entry>>) {
    let mut entries = Vec::new();
    while dirty.recv_many(&mut entries, MAX_ENTRIES_PER_BATCH).await > 0 {
        let (batch, drained) = build_batch(&shared, &entries);
        entries.clear();
        if batch.events.is_empty() {
            continue;
        }
        let committer = shared.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = committer.commit(&batch);
            let elapsed = started.elapsed();
            committer.config.metrics.flush(elapsed, batch.events.len());
            tracing::debug!(
                events = batch.events.len(),
                revision = batch.revision,
                ?elapsed,
                "group commit"
            );
            result.map(|()| batch)
        })
        .await;
        match committed {
            Ok(Ok(_)) => {
                for (entry, seq) in drained {
                    entry.durable_seq.store(seq, Ordering::Release);
                    shared.forget_if_deleted(&entry);
                }
            }
            Ok(Err(e)) => shared.fail_storage(e.to_string()),
            Err(join) => shared.fail_storage(format!("writer task failed: {join}")),
        }
        shared.commits.send_modify(|n| *n += 1);
    }
    tracing::debug!("writer stopped");
}

/// Takes every pending change out of `entries` and lays it out as one batch.
fn build_batch(shared: &Shared, entries: &[Arc<Entry>]) -> (WriteBatch, Vec<(Arc<Entry>, u64)>) {
    let mut batch = WriteBatch::default();
    let mut drained = Vec::with_capacity(entries.len());
    let mut revision = shared.next_revision.load(Ordering::Relaxed);
    for entry in entries {
        let mut state = entry.state.lock();
        if state.pending.is_empty() {
            continue;
        }
        for mut event in std::mem::take(&mut state.pending) {
            revision += 1;
            event.revision = revision;
            batch.events.push(event);
        }
        state.mod_revision = revision;
        if state.deleted {
            batch.deletes.push(entry.name.to_string());
        } else {
            batch.puts.push((
                entry.name.to_string(),
                StoredBreaker::of(&state.machine, revision),
            ));
        }
        drained.push((entry.clone(), state.change_seq));
    }
    shared.next_revision.store(revision, Ordering::Release);
    batch.revision = revision;
    let retention = shared.config.watch_retention.max(1);
    batch.oldest_retained = shared
        .oldest_retained
        .load(Ordering::Relaxed)
        .max((revision + 1).saturating_sub(retention));
    (batch, drained)
}
