//! A stand-in standby for the client packages' tests (docs/DESIGN.md §11): serves the
//! daemon's own standby routes (`cbd::standby`: health, and UNAVAILABLE naming the
//! leader for every other call) until stdin closes. Prints the address it listens on
//! as its first line.
//!
//! `cargo run -p cbd-tests --bin standby -- --leader http://127.0.0.1:7411`

use clap::Parser;
use std::io::Read;

/// Serve a standby's answers on a loopback port.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The leader to name in `cbd-leader`; without it, no leader is known.
    #[arg(long)]
    leader: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(
            cbd::standby::LEADER_HEALTH_SERVICE,
            tonic_health::ServingStatus::NotServing,
        )
        .await;
    let (_hint_tx, hint) = tokio::sync::watch::channel(args.leader);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("{}", listener.local_addr()?);
    let serve = tonic::transport::Server::builder()
        .add_routes(cbd::standby::routes(health, hint))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    // Ends with its parent: the test closes stdin (or dies).
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    });
    tokio::select! {
        served = serve => served.map_err(std::io::Error::other),
        _ = stdin_closed => Ok(()),
    }
}
