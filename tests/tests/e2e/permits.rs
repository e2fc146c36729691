//! Permits are minted only by the daemon, count at most once, and never collide across
//! restarts or incarnations of a name; generations never go back (issue 11, items 1–2).

use std::time::Duration;

use cbd_proto::v1::{self as pb, breakers_client::BreakersClient};
use cbd_tests::{Daemon, acquire, ms, put, report, wait_state};
use futures::StreamExt;
use tonic::{Code, transport::Channel};

const WAIT: Duration = Duration::from_secs(10);

fn three_failures(open_ms: u64) -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(3),
        open_duration: Some(ms(open_ms)),
        ..Default::default()
    }
}

/// Three failed calls: enough to trip [`three_failures`].
async fn trip(client: &mut BreakersClient<Channel>, name: &str) {
    for _ in 0..3 {
        let a = acquire(client, name).await;
        report(client, &a.permit, pb::Outcome::Failure).await;
    }
}

async fn report_status(
    client: &mut BreakersClient<Channel>,
    permit: Vec<u8>,
    outcome: pb::Outcome,
) -> tonic::Status {
    client
        .report(pb::ReportRequest {
            permit,
            outcome: outcome as i32,
            duration: None,
            caller: String::new(),
        })
        .await
        .expect_err("the report must be refused")
}

fn assert_invalid_permit(status: &tonic::Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("permit:"), "{status:?}");
}

/// What an attacker who can read a breaker's generation builds: the layout of the
/// first release (`version 1 | flags | generation | probe id | name | crc32`) and the
/// current layout with a tag of their own.
fn forgeries(name: &str, generation: u64, probe: Option<u64>) -> Vec<Vec<u8>> {
    let mut v1 = vec![1, u8::from(probe.is_some())];
    v1.extend_from_slice(&generation.to_le_bytes());
    v1.extend_from_slice(&probe.unwrap_or(0).to_le_bytes());
    v1.extend_from_slice(name.as_bytes());
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());

    let mut v2 = vec![2, u8::from(probe.is_some())];
    v2.extend_from_slice(&0u64.to_le_bytes());
    v2.extend_from_slice(&generation.to_le_bytes());
    v2.extend_from_slice(&probe.unwrap_or(1).to_le_bytes());
    v2.extend_from_slice(name.as_bytes());
    v2.extend_from_slice(&[0xAB; 16]);
    vec![v1, v2]
}

#[tokio::test]
async fn a_forged_permit_is_invalid_and_trips_nothing() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    let created = put(&mut admin, "victim", three_failures(60_000)).await;
    let generation = created.breaker.expect("breaker").generation;

    for forged in forgeries("victim", generation, None) {
        for _ in 0..3 {
            let refused = report_status(&mut client, forged.clone(), pb::Outcome::Failure).await;
            assert_invalid_permit(&refused);
        }
    }
    let status = wait_state(&mut admin, "victim", pb::State::Closed, WAIT).await;
    assert_eq!(
        (status.generation, status.consecutive_failures),
        (generation, 0)
    );
}

#[tokio::test]
async fn a_replayed_permit_counts_once() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "dup", three_failures(60_000)).await;

    let permit = acquire(&mut client, "dup").await.permit;
    let first = report(&mut client, &permit, pb::Outcome::Failure).await;
    assert!(!first.stale);
    for i in 2..=3 {
        let again = report(&mut client, &permit, pb::Outcome::Failure).await;
        assert!(again.stale, "report {i} of one permit");
        assert_eq!(again.state(), pb::State::Closed);
    }
    let status = wait_state(&mut admin, "dup", pb::State::Closed, WAIT).await;
    assert_eq!(status.consecutive_failures, 1, "counted once");
}

#[tokio::test]
async fn a_forged_probe_cannot_take_the_real_probes_slot() {
    let daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "probed", three_failures(200)).await;
    trip(&mut client, "probed").await;
    wait_state(&mut admin, "probed", pb::State::HalfOpen, WAIT).await;
    let real = acquire(&mut client, "probed").await;
    assert!(real.allowed && real.state() == pb::State::HalfOpen);

    for forged in forgeries("probed", real.generation, Some(1)) {
        let refused = report_status(&mut client, forged, pb::Outcome::Success).await;
        assert_invalid_permit(&refused);
    }
    let closed = report(&mut client, &real.permit, pb::Outcome::Success).await;
    assert!(!closed.stale, "the real holder's report counts");
    assert_eq!(closed.state(), pb::State::Closed);
}

#[tokio::test]
async fn a_permit_from_before_a_crash_is_stale_and_never_collides() {
    let mut daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    // Long enough that the breaker is still HALF_OPEN after the restart: it only
    // leaves HALF_OPEN through a probe's report or its permit_ttl (10 s).
    put(&mut admin, "crash", three_failures(200)).await;
    trip(&mut client, "crash").await;
    wait_state(&mut admin, "crash", pb::State::HalfOpen, WAIT).await;
    let before = acquire(&mut client, "crash").await;
    assert!(before.allowed);

    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    let status = wait_state(&mut admin, "crash", pb::State::HalfOpen, WAIT).await;
    assert_eq!(
        status.probes_in_flight, 0,
        "probe slots are free after a restart"
    );
    let after = acquire(&mut client, "crash").await;
    assert!(after.allowed);
    assert_eq!(after.generation, before.generation, "same generation");
    assert_ne!(
        after.permit, before.permit,
        "a new run never repeats a permit"
    );

    let old = report(&mut client, &before.permit, pb::Outcome::Failure).await;
    assert!(old.stale, "the pre-crash holder's report counts nothing");
    assert_eq!(old.state(), pb::State::HalfOpen);
    let new = report(&mut client, &after.permit, pb::Outcome::Success).await;
    assert!(!new.stale, "the new holder still owns its slot");
    assert_eq!(new.state(), pb::State::Closed);
}

#[tokio::test]
async fn generations_never_go_back_across_delete_and_recreate() {
    let mut daemon = Daemon::fresh(&[]).await;
    let mut admin = daemon.admin().await;
    let mut client = daemon.breakers().await;
    put(&mut admin, "reborn", three_failures(60_000)).await;
    let mut events = client
        .watch(pb::WatchRequest {
            filter: Some(pb::WatchFilter {
                names: vec!["reborn".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();

    let old = acquire(&mut client, "reborn").await;
    trip(&mut client, "reborn").await;
    admin
        .set_override(pb::SetOverrideRequest {
            name: "reborn".into(),
            r#override: pb::Override::Unspecified as i32,
            ..Default::default()
        })
        .await
        .expect("clear override");
    admin
        .delete_breaker(pb::DeleteBreakerRequest {
            name: "reborn".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let reborn = put(&mut admin, "reborn", three_failures(60_000)).await;
    let reborn_generation = reborn.breaker.expect("breaker").generation;

    let mut generations = Vec::new();
    while generations.last().map(|(k, _)| *k) != Some(pb::EventKind::SpecPut)
        || generations.len() < 2
    {
        let message = tokio::time::timeout(WAIT, events.next())
            .await
            .expect("an event in time")
            .expect("stream open")
            .expect("event");
        if let Some(pb::watch_response::Kind::Event(e)) = message.kind {
            generations.push((e.kind(), e.generation));
        }
    }
    let deleted = generations
        .iter()
        .find(|(k, _)| *k == pb::EventKind::Deleted)
        .expect("a DELETED event")
        .1;
    assert!(
        reborn_generation > deleted,
        "re-created at {reborn_generation}, deleted at {deleted}: {generations:?}"
    );
    assert!(
        generations.windows(2).all(|w| w[0].1 <= w[1].1),
        "a watcher never sees a generation go back: {generations:?}"
    );

    let late = report(&mut client, &old.permit, pb::Outcome::Failure).await;
    assert!(
        late.stale,
        "a permit of the deleted incarnation counts nothing"
    );
    assert_eq!(late.state(), pb::State::Closed);

    // And after a restart, a new incarnation still starts above the old one.
    admin
        .delete_breaker(pb::DeleteBreakerRequest {
            name: "reborn".into(),
            ..Default::default()
        })
        .await
        .expect("delete again");
    daemon.restart().await;
    let mut admin = daemon.admin().await;
    let third = put(&mut admin, "reborn", three_failures(60_000)).await;
    let third_generation = third.breaker.expect("breaker").generation;
    assert!(
        third_generation > reborn_generation,
        "{third_generation} after a restart, {reborn_generation} before"
    );
}
