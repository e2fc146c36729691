"""The client's exceptions: RPC failures typed by gRPC status code (never by
message text), plus the breaker's rejection, `BreakerOpen`."""

from typing import Optional

import grpc

#: Trailing-metadata key of an OUT_OF_RANGE watch error: the oldest retained revision.
COMPACT_REVISION_METADATA = "cbd-compact-revision"
#: Metadata key of a standby's UNAVAILABLE (DESIGN §11): the leader's URL, empty
#: while no leader is known.
LEADER_METADATA = "cbd-leader"


class CbdError(Exception):
    """Base of every exception this package raises."""


class BreakerOpen(CbdError):
    """The breaker said no: the call must not be made.

    Attributes: `name` (the breaker), `state` (a `State`; a fail-closed fallback
    reports OPEN), `retry_after` (seconds as a float, or None when it cannot be known:
    FORCED_OPEN, or a fail-closed fallback) and `fallback` (None when the daemon
    decided, else the `Fallback` policy that did because the daemon was unreachable).
    """

    def __init__(self, name, state, retry_after: Optional[float], fallback=None):
        from .types import State

        self.name, self.state, self.retry_after, self.fallback = name, state, retry_after, fallback
        text = f"breaker {name!r} rejected the call ({State(state).name}"
        if retry_after is not None:
            text += f", retry after {retry_after:.3f} s"
        if fallback is not None:
            text += f", daemon unreachable: {fallback.name.lower()}"
        super().__init__(text + ")")


class AlreadyReported(CbdError):
    """A permit's outcome was reported already: each permit is reported exactly once."""


class RpcError(CbdError):
    """A gRPC call failed. `code` is the `grpc.StatusCode`, `details` the daemon's
    message (for people; decide by the class or `code`, never by this text)."""

    def __init__(self, code: grpc.StatusCode, details: str = "", trailers=()):
        self.code, self.details, self.trailers = code, details, tuple(trailers or ())
        super().__init__(f"{code.name}: {details}")

    @property
    def transient(self) -> bool:
        """Whether trying again later may work (the daemon unreachable or unable to
        answer properly). On a transient error `acquire` applies the fallback policy."""
        return self.code in TRANSIENT_CODES


class InvalidArgument(RpcError):
    """INVALID_ARGUMENT: a bad name, spec, filter or permit."""


class NotFound(RpcError):
    """NOT_FOUND: no such breaker (and no template for its prefix)."""


class AlreadyExists(RpcError):
    """ALREADY_EXISTS."""


class ResourceExhausted(RpcError):
    """RESOURCE_EXHAUSTED: a daemon limit (breakers, watchers) was reached."""


class FailedPrecondition(RpcError):
    """FAILED_PRECONDITION (e.g. a leased-outcomes sequence gap)."""


class Compacted(RpcError):
    """OUT_OF_RANGE: a watch asked for a revision compacted away. `oldest_retained`
    comes from the `cbd-compact-revision` trailer (None if absent)."""

    @property
    def oldest_retained(self) -> Optional[int]:
        for key, value in self.trailers:
            if key == COMPACT_REVISION_METADATA:
                try:
                    return int(str(value).strip())
                except ValueError:
                    return None
        return None


class Unavailable(RpcError):
    """UNAVAILABLE: the daemon could not be reached (refused, reset, stopping), or
    the replica is a standby (`leader` says where to go)."""

    @property
    def leader(self) -> Optional[str]:
        """A standby's answer: the leader's URL (`http://host:port`), "" while it
        knows none. None: not a standby's answer."""
        for key, value in self.trailers:
            if key == LEADER_METADATA:
                return value.decode() if isinstance(value, bytes) else str(value)
        return None


class DeadlineExceeded(RpcError):
    """DEADLINE_EXCEEDED: no answer in time (the client's own deadlines included)."""


class Unauthenticated(RpcError):
    """UNAUTHENTICATED: missing or bad token."""


class PermissionDenied(RpcError):
    """PERMISSION_DENIED: the token's role may not do this."""


class Cancelled(RpcError):
    """CANCELLED."""


class Internal(RpcError):
    """INTERNAL: the daemon's own failure."""


#: The one mapping from gRPC code to exception class; other codes raise `RpcError`.
ERRORS_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: Compacted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
}

#: The codes after which trying again may work: `acquire` falls back on these.
TRANSIENT_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DATA_LOSS,
})


def from_code(code: grpc.StatusCode, details: str = "", trailers=()) -> RpcError:
    """The exception for a gRPC code (by code only)."""
    return ERRORS_BY_CODE.get(code, RpcError)(code, details, trailers)


def from_rpc_error(err: grpc.RpcError) -> RpcError:
    """A grpc (sync or aio) RpcError as this package's exception, by its code."""
    try:
        code, details = err.code(), err.details() or ""
    except Exception:  # a grpc.RpcError that is not a Call: treat as unreachable
        return Unavailable(grpc.StatusCode.UNAVAILABLE, str(err))
    try:
        trailers = err.trailing_metadata() or ()
    except Exception:
        trailers = ()
    return from_code(code, details, trailers)


def from_status_proto(status) -> RpcError:
    """A google.rpc.Status item (a Session or batch answer) as an exception."""
    code = next((c for c in grpc.StatusCode if c.value[0] == status.code), grpc.StatusCode.UNKNOWN)
    return from_code(code, status.message)
