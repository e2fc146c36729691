//! The registry: name → live breaker, the timers that move breakers without traffic,
//! the writer that makes changes durable, and the feed of committed events.
//!
//! Every operation follows one pattern: look the entry up, change it under its lock
//! (queueing any event in the entry itself, so per-breaker order is kept without
//! sending under the lock), release the lock, then hand the entry to the writer and
//! the timer task and, if anything the caller saw is not yet durable, wait for it.
//!
//! A failed commit is a fault, not a permanent state: the writer keeps the batch and
//! retries it with backoff while [`StoreHealth`] says `Failing`. Meanwhile operator
//! writes are refused before they change anything, callers waiting for durability
//! and traffic on breakers with undurable changes get [`Error::StoreUnavailable`],
//! and readers are shown only what is committed.

mod entry;
mod fanout;
mod leases;
mod names;
#[cfg(test)]
mod tests;
mod timers;
mod writer;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use cbd_breaker::{
    Acquired, Breaker, Outcome, Override, Persisted, Reported, Spec, State, Timestamp,
};
use cbd_proto::v1 as pb;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc, watch};

pub use entry::Entry;
use entry::EntryState;
pub use fanout::{Feed, Interest};
pub use leases::{LeaseAnswer, LeasedAnswer};
use names::Names;
pub use writer::LastCommit;

use crate::{clock::Clock, error::Error, metrics::Metrics, store::Store};

/// Capacity of the live event feed (sessions' lease revocations); a receiver further
/// behind catches up from the log.
pub const FEED_CAPACITY: usize = 4096;

/// Events queued for one Watch stream; a stream further behind catches up from the
/// log (docs/DESIGN.md §5).
pub const WATCH_QUEUE: usize = 4096;

/// Capacity of the feed of changes as they are made ([`Registry::changes`]); a
/// session further behind revokes every lease it holds.
pub const CHANGES_CAPACITY: usize = 4096;

/// A change to a breaker as it is made, before it is committed: what a session
/// needs to void the leases it holds on the breaker at once (docs/DESIGN.md §10).
/// Revoking a lease only sends its client back to asking the daemon, which answers
/// from committed state, so acting on a change that a failed commit could still take
/// back is safe here (and only here: Watch shows committed events only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub name: Arc<str>,
    /// The event the change queued (`pb::EventKind`).
    pub kind: i32,
    /// The breaker's state after it (`pb::State`).
    pub state: i32,
    pub generation: u64,
}

/// Settings of the registry, from the daemon's configuration.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Most breakers the registry holds (`--max-breakers`).
    pub max_breakers: usize,
    /// Events kept in the log (`--watch-retention`).
    pub watch_retention: u64,
    /// Specs for unknown names under a prefix, longest prefix first.
    pub templates: Vec<(String, Spec)>,
    /// Where breakers, outcomes, transitions and commits are counted.
    pub metrics: Metrics,
    /// The time every decision, timer and status is taken at (the wall clock in the
    /// daemon; a manual one in tests).
    pub clock: Clock,
}

/// A decision and what it needs to be answered.
#[derive(Debug)]
pub struct AcquireAnswer {
    pub name: Arc<str>,
    pub acquired: Acquired,
    pub revision: u64,
}

/// A report's result.
#[derive(Debug)]
pub struct ReportAnswer {
    pub reported: Reported,
    pub revision: u64,
}

/// Result of a put.
#[derive(Debug)]
pub struct PutAnswer {
    pub breaker: pb::BreakerStatus,
    pub created: bool,
    pub unchanged: bool,
    pub revision: u64,
}

/// A page of breakers.
#[derive(Debug)]
pub struct Page {
    pub breakers: Vec<pb::BreakerStatus>,
    pub next_page_token: String,
    pub revision: u64,
}

/// A page of one breaker's events (`Admin/ListEvents`).
#[derive(Debug)]
pub struct History {
    pub events: Vec<pb::Event>,
    /// The last event's revision when more follow; empty on the last page.
    pub next_page_token: String,
    /// The committed revision the scan stopped at.
    pub revision: u64,
    pub oldest_retained: u64,
}

/// What a new watcher starts from: the committed state at `revision` and a feed of
/// every event committed after it.
#[derive(Debug)]
pub struct Subscription {
    pub revision: u64,
    pub oldest_retained: u64,
    pub feed: broadcast::Receiver<Arc<pb::Event>>,
}

/// A breaker's name and its committed record, as a snapshot holds them: both shared
/// with the entry, so taking a snapshot under the publish lock copies pointers only.
pub type SnapshotRecord = (Arc<str>, Arc<crate::store::StoredBreaker>);

/// What a new Watch stream starts from: the committed state at `revision` and, on
/// `feed`, every event matching its filter committed after it (docs/DESIGN.md §5).
#[derive(Debug)]
pub struct WatchSubscription {
    pub revision: u64,
    pub oldest_retained: u64,
    pub feed: Feed,
}

/// Whether the store can commit, as the writer last found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    /// The last commit succeeded (or none failed yet).
    Serving,
    /// The last commit failed with `cause`; the writer is retrying it.
    Failing { cause: String },
}

/// The live breakers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    config: RegistryConfig,
    store: Arc<dyn Store>,
    breakers: RwLock<Names>,
    dirty: mpsc::UnboundedSender<Arc<Entry>>,
    schedule: mpsc::UnboundedSender<timers::Schedule>,
    /// Bumped after every group commit; durability waiters watch it.
    commits: watch::Sender<u64>,
    /// The last revision handed out by the writer (committed or being committed).
    next_revision: AtomicU64,
    /// The last committed (durable) revision.
    revision: AtomicU64,
    /// The last lease number handed out (docs/DESIGN.md §10); unique in this run.
    next_lease: AtomicU64,
    /// The breakers granted a lease whose record may still be live, by name, so that
    /// [`Registry::leases_held`] visits those only, not every breaker. Taken before an
    /// entry's lock, never while holding one.
    leased: Mutex<std::collections::HashMap<Arc<str>, Arc<Entry>>>,
    oldest_retained: AtomicU64,
    /// Committed events, in revision order, for every receiver (sessions).
    feed: broadcast::Sender<Arc<pb::Event>>,
    /// Committed events for Watch streams, each sent only to the streams it matches.
    fanout: Arc<fanout::Fanout>,
    /// Every change as it is made, before its commit (see [`Change`]).
    changes: broadcast::Sender<Change>,
    /// Write side: held by the writer while it publishes a committed batch to memory
    /// (never across the store's commit). Read side: held by a new watcher while it
    /// reads the revision, subscribes and copies the committed records, so that it
    /// sees one revision exactly (docs/DESIGN.md §5).
    publish_lock: RwLock<()>,
    /// Set while the writer retries a failed commit; read on every request, so an
    /// atomic rather than a look at `health`.
    failing: AtomicBool,
    /// The same, with the cause, for the health service and error messages.
    health: watch::Sender<StoreHealth>,
    /// When [`Registry::open`] finished loading, on the registry's clock.
    started: Timestamp,
    /// Set by [`Registry::close`]: the writer and the timers stop.
    closed: watch::Sender<bool>,
    /// The writer's latest successful commit; `None` before the first.
    last_commit: Mutex<Option<LastCommit>>,
}

/// Whether [`Shared::wait_durable`] answers UNAVAILABLE during a store fault or
/// keeps waiting for the recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Faults {
    Answer,
    WaitThrough,
}

/// What an operation does to an entry under its lock: its result, and the transition
/// it caused, if any.
type Changed<R> = Result<(R, Option<cbd_breaker::Transition>), Error>;

/// What an operation on an entry leaves to do once its lock is released.
#[derive(Debug, Default)]
struct After {
    changed: bool,
    wait_for: Option<u64>,
    schedule: Option<Timestamp>,
    transitions: Vec<cbd_breaker::Transition>,
    /// The changes queued, for [`Registry::changes`] (only while anyone listens).
    changes: Vec<Change>,
}

impl Registry {
    /// Loads every breaker from `store`, recovers them (an OPEN breaker whose deadline
    /// passed while the daemon was down moves to HALF_OPEN), and starts the writer and
    /// the timers. Must be called inside a Tokio runtime.
    pub fn open(store: Arc<dyn Store>, mut config: RegistryConfig) -> Result<Self, Error> {
        let loaded = store.load()?;
        config
            .templates
            .sort_by_key(|t| std::cmp::Reverse(t.0.len()));
        let started = config.clock.now();
        let (dirty, dirty_rx) = mpsc::unbounded_channel();
        let (schedule, schedule_rx) = mpsc::unbounded_channel();
        let mut breakers = Names::with_capacity(loaded.breakers.len());
        for (name, record) in loaded.breakers {
            let name: Arc<str> = name.into();
            let entry = Arc::new(Entry::new(
                name.clone(),
                record.restore()?,
                Some(Arc::new(record)),
                config.metrics.breaker(&name),
            ));
            breakers.insert(name, entry);
        }
        let shared = Arc::new(Shared {
            config,
            store,
            breakers: RwLock::new(breakers),
            dirty,
            schedule,
            commits: watch::Sender::new(0),
            next_revision: AtomicU64::new(loaded.revision),
            revision: AtomicU64::new(loaded.revision),
            next_lease: AtomicU64::new(0),
            leased: Mutex::new(std::collections::HashMap::new()),
            oldest_retained: AtomicU64::new(loaded.oldest_retained),
            feed: broadcast::Sender::new(FEED_CAPACITY),
            fanout: Arc::new(fanout::Fanout::new(WATCH_QUEUE, loaded.revision)),
            changes: broadcast::Sender::new(CHANGES_CAPACITY),
            publish_lock: RwLock::new(()),
            failing: AtomicBool::new(false),
            health: watch::Sender::new(StoreHealth::Serving),
            started,
            closed: watch::Sender::new(false),
            last_commit: Mutex::new(None),
        });
        tokio::spawn(writer::run(shared.clone(), dirty_rx));
        tokio::spawn(timers::run(shared.clone(), schedule_rx));
        let entries: Vec<_> = shared.breakers.read().entries().cloned().collect();
        for entry in &entries {
            shared.tick(entry);
        }
        tracing::info!(
            breakers = entries.len(),
            revision = loaded.revision,
            "store recovered"
        );
        Ok(Self { shared })
    }

    /// Stops the writer and the timers for good: a replica that stopped leading
    /// (docs/DESIGN.md §11.3) drops its registry, whose tasks would otherwise keep it
    /// alive. A change not committed yet is never acknowledged.
    pub fn close(&self) {
        self.shared.closed.send_replace(true);
    }

    /// The clock the registry reads (a test moves a manual one with it).
    pub fn clock(&self) -> &Clock {
        &self.shared.config.clock
    }

    /// The last committed revision.
    pub fn revision(&self) -> u64 {
        self.shared.revision.load(Ordering::Acquire)
    }

    /// Whether the store can commit; changes when a commit fails and when the
    /// writer's retry succeeds.
    pub fn store_health(&self) -> watch::Receiver<StoreHealth> {
        self.shared.health.subscribe()
    }

    /// Number of breakers.
    pub fn len(&self) -> usize {
        self.shared.breakers.read().len()
    }

    /// Whether there are no breakers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// May I call `name`? Creates the breaker from a template when there is one.
    pub async fn acquire(&self, name: &str) -> Result<AcquireAnswer, Error> {
        cbd_breaker::validate_name(name)?;
        let entry = match self.shared.lookup(name) {
            Some(entry) => entry,
            None => self.create_from_template(name).await?,
        };
        let (acquired, after) = self.shared.update_traffic(&entry, |st, now, _| {
            if st.deleted {
                return Err(Error::NotFound { name: name.into() });
            }
            let acquired = st.machine.acquire(now);
            Ok((acquired.clone(), acquired.transition))
        })?;
        if !acquired.allowed {
            entry.metrics.rejected();
        }
        let revision = self.shared.finish(&entry, after).await?;
        Ok(AcquireAnswer {
            name: entry.name.clone(),
            acquired,
            revision,
        })
    }

    /// How did it go? `name` and `permit` come from a decoded permit.
    pub async fn report(
        &self,
        name: &str,
        permit: cbd_breaker::PermitToken,
        outcome: Outcome,
        duration: Option<Duration>,
    ) -> Result<ReportAnswer, Error> {
        self.report_as(name, permit, outcome, duration, None).await
    }

    /// [`Registry::report`] attributed to `caller` (checked by the service;
    /// `None`: anonymous), docs/DESIGN.md §3.7.
    pub async fn report_as(
        &self,
        name: &str,
        permit: cbd_breaker::PermitToken,
        outcome: Outcome,
        duration: Option<Duration>,
        caller: Option<&str>,
    ) -> Result<ReportAnswer, Error> {
        let deleted = || Error::PermitOfDeletedBreaker { name: name.into() };
        let entry = self.shared.lookup(name).ok_or_else(deleted)?;
        let (reported, after) = self.shared.update_traffic(&entry, |st, now, _| {
            if st.deleted {
                return Err(deleted());
            }
            let reported = st
                .machine
                .report_as(permit, outcome, duration, caller, now)?;
            Ok((reported.clone(), reported.transition))
        })?;
        entry.metrics.reported(outcome, reported.stale);
        let revision = self.shared.finish(&entry, after).await?;
        Ok(ReportAnswer { reported, revision })
    }

    /// A report whose permit an earlier run of the daemon issued: its single use cannot
    /// be checked, so it is stale and counts nothing (docs/DESIGN.md §4.2).
    pub fn report_of_earlier_boot(
        &self,
        name: &str,
        outcome: Outcome,
    ) -> Result<ReportAnswer, Error> {
        self.stale_report(name, |metrics| metrics.reported(outcome, true))
    }

    /// Leased outcomes under a lease an earlier run of the daemon granted: stale,
    /// like its permits (docs/DESIGN.md §10).
    pub fn leased_of_earlier_boot(
        &self,
        name: &str,
        outcomes: &cbd_breaker::Aggregate,
    ) -> Result<ReportAnswer, Error> {
        outcomes.validate()?;
        self.stale_report(name, |metrics| metrics.reported_many(outcomes, true))
    }

    fn stale_report(
        &self,
        name: &str,
        count: impl FnOnce(&crate::metrics::BreakerMetrics),
    ) -> Result<ReportAnswer, Error> {
        let deleted = || Error::PermitOfDeletedBreaker { name: name.into() };
        // Read first, as `get` does: the status shown is at least this new.
        let revision = self.revision();
        let entry = self.shared.lookup(name).ok_or_else(deleted)?;
        // What is committed, like every read: a change not yet durable is not shown.
        let status = entry
            .status_now(self.shared.config.clock.now())
            .ok_or_else(deleted)?;
        count(&entry.metrics);
        Ok(ReportAnswer {
            reported: Reported {
                stale: true,
                state: cbd_proto::convert::state_from_proto(status.state())
                    .unwrap_or(State::Closed),
                generation: status.generation,
                transition: None,
            },
            revision,
        })
    }

    /// Creates `name` with `spec`, or replaces its spec (state, override and
    /// generation are kept). An identical spec writes nothing. `operator` is who
    /// asked, for the event.
    pub async fn put(
        &self,
        name: &str,
        spec: Spec,
        operator: &pb::Operator,
    ) -> Result<PutAnswer, Error> {
        cbd_breaker::validate_name(name)?;
        self.shared.writable()?;
        loop {
            let (entry, created) = self.shared.get_or_create(name, &spec, Some(operator))?;
            if let Some(answer) = self.put_into(&entry, created, &spec, operator).await? {
                return Ok(answer);
            }
        }
    }

    /// [`Registry::put`] on `entry`, as looked up. `None`: the entry was dropped
    /// from the map meanwhile (its delete committed), so the name must be looked up
    /// again; reviving it would serve a breaker the map no longer holds.
    async fn put_into(
        &self,
        entry: &Arc<Entry>,
        created: bool,
        spec: &Spec,
        operator: &pb::Operator,
    ) -> Result<Option<PutAnswer>, Error> {
        let (put, after) = self.shared.update(entry, |st, now, entry| {
            if created {
                return Ok((Some((false, st.status(&entry.name))), None));
            }
            if st.forgotten {
                return Ok((None, None));
            }
            if st.deleted {
                // Deleted but not yet committed: start over, keeping the generation
                // moving so that the old incarnation's permits are stale.
                let generation =
                    (st.machine.status().generation + 1).max(self.shared.first_generation());
                st.machine = revived(spec.clone(), generation);
                st.deleted = false;
            } else if st.machine.spec() == spec {
                return Ok((Some((true, st.status(&entry.name))), None));
            } else {
                st.machine.set_spec(spec.clone());
            }
            st.push_spec_event(&entry.name, pb::EventKind::SpecPut, now, Some(operator));
            Ok((Some((false, st.status(&entry.name))), None))
        })?;
        let Some((unchanged, mut breaker)) = put else {
            return Ok(None);
        };
        let revision = self.shared.finish(entry, after).await?;
        if !unchanged {
            breaker.mod_revision = entry.state.lock().mod_revision;
        }
        Ok(Some(PutAnswer {
            breaker,
            created,
            unchanged,
            revision,
        }))
    }

    /// One breaker's status as committed (see [`Entry::committed_status`]), its
    /// window as of now.
    pub fn get(&self, name: &str) -> Result<(pb::BreakerStatus, u64), Error> {
        cbd_breaker::validate_name(name)?;
        let revision = self.revision();
        let entry = self.shared.existing(name)?;
        let status = entry
            .status_now(self.shared.config.clock.now())
            .ok_or_else(|| Error::NotFound { name: name.into() })?;
        Ok((status, revision))
    }

    /// Breakers whose names start with `prefix`, in name order, after `page_token`:
    /// a walk of the ordered index from the token, so a page costs its size plus a
    /// search, whatever the number of breakers.
    pub fn list(&self, prefix: &str, page_size: usize, page_token: &str) -> Result<Page, Error> {
        let revision = self.revision();
        let now = self.shared.config.clock.now();
        let mut breakers = Vec::with_capacity(page_size.min(1024));
        let mut next_page_token = String::new();
        // Map before entry, as everywhere (docs/DESIGN.md §2): each entry's lock is
        // taken briefly under the map's read side, with no I/O.
        for (_, entry) in self
            .shared
            .breakers
            .read()
            .starting_with(prefix, page_token)
        {
            // A deleted entry waiting to be forgotten has no status and is skipped.
            let Some(status) = entry.status_now(now) else {
                continue;
            };
            if breakers.len() == page_size {
                next_page_token = breakers
                    .last()
                    .map(|b: &pb::BreakerStatus| b.name.clone())
                    .unwrap_or_default();
                break;
            }
            breakers.push(status);
        }
        Ok(Page {
            breakers,
            next_page_token,
            revision,
        })
    }

    /// Deletes `name`; its permits become invalid.
    pub async fn delete(&self, name: &str, operator: &pb::Operator) -> Result<u64, Error> {
        cbd_breaker::validate_name(name)?;
        self.shared.writable()?;
        let entry = self.shared.existing(name)?;
        let ((), after) = self.shared.update(&entry, |st, now, entry| {
            if st.deleted {
                return Err(Error::NotFound { name: name.into() });
            }
            st.deleted = true;
            st.push_spec_event(&entry.name, pb::EventKind::Deleted, now, Some(operator));
            Ok(((), None))
        })?;
        self.shared.finish(&entry, after).await
    }

    /// Sets (`Some`) or clears (`None`) the operator override of `name`, for good
    /// or (`lasts`) until it clears itself that long from now.
    pub async fn set_override(
        &self,
        name: &str,
        value: Option<Override>,
        lasts: Option<Duration>,
        operator: &pb::Operator,
    ) -> Result<(pb::BreakerStatus, u64), Error> {
        self.operator_change(name, operator, |m, now| {
            m.set_override_until(value, lasts.map(|d| now.saturating_add(d)), now)
        })
        .await
    }

    /// Back to CLOSED with an empty window and no backoff; the override stays.
    pub async fn reset(
        &self,
        name: &str,
        operator: &pb::Operator,
    ) -> Result<(pb::BreakerStatus, u64), Error> {
        self.operator_change(name, operator, Breaker::reset).await
    }

    /// Every change to a breaker from now on, as it is made and before it is
    /// committed (a change made but never committed, after a failed commit and a
    /// crash, is on it too). For revoking leases at once (docs/DESIGN.md §10); what
    /// is shown to anyone comes from [`Registry::subscribe`]'s committed feed. A
    /// receiver that falls behind gets `Lagged`.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// Subscribes to committed events and returns the revision the subscription
    /// starts after: every event with a higher revision arrives on the feed, which
    /// may also carry a few at or below it (skip those).
    pub fn subscribe(&self) -> Subscription {
        let _publish = self.shared.publish_lock.read();
        self.shared.subscription()
    }

    /// Like [`Registry::subscribe`], plus the committed records of the breakers whose
    /// names start with `prefix`, in name order, at exactly the subscription's
    /// revision. Taken from memory (each entry's last committed record), so it
    /// waits for no commit in progress: only for a publish, which does no I/O.
    pub fn subscribe_with_snapshot(&self, prefix: &str) -> (Subscription, Vec<SnapshotRecord>) {
        let _publish = self.shared.publish_lock.read();
        let records = self.shared.committed_records(&Interest {
            prefix: prefix.to_owned(),
            names: Default::default(),
        });
        (self.shared.subscription(), records)
    }

    /// Registers a Watch stream of `interest`: the revision it starts after and a
    /// feed of the matching events above it (docs/DESIGN.md §5).
    pub fn watch(&self, interest: &Interest) -> WatchSubscription {
        let _publish = self.shared.publish_lock.read();
        self.shared.watch_subscription(interest)
    }

    /// Like [`Registry::watch`], plus the committed records of the breakers that
    /// `interest` matches, in name order, at exactly the subscription's revision.
    /// Costs what it returns: listed names are looked up, a prefix is a range of
    /// the ordered index; only memory is read, under the publish lock's read side.
    pub fn watch_with_snapshot(
        &self,
        interest: &Interest,
    ) -> (WatchSubscription, Vec<SnapshotRecord>) {
        let _publish = self.shared.publish_lock.read();
        let records = self.shared.committed_records(interest);
        (self.shared.watch_subscription(interest), records)
    }

    /// Up to `limit` logged events from revision `from` on, in revision order (a
    /// compacted revision is absent).
    pub async fn events(&self, from: u64, limit: usize) -> Result<Vec<pb::Event>, Error> {
        self.shared.store.clone().events(from, limit).await
    }

    /// One breaker's logged events after revision `after` (a page token; 0: from
    /// the start), at or after `since` if given, at most `page_size`, oldest first.
    /// Scans the retained log up to the revision committed when it starts: the log
    /// has no index by name (docs/DESIGN.md §5).
    pub async fn history(
        &self,
        name: &str,
        since: Option<Timestamp>,
        page_size: usize,
        after: u64,
    ) -> Result<History, Error> {
        /// Events read from the store per step of the scan.
        const SCAN_STEP: usize = 1024;
        cbd_breaker::validate_name(name)?;
        let revision = self.revision();
        let oldest_retained = self.oldest_retained();
        let mut events = Vec::new();
        let mut from = after.saturating_add(1).max(oldest_retained);
        let mut more = false;
        'scan: while from <= revision {
            let step = self.shared.store.clone().events(from, SCAN_STEP).await?;
            let Some(last) = step.last() else { break };
            from = last.revision + 1;
            for event in step {
                if event.revision > revision {
                    break 'scan;
                }
                let at_or_after = |t: &prost_types::Timestamp| {
                    since.is_none_or(|since| cbd_proto::convert::timestamp_from_proto(t) >= since)
                };
                if event.name == name && event.time.as_ref().is_some_and(at_or_after) {
                    if events.len() == page_size {
                        more = true;
                        break 'scan;
                    }
                    events.push(event);
                }
            }
        }
        let next_page_token = match events.last() {
            Some(last) if more => last.revision.to_string(),
            _ => String::new(),
        };
        Ok(History {
            events,
            next_page_token,
            revision,
            oldest_retained,
        })
    }

    /// The oldest revision still in the log.
    pub fn oldest_retained(&self) -> u64 {
        self.shared.oldest_retained.load(Ordering::Acquire)
    }

    /// When this registry was opened (the daemon's start), on its clock.
    pub fn started_at(&self) -> Timestamp {
        self.shared.started
    }

    /// The writer's latest successful group commit; `None` before the first.
    pub fn last_commit(&self) -> Option<LastCommit> {
        *self.shared.last_commit.lock()
    }

    /// Bytes the store takes on disk; `None` for a store that keeps nothing there.
    pub async fn store_size(&self) -> Result<Option<u64>, Error> {
        self.shared.store.clone().size_on_disk().await
    }

    /// The live status of `name`, if it exists (window counts are only in memory).
    pub fn live_status(&self, name: &str) -> Option<pb::BreakerStatus> {
        let entry = self.shared.lookup(name)?;
        let mut st = entry.state.lock();
        st.machine.expire_window(self.shared.config.clock.now());
        (!st.deleted).then(|| st.status(&entry.name))
    }

    /// Waits until every change made so far is durable (used at shutdown), through
    /// store faults: bound it with a timeout.
    pub async fn sync(&self) -> Result<(), Error> {
        let entries: Vec<_> = self.shared.breakers.read().entries().cloned().collect();
        for entry in entries {
            let wait = {
                let st = entry.state.lock();
                entry.undurable(&st)
            };
            if let Some(seq) = wait {
                self.shared
                    .wait_durable(&entry, seq, Faults::WaitThrough)
                    .await?;
            }
        }
        Ok(())
    }

    async fn operator_change(
        &self,
        name: &str,
        operator: &pb::Operator,
        change: impl FnOnce(&mut Breaker, Timestamp) -> cbd_breaker::Transition,
    ) -> Result<(pb::BreakerStatus, u64), Error> {
        cbd_breaker::validate_name(name)?;
        self.shared.writable()?;
        let entry = self.shared.existing(name)?;
        let (status, after) = self.shared.update_by(&entry, operator, |st, now, entry| {
            if st.deleted {
                return Err(Error::NotFound { name: name.into() });
            }
            let t = change(&mut st.machine, now);
            Ok((st.status(&entry.name), Some(t)))
        })?;
        let revision = self.shared.finish(&entry, after).await?;
        let mut status = status;
        // Both are set when the transition is queued, after `status` was taken.
        let st = entry.state.lock();
        status.mod_revision = st.mod_revision;
        status.override_operator.clone_from(&st.override_operator);
        drop(st);
        Ok((status, revision))
    }

    async fn create_from_template(&self, name: &str) -> Result<Arc<Entry>, Error> {
        let spec = self
            .shared
            .config
            .templates
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix.as_str()))
            .map(|(_, spec)| spec.clone())
            .ok_or_else(|| Error::NotFound { name: name.into() })?;
        if self.shared.lookup(name).is_none() {
            // Creating is a write: refused during a store fault like any other.
            self.shared.writable()?;
        }
        let (entry, created) = self.shared.get_or_create(name, &spec, None)?;
        if created {
            tracing::info!(breaker = %name, "created from template");
        }
        Ok(entry)
    }
}

/// A breaker with `spec` starting over at `generation`.
fn revived(spec: Spec, generation: u64) -> Breaker {
    Breaker::restore(
        spec,
        Persisted {
            state: State::Closed,
            override_: None,
            generation,
            open_until: None,
            backoff_level: 0,
            override_until: None,
        },
    )
}

impl Shared {
    /// The revision, the log's start and a new feed receiver; under the publish
    /// lock's read side.
    fn subscription(&self) -> Subscription {
        Subscription {
            revision: self.revision.load(Ordering::Acquire),
            oldest_retained: self.oldest_retained.load(Ordering::Acquire),
            feed: self.feed.subscribe(),
        }
    }

    /// The Watch side of [`Shared::subscription`]; under the publish lock's read side.
    fn watch_subscription(&self, interest: &Interest) -> WatchSubscription {
        let revision = self.revision.load(Ordering::Acquire);
        WatchSubscription {
            revision,
            oldest_retained: self.oldest_retained.load(Ordering::Acquire),
            feed: self.fanout.subscribe(interest, revision),
        }
    }

    /// The committed records of the breakers `interest` matches, in name order.
    fn committed_records(&self, interest: &Interest) -> Vec<SnapshotRecord> {
        let committed = |entry: &Arc<Entry>| entry.state.lock().committed.clone();
        let names = self.breakers.read();
        if interest.names.is_empty() {
            return names
                .starting_with(&interest.prefix, "")
                .filter_map(|(name, entry)| Some((name.clone(), committed(entry)?)))
                .collect();
        }
        // Listed names (at most a thousand) and, if given, the prefix's range.
        let mut records = std::collections::BTreeMap::new();
        for name in &interest.names {
            if let Some(entry) = names.get(name)
                && let Some(record) = committed(entry)
            {
                records.insert(entry.name.clone(), record);
            }
        }
        if !interest.prefix.is_empty() {
            for (name, entry) in names.starting_with(&interest.prefix, "") {
                if !records.contains_key(&**name)
                    && let Some(record) = committed(entry)
                {
                    records.insert(name.clone(), record);
                }
            }
        }
        records.into_iter().collect()
    }

    fn lookup(&self, name: &str) -> Option<Arc<Entry>> {
        self.breakers.read().get(name).cloned()
    }

    /// The generation a breaker created now starts at: one past the last revision
    /// handed out. Every transition takes one generation and one revision, so a
    /// breaker's generation never exceeds the revision of its latest event, and a
    /// name deleted and created again starts above anything its earlier incarnation
    /// reached (docs/DESIGN.md §3.4).
    fn first_generation(&self) -> u64 {
        self.next_revision.load(Ordering::Acquire) + 1
    }

    fn existing(&self, name: &str) -> Result<Arc<Entry>, Error> {
        self.lookup(name)
            .ok_or_else(|| Error::NotFound { name: name.into() })
    }

    /// The entry for `name`, creating it with `spec` (and queueing its SpecPut, by
    /// `operator`; `None`: from a template) if there is none. `true` when it was
    /// created.
    fn get_or_create(
        &self,
        name: &str,
        spec: &Spec,
        operator: Option<&pb::Operator>,
    ) -> Result<(Arc<Entry>, bool), Error> {
        if let Some(entry) = self.lookup(name) {
            return Ok((entry, false));
        }
        let mut map = self.breakers.write();
        if let Some(entry) = map.get(name) {
            return Ok((entry.clone(), false));
        }
        if map.len() >= self.config.max_breakers {
            return Err(Error::LimitReached {
                limit: "--max-breakers",
                max: self.config.max_breakers as u64,
            });
        }
        let name: Arc<str> = name.into();
        let entry = Arc::new(Entry::new(
            name.clone(),
            revived(spec.clone(), self.first_generation()),
            None,
            self.config.metrics.breaker(&name),
        ));
        entry.state.lock().push_spec_event(
            &name,
            pb::EventKind::SpecPut,
            self.config.clock.now(),
            operator,
        );
        map.insert(name, entry.clone());
        Ok((entry, true))
    }

    /// Runs `f` on `entry` under its lock. `f` returns its result and the
    /// transition it caused, if any; the rest of the follow-up is worked out here.
    /// Operator writes check [`Shared::writable`] before; timers are never refused
    /// (a tick is queued and committed when the store recovers).
    fn update<R>(
        &self,
        entry: &Arc<Entry>,
        f: impl FnOnce(&mut EntryState, Timestamp, &Entry) -> Changed<R>,
    ) -> Result<(R, After), Error> {
        self.update_gated(entry, false, None, f)
    }

    /// [`Shared::update`] for an operator's change: its transition's event names
    /// `operator`.
    fn update_by<R>(
        &self,
        entry: &Arc<Entry>,
        operator: &pb::Operator,
        f: impl FnOnce(&mut EntryState, Timestamp, &Entry) -> Changed<R>,
    ) -> Result<(R, After), Error> {
        self.update_gated(entry, false, Some(operator), f)
    }

    /// [`Shared::update`] for Acquire and Report: during a store fault, refused
    /// before changing anything on a breaker with undurable changes (its answer
    /// could not be made durable anyway, and e.g. a probe slot taken for a refused
    /// caller would stay taken). Other breakers keep serving: their answers rest
    /// on committed state, and a transition they cause is queued and answered
    /// UNAVAILABLE.
    fn update_traffic<R>(
        &self,
        entry: &Arc<Entry>,
        f: impl FnOnce(&mut EntryState, Timestamp, &Entry) -> Changed<R>,
    ) -> Result<(R, After), Error> {
        self.update_gated(entry, true, None, f)
    }

    fn update_gated<R>(
        &self,
        entry: &Arc<Entry>,
        traffic: bool,
        operator: Option<&pb::Operator>,
        f: impl FnOnce(&mut EntryState, Timestamp, &Entry) -> Changed<R>,
    ) -> Result<(R, After), Error> {
        let now = self.config.clock.now();
        let mut st = entry.state.lock();
        // Events queued from here on are this update's; pending may hold older ones.
        let queued_before = st.pending.len();
        if traffic && self.failing() {
            // Timers that fell due run first: the transition they cause (OPEN →
            // HALF_OPEN) cannot be made durable now, so the call is refused before
            // the machine admits anyone in the new state (a probe slot given to a
            // refused caller would stay taken until its permit_ttl).
            let mut ticked = After::default();
            if !st.deleted
                && let Some(t) = st.machine.tick(now)
            {
                st.push_transition(&entry.name, &t, None);
                ticked.transitions.push(t);
                entry.show_metrics(&mut st);
                ticked.schedule = self.reschedule(&mut st);
            }
            if entry.undurable(&st).is_some() {
                // Refused; what is pending (a tick, a breaker just created from a
                // template) still goes to the writer so that it is not stranded.
                ticked.changed = !st.pending.is_empty();
                ticked.changes = self.changes_queued(entry, &st, queued_before);
                drop(st);
                self.hand_over(entry, &ticked);
                return Err(self.unavailable());
            }
        }
        let (result, transition) = f(&mut st, now, entry)?;
        let mut after = After::default();
        if let Some(t) = transition {
            st.push_transition(&entry.name, &t, operator);
            after.transitions.push(t);
        }
        entry.show_metrics(&mut st);
        // Pending changes may predate `f` (a breaker just created): hand them over too.
        after.changed = !st.pending.is_empty();
        after.changes = self.changes_queued(entry, &st, queued_before);
        after.wait_for = entry.undurable(&st);
        after.schedule = self.reschedule(&mut st);
        Ok((result, after))
    }

    /// The events queued in `st` since it had `before` pending, as [`Change`]s; none
    /// when no session listens (the hot path then copies nothing).
    fn changes_queued(&self, entry: &Entry, st: &EntryState, before: usize) -> Vec<Change> {
        let queued = st.pending.get(before..).unwrap_or_default();
        if queued.is_empty() || self.changes.receiver_count() == 0 {
            return Vec::new();
        }
        queued
            .iter()
            .map(|e| Change {
                name: entry.name.clone(),
                kind: e.kind,
                state: e.state,
                generation: e.generation,
            })
            .collect()
    }

    /// The deadline to hand the timer task, if it is earlier than the one it has.
    fn reschedule(&self, st: &mut EntryState) -> Option<Timestamp> {
        if st.deleted {
            return None;
        }
        let next = st.machine.next_deadline()?;
        if st.timer_at.is_some_and(|at| at <= next) {
            return None;
        }
        st.timer_at = Some(next);
        Some(next)
    }

    /// The follow-up of an update, with the lock released: log, hand over to the
    /// writer and the timers, and wait for durability if the caller saw anything
    /// that is not yet durable. Returns the revision to answer with.
    async fn finish(&self, entry: &Arc<Entry>, after: After) -> Result<u64, Error> {
        self.hand_over(entry, &after);
        if let Some(seq) = after.wait_for {
            self.wait_durable(entry, seq, Faults::Answer).await?;
        }
        Ok(self.revision.load(Ordering::Acquire))
    }

    /// Logs and counts the transitions, and hands the entry to the writer and the
    /// timer task as needed. Never under the entry's lock.
    fn hand_over(&self, entry: &Arc<Entry>, after: &After) {
        for t in &after.transitions {
            tracing::info!(breaker = %entry.name, from = %t.from, to = %t.to, generation = t.generation, reason = %t.reason, "state changed");
            entry.metrics.transition(t.from, t.to);
        }
        for change in &after.changes {
            // First, before the commit: sessions revoke their leases on it now. No
            // receivers is fine: no session holds a lease.
            let _ = self.changes.send(change.clone());
        }
        if after.changed {
            // The receiver lives as long as `self`; a send only fails during teardown.
            let _ = self.dirty.send(entry.clone());
        }
        if let Some(at) = after.schedule {
            let _ = self.schedule.send((at, entry.clone()));
        }
    }

    /// Waits until `entry` is durable up to change `seq`. During a store fault,
    /// with `Faults::Answer`, returns UNAVAILABLE at once: the change stays queued
    /// and is committed when the store recovers, but the caller is not kept waiting.
    async fn wait_durable(&self, entry: &Entry, seq: u64, faults: Faults) -> Result<(), Error> {
        let mut commits = self.commits.subscribe();
        loop {
            if entry.durable_seq.load(Ordering::Acquire) >= seq {
                return Ok(());
            }
            if faults == Faults::Answer && self.failing() {
                return Err(self.unavailable());
            }
            if commits.changed().await.is_err() {
                return Err(Error::ShuttingDown);
            }
        }
    }

    /// Timer work for one breaker: called by the timer task and at recovery.
    fn tick(&self, entry: &Arc<Entry>) {
        let ticked = self.update(entry, |st, now, _| {
            st.timer_at = None;
            let transition = if st.deleted {
                None
            } else {
                st.machine.tick(now)
            };
            Ok(((), transition))
        });
        if let Ok(((), after)) = ticked {
            self.hand_over(entry, &after);
        }
    }

    /// Publishes a committed batch: under the publish lock (memory only, no I/O),
    /// the entries' committed records and durable sequences, then the revision, so
    /// that a reader who saw the revision sees the entries at least as new and a
    /// snapshot under the lock's read side is exactly one revision; then, with the
    /// lock released, the events to the feed (docs/DESIGN.md §5).
    fn publish(&self, built: &writer::Built) {
        let batch = &built.batch;
        {
            let _publish = self.publish_lock.write();
            for drained in &built.drained {
                drained.entry.state.lock().committed = drained.record.clone();
                drained
                    .entry
                    .durable_seq
                    .store(drained.seq, Ordering::Release);
            }
            self.revision.store(batch.revision, Ordering::Release);
            self.oldest_retained
                .store(batch.oldest_retained, Ordering::Release);
        }
        let events: Vec<Arc<pb::Event>> =
            batch.events.iter().map(|e| Arc::new(e.clone())).collect();
        self.fanout.dispatch(&events, batch.revision);
        if self.feed.receiver_count() > 0 {
            for event in &events {
                // A receiver may go meanwhile: nobody listening is fine.
                let _ = self.feed.send(event.clone());
            }
        }
    }

    /// After a committed delete: drops the entry unless it was revived meanwhile.
    fn forget_if_deleted(&self, entry: &Arc<Entry>) {
        if !entry.state.lock().deleted {
            return;
        }
        let mut map = self.breakers.write();
        let mut st = entry.state.lock();
        if st.deleted
            && st.pending.is_empty()
            && map.get(&entry.name).is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            map.remove(&entry.name);
            st.forgotten = true;
            entry.metrics.release(&mut st.shown);
        }
    }

    fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// The answer to a request the store cannot make durable now.
    fn unavailable(&self) -> Error {
        let cause = match &*self.health.borrow() {
            StoreHealth::Failing { cause } => cause.clone(),
            // Recovered meanwhile; the caller may retry at once.
            StoreHealth::Serving => "a commit failed".to_owned(),
        };
        Error::StoreUnavailable { cause }
    }

    /// Refuses an operator write while the store cannot commit, before it changes
    /// anything, so memory runs ahead of the store by at most the batch in retry.
    fn writable(&self) -> Result<(), Error> {
        if self.failing() {
            return Err(self.unavailable());
        }
        Ok(())
    }

    /// A commit failed: readers of health and waiters for durability learn it now.
    fn store_failed(&self, cause: String) {
        self.health.send_if_modified(|h| {
            let failing = StoreHealth::Failing { cause };
            let changed = *h != failing;
            *h = failing;
            changed
        });
        self.failing.store(true, Ordering::Release);
        self.commits.send_modify(|n| *n += 1);
    }

    /// A commit succeeded after failures.
    fn store_recovered(&self) {
        self.failing.store(false, Ordering::Release);
        self.health.send_replace(StoreHealth::Serving);
    }
}
