//! Bad input on every RPC: the right code, a message naming the field, and a daemon
//! that keeps serving.

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, acquire, ms, put, report};
use tonic::Code;

/// Asserts `result` failed with `code` and a message mentioning `field`.
fn assert_error<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, field: &str) {
    let status = result.expect_err("expected an error");
    assert_eq!(status.code(), code, "{field}: {}", status.message());
    assert!(
        status.message().contains(field),
        "message {:?} should name {field:?}",
        status.message()
    );
}

#[tokio::test]
async fn every_rpc_rejects_bad_input_with_the_right_code() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "ok", pb::BreakerSpec::default()).await;

    // Names: empty, oversized, bad characters, on every RPC that takes one.
    let long = "a".repeat(257);
    for bad in ["", long.as_str(), "has space", "semi;colon", "ünï"] {
        assert_error(
            client
                .acquire(pb::AcquireRequest {
                    name: bad.into(),
                    caller: String::new(),
                })
                .await,
            Code::InvalidArgument,
            "name",
        );
        assert_error(
            admin
                .put_breaker(pb::PutBreakerRequest {
                    name: bad.into(),
                    spec: None,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "name",
        );
        assert_error(
            admin
                .get_breaker(pb::GetBreakerRequest { name: bad.into() })
                .await,
            Code::InvalidArgument,
            "name",
        );
        assert_error(
            admin
                .delete_breaker(pb::DeleteBreakerRequest {
                    name: bad.into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "name",
        );
        assert_error(
            admin
                .set_override(pb::SetOverrideRequest {
                    name: bad.into(),
                    r#override: 1,
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "name",
        );
        assert_error(
            admin
                .reset_breaker(pb::ResetBreakerRequest {
                    name: bad.into(),
                    ..Default::default()
                })
                .await,
            Code::InvalidArgument,
            "name",
        );
    }
    // A name of exactly 256 bytes is fine.
    put(&mut admin, &"a".repeat(256), pb::BreakerSpec::default()).await;

    // Unknown breakers.
    assert_error(
        client
            .acquire(pb::AcquireRequest {
                name: "nope".into(),
                caller: String::new(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_error(
        admin
            .get_breaker(pb::GetBreakerRequest {
                name: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_error(
        admin
            .delete_breaker(pb::DeleteBreakerRequest {
                name: "nope".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_error(
        admin
            .set_override(pb::SetOverrideRequest {
                name: "nope".into(),
                r#override: 1,
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_error(
        admin
            .reset_breaker(pb::ResetBreakerRequest {
                name: "nope".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nope",
    );

    // Invalid specs, one rule each; the message names the field.
    let bad_specs: Vec<(pb::BreakerSpec, &str)> = vec![
        (
            pb::BreakerSpec {
                failure_rate_percent: Some(0),
                ..Default::default()
            },
            "failure_rate_percent",
        ),
        (
            pb::BreakerSpec {
                failure_rate_percent: Some(101),
                ..Default::default()
            },
            "failure_rate_percent",
        ),
        (
            pb::BreakerSpec {
                slow_call_rate_percent: Some(50),
                ..Default::default()
            },
            "slow_call_duration",
        ),
        (
            pb::BreakerSpec {
                consecutive_failures: Some(0),
                ..Default::default()
            },
            "consecutive_failures",
        ),
        (
            pb::BreakerSpec {
                minimum_calls: Some(0),
                ..Default::default()
            },
            "minimum_calls",
        ),
        (
            pb::BreakerSpec {
                window: Some(pb::breaker_spec::Window::CountWindow(pb::CountWindow {
                    calls: 0,
                })),
                ..Default::default()
            },
            "window",
        ),
        (
            pb::BreakerSpec {
                window: Some(pb::breaker_spec::Window::TimeWindow(pb::TimeWindow {
                    duration: None,
                    buckets: 0,
                })),
                ..Default::default()
            },
            "window",
        ),
        (
            pb::BreakerSpec {
                half_open_permits: Some(0),
                ..Default::default()
            },
            "half_open_permits",
        ),
        (
            pb::BreakerSpec {
                half_open_permits: Some(1),
                success_threshold: Some(2),
                ..Default::default()
            },
            "success_threshold",
        ),
        (
            pb::BreakerSpec {
                open_duration: Some(ms(10_000)),
                max_open_duration: Some(ms(5_000)),
                ..Default::default()
            },
            "max_open_duration",
        ),
        (
            pb::BreakerSpec {
                open_duration: Some(ms(0)),
                ..Default::default()
            },
            "open_duration",
        ),
        (
            pb::BreakerSpec {
                open_duration: Some(prost_types::Duration {
                    seconds: -5,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "open_duration",
        ),
        (
            pb::BreakerSpec {
                permit_ttl: Some(ms(0)),
                ..Default::default()
            },
            "permit_ttl",
        ),
        (
            pb::BreakerSpec {
                open_duration: Some(ms(90_000_000)),
                ..Default::default()
            },
            "open_duration",
        ),
        (
            pb::BreakerSpec {
                open_duration: Some(prost_types::Duration {
                    seconds: i64::MAX,
                    nanos: 999_999_999,
                }),
                ..Default::default()
            },
            "open_duration",
        ),
        (
            pb::BreakerSpec {
                cache_ttl: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 1_000_000_000,
                }),
                ..Default::default()
            },
            "cache_ttl",
        ),
        (
            pb::BreakerSpec {
                window: Some(pb::breaker_spec::Window::TimeWindow(pb::TimeWindow {
                    duration: Some(prost_types::Duration {
                        seconds: 25 * 3600,
                        nanos: 0,
                    }),
                    buckets: 10,
                })),
                ..Default::default()
            },
            "window.duration",
        ),
        (
            pb::BreakerSpec {
                fallback: 42,
                ..Default::default()
            },
            "fallback",
        ),
        (
            pb::BreakerSpec {
                min_distinct_callers: Some(0),
                ..Default::default()
            },
            "min_distinct_callers",
        ),
        (
            pb::BreakerSpec {
                min_distinct_callers: Some(65),
                ..Default::default()
            },
            "min_distinct_callers",
        ),
    ];
    for (spec, field) in bad_specs {
        let result = admin
            .put_breaker(pb::PutBreakerRequest {
                name: "bad-spec".into(),
                spec: Some(spec),
                ..Default::default()
            })
            .await;
        assert_error(result, Code::InvalidArgument, &format!("spec.{field}"));
    }
    assert_error(
        admin
            .get_breaker(pb::GetBreakerRequest {
                name: "bad-spec".into(),
            })
            .await,
        Code::NotFound,
        "bad-spec",
    );

    // Permits: missing, garbage, truncated, of a deleted breaker; outcome missing.
    let good = acquire(&mut client, "ok").await.permit;
    let garbage = b"definitely-not-a-permit".to_vec();
    let truncated = good[..good.len() - 3].to_vec();
    for permit in [Vec::new(), garbage, truncated] {
        let r = client
            .report(pb::ReportRequest {
                permit,
                outcome: pb::Outcome::Success as i32,
                duration: None,
                caller: String::new(),
            })
            .await;
        assert_error(r, Code::InvalidArgument, "permit");
    }
    let r = client
        .report(pb::ReportRequest {
            permit: good.clone(),
            outcome: 0,
            duration: None,
            caller: String::new(),
        })
        .await;
    assert_error(r, Code::InvalidArgument, "outcome");
    let r = client
        .report(pb::ReportRequest {
            permit: good.clone(),
            outcome: 99,
            duration: None,
            caller: String::new(),
        })
        .await;
    assert_error(r, Code::InvalidArgument, "outcome");
    let r = client
        .report(pb::ReportRequest {
            permit: good.clone(),
            outcome: pb::Outcome::Success as i32,
            duration: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
            caller: String::new(),
        })
        .await;
    assert_error(r, Code::InvalidArgument, "duration");
    let r = client
        .report(pb::ReportRequest {
            permit: good.clone(),
            outcome: pb::Outcome::Success as i32,
            duration: Some(prost_types::Duration {
                seconds: i64::MAX,
                nanos: 0,
            }),
            caller: String::new(),
        })
        .await;
    assert_error(r, Code::InvalidArgument, "duration");

    put(&mut admin, "doomed", pb::BreakerSpec::default()).await;
    let doomed = acquire(&mut client, "doomed").await.permit;
    admin
        .delete_breaker(pb::DeleteBreakerRequest {
            name: "doomed".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let r = client
        .report(pb::ReportRequest {
            permit: doomed,
            outcome: pb::Outcome::Failure as i32,
            duration: None,
            caller: String::new(),
        })
        .await;
    assert_error(r, Code::NotFound, "doomed");

    // Overrides and listing.
    assert_error(
        admin
            .set_override(pb::SetOverrideRequest {
                name: "ok".into(),
                r#override: 42,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "override",
    );
    assert_error(
        admin
            .list_breakers(pb::ListBreakersRequest {
                page_size: 5000,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_size",
    );
    assert_error(
        admin
            .list_breakers(pb::ListBreakersRequest {
                prefix: "bad prefix".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "prefix",
    );

    // Batches: too many items; per-item errors come back per item.
    let too_many = pb::AcquireBatchRequest {
        items: (0..1001)
            .map(|_| pb::AcquireRequest {
                name: "ok".into(),
                caller: String::new(),
            })
            .collect(),
    };
    assert_error(
        client.acquire_batch(too_many).await,
        Code::InvalidArgument,
        "items",
    );
    let mixed = client
        .acquire_batch(pb::AcquireBatchRequest {
            items: vec![
                pb::AcquireRequest {
                    name: "ok".into(),
                    caller: String::new(),
                },
                pb::AcquireRequest {
                    name: "nope".into(),
                    caller: String::new(),
                },
            ],
        })
        .await
        .expect("batch")
        .into_inner();
    assert!(
        mixed.results[0]
            .response
            .as_ref()
            .expect("answered")
            .allowed
    );
    assert_eq!(
        mixed.results[1].error.as_ref().expect("error").code,
        Code::NotFound as i32
    );
    let reports = client
        .report_batch(pb::ReportBatchRequest {
            items: vec![
                pb::ReportRequest {
                    permit: good.clone(),
                    outcome: pb::Outcome::Success as i32,
                    duration: None,
                    caller: String::new(),
                },
                pb::ReportRequest {
                    permit: vec![1, 2, 3],
                    outcome: pb::Outcome::Success as i32,
                    duration: None,
                    caller: String::new(),
                },
            ],
        })
        .await
        .expect("batch")
        .into_inner();
    assert!(reports.results[0].response.is_some());
    assert_eq!(
        reports.results[1].error.as_ref().expect("error").code,
        Code::InvalidArgument as i32
    );

    // Watch filters.
    let w = client
        .watch(pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                prefix: "bad prefix".into(),
                names: vec![],
            }),
            ..Default::default()
        })
        .await;
    assert_error(w, Code::InvalidArgument, "filter.prefix");
    let w = client
        .watch(pb::WatchRequest {
            progress_interval: Some(ms(1)),
            ..Default::default()
        })
        .await;
    assert_error(w, Code::InvalidArgument, "progress_interval");
    // A huge interval used to pass validation and then panic the stream
    // (`overflow when adding duration to instant`).
    for (seconds, nanos) in [(i64::MAX, 0), (3601, 0), (1, -1), (0, 1_000_000_000)] {
        let w = client
            .watch(pb::WatchRequest {
                progress_interval: Some(prost_types::Duration { seconds, nanos }),
                ..Default::default()
            })
            .await;
        assert_error(w, Code::InvalidArgument, "progress_interval");
    }
    let w = client
        .watch(pb::WatchRequest {
            start_revision: Some(0),
            ..Default::default()
        })
        .await;
    assert_error(w, Code::InvalidArgument, "start_revision");

    // Oversized message (default limit 64 KiB).
    let huge = pb::AcquireRequest {
        name: "x".repeat(100 * 1024),
        caller: String::new(),
    };
    let status = client.acquire(huge).await.expect_err("oversized");
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::InvalidArgument
        ),
        "oversized message: {status:?}"
    );

    // Still serving.
    let a = acquire(&mut client, "ok").await;
    assert!(a.allowed);
    assert!(
        !report(&mut client, &a.permit, pb::Outcome::Success)
            .await
            .stale
    );
}

#[tokio::test]
async fn templates_create_breakers_and_the_cap_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cbd.toml");
    std::fs::write(
        &config,
        "[[template]]\nprefix = \"auto/\"\nconsecutive_failures = 2\nopen_duration = \"1h\"\n",
    )
    .expect("write config");
    let daemon = Daemon::start(
        &dir.path().join("data"),
        &[
            "--config",
            config.to_str().expect("utf8"),
            "--max-breakers",
            "3",
        ],
    )
    .await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;

    // Unknown name under the prefix: created from the template, persisted.
    let a = acquire(&mut client, "auto/first").await;
    assert!(a.allowed);
    let s = admin
        .get_breaker(pb::GetBreakerRequest {
            name: "auto/first".into(),
        })
        .await
        .expect("created")
        .into_inner()
        .breaker
        .expect("breaker");
    assert_eq!(s.spec.expect("spec").consecutive_failures, Some(2));
    // Outside every prefix: NOT_FOUND.
    assert_error(
        client
            .acquire(pb::AcquireRequest {
                name: "manual/x".into(),
                caller: String::new(),
            })
            .await,
        Code::NotFound,
        "manual/x",
    );

    acquire(&mut client, "auto/second").await;
    acquire(&mut client, "auto/third").await;
    // Past --max-breakers: RESOURCE_EXHAUSTED, from a template and from a put.
    assert_error(
        client
            .acquire(pb::AcquireRequest {
                name: "auto/fourth".into(),
                caller: String::new(),
            })
            .await,
        Code::ResourceExhausted,
        "--max-breakers",
    );
    assert_error(
        admin
            .put_breaker(pb::PutBreakerRequest {
                name: "manual".into(),
                spec: None,
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "--max-breakers",
    );
    // Existing ones keep working.
    assert!(acquire(&mut client, "auto/first").await.allowed);
}

/// Sends `body` as the request message of `path`, bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = pb::AcquireResponse;
    type Encoder = RawEncoder;
    type Decoder = cbd_proto::codec::StrictDecoder<pb::AcquireResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        cbd_proto::codec::StrictCodec::<Vec<u8>, pb::AcquireResponse>::default().decoder()
    }
}

async fn raw_call(daemon: &Daemon, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(daemon.channel().await);
    grpc.ready().await.expect("ready");
    grpc.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .expect_err("an undecodable request is refused")
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument_not_internal() {
    let daemon = Daemon::fresh(&[]).await;
    let cases: [(&str, Vec<u8>); 4] = [
        ("garbage", vec![0xff; 12]),
        // Field 1 (name), length 2, bytes that are not UTF-8.
        ("non-UTF-8 name", vec![0x0a, 0x02, 0xff, 0xfe]),
        // Field 1 announces 5 bytes and has 1.
        ("truncated", vec![0x0a, 0x05, b'a']),
        // A varint that never ends.
        ("endless varint", vec![0x08, 0xff, 0xff, 0xff]),
    ];
    for path in [
        "/cbd.v1.Breakers/Acquire",
        "/cbd.v1.Admin/PutBreaker",
        "/cbd.v1.Admin/GetBreaker",
    ] {
        for (what, body) in &cases {
            let status = raw_call(&daemon, path, body.clone()).await;
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{path} {what}: {status:?}"
            );
            assert!(
                status.message().starts_with("message could not be decoded"),
                "{path} {what}: {status:?}"
            );
        }
    }
    let mut admin = daemon.admin().await;
    put(&mut admin, "still-serving", pb::BreakerSpec::default()).await;
}
