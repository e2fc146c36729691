//! The typed control plane (`Client::admin`) and the one-shot data-plane calls.

use cbd_client::{Client, Error, pb};

use crate::support::{daemon, spec};

#[tokio::test]
async fn admin_calls_round_trip() {
    let (_dir, daemon) = daemon(&[]).await;
    // On a channel dialled by the caller, as cbctl does.
    let channel = tonic::transport::Endpoint::from_shared(daemon.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let client = Client::builder(daemon.endpoint())
        .build_on(channel)
        .expect("client");
    let mut admin = client.admin();

    let put = admin.put("admin/a", spec(2, 60_000)).await.expect("put");
    assert!(put.created);
    assert!(
        admin
            .put("admin/a", spec(2, 60_000))
            .await
            .expect("again")
            .unchanged
    );
    admin.put("admin/b", spec(3, 60_000)).await.expect("put b");
    let got = admin.get("admin/a").await.expect("get");
    assert_eq!(
        got.breaker
            .expect("breaker")
            .spec
            .expect("spec")
            .consecutive_failures,
        Some(2)
    );

    let first = admin
        .list_page("admin/", 1, String::new())
        .await
        .expect("list");
    assert_eq!(first.breakers.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let second = admin
        .list_page("admin/", 1, first.next_page_token)
        .await
        .expect("page 2");
    assert_eq!(second.breakers[0].name, "admin/b");

    let forced = admin
        .set_override("admin/a", pb::Override::ForcedOpen)
        .await
        .expect("override");
    assert_eq!(forced.breaker.expect("breaker").state(), pb::State::Open);
    let denied = client.acquire_once("admin/a").await.expect("acquire");
    assert!(!denied.allowed);
    admin
        .set_override("admin/a", pb::Override::Unspecified)
        .await
        .expect("release");

    let permit = client.acquire_once("admin/a").await.expect("acquire");
    assert!(permit.allowed);
    let reported = client
        .report_once(permit.permit, pb::Outcome::Failure, None)
        .await
        .expect("report");
    assert!(!reported.stale);
    let reset = admin.reset("admin/a").await.expect("reset");
    assert_eq!(reset.breaker.expect("breaker").consecutive_failures, 0);

    let deleted = admin.delete("admin/a").await.expect("delete");
    assert!(matches!(
        admin.get("admin/a").await,
        Err(Error::NotFound(_))
    ));

    let status = admin.status().await.expect("status");
    assert_eq!(status.revision, deleted.revision);
    assert_eq!(status.breakers, 1, "admin/b is left: {status:?}");
    assert_eq!(status.role(), pb::ReplicationRole::Standalone);
}
