//! Connections that say nothing are closed: a silent TCP connection and one that
//! sends half an HTTP/2 preface stop holding a file descriptor after
//! --handshake-timeout, while gRPC clients keep working (issue 12).

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use cbd_proto::v1 as pb;
use cbd_tests::{Daemon, acquire, put};

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Reads until the daemon closes `conn`; how long that took (panics past `within`).
fn closed_within(mut conn: TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    conn.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 256];
    loop {
        match conn.read(&mut buf) {
            // The daemon's SETTINGS frame may come first; EOF or a reset is the close.
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => assert!(started.elapsed() < within, "still open after {within:?}"),
        }
    }
}

#[tokio::test]
async fn silent_and_half_preface_connections_are_closed() {
    let daemon = Daemon::fresh(&["--handshake-timeout", "300ms"]).await;
    let mut admin = daemon.admin().await;
    put(&mut admin, "alive", pb::BreakerSpec::default()).await;
    let baseline = open_fds(daemon.pid());

    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(daemon.addr).expect("connect"))
        .collect();
    let half: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = TcpStream::connect(daemon.addr).expect("connect");
            c.write_all(b"PRI * HTTP/2.0\r\n").expect("half a preface");
            c
        })
        .collect();
    for conn in silent.into_iter().chain(half) {
        let took = closed_within(conn, Duration::from_secs(10));
        assert!(took < Duration::from_secs(10), "closed after {took:?}");
    }
    // The daemon let go of them (allow a little for its own housekeeping).
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(daemon.pid()) > baseline + 2 {
        assert!(
            Instant::now() < deadline,
            "fds: {} now, {baseline} before",
            open_fds(daemon.pid())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // gRPC clients are unaffected.
    let mut client = daemon.breakers().await;
    assert!(acquire(&mut client, "alive").await.allowed);
}
