//! The end-to-end harness: starts the real `cbd` binary on `127.0.0.1:0` with a
//! temporary data directory, waits for it with a health check, and hands out gRPC
//! clients. The tests live in one binary, `tests/tests/e2e/`, one module per concern.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

pub mod browser;
pub mod etcd;

/// Signals for [`Daemon::signal`] and [`signal_process`].
pub use rustix::process::Signal;

use cbd_proto::v1::{self as pb, admin_client::AdminClient, breakers_client::BreakersClient};
use tonic::transport::{Channel, ClientTlsConfig};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// How long a daemon may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `cbd` binary: `$CBD_BIN`, or the one cargo built next to this test.
pub fn cbd_bin() -> PathBuf {
    built_bin("cbd", "CBD_BIN")
}

/// The `cbctl` binary: `$CBCTL_BIN`, or the one cargo built next to this test.
pub fn cbctl_bin() -> PathBuf {
    built_bin("cbctl", "CBCTL_BIN")
}

/// The stand-in standby (`src/bin/standby.rs`): `$CBD_STANDBY_BIN`, or the one cargo
/// built next to this test.
pub fn standby_bin() -> PathBuf {
    built_bin("standby", "CBD_STANDBY_BIN")
}

/// The daemon's own standby routes in a process of their own (docs/DESIGN.md §11),
/// on a free loopback port, naming `leader`; ended when dropped.
#[derive(Debug)]
pub struct Standby {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Standby {
    /// Starts one naming `leader` (`None`: no leader known) and waits until its
    /// health answers.
    pub async fn start(leader: Option<&str>) -> Self {
        use std::io::BufRead;
        let mut command = Command::new(standby_bin());
        if let Some(leader) = leader {
            command.args(["--leader", leader]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the standby");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the standby's address");
        let addr: SocketAddr = line.trim().parse().expect("an address");
        eventually(START_TIMEOUT, "the standby's health", || async {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .ok()?;
            HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()
        })
        .await;
        Self { child, addr }
    }

    /// `http://addr`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        // Closing its stdin ends it; kill in case it is stuck.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `$env`, or the workspace binary `name` in this test's target directory.
fn built_bin(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> or target/<profile>/<bin> → target/<profile>/<name>
    let dir = exe.parent().expect("executable dir");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("profile dir")
    } else {
        dir
    };
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo test --workspace` (which builds it) or set {env}",
        bin.display()
    );
    bin
}

/// A running `cbd` process. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    /// The address it serves on.
    pub addr: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
    options: Options,
    /// The temporary directory holding `data_dir` when the daemon was started with
    /// [`Daemon::fresh`]; removed after the process is killed (fields drop after
    /// `Drop::drop`).
    scratch: Option<tempfile::TempDir>,
}

/// How to start a daemon and talk to it, beyond extra flags (see [`Daemon::start_with`]).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--listen` [default: `127.0.0.1:0`]. An unspecified address (`0.0.0.0:0`) is
    /// connected to on 127.0.0.1.
    pub listen: Option<String>,
    /// TLS for the harness's own channels, the readiness check included (the daemon
    /// gets its TLS flags in `extra`). Channels use `https://` and this config.
    pub tls: Option<ClientTlsConfig>,
    /// A command line that runs `cbd` (e.g. `strace -f -o FILE`), its arguments
    /// appended; empty: run `cbd` directly.
    pub wrapper: Vec<String>,
}

/// A daemon that exited instead of serving (see [`Daemon::try_start`]).
#[derive(Debug)]
pub struct Refused {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stderr in this run.
    pub stderr: String,
}

impl Daemon {
    /// Starts `cbd` on a new temporary data directory (removed when the daemon is
    /// dropped), plus `extra` flags: what most tests want.
    pub async fn fresh(extra: &[&str]) -> Self {
        Self::fresh_with(extra, Options::default()).await
    }

    /// [`Daemon::fresh`] with [`Options`].
    pub async fn fresh_with(extra: &[&str], options: Options) -> Self {
        let scratch = tempfile::tempdir().expect("tempdir");
        let mut daemon = Self::start_with(&scratch.path().join("data"), extra, options).await;
        daemon.scratch = Some(scratch);
        daemon
    }

    /// The data directory the daemon runs on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Starts `cbd` on `127.0.0.1:0` with its data in `data_dir`, plus `extra` flags,
    /// and waits until its health check answers SERVING.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(data_dir, extra, Options::default()).await
    }

    /// Like [`Daemon::start`], with [`Options`]: another listen address, or TLS for
    /// the harness's channels. Health needs no token, so readiness works with auth on.
    pub async fn start_with(data_dir: &Path, extra: &[&str], options: Options) -> Self {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Self::spawn(data_dir.to_owned(), extra, options).await
    }

    /// Starts `cbd` like [`Daemon::start`], but a daemon that exits before serving is
    /// an `Err` with its status and stderr, not a panic.
    pub async fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Self, Refused> {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        Self::try_spawn(data_dir.to_owned(), extra, Options::default()).await
    }

    async fn spawn(data_dir: PathBuf, extra: Vec<String>, options: Options) -> Self {
        match Self::try_spawn(data_dir, extra, options).await {
            Ok(daemon) => daemon,
            Err(refused) => panic!(
                "cbd exited before serving ({}):\n{}",
                refused.status, refused.stderr
            ),
        }
    }

    async fn try_spawn(
        data_dir: PathBuf,
        extra: Vec<String>,
        options: Options,
    ) -> Result<Self, Refused> {
        let run_dir = data_dir.with_extension("run");
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let addr_file = run_dir.join("addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = run_dir.join("cbd.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let log_start = log_file.metadata().expect("log size").len() as usize;
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(cbd_bin());
                c
            }
            None => Command::new(cbd_bin()),
        };
        let child = command
            .arg("--listen")
            .arg(options.listen.as_deref().unwrap_or("127.0.0.1:0"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--addr-file")
            .arg(&addr_file)
            .args(&extra)
            .env_remove("CBD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn cbd");
        let mut daemon = Self {
            child: Some(child),
            addr: "127.0.0.1:0".parse().expect("addr"),
            data_dir,
            log,
            extra,
            options,
            scratch: None,
        };
        match daemon.wait_for_addr(&addr_file).await {
            Some(addr) => daemon.addr = addr,
            None => {
                let status = daemon
                    .child
                    .take()
                    .and_then(|mut c| c.wait().ok())
                    .expect("exit status");
                let log = daemon.log();
                return Err(Refused {
                    status,
                    stderr: log.get(log_start..).unwrap_or(&log).to_owned(),
                });
            }
        }
        daemon.wait_serving().await;
        Ok(daemon)
    }

    /// Stops this process (if still running) and starts a new one on the same data.
    pub async fn restart(&mut self) {
        self.kill9();
        let fresh = Self::spawn(
            self.data_dir.clone(),
            self.extra.clone(),
            self.options.clone(),
        )
        .await;
        let scratch = self.scratch.take();
        *self = fresh;
        self.scratch = scratch;
    }

    /// The address once written, or `None` when the process exits first.
    async fn wait_for_addr(&mut self, addr_file: &Path) -> Option<SocketAddr> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(addr_file)
                && let Ok(mut addr) = text.trim().parse::<SocketAddr>()
            {
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                return Some(addr);
            }
            if self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some()
            {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "cbd did not write its address:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls the health check until SERVING.
    pub async fn wait_serving(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.health().await == Some(ServingStatus::Serving) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cbd never became SERVING:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The overall health status, or `None` when it cannot be asked.
    pub async fn health(&self) -> Option<ServingStatus> {
        let mut client = HealthClient::new(self.try_channel().await.ok()?);
        let resp = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        ServingStatus::try_from(resp.into_inner().status).ok()
    }

    /// `http://addr`, or `https://addr` with TLS.
    pub fn endpoint(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// A channel to this daemon with `tls` (or none): for tests of what the daemon
    /// accepts. Always `https://` when `tls` is given.
    pub async fn try_channel_with(
        &self,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Channel, tonic::transport::Error> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut endpoint = Channel::from_shared(format!("{scheme}://{}", self.addr))
            .expect("valid uri")
            .connect_timeout(Duration::from_secs(2));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        endpoint.connect().await
    }

    async fn try_channel(&self) -> Result<Channel, tonic::transport::Error> {
        self.try_channel_with(self.options.tls.clone()).await
    }

    /// A connected channel.
    pub async fn channel(&self) -> Channel {
        self.try_channel().await.expect("connect to cbd")
    }

    /// A data-plane client.
    pub async fn breakers(&self) -> BreakersClient<Channel> {
        BreakersClient::new(self.channel().await)
    }

    /// A control-plane client.
    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    /// A health client.
    pub async fn health_client(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    /// What the daemon has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` to the daemon process (a direct `kill(2)`, never a `kill` command
    /// line, whose argument parsing is a trap for negative ids).
    /// For `STOP`, returns once the kernel shows the process stopped (`T` in
    /// `/proc/PID/stat`): kill(2) returns before every thread has stopped, and a test
    /// that then expects no answer must not race the last one.
    pub fn signal(&self, sig: Signal) {
        signal_process(self.pid(), sig);
        if sig == Signal::STOP {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !self.stopped() {
                assert!(Instant::now() < deadline, "cbd did not stop after SIGSTOP");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Whether every thread of the process is stopped (state `T` of each task).
    fn stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // "pid (comm) S ...": the state follows the last ')'.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
            })
        })
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit (after a signal), at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cbd did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Resident memory of the process, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// Polls `f` until it returns `Some`, at most `timeout`; panics with `what` after.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A test PKI made with rcgen: a CA, a server certificate for `localhost` and
/// 127.0.0.1 signed by it, and a client certificate signed by it, as PEM files.
#[derive(Debug)]
pub struct Pki {
    /// CA certificate (PEM file).
    pub ca: PathBuf,
    /// Server certificate and key (PEM files).
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Client certificate and key (PEM files), signed by the CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "cbd test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(names).expect("leaf params");
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("leaf cert");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "cbd test server",
        );
        let (client_cert, client_key) = leaf(
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            "cbd test client",
        );
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        Self {
            ca: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }

    /// The daemon's TLS flags; with `mtls`, `--tls-client-ca` too.
    pub fn server_flags(&self, mtls: bool) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert".to_owned(),
            self.server_cert.display().to_string(),
            "--tls-key".to_owned(),
            self.server_key.display().to_string(),
        ];
        if mtls {
            flags.push("--tls-client-ca".into());
            flags.push(self.ca.display().to_string());
        }
        flags
    }

    /// A client config trusting the CA, for server name `localhost`; with
    /// `client_cert`, presenting the client certificate.
    pub fn client_tls(&self, client_cert: bool) -> ClientTlsConfig {
        let read = |p: &Path| std::fs::read(p).expect("read pem");
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)))
            .domain_name("localhost");
        if client_cert {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(&self.client_cert),
                read(&self.client_key),
            ));
        }
        tls
    }
}

/// A `google.protobuf.Duration` of `ms` milliseconds.
pub fn ms(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// Puts `name` with `spec`, panicking on error.
pub async fn put(
    admin: &mut AdminClient<Channel>,
    name: &str,
    spec: pb::BreakerSpec,
) -> pb::PutBreakerResponse {
    admin
        .put_breaker(pb::PutBreakerRequest {
            name: name.into(),
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner()
}

/// Acquires `name`, panicking on a gRPC error.
pub async fn acquire(client: &mut BreakersClient<Channel>, name: &str) -> pb::AcquireResponse {
    client
        .acquire(pb::AcquireRequest {
            name: name.into(),
            caller: String::new(),
        })
        .await
        .expect("acquire")
        .into_inner()
}

/// Reports `outcome` for `permit`, panicking on a gRPC error.
pub async fn report(
    client: &mut BreakersClient<Channel>,
    permit: &[u8],
    outcome: pb::Outcome,
) -> pb::ReportResponse {
    client
        .report(pb::ReportRequest {
            permit: permit.to_vec(),
            outcome: outcome as i32,
            duration: None,
            caller: String::new(),
        })
        .await
        .expect("report")
        .into_inner()
}

/// The status of `name`, panicking on a gRPC error.
pub async fn get_breaker(admin: &mut AdminClient<Channel>, name: &str) -> pb::BreakerStatus {
    admin
        .get_breaker(pb::GetBreakerRequest { name: name.into() })
        .await
        .expect("get")
        .into_inner()
        .breaker
        .expect("breaker")
}

/// Polls `name` until it is in `state`, at most `timeout` (the daemon's timers
/// move breakers in real time; this waits for that, it does not sleep blindly).
pub async fn wait_state(
    admin: &mut AdminClient<Channel>,
    name: &str,
    state: pb::State,
    timeout: Duration,
) -> pb::BreakerStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let status = get_breaker(admin, name).await;
        if status.state() == state {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not {state:?} within {timeout:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `cbctl --endpoint <daemon> <args>` and returns its stdout; it must exit 0.
pub async fn cbctl(daemon: &Daemon, args: &[&str]) -> String {
    let out = tokio::process::Command::new(cbctl_bin())
        .arg("--endpoint")
        .arg(daemon.endpoint())
        .args(args)
        .env_remove("CBD_ENDPOINT")
        .env_remove("CBD_TOKEN")
        .output()
        .await
        .expect("run cbctl");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        out.status.success(),
        "cbctl {args:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Sends `sig` to process `pid`. Panics if it cannot be sent (the process is gone).
pub fn signal_process(pid: u32, sig: Signal) {
    let id = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .unwrap_or_else(|| panic!("not a process id: {pid}"));
    rustix::process::kill_process(id, sig).unwrap_or_else(|e| panic!("kill({pid}, {sig:?}): {e}"));
}

/// Sends `sig` to the process group `pgid` leads. A group id of 0 or 1 would mean
/// "our own group" or "every process" to `kill(2)`; it is refused rather than sent.
pub fn signal_group(pgid: u32, sig: Signal) -> std::io::Result<()> {
    let id = i32::try_from(pgid)
        .ok()
        .filter(|&id| id > 1)
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("not a process group id: {pgid}")))?;
    rustix::process::kill_process_group(id, sig).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn signal_group_kills_that_group_only_and_refuses_the_special_ids() {
        // 0 is "our own group" and 1 "every process" to kill(2): never sent.
        assert!(signal_group(0, Signal::KILL).is_err());
        assert!(signal_group(1, Signal::KILL).is_err());
        let mut child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("sleep");
        let mut bystander = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep");
        signal_group(child.id(), Signal::KILL).expect("killpg");
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "the group's process was killed: {status:?}"
        );
        // The test process and a process outside that group live on.
        assert_eq!(bystander.try_wait().expect("try_wait"), None);
        let _ = bystander.kill();
        let _ = bystander.wait();
    }
}
