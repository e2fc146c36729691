//! Leases on CLOSED breakers and the outcomes counted under them (docs/DESIGN.md §10).
//!
//! A lease is granted from the live machine, like a decision; the registry keeps, per
//! breaker, each lease's generation and the last sequence number of its outcomes
//! applied, so that a resent aggregate counts once. Pushing revocations is the
//! session's job (it follows `Registry::changes`, signalled at every change before
//! its commit, and the committed event feed): the registry only says whether a
//! lease may be granted.

use std::{sync::Arc, time::Duration};

use cbd_breaker::{Aggregate, Lease, Reported, State, Timestamp};

use super::{Registry, entry::EntryState};
use crate::error::Error;

/// How long after its `valid_until` a lease's outcomes are still counted: a client
/// flushes what it counted before the end, and a reconnect may delay that.
pub const REPORT_GRACE: Duration = Duration::from_secs(30);

/// Most leases kept per breaker (with their grace period); past it, no new lease
/// until older ones end.
pub const MAX_LEASES_PER_BREAKER: usize = 10_000;

/// What the registry remembers of one lease.
#[derive(Clone, Debug)]
pub(crate) struct LeaseRecord {
    /// The generation it was granted in; its outcomes count only in that one.
    generation: u64,
    /// The last sequence number applied; 0: none yet.
    applied: u64,
    /// The end of its term: a client uses it no longer.
    valid_until: Timestamp,
    /// `valid_until + REPORT_GRACE`: after it the record is dropped and outcomes
    /// under the lease are stale.
    report_until: Timestamp,
}

/// The answer to a lease request.
#[derive(Debug)]
pub struct LeaseAnswer {
    pub name: Arc<str>,
    /// The machine's terms.
    pub lease: Lease,
    /// The lease's number, when granted; 0 otherwise.
    pub serial: u64,
    /// The machine would grant `lease`, but the breaker already holds
    /// [`MAX_LEASES_PER_BREAKER`] leases: refused, and `serial` is 0.
    pub too_many: bool,
    pub state: State,
    pub generation: u64,
    /// When the answer was made, on the registry's clock.
    pub now: Timestamp,
    pub revision: u64,
}

/// The answer to leased outcomes.
#[derive(Debug)]
pub struct LeasedAnswer {
    pub reported: Reported,
    /// This sequence number was applied before; nothing was counted now.
    pub duplicate: bool,
    pub revision: u64,
}

impl Registry {
    /// A lease on `name` (created from a template if need be): granted while it is
    /// CLOSED with no override and its spec sets `cache_ttl`.
    pub async fn lease(&self, name: &str) -> Result<LeaseAnswer, Error> {
        cbd_breaker::validate_name(name)?;
        let entry = match self.shared.lookup(name) {
            Some(entry) => entry,
            None => self.create_from_template(name).await?,
        };
        let next_lease = &self.shared.next_lease;
        let (answer, after) = self.shared.update_traffic(&entry, |st, now, entry| {
            if st.deleted {
                return Err(Error::NotFound { name: name.into() });
            }
            let lease = st.machine.lease(now);
            let mut serial = 0;
            let mut too_many = false;
            if let Lease::Granted {
                valid_until,
                generation,
                ..
            } = lease
            {
                st.leases.retain(|_, r| r.report_until >= now);
                if st.leases.len() >= MAX_LEASES_PER_BREAKER {
                    too_many = true;
                } else {
                    serial = next_lease.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    st.leases.insert(
                        serial,
                        LeaseRecord {
                            generation,
                            applied: 0,
                            valid_until,
                            report_until: valid_until.saturating_add(REPORT_GRACE),
                        },
                    );
                }
            }
            let status = st.machine.status();
            let answer = LeaseAnswer {
                name: entry.name.clone(),
                lease,
                serial,
                too_many,
                state: status.state,
                generation: status.generation,
                now,
                revision: 0,
            };
            Ok((answer, None))
        })?;
        if answer.serial != 0 {
            // After the entry's lock is released: `leased` is never taken under one.
            self.shared
                .leased
                .lock()
                .insert(entry.name.clone(), entry.clone());
        }
        let revision = self.shared.finish(&entry, after).await?;
        Ok(LeaseAnswer { revision, ..answer })
    }

    /// Leases in their term and in the generation they were granted in, now
    /// (`cbctl status`): over the breakers granted a lease lately only, one breaker's
    /// lock at a time; a breaker none of whose leases can count any more (deleted, or
    /// past every `report_until`) leaves that set until its next grant.
    pub fn leases_held(&self) -> usize {
        let now = self.shared.config.clock.now();
        let mut leased = self.shared.leased.lock();
        let mut held = 0;
        leased.retain(|_, entry| {
            let st = entry.state.lock();
            if st.deleted {
                return false;
            }
            let generation = st.machine.persisted().generation;
            held += st
                .leases
                .values()
                .filter(|r| r.generation == generation && r.valid_until >= now)
                .count();
            st.leases.values().any(|r| r.report_until >= now)
        });
        held
    }

    /// How many breakers [`Registry::leases_held`] visits now (tests).
    #[cfg(test)]
    pub(crate) fn leased_breakers(&self) -> usize {
        self.shared.leased.lock().len()
    }

    /// Applies `outcomes`, number `sequence` of lease `serial` on `name`.
    pub async fn report_leased(
        &self,
        name: &str,
        serial: u64,
        sequence: u64,
        outcomes: &Aggregate,
    ) -> Result<LeasedAnswer, Error> {
        self.report_leased_as(name, serial, sequence, outcomes, None)
            .await
    }

    /// [`Registry::report_leased`] attributed to `caller` (checked by the service;
    /// `None`: anonymous), docs/DESIGN.md §3.7.
    pub async fn report_leased_as(
        &self,
        name: &str,
        serial: u64,
        sequence: u64,
        outcomes: &Aggregate,
        caller: Option<&str>,
    ) -> Result<LeasedAnswer, Error> {
        if sequence == 0 {
            return Err(Error::invalid("sequence", "starts at 1"));
        }
        outcomes.validate()?;
        let deleted = || Error::PermitOfDeletedBreaker { name: name.into() };
        let entry = self.shared.lookup(name).ok_or_else(deleted)?;
        let ((reported, duplicate), after) = self.shared.update_traffic(&entry, |st, now, _| {
            if st.deleted {
                return Err(deleted());
            }
            apply(st, serial, sequence, outcomes, caller, now)
        })?;
        if !duplicate {
            entry.metrics.reported_many(outcomes, reported.stale);
        }
        let revision = self.shared.finish(&entry, after).await?;
        Ok(LeasedAnswer {
            reported,
            duplicate,
            revision,
        })
    }
}

/// The sequence check and the counting, under the entry's lock.
fn apply(
    st: &mut EntryState,
    serial: u64,
    sequence: u64,
    outcomes: &Aggregate,
    caller: Option<&str>,
    now: Timestamp,
) -> super::Changed<(Reported, bool)> {
    let unchanged = |st: &EntryState, stale: bool| {
        let status = st.machine.status();
        Reported {
            stale,
            state: status.state,
            generation: status.generation,
            transition: None,
        }
    };
    let Some(record) = st.leases.get_mut(&serial) else {
        // Ended more than REPORT_GRACE ago, or never granted on this incarnation.
        return Ok(((unchanged(st, true), false), None));
    };
    if record.report_until < now {
        st.leases.remove(&serial);
        return Ok(((unchanged(st, true), false), None));
    }
    if sequence <= record.applied {
        return Ok(((unchanged(st, false), true), None));
    }
    if sequence > record.applied + 1 {
        return Err(Error::SequenceGap {
            expected: record.applied + 1,
            got: sequence,
        });
    }
    // The number counts as applied only once the machine took the outcomes.
    let reported = st
        .machine
        .report_aggregate_as(record.generation, outcomes, caller, now)?;
    record.applied = sequence;
    let transition = reported.transition.clone();
    Ok(((reported, false), transition))
}
