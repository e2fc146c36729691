//! Limits end to end: each answered with RESOURCE_EXHAUSTED and a message naming its
//! flag, and the daemon keeps serving everyone else.

use std::time::Duration;

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, acquire, eventually, put};
use futures::future::join_all;
use tonic::{Code, Status};

const WAIT: Duration = Duration::from_secs(10);

fn assert_exhausted<T: std::fmt::Debug>(result: Result<T, Status>, flag: &str) {
    let status = result.expect_err("expected RESOURCE_EXHAUSTED");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains(flag),
        "message {:?} should name {flag}",
        status.message()
    );
}

#[tokio::test]
async fn an_oversized_message_is_resource_exhausted_naming_the_flag() {
    let daemon = Daemon::fresh(&["--max-message-size", "4096"]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "ok", pb::BreakerSpec::default()).await;

    let huge = "x".repeat(8 * 1024);
    assert_exhausted(
        client
            .acquire(pb::AcquireRequest {
                name: huge.clone(),
                caller: String::new(),
            })
            .await,
        "--max-message-size",
    );
    assert_exhausted(
        admin
            .put_breaker(pb::PutBreakerRequest {
                name: huge,
                spec: None,
                ..Default::default()
            })
            .await,
        "--max-message-size",
    );
    // A Session item above the limit ends the stream the same way.
    let item = pb::SessionRequest {
        id: 1,
        kind: Some(pb::session_request::Kind::Acquire(pb::AcquireRequest {
            name: "x".repeat(8 * 1024),
            caller: String::new(),
        })),
    };
    let mut session = client
        .session(futures::stream::iter([item]))
        .await
        .expect("session opens")
        .into_inner();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), session.message())
        .await
        .expect("an answer in time");
    assert_exhausted(ended, "--max-message-size");
    // Same connection, still serving.
    assert!(acquire(&mut client, "ok").await.allowed);
}

#[tokio::test]
async fn too_many_watchers_is_resource_exhausted_and_a_freed_slot_is_reused() {
    let daemon = Daemon::fresh(&["--max-watchers", "2"]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "ok", pb::BreakerSpec::default()).await;

    let first = client
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch 1");
    let _second = client
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch 2");
    assert_exhausted(
        client.watch(pb::WatchRequest::default()).await,
        "--max-watchers",
    );
    // Other RPCs are not affected.
    assert!(acquire(&mut client, "ok").await.allowed);

    // Closing a stream frees its slot.
    drop(first);
    let mut c = client.clone();
    eventually(WAIT, "a watch slot freed", || {
        let mut c = c.clone();
        async move { c.watch(pb::WatchRequest::default()).await.ok() }
    })
    .await;
    assert!(acquire(&mut c, "ok").await.allowed);
}

#[tokio::test]
async fn too_many_breakers_is_resource_exhausted_naming_the_flag() {
    let daemon = Daemon::fresh(&["--max-breakers", "2"]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "a", pb::BreakerSpec::default()).await;
    put(&mut admin, "b", pb::BreakerSpec::default()).await;
    assert_exhausted(
        admin
            .put_breaker(pb::PutBreakerRequest {
                name: "c".into(),
                spec: None,
                ..Default::default()
            })
            .await,
        "--max-breakers",
    );
    // The existing ones keep working, and changing them is still allowed.
    assert!(acquire(&mut client, "a").await.allowed);
    put(
        &mut admin,
        "b",
        pb::BreakerSpec {
            consecutive_failures: Some(9),
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test]
async fn past_max_concurrent_requests_requests_are_refused_not_queued() {
    let daemon = Daemon::fresh(&["--max-concurrent-requests", "1"]).await;
    let admin = daemon.admin().await;
    // Puts of new breakers each wait for a flush, so a burst of them on one
    // connection overlaps in the daemon: all but the ones that got the slot are
    // refused at once. Bounded: a few rounds at most.
    let mut refused = None;
    for round in 0..10 {
        let results = join_all((0..32).map(|i| {
            let mut admin = admin.clone();
            async move {
                admin
                    .put_breaker(pb::PutBreakerRequest {
                        name: format!("r{round}-{i}"),
                        spec: None,
                        ..Default::default()
                    })
                    .await
            }
        }))
        .await;
        for r in results {
            match r {
                Ok(_) => {}
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    refused = Some(status);
                }
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let status = refused.expect("some request over the limit");
    assert!(
        status.message().contains("--max-concurrent-requests"),
        "{status:?}"
    );
    // Health is not limited, and one request at a time is served.
    assert!(daemon.health().await.is_some());
    put(&mut admin.clone(), "after", pb::BreakerSpec::default()).await;
}
