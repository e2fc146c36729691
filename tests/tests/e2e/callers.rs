//! Per-caller attribution and quorum tripping against a real daemon
//! (docs/DESIGN.md §3.7): `min_distinct_callers` holds a breaker closed while one
//! caller fails and trips it once a second one does; `cbctl get` shows the failing
//! callers; a named token is its own caller; bad callers are refused by code.

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, cbctl, get_breaker, put, with_token};
use futures::StreamExt as _;
use serde_json::Value;
use tonic::{Code, transport::Channel};

type Breakers = pb::breakers_client::BreakersClient<Channel>;

/// One acquire and report of `name` by `caller` (empty: none); the state after.
async fn call(client: &mut Breakers, name: &str, caller: &str, ok: bool) -> pb::State {
    let acquired = client
        .acquire(pb::AcquireRequest {
            name: name.into(),
            caller: caller.into(),
        })
        .await
        .expect("acquire")
        .into_inner();
    assert!(acquired.allowed, "{name} by {caller:?} rejected");
    let outcome = if ok {
        pb::Outcome::Success
    } else {
        pb::Outcome::Failure
    };
    client
        .report(pb::ReportRequest {
            permit: acquired.permit,
            outcome: outcome as i32,
            duration: None,
            caller: caller.into(),
        })
        .await
        .expect("report")
        .into_inner()
        .state()
}

/// Trips at a third of the calls failing, once 6 are in the window.
fn rate_spec(quorum: u32) -> pb::BreakerSpec {
    pb::BreakerSpec {
        failure_rate_percent: Some(30),
        minimum_calls: Some(6),
        window: Some(pb::breaker_spec::Window::CountWindow(pb::CountWindow {
            calls: 100,
        })),
        min_distinct_callers: Some(quorum),
        ..Default::default()
    }
}

#[tokio::test]
async fn one_failing_caller_of_three_does_not_trip_a_quorum_of_two_and_two_do() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "quorum", rate_spec(2)).await;
    put(&mut admin, "no-quorum", rate_spec(1)).await;

    // The same traffic on both: "api" and "batch" succeed, "cron" fails (33%).
    let mut tripped_without_quorum = false;
    for _ in 0..4 {
        for name in ["quorum", "no-quorum"] {
            if name == "no-quorum" && tripped_without_quorum {
                continue;
            }
            let mut last = pb::State::Closed;
            for (caller, ok) in [("api", true), ("batch", true), ("cron", false)] {
                last = call(&mut client, name, caller, ok).await;
            }
            if name == "quorum" {
                assert_eq!(last, pb::State::Closed, "one failing caller: no quorum");
            } else if last == pb::State::Open {
                tripped_without_quorum = true;
            }
        }
    }
    assert!(
        tripped_without_quorum,
        "the same failures trip without a quorum"
    );
    let b = get_breaker(&mut admin, "quorum").await;
    assert_eq!((b.window_calls, b.window_failures), (12, 4));
    assert_eq!(b.state(), pb::State::Closed);
    assert_eq!(b.failing_callers.len(), 1);
    assert_eq!(b.failing_callers[0].caller, "cron");

    // A second caller fails: 5 of 13 from two callers.
    assert_eq!(
        call(&mut client, "quorum", "batch", false).await,
        pb::State::Open
    );
}

#[tokio::test]
async fn cbctl_get_shows_the_top_failing_callers() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    // A rate that these calls never reach: the window keeps them.
    put(
        &mut admin,
        "search",
        pb::BreakerSpec {
            failure_rate_percent: Some(100),
            minimum_calls: Some(50),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..3 {
        call(&mut client, "search", "checkout", false).await;
    }
    call(&mut client, "search", "checkout", true).await;
    call(&mut client, "search", "web", false).await;
    call(&mut client, "search", "", false).await;
    call(&mut client, "search", "web", true).await;
    call(&mut client, "search", "web", true).await;
    call(&mut client, "search", "mobile", true).await;

    let table = cbctl(&daemon, &["get", "search"]).await;
    println!("{table}");
    let section = table
        .split("failing callers:")
        .nth(1)
        .expect("a failing callers section")
        .split("\nspec:")
        .next()
        .expect("before the spec");
    let lines: Vec<&str> = section.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "{section}");
    // Most failures first; equal failures: more calls first.
    assert!(lines[0].trim().starts_with("checkout"), "{section}");
    assert!(lines[0].ends_with("3 failures of 4 calls"), "{section}");
    assert!(lines[1].trim().starts_with("web"), "{section}");
    assert!(lines[1].ends_with("1 failure of 3 calls"), "{section}");
    assert!(lines[2].trim().starts_with("(no caller)"), "{section}");
    assert!(lines[2].ends_with("1 failure of 1 call"), "{section}");
    assert!(!section.contains("mobile"), "no failures, not listed");

    let json: Value = serde_json::from_str(&cbctl(&daemon, &["-o", "json", "get", "search"]).await)
        .expect("json");
    let top = &json["breaker"]["failing_callers"];
    assert_eq!(top[0]["caller"], "checkout", "{json}");
    assert_eq!(top[0]["failures"], 3);
    assert_eq!(top[0]["calls"], 4);
    assert_eq!(top[2]["caller"], "");
}

#[tokio::test]
async fn a_named_token_is_its_own_caller_and_cannot_claim_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        "[[token]]\nrole = \"admin\"\ntoken = \"admin-token\"\n\n\
         [[token]]\nrole = \"client\"\ntoken = \"checkout-token\"\nname = \"checkout\"\n",
    )
    .expect("write tokens");
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &["--auth-file", tokens.to_str().expect("utf-8")],
    )
    .await;
    let mut admin = daemon.admin().await;
    admin
        .put_breaker(with_token(
            pb::PutBreakerRequest {
                name: "t".into(),
                spec: Some(pb::BreakerSpec {
                    consecutive_failures: Some(100),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "admin-token",
        ))
        .await
        .expect("put");
    let mut client = daemon.breakers().await;
    let acquire = |caller: &str| {
        with_token(
            pb::AcquireRequest {
                name: "t".into(),
                caller: caller.into(),
            },
            "checkout-token",
        )
    };
    // Another name: PERMISSION_DENIED naming the field, on every form.
    let denied = client.acquire(acquire("search")).await.expect_err("denied");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("caller"), "{denied:?}");
    // Its own name, or none: the token's name is the caller.
    for caller in ["checkout", ""] {
        let a = client
            .acquire(acquire(caller))
            .await
            .expect("own name")
            .into_inner();
        client
            .report(with_token(
                pb::ReportRequest {
                    permit: a.permit,
                    outcome: pb::Outcome::Failure as i32,
                    duration: None,
                    caller: caller.into(),
                },
                "checkout-token",
            ))
            .await
            .expect("report");
    }
    let a = client
        .acquire(acquire(""))
        .await
        .expect("acquire")
        .into_inner();
    let denied = client
        .report(with_token(
            pb::ReportRequest {
                permit: a.permit,
                outcome: pb::Outcome::Failure as i32,
                duration: None,
                caller: "search".into(),
            },
            "checkout-token",
        ))
        .await
        .expect_err("denied");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let b = admin
        .get_breaker(with_token(
            pb::GetBreakerRequest { name: "t".into() },
            "admin-token",
        ))
        .await
        .expect("get")
        .into_inner()
        .breaker
        .expect("breaker");
    assert_eq!(b.window_failures, 2, "the denied report counted nothing");
    assert_eq!(b.failing_callers.len(), 1);
    assert_eq!(
        (
            b.failing_callers[0].caller.as_str(),
            b.failing_callers[0].failures
        ),
        ("checkout", 2)
    );
    // A token without a name may claim any caller.
    let a = client
        .acquire(with_token(
            pb::AcquireRequest {
                name: "t".into(),
                caller: "search".into(),
            },
            "admin-token",
        ))
        .await
        .expect("an unnamed token claims freely");
    assert!(a.into_inner().allowed);
}

#[tokio::test]
async fn a_bad_caller_is_invalid_argument_naming_caller_on_every_form() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "ok", pb::BreakerSpec::default()).await;
    let permit = cbd_tests::acquire(&mut client, "ok").await.permit;
    let long = "c".repeat(257);
    for bad in ["has space", "semi;colon", "ünï", "*", long.as_str()] {
        let check = |status: tonic::Status| {
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
            assert!(status.message().contains("caller"), "{status:?}");
        };
        let acquire = pb::AcquireRequest {
            name: "ok".into(),
            caller: bad.into(),
        };
        let report = pb::ReportRequest {
            permit: permit.clone(),
            outcome: pb::Outcome::Failure as i32,
            duration: None,
            caller: bad.into(),
        };
        check(client.acquire(acquire.clone()).await.expect_err("acquire"));
        check(client.report(report.clone()).await.expect_err("report"));
        let batch = client
            .acquire_batch(pb::AcquireBatchRequest {
                items: vec![acquire.clone()],
            })
            .await
            .expect("batch")
            .into_inner();
        let error = batch.results[0].error.clone().expect("item error");
        assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
        assert!(error.message.contains("caller"), "{error:?}");
        let batch = client
            .report_batch(pb::ReportBatchRequest {
                items: vec![report.clone()],
            })
            .await
            .expect("batch")
            .into_inner();
        let error = batch.results[0].error.clone().expect("item error");
        assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
        // Session: acquire, report, lease and outcomes items.
        use pb::session_request::Kind as In;
        let items = vec![
            In::Acquire(acquire),
            In::Report(report),
            In::Lease(pb::LeaseRequest {
                name: "ok".into(),
                caller: bad.into(),
            }),
            In::Outcomes(pb::LeasedOutcomes {
                caller: bad.into(),
                sequence: 1,
                ..Default::default()
            }),
        ];
        let n = items.len();
        let requests: Vec<pb::SessionRequest> = items
            .into_iter()
            .enumerate()
            .map(|(i, kind)| pb::SessionRequest {
                id: i as u64 + 1,
                kind: Some(kind),
            })
            .collect();
        let mut answers = client
            .session(futures::stream::iter(requests))
            .await
            .expect("session")
            .into_inner();
        for _ in 0..n {
            let answer = answers.next().await.expect("answer").expect("no error");
            match answer.kind {
                Some(pb::session_response::Kind::Error(e)) => {
                    assert_eq!(e.code, Code::InvalidArgument as i32, "{e:?}");
                    assert!(e.message.contains("caller"), "{e:?}");
                }
                other => panic!("item {}: {other:?}", answer.id),
            }
        }
    }
    // The permit was never consumed by the refused reports.
    let r = cbd_tests::report(&mut client, &permit, pb::Outcome::Success).await;
    assert!(!r.stale);
}

#[tokio::test]
async fn a_report_without_a_caller_is_attributed_to_the_acquires() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "p", rate_spec(1)).await;
    for (acquired_as, reported_as) in [("cron", ""), ("cron", "batch"), ("", "")] {
        let a = client
            .acquire(pb::AcquireRequest {
                name: "p".into(),
                caller: acquired_as.into(),
            })
            .await
            .expect("acquire")
            .into_inner();
        client
            .report(pb::ReportRequest {
                permit: a.permit,
                outcome: pb::Outcome::Failure as i32,
                duration: None,
                caller: reported_as.into(),
            })
            .await
            .expect("report");
    }
    let b = get_breaker(&mut admin, "p").await;
    let mut seen: Vec<(String, u64)> = b
        .failing_callers
        .into_iter()
        .map(|c| (c.caller, c.failures))
        .collect();
    seen.sort();
    // The permit's caller when the report names none; the report's own otherwise.
    assert_eq!(
        seen,
        [
            (String::new(), 1),
            ("batch".to_owned(), 1),
            ("cron".to_owned(), 1)
        ]
    );
}
