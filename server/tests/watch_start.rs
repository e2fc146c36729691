//! A watch whose start revision is beyond the store never sends an earlier event,
//! also when it falls behind the live feed and catches up from the log.

use std::{sync::Arc, time::Duration};

use cbd::{
    metrics::Metrics,
    registry::{FEED_CAPACITY, Registry, RegistryConfig},
    service::watch::Watcher,
    store::sled::SledStore,
};
use cbd_proto::v1::{self as pb, watch_response::Kind};
use futures::{StreamExt, future::join_all};

/// A registry on sled in `dir` holding at most `max_breakers` and `retention` events,
/// with a Watcher for it; the sender keeps the watcher running.
fn open(
    dir: &tempfile::TempDir,
    max_breakers: usize,
    retention: u64,
) -> (Registry, Watcher, tokio::sync::watch::Sender<bool>) {
    let store = SledStore::open(&dir.path().join("data")).expect("open sled");
    let registry = Registry::open(
        Arc::new(store),
        RegistryConfig {
            max_breakers,
            watch_retention: retention,
            templates: Vec::new(),
            metrics: Metrics::new(16),
            clock: cbd::clock::Clock::wall(),
        },
    )
    .expect("registry");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let watcher = Watcher::new(registry.clone(), 4, stopping);
    (registry, watcher, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_waiting_for_its_start_catches_up_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let changes = FEED_CAPACITY as u64 + 100;
    let (registry, watcher, _stop) = open(&dir, changes as usize, 2 * changes);

    let current = registry.revision();
    let start = current + changes;
    let stream = watcher
        .start(pb::WatchRequest {
            start_revision: Some(start),
            ..Default::default()
        })
        .expect("watch");
    let mut stream = std::pin::pin!(stream);

    // More changes than the live feed holds, none read yet: the first read finds the
    // feed lagged and catches up from the log. Concurrent puts commit in few batches.
    let puts = (0..changes).map(|i| {
        let registry = registry.clone();
        async move {
            registry
                .put(
                    &format!("b{i}"),
                    cbd_breaker::Spec::default(),
                    &Default::default(),
                )
                .await
                .expect("put")
        }
    });
    join_all(puts).await;
    assert_eq!(registry.revision(), start);

    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message in time")
        .expect("stream open")
        .expect("no error");
    match first.kind {
        Some(Kind::Event(e)) => assert_eq!(e.revision, start, "first event"),
        other => panic!("expected the event at {start}, got {other:?}"),
    }
}

/// Puts `n` breakers named `{prefix}{i}`, concurrently (few group commits).
async fn put_many(registry: &Registry, prefix: &str, n: u64) {
    join_all((0..n).map(|i| {
        let registry = registry.clone();
        let name = format!("{prefix}{i}");
        async move {
            registry
                .put(&name, cbd_breaker::Spec::default(), &Default::default())
                .await
                .expect("put")
        }
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_overtaken_by_compaction_ends_out_of_range_not_with_a_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (registry, watcher, _stop) = open(&dir, 10_000, 1000);
    // 1,200 retained events: the replay reads them in chunks of 500.
    put_many(&registry, "a", 1200).await;
    let stream = watcher
        .start(pb::WatchRequest {
            start_revision: Some(250),
            ..Default::default()
        })
        .expect("watch");
    let mut stream = std::pin::pin!(stream);
    let first = stream.next().await.expect("open").expect("event");
    assert!(matches!(first.kind, Some(Kind::Event(ref e)) if e.revision == 250));

    // While the watcher sits in its first chunk, the log moves on past its next one.
    put_many(&registry, "b", 1500).await;
    let mut last = 250;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a message in time")
            .expect("the stream ends with an error, not silently");
        match item {
            Ok(m) => match m.kind {
                Some(Kind::Event(e)) => {
                    assert_eq!(e.revision, last + 1, "a gap after revision {last}");
                    last = e.revision;
                }
                other => panic!("unexpected {other:?}"),
            },
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
                assert!(last < 1200, "it ended inside the replay, at {last}");
                return;
            }
        }
    }
}
