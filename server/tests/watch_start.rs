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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_waiting_for_its_start_catches_up_from_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SledStore::open(&dir.path().join("data")).expect("open sled");
    let changes = FEED_CAPACITY as u64 + 100;
    let registry = Registry::open(
        Arc::new(store),
        RegistryConfig {
            max_breakers: changes as usize,
            watch_retention: 2 * changes,
            templates: Vec::new(),
            metrics: Metrics::new(16),
        },
    )
    .expect("registry");
    let (_stop, stopping) = tokio::sync::watch::channel(false);
    let watcher = Watcher::new(registry.clone(), 4, stopping);

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
                .put(&format!("b{i}"), cbd_breaker::Spec::default())
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
