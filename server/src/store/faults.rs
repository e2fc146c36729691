//! A store wrapper that injects faults into commits, after etcd's failpoints: the
//! Nth commit from now, the next N, or every commit until cleared, fails, is delayed
//! (tokio time, so paused tests pay nothing), or stalls until the test releases it.
//! The test keeps an `Arc<FaultStore>` as its handle and gives the registry a clone.
//! Reads (`load`, `events`) pass through untouched.

use std::{sync::Arc, time::Duration};

use cbd_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::{sync::watch, time::Instant};

use super::{Committed, Loaded, Store, StoreFuture, WriteBatch};
use crate::error::Error;

/// What happens to a commit a rule matches.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Fails with `Error::Storage(cause)` before reaching the inner store.
    Fail(String),
    /// Reaches the inner store (the batch lands), then fails with
    /// `Error::Storage(cause)`: sled's fdatasync or manifest write failing.
    FailAfterApply(String),
    /// Waits this long (tokio time), then commits.
    Delay(Duration),
    /// Waits until [`FaultStore::release`] (or [`FaultStore::clear`]), then commits.
    Stall,
}

/// Which commit attempts a rule applies to, counted from 1 = the next attempt.
#[derive(Clone, Copy, Debug)]
pub enum When {
    /// Only the Nth attempt from now.
    Nth(u64),
    /// The next N attempts.
    Next(u64),
    /// Every attempt until [`FaultStore::clear`].
    Always,
}

#[derive(Debug)]
struct Rule {
    /// Attempt numbers `first..=last` (absolute).
    first: u64,
    last: u64,
    fault: Fault,
}

#[derive(Debug, Default)]
struct Plan {
    rules: Vec<Rule>,
    /// When each commit was attempted (tokio time).
    attempts: Vec<Instant>,
    /// Each attempt's changes.
    changes: Vec<usize>,
}

/// `inner` with commit faults injected on demand.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn Store>,
    plan: Mutex<Plan>,
    /// Bumped by every release; a stalled commit waits for it to move.
    released: watch::Sender<u64>,
    /// Commits stalled right now.
    stalled: watch::Sender<usize>,
    /// Advertised instead of the inner store's `max_batch`, when set.
    max_batch: Mutex<Option<usize>>,
}

impl FaultStore {
    /// Wraps `inner`; no faults until a rule is added.
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            plan: Mutex::default(),
            released: watch::Sender::new(0),
            stalled: watch::Sender::new(0),
            max_batch: Mutex::new(None),
        })
    }

    /// Advertises `max` changes per batch (as the etcd store does), whatever the
    /// inner store says.
    pub fn set_max_batch(&self, max: usize) {
        *self.max_batch.lock() = Some(max);
    }

    /// The changes (puts, deletes, events) of each commit attempt, in order.
    pub fn batch_changes(&self) -> Vec<usize> {
        self.plan.lock().changes.clone()
    }

    /// Adds a rule; the first rule matching an attempt decides it.
    pub fn inject(&self, when: When, fault: Fault) {
        let mut plan = self.plan.lock();
        let done = plan.attempts.len() as u64;
        let (first, last) = match when {
            When::Nth(n) => (done + n, done + n),
            When::Next(n) => (done + 1, done + n),
            When::Always => (done + 1, u64::MAX),
        };
        plan.rules.push(Rule { first, last, fault });
    }

    /// Removes every rule and releases stalled commits.
    pub fn clear(&self) {
        self.plan.lock().rules.clear();
        self.release();
    }

    /// Lets every commit stalled now go on.
    pub fn release(&self) {
        self.released.send_modify(|n| *n += 1);
    }

    /// Resolves once at least `n` commits are stalled.
    pub async fn stalled(&self, n: usize) {
        let mut stalled = self.stalled.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = stalled.wait_for(|s| *s >= n).await;
    }

    /// When each commit was attempted, in order (tokio time).
    pub fn attempts(&self) -> Vec<Instant> {
        self.plan.lock().attempts.clone()
    }

    /// Records an attempt and picks its fault.
    fn attempt(&self) -> Option<Fault> {
        let mut plan = self.plan.lock();
        plan.attempts.push(Instant::now());
        let n = plan.attempts.len() as u64;
        plan.rules
            .iter()
            .find(|r| (r.first..=r.last).contains(&n))
            .map(|r| r.fault.clone())
    }
}

impl Store for FaultStore {
    fn load(&self) -> Result<Loaded, Error> {
        self.inner.load()
    }

    fn commit(self: Arc<Self>, batch: Arc<WriteBatch>) -> StoreFuture<Committed> {
        let fault = self.attempt();
        self.plan
            .lock()
            .changes
            .push(batch.puts.len() + batch.deletes.len() + batch.events.len());
        // Subscribed now, so a release that comes before the future first runs counts.
        let mut released = self.released.subscribe();
        Box::pin(async move {
            match fault {
                None => {}
                Some(Fault::Fail(cause)) => return Err(Error::Storage(cause)),
                Some(Fault::FailAfterApply(cause)) => {
                    self.inner.clone().commit(batch).await?;
                    return Err(Error::Storage(cause));
                }
                Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
                Some(Fault::Stall) => {
                    self.stalled.send_modify(|n| *n += 1);
                    let _ = released.changed().await;
                    self.stalled.send_modify(|n| *n -= 1);
                }
            }
            self.inner.clone().commit(batch).await
        })
    }

    fn events(self: Arc<Self>, from: u64, limit: usize) -> StoreFuture<Vec<pb::Event>> {
        self.inner.clone().events(from, limit)
    }

    fn size_on_disk(self: Arc<Self>) -> StoreFuture<Option<u64>> {
        self.inner.clone().size_on_disk()
    }

    fn max_batch(&self) -> Option<usize> {
        self.max_batch.lock().or_else(|| self.inner.max_batch())
    }
}
