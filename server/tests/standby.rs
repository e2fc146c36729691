//! A standby's routes over a real socket (docs/DESIGN.md §11): every cbd call is
//! UNAVAILABLE naming the leader as the hint has it at the time of the call; health
//! answers, with `cbd.v1.Leader` NOT_SERVING.

use cbd::standby::{self, LEADER_HEALTH_SERVICE};
use cbd_proto::{
    LEADER_METADATA,
    v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient},
};
use tonic::{Code, transport::Server};
use tonic_health::{
    ServingStatus,
    pb::{
        HealthCheckRequest, health_check_response::ServingStatus as Wire,
        health_client::HealthClient,
    },
};

/// UNAVAILABLE with `cbd-leader` set to `leader` (empty: none known).
fn assert_points_to(err: &tonic::Status, leader: &str) {
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        err.metadata()
            .get(LEADER_METADATA)
            .expect("cbd-leader present"),
        leader
    );
}

#[tokio::test]
async fn every_call_is_unavailable_naming_the_current_leader() {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(LEADER_HEALTH_SERVICE, ServingStatus::NotServing)
        .await;
    let (hint_tx, hint) = tokio::sync::watch::channel(None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        Server::builder()
            .add_routes(standby::routes(health, hint))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    let mut breakers = BreakersClient::new(channel.clone());
    let err = breakers
        .acquire(pb::AcquireRequest {
            name: "payments".into(),
            ..Default::default()
        })
        .await
        .expect_err("a standby decides nothing");
    // Empty, not absent: a standby's answer, go to another endpoint.
    assert_points_to(&err, "");

    hint_tx.send_replace(Some("http://127.0.0.1:7411".into()));
    let err = AdminClient::new(channel.clone())
        .put_breaker(pb::PutBreakerRequest {
            name: "payments".into(),
            ..Default::default()
        })
        .await
        .expect_err("a standby writes nothing");
    assert_points_to(&err, "http://127.0.0.1:7411");
    // A stream is refused the same way.
    let err = breakers
        .watch(pb::WatchRequest::default())
        .await
        .expect_err("no watch on a standby");
    assert_points_to(&err, "http://127.0.0.1:7411");

    let mut health = HealthClient::new(channel);
    let leader = health
        .check(HealthCheckRequest {
            service: LEADER_HEALTH_SERVICE.into(),
        })
        .await
        .expect("health answers on a standby")
        .into_inner();
    assert_eq!(leader.status(), Wire::NotServing);
}
