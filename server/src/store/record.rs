//! The persisted form of a breaker: its spec and the part of its state that
//! survives a restart (docs/DESIGN.md §6). Window counts and probes are not in it.

use cbd_breaker::{Breaker, Persisted, Spec, Timestamp};
use cbd_proto::{convert, v1 as pb};

use crate::error::Error;

/// A breaker record as stored (protobuf-encoded).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredBreaker {
    /// The spec, defaults filled in.
    #[prost(message, optional, tag = "1")]
    pub spec: Option<pb::BreakerSpec>,
    /// `pb::State` of the state machine.
    #[prost(enumeration = "pb::State", tag = "2")]
    pub state: i32,
    /// `pb::Override`; unspecified = none.
    #[prost(enumeration = "pb::Override", tag = "3")]
    pub override_: i32,
    /// The generation.
    #[prost(uint64, tag = "4")]
    pub generation: u64,
    /// While OPEN (and not forced): the deadline, in nanoseconds since the Unix epoch.
    #[prost(uint64, optional, tag = "5")]
    pub open_until_unix_nanos: Option<u64>,
    /// Backoff exponent of the open duration.
    #[prost(uint32, tag = "6")]
    pub backoff_level: u32,
    /// The revision of the last change to this record.
    #[prost(uint64, tag = "7")]
    pub mod_revision: u64,
    /// When the override clears by itself, in nanoseconds since the Unix epoch.
    #[prost(uint64, optional, tag = "8")]
    pub override_until_unix_nanos: Option<u64>,
    /// Who set the override, and why.
    #[prost(message, optional, tag = "9")]
    pub override_operator: Option<pb::Operator>,
}

impl StoredBreaker {
    /// The record of `breaker`, its override set by `override_operator`, as of
    /// `mod_revision`.
    pub fn of(
        breaker: &Breaker,
        override_operator: Option<&pb::Operator>,
        mod_revision: u64,
    ) -> Self {
        let p = breaker.persisted();
        Self {
            spec: Some(convert::spec_to_proto(breaker.spec())),
            state: convert::state_to_proto(p.state) as i32,
            override_: convert::override_to_proto(p.override_) as i32,
            generation: p.generation,
            open_until_unix_nanos: p.open_until.map(Timestamp::unix_nanos),
            backoff_level: p.backoff_level,
            mod_revision,
            override_until_unix_nanos: p.override_until.map(Timestamp::unix_nanos),
            override_operator: override_operator.cloned(),
        }
    }

    /// The state machine this record describes (probes and window counts start empty).
    pub fn restore(&self) -> Result<Breaker, Error> {
        let spec: Spec = convert::spec_from_proto(&self.spec.unwrap_or_default())
            .map_err(|e| Error::Storage(format!("stored spec no longer valid: {e}")))?;
        let state = convert::state_from_proto(self.state())
            .ok_or_else(|| Error::Storage("stored record has no state".into()))?;
        Ok(Breaker::restore(
            spec,
            Persisted {
                state,
                override_: convert::override_from_proto(self.override_()),
                generation: self.generation,
                open_until: self.open_until_unix_nanos.map(Timestamp::from_unix_nanos),
                backoff_level: self.backoff_level,
                override_until: self
                    .override_until_unix_nanos
                    .map(Timestamp::from_unix_nanos),
            },
        ))
    }
}
