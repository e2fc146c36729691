//! Watch streams (docs/DESIGN.md §5): a snapshot then live events, or a resume from a
//! revision; progress messages on quiet streams; slow watchers catch up from the log
//! and never slow a breaker down.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cbd_proto::{
    convert,
    v1::{self as pb, watch_response::Kind},
};
use futures::Stream;
use tokio::{sync::watch, time::Instant};
use tonic::Status;

use crate::{
    error::Error,
    registry::{Interest, Registry, SnapshotRecord},
    store::StoredBreaker,
};

/// Progress interval when the request leaves it unset.
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest progress interval a watcher may ask for.
const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(10);
/// Longest progress interval a watcher may ask for.
const MAX_PROGRESS_INTERVAL: Duration = Duration::from_secs(3600);
/// Breakers per snapshot message, and events per read while catching up.
const CHUNK: usize = 500;
/// Most names in one filter.
const MAX_FILTER_NAMES: usize = 1000;

/// Starts Watch streams and counts them against `--max-watchers`.
#[derive(Clone, Debug)]
pub struct Watcher {
    registry: Registry,
    active: Arc<AtomicUsize>,
    max_watchers: usize,
    shutdown: watch::Receiver<bool>,
}

/// Which breakers a stream follows (the registry indexes streams by it).
#[derive(Debug)]
struct Filter(Interest);

impl Filter {
    fn from_proto(f: Option<pb::WatchFilter>) -> Result<Self, Error> {
        let f = f.unwrap_or_default();
        super::convert::prefix("filter.prefix", &f.prefix)?;
        if f.names.len() > MAX_FILTER_NAMES {
            return Err(Error::invalid(
                "filter.names",
                format!("{} names; at most {MAX_FILTER_NAMES}", f.names.len()),
            ));
        }
        for name in &f.names {
            cbd_breaker::validate_name(name)
                .map_err(|e| Error::invalid("filter.names", e.to_string()))?;
        }
        Ok(Self(Interest {
            prefix: f.prefix,
            names: f.names.into_iter().collect(),
        }))
    }

    fn matches(&self, name: &str) -> bool {
        self.0.matches(name)
    }
}

/// Decrements the watcher count when a stream ends.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type Item = Result<pb::WatchResponse, Status>;

impl Watcher {
    /// A watcher for `registry`; streams end when `shutdown` turns true.
    pub fn new(registry: Registry, max_watchers: usize, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            registry,
            active: Arc::new(AtomicUsize::new(0)),
            max_watchers,
            shutdown,
        }
    }

    /// Number of open streams.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Validates `req` and starts its stream. The stream is polled by the transport
    /// directly (no task per watcher); it ends when the client goes away, and a
    /// client that stops reading only fills its own bounded queue, then catches up
    /// from the log.
    pub fn start(&self, req: pb::WatchRequest) -> Result<impl Stream<Item = Item> + use<>, Error> {
        let filter = Filter::from_proto(req.filter)?;
        let progress_interval = match req.progress_interval {
            None => DEFAULT_PROGRESS_INTERVAL,
            Some(d) => super::convert::bounded_duration(
                "progress_interval",
                &d,
                MIN_PROGRESS_INTERVAL,
                MAX_PROGRESS_INTERVAL,
            )?,
        };
        if req.start_revision == Some(0) {
            return Err(Error::invalid(
                "start_revision",
                "must be at least 1 (or unset for a snapshot)",
            ));
        }
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.max_watchers {
            self.active.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::LimitReached {
                limit: "--max-watchers",
                max: self.max_watchers as u64,
            });
        }
        let slot = Slot(self.active.clone());
        // Subscribe before returning, so that a compacted start revision is the RPC's
        // error and the snapshot is taken at the moment of the call.
        let (sub, first) = match req.start_revision {
            None => {
                let (sub, records) = self.registry.watch_with_snapshot(&filter.0);
                let revision = sub.revision;
                (sub, First::Snapshot(revision, records))
            }
            Some(from) => {
                let sub = self.registry.watch(&filter.0);
                if from < sub.oldest_retained {
                    return Err(Error::Compacted {
                        requested: from,
                        oldest: sub.oldest_retained,
                    });
                }
                let to = sub.revision;
                (sub, First::Replay(from, to))
            }
        };
        let registry = self.registry.clone();
        let mut shutdown = self.shutdown.clone();
        // Nothing below `start` is ever sent: a start beyond the store's revision waits
        // for the store to get there (as etcd does).
        let start = match &first {
            First::Snapshot(revision, _) => revision.saturating_add(1),
            First::Replay(from, _) => *from,
        };
        Ok(async_stream::stream! {
            let _slot = slot;
            let mut feed = sub.feed;
            // Every committed event up to `last` has been considered (sent if it matched
            // and was at or after `start`). Progress messages report `last` brought up
            // to the revision dispatched: the store's revision, which is below `start`
            // while the stream waits for it.
            let mut last = sub.revision;
            match first {
                First::Snapshot(revision, records) => {
                    let status = |name: &str, record: &StoredBreaker| status_at(&registry, name, record);
                    for msg in snapshot(revision, records, status) {
                        yield Ok(msg);
                    }
                }
                First::Replay(from, to) => {
                    for await item in replay(registry.clone(), &filter, from, to) {
                        let failed = item.is_err();
                        yield item;
                        if failed {
                            return;
                        }
                    }
                }
            }
            let mut progress_at = Instant::now() + progress_interval;
            loop {
                // `yield` cannot sit inside `select!`: pick the step, then act on it.
                // The feed first: progress is only due once the queue is read.
                let step = tokio::select! {
                    biased;
                    received = feed.recv() => Step::Feed(received),
                    () = tokio::time::sleep_until(progress_at) => Step::Progress,
                    () = stopped(&mut shutdown) => Step::Stop,
                };
                match step {
                    Step::Feed(Some(event)) => {
                        // The feed holds only matching events above the subscription's
                        // revision, each once; the check keeps a resume's order exact.
                        if event.revision <= last {
                            continue;
                        }
                        last = event.revision;
                        if deliverable(event.revision, start) {
                            yield Ok(message(Kind::Event((*event).clone())));
                            progress_at = Instant::now() + progress_interval;
                        }
                    }
                    Step::Feed(None) if feed.lagged() => {
                        // Fell behind the live feed: catch up from the log.
                        let sub = registry.watch(&filter.0);
                        let from = catch_up_from(last, start);
                        if from < sub.oldest_retained {
                            yield Err(Status::from(Error::Compacted {
                                requested: from,
                                oldest: sub.oldest_retained,
                            }));
                            break;
                        }
                        for await item in replay(registry.clone(), &filter, from, sub.revision) {
                            let failed = item.is_err();
                            yield item;
                            if failed {
                                return;
                            }
                        }
                        last = sub.revision;
                        feed = sub.feed;
                    }
                    Step::Feed(None) | Step::Stop => break,
                    Step::Progress => match feed.progress() {
                        Some(dispatched) => {
                            // Every matching event up to `dispatched` was received.
                            last = last.max(dispatched);
                            yield Ok(message(Kind::ProgressRevision(last)));
                            progress_at = Instant::now() + progress_interval;
                        }
                        // Events queued meanwhile, or a lag: read the feed first.
                        None => tokio::task::yield_now().await,
                    },
                }
            }
        })
    }
}

/// What woke a live stream.
enum Step {
    Feed(Option<Arc<pb::Event>>),
    Progress,
    Stop,
}

/// What a stream sends before going live.
enum First {
    /// A snapshot of these records at this revision.
    Snapshot(u64, Vec<SnapshotRecord>),
    /// The logged events `from..=to`.
    Replay(u64, u64),
}

/// Whether a live event at `revision` may be sent on a stream that starts at `start`.
fn deliverable(revision: u64, start: u64) -> bool {
    revision >= start
}

/// Where a stream that has considered everything up to `last` resumes reading the
/// log: the next revision, but never below `start`.
fn catch_up_from(last: u64, start: u64) -> u64 {
    last.saturating_add(1).max(start)
}

fn message(kind: Kind) -> pb::WatchResponse {
    pb::WatchResponse { kind: Some(kind) }
}

/// The snapshot at `revision` (the records the filter matched, in name order) as
/// messages of at most `CHUNK` breakers, the last marked `done` (one empty message
/// when nothing matches). Each message is built when the client is ready for it, so
/// only one chunk of statuses exists at a time beside the copied records.
fn snapshot<F>(
    revision: u64,
    records: Vec<SnapshotRecord>,
    status: F,
) -> impl Iterator<Item = pb::WatchResponse>
where
    F: Fn(&str, &StoredBreaker) -> pb::BreakerStatus,
{
    let chunks = records.len().div_ceil(CHUNK).max(1);
    let mut records = records.into_iter();
    (0..chunks).map(move |i| {
        message(Kind::Snapshot(pb::Snapshot {
            breakers: records
                .by_ref()
                .take(CHUNK)
                .map(|(name, record)| status(&name, &record))
                .collect(),
            revision,
            done: i + 1 == chunks,
        }))
    })
}

/// A committed record as a status, with the live window counts added.
fn status_at(registry: &Registry, name: &str, record: &StoredBreaker) -> pb::BreakerStatus {
    let live = registry
        .live_status(name)
        .filter(|live| live.generation == record.generation);
    let mut status = pb::BreakerStatus {
        state: record.state,
        r#override: record.override_,
        generation: record.generation,
        open_until: record
            .open_until_unix_nanos
            .map(|n| convert::timestamp_to_proto(cbd_breaker::Timestamp::from_unix_nanos(n))),
        backoff_level: record.backoff_level,
        mod_revision: record.mod_revision,
        spec: record.spec,
        name: name.to_owned(),
        ..Default::default()
    };
    if let Some(live) = live {
        status.window_calls = live.window_calls;
        status.window_failures = live.window_failures;
        status.window_slow_calls = live.window_slow_calls;
        status.consecutive_failures = live.consecutive_failures;
        status.probes_in_flight = live.probes_in_flight;
        status.half_open_successes = live.half_open_successes;
    }
    status
}

/// The logged events `from..=to` that match, read from the store in chunks.
fn replay<'a>(
    registry: Registry,
    filter: &'a Filter,
    from: u64,
    to: u64,
) -> impl Stream<Item = Item> + Send + 'a {
    async_stream::stream! {
        let mut next = from;
        while next <= to {
            let wanted = (to - next).saturating_add(1).min(CHUNK as u64);
            match registry.events(next, wanted as usize).await {
                // Every revision has one event: a chunk that is short or skips one
                // was compacted while the stream read the log, and skipping it would
                // be a silent gap.
                Ok(events) if !contiguous(&events, next, wanted) => {
                    yield Err(Status::from(Error::Compacted {
                        requested: next,
                        oldest: registry.oldest_retained(),
                    }));
                    return;
                }
                Ok(events) => {
                    for event in events.into_iter().filter(|e| filter.matches(&e.name)) {
                        yield Ok(message(Kind::Event(event)));
                    }
                }
                Err(e) => {
                    yield Err(Status::from(e));
                    return;
                }
            }
            let Some(after) = next.checked_add(wanted) else {
                break;
            };
            next = after;
        }
    }
}

/// Whether `events` are exactly the `wanted` revisions from `from` on.
fn contiguous(events: &[pb::Event], from: u64, wanted: u64) -> bool {
    events.len() as u64 == wanted
        && events
            .iter()
            .zip(from..)
            .all(|(event, revision)| event.revision == revision)
}

/// Resolves once the daemon begins shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_comes_in_chunks_the_last_one_done() {
        let records = |n: usize| -> Vec<SnapshotRecord> {
            (0..n)
                .map(|i| {
                    let name: Arc<str> = format!("b{i:04}").into();
                    (name, Arc::new(StoredBreaker::default()))
                })
                .collect()
        };
        let status = |name: &str, _: &StoredBreaker| pb::BreakerStatus {
            name: name.to_owned(),
            ..Default::default()
        };
        let shape = |n: usize| -> Vec<(usize, bool, u64)> {
            snapshot(7, records(n), status)
                .map(|m| match m.kind {
                    Some(Kind::Snapshot(s)) => (s.breakers.len(), s.done, s.revision),
                    other => panic!("not a snapshot: {other:?}"),
                })
                .collect()
        };
        assert_eq!(shape(0), [(0, true, 7)], "one empty message");
        assert_eq!(shape(CHUNK), [(CHUNK, true, 7)]);
        assert_eq!(
            shape(2 * CHUNK + 1),
            [(CHUNK, false, 7), (CHUNK, false, 7), (1, true, 7)]
        );
        let names: Vec<String> = snapshot(7, records(CHUNK + 2), status)
            .flat_map(|m| match m.kind {
                Some(Kind::Snapshot(s)) => s.breakers,
                _ => Vec::new(),
            })
            .map(|b| b.name)
            .collect();
        assert_eq!(names.len(), CHUNK + 2);
        assert!(names.is_sorted(), "in the records' name order");
    }

    #[test]
    fn nothing_below_the_start_is_deliverable() {
        assert!(!deliverable(9, 1008));
        assert!(!deliverable(1007, 1008));
        assert!(deliverable(1008, 1008));
        assert!(deliverable(1009, 1008));
    }

    #[test]
    fn a_chunk_with_a_compacted_revision_is_not_contiguous() {
        let events = |revs: &[u64]| -> Vec<pb::Event> {
            revs.iter()
                .map(|&revision| pb::Event {
                    revision,
                    ..Default::default()
                })
                .collect()
        };
        assert!(contiguous(&events(&[4, 5, 6]), 4, 3));
        assert!(!contiguous(&events(&[4, 5]), 4, 3), "short");
        assert!(!contiguous(&events(&[5, 6, 7]), 4, 3), "starts late");
        assert!(!contiguous(&events(&[4, 6, 7]), 4, 3), "a hole");
    }

    #[test]
    fn catching_up_never_reads_below_the_start() {
        // Waiting for a start beyond the store: the log is read from the start.
        assert_eq!(catch_up_from(8, 1008), 1008);
        // Past the start: from the next revision.
        assert_eq!(catch_up_from(1010, 1008), 1011);
        assert_eq!(catch_up_from(1007, 1008), 1008);
        assert_eq!(catch_up_from(u64::MAX, 1), u64::MAX);
    }
}
