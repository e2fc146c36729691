//! Watch fan-out (docs/DESIGN.md §5): committed events go only to the streams whose
//! filter matches them. Watchers are indexed by exact name and by prefix; an event
//! for `a.b.c` looks its name up once and visits only the prefix lengths in use, so
//! an event costs work for the streams it matches, not for every stream.
//!
//! The index sits under one short mutex, taken by the writer once per published
//! batch and by a stream when it opens or ends; nothing under it awaits or blocks
//! (every send is a `try_send` into the stream's bounded queue). A stream whose
//! queue is full is dropped from the index at once, its `lagged` flag set and its
//! queue closed: it reads what is queued (a gapless run), then catches up from the
//! log, so a slow watcher never slows the writer.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use cbd_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::sync::mpsc::{self, error::TrySendError};

/// Which breakers a watcher follows: the names listed, and the breakers under
/// `prefix` (every breaker under it when no names are listed; none when names are
/// listed and the prefix is empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub prefix: String,
    pub names: HashSet<String>,
}

impl Interest {
    /// Whether an event of `name` is for this watcher.
    pub fn matches(&self, name: &str) -> bool {
        if self.names.is_empty() {
            return name.starts_with(&self.prefix);
        }
        self.names.contains(name) || (!self.prefix.is_empty() && name.starts_with(&self.prefix))
    }

    /// The prefix this watcher is indexed under, if any.
    fn indexed_prefix(&self) -> Option<&str> {
        (self.names.is_empty() || !self.prefix.is_empty()).then_some(self.prefix.as_str())
    }
}

/// One stream's live feed: matching events with a revision above the one it was
/// registered at, in revision order, each once. `recv` returning `None` with
/// [`Feed::lagged`] set means the queue overflowed and the stream must catch up
/// from the log; dropping the feed takes the stream out of the index.
#[derive(Debug)]
pub struct Feed {
    events: mpsc::Receiver<Arc<pb::Event>>,
    lagged: Arc<AtomicBool>,
    fanout: Arc<Fanout>,
    id: u64,
}

impl Feed {
    /// The next event; `None` once the feed lagged (or the registry is gone).
    pub async fn recv(&mut self) -> Option<Arc<pb::Event>> {
        self.events.recv().await
    }

    /// Whether the queue overflowed: what is still queued is gapless, and
    /// everything after it must be read from the log.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// The revision up to which this feed has been given every matching event, if
    /// all of them have been received: what a progress message may report. `None`
    /// while events are queued or after the feed lagged.
    pub fn progress(&self) -> Option<u64> {
        // Load first: every event up to it was queued before it was stored.
        let dispatched = self.fanout.dispatched.load(Ordering::Acquire);
        (!self.lagged() && self.events.is_empty()).then_some(dispatched)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.fanout.index.lock().remove(self.id);
    }
}

/// The index of watchers and the revision dispatched so far.
#[derive(Debug)]
pub(crate) struct Fanout {
    index: Mutex<Index>,
    next_id: AtomicU64,
    /// Every event up to this revision is in the queues of the streams it matched
    /// (or those streams lagged).
    dispatched: AtomicU64,
    /// Events a stream's queue holds before it lags.
    capacity: usize,
}

#[derive(Debug, Default)]
struct Index {
    sinks: HashMap<u64, Sink>,
    by_name: HashMap<Arc<str>, HashSet<u64>>,
    by_prefix: HashMap<Arc<str>, HashSet<u64>>,
    /// How many indexed prefixes have each length: an event's name is cut at
    /// these lengths only.
    prefix_lens: BTreeMap<usize, usize>,
}

#[derive(Debug)]
struct Sink {
    tx: mpsc::Sender<Arc<pb::Event>>,
    lagged: Arc<AtomicBool>,
    /// The last revision sent (or the one it was registered at): a watcher indexed
    /// under a name and a prefix that both match is sent the event once.
    last_sent: u64,
    names: Vec<Arc<str>>,
    prefix: Option<Arc<str>>,
}

impl Fanout {
    /// An empty index whose streams lag past `capacity` queued events.
    pub(crate) fn new(capacity: usize, revision: u64) -> Self {
        Self {
            index: Mutex::new(Index::default()),
            next_id: AtomicU64::new(0),
            dispatched: AtomicU64::new(revision),
            capacity: capacity.max(1),
        }
    }

    /// Registers a watcher of `interest` that is sent every matching event above
    /// `revision`. The caller holds the publish lock's read side, so no batch above
    /// `revision` is published meanwhile; one published before may still be being
    /// dispatched (after the write lock is dropped), and the sink's `last_sent =
    /// revision` is what keeps such a batch from reaching this watcher twice
    /// (docs/DESIGN.md §5).
    pub(crate) fn subscribe(self: &Arc<Self>, interest: &Interest, revision: u64) -> Feed {
        let (tx, events) = mpsc::channel(self.capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let names: Vec<Arc<str>> = interest
            .names
            .iter()
            .map(|n| Arc::from(n.as_str()))
            .collect();
        let prefix: Option<Arc<str>> = interest.indexed_prefix().map(Arc::from);
        let mut index = self.index.lock();
        for name in &names {
            index.by_name.entry(name.clone()).or_default().insert(id);
        }
        if let Some(prefix) = &prefix {
            *index.prefix_lens.entry(prefix.len()).or_default() += 1;
            index
                .by_prefix
                .entry(prefix.clone())
                .or_default()
                .insert(id);
        }
        index.sinks.insert(
            id,
            Sink {
                tx,
                lagged: lagged.clone(),
                last_sent: revision,
                names,
                prefix,
            },
        );
        drop(index);
        Feed {
            events,
            lagged,
            fanout: self.clone(),
            id,
        }
    }

    /// Queues a committed batch (revision order, ending at `revision`) for the
    /// streams each event matches. Called by the writer only, so batches arrive in
    /// revision order.
    pub(crate) fn dispatch(&self, events: &[Arc<pb::Event>], revision: u64) {
        let mut index = self.index.lock();
        if !index.sinks.is_empty() {
            let mut ids = Vec::new();
            for event in events {
                index.matching(&event.name, &mut ids);
                for &id in &ids {
                    let Some(sink) = index.sinks.get_mut(&id) else {
                        continue; // lagged earlier in this batch
                    };
                    if event.revision <= sink.last_sent {
                        continue;
                    }
                    sink.last_sent = event.revision;
                    match sink.tx.try_send(event.clone()) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            // Flag first, then close: the stream reads the flag
                            // after its queue runs dry.
                            sink.lagged.store(true, Ordering::Release);
                            index.remove(id);
                        }
                        // The stream is going away; its drop removes it too.
                        Err(TrySendError::Closed(_)) => index.remove(id),
                    }
                }
            }
        }
        self.dispatched.store(revision, Ordering::Release);
    }

    /// Streams in the index (for tests and metrics).
    #[cfg(test)]
    pub(crate) fn watchers(&self) -> usize {
        self.index.lock().sinks.len()
    }

    /// Names and prefixes with at least one watcher (for tests).
    #[cfg(test)]
    fn keys(&self) -> (usize, usize, usize) {
        let index = self.index.lock();
        (
            index.by_name.len(),
            index.by_prefix.len(),
            index.prefix_lens.len(),
        )
    }
}

impl Index {
    /// The ids of the streams indexed under `name` or a prefix of it, into `ids`
    /// (a stream may appear twice; the send skips the second).
    fn matching(&self, name: &str, ids: &mut Vec<u64>) {
        ids.clear();
        if let Some(set) = self.by_name.get(name) {
            ids.extend(set);
        }
        for &len in self.prefix_lens.keys() {
            if len > name.len() {
                break;
            }
            if let Some(set) = name
                .get(..len)
                .and_then(|prefix| self.by_prefix.get(prefix))
            {
                ids.extend(set);
            }
        }
    }

    /// Takes stream `id` out of every map (closing its queue); a name or prefix
    /// left without watchers is removed.
    fn remove(&mut self, id: u64) {
        let Some(sink) = self.sinks.remove(&id) else {
            return;
        };
        for name in &sink.names {
            if let Some(set) = self.by_name.get_mut(name) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_name.remove(name);
                }
            }
        }
        if let Some(prefix) = &sink.prefix {
            if let Some(set) = self.by_prefix.get_mut(prefix) {
                set.remove(&id);
                if set.is_empty() {
                    self.by_prefix.remove(prefix);
                }
            }
            if let Some(count) = self.prefix_lens.get_mut(&prefix.len()) {
                *count -= 1;
                if *count == 0 {
                    self.prefix_lens.remove(&prefix.len());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: u64, name: &str) -> Arc<pb::Event> {
        Arc::new(pb::Event {
            revision,
            name: name.into(),
            ..Default::default()
        })
    }

    fn names(list: &[&str]) -> Interest {
        Interest {
            prefix: String::new(),
            names: list.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    fn prefix(p: &str) -> Interest {
        Interest {
            prefix: p.into(),
            names: HashSet::new(),
        }
    }

    /// What is queued on `feed` now, as (revision, name).
    fn queued(feed: &mut Feed) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Ok(e) = feed.events.try_recv() {
            out.push((e.revision, e.name.clone()));
        }
        out
    }

    /// Dispatches one event per name, at revisions from `first` on, one batch.
    fn publish(fanout: &Fanout, first: u64, names: &[&str]) -> u64 {
        let events: Vec<_> = names
            .iter()
            .zip(first..)
            .map(|(name, rev)| event(rev, name))
            .collect();
        let last = first + names.len() as u64 - 1;
        fanout.dispatch(&events, last);
        last
    }

    #[test]
    fn a_name_watcher_gets_only_its_events() {
        let fanout = Arc::new(Fanout::new(64, 0));
        let mut a = fanout.subscribe(&names(&["svc/a"]), 0);
        let mut b = fanout.subscribe(&names(&["svc/b"]), 0);
        publish(&fanout, 1, &["svc/a", "svc/b", "svc/ab", "svc/a", "svc/"]);
        assert_eq!(queued(&mut a), [(1, "svc/a".into()), (4, "svc/a".into())]);
        assert_eq!(queued(&mut b), [(2, "svc/b".into())]);
    }

    #[test]
    fn prefix_watchers_get_the_names_under_their_prefix() {
        let fanout = Arc::new(Fanout::new(64, 0));
        let mut all = fanout.subscribe(&prefix(""), 0);
        let mut a = fanout.subscribe(&prefix("a."), 0);
        let mut ab = fanout.subscribe(&prefix("a.b."), 0);
        let mut other = fanout.subscribe(&prefix("z"), 0);
        publish(&fanout, 1, &["a.b.c", "a.x", "a", "b.a.b.c", "a.b."]);
        let revs =
            |feed: &mut Feed| -> Vec<u64> { queued(feed).into_iter().map(|e| e.0).collect() };
        assert_eq!(revs(&mut all), [1, 2, 3, 4, 5]);
        assert_eq!(revs(&mut a), [1, 2, 5]);
        assert_eq!(revs(&mut ab), [1, 5]);
        assert_eq!(revs(&mut other), Vec::<u64>::new());
    }

    #[test]
    fn overlapping_filters_each_get_an_event_once() {
        let fanout = Arc::new(Fanout::new(64, 0));
        // Indexed under a name and a prefix that both match `p/x`.
        let both = Interest {
            prefix: "p/".into(),
            names: ["p/x".to_owned(), "q".to_owned()].into(),
        };
        let mut both_feed = fanout.subscribe(&both, 0);
        let mut x = fanout.subscribe(&names(&["p/x"]), 0);
        let mut p = fanout.subscribe(&prefix("p"), 0);
        publish(&fanout, 1, &["p/x", "q", "p/y", "r"]);
        let revs =
            |feed: &mut Feed| -> Vec<u64> { queued(feed).into_iter().map(|e| e.0).collect() };
        assert_eq!(revs(&mut both_feed), [1, 2, 3]);
        assert_eq!(revs(&mut x), [1]);
        assert_eq!(revs(&mut p), [1, 3]);
        for (name, matched) in [("p/x", true), ("q", true), ("p/y", true), ("r", false)] {
            assert_eq!(both.matches(name), matched, "{name}");
        }
    }

    #[test]
    fn nothing_at_or_below_the_registered_revision_is_sent() {
        let fanout = Arc::new(Fanout::new(64, 0));
        // Registered at 5 while the batch ending at 5 was still being dispatched.
        let mut feed = fanout.subscribe(&prefix(""), 5);
        publish(&fanout, 4, &["a", "b", "c"]);
        assert_eq!(queued(&mut feed), [(6, "c".into())]);
    }

    #[test]
    fn dropping_a_feed_frees_its_entries() {
        let fanout = Arc::new(Fanout::new(64, 0));
        let a = fanout.subscribe(&names(&["a", "b"]), 0);
        let a2 = fanout.subscribe(&names(&["a"]), 0);
        let p = fanout.subscribe(&prefix("x/"), 0);
        let both = fanout.subscribe(
            &Interest {
                prefix: "y".into(),
                names: ["a".to_owned()].into(),
            },
            0,
        );
        assert_eq!(fanout.watchers(), 4);
        // Names a and b; prefixes x/ and y, of two lengths.
        assert_eq!(fanout.keys(), (2, 2, 2));
        drop(a);
        assert_eq!(fanout.keys(), (1, 2, 2), "b had only the first watcher");
        drop(p);
        drop(both);
        assert_eq!(fanout.keys(), (1, 0, 0));
        drop(a2);
        assert_eq!(fanout.watchers(), 0);
        assert_eq!(fanout.keys(), (0, 0, 0));
        // Dispatching to nobody still advances the revision.
        publish(&fanout, 1, &["a"]);
        assert_eq!(fanout.dispatched.load(Ordering::Acquire), 1);
    }

    #[tokio::test]
    async fn a_full_queue_lags_keeps_its_gapless_head_and_leaves_the_index() {
        let fanout = Arc::new(Fanout::new(3, 0));
        let mut slow = fanout.subscribe(&prefix(""), 0);
        let mut quick = fanout.subscribe(&names(&["a"]), 0);
        assert_eq!(slow.progress(), Some(0));
        publish(&fanout, 1, &["a", "b", "c", "d", "a"]);
        assert!(slow.lagged());
        assert_eq!(slow.progress(), None, "no progress past a lag");
        assert_eq!(fanout.watchers(), 1, "the lagged stream left the index");
        // What was queued is revisions 1..=3 with no gap, then the end.
        let mut got = Vec::new();
        while let Some(e) = slow.recv().await {
            got.push(e.revision);
        }
        assert_eq!(got, [1, 2, 3]);
        // Another stream is not held back by it.
        assert!(!quick.lagged());
        assert_eq!(queued(&mut quick), [(1, "a".into()), (5, "a".into())]);
        assert_eq!(quick.progress(), Some(5));
        // A later batch reaches the quick stream only.
        publish(&fanout, 6, &["a"]);
        assert_eq!(queued(&mut quick), [(6, "a".into())]);
    }

    #[test]
    fn progress_waits_until_the_queue_is_read() {
        let fanout = Arc::new(Fanout::new(8, 0));
        let mut feed = fanout.subscribe(&names(&["a"]), 0);
        publish(&fanout, 1, &["b", "a", "b"]);
        assert_eq!(feed.progress(), None, "event 2 is still queued");
        assert_eq!(queued(&mut feed), [(2, "a".into())]);
        assert_eq!(feed.progress(), Some(3));
    }
}
