//! The etcd store (docs/DESIGN.md §15, "Replicas on etcd"): breakers, the event log
//! and the revision of one cbd cluster under a key prefix `P` of a shared etcd.
//!
//! Key layout (values are protobuf, as in sled, or decimal ASCII):
//! - `P/rev`: our revision (decimal), written by every commit;
//! - `P/oldest`: the oldest retained revision (decimal);
//! - `P/breakers/<name>`: a [`StoredBreaker`];
//! - `P/events/<revision, 20 digits zero padded>`: a `pb::Event`;
//! - `P/leader`: the leader's ID, lease-bound ([`election`]).
//!
//! A commit is one etcd transaction: `P/rev` is the expected revision AND `P/leader`
//! still has the create revision this replica's campaign won (the fence), then every
//! put, delete and event, the new `P/rev` and `P/oldest`, and one DeleteRange for the
//! compacted events. A deposed leader's transaction fails on the fence and is refused
//! with [`Error::NotLeader`], never acknowledged.
//!
//! etcd-client is async and spawns its connection tasks on the runtime that made it;
//! the store runs every call on its own small runtime, so `load` (blocking, by the
//! [`Store`] contract) may wait for it from any thread, async tests included.

pub mod election;
pub mod warm;

use std::{future::Future, sync::Arc, time::Duration};

use cbd_proto::v1 as pb;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Txn, TxnOp,
    TxnOpResponse,
};
use prost::Message;
use tokio::sync::watch;

use super::{Committed, Loaded, Store, StoreFuture, StoredBreaker, WriteBatch, check_expected};
use crate::{error::Error, permit::PermitKey};

/// etcd 3.4's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Operations of a commit that are not a batch's changes: `P/rev`, `P/oldest`, and the
/// DeleteRange of compacted events.
const FIXED_OPS: usize = 3;
/// Keys read per range request by [`Store::load`].
const LOAD_PAGE: i64 = 1000;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Every request's time limit; past it the store is unavailable.
    pub request_timeout: Duration,
    /// Time limit of a connection attempt.
    pub connect_timeout: Duration,
    /// User and password, if etcd has authentication on.
    pub user: Option<(String, String)>,
    /// TLS to etcd (`https://` endpoints); `None`: plain HTTP/2.
    pub tls: Option<etcd_client::TlsOptions>,
}

impl EtcdOptions {
    /// `endpoints` with a 5 s request and 2 s connect timeout, no user.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            user: None,
            tls: None,
        }
    }
}

/// A client of one etcd cluster and the runtime its calls run on; cheap to clone,
/// shared by a replica's store and election.
#[derive(Clone)]
pub struct Connection {
    client: Client,
    runtime: Arc<Runtime>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

/// The store's own runtime; shut down in the background when the last clone goes, as
/// it may be dropped on an async thread (where a blocking shutdown panics).
#[derive(Debug)]
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Runtime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("runtime lives until drop").handle()
    }
}

impl Connection {
    /// Connects to `options.endpoints`. etcd being down is not an error here (the
    /// channel connects lazily); a malformed endpoint is.
    pub async fn connect(options: &EtcdOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cbd-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::Storage(format!("etcd runtime: {e}")))?;
        let runtime = Arc::new(Runtime(Some(runtime)));
        let mut connect = ConnectOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout)
            // Fail fast without an etcd leader (quorum lost) instead of hanging.
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(tls.clone());
        }
        let endpoints = options.endpoints.clone();
        let client = runtime
            .handle()
            .spawn(async move { Client::connect(endpoints, Some(connect)).await })
            .await
            .map_err(|e| Error::Storage(format!("etcd connect task: {e}")))?
            .map_err(etcd_error)?;
        Ok(Self {
            client,
            runtime,
            request_timeout: options.request_timeout,
        })
    }

    /// The raw client (tests use it to act on etcd behind the store's back).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs `f(client)` on the connection's runtime; while it fails with
    /// [`Error::StoreUnavailable`] (an endpoint down, an etcd leader election), tries
    /// again with a short backoff, within the request timeout. Every caller's request
    /// is safe to repeat: reads; a commit, whose retry is recognised if the first
    /// attempt landed (`check_expected`); a campaign, which recognises its own key.
    fn run<T, F, Fut>(&self, f: F) -> impl Future<Output = Result<T, Error>> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let timeout = self.request_timeout;
        let client = self.client.clone();
        let task = self.runtime.handle().spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut pause = Duration::from_millis(20);
            loop {
                let last = match tokio::time::timeout_at(deadline, f(client.clone())).await {
                    Ok(Err(Error::StoreUnavailable { cause })) => cause,
                    Ok(result) => return result,
                    Err(_) => format!("etcd did not answer within {timeout:?}"),
                };
                if tokio::time::Instant::now() + pause >= deadline {
                    return Err(Error::StoreUnavailable { cause: last });
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        });
        async move {
            task.await
                .unwrap_or_else(|e| Err(Error::Storage(format!("etcd task: {e}"))))
        }
    }

    /// [`Connection::run`], waited for on this thread (for the blocking `load`).
    fn run_blocking<T, F, Fut>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let fut = self.run(f);
        self.runtime.handle().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::Storage("etcd runtime stopped".into()))?
    }
}

/// The permit key every replica of the cluster under `prefix` signs permits with
/// (docs/DESIGN.md §11.4): `P/permit-key`, created by the first replica to ask, so
/// that a new leader knows the permits of the old one for what they are.
pub async fn shared_permit_key(conn: &Connection, prefix: &str) -> Result<PermitKey, Error> {
    let keys = Keys::new(prefix);
    let candidate = PermitKey::random()?;
    let bytes = conn
        .run(move |mut client| {
            let (key, candidate) = (keys.permit_key(), candidate.to_bytes().to_vec());
            async move {
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        key.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(key.clone(), candidate.clone(), None)])
                    .or_else(vec![TxnOp::get(key, None)]);
                let response = client.txn(txn).await.map_err(etcd_error)?;
                if response.succeeded() {
                    return Ok(candidate);
                }
                response
                    .op_responses()
                    .into_iter()
                    .find_map(|r| match r {
                        TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                        _ => None,
                    })
                    .ok_or_else(|| Error::Storage("etcd: the permit key vanished".into()))
            }
        })
        .await?;
    PermitKey::from_bytes(&bytes, "in etcd")
}

/// The keys of one cbd cluster under its prefix.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is dropped: `a/` and `a` are one prefix).
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }
    pub(crate) fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}/{rest}", self.prefix).into_bytes()
    }
    pub(crate) fn rev(&self) -> Vec<u8> {
        self.key("rev")
    }
    pub(crate) fn oldest(&self) -> Vec<u8> {
        self.key("oldest")
    }
    pub(crate) fn leader(&self) -> Vec<u8> {
        self.key("leader")
    }
    pub(crate) fn breakers(&self) -> Vec<u8> {
        self.key("breakers/")
    }
    fn breaker(&self, name: &str) -> Vec<u8> {
        self.key(&format!("breakers/{name}"))
    }
    fn events(&self) -> Vec<u8> {
        self.key("events/")
    }
    fn permit_key(&self) -> Vec<u8> {
        self.key("permit-key")
    }
    fn event(&self, revision: u64) -> Vec<u8> {
        self.key(&format!("events/{revision:020}"))
    }
}

/// The end of the range of keys starting with `prefix` (its last byte plus one; our
/// prefixes end in `/`, so no carry).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// A u64 stored as decimal ASCII.
pub(crate) fn parse_u64(key: &str, value: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Storage(format!("etcd key {key}: not a number")))
}

/// etcd unreachable, timing out or without a leader (quorum lost) is
/// [`Error::StoreUnavailable`]; anything else (a request too large, bad auth) is a
/// storage error.
pub(crate) fn etcd_error(e: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    use tonic::Code;
    match &e {
        E::TransportError(_) | E::IoError(_) => Error::StoreUnavailable {
            cause: format!("etcd unreachable: {e}"),
        },
        E::GRpcStatus(status)
            if matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
            ) =>
        {
            Error::StoreUnavailable {
                cause: format!("etcd: {}", status.message()),
            }
        }
        _ => Error::Storage(format!("etcd: {e}")),
    }
}

/// The fence a commit is conditioned on: the create revision of `P/leader` as this
/// replica's campaign won it; `None`: not the leader, nothing may be committed.
pub type Fence = watch::Receiver<Option<i64>>;

/// Breakers, events and the revision of one cbd cluster in etcd.
#[derive(Debug)]
pub struct EtcdStore {
    conn: Connection,
    keys: Keys,
    fence: Fence,
    max_txn_ops: usize,
    /// What the first `load` returns instead of reading etcd: a standby's warm copy
    /// ([`warm::Warm`]), complete as of this leadership's start.
    preloaded: parking_lot::Mutex<Option<Loaded>>,
}

impl EtcdStore {
    /// The store under `prefix` on `conn`, committing only while `fence` holds a
    /// leadership ([`election::Election::fence`]); etcd's `--max-txn-ops` is
    /// `max_txn_ops` (at least 4).
    pub fn new(conn: Connection, prefix: &str, fence: Fence, max_txn_ops: usize) -> Arc<Self> {
        Arc::new(Self {
            conn,
            keys: Keys::new(prefix),
            fence,
            max_txn_ops: max_txn_ops.max(FIXED_OPS + 1),
            preloaded: parking_lot::Mutex::new(None),
        })
    }

    /// Makes the first [`Store::load`] return `loaded` (a warm copy known to be
    /// complete) instead of reading everything from etcd.
    pub fn preload(&self, loaded: Loaded) {
        *self.preloaded.lock() = Some(loaded);
    }

    async fn commit_txn(
        mut client: Client,
        keys: Keys,
        fence: i64,
        batch: Arc<WriteBatch>,
    ) -> Result<Committed, Error> {
        let rev_holds = if batch.expect_revision == 0 {
            // Nothing committed yet: `P/rev` does not exist.
            Compare::version(keys.rev(), CompareOp::Equal, 0)
        } else {
            Compare::value(
                keys.rev(),
                CompareOp::Equal,
                batch.expect_revision.to_string(),
            )
        };
        let fence_holds = Compare::create_revision(keys.leader(), CompareOp::Equal, fence);
        let mut ops = Vec::with_capacity(
            batch.puts.len() + batch.deletes.len() + batch.events.len() + FIXED_OPS,
        );
        for (name, record) in &batch.puts {
            ops.push(TxnOp::put(keys.breaker(name), record.encode_to_vec(), None));
        }
        for name in &batch.deletes {
            ops.push(TxnOp::delete(keys.breaker(name), None));
        }
        for event in &batch.events {
            ops.push(TxnOp::put(
                keys.event(event.revision),
                event.encode_to_vec(),
                None,
            ));
        }
        ops.push(TxnOp::put(keys.rev(), batch.revision.to_string(), None));
        ops.push(TxnOp::put(
            keys.oldest(),
            batch.oldest_retained.to_string(),
            None,
        ));
        ops.push(TxnOp::delete(
            keys.events(),
            Some(DeleteOptions::new().with_range(keys.event(batch.oldest_retained))),
        ));
        // On failure, read why in the same transaction: our revision, the leader key,
        // and the event at the batch's revision (did an earlier attempt land?).
        let why = vec![
            TxnOp::get(keys.rev(), None),
            TxnOp::get(keys.leader(), None),
            TxnOp::get(keys.event(batch.revision), None),
        ];
        let txn = Txn::new()
            .when(vec![rev_holds, fence_holds])
            .and_then(ops)
            .or_else(why);
        let response = client.txn(txn).await.map_err(etcd_error)?;
        if response.succeeded() {
            return Ok(Committed {
                revision: batch.revision,
            });
        }
        let mut reads = response.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        let rev_kv = reads.next().flatten();
        let leader_kv = reads.next().flatten();
        let event_kv = reads.next().flatten();
        let found = match &rev_kv {
            Some(kv) => parse_u64("rev", kv.value())?,
            None => 0,
        };
        let ours = leader_kv.as_ref().map(|kv| kv.create_revision()) == Some(fence);
        let landed = match event_kv {
            Some(kv) => Some(pb::Event::decode(kv.value())?),
            None => None,
        };
        match check_expected(&batch, found, || Ok(landed)) {
            // The retry of an attempt that landed, under our fence then: durable.
            Ok(()) if found == batch.revision && found != batch.expect_revision => Ok(Committed {
                revision: batch.revision,
            }),
            _ if !ours => Err(Error::NotLeader {
                leader: leader_kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            }),
            Err(conflict) => Err(conflict),
            Ok(()) => Err(Error::Storage(
                "etcd refused a commit whose conditions hold".into(),
            )),
        }
    }

    /// Everything under the prefix, as one consistent read, and the etcd revision it
    /// was read at.
    pub(crate) async fn load_at(mut client: Client, keys: Keys) -> Result<(Loaded, i64), Error> {
        let first = client.get(keys.rev(), None).await.map_err(etcd_error)?;
        // Every later read at this etcd revision: one consistent snapshot.
        let at = first.header().map(|h| h.revision()).unwrap_or(0);
        let revision = match first.kvs().first() {
            Some(kv) => parse_u64("rev", kv.value())?,
            None => 0,
        };
        let oldest = client
            .get(keys.oldest(), Some(GetOptions::new().with_revision(at)))
            .await
            .map_err(etcd_error)?;
        let oldest_retained = match oldest.kvs().first() {
            Some(kv) => parse_u64("oldest", kv.value())?,
            None => revision + 1,
        };
        let prefix = keys.breakers();
        let end = range_end(&prefix);
        let mut from = prefix.clone();
        let mut breakers = Vec::new();
        loop {
            let page = client
                .get(
                    from.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(end.clone())
                            .with_limit(LOAD_PAGE)
                            .with_revision(at),
                    ),
                )
                .await
                .map_err(etcd_error)?;
            for kv in page.kvs() {
                let name = std::str::from_utf8(&kv.key()[prefix.len()..])
                    .map_err(|_| Error::Storage("etcd breaker key is not UTF-8".into()))?;
                breakers.push((name.to_owned(), StoredBreaker::decode(kv.value())?));
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((
            Loaded {
                breakers,
                revision,
                oldest_retained,
            },
            at,
        ))
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<Loaded, Error> {
        if let Some(loaded) = self.preloaded.lock().take() {
            return Ok(loaded);
        }
        let keys = self.keys.clone();
        self.conn.run_blocking(move |client| {
            let keys = keys.clone();
            async move { Ok(Self::load_at(client, keys).await?.0) }
        })
    }

    fn commit(self: Arc<Self>, batch: Arc<WriteBatch>) -> StoreFuture<Committed> {
        let keys = self.keys.clone();
        let Some(fence) = *self.fence.borrow() else {
            return Box::pin(async { Err(Error::NotLeader { leader: None }) });
        };
        Box::pin(
            self.conn
                .run(move |client| Self::commit_txn(client, keys.clone(), fence, batch.clone())),
        )
    }

    fn events(self: Arc<Self>, from: u64, limit: usize) -> StoreFuture<Vec<pb::Event>> {
        let keys = self.keys.clone();
        Box::pin(self.conn.run(move |mut client| {
            let keys = keys.clone();
            async move {
                let end = range_end(&keys.events());
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let got = client
                    .get(
                        keys.event(from),
                        Some(GetOptions::new().with_range(end).with_limit(limit)),
                    )
                    .await
                    .map_err(etcd_error)?;
                got.kvs()
                    .iter()
                    .map(|kv| pb::Event::decode(kv.value()).map_err(Error::from))
                    .collect()
            }
        }))
    }

    fn max_batch(&self) -> Option<usize> {
        Some(self.max_txn_ops - FIXED_OPS)
    }
}

#[cfg(test)]
mod tests;
