//! Shared helpers: daemons, specs, polling, and a TCP proxy that stands for the
//! network (it can follow a restarted daemon to its new port, cut connections, or
//! refuse them).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use cbd_client::{Client, pb};
use cbd_tests::{Daemon, ms};
use parking_lot::Mutex;
use tempfile::TempDir;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How long any wait in these tests may take before it is a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// A daemon on a fresh data directory (kept alive by the returned `TempDir`).
pub async fn daemon(extra: &[&str]) -> (TempDir, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(&dir.path().join("data"), extra).await;
    (dir, daemon)
}

/// A client of `endpoint` for tests that are not about the Acquire deadline: a
/// generous one, so that a loaded machine never turns a daemon decision into a
/// fallback one.
pub fn client(endpoint: impl Into<String>) -> Client {
    Client::builder(endpoint)
        .acquire_deadline(RELAXED_DEADLINE)
        .build()
        .expect("client")
}

/// The Acquire deadline of [`client`].
pub const RELAXED_DEADLINE: Duration = Duration::from_secs(2);

/// A spec tripping after `failures` consecutive failures, open for `open_ms`.
pub fn spec(failures: u32, open_ms: u64) -> pb::BreakerSpec {
    pb::BreakerSpec {
        consecutive_failures: Some(failures),
        open_duration: Some(ms(open_ms)),
        ..Default::default()
    }
}

/// Puts `name` with `spec` through the client's admin API.
pub async fn put(client: &Client, name: &str, spec: pb::BreakerSpec) -> pb::PutBreakerResponse {
    client.admin().put(name, spec).await.expect("put")
}

/// The breaker's status through the client's admin API.
pub async fn status(client: &Client, name: &str) -> pb::BreakerStatus {
    client
        .admin()
        .get(name)
        .await
        .expect("get")
        .breaker
        .expect("breaker")
}

/// Polls `check` until it yields `Some`, at most [`WAIT`] (the harness's
/// `eventually`; no blind sleeps).
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    cbd_tests::eventually(WAIT, what, check).await
}

/// Polls until `name` is in `state`.
pub async fn wait_state(client: &Client, name: &str, state: pb::State) -> pb::BreakerStatus {
    eventually(&format!("{name} in {state:?}"), || async {
        let s = status(client, name).await;
        (s.state() == state).then_some(s)
    })
    .await
}

/// Sends `kill -CONT` when dropped, so a test that fails while its daemon is stopped
/// does not leave it stopped.
pub struct ContOnDrop<'a>(pub &'a Daemon);

impl Drop for ContOnDrop<'_> {
    fn drop(&mut self) {
        self.0.signal(cbd_tests::Signal::CONT);
    }
}

/// A TCP proxy on `127.0.0.1:0` in front of a daemon.
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target = Arc::new(Mutex::new(Some(target)));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let target = target.clone();
            let connections = connections.clone();
            async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let to = *target.lock();
                    let task = tokio::spawn(async move {
                        let Some(to) = to else { return };
                        let Ok(mut outbound) = TcpStream::connect(to).await else {
                            return;
                        };
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    });
                    let mut conns = connections.lock();
                    conns.retain(|t| !t.is_finished());
                    conns.push(task);
                }
            }
        });
        Self {
            addr,
            target,
            connections,
            accept,
        }
    }

    /// `http://addr` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where new connections go; `None`: accepted and closed at once (a daemon that
    /// is not there).
    pub fn set_target(&self, target: Option<SocketAddr>) {
        *self.target.lock() = target;
    }

    /// Drops every open connection (the network fails under them).
    pub fn cut(&self) {
        for task in self.connections.lock().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
