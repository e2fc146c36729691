"""A thin, idiomatic Python wrapper over cbd.v1.Breakers (Acquire, then Report).

    with breaker(stub, "payments.charge"):
        charge(card)

Acquires a permit (raises BreakerOpen when the daemon rejects the call), then reports
OUTCOME_SUCCESS when the block exits normally, OUTCOME_FAILURE when it raises (the
exception is re-raised, and a failing Report never hides it), with the block's
duration; OUTCOME_IGNORED (not counted) on KeyboardInterrupt and other cancellations.
Needs the stubs generated from proto/ (the `cbd.v1` package) on sys.path.
"""

import contextlib
import datetime
import time

import grpc
from cbd.v1 import breakers_pb2, types_pb2
from google.protobuf import duration_pb2


class BreakerOpen(Exception):
    """The daemon rejected the call. `retry_after` is a timedelta, or None when
    unknown (forced open)."""

    def __init__(self, name, state, retry_after):
        super().__init__(f"breaker {name!r} is {types_pb2.State.Name(state)}; retry after {retry_after}")
        self.name, self.state, self.retry_after = name, state, retry_after


@contextlib.contextmanager
def breaker(stub, name, timeout=5.0):
    """Guards the `with` block with the breaker `name`. Yields the AcquireResponse."""
    decision = stub.Acquire(breakers_pb2.AcquireRequest(name=name), timeout=timeout)
    if not decision.allowed:
        retry = decision.retry_after.ToTimedelta() if decision.HasField("retry_after") else None
        raise BreakerOpen(name, decision.state, retry)
    started = time.monotonic()

    def report(outcome, quiet=False):
        took = duration_pb2.Duration()
        took.FromTimedelta(datetime.timedelta(seconds=time.monotonic() - started))
        request = breakers_pb2.ReportRequest(permit=decision.permit, outcome=outcome, duration=took)
        try:
            stub.Report(request, timeout=timeout)
        except grpc.RpcError:
            if not quiet:  # never hide the caller's own exception behind ours
                raise

    try:
        yield decision
    except Exception:
        report(types_pb2.OUTCOME_FAILURE, quiet=True)
        raise
    except BaseException:  # KeyboardInterrupt, GeneratorExit...: a cancellation, not counted
        report(types_pb2.OUTCOME_IGNORED, quiet=True)
        raise
    report(types_pb2.OUTCOME_SUCCESS)
