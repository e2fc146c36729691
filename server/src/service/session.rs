//! The Session stream: acquires, reports, leases and leased outcomes answered by id,
//! and lease revocations pushed as changes commit (docs/DESIGN.md §10).
//!
//! One task per stream owns its state: the leases it holds (by breaker name), the
//! lease requests still being answered, and, once it asked for a lease, a
//! subscription to the committed event feed. Any event on a held breaker voids the
//! session's leases on it: the task pushes `revoked` at once. The feed is subscribed
//! to before the first lease is read from the machine, so a change made after a
//! grant always reaches the task; a change that lands while a grant is being
//! answered revokes it right after the grant goes out.

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
use crate::{auth::Identity, error::Error};

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
}

/// The leases of one session.
#[derive(Default)]
struct Leases {
    /// Breakers this session holds a lease on.
    held: HashSet<String>,
    /// Lease requests being answered, by breaker: how many, and the latest event on
    /// the breaker since the first of them arrived.
    pending: HashMap<String, (u32, Option<Arc<pb::Event>>)>,
}

impl Leases {
    /// An event committed: the revocation to push, if it voids a held lease.
    fn on_event(&mut self, event: &Arc<pb::Event>) -> Option<pb::SessionResponse> {
        if let Some((_, seen)) = self.pending.get_mut(&event.name) {
            *seen = Some(event.clone());
        }
        self.held.remove(&event.name).then(|| revoked(event))
    }

    /// The feed lost events (this session fell behind): every lease is void.
    fn on_lag(&mut self) -> Vec<pb::SessionResponse> {
        for (_, seen) in self.pending.values_mut() {
            *seen = Some(Arc::new(pb::Event::default()));
        }
        self.held
            .drain()
            .map(|name| {
                revoked(&pb::Event {
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
            (true, Some(event)) => Some(revoked(&pb::Event {
                name,
                ..(*event).clone()
            })),
            (true, None) => {
                self.held.insert(name);
                None
            }
        }
    }
}

/// The push voiding the session's leases on `event.name`.
fn revoked(event: &pb::Event) -> pb::SessionResponse {
    pb::SessionResponse {
        id: 0,
        kind: Some(pb::session_response::Kind::Revoked(pb::LeaseRevoked {
            name: event.name.clone(),
            cause: event.kind,
            revision: event.revision,
            state: event.state,
            generation: event.generation,
        })),
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
        let mut leases = Leases::default();
        let mut reading = true;
        while reading || !in_flight.is_empty() {
            let can_read = reading && in_flight.len() < MAX_IN_FLIGHT;
            // `yield` cannot sit inside `select!`: pick the step, then act on it.
            let step = tokio::select! {
                received = inbound.message(), if can_read => Step::Received(received),
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
                    if let Some(push) = leases.on_event(&event) {
                        yield Ok(push);
                    }
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

    fn event(name: &str, revision: u64) -> Arc<pb::Event> {
        Arc::new(pb::Event {
            name: name.into(),
            revision,
            kind: pb::EventKind::StateChanged as i32,
            ..Default::default()
        })
    }

    fn revoked_name(r: &pb::SessionResponse) -> (&str, u64) {
        match &r.kind {
            Some(pb::session_response::Kind::Revoked(v)) => (&v.name, v.revision),
            other => panic!("not a revocation: {other:?}"),
        }
    }

    #[test]
    fn an_event_on_a_held_breaker_revokes_it_once() {
        let mut l = Leases::default();
        l.pending.insert("a".into(), (1, None));
        assert!(l.on_answer("a".into(), true).is_none());
        assert!(l.on_event(&event("b", 3)).is_none(), "not held");
        let push = l.on_event(&event("a", 4)).expect("revoked");
        assert_eq!(revoked_name(&push), ("a", 4));
        assert!(l.on_event(&event("a", 5)).is_none(), "already void");
    }

    #[test]
    fn a_change_while_a_grant_is_answered_revokes_it_right_after() {
        let mut l = Leases::default();
        l.pending.insert("a".into(), (2, None));
        assert!(l.on_event(&event("a", 7)).is_none());
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
    fn falling_behind_the_feed_revokes_every_lease() {
        let mut l = Leases::default();
        for name in ["a", "b"] {
            l.pending.insert(name.into(), (1, None));
            l.on_answer(name.into(), true);
        }
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
