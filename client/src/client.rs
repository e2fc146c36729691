//! [`Client`]: one shared gRPC channel, its options, and the per-breaker state.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use cbd_breaker::Fallback;
use cbd_proto::v1::{admin_client::AdminClient, breakers_client::BreakersClient};
use parking_lot::Mutex;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};

use crate::{
    Error,
    breaker::{Breaker, Shared},
    follow::{Dial, Follow},
    watch::{OnCompaction, WatchFilter, WatchStream},
};

/// Default of [`ClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default of [`ClientBuilder::acquire_deadline`]: tens of milliseconds, as Envoy and
/// Sentinel keep such calls.
pub const DEFAULT_ACQUIRE_DEADLINE: Duration = Duration::from_millis(25);
/// Default of [`ClientBuilder::report_deadline`].
pub const DEFAULT_REPORT_DEADLINE: Duration = Duration::from_millis(250);
/// Default of [`ClientBuilder::spec_refresh`].
pub const DEFAULT_SPEC_REFRESH: Duration = Duration::from_secs(30);
/// Default of [`ClientBuilder::watch_progress_interval`].
pub const DEFAULT_WATCH_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Default of [`ClientBuilder::lease_flush_interval`].
pub const DEFAULT_LEASE_FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// HTTP/2 keep-alive: a connection whose pings go unanswered this long is dropped
/// (and re-dialled), so a watch on a dead network does not hang for ever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel every RPC of a [`Client`] goes through: the channel to the endpoint in
/// use ([`Follow`]: it follows the leader among replicas) with the token interceptor
/// applied.
pub type AuthChannel = InterceptedService<Follow, TokenInterceptor>;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
///
/// Its `Debug` output never shows the token.
#[derive(Clone, Default)]
pub struct TokenInterceptor {
    header: Option<AsciiMetadataValue>,
}

impl TokenInterceptor {
    /// An interceptor sending `token` (none: sends nothing).
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        let header = token
            .map(|t| {
                let mut v: AsciiMetadataValue = MetadataValue::try_from(format!("Bearer {t}"))
                    .map_err(|_| {
                        Error::Config("token: not a valid header value (visible ASCII only)".into())
                    })?;
                v.set_sensitive(true);
                Ok::<_, Error>(v)
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for TokenInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenInterceptor")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A connection to `cbd`. Cheap to clone: clones share one gRPC channel (HTTP/2
/// connection), the fallback counter and the per-breaker state (known specs, local
/// breakers).
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) channel: Follow,
    pub(crate) interceptor: TokenInterceptor,
    pub(crate) connect_timeout: Duration,
    pub(crate) acquire_deadline: Duration,
    pub(crate) report_deadline: Duration,
    pub(crate) default_fallback: Fallback,
    pub(crate) spec_refresh: Duration,
    pub(crate) watch_progress_interval: Duration,
    pub(crate) fallback_decisions: AtomicU64,
    breakers: Mutex<HashMap<String, Arc<Shared>>>,
    /// Whether CLOSED breakers whose spec sets `cache_ttl` are leased.
    pub(crate) leases: bool,
    pub(crate) lease_flush_interval: Duration,
    /// Sent as `caller` on every Acquire, Report and lease item; empty: none.
    pub(crate) caller: String,
    pub(crate) stats: Arc<Stats>,
    /// The lease session task, started on the first lease wanted.
    lease_session: std::sync::OnceLock<crate::lease_session::Handle>,
}

/// Counters of the lease machinery, shared with its task.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub leased_decisions: AtomicU64,
    pub rpc_decisions: AtomicU64,
    pub aggregates_sent: AtomicU64,
    pub leases_granted: AtomicU64,
    pub leases_revoked: AtomicU64,
    pub refused_locally: AtomicU64,
}

/// What a client decided and sent so far; see [`Client::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Calls allowed under a lease, with no RPC. Counted when their outcomes are
    /// sent (every flush interval), so it trails by up to one interval.
    pub leased_decisions: u64,
    /// Decisions asked of the daemon (Acquire RPCs answered).
    pub rpc_decisions: u64,
    /// Decisions made by a fallback policy (the daemon was unreachable).
    pub fallback_decisions: u64,
    /// Leased-outcome messages sent (resends not included).
    pub aggregates_sent: u64,
    /// Leases granted (renewals included).
    pub leases_granted: u64,
    /// Leases revoked by a push from the daemon.
    pub leases_revoked: u64,
    /// Calls refused with no RPC after a push said the breaker went OPEN, until
    /// the daemon confirmed the change committed (at most 100 ms).
    pub refused_locally: u64,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.channel.current())
            .field("acquire_deadline", &self.inner.acquire_deadline)
            .field("default_fallback", &self.inner.default_fallback)
            .field("fallback_decisions", &self.fallback_decisions())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `endpoint` (`http://127.0.0.1:7411`, or `host:port`) with the
    /// default options, and fails with [`Error::Unavailable`] if the daemon cannot be
    /// reached within the connect timeout.
    ///
    /// A service that must start while the daemon is down uses
    /// [`Client::builder`]`(..).build()` instead, which never touches the network
    /// (and the breakers' fallback policies apply until the daemon is up).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Client, Error> {
        Self::builder(endpoint).connect().await
    }

    /// Options for a client of `endpoint`.
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint.into())
    }

    /// A handle on the breaker `name`. Handles of one name share their state (the
    /// spec learned from the daemon, the local fallback breaker) within this client
    /// and its clones. Nothing is sent until the handle is used.
    pub fn breaker(&self, name: impl Into<String>) -> Breaker {
        let name = name.into();
        let shared = self
            .inner
            .breakers
            .lock()
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Shared::new(name)))
            .clone();
        Breaker::new(self.clone(), shared)
    }

    /// Follows changes of the breakers `filter` selects; see [`WatchStream`].
    ///
    /// Without `start_revision` the stream begins with a [`WatchEvent::Snapshot`] of
    /// every matching breaker, then every change after it. With it, every change from
    /// that revision on (a compacted revision gives a fresh snapshot with
    /// `resync: true`). The stream survives daemon restarts and network loss: it
    /// reconnects with backoff (50 ms doubling to 2 s) and resumes from the revision
    /// after the last one it delivered, so the caller sees no gap and no duplicate.
    /// It ends only with an error that retrying cannot fix (e.g. `INVALID_ARGUMENT`
    /// for a bad filter), or when dropped.
    ///
    /// ```no_run
    /// use cbd_client::{Client, WatchEvent, WatchFilter};
    /// use futures::StreamExt;
    ///
    /// # async fn run() -> Result<(), cbd_client::Error> {
    /// let client = Client::connect("http://127.0.0.1:7411").await?;
    /// let filter = WatchFilter { prefix: "payments/".into(), ..Default::default() };
    /// let mut stream = client.watch(filter, None);
    /// while let Some(msg) = stream.next().await {
    ///     match msg? {
    ///         WatchEvent::Snapshot { breakers, revision, resync } => {
    ///             println!("{} breakers at revision {revision} (resync: {resync})", breakers.len());
    ///         }
    ///         WatchEvent::Event(e) => {
    ///             println!("{} {:?} -> {:?}: {}", e.name, e.previous_state(), e.state(), e.reason);
    ///         }
    ///         WatchEvent::Interrupted { reason } => eprintln!("watch lost: {reason}"),
    ///         WatchEvent::Resumed { .. } | WatchEvent::Progress { .. } => {}
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`WatchEvent::Snapshot`]: crate::WatchEvent::Snapshot
    pub fn watch(&self, filter: WatchFilter, start_revision: Option<u64>) -> WatchStream {
        WatchStream::new(self.clone(), filter, start_revision, OnCompaction::Resync)
    }

    /// Like [`Client::watch`], choosing what happens when the resume revision was
    /// compacted away ([`OnCompaction::Fail`]: yield `Error::Compacted` and end).
    pub fn watch_with(
        &self,
        filter: WatchFilter,
        start_revision: Option<u64>,
        on_compaction: OnCompaction,
    ) -> WatchStream {
        WatchStream::new(self.clone(), filter, start_revision, on_compaction)
    }

    /// How many acquire decisions were made without the daemon (by a fallback
    /// policy), since this client was built.
    pub fn fallback_decisions(&self) -> u64 {
        self.inner.fallback_decisions.load(Ordering::Relaxed)
    }

    /// Counters of decisions made and outcomes sent.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            leased_decisions: s.leased_decisions.load(Ordering::Relaxed),
            rpc_decisions: s.rpc_decisions.load(Ordering::Relaxed),
            fallback_decisions: self.fallback_decisions(),
            aggregates_sent: s.aggregates_sent.load(Ordering::Relaxed),
            leases_granted: s.leases_granted.load(Ordering::Relaxed),
            leases_revoked: s.leases_revoked.load(Ordering::Relaxed),
            refused_locally: s.refused_locally.load(Ordering::Relaxed),
        }
    }

    /// Sends the outcomes of every leased call counted so far and waits until the
    /// daemon answered them (or the lease session is down). Call it before a
    /// graceful shutdown, bounded by a timeout of your choice (a daemon that is
    /// stopped but still connected answers nothing); dropping the last clone of the
    /// client also flushes, in the background, for at most a second.
    pub async fn flush(&self) {
        let Some(session) = self.inner.lease_session.get() else {
            return;
        };
        let (done, wait) = tokio::sync::oneshot::channel();
        if session
            .commands
            .send(crate::lease_session::Command::Flush(done))
            .is_ok()
        {
            let _ = wait.await;
        }
    }

    /// Asks the lease session for a lease on `shared` (starting the session).
    pub(crate) fn want_lease(&self, shared: &Arc<Shared>) {
        if !self.inner.leases || shared.lease().wanted.swap(true, Ordering::AcqRel) {
            return;
        }
        let session = self.inner.lease_session.get_or_init(|| {
            crate::lease_session::start(
                self.breakers_channel(),
                self.inner.lease_flush_interval,
                self.inner.stats.clone(),
                self.inner.caller.clone(),
            )
        });
        let _ = session
            .commands
            .send(crate::lease_session::Command::Want(shared.clone()));
    }

    fn breakers_channel(&self) -> AuthChannel {
        InterceptedService::new(self.inner.channel.clone(), self.inner.interceptor.clone())
    }

    /// The raw data-plane client on the shared channel, with the token interceptor.
    pub fn breakers_client(&self) -> BreakersClient<AuthChannel> {
        BreakersClient::with_interceptor(self.inner.channel.clone(), self.inner.interceptor.clone())
    }

    /// The raw control-plane client on the shared channel, with the token interceptor.
    pub fn admin_client(&self) -> AdminClient<AuthChannel> {
        AdminClient::with_interceptor(self.inner.channel.clone(), self.inner.interceptor.clone())
    }

    /// The endpoint this client talks to now: the first configured one, until a
    /// standby's answer or an unreachable endpoint moves it (docs/DESIGN.md §11).
    pub fn endpoint(&self) -> String {
        self.inner.channel.current()
    }

    /// Every configured endpoint, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.channel.endpoints().to_vec()
    }
}

/// Options of a [`Client`]; from [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// use cbd_client::{Client, Fallback};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), cbd_client::Error> {
/// // `build` never touches the network: fine while the daemon is down.
/// let client = Client::builder("http://127.0.0.1:7411")
///     .acquire_deadline(Duration::from_millis(25))
///     .default_fallback(Fallback::FailOpen)
///     .token(Some("s3cret".to_owned()))
///     .build()?;
/// assert_eq!(client.fallback_decisions(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: String,
    connect_timeout: Duration,
    acquire_deadline: Duration,
    report_deadline: Duration,
    default_fallback: Fallback,
    token: Option<String>,
    spec_refresh: Duration,
    watch_progress_interval: Duration,
    tls: Option<tonic::transport::ClientTlsConfig>,
    leases: bool,
    lease_flush_interval: Duration,
    caller: String,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_deadline", &self.acquire_deadline)
            .field("report_deadline", &self.report_deadline)
            .field("default_fallback", &self.default_fallback)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("spec_refresh", &self.spec_refresh)
            .field("watch_progress_interval", &self.watch_progress_interval)
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            acquire_deadline: DEFAULT_ACQUIRE_DEADLINE,
            report_deadline: DEFAULT_REPORT_DEADLINE,
            default_fallback: Fallback::FailOpen,
            token: None,
            spec_refresh: DEFAULT_SPEC_REFRESH,
            watch_progress_interval: DEFAULT_WATCH_PROGRESS_INTERVAL,
            tls: None,
            leases: true,
            lease_flush_interval: DEFAULT_LEASE_FLUSH_INTERVAL,
            caller: String::new(),
        }
    }

    /// Who this client is, sent as `caller` on every Acquire, Report and leased
    /// outcome (docs/DESIGN.md §3.7): the daemon attributes failures to it, for the
    /// spec's `min_distinct_callers` and `cbctl get`'s failing callers. 1-256 bytes of
    /// `A-Z a-z 0-9 . _ - :  /` (the daemon answers INVALID_ARGUMENT otherwise). `None`
    /// (default): none is sent; with a named token the daemon uses the token's name,
    /// and a named token may not claim another caller (PERMISSION_DENIED).
    pub fn caller(mut self, caller: Option<String>) -> Self {
        self.caller = caller.unwrap_or_default();
        self
    }

    /// Whether to lease breakers (docs/DESIGN.md §10): a CLOSED breaker whose spec
    /// sets `cache_ttl` is then decided in process, with no RPC, until the daemon
    /// pushes a change or the lease ends, and its outcomes are sent as counts every
    /// [`lease_flush_interval`](Self::lease_flush_interval). Default on; without
    /// `cache_ttl` in the spec nothing is leased anyway.
    pub fn leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }

    /// How often leased outcomes are sent. Default 20 ms: a trip caused by leased
    /// failures is seen by the daemon at most this much later.
    pub fn lease_flush_interval(mut self, every: Duration) -> Self {
        self.lease_flush_interval = every.max(Duration::from_millis(1));
        self
    }

    /// How long dialling the daemon may take (TCP connect). Default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an Acquire may take before the breaker's fallback policy decides
    /// instead. Default 25 ms.
    pub fn acquire_deadline(mut self, deadline: Duration) -> Self {
        self.acquire_deadline = deadline;
        self
    }

    /// How long a Report may take; past it the outcome is dropped (a half-open probe
    /// is then expired by the daemon after `permit_ttl`). Default 250 ms.
    pub fn report_deadline(mut self, deadline: Duration) -> Self {
        self.report_deadline = deadline;
        self
    }

    /// The fallback policy for a breaker whose spec the client has not learned yet
    /// (the daemon was never reached, or the breaker is unknown). Default
    /// [`Fallback::FailOpen`]. Once known, the spec's own `fallback` applies.
    pub fn default_fallback(mut self, fallback: Fallback) -> Self {
        self.default_fallback = fallback;
        self
    }

    /// A bearer token, sent as `authorization: Bearer <token>` on every request.
    /// `None`: no header.
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// How often a breaker's spec (and so its fallback policy) is fetched again,
    /// after the daemon answered. Default 30 s.
    pub fn spec_refresh(mut self, every: Duration) -> Self {
        self.spec_refresh = every;
        self
    }

    /// The progress interval watch streams ask the daemon for. A stream that hears
    /// nothing (no event, no progress) for twice this plus a second is taken for dead
    /// and re-established. Default 5 s; the daemon accepts 10 ms to 1 h.
    pub fn watch_progress_interval(mut self, every: Duration) -> Self {
        self.watch_progress_interval = every;
        self
    }

    /// TLS for the channel (rustls, ring provider). Use an `https://`
    /// endpoint.
    pub fn tls_config(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The configured endpoints as URLs: `host:port` becomes `http://host:port`.
    fn urls(&self) -> Result<Vec<String>, Error> {
        let urls: Vec<String> = self
            .endpoint
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_owned()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if urls.is_empty() {
            return Err(Error::Config(format!(
                "endpoint {:?}: no URL in it",
                self.endpoint
            )));
        }
        Ok(urls)
    }

    /// How a URL is dialled: the connect timeout, keep-alive and TLS of this builder.
    fn endpoint_for(&self, url: &str) -> Result<Endpoint, Error> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Error::Config(format!("endpoint {url:?}: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::Config(format!("tls: {e}"))),
            None => Ok(endpoint),
        }
    }

    /// Lazy channels to any URL, dialled as [`endpoint_for`](Self::endpoint_for) says.
    fn dial(&self) -> Dial {
        let this = self.clone();
        Arc::new(move |url: &str| Ok(this.endpoint_for(url)?.connect_lazy()))
    }

    fn finish(self, channel: Follow) -> Result<Client, Error> {
        let interceptor = TokenInterceptor::new(self.token.as_deref())?;
        Ok(Client {
            inner: Arc::new(Inner {
                channel,
                interceptor,
                connect_timeout: self.connect_timeout,
                acquire_deadline: self.acquire_deadline,
                report_deadline: self.report_deadline,
                default_fallback: self.default_fallback,
                spec_refresh: self.spec_refresh,
                watch_progress_interval: self.watch_progress_interval,
                fallback_decisions: AtomicU64::new(0),
                breakers: Mutex::new(HashMap::new()),
                leases: self.leases,
                lease_flush_interval: self.lease_flush_interval,
                caller: self.caller,
                stats: Arc::new(Stats::default()),
                lease_session: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The client, without connecting: the channel dials on first use and re-dials
    /// whenever the connection is lost. Fails only on a bad endpoint or token.
    ///
    /// Must be called within a Tokio runtime.
    pub fn build(self) -> Result<Client, Error> {
        let follow = Follow::new(self.urls()?, self.dial(), None)?;
        self.finish(follow)
    }

    /// The client on a channel the caller dialled itself (its own timeouts, its own
    /// error messages, as `cbctl` does); the endpoint, connect timeout and TLS
    /// options are then the channel's, only the endpoint's text is kept for
    /// [`Client::endpoint`], and the client stays on that channel (it follows no
    /// leader). Fails only on a bad token.
    pub fn build_on(self, channel: Channel) -> Result<Client, Error> {
        let follow = Follow::fixed(self.endpoint.clone(), channel);
        self.finish(follow)
    }

    /// The client, connected to the first of its endpoints that answers: fails with
    /// [`Error::Unavailable`] when none can be reached within the connect timeout.
    /// The channel re-dials whenever the connection is lost later (and moves to
    /// another endpoint if that one is gone; docs/DESIGN.md §11).
    pub async fn connect(self) -> Result<Client, Error> {
        let urls = self.urls()?;
        // A bad token fails before anything is dialled.
        TokenInterceptor::new(self.token.as_deref())?;
        let mut failures = Vec::new();
        for (index, url) in urls.iter().enumerate() {
            match self.endpoint_for(url)?.connect().await {
                Ok(channel) => {
                    let follow = Follow::new(urls.clone(), self.dial(), Some((index, channel)))?;
                    return self.finish(follow);
                }
                Err(e) => failures.push(format!("connect to {url}: {}", error_chain(&e))),
            }
        }
        Err(Error::Unavailable(Status::unavailable(failures.join("; "))))
    }
}

/// An error and its sources, `: `-separated (a transport error alone says little).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_goes_in_the_authorization_header_and_never_in_debug() {
        let mut interceptor = TokenInterceptor::new(Some("s3cret")).expect("valid");
        let request = interceptor.call(Request::new(())).expect("intercepted");
        let header = request.metadata().get("authorization").expect("header");
        assert_eq!(header.to_str().expect("ascii"), "Bearer s3cret");
        assert!(!format!("{interceptor:?}").contains("s3cret"));

        let mut none = TokenInterceptor::new(None).expect("valid");
        let request = none.call(Request::new(())).expect("intercepted");
        assert!(request.metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn bad_endpoint_or_token_is_a_config_error() {
        let bad_token = Client::builder("127.0.0.1:7411")
            .token(Some("line\nbreak".into()))
            .build();
        assert!(matches!(bad_token, Err(Error::Config(_))), "{bad_token:?}");
        let bad_uri = Client::builder("http://[::1").build();
        assert!(matches!(bad_uri, Err(Error::Config(_))), "{bad_uri:?}");
        let client = Client::builder("127.0.0.1:7411")
            .token(Some("t".into()))
            .build()
            .expect("valid");
        assert_eq!(client.endpoint(), "http://127.0.0.1:7411");
        assert!(!format!("{client:?}").contains("\"t\""));
    }
}
