//! Real etcd for tests: `etcd` (Debian's `etcd-server`, which .ci/run installs)
//! started on free 127.0.0.1 ports with a temporary data directory, one member or a
//! cluster, ready once every member's `/health` answers `"health":"true"`.
//!
//! [`etcd_bin`] decides whether a test runs: without the binary it prints why and the
//! test returns early, unless `CI` is set, where a missing etcd is a failure.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a cluster may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The etcd binary: `$ETCD_BIN`, or `etcd` on `PATH`. `None` (printed) when there is
/// none and `CI` is unset; panics when `CI` is set, so CI never skips these tests.
pub fn etcd_bin() -> Option<PathBuf> {
    let found = match std::env::var_os("ETCD_BIN") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.exists()),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .find(|p| p.is_file())
        }),
    };
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd not found (apt-get install etcd-server, as .ci/run does, or set ETCD_BIN); CI is set, so this fails"
        );
        eprintln!("skipped: etcd not found (apt-get install etcd-server, or set ETCD_BIN)");
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound then released; etcd binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One member's process and addresses.
#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    /// Plain-HTTP `/health` (and `/metrics`), whatever the client URLs speak.
    metrics: SocketAddr,
    child: Option<Child>,
}

/// TLS for an etcd of [`Etcd::single_tls`]: its server certificate, and the CA client
/// certificates must be signed by (client-certificate auth on); `client_cert` and
/// `client_key` are what [`Etcd::etcdctl`] presents.
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A running etcd cluster (one member or more). Every member is killed when dropped,
/// and the data directories removed.
#[derive(Debug)]
pub struct Etcd {
    bin: PathBuf,
    members: Vec<Member>,
    initial_cluster: String,
    tls: Option<EtcdTls>,
    /// `user:password` for [`Etcd::etcdctl`], once authentication is on.
    etcdctl_user: Option<String>,
    scratch: tempfile::TempDir,
}

impl Etcd {
    /// A single-member etcd, healthy; `None` if etcd is missing (see [`etcd_bin`]).
    pub fn single() -> Option<Self> {
        Self::cluster(1)
    }

    /// An `n`-member etcd cluster, every member healthy; `None` if etcd is missing.
    pub fn cluster(n: usize) -> Option<Self> {
        Self::start(n, None)
    }

    /// A single-member etcd whose client URLs are `https://` with `tls`.
    pub fn single_tls(tls: EtcdTls) -> Option<Self> {
        Self::start(1, Some(tls))
    }

    fn start(n: usize, tls: Option<EtcdTls>) -> Option<Self> {
        let bin = etcd_bin()?;
        let scratch = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: SocketAddr::from(([127, 0, 0, 1], free_port())),
                peer: SocketAddr::from(([127, 0, 0, 1], free_port())),
                metrics: SocketAddr::from(([127, 0, 0, 1], free_port())),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Self {
            bin,
            members,
            initial_cluster,
            tls,
            etcdctl_user: None,
            scratch,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_healthy(i);
        }
        Some(etcd)
    }

    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let dir = self.scratch.path().join(&m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.path().join(format!("{}.log", m.name)))
            .expect("etcd log");
        let scheme = self.scheme();
        let mut command = Command::new(&self.bin);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.cert)
                .arg("--key-file")
                .arg(&tls.key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen-client-urls")
            .arg(format!("{scheme}://{}", m.client))
            .arg("--advertise-client-urls")
            .arg(format!("{scheme}://{}", m.client))
            .arg("--listen-metrics-urls")
            .arg(format!("http://{}", m.metrics))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", m.peer))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg("cbd-test")
            .arg("--initial-cluster-state")
            .arg("new")
            // Test clusters on loopback: elect an etcd leader fast.
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// Polls member `i`'s `/health` until it answers healthy; panics with its log
    /// after [`START_TIMEOUT`] or if it exits.
    fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            if health(self.members[i].metrics) {
                return;
            }
            let exited = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "etcd {} not healthy ({exited:?}):\n{}",
                    self.members[i].name,
                    self.log(i)
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// What member `i` wrote to stderr.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.scratch
                .path()
                .join(format!("{}.log", self.members[i].name)),
        )
        .unwrap_or_default()
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`, `https://` with TLS), for a
    /// client to connect to.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://{}", self.scheme(), m.client))
            .collect()
    }

    /// Runs `etcdctl` (Debian's `etcd-client`) against every member, with the TLS
    /// files and the user of [`Etcd::enable_auth`] when set; its stdout. Panics when
    /// it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoints().join(","));
        if let Some(tls) = &self.tls {
            command
                .arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        if let Some(user) = &self.etcdctl_user {
            command.arg("--user").arg(user);
        }
        let out = command.args(args).output().expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Turns etcd's authentication on with the user `root` and `password`; later
    /// [`Etcd::etcdctl`] calls log in as it.
    pub fn enable_auth(&mut self, password: &str) {
        self.etcdctl(&["user", "add", "root", "--new-user-password", password]);
        self.etcdctl(&["auth", "enable"]);
        self.etcdctl_user = Some(format!("root:{password}"));
    }

    /// Member `i`'s client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.members[i].client
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory, after [`Etcd::kill`], and waits
    /// until it is healthy (which needs a quorum).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Whether `GET /health` on `addr` answers `"health":"true"` (plain HTTP/1.0).
fn health(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// A TCP proxy on 127.0.0.1 that a test can cut and heal: a network partition between
/// a client and etcd. Cut, it is a black hole (nothing passes, nothing is closed, so
/// the client only learns by its timeouts); healed, the connections it held are
/// closed and new ones pass again.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards connections to `upstream`. Needs a Tokio runtime.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (cut, _) = tokio::sync::watch::channel(false);
        let cut_rx = cut.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    let held = *cut.borrow_and_update();
                    if held {
                        // Held unanswered until healed, then closed.
                        let _ = cut.wait_for(|c| !*c).await.map(|_| ());
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let stalled = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        () = async { let _ = cut.wait_for(|c| *c).await; } => true,
                    };
                    if stalled {
                        // Both ends open, nothing passing, until healed.
                        let _ = cut.wait_for(|c| !*c).await;
                    }
                    drop(inbound);
                });
            }
        });
        Self { addr, cut, accept }
    }

    /// The URL a client connects to etcd through.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Releases every held connection: the tasks see a healed proxy, or a gone one.
        self.cut.send_replace(false);
    }
}
