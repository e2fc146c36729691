"""Enums and small value types shared by the sync and asyncio clients."""

import enum
from dataclasses import dataclass
from typing import Optional

from ._pb.cbd.v1 import types_pb2


class State(enum.IntEnum):
    """A breaker's effective state (values as in cbd.v1.State)."""

    UNSPECIFIED = types_pb2.STATE_UNSPECIFIED
    CLOSED = types_pb2.STATE_CLOSED
    OPEN = types_pb2.STATE_OPEN
    HALF_OPEN = types_pb2.STATE_HALF_OPEN


class Outcome(enum.IntEnum):
    """How a call went (values as in cbd.v1.Outcome)."""

    SUCCESS = types_pb2.OUTCOME_SUCCESS
    FAILURE = types_pb2.OUTCOME_FAILURE
    IGNORED = types_pb2.OUTCOME_IGNORED


class Fallback(enum.IntEnum):
    """What the client does when the daemon cannot answer in time (cbd.v1.Fallback)."""

    FAIL_OPEN = types_pb2.FALLBACK_FAIL_OPEN
    FAIL_CLOSED = types_pb2.FALLBACK_FAIL_CLOSED
    LOCAL = types_pb2.FALLBACK_LOCAL


@dataclass(frozen=True)
class TLS:
    """TLS settings: PEM file paths. `ca` verifies the daemon (None: system roots);
    `cert` and `key` together are the client certificate for mutual TLS."""

    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None


@dataclass(frozen=True)
class Reported:
    """Where a permit's outcome went: `to` is "daemon", "local" (the local fallback
    breaker), "leased" (counted for the next LeasedOutcomes) or "nowhere" (fail-open
    permit, or already reported). `stale` and `generation` are the daemon's answer."""

    to: str
    state: Optional[State] = None
    stale: bool = False
    generation: int = 0


def state_of(value: int) -> State:
    """A wire state as a `State` (unknown values become UNSPECIFIED)."""
    try:
        return State(value)
    except ValueError:
        return State.UNSPECIFIED
