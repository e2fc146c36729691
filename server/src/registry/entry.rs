//! One live breaker: its state machine under a lock, the changes it made that are not
//! yet durable, and how far the writer has persisted them.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use cbd_breaker::{Breaker, Timestamp, Transition};
use cbd_proto::{convert, v1 as pb};
use parking_lot::Mutex;

use crate::{
    metrics::{BreakerMetrics, Shown},
    store::StoredBreaker,
};

/// A named breaker as the registry keeps it.
#[derive(Debug)]
pub struct Entry {
    /// The breaker's name.
    pub name: Arc<str>,
    /// Everything that changes, behind the breaker's one lock. Never held across an
    /// `.await`, I/O, or a send to another task.
    pub(crate) state: Mutex<EntryState>,
    /// The highest `EntryState::change_seq` the writer has made durable.
    pub(crate) durable_seq: AtomicU64,
    /// This breaker's metric handles, resolved once.
    pub(crate) metrics: BreakerMetrics,
}

/// The mutable part of an [`Entry`].
#[derive(Debug)]
pub(crate) struct EntryState {
    pub machine: Breaker,
    /// Deleted, and the delete not yet committed (the writer then drops the entry).
    pub deleted: bool,
    /// Dropped from the map after its delete committed; whoever still holds the
    /// entry must look the name up again rather than revive it.
    pub forgotten: bool,
    /// Changes made since the writer last drained this entry, in order; their
    /// revisions are assigned by the writer.
    pub pending: Vec<pb::Event>,
    /// Counts every change made to this entry; compared with `Entry::durable_seq`.
    pub change_seq: u64,
    /// The revision of the last committed change (set when the writer lays the
    /// change out, so it may be the one being committed).
    pub mod_revision: u64,
    /// The record as last committed; `None`: never committed (or its delete was).
    /// Readers are shown this while the entry has changes that are not durable, so
    /// that nothing a failed commit could take back is ever shown. Set by the writer
    /// from the batch it committed, so the hot path never copies it; shared, so a
    /// watch snapshot copies a pointer, not the record (docs/DESIGN.md §5).
    pub committed: Option<Arc<StoredBreaker>>,
    /// When the timer task is due to tick this breaker; `None`: not scheduled.
    pub timer_at: Option<Timestamp>,
    /// What the metric gauges show of this breaker.
    pub shown: Shown,
    /// Leases granted on this breaker whose outcomes may still come, by number.
    pub leases: std::collections::HashMap<u64, super::leases::LeaseRecord>,
    /// Who set the override in force, and why; `None` without an override. Kept
    /// here, not in the machine: it decides nothing.
    pub override_operator: Option<pb::Operator>,
}

impl Entry {
    /// `committed`: the stored record it was restored from; `None` for a new breaker.
    pub(crate) fn new(
        name: Arc<str>,
        machine: Breaker,
        committed: Option<Arc<StoredBreaker>>,
        metrics: BreakerMetrics,
    ) -> Self {
        let entry = Self {
            name,
            state: Mutex::new(EntryState {
                machine,
                deleted: false,
                forgotten: false,
                pending: Vec::new(),
                change_seq: 0,
                mod_revision: committed.as_ref().map_or(0, |r| r.mod_revision),
                override_operator: committed.as_ref().and_then(|r| r.override_operator.clone()),
                committed,
                timer_at: None,
                shown: Shown::default(),
                leases: std::collections::HashMap::new(),
            }),
            durable_seq: AtomicU64::new(0),
            metrics,
        };
        entry.show_metrics(&mut entry.state.lock());
        entry
    }

    /// Brings the metric gauges up to the breaker's state; under its lock.
    pub(crate) fn show_metrics(&self, state: &mut EntryState) {
        let s = state.machine.status();
        self.metrics
            .show(&mut state.shown, s.state, s.probes_in_flight);
    }

    /// The change sequence a caller that saw `state` must wait for before answering,
    /// so that no client sees a state a crash could take back. `None`: all durable.
    pub(crate) fn undurable(&self, state: &EntryState) -> Option<u64> {
        (state.change_seq > self.durable_seq.load(Ordering::Acquire)).then_some(state.change_seq)
    }

    /// What a reader may be shown of `state`: the live status when every change is
    /// durable, else the last committed record with the live window counts (which
    /// are never persisted) of the same generation. `None`: nothing committed exists.
    /// [`Entry::committed_status`] with a time window's counts as of `now`.
    pub(crate) fn status_now(&self, now: Timestamp) -> Option<pb::BreakerStatus> {
        let mut state = self.state.lock();
        state.machine.expire_window(now);
        self.committed_status(&state)
    }

    pub(crate) fn committed_status(&self, state: &EntryState) -> Option<pb::BreakerStatus> {
        if self.undurable(state).is_none() {
            return (!state.deleted).then(|| state.status(&self.name));
        }
        let record = state.committed.as_ref()?;
        let live = state.machine.status();
        let same = live.generation == record.generation;
        Some(pb::BreakerStatus {
            name: self.name.to_string(),
            spec: record.spec,
            state: record.state,
            r#override: record.override_,
            generation: record.generation,
            open_until: record
                .open_until_unix_nanos
                .map(|n| convert::timestamp_to_proto(Timestamp::from_unix_nanos(n))),
            backoff_level: record.backoff_level,
            mod_revision: record.mod_revision,
            window_calls: if same { live.window_calls } else { 0 },
            window_failures: if same { live.window_failures } else { 0 },
            window_slow_calls: if same { live.window_slow_calls } else { 0 },
            consecutive_failures: if same { live.consecutive_failures } else { 0 },
            probes_in_flight: if same { live.probes_in_flight } else { 0 },
            half_open_successes: if same { live.half_open_successes } else { 0 },
            override_operator: record.override_operator.clone(),
            override_until: record
                .override_until_unix_nanos
                .map(|n| convert::timestamp_to_proto(Timestamp::from_unix_nanos(n))),
            failing_callers: if same {
                convert::failing_callers_to_proto(&state.machine.failing_callers())
            } else {
                Vec::new()
            },
        })
    }
}

impl EntryState {
    /// Queues a transition for the writer; `operator`: who made it (`None`: the
    /// machine itself). Keeps [`EntryState::override_operator`] in step.
    pub fn push_transition(&mut self, name: &str, t: &Transition, operator: Option<&pb::Operator>) {
        let kind = match t.reason {
            cbd_breaker::Reason::OverrideSet(_) => pb::EventKind::OverrideSet,
            cbd_breaker::Reason::OverrideCleared => pb::EventKind::OverrideCleared,
            cbd_breaker::Reason::OverrideExpired(_) => pb::EventKind::OverrideExpired,
            cbd_breaker::Reason::Reset => pb::EventKind::Reset,
            _ => pb::EventKind::StateChanged,
        };
        if t.to_override.is_none() {
            self.override_operator = None;
        } else if kind == pb::EventKind::OverrideSet {
            self.override_operator = operator.cloned();
        }
        let override_until = match kind {
            pb::EventKind::OverrideSet | pb::EventKind::Reset => self
                .machine
                .status()
                .override_until
                .map(convert::timestamp_to_proto),
            _ => None,
        };
        self.push(pb::Event {
            revision: 0,
            name: name.to_owned(),
            kind: kind as i32,
            previous_state: convert::state_to_proto(t.from) as i32,
            state: convert::state_to_proto(t.to) as i32,
            r#override: convert::override_to_proto(t.to_override) as i32,
            generation: t.generation,
            reason: t.reason.to_string(),
            time: Some(convert::timestamp_to_proto(t.at)),
            spec: None,
            operator: operator.cloned(),
            override_until,
        });
    }

    /// Queues a spec put or a delete for the writer; `operator`: who asked (`None`:
    /// a template, through an Acquire).
    pub fn push_spec_event(
        &mut self,
        name: &str,
        kind: pb::EventKind,
        now: Timestamp,
        operator: Option<&pb::Operator>,
    ) {
        let status = self.machine.status();
        let state = convert::state_to_proto(status.state) as i32;
        self.push(pb::Event {
            revision: 0,
            name: name.to_owned(),
            kind: kind as i32,
            previous_state: state,
            state,
            r#override: convert::override_to_proto(status.override_) as i32,
            generation: status.generation,
            reason: match kind {
                pb::EventKind::Deleted => "deleted by operator".into(),
                _ => "spec put".into(),
            },
            time: Some(convert::timestamp_to_proto(now)),
            spec: (kind == pb::EventKind::SpecPut)
                .then(|| convert::spec_to_proto(self.machine.spec())),
            operator: operator.cloned(),
            override_until: None,
        });
    }

    fn push(&mut self, event: pb::Event) {
        self.pending.push(event);
        self.change_seq += 1;
    }

    /// The wire status of this breaker.
    pub fn status(&self, name: &str) -> pb::BreakerStatus {
        let s = self.machine.status();
        pb::BreakerStatus {
            name: name.to_owned(),
            spec: Some(convert::spec_to_proto(self.machine.spec())),
            state: convert::state_to_proto(s.state) as i32,
            r#override: convert::override_to_proto(s.override_) as i32,
            generation: s.generation,
            window_calls: s.window_calls,
            window_failures: s.window_failures,
            window_slow_calls: s.window_slow_calls,
            consecutive_failures: s.consecutive_failures,
            open_until: s.open_until.map(convert::timestamp_to_proto),
            backoff_level: s.backoff_level,
            probes_in_flight: s.probes_in_flight,
            half_open_successes: s.half_open_successes,
            mod_revision: self.mod_revision,
            override_operator: self.override_operator.clone(),
            override_until: s.override_until.map(convert::timestamp_to_proto),
            failing_callers: convert::failing_callers_to_proto(&self.machine.failing_callers()),
        }
    }
}
