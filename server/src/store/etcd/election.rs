//! Leader election on etcd: a lease (TTL default 2 s, kept alive every TTL/3) and the
//! lease-bound key `P/leader`, created only if absent (`create_revision == 0`), whose
//! value is the winner's advertised address. The create revision of that key is the
//! fence every commit of the winner's [`super::EtcdStore`] is conditioned on: once
//! the lease ends, etcd deletes the key, a new leader's key has another create
//! revision, and the old leader's commits fail.
//!
//! [`Election::deadline`] is the instant before which the leader may still act: the
//! send time of the last keep-alive etcd answered, plus the TTL, minus a safety
//! margin. etcd cannot expire the lease before that send time + TTL, so a leader that
//! stops deciding at the deadline never overlaps with the next one.

use std::{sync::Arc, time::Duration};

use etcd_client::{
    Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use parking_lot::Mutex;
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use super::{Connection, Fence, Keys, etcd_error};
use crate::error::Error;

/// The pause before a keep-alive that failed is tried again.
const RETRY_SOON: Duration = Duration::from_millis(50);

/// How a replica campaigns.
#[derive(Clone, Debug)]
pub struct ElectionOptions {
    /// The cluster's key prefix (the store's).
    pub prefix: String,
    /// This replica's advertised address or ID: `P/leader`'s value while it leads.
    pub id: String,
    /// The lease TTL (whole seconds, at least 1; etcd may round it up to its minimum).
    pub ttl: Duration,
    /// Taken off the lease's end for [`Election::deadline`]: clock drift and the time a
    /// decision takes to reach a client.
    pub safety_margin: Duration,
}

impl ElectionOptions {
    /// Campaigning as `id` under `prefix` with a 2 s TTL and a 250 ms margin.
    pub fn new(prefix: &str, id: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            id: id.to_owned(),
            ttl: Duration::from_secs(2),
            safety_margin: Duration::from_millis(250),
        }
    }
}

/// What this replica holds while it leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// The etcd lease `P/leader` is bound to.
    pub lease: i64,
    /// `P/leader`'s create revision: the fence.
    pub create_revision: i64,
}

#[derive(Debug)]
struct Held {
    leadership: Leadership,
    /// Until when this leader may act (see [`Election::deadline`]).
    deadline: Instant,
    keep_alive: JoinHandle<()>,
}

/// One replica's part in the election of a cluster's leader.
#[derive(Debug)]
pub struct Election {
    conn: Connection,
    keys: Keys,
    options: ElectionOptions,
    /// Who leads, as `P/leader` says (kept by a watch): the leader's address.
    leader: watch::Sender<Option<String>>,
    /// Our fence while we lead.
    fence: watch::Sender<Option<i64>>,
    held: Arc<Mutex<Option<Held>>>,
    observer: JoinHandle<()>,
}

impl Election {
    /// Joins the election of the cluster under `options.prefix` (not campaigning yet):
    /// starts following who leads.
    pub fn new(conn: Connection, options: ElectionOptions) -> Arc<Self> {
        let keys = Keys::new(&options.prefix);
        let (leader, _) = watch::channel(None);
        let (fence, _) = watch::channel(None);
        let held = Arc::new(Mutex::new(None::<Held>));
        let observer = conn.runtime.handle().spawn(observe(
            conn.client(),
            keys.clone(),
            leader.clone(),
            fence.clone(),
            held.clone(),
        ));
        Arc::new(Self {
            conn,
            keys,
            options,
            leader,
            fence,
            held,
            observer,
        })
    }

    /// Who leads (the leader's advertised address), `None` while nobody does; changes
    /// as `P/leader` does.
    pub fn observe(&self) -> watch::Receiver<Option<String>> {
        self.leader.subscribe()
    }

    /// The fence for this replica's [`super::EtcdStore`]: `Some(create revision)`
    /// while it leads.
    pub fn fence(&self) -> Fence {
        self.fence.subscribe()
    }

    /// What this replica holds while it leads; `None` otherwise.
    pub fn leadership(&self) -> Option<Leadership> {
        self.held.lock().as_ref().map(|h| h.leadership)
    }

    /// The instant before which this leader may still decide: the send time of the
    /// last keep-alive etcd answered + TTL − safety margin. `None` when not leading.
    /// Past it the leader must stop deciding, whether or not it knows it lost.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.lock().as_ref().map(|h| h.deadline)
    }

    /// Waits until this replica leads, and returns its leadership. Grants a lease,
    /// then tries to create `P/leader` on it; while another replica holds the key,
    /// waits for it to go and tries again. Returns at once if already leading.
    pub async fn campaign(&self) -> Result<Leadership, Error> {
        if let Some(leadership) = self.leadership() {
            return Ok(leadership);
        }
        let ttl = i64::try_from(self.options.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let granted_at = Instant::now();
        let lease = self
            .conn
            .run(move |mut client| async move {
                let granted = client.lease_grant(ttl, None).await.map_err(etcd_error)?;
                Ok(granted.id())
            })
            .await?;
        let period = Duration::from_secs(ttl.unsigned_abs()) / 3;
        // Send time of the last keep-alive etcd answered: the lease lives until at
        // least then + TTL.
        let mut alive_since = granted_at;
        let mut leader = self.leader.subscribe();
        let mut keeper = None;
        let mut sends = std::collections::VecDeque::new();
        let mut keeper_broken = false;
        loop {
            let won = match self.try_create(lease).await {
                Ok(won) => won,
                Err(e) => {
                    self.revoke(lease).await;
                    return Err(e);
                }
            };
            if let Some(create_revision) = won {
                let leadership = Leadership {
                    lease,
                    create_revision,
                };
                let ttl = Duration::from_secs(ttl.unsigned_abs());
                let mut held = self.held.lock();
                *held = Some(Held {
                    leadership,
                    deadline: alive_since + ttl.saturating_sub(self.options.safety_margin),
                    keep_alive: self.conn.runtime.handle().spawn(keep_alive(
                        self.conn.client(),
                        leadership,
                        ttl,
                        self.options.safety_margin,
                        self.held.clone(),
                        self.fence.clone(),
                    )),
                });
                self.fence.send_replace(Some(create_revision));
                drop(held);
                tracing::info!(id = %self.options.id, lease, create_revision, "leading");
                return Ok(leadership);
            }
            // Someone leads: keep our lease alive, and try again when `P/leader` goes
            // (as the observer sees it) or every TTL/3 in any case.
            if std::mem::take(&mut keeper_broken) {
                keeper = None;
                sends.clear();
            }
            if keeper.is_none() {
                let mut client = self.conn.client();
                match client.lease_keep_alive(lease).await {
                    Ok(pair) => keeper = Some(pair),
                    Err(e) => {
                        // An endpoint down, say: soon again (the lease has its TTL).
                        tracing::debug!(error = %e, "keep-alive stream");
                        tokio::time::sleep(RETRY_SOON).await;
                        continue;
                    }
                }
            }
            let (keeper, responses) = keeper.as_mut().expect("set above");
            if keeper.keep_alive().await.is_ok() {
                sends.push_back(Instant::now());
            }
            let retry = tokio::time::sleep(period);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = &mut retry => break,
                    answered = responses.message() => match answered {
                        // Answers come in order: this one is for the oldest send.
                        Ok(Some(r)) if r.ttl() > 0 => {
                            alive_since = sends.pop_front().unwrap_or(alive_since);
                        }
                        Ok(Some(_)) => return Err(Error::StoreUnavailable {
                            cause: "etcd: our campaign's lease expired".into(),
                        }),
                        _ => {
                            // The stream broke: a fresh one on the next round.
                            tokio::time::sleep_until(retry.deadline()).await;
                            keeper_broken = true;
                            break;
                        }
                    },
                    changed = leader.changed() => {
                        if changed.is_err() {
                            return Err(Error::ShuttingDown);
                        }
                        if leader.borrow_and_update().is_none() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// One attempt at creating `P/leader` on `lease`: `Some(create revision)` if won.
    async fn try_create(&self, lease: i64) -> Result<Option<i64>, Error> {
        let (keys, id) = (self.keys.clone(), self.options.id.clone());
        self.conn
            .run(move |mut client| {
                let (keys, id) = (keys.clone(), id.clone());
                async move {
                    let txn = Txn::new()
                        .when(vec![Compare::create_revision(
                            keys.leader(),
                            CompareOp::Equal,
                            0,
                        )])
                        .and_then(vec![TxnOp::put(
                            keys.leader(),
                            id,
                            Some(PutOptions::new().with_lease(lease)),
                        )])
                        .or_else(vec![TxnOp::get(keys.leader(), None)]);
                    let response = client.txn(txn).await.map_err(etcd_error)?;
                    if response.succeeded() {
                        // The put's revision is the transaction's: the key's create revision.
                        return Ok(Some(response.header().map(|h| h.revision()).unwrap_or(0)));
                    }
                    // A key on our own lease is ours: an earlier attempt landed unseen.
                    let holder = response.op_responses().into_iter().find_map(|r| match r {
                        TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                        _ => None,
                    });
                    Ok(holder
                        .filter(|kv| kv.lease() == lease)
                        .map(|kv| kv.create_revision()))
                }
            })
            .await
    }

    /// Ends this replica's leadership here and now, for a replica that found its
    /// deadline passed before the keep-alive task did: the fence goes, keep-alives
    /// stop, and the lease is revoked in the background, best effort (etcd may be
    /// out of reach). A later [`Election::campaign`] starts over with a new lease.
    pub fn abandon(&self) {
        if let Some(leadership) = self.leadership() {
            let _runtime = self.conn.runtime.handle().enter();
            lose(&self.held, &self.fence, leadership, &self.conn.client);
        }
    }

    /// Steps down: revokes the lease (etcd deletes `P/leader` at once, so a standby
    /// takes over without waiting for the TTL). For a graceful shutdown.
    pub async fn resign(&self) -> Result<(), Error> {
        let Some(held) = self.held.lock().take() else {
            return Ok(());
        };
        held.keep_alive.abort();
        self.fence.send_replace(None);
        let lease = held.leadership.lease;
        self.conn
            .run(move |mut client| async move {
                client.lease_revoke(lease).await.map_err(etcd_error)?;
                Ok(())
            })
            .await
    }

    /// Revokes `lease`, ignoring failure (it expires by itself).
    async fn revoke(&self, lease: i64) {
        let _ = self
            .conn
            .run(move |mut client| async move {
                let _ = client.lease_revoke(lease).await;
                Ok(())
            })
            .await;
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.observer.abort();
        if let Some(held) = self.held.lock().take() {
            held.keep_alive.abort();
        }
    }
}

/// Ends our leadership if it is still `leadership` (the fence goes first), and
/// revokes its lease, best effort: a key of ours that etcd still holds (its lease
/// outlived our deadline) then goes at once instead of after the TTL. Runs on the
/// connection's runtime (its tasks call it).
fn lose(
    held: &Mutex<Option<Held>>,
    fence: &watch::Sender<Option<i64>>,
    leadership: Leadership,
    client: &Client,
) {
    let mut held = held.lock();
    if held.as_ref().map(|h| h.leadership) == Some(leadership) {
        fence.send_replace(None);
        if let Some(h) = held.take() {
            h.keep_alive.abort();
        }
        tracing::warn!(lease = leadership.lease, "no longer leading");
        let mut client = client.clone();
        tokio::spawn(async move {
            let _ = client.lease_revoke(leadership.lease).await;
        });
    }
}

/// Keeps the lease alive every TTL/3, moving the deadline on each answered round; a
/// lease etcd reports gone (TTL 0), or a deadline passed without an answer, ends the
/// leadership.
async fn keep_alive(
    mut client: Client,
    leadership: Leadership,
    ttl: Duration,
    margin: Duration,
    held: Arc<Mutex<Option<Held>>>,
    fence: watch::Sender<Option<i64>>,
) {
    let period = ttl / 3;
    let mut stream = None;
    loop {
        let round = Instant::now();
        let deadline = held
            .lock()
            .as_ref()
            .filter(|h| h.leadership == leadership)
            .map(|h| h.deadline);
        let Some(deadline) = deadline else { return };
        if round >= deadline {
            lose(&held, &fence, leadership, &client);
            return;
        }
        if stream.is_none() {
            stream = tokio::time::timeout(period, client.lease_keep_alive(leadership.lease))
                .await
                .ok()
                .and_then(Result::ok);
        }
        if let Some((keeper, responses)) = stream.as_mut() {
            let sent = Instant::now();
            let answered = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            match tokio::time::timeout(period, answered).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {
                    if let Some(h) = held.lock().as_mut().filter(|h| h.leadership == leadership) {
                        h.deadline = sent + ttl.saturating_sub(margin);
                    }
                }
                Ok(Ok(Some(_))) => {
                    // TTL 0: etcd says the lease is gone (expired or revoked).
                    lose(&held, &fence, leadership, &client);
                    return;
                }
                // No answer in time, or the stream broke: a fresh stream next round
                // (an answer still in flight on the old one cannot be mistaken for
                // one to a later send).
                _ => stream = None,
            }
        }
        // A round that failed is tried again soon (another endpoint may answer),
        // well before the deadline; an answered one waits its period.
        let next = if stream.is_some() {
            round + period
        } else {
            Instant::now() + RETRY_SOON
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Follows `P/leader`: publishes its value (who leads) and ends our leadership when
/// the key goes or is no longer ours. Re-reads and re-watches after any error.
async fn observe(
    mut client: Client,
    keys: Keys,
    leader: watch::Sender<Option<String>>,
    fence: watch::Sender<Option<i64>>,
    held: Arc<Mutex<Option<Held>>>,
) {
    let mut pause = Duration::from_millis(50);
    loop {
        let got = match client.get(keys.leader(), None).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "reading the leader key");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let at = got.header().map(|h| h.revision()).unwrap_or(0);
        publish(
            &leader,
            &fence,
            &held,
            &client,
            at,
            got.kvs()
                .first()
                .map(|kv| (kv.value(), kv.create_revision())),
        );
        let watched = client
            .watch(
                keys.leader(),
                Some(WatchOptions::new().with_start_revision(at + 1)),
            )
            .await;
        let Ok(mut stream) = watched else {
            tokio::time::sleep(pause).await;
            continue;
        };
        pause = Duration::from_millis(50);
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() {
                break;
            }
            for event in response.events() {
                let seen_at = event.kv().map_or(0, |kv| kv.mod_revision());
                match (event.event_type(), event.kv()) {
                    (EventType::Put, Some(kv)) => publish(
                        &leader,
                        &fence,
                        &held,
                        &client,
                        seen_at,
                        Some((kv.value(), kv.create_revision())),
                    ),
                    _ => publish(&leader, &fence, &held, &client, seen_at, None),
                }
            }
        }
    }
}

/// Publishes who leads (`key`: `P/leader`'s value and create revision, or none, as
/// etcd had it at revision `seen_at`); a key that is not our leadership's ends it,
/// unless it was seen before our leadership began: the observer's first read can be
/// answered after a campaign already won, and its stale "no leader" must not depose
/// the winner (that race once failed a new leader's first commit).
fn publish(
    leader: &watch::Sender<Option<String>>,
    fence: &watch::Sender<Option<i64>>,
    held: &Arc<Mutex<Option<Held>>>,
    client: &Client,
    seen_at: i64,
    key: Option<(&[u8], i64)>,
) {
    let value = key.map(|(v, _)| String::from_utf8_lossy(v).into_owned());
    leader.send_if_modified(|now| {
        let changed = *now != value;
        *now = value.clone();
        changed
    });
    let ours = held.lock().as_ref().map(|h| h.leadership);
    if let Some(ours) = ours
        && seen_at >= ours.create_revision
        && key.map(|(_, created)| created) != Some(ours.create_revision)
    {
        lose(held, fence, ours, client);
    }
}

#[cfg(test)]
mod tests {
    use cbd_tests::etcd::Etcd;

    use super::*;
    use crate::store::etcd::EtcdOptions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stale_read_of_no_leader_does_not_depose_the_winner() {
        let Some(etcd) = Etcd::single() else { return };
        let conn = Connection::connect(&EtcdOptions::new(etcd.endpoints()))
            .await
            .expect("connect");
        let election = Election::new(conn.clone(), ElectionOptions::new("cbd-test/stale", "a"));
        let won = election.campaign().await.expect("campaign");
        // The observer's first read, sent before the campaign's key landed and
        // answered after it won: no leader, as of an older revision.
        let observed = |seen_at| {
            publish(
                &election.leader,
                &election.fence,
                &election.held,
                &conn.client(),
                seen_at,
                None,
            );
        };
        observed(won.create_revision - 1);
        assert_eq!(election.leadership(), Some(won), "deposed by a stale read");
        assert_eq!(*election.fence().borrow(), Some(won.create_revision));
        // The key gone after it was created does end the leadership.
        observed(won.create_revision + 1);
        assert_eq!(election.leadership(), None);
        assert_eq!(*election.fence().borrow(), None);
    }
}
