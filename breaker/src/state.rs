//! The small enums: breaker states, operator overrides and call outcomes.

use std::fmt;

/// A breaker's state.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls flow; outcomes are counted and may trip the breaker.
    Closed,
    /// Calls are rejected until `open_until`.
    Open,
    /// A few probe calls are let through to test whether the dependency recovered.
    HalfOpen,
}

impl State {
    /// The wire and log name: `CLOSED`, `OPEN` or `HALF_OPEN`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "CLOSED",
            Self::Open => "OPEN",
            Self::HalfOpen => "HALF_OPEN",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's override of the machine (docs/DESIGN.md §3). Persisted; holds until cleared.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Override {
    /// Reject every call.
    ForcedOpen,
    /// Allow every call; count outcomes but never trip.
    ForcedClosed,
    /// Allow every call; count nothing.
    Disabled,
    /// Allow every call, but run the machine as if enforcing and flag the calls it
    /// would have rejected, so a new breaker can be rolled out safely.
    Shadow,
}

impl Override {
    /// The wire and log name: `FORCED_OPEN`, `FORCED_CLOSED`, `DISABLED` or `SHADOW`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ForcedOpen => "FORCED_OPEN",
            Self::ForcedClosed => "FORCED_CLOSED",
            Self::Disabled => "DISABLED",
            Self::Shadow => "SHADOW",
        }
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call went, as its caller reports it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded (it may still be slow, see `Spec::slow_call_duration`).
    Success,
    /// The call failed through the dependency's fault.
    Failure,
    /// Not counted: the caller's own fault, or a cancellation.
    Ignored,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_wire_names() {
        assert_eq!(State::Closed.to_string(), "CLOSED");
        assert_eq!(State::Open.to_string(), "OPEN");
        assert_eq!(State::HalfOpen.to_string(), "HALF_OPEN");
        assert_eq!(Override::ForcedOpen.to_string(), "FORCED_OPEN");
        assert_eq!(Override::ForcedClosed.to_string(), "FORCED_CLOSED");
        assert_eq!(Override::Disabled.to_string(), "DISABLED");
        assert_eq!(Override::Shadow.to_string(), "SHADOW");
    }
}
