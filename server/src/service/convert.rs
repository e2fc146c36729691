//! Request validation and response building shared by the handlers.

use std::time::Duration;

use cbd_proto::{convert, rpc, v1 as pb};

use crate::{
    error::Error,
    permit::Permits,
    registry::{AcquireAnswer, LeaseAnswer, LeasedAnswer},
    status::{DaemonStatus, ReplicationRole},
};

/// Most items in one batch request.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// The wire answer to an acquire by `caller` (carried in the permit).
pub fn acquire_response(
    permits: &Permits,
    answer: &AcquireAnswer,
    caller: Option<&str>,
) -> pb::AcquireResponse {
    let a = &answer.acquired;
    pb::AcquireResponse {
        allowed: a.allowed,
        permit: a
            .permit
            .map(|t| permits.encode_as(&answer.name, caller, t))
            .unwrap_or_default(),
        state: convert::state_to_proto(a.state) as i32,
        generation: a.generation,
        retry_after: a.retry_after.map(convert::duration_to_proto),
        revision: answer.revision,
        valid_until: a.valid_until.map(convert::timestamp_to_proto),
        shadow_rejected: a.shadow_rejected,
    }
}

/// The wire answer to `Admin/Status`.
pub fn status_response(s: DaemonStatus) -> pb::StatusResponse {
    let count = |n: usize| n as u64;
    pb::StatusResponse {
        version: s.version.into(),
        git_commit: s.git_commit.into(),
        started_at: Some(convert::timestamp_to_proto(s.started_at)),
        uptime: Some(convert::duration_to_proto(s.uptime)),
        revision: s.revision,
        oldest_retained_revision: s.oldest_retained,
        breakers: count(s.breakers),
        watchers: count(s.watchers),
        sessions: count(s.sessions),
        leases: count(s.leases),
        store_size_bytes: s.store_size_bytes,
        last_commit: s.last_commit.map(|c| pb::LastCommit {
            committed_at: Some(convert::timestamp_to_proto(c.committed_at)),
            duration: Some(convert::duration_to_proto(c.duration)),
            events: u32::try_from(c.events).unwrap_or(u32::MAX),
            revision: c.revision,
        }),
        store_fault: s.store_fault.unwrap_or_default(),
        role: match s.role {
            ReplicationRole::Standalone => pb::ReplicationRole::Standalone,
            ReplicationRole::Leader { .. } => pb::ReplicationRole::Leader,
        } as i32,
        leader: match s.role {
            ReplicationRole::Standalone => String::new(),
            ReplicationRole::Leader { advertised } => advertised,
        },
    }
}

/// The wire answer to a lease request (docs/DESIGN.md §10).
pub fn lease_grant(
    permits: &Permits,
    answer: &LeaseAnswer,
    caller: Option<&str>,
) -> pb::LeaseGrant {
    let mut grant = pb::LeaseGrant {
        state: convert::state_to_proto(answer.state) as i32,
        generation: answer.generation,
        ..Default::default()
    };
    match answer.lease {
        _ if answer.too_many => {
            grant.refusal = pb::LeaseRefusal::TooMany as i32;
        }
        cbd_breaker::Lease::Granted {
            valid_until,
            generation,
            slow_call_duration,
        } => {
            grant.granted = true;
            grant.lease = permits.encode_lease_as(&answer.name, caller, generation, answer.serial);
            grant.valid_until = Some(convert::timestamp_to_proto(valid_until));
            grant.valid_for = Some(convert::duration_to_proto(Duration::from_nanos(
                valid_until
                    .unix_nanos()
                    .saturating_sub(answer.now.unix_nanos()),
            )));
            grant.slow_call_duration = slow_call_duration.map(convert::duration_to_proto);
        }
        cbd_breaker::Lease::NotLeasable => {
            grant.refusal = pb::LeaseRefusal::NotLeasable as i32;
        }
        cbd_breaker::Lease::NotClosed => {
            grant.refusal = pb::LeaseRefusal::NotClosed as i32;
        }
    }
    grant
}

/// Leased outcomes from the wire, as the machine counts them.
pub fn aggregate(req: &pb::LeasedOutcomes) -> cbd_breaker::Aggregate {
    cbd_breaker::Aggregate {
        successes: req.successes,
        slow_successes: req.slow_successes,
        failures: req.failures,
        ignored: req.ignored,
        leading_failures: req.leading_failures,
        longest_failure_run: req.longest_failure_run,
        trailing_failures: req.trailing_failures,
    }
}

/// The wire answer to leased outcomes.
pub fn leased_answer(answer: &LeasedAnswer) -> pb::LeasedOutcomesAnswer {
    pb::LeasedOutcomesAnswer {
        stale: answer.reported.stale,
        duplicate: answer.duplicate,
        state: convert::state_to_proto(answer.reported.state) as i32,
        generation: answer.reported.generation,
        revision: answer.revision,
    }
}

/// A per-item error in a batch or session answer.
pub fn item_error(e: Error) -> rpc::Status {
    rpc::Status {
        code: e.code() as i32,
        message: e.to_string(),
        details: Vec::new(),
    }
}

/// An outcome from the wire; unset or unknown values name the field.
pub fn outcome(value: i32) -> Result<cbd_breaker::Outcome, Error> {
    let o = pb::Outcome::try_from(value)
        .map_err(|_| Error::invalid("outcome", format!("unknown value {value}")))?;
    convert::outcome_from_proto(o).ok_or_else(|| {
        Error::invalid(
            "outcome",
            "required: OUTCOME_SUCCESS, OUTCOME_FAILURE or OUTCOME_IGNORED",
        )
    })
}

/// An override from the wire; unspecified clears it.
pub fn override_(value: i32) -> Result<Option<cbd_breaker::Override>, Error> {
    pb::Override::try_from(value)
        .map(convert::override_from_proto)
        .map_err(|_| Error::invalid("override", format!("unknown value {value}")))
}

/// A request's duration field, range-checked before it becomes a `std` duration (a
/// huge one would overflow when added to an `Instant`): negative values, nanos
/// outside `0..1e9` and anything outside `min..=max` are INVALID_ARGUMENT naming
/// `field`.
pub fn bounded_duration(
    field: &'static str,
    d: &prost_types::Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, Error> {
    let value = convert::duration_from_proto(d, field).map_err(|e| match e {
        cbd_breaker::Error::InvalidSpec { reason, .. } => Error::invalid(field, reason),
        other => Error::invalid(field, other.to_string()),
    })?;
    if value < min {
        return Err(Error::invalid(field, format!("must be at least {min:?}")));
    }
    if value > max {
        return Err(Error::invalid(field, format!("must be at most {max:?}")));
    }
    Ok(value)
}

/// A report's optional duration: any length a `google.protobuf.Duration` can hold.
pub fn duration(d: Option<&prost_types::Duration>) -> Result<Option<Duration>, Error> {
    d.map(|d| bounded_duration("duration", d, Duration::ZERO, Duration::MAX))
        .transpose()
}

/// A spec from the wire, validated, with errors naming `spec.<field>`.
pub fn spec(spec: Option<&pb::BreakerSpec>) -> Result<cbd_breaker::Spec, Error> {
    Ok(convert::spec_from_proto(
        &spec.cloned().unwrap_or_default(),
    )?)
}

/// A name prefix (for List and Watch): empty, or the characters of a name.
pub fn prefix(field: &str, prefix: &str) -> Result<(), Error> {
    if prefix.is_empty() {
        return Ok(());
    }
    cbd_breaker::validate_name(prefix).map_err(|e| match e {
        cbd_breaker::Error::InvalidName { reason } => Error::invalid(field, reason),
        other => Error::invalid(field, other.to_string()),
    })
}

/// The caller a request acts as (docs/DESIGN.md §3.7): `given`, checked like a
/// breaker name (INVALID_ARGUMENT naming `caller`), or when empty the token's name
/// (`None`: anonymous). A token with a name may not claim another caller
/// (PERMISSION_DENIED naming `caller`).
pub fn caller<'a>(
    identity: Option<&'a crate::auth::Identity>,
    given: &'a str,
) -> Result<Option<&'a str>, Error> {
    let token = identity.and_then(|id| id.name.as_deref());
    if given.is_empty() {
        return Ok(token);
    }
    cbd_breaker::validate_name(given).map_err(|e| match e {
        cbd_breaker::Error::InvalidName { reason } => Error::invalid("caller", reason),
        other => Error::invalid("caller", other.to_string()),
    })?;
    match token {
        Some(name) if name != given => Err(Error::CallerNotYours {
            token: name.to_owned(),
            claimed: given.to_owned(),
        }),
        _ => Ok(Some(given)),
    }
}

/// The caller a report (or leased outcomes) acts as: `checked`, what [`caller`] made
/// of its own `caller` field, when that field was `given`; else the one its permit (or
/// lease) was issued to; else `checked` (the token's name, or anonymous).
pub fn report_caller<'a>(
    checked: Option<&'a str>,
    given: &str,
    of_permit: Option<&'a str>,
) -> Option<&'a str> {
    if given.is_empty() {
        of_permit.or(checked)
    } else {
        checked
    }
}

/// Longest reason an operator may give (`Operator.reason`), in bytes.
pub const MAX_REASON_BYTES: usize = 256;
/// Longest an override may be set for (`SetOverrideRequest.duration`).
pub const MAX_OVERRIDE_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Page size when a request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A request's page size: 0 is the default; above the maximum is INVALID_ARGUMENT.
pub fn page_size(n: u32) -> Result<usize, Error> {
    match n {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n > MAX_PAGE_SIZE => Err(Error::invalid(
            "page_size",
            format!("{n} is above {MAX_PAGE_SIZE}"),
        )),
        n => Ok(n as usize),
    }
}

/// Who is making an operator change (from the identity the auth layer put in the
/// request's extensions, and the peer address) and why (`reason`, checked: at most
/// [`MAX_REASON_BYTES`], no control characters).
pub fn operator<T>(request: &tonic::Request<T>, reason: &str) -> Result<pb::Operator, Error> {
    let actor = request
        .extensions()
        .get::<crate::auth::Identity>()
        .map_or("anonymous", |id| id.actor());
    let peer = request
        .remote_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    operator_from(actor, peer, reason)
}

/// [`operator`] from its parts: `actor` as the auth layer identified the caller,
/// `peer` its address (empty: unknown), `reason` checked here.
pub fn operator_from(actor: &str, peer: String, reason: &str) -> Result<pb::Operator, Error> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(Error::invalid(
            "reason",
            format!("{} bytes; at most {MAX_REASON_BYTES}", reason.len()),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(Error::invalid(
            "reason",
            "must not contain control characters",
        ));
    }
    Ok(pb::Operator {
        actor: actor.to_owned(),
        peer,
        reason: reason.to_owned(),
    })
}

/// How long an override lasts (`SetOverrideRequest.duration`): `None` for good.
/// Must be positive, at most [`MAX_OVERRIDE_DURATION`], and absent when clearing.
pub fn override_duration(
    d: Option<&prost_types::Duration>,
    clearing: bool,
) -> Result<Option<Duration>, Error> {
    let Some(d) = d else { return Ok(None) };
    if clearing {
        return Err(Error::invalid(
            "duration",
            "only an override that is set can last a duration; clearing takes none",
        ));
    }
    bounded_duration(
        "duration",
        d,
        Duration::from_nanos(1),
        MAX_OVERRIDE_DURATION,
    )
    .map(Some)
}

/// A time to read from (`ListEventsRequest.since`): one that is not a valid
/// timestamp (nanos out of range, beyond year 9999) names the field.
pub fn since(t: &prost_types::Timestamp) -> Result<cbd_breaker::Timestamp, Error> {
    let valid = (0..1_000_000_000).contains(&t.nanos) && t.seconds <= 253_402_300_799;
    if !valid {
        return Err(Error::invalid("since", "not a valid timestamp"));
    }
    Ok(convert::timestamp_from_proto(t))
}

/// A page token that is a revision (ListEvents): empty is 0.
pub fn revision_token(token: &str) -> Result<u64, Error> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .parse()
        .map_err(|_| Error::invalid("page_token", "not a token from a previous response"))
}

/// Fails when a batch has too many items.
pub fn batch_size(len: usize) -> Result<(), Error> {
    if len > MAX_BATCH_ITEMS {
        return Err(Error::invalid(
            "items",
            format!("{len} items; at most {MAX_BATCH_ITEMS} per batch"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seconds: i64, nanos: i32) -> prost_types::Duration {
        prost_types::Duration { seconds, nanos }
    }

    #[test]
    fn bounded_duration_rejects_everything_out_of_range_naming_the_field() {
        let (min, max) = (Duration::from_millis(10), Duration::from_secs(3600));
        for bad in [
            d(-1, 0),
            d(0, -1),
            d(0, 1_000_000_000),
            d(0, 9_999_999),
            d(3600, 1),
            d(i64::MAX, 0),
        ] {
            match bounded_duration("progress_interval", &bad, min, max) {
                Err(Error::InvalidArgument { field, .. }) => {
                    assert_eq!(field, "progress_interval", "{bad:?}");
                }
                other => panic!("{bad:?}: expected InvalidArgument, got {other:?}"),
            }
        }
        assert_eq!(
            bounded_duration("f", &d(0, 10_000_000), min, max).unwrap(),
            min
        );
        assert_eq!(bounded_duration("f", &d(3600, 0), min, max).unwrap(), max);
    }
}
