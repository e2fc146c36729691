"""cbd-client: the Python client of cbd, the circuit-breaker daemon.

    from cbd_client import Client, BreakerOpen

    with Client(["127.0.0.1:7411"]) as client:
        payments = client.breaker("payments.charge")
        with payments:
            charge(card)

See the package README for the API, the fallback policies, errors and leases;
`cbd_client.aio` has the same API for asyncio.
"""

from . import pb
from .client import Admin, Breaker, Client, Guard, Permit, Snapshot, Watch
from .errors import (AlreadyExists, AlreadyReported, BreakerOpen, Cancelled, CbdError, Compacted, DeadlineExceeded,
                     FailedPrecondition, Internal, InvalidArgument, NotFound, PermissionDenied,
                     ResourceExhausted, RpcError, Unauthenticated, Unavailable)
from .types import TLS, Fallback, Outcome, Reported, State

__version__ = "0.1.0"

__all__ = [
    "Admin", "AlreadyExists", "AlreadyReported", "Breaker", "BreakerOpen", "Cancelled", "CbdError", "Client",
    "Compacted", "DeadlineExceeded", "FailedPrecondition", "Fallback", "Guard", "Internal",
    "InvalidArgument", "NotFound", "Outcome", "PermissionDenied", "Permit", "Reported",
    "ResourceExhausted", "RpcError", "Snapshot", "State", "TLS", "Unauthenticated",
    "Unavailable", "Watch", "pb",
]
