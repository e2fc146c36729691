//! Following the leader (docs/DESIGN.md §11): a client configured with several
//! endpoints goes where a standby's answer points, or to its next endpoint when one
//! cannot be reached or a standby knows no leader. The standby is the daemon's own
//! standby routes (`cbd::standby`), served on a loopback port; the leader a real cbd.

use std::net::SocketAddr;

use cbd_client::Client;
use tokio::sync::watch;

use crate::support::{RELAXED_DEADLINE, daemon, put, spec};

/// A standby on a free loopback port whose leader hint is `hint`'s.
async fn standby(hint: watch::Receiver<Option<String>>) -> SocketAddr {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(cbd::standby::routes(health, hint))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn client(endpoints: &str) -> Client {
    Client::builder(endpoints)
        .acquire_deadline(RELAXED_DEADLINE)
        .leases(false)
        .build()
        .expect("client")
}

/// A port nothing listens on: bound, then let go.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test]
async fn a_standby_naming_the_leader_sends_the_client_there() {
    let (_dir, leader) = daemon(&[]).await;
    let (_hint_tx, hint) = watch::channel(Some(leader.endpoint()));
    let standby = standby(hint).await;
    // Only the standby is configured: the leader is learned from its answer.
    let client = client(&format!("http://{standby}"));
    let breaker = client.breaker("follow.a");

    // The call that finds out is decided by the fallback policy (fail open).
    let permit = breaker.acquire().await.expect("fallback decides");
    assert_eq!(permit.fallback(), Some(cbd_client::Fallback::FailOpen));
    assert_eq!(client.stats().rpc_decisions, 0);
    assert_eq!(client.endpoint(), leader.endpoint());

    // The next goes to the leader, which knows no such breaker yet.
    put(&client, "follow.a", spec(3, 60_000)).await;
    let permit = breaker.acquire().await.expect("the leader decides");
    assert_eq!(permit.fallback(), None);
    assert_eq!(permit.state(), Some(cbd_client::State::Closed));
    assert_eq!(client.stats().rpc_decisions, 1);
    assert_eq!(client.endpoints(), vec![format!("http://{standby}")]);
}

#[tokio::test]
async fn an_unreachable_endpoint_or_a_standby_without_leader_moves_to_the_next() {
    let (_dir, leader) = daemon(&[]).await;
    let (_hint_tx, hint) = watch::channel(None);
    let standby = standby(hint).await;
    let dead = closed_port();
    let endpoints = format!("http://{dead},http://{standby},{}", leader.endpoint());
    let client = client(&endpoints);
    put_through(&client, "follow.b").await;
    assert_eq!(client.endpoint(), leader.endpoint());
    let permit = client.breaker("follow.b").acquire().await.expect("acquire");
    assert_eq!(permit.fallback(), None, "decided by the leader");
}

/// Puts `name` as soon as the client has found its way to the leader: each failed
/// attempt moves it one endpoint on, so this takes at most one try per endpoint.
async fn put_through(client: &Client, name: &str) {
    let tries = client.endpoints().len();
    for _ in 0..tries {
        match client.admin().put(name, spec(3, 60_000)).await {
            Ok(_) => return,
            Err(cbd_client::Error::Unavailable(_)) => {}
            Err(e) => panic!("put {name}: {e}"),
        }
    }
    panic!("no leader after trying all {tries} endpoints once");
}
