//! The client's one Session stream for leases (docs/DESIGN.md §10): asks for leases,
//! renews them at half their length while they are used, applies pushed
//! revocations, and sends each lease's outcomes every flush interval with a
//! sequence number, resending the unanswered ones after a reconnect.
//!
//! The task holds the channel and the breakers' shared state, never the client, so
//! dropping the last client ends it (after a final flush).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use cbd_proto::{convert, v1 as pb};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::{
    breaker::Shared,
    client::{AuthChannel, Stats},
    lease::clock_nanos,
};

/// How long after it stopped being current a lease's book is kept for calls still
/// in flight; the daemon counts outcomes up to 30 s after a lease's end.
const BOOK_KEEP: Duration = Duration::from_secs(25);

/// Longest a client refuses calls locally on a pushed, uncommitted OPEN before it
/// asks the daemon again without the push that follows up (a commit takes 1-4 ms;
/// one that fails is retried by the daemon, which meanwhile answers UNAVAILABLE
/// and the fallback policy decides).
pub(crate) const LOCAL_REFUSAL_MAX: Duration = Duration::from_millis(100);

/// Waits between reconnects: 50 ms doubling to 2 s.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Asks of the task.
pub(crate) enum Command {
    /// Get (and keep renewed) a lease on this breaker.
    Want(Arc<Shared>),
    /// Send every counted outcome now; answered once all are acknowledged (or the
    /// stream is down).
    Flush(oneshot::Sender<()>),
}

/// The task's handle, kept by the client.
#[derive(Debug)]
pub(crate) struct Handle {
    pub commands: mpsc::UnboundedSender<Command>,
}

/// What an id in flight was.
enum Asked {
    Lease {
        name: String,
        sent: Instant,
        /// `sent` on the lease clock ([`clock_nanos`]).
        sent_nanos: u64,
    },
    Outcomes {
        name: String,
        epoch: u64,
        sequence: u64,
    },
}

struct Task {
    channel: AuthChannel,
    flush_interval: Duration,
    stats: Arc<Stats>,
    breakers: HashMap<String, Arc<Shared>>,
    /// When each held lease is due for renewal.
    renew_at: HashMap<String, Instant>,
    asked: HashMap<u64, Asked>,
    next_id: u64,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// Sent as `caller` with every lease request and leased outcomes.
    caller: String,
}

/// Starts the task on the current runtime.
pub(crate) fn start(
    channel: AuthChannel,
    flush_interval: Duration,
    stats: Arc<Stats>,
    caller: String,
) -> Handle {
    let (commands, rx) = mpsc::unbounded_channel();
    let task = Task {
        channel,
        flush_interval,
        stats,
        breakers: HashMap::new(),
        renew_at: HashMap::new(),
        asked: HashMap::new(),
        next_id: 0,
        flush_waiters: Vec::new(),
        caller,
    };
    tokio::spawn(task.run(rx));
    Handle { commands }
}

/// A revocation made at an OPEN the daemon has not committed yet (revision 0, a
/// cause) makes the breaker refuse locally until the push that follows it, for at
/// most [`LOCAL_REFUSAL_MAX`]; any other revocation (committed, a later change, or
/// the session fell behind) ends that.
fn apply_refusal(lease: &crate::lease::LeaseSlot, revoked: &pb::LeaseRevoked, now: u64) {
    let uncommitted_open = revoked.revision == 0
        && revoked.cause != pb::EventKind::Unspecified as i32
        && revoked.state == pb::State::Open as i32;
    if uncommitted_open {
        let max = u64::try_from(LOCAL_REFUSAL_MAX.as_nanos()).unwrap_or(u64::MAX);
        lease.refuse_until(now.saturating_add(max));
    } else {
        lease.stop_refusing();
    }
}

impl Task {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut backoff = RECONNECT_FIRST;
        loop {
            let (tx, rx) = mpsc::unbounded_channel::<pb::SessionRequest>();
            let mut rpc = pb::breakers_client::BreakersClient::new(self.channel.clone());
            let opened = tokio::select! {
                opened = rpc.session(UnboundedReceiverStream::new(rx)) => opened,
                command = commands.recv() => {
                    match command {
                        Some(command) => self.offline(command),
                        None => return,
                    }
                    continue;
                }
            };
            let mut inbound = match opened {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::debug!(error = %status, "lease session could not open; retrying");
                    self.stream_lost();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                    continue;
                }
            };
            backoff = RECONNECT_FIRST;
            self.resume(&tx);
            let mut tick = tokio::time::interval(self.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let ended = loop {
                tokio::select! {
                    command = commands.recv() => match command {
                        Some(Command::Want(shared)) => self.want(&tx, shared),
                        Some(Command::Flush(done)) => {
                            self.flush(&tx);
                            self.flush_waiters.push(done);
                            self.settle_waiters();
                        }
                        None => {
                            // The last client is gone: send what is counted and stop.
                            self.flush(&tx);
                            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                                while self.has_unacked() {
                                    match inbound.message().await {
                                        Ok(Some(answer)) => self.answered(&tx, answer),
                                        _ => break,
                                    }
                                }
                            })
                            .await;
                            return;
                        }
                    },
                    answer = inbound.message() => match answer {
                        Ok(Some(answer)) => self.answered(&tx, answer),
                        Ok(None) => break "closed by the daemon".to_owned(),
                        Err(status) => break status.to_string(),
                    },
                    _ = tick.tick() => {
                        self.flush(&tx);
                        self.renew(&tx);
                    }
                }
            };
            tracing::debug!(cause = %ended, "lease session lost; leases void until it is back");
            self.stream_lost();
        }
    }

    /// A command while no stream is open: remember wants, answer flushes.
    fn offline(&mut self, command: Command) {
        match command {
            Command::Want(shared) => {
                self.breakers.insert(shared.name().to_owned(), shared);
            }
            Command::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn send(
        &mut self,
        tx: &mpsc::UnboundedSender<pb::SessionRequest>,
        asked: Asked,
        kind: pb::session_request::Kind,
    ) {
        let id = self.id();
        self.asked.insert(id, asked);
        let _ = tx.send(pb::SessionRequest {
            id,
            kind: Some(kind),
        });
    }

    fn ask_lease(&mut self, tx: &mpsc::UnboundedSender<pb::SessionRequest>, name: &str) {
        let asked = Asked::Lease {
            name: name.to_owned(),
            sent: Instant::now(),
            sent_nanos: clock_nanos(),
        };
        let kind = pb::session_request::Kind::Lease(pb::LeaseRequest {
            name: name.to_owned(),
            caller: self.caller.clone(),
        });
        self.send(tx, asked, kind);
    }

    fn want(&mut self, tx: &mpsc::UnboundedSender<pb::SessionRequest>, shared: Arc<Shared>) {
        let name = shared.name().to_owned();
        self.breakers.insert(name.clone(), shared);
        self.ask_lease(tx, &name);
    }

    /// A new stream: resend every unanswered outcome, in order, and ask again for
    /// the leases wanted.
    fn resume(&mut self, tx: &mpsc::UnboundedSender<pb::SessionRequest>) {
        self.asked.clear();
        let breakers: Vec<_> = self.breakers.values().cloned().collect();
        for shared in breakers {
            let lease = shared.lease();
            let resend: Vec<(u64, Vec<pb::LeasedOutcomes>)> = lease
                .books
                .lock()
                .iter()
                .map(|(epoch, book)| (*epoch, book.unacked.iter().cloned().collect()))
                .collect();
            for (epoch, items) in resend {
                for item in items {
                    let asked = Asked::Outcomes {
                        name: shared.name().to_owned(),
                        epoch,
                        sequence: item.sequence,
                    };
                    self.send(tx, asked, pb::session_request::Kind::Outcomes(item));
                }
            }
            if lease.wanted.load(Ordering::Acquire) {
                self.ask_lease(tx, shared.name());
            }
        }
    }

    /// The stream is gone: no push can arrive, so no lease may be used.
    fn stream_lost(&mut self) {
        let now = Instant::now();
        for shared in self.breakers.values() {
            shared.lease().void(now);
            // No follow-up can come: ask the daemon.
            shared.lease().stop_refusing();
        }
        self.renew_at.clear();
        for done in self.flush_waiters.drain(..) {
            let _ = done.send(());
        }
    }

    fn answered(
        &mut self,
        tx: &mpsc::UnboundedSender<pb::SessionRequest>,
        answer: pb::SessionResponse,
    ) {
        use pb::session_response::Kind;
        if let Some(Kind::Revoked(revoked)) = &answer.kind {
            if let Some(shared) = self.breakers.get(&revoked.name) {
                let lease = shared.lease();
                let voided = lease.void(Instant::now());
                apply_refusal(lease, revoked, clock_nanos());
                // Only a push that voided a lease ends it: the next per-call acquire
                // that finds the breaker leasable asks again. A follow-up push (no
                // lease held) is counted nowhere and must not forget a lease request
                // in flight, whose grant comes after it on the stream.
                if voided {
                    lease.wanted.store(false, Ordering::Release);
                    self.stats.leases_revoked.fetch_add(1, Ordering::Relaxed);
                }
                self.renew_at.remove(&revoked.name);
                tracing::debug!(breaker = %revoked.name, revision = revoked.revision, "lease revoked");
            }
            return;
        }
        let Some(asked) = self.asked.remove(&answer.id) else {
            return;
        };
        match (asked, answer.kind) {
            (
                Asked::Lease {
                    name,
                    sent,
                    sent_nanos,
                },
                Some(Kind::Lease(grant)),
            ) => self.granted(&name, (sent, sent_nanos), &grant),
            (Asked::Lease { name, .. }, _) => {
                // An error (e.g. NOT_FOUND, UNAVAILABLE): per-call acquires go on.
                if let Some(shared) = self.breakers.get(&name) {
                    shared.lease().wanted.store(false, Ordering::Release);
                }
            }
            (
                Asked::Outcomes {
                    name,
                    epoch,
                    sequence,
                },
                Some(Kind::Outcomes(_)),
            ) => {
                if let Some(shared) = self.breakers.get(&name)
                    && let Some(book) = shared.lease().books.lock().get_mut(&epoch)
                {
                    book.unacked.retain(|o| o.sequence != sequence);
                }
                self.settle_waiters();
            }
            (
                Asked::Outcomes {
                    name,
                    epoch,
                    sequence,
                },
                other,
            ) => {
                // Not taken (the daemon could not commit, or a gap): send again, in
                // order, from the first unanswered one.
                tracing::debug!(breaker = %name, sequence, answer = ?other, "leased outcomes not taken; resending");
                let Some(shared) = self.breakers.get(&name).cloned() else {
                    return;
                };
                let items: Vec<pb::LeasedOutcomes> = shared
                    .lease()
                    .books
                    .lock()
                    .get(&epoch)
                    .map(|b| {
                        b.unacked
                            .iter()
                            .filter(|o| o.sequence >= sequence)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                for item in items {
                    let asked = Asked::Outcomes {
                        name: name.clone(),
                        epoch,
                        sequence: item.sequence,
                    };
                    self.send(tx, asked, pb::session_request::Kind::Outcomes(item));
                }
            }
        }
    }

    fn granted(&mut self, name: &str, sent: (Instant, u64), grant: &pb::LeaseGrant) {
        let (sent, sent_nanos) = sent;
        let Some(shared) = self.breakers.get(name) else {
            return;
        };
        let lease = shared.lease();
        if !grant.granted {
            lease.wanted.store(false, Ordering::Release);
            return;
        }
        let length = grant
            .valid_for
            .as_ref()
            .and_then(|d| convert::duration_from_proto(d, "valid_for").ok())
            .unwrap_or_default();
        let slow = grant
            .slow_call_duration
            .as_ref()
            .and_then(|d| convert::duration_from_proto(d, "slow_call_duration").ok());
        // Counted from when the request left, which is before the daemon's now: the
        // lease ends here no later than it does at the daemon.
        let valid_until =
            sent_nanos.saturating_add(u64::try_from(length.as_nanos()).unwrap_or(u64::MAX));
        lease.used.store(false, Ordering::Relaxed);
        lease.grant(grant.lease.clone(), valid_until, slow, Instant::now());
        self.renew_at.insert(name.to_owned(), sent + length / 2);
        self.stats.leases_granted.fetch_add(1, Ordering::Relaxed);
    }

    /// Renews the leases due, if they were used since the last grant; an unused
    /// one is let go (asking again starts with the next per-call acquire).
    fn renew(&mut self, tx: &mpsc::UnboundedSender<pb::SessionRequest>) {
        let now = Instant::now();
        let due: Vec<String> = self
            .renew_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.renew_at.remove(&name);
            let Some(shared) = self.breakers.get(&name) else {
                continue;
            };
            let lease = shared.lease();
            if lease.used.load(Ordering::Relaxed) && lease.holds(clock_nanos()) {
                self.ask_lease(tx, &name);
            } else {
                lease.wanted.store(false, Ordering::Release);
            }
        }
    }

    /// Sends every lease's counted outcomes, and drops books nothing can come to.
    fn flush(&mut self, tx: &mpsc::UnboundedSender<pb::SessionRequest>) {
        let now = Instant::now();
        let mut outgoing = Vec::new();
        for (name, shared) in &self.breakers {
            let lease = shared.lease();
            lease.collect();
            let mut books = lease.books.lock();
            for (epoch, book) in books.iter_mut() {
                if book.pending.is_empty() {
                    continue;
                }
                let outcomes = std::mem::take(&mut book.pending);
                book.sequence += 1;
                let item = pb::LeasedOutcomes {
                    lease: book.token.clone(),
                    sequence: book.sequence,
                    successes: outcomes.successes,
                    slow_successes: outcomes.slow_successes,
                    failures: outcomes.failures,
                    ignored: outcomes.ignored,
                    leading_failures: outcomes.leading_failures,
                    longest_failure_run: outcomes.longest_failure_run,
                    trailing_failures: outcomes.trailing_failures,
                    caller: self.caller.clone(),
                };
                book.unacked.push_back(item.clone());
                self.stats
                    .leased_decisions
                    .fetch_add(outcomes.total(), Ordering::Relaxed);
                self.stats.aggregates_sent.fetch_add(1, Ordering::Relaxed);
                outgoing.push((name.clone(), *epoch, item));
            }
            books.retain(|_, b| {
                let idle = b.pending.is_empty() && b.unacked.is_empty();
                match b.ended {
                    None => true,
                    Some(at) => {
                        let age = now.saturating_duration_since(at);
                        !(age > BOOK_KEEP || (idle && age > Duration::from_secs(2)))
                    }
                }
            });
        }
        for (name, epoch, item) in outgoing {
            let asked = Asked::Outcomes {
                name,
                epoch,
                sequence: item.sequence,
            };
            self.send(tx, asked, pb::session_request::Kind::Outcomes(item));
        }
    }

    fn has_unacked(&self) -> bool {
        self.breakers.values().any(|s| {
            s.lease()
                .books
                .lock()
                .values()
                .any(|b| !b.unacked.is_empty())
        })
    }

    fn settle_waiters(&mut self) {
        if !self.flush_waiters.is_empty() && !self.has_unacked() {
            for done in self.flush_waiters.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseSlot;

    fn revoked(cause: pb::EventKind, revision: u64, state: pb::State) -> pb::LeaseRevoked {
        pb::LeaseRevoked {
            name: "a".into(),
            cause: cause as i32,
            revision,
            state: state as i32,
            generation: 3,
        }
    }

    #[test]
    fn an_uncommitted_open_refuses_locally_until_followed_up_or_for_at_most_the_bound() {
        let slot = LeaseSlot::default();
        let now = 1_000;
        let max = u64::try_from(LOCAL_REFUSAL_MAX.as_nanos()).expect("fits");
        apply_refusal(
            &slot,
            &revoked(pb::EventKind::StateChanged, 0, pb::State::Open),
            now,
        );
        assert!(slot.refusing(now));
        assert!(slot.refusing(now + max - 1));
        assert!(
            !slot.refusing(now + max),
            "bounded: then the daemon is asked"
        );
        apply_refusal(
            &slot,
            &revoked(pb::EventKind::StateChanged, 7, pb::State::Open),
            now + 1,
        );
        assert!(!slot.refusing(now + 1), "committed: ask the daemon again");
    }

    #[test]
    fn other_revocations_never_refuse_locally() {
        let cases = [
            // Committed: the daemon answers Acquire at once.
            revoked(pb::EventKind::StateChanged, 5, pb::State::Open),
            // Not OPEN (an override, a reset, a spec put): ask.
            revoked(pb::EventKind::OverrideSet, 0, pb::State::Closed),
            revoked(pb::EventKind::Reset, 0, pb::State::Closed),
            revoked(pb::EventKind::StateChanged, 0, pb::State::HalfOpen),
            // The session fell behind: no one change.
            revoked(pb::EventKind::Unspecified, 0, pb::State::Open),
        ];
        for r in cases {
            let slot = LeaseSlot::default();
            slot.refuse_until(u64::MAX);
            apply_refusal(&slot, &r, 10);
            assert!(!slot.refusing(10), "{r:?}");
        }
    }
}
