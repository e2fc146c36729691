//! Watch streams (DESIGN §5): a snapshot then live events, or a resume from a
//! revision; progress messages on quiet streams; slow watchers catch up from the log
//! and never slow a breaker down.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cbd_proto::{convert, v1 as pb};
use futures::Stream;
use tokio::sync::{broadcast::error::RecvError, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::{error::Error, registry::Registry, store::StoredBreaker};

/// Progress interval when the request leaves it unset.
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest progress interval a watcher may ask for.
const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(10);
/// Messages buffered per watcher before its task waits for the client.
const STREAM_BUFFER: usize = 64;
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

/// Which breakers a stream follows.
#[derive(Debug)]
struct Filter {
    prefix: String,
    names: HashSet<String>,
}

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
        Ok(Self {
            prefix: f.prefix,
            names: f.names.into_iter().collect(),
        })
    }

    fn matches(&self, name: &str) -> bool {
        if self.names.is_empty() {
            return name.starts_with(&self.prefix);
        }
        self.names.contains(name) || (!self.prefix.is_empty() && name.starts_with(&self.prefix))
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

/// One stream's task.
#[derive(Debug)]
struct Stream_ {
    registry: Registry,
    filter: Filter,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    shutdown: watch::Receiver<bool>,
    progress_interval: Duration,
    /// Every committed event up to here has been considered (sent if it matched).
    last: u64,
}

/// Why a stream task stops early.
enum Stop {
    /// Client gone or daemon shutting down: end quietly.
    Quiet,
}

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

    /// Validates `req` and starts its stream.
    pub fn start(
        &self,
        req: pb::WatchRequest,
    ) -> Result<impl Stream<Item = Result<pb::WatchResponse, Status>> + use<>, Error> {
        let filter = Filter::from_proto(req.filter)?;
        let progress_interval = match req.progress_interval {
            None => DEFAULT_PROGRESS_INTERVAL,
            Some(d) => convert::duration_from_proto(&d, "progress_interval")
                .map_err(|e| Error::invalid("progress_interval", e.to_string()))?,
        };
        if progress_interval < MIN_PROGRESS_INTERVAL {
            return Err(Error::invalid(
                "progress_interval",
                format!("must be at least {MIN_PROGRESS_INTERVAL:?}"),
            ));
        }
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
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut stream = Stream_ {
            registry: self.registry.clone(),
            filter,
            tx,
            shutdown: self.shutdown.clone(),
            progress_interval,
            last: 0,
        };
        // Subscribe before returning, so that a compacted start revision is the RPC's
        // error and the snapshot is taken at the moment of the call.
        let start = match req.start_revision {
            None => {
                let (sub, records) = self
                    .registry
                    .subscribe_with_snapshot(&stream.filter_prefix())?;
                Start::Snapshot(sub, records)
            }
            Some(from) => {
                let sub = self.registry.subscribe();
                if from < sub.oldest_retained {
                    return Err(Error::Compacted {
                        requested: from,
                        oldest: sub.oldest_retained,
                    });
                }
                Start::Resume(sub, from)
            }
        };
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(status) = stream.run(start).await {
                let _ = stream.tx.send(Err(status)).await;
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

/// Where a stream begins.
enum Start {
    Snapshot(crate::registry::Subscription, Vec<(String, StoredBreaker)>),
    Resume(crate::registry::Subscription, u64),
}

impl Stream_ {
    /// The prefix to read records by (everything when the filter lists names).
    fn filter_prefix(&self) -> String {
        if self.filter.names.is_empty() {
            self.filter.prefix.clone()
        } else {
            String::new()
        }
    }

    async fn run(&mut self, start: Start) -> Result<(), Status> {
        let mut feed = match start {
            Start::Snapshot(sub, records) => {
                if self.snapshot(sub.revision, records).await.is_err() {
                    return Ok(());
                }
                self.last = sub.revision;
                sub.feed
            }
            Start::Resume(sub, from) => {
                if self.replay(from, sub.revision).await.is_err() {
                    return Ok(());
                }
                sub.feed
            }
        };
        if self.tx.is_closed() {
            return Ok(());
        }
        let mut quiet_since = tokio::time::Instant::now();
        let mut shutdown = self.shutdown.clone();
        let tx = self.tx.clone();
        loop {
            let progress_at = quiet_since + self.progress_interval;
            tokio::select! {
                received = feed.recv() => match received {
                    Ok(event) => {
                        if event.revision <= self.last {
                            continue;
                        }
                        self.last = event.revision;
                        if self.filter.matches(&event.name) {
                            if self.send(pb::watch_response::Kind::Event((*event).clone())).await.is_err() {
                                return Ok(());
                            }
                            quiet_since = tokio::time::Instant::now();
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Fell behind the live feed: catch up from the log.
                        let sub = self.registry.subscribe();
                        if self.last + 1 < sub.oldest_retained {
                            return Err(Error::Compacted { requested: self.last + 1, oldest: sub.oldest_retained }.into());
                        }
                        if self.replay(self.last + 1, sub.revision).await.is_err() {
                            return Ok(());
                        }
                        feed = sub.feed;
                    }
                    Err(RecvError::Closed) => return Ok(()),
                },
                () = tokio::time::sleep_until(progress_at) => {
                    if self.send(pb::watch_response::Kind::ProgressRevision(self.last)).await.is_err() {
                        return Ok(());
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                () = stopped(&mut shutdown) => return Ok(()),
                () = tx.closed() => return Ok(()),
            }
        }
    }

    /// Sends the snapshot at `revision`, in chunks, the last marked `done`.
    async fn snapshot(
        &mut self,
        revision: u64,
        records: Vec<(String, StoredBreaker)>,
    ) -> Result<(), Stop> {
        let statuses: Vec<pb::BreakerStatus> = records
            .into_iter()
            .filter(|(name, _)| self.filter.matches(name))
            .map(|(name, record)| self.status_at(name, record))
            .collect();
        let chunks = statuses.len().div_ceil(CHUNK).max(1);
        let mut statuses = statuses.into_iter();
        for i in 0..chunks {
            let snapshot = pb::Snapshot {
                breakers: statuses.by_ref().take(CHUNK).collect(),
                revision,
                done: i + 1 == chunks,
            };
            self.send(pb::watch_response::Kind::Snapshot(snapshot))
                .await?;
        }
        Ok(())
    }

    /// A committed record as a status, with the live window counts added.
    fn status_at(&self, name: String, record: StoredBreaker) -> pb::BreakerStatus {
        let live = self
            .registry
            .live_status(&name)
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
            name,
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

    /// Sends the logged events `from..=to` that match, reading in chunks.
    async fn replay(&mut self, from: u64, to: u64) -> Result<(), Stop> {
        let mut next = from;
        while next <= to {
            let chunk_end = to.min(next + CHUNK as u64 - 1);
            let events = self.registry.events(next, chunk_end).map_err(|e| {
                tracing::warn!(error = %e, "watch replay failed");
                Stop::Quiet
            })?;
            for event in events {
                if self.filter.matches(&event.name) {
                    self.send(pb::watch_response::Kind::Event(event)).await?;
                }
            }
            next = chunk_end + 1;
        }
        self.last = self.last.max(to);
        Ok(())
    }

    /// Sends one message, or gives up when the client leaves or the daemon stops.
    async fn send(&mut self, kind: pb::watch_response::Kind) -> Result<(), Stop> {
        let msg = Ok(pb::WatchResponse { kind: Some(kind) });
        tokio::select! {
            sent = self.tx.send(msg) => sent.map_err(|_| Stop::Quiet),
            () = stopped(&mut self.shutdown) => Err(Stop::Quiet),
        }
    }
}

/// Resolves once the daemon begins shutting down.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}
