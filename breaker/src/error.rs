//! The crate's one error type.

/// Everything this crate can refuse.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A [`Spec`](crate::Spec) rule is broken; `field` names the field (`window.calls`
    /// for a nested one), `reason` says what is wrong with it.
    #[error("invalid spec: {field}: {reason}")]
    InvalidSpec {
        /// The spec field at fault.
        field: &'static str,
        /// What is wrong, for a person.
        reason: String,
    },
    /// A breaker name breaks the rules of [`validate_name`](crate::validate_name).
    #[error("invalid name: {reason}")]
    InvalidName {
        /// What is wrong, for a person.
        reason: String,
    },
    /// An [`Aggregate`](crate::Aggregate) no sequence of outcomes can have; `field`
    /// names the count at fault.
    #[error("invalid outcomes: {field}: {reason}")]
    InvalidAggregate {
        /// The aggregate field at fault, as the proto spells it.
        field: &'static str,
        /// What is wrong, for a person.
        reason: String,
    },
    /// A report carries a permit the breaker cannot have issued yet: its generation is
    /// ahead of the breaker's (a forged permit, or state lost behind the client's back).
    #[error("permit generation {permit} is newer than the breaker's generation {current}")]
    PermitFromFuture {
        /// The permit's generation.
        permit: u64,
        /// The breaker's generation.
        current: u64,
    },
}
