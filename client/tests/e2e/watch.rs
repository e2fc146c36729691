//! `Client::watch` across daemon crashes, network loss, stalls and compaction.

use std::time::Duration;

use cbd_client::{Client, Error, OnCompaction, WatchEvent, WatchFilter, WatchStream, pb};
use cbd_tests::{Daemon, acquire, report};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::support::{ContOnDrop, Proxy, WAIT, daemon, put, spec};

/// Reads a watch stream on its own task, so that it keeps running (and
/// reconnecting) while the test does other things.
struct Collector {
    rx: mpsc::UnboundedReceiver<Result<WatchEvent, Error>>,
    /// Every event received so far, in order.
    events: Vec<pb::Event>,
    snapshots: Vec<(u64, bool)>,
    /// `false` for each Interrupted, `true` for each Resumed, in order.
    outages: Vec<bool>,
}

impl Collector {
    fn start(mut stream: WatchStream) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            events: Vec::new(),
            snapshots: Vec::new(),
            outages: Vec::new(),
        }
    }

    /// Every outage was reported once and followed by a resume; at least one.
    fn assert_outages_reported(&self) {
        assert!(!self.outages.is_empty(), "an outage was reported");
        let alternating = self
            .outages
            .iter()
            .enumerate()
            .all(|(i, resumed)| *resumed == (i % 2 == 1));
        assert!(
            alternating && self.outages.len().is_multiple_of(2),
            "interrupted, resumed, ...: {:?}",
            self.outages
        );
    }

    /// The next item that is not a progress message or an outage notice.
    async fn next(&mut self) -> WatchEvent {
        loop {
            let item = tokio::time::timeout(WAIT, self.rx.recv())
                .await
                .expect("a watch message in time")
                .expect("stream open")
                .expect("no error");
            match &item {
                WatchEvent::Progress { .. } => continue,
                WatchEvent::Interrupted { reason } => {
                    assert!(!reason.is_empty());
                    self.outages.push(false);
                    continue;
                }
                WatchEvent::Resumed { .. } => {
                    self.outages.push(true);
                    continue;
                }
                WatchEvent::Event(e) => self.events.push(e.clone()),
                WatchEvent::Snapshot {
                    revision, resync, ..
                } => self.snapshots.push((*revision, *resync)),
            }
            return item;
        }
    }

    /// Reads until an event satisfies `until`; returns it.
    async fn until(&mut self, until: impl Fn(&pb::Event) -> bool) -> pb::Event {
        loop {
            if let WatchEvent::Event(e) = self.next().await
                && until(&e)
            {
                return e;
            }
        }
    }
}

/// Every event with a revision in `from..=to` whose name starts with `prefix`,
/// straight from the daemon's log (a raw Watch with `start_revision`).
async fn replay(daemon: &Daemon, prefix: &str, from: u64, to: u64) -> Vec<pb::Event> {
    let mut stream = daemon
        .breakers()
        .await
        .watch(pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                prefix: prefix.into(),
                names: vec![],
            }),
            start_revision: Some(from),
            progress_interval: None,
        })
        .await
        .expect("replay watch")
        .into_inner();
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &pb::Event| e.revision < to) {
        let msg = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("replay in time")
            .expect("replay ok")
            .expect("replay open");
        if let Some(pb::watch_response::Kind::Event(e)) = msg.kind {
            events.push(e);
        }
    }
    events
}

/// Trips `name` (consecutive_failures 1) with one failure, straight to the daemon.
async fn trip(daemon: &Daemon, name: &str) {
    let mut raw = daemon.breakers().await;
    let a = acquire(&mut raw, name).await;
    assert!(a.allowed, "{name} allowed");
    report(&mut raw, &a.permit, pb::Outcome::Failure).await;
}

fn watch_client(endpoint: String) -> Client {
    Client::builder(endpoint)
        .watch_progress_interval(Duration::from_millis(100))
        .build()
        .expect("client")
}

#[tokio::test]
async fn watch_resumes_across_kill9_restart_and_network_loss_without_gap_or_duplicate() {
    let (_dir, mut daemon) = daemon(&[]).await;
    let proxy = Proxy::start(daemon.addr).await;
    let client = watch_client(proxy.endpoint());
    let admin = watch_client(daemon.endpoint());
    put(&admin, "w/a", spec(1, 100)).await;
    put(&admin, "w/b", spec(1, 100)).await;
    put(&admin, "other", spec(1, 100)).await;

    let mut watch = Collector::start(client.watch(WatchFilter::prefix("w/"), None));
    let WatchEvent::Snapshot {
        breakers,
        revision: start,
        resync,
    } = watch.next().await
    else {
        panic!("a watch without start_revision begins with a snapshot");
    };
    assert!(!resync);
    let names: Vec<_> = breakers.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["w/a", "w/b"]);

    // Live: w/a trips, its timer half-opens it.
    trip(&daemon, "w/a").await;
    trip(&daemon, "other").await;
    watch
        .until(|e| e.name == "w/a" && e.state() == pb::State::HalfOpen)
        .await;

    // kill -9, with changes made while the daemon is down (none), at restart (the
    // timers that fell due) and right after it, before the watch is back.
    trip(&daemon, "w/b").await;
    daemon.restart().await;
    proxy.set_target(Some(daemon.addr));
    let admin = watch_client(daemon.endpoint());
    put(&admin, "w/c", spec(1, 100)).await;
    trip(&daemon, "w/c").await;
    watch
        .until(|e| e.name == "w/c" && e.state() == pb::State::Open)
        .await;

    // Network loss: connections cut, and none possible while changes happen.
    proxy.set_target(None);
    proxy.cut();
    put(&admin, "w/d", spec(1, 100)).await;
    trip(&daemon, "w/d").await;
    let gone = admin
        .admin_client()
        .delete_breaker(pb::DeleteBreakerRequest {
            name: "w/a".into(),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    proxy.set_target(Some(daemon.addr));

    // A last marker, then compare with the daemon's own log.
    let end = put(&admin, "w/zz-end", spec(1, 100)).await.revision;
    assert!(end > gone.revision);
    watch.until(|e| e.revision == end).await;
    let expected = replay(&daemon, "w/", start + 1, end).await;
    let got_revisions: Vec<u64> = watch.events.iter().map(|e| e.revision).collect();
    let expected_revisions: Vec<u64> = expected.iter().map(|e| e.revision).collect();
    assert_eq!(got_revisions, expected_revisions, "no gap, no duplicate");
    assert_eq!(watch.events, expected, "the same events");
    assert!(watch.events.iter().all(|e| e.name.starts_with("w/")));
    assert_eq!(watch.snapshots, [(start, false)], "resumed, never resynced");
    watch.assert_outages_reported();
}

#[tokio::test]
async fn watch_survives_a_stalled_daemon() {
    let (_dir, daemon) = daemon(&[]).await;
    let client = watch_client(daemon.endpoint());
    put(&client, "s/a", spec(1, 60_000)).await;
    let mut watch = Collector::start(client.watch(WatchFilter::names(["s/a"]), None));
    let WatchEvent::Snapshot { revision, .. } = watch.next().await else {
        panic!("snapshot first");
    };
    {
        daemon.signal(cbd_tests::Signal::STOP);
        let _cont = ContOnDrop(&daemon);
        // Longer than the stream's idle timeout (2 x 100 ms + 1 s): it gives up on
        // the silent stream and keeps trying.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }
    trip(&daemon, "s/a").await;
    let e = watch.until(|e| e.name == "s/a").await;
    assert_eq!(e.state(), pb::State::Open);
    assert_eq!(e.revision, revision + 1, "nothing missed");
    assert_eq!(watch.events.len(), 1, "nothing repeated");
    watch.assert_outages_reported();
}

#[tokio::test]
async fn on_compaction_fail_ends_the_stream_naming_the_oldest_revision() {
    let (_dir, daemon) = daemon(&["--watch-retention", "3"]).await;
    let client = watch_client(daemon.endpoint());
    for name in ["f/a", "f/b", "f/c", "f/d", "f/e"] {
        put(&client, name, spec(1, 60_000)).await;
    }
    let mut stream = client.watch_with(WatchFilter::prefix("f/"), Some(1), OnCompaction::Fail);
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time");
    match first {
        Some(Err(Error::Compacted {
            oldest_retained, ..
        })) => assert_eq!(oldest_retained, Some(3)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the stream ended");
}

#[tokio::test]
async fn compacted_resume_delivers_a_resync_snapshot() {
    let (_dir, daemon) = daemon(&["--watch-retention", "3"]).await;
    let proxy = Proxy::start(daemon.addr).await;
    let admin = watch_client(daemon.endpoint());
    for name in ["c/a", "c/b", "c/c", "c/d", "c/e"] {
        put(&admin, name, spec(1, 60_000)).await;
    }

    // A start revision that is already gone.
    let client = watch_client(proxy.endpoint());
    let mut watch = Collector::start(client.watch(WatchFilter::prefix("c/"), Some(1)));
    let WatchEvent::Snapshot {
        breakers,
        revision,
        resync,
    } = watch.next().await
    else {
        panic!("a compacted start revision gives a snapshot");
    };
    assert!(resync);
    assert_eq!(breakers.len(), 5);

    // Disconnected while more than the retained events happen: the resume is out of
    // range, so the stream resyncs, then goes on live.
    proxy.set_target(None);
    proxy.cut();
    for name in ["c/a", "c/b", "c/c", "c/d"] {
        trip(&daemon, name).await;
    }
    proxy.set_target(Some(daemon.addr));
    let WatchEvent::Snapshot {
        breakers,
        revision: again,
        resync,
    } = watch.next().await
    else {
        panic!("expected a resync snapshot");
    };
    assert!(resync);
    assert!(again >= revision + 4);
    let open = breakers
        .iter()
        .filter(|b| b.state() == pb::State::Open)
        .count();
    assert_eq!(open, 4, "the snapshot shows the changes it stands for");

    trip(&daemon, "c/e").await;
    let e = watch.until(|e| e.name == "c/e").await;
    assert_eq!(e.revision, again + 1);
}

#[tokio::test]
async fn watch_with_a_bad_filter_ends_with_invalid_argument() {
    let (_dir, daemon) = daemon(&[]).await;
    let client = watch_client(daemon.endpoint());
    let mut stream = client.watch(WatchFilter::names(["not a name!"]), None);
    let first = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time");
    assert!(
        matches!(first, Some(Err(Error::InvalidArgument(_)))),
        "{first:?}"
    );
    assert!(stream.next().await.is_none(), "the stream ended");
}
