//! The bidirectional Session stream: many acquires and reports on one stream,
//! answered by id; a bad item gets its own error and the stream goes on.

use std::time::Duration;

use cbd_proto::v1::{self as pb, session_request::Kind as In, session_response::Kind as Out};
use cbd_tests::{Daemon, put};
use futures::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn session_answers_each_item_by_id() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    put(
        &mut admin,
        "s",
        pb::BreakerSpec {
            consecutive_failures: Some(2),
            ..Default::default()
        },
    )
    .await;
    let mut client = daemon.breakers().await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut answers = client
        .session(ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    let mut answer = async || {
        tokio::time::timeout(WAIT, answers.next())
            .await
            .expect("an answer in time")
            .expect("stream open")
            .expect("ok")
    };
    let send = async |id: u64, kind: Option<In>| {
        tx.send(pb::SessionRequest { id, kind })
            .await
            .expect("send");
    };

    // Two failures trip it: acquire, report, acquire, report, on one stream.
    for round in 0..2u64 {
        send(
            10 + round,
            Some(In::Acquire(pb::AcquireRequest {
                name: "s".into(),
                caller: String::new(),
            })),
        )
        .await;
        let a = answer().await;
        assert_eq!(a.id, 10 + round);
        let Some(Out::Acquire(acquired)) = a.kind else {
            panic!("acquire answer: {a:?}")
        };
        assert!(acquired.allowed);
        send(
            20 + round,
            Some(In::Report(pb::ReportRequest {
                permit: acquired.permit,
                outcome: pb::Outcome::Failure as i32,
                duration: None,
                caller: String::new(),
            })),
        )
        .await;
        let r = answer().await;
        assert_eq!(r.id, 20 + round);
        let Some(Out::Report(reported)) = r.kind else {
            panic!("report answer: {r:?}")
        };
        let expected = if round == 0 {
            pb::State::Closed
        } else {
            pb::State::Open
        };
        assert_eq!(reported.state(), expected);
    }

    // Bad items get their own errors; the stream carries on.
    send(30, None).await;
    send(
        31,
        Some(In::Acquire(pb::AcquireRequest {
            name: "missing".into(),
            caller: String::new(),
        })),
    )
    .await;
    let mut errors = Vec::new();
    for _ in 0..2 {
        let a = answer().await;
        let Some(Out::Error(status)) = a.kind else {
            panic!("error answer: {a:?}")
        };
        errors.push((a.id, status.code));
    }
    errors.sort_unstable();
    assert_eq!(
        errors,
        [
            (30, Code::InvalidArgument as i32),
            (31, Code::NotFound as i32)
        ]
    );

    send(
        40,
        Some(In::Acquire(pb::AcquireRequest {
            name: "s".into(),
            caller: String::new(),
        })),
    )
    .await;
    let a = answer().await;
    let Some(Out::Acquire(rejected)) = a.kind else {
        panic!("acquire answer: {a:?}")
    };
    assert!(!rejected.allowed, "open after two failures");

    // Closing our side ends the stream cleanly.
    drop(tx);
    let end = tokio::time::timeout(WAIT, answers.next())
        .await
        .expect("end in time");
    assert!(
        end.is_none(),
        "stream ends after the client half-closes: {end:?}"
    );
}

#[tokio::test]
async fn an_oversized_item_ends_the_session_with_resource_exhausted() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    put(&mut admin, "big", pb::BreakerSpec::default()).await;
    let mut client = daemon.breakers().await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = client
        .session(ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    // One good item first, so the stream is open and answering when the big one comes.
    tx.send(pb::SessionRequest {
        id: 1,
        kind: Some(In::Acquire(pb::AcquireRequest {
            name: "big".into(),
            caller: String::new(),
        })),
    })
    .await
    .expect("send");
    let first = tokio::time::timeout(WAIT, answers.next())
        .await
        .expect("an answer in time")
        .expect("stream open")
        .expect("ok");
    assert_eq!(first.id, 1);
    // Above the default --max-message-size (64 KiB): the same code as a unary call.
    tx.send(pb::SessionRequest {
        id: 2,
        kind: Some(In::Acquire(pb::AcquireRequest {
            name: "x".repeat(100 * 1024),
            caller: String::new(),
        })),
    })
    .await
    .expect("send");
    let status = tokio::time::timeout(WAIT, answers.next())
        .await
        .expect("an answer in time")
        .expect("stream open")
        .expect_err("oversized item");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-message-size"),
        "{}",
        status.message()
    );
}
