//! The Session stream: acquires, reports, leases and leased outcomes answered by id,
//! and lease revocations pushed as changes are made (docs/DESIGN.md §10).
//!
//! One task per stream owns its state: the leases it holds (by breaker name), the
//! lease requests still being answered, and, once it asked for a lease, two
//! subscriptions: the registry's changes as they are made ([`Registry::changes`],
//! before the commit) and the committed event feed. Either, on a held breaker, voids
//! the session's leases on it: the task pushes `revoked` at once. The change comes
//! first, so the push does not wait for the group commit; the committed event is
//! the backstop (it finds the lease already void and pushes nothing). Pushing before
//! the commit is safe because a revocation only sends the client back to asking the
//! daemon, whose answers wait for the commit as they always do. Both are subscribed
//! to before the first lease is read from the machine, so a change made after a
//! grant always reaches the task; a change that lands while a grant is being
//! answered revokes it right after the grant goes out.
//!
//! [`Registry::changes`]: crate::registry::Registry::changes

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_stream::stream;
use cbd_proto::v1 as pb;
use futures::{Stream, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::sync::broadcast;
use tonic::{Status, Streaming};

use super::{breakers::BreakersService, convert};
use crate::{auth::Identity, error::Error, registry::Change};

/// Most session items answered concurrently before the stream stops reading.
const MAX_IN_FLIGHT: usize = 256;

/// Counts open Session streams (`cbctl status`). Cheap to clone; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Sessions(Arc<AtomicUsize>);

impl Sessions {
    /// Open Session streams now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Counts one stream until the returned slot is dropped (with the stream).
    fn open(&self) -> SessionSlot {
        self.0.fetch_add(1, Ordering::AcqRel);
        SessionSlot(self.0.clone())
    }
}

/// One open stream in [`Sessions`].
struct SessionSlot(Arc<AtomicUsize>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An item's answer, and for a lease request, the breaker it was about.
struct Answered {
    response: pb::SessionResponse,
    lease_of: Option<String>,
}

/// What woke the stream's task.
enum Step {
    Received(Result<Option<pb::SessionRequest>, Status>),
    Answered(Answered),
    Event(Result<Arc<pb::Event>, broadcast::error::RecvError>),
    Change(Result<Change, broadcast::error::RecvError>),
}

/// What voids a session's leases on one breaker: a change as it was made (revision 0,
/// not committed yet) or a committed event.
#[derive(Clone, Copy, Debug)]
struct Voiding<'a> {
    name: &'a str,
    cause: i32,
    revision: u64,
    state: i32,
    generation: u64,
}

impl<'a> Voiding<'a> {
    fn of_event(event: &'a pb::Event) -> Self {
        Self {
            name: &event.name,
            cause: event.kind,
            revision: event.revision,
            state: event.state,
            generation: event.generation,
        }
    }

    fn of_change(change: &'a Change) -> Self {
        Self {
            name: &change.name,
            cause: change.kind,
            revision: 0,
            state: change.state,
            generation: change.generation,
        }
    }

    /// The push voiding the session's leases on `name`.
    fn revoked(&self, name: &str) -> pb::LeaseRevoked {
        pb::LeaseRevoked {
            name: name.to_owned(),
            cause: self.cause,
            revision: self.revision,
            state: self.state,
            generation: self.generation,
        }
    }
}

/// The leases of one session.
#[derive(Default)]
struct Leases {
    /// Breakers this session holds a lease on.
    held: HashSet<String>,
    /// Lease requests being answered, by breaker: how many, and the latest change
    /// on the breaker since the first of them arrived.
    pending: HashMap<String, (u32, Option<pb::LeaseRevoked>)>,
    /// Breakers whose lease was revoked at a change not yet seen committed, with
    /// the generation of the latest such change: every later change on one is
    /// pushed too, and so is the committed event that catches up with it (its
    /// revision set), so that a client refusing locally on a revocation's OPEN
    /// learns when to ask the daemon again (proto `LeaseRevoked`).
    uncommitted: HashMap<String, u64>,
}

impl Leases {
    /// A change was made (revision 0) or committed: the push to make, if it voids a
    /// held lease or follows up on an uncommitted revocation.
    fn on_change(&mut self, change: Voiding<'_>) -> Option<pb::SessionResponse> {
        if let Some((_, seen)) = self.pending.get_mut(change.name) {
            *seen = Some(change.revoked(change.name));
        }
        let name = match self.held.take(change.name) {
            Some(name) => name,
            None => {
                let generation = *self.uncommitted.get(change.name)?;
                if change.revision != 0 && change.generation < generation {
                    // Committed before the change the client was told of: older news.
                    return None;
                }
                change.name.to_owned()
            }
        };
        if change.revision == 0 {
            self.uncommitted.insert(name.clone(), change.generation);
        } else {
            self.uncommitted.remove(&name);
        }
        Some(push(change.revoked(&name)))
    }

    /// A feed lost changes (this session fell behind): every lease is void, and
    /// every uncommitted revocation too (a push with no cause says both).
    fn on_lag(&mut self) -> Vec<pb::SessionResponse> {
        for (_, seen) in self.pending.values_mut() {
            *seen = Some(pb::LeaseRevoked::default());
        }
        let mut names: HashSet<String> = self.held.drain().collect();
        names.extend(self.uncommitted.drain().map(|(name, _)| name));
        names
            .into_iter()
            .map(|name| {
                push(pb::LeaseRevoked {
                    name,
                    ..Default::default()
                })
            })
            .collect()
    }

    /// A lease answer is going out: hold it, unless something changed the breaker
    /// meanwhile (then the revocation follows the grant).
    fn on_answer(&mut self, name: String, granted: bool) -> Option<pb::SessionResponse> {
        let mut changed = None;
        if let Some((count, seen)) = self.pending.get_mut(&name) {
            *count -= 1;
            changed = if *count == 0 {
                self.pending.remove(&name).and_then(|(_, seen)| seen)
            } else {
                seen.clone()
            };
        }
        match (granted, changed) {
            (false, _) => None,
            (true, Some(change)) => {
                if change.revision == 0 && change.cause != 0 {
                    self.uncommitted.insert(name.clone(), change.generation);
                }
                Some(push(pb::LeaseRevoked { name, ..change }))
            }
            (true, None) => {
                self.held.insert(name);
                None
            }
        }
    }
}

/// The unsolicited response carrying `revoked`.
fn push(revoked: pb::LeaseRevoked) -> pb::SessionResponse {
    pb::SessionResponse {
        id: 0,
        kind: Some(pb::session_response::Kind::Revoked(revoked)),
    }
}

/// Runs one Session stream.
pub(super) fn run(
    service: BreakersService,
    mut inbound: Streaming<pb::SessionRequest>,
    identity: Option<Identity>,
) -> impl Stream<Item = Result<pb::SessionResponse, Status>> + Send + 'static {
    // Taken now and moved into the stream: counted from the open until it is dropped.
    let slot = service.sessions().open();
    stream! {
        let _slot = slot;
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Answered>> = FuturesUnordered::new();
        let mut feed: Option<broadcast::Receiver<Arc<pb::Event>>> = None;
        let mut changes: Option<broadcast::Receiver<Change>> = None;
        let mut leases = Leases::default();
        let mut reading = true;
        while reading || !in_flight.is_empty() {
            let can_read = reading && in_flight.len() < MAX_IN_FLIGHT;
            // `yield` cannot sit inside `select!`: pick the step, then act on it.
            let step = tokio::select! {
                received = inbound.message(), if can_read => Step::Received(received),
                change = async { changes.as_mut().expect("guarded").recv().await }, if changes.is_some() => Step::Change(change),
                Some(answer) = in_flight.next() => Step::Answered(answer),
                event = async { feed.as_mut().expect("guarded").recv().await }, if feed.is_some() => Step::Event(event),
            };
            match step {
                Step::Received(Ok(Some(item))) => {
                    let lease_of = match &item.kind {
                        Some(pb::session_request::Kind::Lease(req)) => Some(req.name.clone()),
                        _ => None,
                    };
                    if let Some(name) = &lease_of {
                        if feed.is_none() {
                            changes = Some(service.registry().changes());
                            feed = Some(service.registry().subscribe().feed);
                        }
                        leases.pending.entry(name.clone()).or_default().0 += 1;
                    }
                    let service = service.clone();
                    let identity = identity.clone();
                    in_flight.push(Box::pin(async move {
                        let response = service.session_item(item, identity.as_ref()).await;
                        Answered { response, lease_of }
                    }));
                }
                Step::Received(Ok(None)) => reading = false,
                Step::Received(Err(status)) => {
                    // An oversize item is already RESOURCE_EXHAUSTED (crate::layers::message_size).
                    yield Err(status);
                    return;
                }
                Step::Answered(Answered { response, lease_of }) => {
                    let granted = matches!(
                        &response.kind,
                        Some(pb::session_response::Kind::Lease(g)) if g.granted
                    );
                    let then_revoked = lease_of.and_then(|name| leases.on_answer(name, granted));
                    yield Ok(response);
                    if let Some(push) = then_revoked {
                        yield Ok(push);
                    }
                }
                Step::Event(Ok(event)) => {
                    if let Some(push) = leases.on_change(Voiding::of_event(&event)) {
                        yield Ok(push);
                    }
                }
                Step::Change(Ok(change)) => {
                    if let Some(push) = leases.on_change(Voiding::of_change(&change)) {
                        yield Ok(push);
                    }
                }
                Step::Change(Err(broadcast::error::RecvError::Lagged(_))) => {
                    for push in leases.on_lag() {
                        yield Ok(push);
                    }
                }
                Step::Change(Err(broadcast::error::RecvError::Closed)) => {
                    // The registry is going away; the committed feed says the same.
                    for push in leases.on_lag() {
                        yield Ok(push);
                    }
                    changes = None;
                }
                Step::Event(Err(broadcast::error::RecvError::Lagged(_))) => {
                    for push in leases.on_lag() {
                        yield Ok(push);
                    }
                }
                Step::Event(Err(broadcast::error::RecvError::Closed)) => {
                    // The registry is going away (shutdown): no lease holds any more.
                    for push in leases.on_lag() {
                        yield Ok(push);
                    }
                    feed = None;
                }
            }
        }
    }
}

impl BreakersService {
    /// One session item, answered by id; its error is the answer, not the stream's.
    pub(super) async fn session_item(
        &self,
        item: pb::SessionRequest,
        identity: Option<&Identity>,
    ) -> pb::SessionResponse {
        use pb::session_request::Kind as In;
        use pb::session_response::Kind as Out;
        let id = identity;
        let kind = match item.kind {
            Some(In::Acquire(req)) => self.acquire_one(&req, id).await.map(Out::Acquire),
            Some(In::Report(req)) => self.report_one(&req, id).await.map(Out::Report),
            Some(In::Lease(req)) => self.lease_one(&req, id).await.map(Out::Lease),
            Some(In::Outcomes(req)) => self.outcomes_one(&req, id).await.map(Out::Outcomes),
            None => Err(Error::invalid(
                "kind",
                "one of acquire, report, lease or outcomes is required",
            )),
        };
        pb::SessionResponse {
            id: item.id,
            kind: Some(kind.unwrap_or_else(|e| Out::Error(convert::item_error(e)))),
        }
    }

    async fn lease_one(
        &self,
        req: &pb::LeaseRequest,
        identity: Option<&Identity>,
    ) -> Result<pb::LeaseGrant, Error> {
        // Carried in the lease: outcomes without a caller are attributed to it.
        let caller = convert::caller(identity, &req.caller)?;
        let answer = self.registry().lease(&req.name).await?;
        Ok(convert::lease_grant(self.permits(), &answer, caller))
    }

    async fn outcomes_one(
        &self,
        req: &pb::LeasedOutcomes,
        identity: Option<&Identity>,
    ) -> Result<pb::LeasedOutcomesAnswer, Error> {
        let checked = convert::caller(identity, &req.caller)?;
        let lease = self.permits().decode_lease(&req.lease)?;
        let caller = convert::report_caller(checked, &req.caller, lease.caller);
        let outcomes = convert::aggregate(req);
        if !lease.this_boot {
            let answer = self
                .registry()
                .leased_of_earlier_boot(lease.name, &outcomes)?;
            return Ok(convert::leased_answer(&crate::registry::LeasedAnswer {
                reported: answer.reported,
                duplicate: false,
                revision: answer.revision,
            }));
        }
        let answer = self
            .registry()
            .report_leased_as(
                lease.name,
                lease.token.serial,
                req.sequence,
                &outcomes,
                caller,
            )
            .await?;
        Ok(convert::leased_answer(&answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, revision: u64) -> pb::Event {
        pb::Event {
            name: name.into(),
            revision,
            kind: pb::EventKind::StateChanged as i32,
            ..Default::default()
        }
    }

    /// A trip of `name` to OPEN in `generation`, as the registry signals it.
    fn trip(name: &str, generation: u64) -> Change {
        Change {
            name: name.into(),
            kind: pb::EventKind::StateChanged as i32,
            state: pb::State::Open as i32,
            generation,
        }
    }

    fn revoked(r: &pb::SessionResponse) -> &pb::LeaseRevoked {
        match &r.kind {
            Some(pb::session_response::Kind::Revoked(v)) => {
                assert_eq!(r.id, 0, "a push is unsolicited");
                v
            }
            other => panic!("not a revocation: {other:?}"),
        }
    }

    fn revoked_name(r: &pb::SessionResponse) -> (&str, u64) {
        let v = revoked(r);
        (&v.name, v.revision)
    }

    /// A session holding a granted lease on each of `names`.
    fn holding(names: &[&str]) -> Leases {
        let mut l = Leases::default();
        for name in names {
            l.pending.insert((*name).into(), (1, None));
            assert!(l.on_answer((*name).into(), true).is_none());
        }
        l
    }

    #[test]
    fn an_event_on_a_held_breaker_revokes_it_once() {
        let mut l = holding(&["a"]);
        let b = event("b", 3);
        assert!(l.on_change(Voiding::of_event(&b)).is_none(), "not held");
        let push = l
            .on_change(Voiding::of_event(&event("a", 4)))
            .expect("revoked");
        assert_eq!(revoked_name(&push), ("a", 4));
        assert!(
            l.on_change(Voiding::of_event(&event("a", 5))).is_none(),
            "already void"
        );
    }

    #[test]
    fn a_change_revokes_before_its_commit() {
        let mut l = holding(&["a", "b"]);
        let push = l
            .on_change(Voiding::of_change(&trip("a", 9)))
            .expect("revoked at the change");
        let r = revoked(&push);
        assert_eq!(r.name, "a");
        assert_eq!(r.revision, 0, "not committed yet: no revision");
        assert_eq!(r.cause, pb::EventKind::StateChanged as i32);
        assert_eq!(r.state, pb::State::Open as i32);
        assert_eq!(r.generation, 9);
        assert!(
            l.on_change(Voiding::of_event(&event("a", 12))).is_none(),
            "an older committed event finds the lease void"
        );
        assert!(l.held.contains("b"), "another breaker's lease stays");
        assert!(l.on_change(Voiding::of_change(&trip("c", 1))).is_none());
    }

    #[test]
    fn an_uncommitted_revocation_is_followed_up_until_its_commit_is_seen() {
        let mut l = holding(&["a"]);
        l.on_change(Voiding::of_change(&trip("a", 9)))
            .expect("revoked at the trip");
        // A committed event of an earlier generation is older news: nothing.
        let mut older = event("a", 10);
        older.generation = 8;
        assert!(l.on_change(Voiding::of_event(&older)).is_none());
        // Another change before the commit: pushed too, so the client's view moves.
        let reset = Change {
            state: pb::State::Closed as i32,
            kind: pb::EventKind::Reset as i32,
            ..trip("a", 10)
        };
        let push = l
            .on_change(Voiding::of_change(&reset))
            .expect("the later change is pushed");
        assert_eq!(revoked(&push).state, pb::State::Closed as i32);
        let mut tripped = event("a", 11);
        tripped.generation = 9;
        assert!(
            l.on_change(Voiding::of_event(&tripped)).is_none(),
            "the trip's commit is behind the reset the client knows of"
        );
        let mut committed = event("a", 12);
        committed.generation = 10;
        let push = l
            .on_change(Voiding::of_event(&committed))
            .expect("the commit catching up is pushed");
        assert_eq!(revoked_name(&push), ("a", 12));
        assert!(
            l.on_change(Voiding::of_event(&event("a", 13))).is_none(),
            "followed up once: nothing held, nothing uncommitted"
        );
    }

    #[test]
    fn falling_behind_voids_uncommitted_revocations_too() {
        let mut l = holding(&["a", "b"]);
        l.on_change(Voiding::of_change(&trip("a", 2)))
            .expect("revoked");
        let mut pushes: Vec<_> = l
            .on_lag()
            .iter()
            .map(|r| {
                let r = revoked(r);
                assert_eq!(r.cause, 0, "no one change");
                r.name.clone()
            })
            .collect();
        pushes.sort();
        assert_eq!(pushes, ["a", "b"]);
        assert!(l.uncommitted.is_empty() && l.held.is_empty());
    }

    #[test]
    fn a_change_while_a_grant_is_answered_revokes_it_right_after() {
        let mut l = Leases::default();
        l.pending.insert("a".into(), (2, None));
        assert!(l.on_change(Voiding::of_event(&event("a", 7))).is_none());
        let push = l
            .on_answer("a".into(), true)
            .expect("revoked after the grant");
        assert_eq!(revoked_name(&push), ("a", 7));
        assert!(
            l.on_answer("a".into(), false).is_none(),
            "a refusal needs no revocation"
        );
        assert!(l.pending.is_empty() && l.held.is_empty());
    }

    #[test]
    fn an_uncommitted_change_while_a_grant_is_answered_revokes_it_right_after() {
        let mut l = Leases::default();
        l.pending.insert("a".into(), (1, None));
        assert!(l.on_change(Voiding::of_change(&trip("a", 4))).is_none());
        let push = l
            .on_answer("a".into(), true)
            .expect("revoked after the grant");
        let r = revoked(&push);
        assert_eq!((r.name.as_str(), r.revision, r.generation), ("a", 0, 4));
        assert!(l.held.is_empty(), "the grant is not held");
    }

    #[test]
    fn falling_behind_the_feed_revokes_every_lease() {
        let mut l = holding(&["a", "b"]);
        l.pending.insert("c".into(), (1, None));
        let mut names: Vec<_> = l
            .on_lag()
            .iter()
            .map(|r| revoked_name(r).0.to_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert!(
            l.on_answer("c".into(), true).is_some(),
            "a grant in flight is void too"
        );
    }
}
