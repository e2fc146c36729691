//! Property test: no request can panic a handler, and every answer carries a code
//! the proto documents for that RPC (INVALID_ARGUMENT messages name a field of the
//! request).
//!
//! Every RPC of `Breakers` and `Admin` is fed arbitrary field values (edge values of
//! every duration, count and enum), arbitrary bytes through the prost decoder, and
//! mutations of valid encodings. The services run in process on a real registry
//! over sled in a temporary directory. Permits are opaque: real ones, mutated ones
//! and garbage.
//!
//! `CBD_FUZZ_CASES` overrides the case count (default [`DEFAULT_CASES`]).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use cbd::{
    metrics::Metrics,
    permit::{PermitKey, Permits},
    registry::{Registry, RegistryConfig},
    service::{AdminService, BreakersService, watch::Watcher},
    status::StatusSources,
    store::sled::SledStore,
};
use cbd_proto::v1::{self as pb, admin_server::Admin, breakers_server::Breakers};
use futures::StreamExt;
use proptest::{collection::vec, option, prelude::*, test_runner::TestRunner};
use prost::Message;
use tonic::{Code, Request, Status, Streaming, codegen::Bytes};

/// Cases run by default: every RPC shares them.
const DEFAULT_CASES: u32 = 100_000;
/// Breakers the daemon may hold; small, so that the cap is reached.
const MAX_BREAKERS: usize = 64;
/// Events kept; small, so that old start revisions are compacted away.
const RETENTION: u64 = 64;
/// How long a watch stream gets to produce each message before the case moves on.
const WATCH_POLL: Duration = Duration::from_millis(1);
/// Most messages read from one watch stream.
const WATCH_MESSAGES: usize = 8;
/// A case that takes longer has hung (e.g. a background task died).
const CASE_TIMEOUT: Duration = Duration::from_secs(10);
/// `--max-message-size` of the Session cases, in bytes.
const SESSION_MAX_MESSAGE: usize = 64 * 1024;
/// Names the generator favours, so that many requests reach existing breakers.
const NAMES: &[&str] = &["a", "b", "svc/c", "svc/d", "t/1", "t/2"];

/// The services under test and what the cases share.
struct Harness {
    rt: tokio::runtime::Runtime,
    breakers: BreakersService,
    admin: AdminService,
    /// Recently issued permits, reused (intact or mutated) by Report cases.
    permits: Mutex<Vec<Vec<u8>>>,
    /// The data directory; kept alive for the whole run.
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // tmpfs when there is one: every commit is flushed, and the run commits often.
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("tempdir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (breakers, admin) = rt.block_on(async {
            let store = SledStore::open(&dir.path().join("data")).expect("open sled");
            let registry = Registry::open(
                Arc::new(store),
                RegistryConfig {
                    max_breakers: MAX_BREAKERS,
                    watch_retention: RETENTION,
                    templates: vec![("t/".into(), cbd_breaker::Spec::default())],
                    metrics: Metrics::new(MAX_BREAKERS),
                    clock: cbd::clock::Clock::wall(),
                },
            )
            .expect("registry");
            let (stop, stopping) = tokio::sync::watch::channel(false);
            // Never shut down: the sender lives as long as the process.
            std::mem::forget(stop);
            let watcher = Watcher::new(registry.clone(), 1000, stopping);
            let key = PermitKey::random().expect("permit key");
            let permits = Arc::new(Permits::for_this_boot(&key).expect("boot id"));
            let breakers = BreakersService::new(registry.clone(), watcher.clone(), permits);
            let status = StatusSources::new(
                registry.clone(),
                watcher,
                breakers.sessions().clone(),
                cbd::status::ReplicationRole::Standalone,
            );
            (breakers, AdminService::new(registry, status))
        });
        Harness {
            rt,
            breakers,
            admin,
            permits: Mutex::new(Vec::new()),
            _dir: dir,
        }
    })
}

// ---------------------------------------------------------------- generators

fn name() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(String::from),
        2 => "t/[0-9]",
        1 => "t/[a-z0-9]{1,6}",
        1 => "[A-Za-z0-9._:/-]{0,260}",
        1 => ".{0,40}",
        1 => Just(String::new()),
        1 => Just("x".repeat(257)),
    ]
    .boxed()
}

/// An operator's reason: empty, ordinary, at and past the 256-byte bound, or with
/// control characters.
fn reason() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => "[ -~]{1,40}",
        1 => Just("r".repeat(256)),
        1 => Just("r".repeat(257)),
        1 => ".{0,300}",
    ]
    .boxed()
}

/// Any wire time, favouring the edges.
fn timestamp() -> BoxedStrategy<prost_types::Timestamp> {
    (
        prop_oneof![3 => 0i64..2_000_000_000, 1 => any::<i64>()],
        prop_oneof![3 => 0i32..1_000_000_000, 1 => any::<i32>()],
    )
        .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos })
        .boxed()
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => proptest::sample::select(&["svc/", "t/", "a", "zz"][..]).prop_map(String::from),
        1 => ".{0,20}",
    ]
}

/// Seconds and nanos, favouring the edges of every bound the daemon checks.
fn duration() -> BoxedStrategy<prost_types::Duration> {
    let seconds = prop_oneof![
        4 => 0i64..5,
        2 => 0i64..100_000,
        1 => proptest::sample::select(&[
            -1,
            3600,
            3601,
            86_400,
            86_401,
            315_576_000_000,
            315_576_000_001,
            i64::MAX,
            i64::MIN,
        ][..]),
        1 => any::<i64>(),
    ];
    let nanos = prop_oneof![
        4 => 0i32..1_000_000_000,
        1 => proptest::sample::select(&[0, 1, 999_999_999, 1_000_000_000, -1, i32::MAX, i32::MIN][..]),
        1 => any::<i32>(),
    ];
    (seconds, nanos)
        .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos })
        .boxed()
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..20,
        1 => proptest::sample::select(&[100, 1000, 1001, 100_000, 100_001, u32::MAX][..]),
        1 => any::<u32>(),
    ]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..6, 1 => any::<i32>()]
}

fn spec() -> BoxedStrategy<pb::BreakerSpec> {
    use pb::breaker_spec::Window;
    let window = option::of(prop_oneof![
        count().prop_map(|calls| Window::CountWindow(pb::CountWindow { calls })),
        (option::of(duration()), count()).prop_map(|(duration, buckets)| Window::TimeWindow(
            pb::TimeWindow { duration, buckets }
        )),
    ]);
    let d = || option::weighted(0.3, duration());
    let n = || option::weighted(0.3, count());
    (
        (n(), n(), n(), d(), n(), window),
        (d(), d(), n(), n(), d(), enum_value(), d()),
        (n(), d(), any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (
                    consecutive_failures,
                    failure_rate_percent,
                    slow_call_rate_percent,
                    slow_call_duration,
                    minimum_calls,
                    window,
                ),
                (
                    open_duration,
                    max_open_duration,
                    half_open_permits,
                    success_threshold,
                    permit_ttl,
                    fallback,
                    cache_ttl,
                ),
                (
                    half_open_failure_rate_percent,
                    half_open_max_wait,
                    half_open_max_wait_closes,
                    slow_includes_failures,
                ),
            )| pb::BreakerSpec {
                consecutive_failures,
                failure_rate_percent,
                slow_call_rate_percent,
                slow_call_duration,
                minimum_calls,
                window,
                open_duration,
                max_open_duration,
                half_open_permits,
                success_threshold,
                permit_ttl,
                fallback,
                cache_ttl,
                half_open_failure_rate_percent,
                half_open_max_wait,
                half_open_max_wait_closes,
                slow_includes_failures,
                min_distinct_callers: None,
            },
        )
        .boxed()
}

/// Specs that mostly pass validation, so that puts change breakers too.
fn sane_spec() -> BoxedStrategy<pb::BreakerSpec> {
    let ms = |range: std::ops::Range<u64>| {
        range.prop_map(|ms| prost_types::Duration {
            seconds: (ms / 1000) as i64,
            nanos: ((ms % 1000) * 1_000_000) as i32,
        })
    };
    (
        option::of(1u32..5),
        option::of(1u32..=100),
        option::of(1u32..20),
        option::of(ms(1..5000)),
        option::of(1u32..4),
        enum_value(),
        option::of(1u32..=100),
        option::of(ms(1..5000)),
    )
        .prop_map(
            |(
                consecutive_failures,
                failure_rate_percent,
                minimum_calls,
                open_duration,
                half_open_permits,
                fallback,
                half_open_failure_rate_percent,
                half_open_max_wait,
            )| {
                pb::BreakerSpec {
                    consecutive_failures,
                    failure_rate_percent,
                    minimum_calls,
                    open_duration,
                    half_open_permits,
                    fallback: fallback % 4,
                    half_open_failure_rate_percent,
                    half_open_max_wait,
                    ..Default::default()
                }
            },
        )
        .boxed()
}

/// Names a put or delete targets: mostly ones other requests use.
fn target_name() -> BoxedStrategy<String> {
    prop_oneof![
        6 => proptest::sample::select(NAMES).prop_map(String::from),
        2 => "t/[0-9]",
        1 => name(),
    ]
    .boxed()
}

/// Where a report's permit comes from; resolved against the permits issued so far.
#[derive(Clone, Debug)]
enum PermitSource {
    Bytes(Vec<u8>),
    Issued(usize),
    /// An issued permit with the byte at `.1` (modulo its length) xor-ed with `.2`.
    Flipped(usize, usize, u8),
    /// An issued permit cut to `.1` bytes (modulo its length).
    Truncated(usize, usize),
}

fn permit() -> BoxedStrategy<PermitSource> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..64).prop_map(PermitSource::Bytes),
        4 => any::<usize>().prop_map(PermitSource::Issued),
        2 => (any::<usize>(), any::<usize>(), 1u8..).prop_map(|(i, at, x)| PermitSource::Flipped(i, at, x)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, at)| PermitSource::Truncated(i, at)),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
struct Report {
    permit: PermitSource,
    outcome: i32,
    duration: Option<prost_types::Duration>,
}

fn report() -> BoxedStrategy<Report> {
    (permit(), enum_value(), option::of(duration()))
        .prop_map(|(permit, outcome, duration)| Report {
            permit,
            outcome,
            duration,
        })
        .boxed()
}

fn acquire() -> impl Strategy<Value = pb::AcquireRequest> {
    // Mostly no caller; else one drawn like a name (valid or not).
    let caller = prop_oneof![3 => Just(String::new()), 1 => name()];
    (name(), caller).prop_map(|(name, caller)| pb::AcquireRequest { name, caller })
}

#[derive(Clone, Debug)]
enum SessionItem {
    Acquire(u64, pb::AcquireRequest),
    Report(u64, Report),
    Empty(u64),
    /// A frame whose payload is arbitrary bytes.
    Garbage(Vec<u8>),
}

fn session_item() -> BoxedStrategy<SessionItem> {
    prop_oneof![
        4 => (any::<u64>(), acquire()).prop_map(|(id, a)| SessionItem::Acquire(id, a)),
        4 => (any::<u64>(), report()).prop_map(|(id, r)| SessionItem::Report(id, r)),
        1 => any::<u64>().prop_map(SessionItem::Empty),
        1 => vec(any::<u8>(), 0..32).prop_map(SessionItem::Garbage),
    ]
    .boxed()
}

/// Every unary request type, for the arbitrary-bytes cases.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    Acquire,
    Report,
    AcquireBatch,
    ReportBatch,
    Watch,
    Put,
    Get,
    List,
    Delete,
    SetOverride,
    Reset,
}

const RPCS: &[Rpc] = &[
    Rpc::Acquire,
    Rpc::Report,
    Rpc::AcquireBatch,
    Rpc::ReportBatch,
    Rpc::Watch,
    Rpc::Put,
    Rpc::Get,
    Rpc::List,
    Rpc::Delete,
    Rpc::SetOverride,
    Rpc::Reset,
];

#[derive(Clone, Debug)]
enum Call {
    Acquire(pb::AcquireRequest),
    Report(Report),
    AcquireBatch(Vec<pb::AcquireRequest>),
    /// A batch of 1001 copies: one past the limit.
    AcquireBatchTooLarge,
    ReportBatch(Vec<Report>),
    ReportBatchTooLarge,
    Watch(pb::WatchRequest),
    /// Frames after the stream's items: `true` adds a truncated frame at the end.
    Session(Vec<SessionItem>, bool),
    Put(Box<pb::PutBreakerRequest>),
    Get(pb::GetBreakerRequest),
    List(pb::ListBreakersRequest),
    Delete(pb::DeleteBreakerRequest),
    /// Deletes the breaker at this index (modulo their number) of the first page, so
    /// that breakers come and go and the cap is not held for the whole run.
    DeleteExisting(usize),
    SetOverride(pb::SetOverrideRequest),
    Reset(pb::ResetBreakerRequest),
    ListEvents(pb::ListEventsRequest),
    /// Arbitrary bytes decoded as this RPC's request.
    Bytes(Rpc, Vec<u8>),
    /// A valid encoding of a generated request with bytes flipped.
    Mutated(Box<Call>, Vec<(usize, u8)>),
}

fn watch_request() -> BoxedStrategy<pb::WatchRequest> {
    let filter = option::of(
        (prefix(), vec(name(), 0..3)).prop_map(|(prefix, names)| pb::WatchFilter { prefix, names }),
    );
    let start = option::of(prop_oneof![
        3 => 0u64..300,
        1 => proptest::sample::select(&[0, 1, u64::MAX - 1, u64::MAX][..]),
        1 => any::<u64>(),
    ]);
    let interval = option::weighted(0.8, duration());
    (filter, start, interval)
        .prop_map(
            |(filter, start_revision, progress_interval)| pb::WatchRequest {
                filter,
                start_revision,
                progress_interval,
            },
        )
        .boxed()
}

fn typed_call() -> BoxedStrategy<Call> {
    prop_oneof![
        6 => acquire().prop_map(Call::Acquire),
        6 => report().prop_map(Call::Report),
        2 => vec(acquire(), 0..6).prop_map(Call::AcquireBatch),
        2 => vec(report(), 0..6).prop_map(Call::ReportBatch),
        3 => watch_request().prop_map(Call::Watch),
        3 => (vec(session_item(), 0..6), proptest::bool::weighted(0.2)).prop_map(|(items, cut)| Call::Session(items, cut)),
        4 => (target_name(), option::of(prop_oneof![2 => spec(), 1 => sane_spec()]))
            .prop_map(|(name, spec)| Call::Put(Box::new(pb::PutBreakerRequest { name, spec, reason: String::new() }))),
        1 => (target_name(), reason())
            .prop_map(|(name, reason)| Call::Put(Box::new(pb::PutBreakerRequest { name, spec: None, reason }))),
        2 => name().prop_map(|name| Call::Get(pb::GetBreakerRequest { name })),
        2 => (prefix(), count(), prop_oneof![3 => Just(String::new()), 1 => name()])
            .prop_map(|(prefix, page_size, page_token)| Call::List(pb::ListBreakersRequest { prefix, page_size, page_token })),
        1 => (target_name(), reason()).prop_map(|(name, reason)| Call::Delete(pb::DeleteBreakerRequest { name, reason })),
        1 => any::<usize>().prop_map(Call::DeleteExisting),
        2 => (name(), enum_value(), reason(), option::of(duration()))
            .prop_map(|(name, r#override, reason, duration)| Call::SetOverride(pb::SetOverrideRequest { name, r#override, reason, duration })),
        1 => (name(), reason()).prop_map(|(name, reason)| Call::Reset(pb::ResetBreakerRequest { name, reason })),
        2 => (name(), option::of(timestamp()), count(), prop_oneof![3 => Just(String::new()), 1 => "[0-9]{1,3}", 1 => ".{0,8}"])
            .prop_map(|(name, since, page_size, page_token)| Call::ListEvents(pb::ListEventsRequest { name, since, page_size, page_token })),
    ]
    .boxed()
}

fn call() -> BoxedStrategy<Call> {
    prop_oneof![
        30 => typed_call(),
        1 => Just(Call::AcquireBatchTooLarge),
        1 => Just(Call::ReportBatchTooLarge),
        3 => (proptest::sample::select(RPCS), vec(any::<u8>(), 0..48)).prop_map(|(rpc, b)| Call::Bytes(rpc, b)),
        3 => (typed_call(), vec((any::<usize>(), 1u8..), 1..4)).prop_map(|(c, flips)| Call::Mutated(Box::new(c), flips)),
    ]
    .boxed()
}

// ---------------------------------------------------------------- checking

/// Codes an RPC (or one batch or session item of it) may answer with, per the proto.
fn documented(rpc: &str) -> &'static [Code] {
    use Code::*;
    match rpc {
        "Acquire" => &[Ok, InvalidArgument, NotFound, ResourceExhausted],
        "Report" => &[Ok, InvalidArgument, NotFound],
        "AcquireBatch" | "ReportBatch" | "ListBreakers" | "ListEvents" => &[Ok, InvalidArgument],
        "Watch" => &[Ok, InvalidArgument, OutOfRange, ResourceExhausted],
        "PutBreaker" => &[Ok, InvalidArgument, ResourceExhausted],
        "GetBreaker" | "DeleteBreaker" | "SetOverride" | "ResetBreaker" => {
            &[Ok, InvalidArgument, NotFound]
        }
        "SessionItem" => &[Ok, InvalidArgument, NotFound, ResourceExhausted],
        other => panic!("no documented codes for {other}"),
    }
}

/// Fields an INVALID_ARGUMENT of the RPC may name (`spec.` covers every spec field).
fn fields(rpc: &str) -> &'static [&'static str] {
    match rpc {
        "Acquire" => &["name", "caller"],
        "GetBreaker" => &["name"],
        "DeleteBreaker" | "ResetBreaker" => &["name", "reason"],
        "Report" => &["permit", "outcome", "duration", "caller"],
        "AcquireBatch" | "ReportBatch" => &["items"],
        "Watch" => &[
            "filter.prefix",
            "filter.names",
            "start_revision",
            "progress_interval",
        ],
        "PutBreaker" => &["name", "spec.", "reason"],
        "ListEvents" => &["name", "since", "page_size", "page_token"],
        "ListBreakers" => &["prefix", "page_size", "page_token"],
        "SetOverride" => &["name", "override", "reason", "duration"],
        "SessionItem" => &["kind", "name", "permit", "outcome", "duration", "caller"],
        other => panic!("no fields for {other}"),
    }
}

/// Answers by RPC and code, counted over the whole run.
static TALLY: Mutex<BTreeMap<(&'static str, String), u64>> = Mutex::new(BTreeMap::new());
/// Cases run.
static CASES: AtomicUsize = AtomicUsize::new(0);

fn check(rpc: &'static str, code: Code, message: &str) -> Result<(), TestCaseError> {
    *TALLY
        .lock()
        .expect("tally")
        .entry((rpc, format!("{code:?}")))
        .or_default() += 1;
    prop_assert!(
        documented(rpc).contains(&code),
        "{rpc} answered {code:?} ({message}), not among {:?}",
        documented(rpc)
    );
    if code == Code::InvalidArgument {
        let field = message.split(':').next().unwrap_or_default();
        prop_assert!(
            fields(rpc)
                .iter()
                .any(|f| field == *f || (f.ends_with('.') && field.starts_with(f))),
            "{rpc}: INVALID_ARGUMENT {message:?} does not start with a field of the request ({:?})",
            fields(rpc)
        );
    }
    Ok(())
}

fn check_status<T>(rpc: &'static str, r: &Result<T, Status>) -> Result<(), TestCaseError> {
    match r {
        Ok(_) => check(rpc, Code::Ok, ""),
        Err(s) => check(rpc, s.code(), s.message()),
    }
}

fn check_item(error: Option<&cbd_proto::rpc::Status>) -> Result<(), TestCaseError> {
    match error {
        None => check("SessionItem", Code::Ok, ""),
        Some(e) => check("SessionItem", Code::from_i32(e.code), &e.message),
    }
}

// ---------------------------------------------------------------- running

impl Harness {
    /// The permit bytes, and whether they are anything but a permit the daemon issued.
    fn permit(&self, source: &PermitSource) -> (Vec<u8>, bool) {
        let issued = self.permits.lock().expect("permits");
        let pick = |i: usize| {
            issued
                .get(i % issued.len().max(1))
                .cloned()
                .unwrap_or_default()
        };
        match source {
            PermitSource::Bytes(b) => (b.clone(), true),
            PermitSource::Issued(i) => (pick(*i), false),
            PermitSource::Flipped(i, at, x) => {
                let mut p = pick(*i);
                if p.is_empty() {
                    return (p, false);
                }
                let at = at % p.len();
                p[at] ^= x;
                (p, *x != 0)
            }
            PermitSource::Truncated(i, at) => {
                let mut p = pick(*i);
                if p.is_empty() {
                    return (p, false);
                }
                p.truncate(at % p.len());
                (p, true)
            }
        }
    }

    fn remember(&self, permit: &[u8]) {
        if permit.is_empty() {
            return;
        }
        let mut issued = self.permits.lock().expect("permits");
        if issued.len() >= 64 {
            issued.remove(0);
        }
        issued.push(permit.to_vec());
    }

    fn report_request(&self, r: &Report) -> pb::ReportRequest {
        pb::ReportRequest {
            permit: self.permit(&r.permit).0,
            outcome: r.outcome,
            duration: r.duration,
            caller: String::new(),
        }
    }

    /// The call as one request message (the first item for Session), for mutation.
    fn encode(&self, call: &Call) -> Option<(Rpc, Vec<u8>)> {
        Some(match call {
            Call::Acquire(r) => (Rpc::Acquire, r.encode_to_vec()),
            Call::Report(r) => (Rpc::Report, self.report_request(r).encode_to_vec()),
            Call::AcquireBatch(items) => (
                Rpc::AcquireBatch,
                pb::AcquireBatchRequest {
                    items: items.clone(),
                }
                .encode_to_vec(),
            ),
            Call::ReportBatch(items) => (
                Rpc::ReportBatch,
                pb::ReportBatchRequest {
                    items: items.iter().map(|r| self.report_request(r)).collect(),
                }
                .encode_to_vec(),
            ),
            Call::Watch(r) => (Rpc::Watch, r.encode_to_vec()),
            Call::Put(r) => (Rpc::Put, r.encode_to_vec()),
            Call::Get(r) => (Rpc::Get, r.encode_to_vec()),
            Call::List(r) => (Rpc::List, r.encode_to_vec()),
            Call::Delete(r) => (Rpc::Delete, r.encode_to_vec()),
            Call::SetOverride(r) => (Rpc::SetOverride, r.encode_to_vec()),
            Call::Reset(r) => (Rpc::Reset, r.encode_to_vec()),
            _ => return None,
        })
    }

    /// The request body of a Session (gRPC frames), and the ids it must be answered
    /// with when every item is well formed.
    fn session_frames(&self, items: &[SessionItem], cut: bool) -> (Vec<u8>, Option<Vec<u64>>) {
        let mut frames = Vec::new();
        for item in items {
            let payload = match item {
                SessionItem::Acquire(id, r) => pb::SessionRequest {
                    id: *id,
                    kind: Some(pb::session_request::Kind::Acquire(r.clone())),
                }
                .encode_to_vec(),
                SessionItem::Report(id, r) => pb::SessionRequest {
                    id: *id,
                    kind: Some(pb::session_request::Kind::Report(self.report_request(r))),
                }
                .encode_to_vec(),
                SessionItem::Empty(id) => pb::SessionRequest {
                    id: *id,
                    kind: None,
                }
                .encode_to_vec(),
                SessionItem::Garbage(bytes) => bytes.clone(),
            };
            frame(&mut frames, &payload);
        }
        if cut {
            // A header announcing more bytes than follow.
            frames.extend_from_slice(&[0, 0, 0, 0, 9, 1]);
        }
        // With only well-formed items, every one is answered once, by its id.
        let ids: Option<Vec<u64>> = (!cut)
            .then(|| {
                items
                    .iter()
                    .map(|item| match item {
                        SessionItem::Acquire(id, _)
                        | SessionItem::Report(id, _)
                        | SessionItem::Empty(id) => Some(*id),
                        SessionItem::Garbage(_) => None,
                    })
                    .collect()
            })
            .flatten();
        (frames, ids)
    }

    async fn run(&self, call: Call) -> Result<(), TestCaseError> {
        let b = &self.breakers;
        let a = &self.admin;
        match call {
            Call::Acquire(r) => {
                let answer = b.acquire(Request::new(r)).await;
                if let Ok(ok) = &answer {
                    self.remember(&ok.get_ref().permit);
                }
                check_status("Acquire", &answer)
            }
            Call::Report(r) => {
                let (permit, tampered) = self.permit(&r.permit);
                let req = pb::ReportRequest {
                    permit,
                    outcome: r.outcome,
                    duration: r.duration,
                    caller: String::new(),
                };
                let answer = b.report(Request::new(req)).await;
                if tampered {
                    // Bytes the daemon did not mint never pass its tag: always refused,
                    // naming the permit.
                    prop_assert!(
                        answer
                            .as_ref()
                            .is_err_and(|s| s.code() == Code::InvalidArgument
                                && s.message().starts_with("permit:")),
                        "a tampered permit answered {answer:?}"
                    );
                }
                check_status("Report", &answer)
            }
            Call::AcquireBatch(items) => self.acquire_batch(items).await,
            Call::AcquireBatchTooLarge => {
                let items = vec![
                    pb::AcquireRequest {
                        name: "a".into(),
                        caller: String::new()
                    };
                    1001
                ];
                let r = b
                    .acquire_batch(Request::new(pb::AcquireBatchRequest { items }))
                    .await;
                prop_assert_eq!(
                    r.as_ref().err().map(Status::code),
                    Some(Code::InvalidArgument)
                );
                check_status("AcquireBatch", &r)
            }
            Call::ReportBatch(items) => {
                let items = items.iter().map(|r| self.report_request(r)).collect();
                self.report_batch(pb::ReportBatchRequest { items }).await
            }
            Call::ReportBatchTooLarge => {
                let items = vec![pb::ReportRequest::default(); 1001];
                let r = b
                    .report_batch(Request::new(pb::ReportBatchRequest { items }))
                    .await;
                prop_assert_eq!(
                    r.as_ref().err().map(Status::code),
                    Some(Code::InvalidArgument)
                );
                check_status("ReportBatch", &r)
            }
            Call::Watch(r) => self.watch(r).await,
            Call::Session(items, cut) => {
                let (frames, ids) = self.session_frames(&items, cut);
                self.session(frames, ids).await
            }
            Call::Put(r) => check_status("PutBreaker", &a.put_breaker(Request::new(*r)).await),
            Call::Get(r) => check_status("GetBreaker", &a.get_breaker(Request::new(r)).await),
            Call::List(r) => check_status("ListBreakers", &a.list_breakers(Request::new(r)).await),
            Call::Delete(r) => {
                check_status("DeleteBreaker", &a.delete_breaker(Request::new(r)).await)
            }
            Call::SetOverride(r) => {
                check_status("SetOverride", &a.set_override(Request::new(r)).await)
            }
            Call::DeleteExisting(i) => {
                let page = a
                    .list_breakers(Request::new(pb::ListBreakersRequest::default()))
                    .await
                    .map_err(|s| TestCaseError::fail(format!("list: {s:?}")))?
                    .into_inner();
                let Some(victim) = page.breakers.get(i % page.breakers.len().max(1)) else {
                    return Ok(());
                };
                let name = victim.name.clone();
                check_status(
                    "DeleteBreaker",
                    &a.delete_breaker(Request::new(pb::DeleteBreakerRequest {
                        name,
                        reason: String::new(),
                    }))
                    .await,
                )
            }
            Call::Reset(r) => check_status("ResetBreaker", &a.reset_breaker(Request::new(r)).await),
            Call::ListEvents(r) => {
                check_status("ListEvents", &a.list_events(Request::new(r)).await)
            }
            Call::Bytes(rpc, bytes) => self.decoded(rpc, &bytes).await,
            Call::Mutated(inner, flips) => {
                if let Call::Session(items, cut) = *inner {
                    // Flipped frame headers and payloads: the stream decodes them.
                    let (mut frames, _) = self.session_frames(&items, cut);
                    if !frames.is_empty() {
                        for (at, x) in flips {
                            let at = at % frames.len();
                            frames[at] ^= x;
                        }
                    }
                    return self.session(frames, None).await;
                }
                let Some((rpc, mut bytes)) = self.encode(&inner) else {
                    return Ok(());
                };
                if !bytes.is_empty() {
                    for (at, x) in flips {
                        let at = at % bytes.len();
                        bytes[at] ^= x;
                    }
                }
                self.decoded(rpc, &bytes).await
            }
        }
    }

    async fn acquire_batch(&self, items: Vec<pb::AcquireRequest>) -> Result<(), TestCaseError> {
        let n = items.len();
        let r = self
            .breakers
            .acquire_batch(Request::new(pb::AcquireBatchRequest { items }))
            .await;
        check_status("AcquireBatch", &r)?;
        if let Ok(r) = r {
            let results = &r.get_ref().results;
            prop_assert_eq!(results.len(), n);
            for result in results {
                prop_assert!(result.response.is_some() != result.error.is_some());
                if let Some(ok) = &result.response {
                    self.remember(&ok.permit);
                }
                match &result.error {
                    None => check("Acquire", Code::Ok, "")?,
                    Some(e) => check("Acquire", Code::from_i32(e.code), &e.message)?,
                }
            }
        }
        Ok(())
    }

    async fn report_batch(&self, req: pb::ReportBatchRequest) -> Result<(), TestCaseError> {
        let n = req.items.len();
        let r = self.breakers.report_batch(Request::new(req)).await;
        check_status("ReportBatch", &r)?;
        if let Ok(r) = r {
            let results = &r.get_ref().results;
            prop_assert_eq!(results.len(), n);
            for result in results {
                prop_assert!(result.response.is_some() != result.error.is_some());
                match &result.error {
                    None => check("Report", Code::Ok, "")?,
                    Some(e) => check("Report", Code::from_i32(e.code), &e.message)?,
                }
            }
        }
        Ok(())
    }

    /// Opens the stream and reads what it sends promptly: the snapshot or replay, and
    /// past it to where the stream waits (where an interval is added to a clock).
    async fn watch(&self, req: pb::WatchRequest) -> Result<(), TestCaseError> {
        let start = req.start_revision;
        let opened = self.breakers.watch(Request::new(req)).await;
        check_status("Watch", &opened)?;
        let Ok(stream) = opened else { return Ok(()) };
        let mut stream = stream.into_inner();
        for _ in 0..WATCH_MESSAGES {
            let Ok(next) = tokio::time::timeout(WATCH_POLL, stream.next()).await else {
                break;
            };
            match next {
                None => break,
                Some(Err(s)) => {
                    check("Watch", s.code(), s.message())?;
                    break;
                }
                Some(Ok(msg)) => {
                    if let (Some(start), Some(pb::watch_response::Kind::Event(e))) =
                        (start, &msg.kind)
                    {
                        prop_assert!(
                            e.revision >= start,
                            "event {} below start_revision {start}",
                            e.revision
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs a Session whose request body is `frames` (gRPC length-prefixed messages).
    async fn session(
        &self,
        frames: Vec<u8>,
        expected_ids: Option<Vec<u64>>,
    ) -> Result<(), TestCaseError> {
        // Behind the daemon's message-size layer, as every Session is.
        let body = cbd::layers::message_size::limit_body(
            tonic::body::Body::new(http_body_util::Full::new(Bytes::from(frames))),
            SESSION_MAX_MESSAGE,
        );
        let inbound: Streaming<pb::SessionRequest> = Streaming::new_request(
            // The daemon's own decoder, as the generated server uses it.
            tonic::codec::Codec::decoder(&mut cbd_proto::codec::StrictCodec::<
                pb::SessionResponse,
                pb::SessionRequest,
            >::default()),
            body,
            None,
            Some(SESSION_MAX_MESSAGE),
        );
        let opened = self.breakers.session(Request::new(inbound)).await;
        let Ok(stream) = opened else {
            let s = opened.err().expect("error");
            return Err(TestCaseError::fail(format!("Session refused: {s:?}")));
        };
        let mut answers = stream.into_inner();
        let mut ids = Vec::new();
        while let Some(answer) = answers.next().await {
            match answer {
                Ok(answer) => {
                    ids.push(answer.id);
                    match answer.kind {
                        Some(pb::session_response::Kind::Error(e)) => check_item(Some(&e))?,
                        Some(pb::session_response::Kind::Acquire(ok)) => {
                            self.remember(&ok.permit);
                            check_item(None)?;
                        }
                        Some(
                            pb::session_response::Kind::Report(_)
                            | pb::session_response::Kind::Lease(_)
                            | pb::session_response::Kind::Outcomes(_)
                            | pb::session_response::Kind::Revoked(_),
                        ) => check_item(None)?,
                        None => return Err(TestCaseError::fail("a session answer without kind")),
                    }
                }
                // A frame that does not decode ends the stream with INVALID_ARGUMENT
                // (cbd's codec), a body cut mid-frame with tonic's INTERNAL, and one
                // above the size limit with RESOURCE_EXHAUSTED, before any handler
                // sees it; a handler's own errors are answers, never the stream's.
                Err(s) => {
                    *TALLY
                        .lock()
                        .expect("tally")
                        .entry(("Session", format!("{:?}", s.code())))
                        .or_default() += 1;
                    let too_large = s.code() == Code::ResourceExhausted
                        && s.message().starts_with("--max-message-size");
                    prop_assert!(
                        s.code() == Code::InvalidArgument
                            || s.code() == Code::Internal
                            || too_large,
                        "session stream failed: {:?}",
                        s
                    );
                    return Ok(());
                }
            }
        }
        if let Some(mut expected) = expected_ids {
            expected.sort_unstable();
            ids.sort_unstable();
            prop_assert_eq!(ids, expected, "session answers by id");
        }
        Ok(())
    }

    /// Decodes `bytes` as `rpc`'s request as tonic would and, if they decode, calls it.
    async fn decoded(&self, rpc: Rpc, bytes: &[u8]) -> Result<(), TestCaseError> {
        fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
            M::decode(bytes).ok()
        }
        let call = match rpc {
            Rpc::Acquire => decode(bytes).map(Call::Acquire),
            Rpc::Report => {
                return match decode::<pb::ReportRequest>(bytes) {
                    Some(r) => check_status("Report", &self.breakers.report(Request::new(r)).await),
                    None => Ok(()),
                };
            }
            Rpc::AcquireBatch => {
                decode::<pb::AcquireBatchRequest>(bytes).map(|r| Call::AcquireBatch(r.items))
            }
            Rpc::ReportBatch => {
                return match decode::<pb::ReportBatchRequest>(bytes) {
                    Some(r) => self.report_batch(r).await,
                    None => Ok(()),
                };
            }
            Rpc::Watch => decode(bytes).map(Call::Watch),
            Rpc::Put => decode(bytes).map(|r| Call::Put(Box::new(r))),
            Rpc::Get => decode(bytes).map(Call::Get),
            Rpc::List => decode(bytes).map(Call::List),
            Rpc::Delete => decode(bytes).map(Call::Delete),
            Rpc::SetOverride => decode(bytes).map(Call::SetOverride),
            Rpc::Reset => decode(bytes).map(Call::Reset),
        };
        match call {
            Some(call) => Box::pin(self.run(call)).await,
            None => Ok(()),
        }
    }
}

/// Appends one uncompressed gRPC frame.
fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

#[test]
fn no_request_panics_and_every_answer_has_a_documented_code() {
    let cases = std::env::var("CBD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let h = harness();
    let config = ProptestConfig {
        cases,
        // Regressions are reported in the failure message; nothing is written to the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let started = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&call(), |call| {
        CASES.fetch_add(1, Ordering::Relaxed);
        // A panic in a handler fails the case (proptest catches it and shrinks).
        h.rt.block_on(async {
            match tokio::time::timeout(CASE_TIMEOUT, h.run(call)).await {
                Ok(checked) => checked,
                Err(_) => Err(TestCaseError::fail(format!(
                    "no answer within {CASE_TIMEOUT:?}"
                ))),
            }
        })
    });
    let ran = CASES.load(Ordering::Relaxed);
    eprintln!(
        "fuzz: {ran} cases in {:.1?} (asked for {cases}); answers by RPC and code:",
        started.elapsed()
    );
    for ((rpc, code), n) in TALLY.lock().expect("tally").iter() {
        eprintln!("  {rpc:<14} {code:<18} {n}");
    }
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(ran >= cases as usize, "only {ran} of {cases} cases ran");
    // The daemon still answers after everything it was fed.
    let answer =
        h.rt.block_on(h.breakers.acquire(Request::new(pb::AcquireRequest {
            name: "t/after".into(),
            caller: String::new(),
        })));
    let code = answer.err().map(|s| s.code()).unwrap_or(Code::Ok);
    assert!(
        matches!(code, Code::Ok | Code::ResourceExhausted),
        "acquire after the run: {code:?}"
    );
}
