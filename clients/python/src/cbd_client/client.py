"""The synchronous client: `Client`, `Breaker`, `Permit`, `Admin` and `watch()`."""

import contextvars
import functools
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Union

import grpc

from . import errors
from ._core import LeaseSlot, LocalBreaker
from ._pb.cbd.v1 import admin_pb2, admin_pb2_grpc, breakers_pb2, breakers_pb2_grpc, types_pb2
from .pb import duration, spec as make_spec
from .types import TLS, Fallback, Outcome, Reported, State, state_of

log = logging.getLogger("cbd_client")

DEFAULT_ACQUIRE_DEADLINE = 0.05  #: seconds; past it the fallback policy decides
DEFAULT_REPORT_DEADLINE = 0.25
DEFAULT_ADMIN_DEADLINE = 5.0
DEFAULT_SPEC_REFRESH = 30.0
DEFAULT_LEASE_FLUSH_INTERVAL = 0.02
SPEC_RETRY = 1.0  # after a failed spec fetch, how soon to try again
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 2.0

# Reconnect quickly after a daemon restart (grpc's default first backoff is 1 s).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 10000),
    ("grpc.keepalive_timeout_ms", 5000),
]


#: What every leased report answers (no daemon answer to carry).
LEASED = Reported("leased", State.CLOSED)


def jitter(d: float) -> float:
    """`d` scaled into [0.8, 1.2) so restarted daemons' clients do not all return at once."""
    return d * (0.8 + 0.4 * random.random())


@dataclass(frozen=True)
class Snapshot:
    """Every matching breaker (cbd.v1.BreakerStatus) at `revision`; events after it
    follow. `resync` is True when it replaces a resume the daemon could no longer
    serve (compacted away): events between the last delivered and `revision` were lost."""

    breakers: list
    revision: int
    resync: bool = False


class Client:
    """A connection to cbd.

    `endpoints` is a list of "host:port" (a single string is accepted too); calls go
    to the first and move to the next after a transient error, or to the leader a
    standby names (DESIGN §11). `token` is sent as
    `authorization: Bearer <token>`; `tls` a `TLS` (None: plaintext).

    `acquire_deadline` (seconds, default 0.05) bounds Acquire; past it, or on a
    transient error, the breaker's fallback policy decides. `default_fallback` applies
    until the breaker's spec is known. `leases` (default True) enables DESIGN §10
    leases for breakers whose spec sets `cache_ttl`. `caller` (default None: none; a
    named token's name then applies) is sent on every Acquire, Report and leased
    outcome, so the daemon attributes failures to it (`min_distinct_callers`,
    `failing_callers`; DESIGN §3.7). Use as a context manager or call `close()`,
    which flushes leased outcomes first.
    """

    def __init__(self, endpoints: Union[str, Sequence[str]], token: Optional[str] = None,
                 tls: Optional[TLS] = None, *, acquire_deadline: float = DEFAULT_ACQUIRE_DEADLINE,
                 report_deadline: float = DEFAULT_REPORT_DEADLINE,
                 default_fallback: Fallback = Fallback.FAIL_OPEN,
                 spec_refresh: float = DEFAULT_SPEC_REFRESH, leases: bool = True,
                 lease_flush_interval: float = DEFAULT_LEASE_FLUSH_INTERVAL,
                 caller: Optional[str] = None):
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        endpoints = list(endpoints)
        if not endpoints:
            raise ValueError("Client needs at least one endpoint")
        if token is not None and (not token or any(c in token for c in "\r\n")):
            raise ValueError("token must be a non-empty single-line string")
        self.endpoints = endpoints
        self.acquire_deadline = acquire_deadline
        self.report_deadline = report_deadline
        self.default_fallback = Fallback(default_fallback)
        self.spec_refresh = spec_refresh
        self.leases = leases
        self.lease_flush_interval = max(0.001, lease_flush_interval)
        # Sent as `caller` on every Acquire, Report and leased outcome ("": none).
        self.caller = caller or ""
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._tls = tls
        self._channels = [self._dial(e, tls) for e in endpoints]
        self._current = 0
        self._lock = threading.Lock()
        self._breakers = {}
        self._session = None
        self._closed = False
        #: Decision counters: per-call RPC, leased, fallback; lease grants and revocations.
        self.stats = {"rpc_decisions": 0, "leased_decisions": 0, "fallback_decisions": 0,
                      "leases_granted": 0, "leases_revoked": 0}
        self.admin = self._admin_class(self)

    @staticmethod
    def _dial(endpoint: str, tls: Optional[TLS]) -> grpc.Channel:
        if tls is None:
            return grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        return grpc.secure_channel(endpoint, _credentials(tls), options=CHANNEL_OPTIONS)

    # -- channels -----------------------------------------------------------------
    def _channel(self) -> grpc.Channel:
        return self._channels[self._current]

    def _breakers_stub(self):
        return breakers_pb2_grpc.BreakersStub(self._channel())

    def _admin_stub(self):
        return admin_pb2_grpc.AdminStub(self._channel())

    def _failed_over(self, err: errors.RpcError) -> None:
        """A transient error: the next call tries the leader a standby named, else
        the next endpoint."""
        if not err.transient:
            return
        leader = err.leader if isinstance(err, errors.Unavailable) else None
        with self._lock:
            if leader:
                target = leader.split("://", 1)[-1].rstrip("/")
                if target not in self.endpoints:
                    # Learned from a standby: dialled like the configured ones.
                    self.endpoints.append(target)
                    self._channels.append(self._dial(target, self._tls))
                self._current = self.endpoints.index(target)
            elif len(self._channels) > 1:
                self._current = (self._current + 1) % len(self._channels)

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now."""
        return self.endpoints[self._current]

    # -- public -------------------------------------------------------------------
    def breaker(self, name: str) -> "Breaker":
        """The handle of breaker `name` (one per name per client; cheap to call again)."""
        with self._lock:
            b = self._breakers.get(name)
            if b is None:
                b = self._breakers[name] = self._breaker_class(self, name)
            return b

    def watch(self, prefix: str = "", names: Sequence[str] = (), start_revision: Optional[int] = None,
              progress_interval: float = 5.0) -> "Watch":
        """Follow changes; see `Watch`. Without `start_revision` a `Snapshot` comes first."""
        return Watch(self, prefix, names, start_revision, progress_interval)

    def wait_for_ready(self, timeout: float = 10.0) -> None:
        """Waits until the current endpoint's channel is connected; raises
        `Unavailable` after `timeout` seconds."""
        try:
            grpc.channel_ready_future(self._channel()).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise errors.Unavailable(grpc.StatusCode.UNAVAILABLE,
                                     f"{self.endpoints[self._current]} not ready in {timeout} s") from None

    def flush(self, timeout: float = 1.0) -> bool:
        """Sends every leased outcome counted so far and waits (at most `timeout`
        seconds) until the daemon answered them. True when nothing is left unanswered."""
        if self._session is None:
            return True
        return self._session.flush(timeout)

    def close(self) -> None:
        """Flushes leased outcomes (at most a second), ends the session, closes channels."""
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            self._session.close()
        for ch in self._channels:
            ch.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _want_lease(self, breaker: "Breaker") -> None:
        if not self.leases or self._closed:
            return
        slot = breaker._lease
        with slot.lock:
            if slot.wanted:
                return
            slot.wanted = True
        with self._lock:
            if self._session is None:
                self._session = self._new_session()
        self._session.want(breaker)

    def _new_session(self):
        from ._lease_sync import LeaseSession

        return LeaseSession(self)


def _credentials(tls: TLS) -> grpc.ChannelCredentials:
    def read(path):
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    if (tls.cert is None) != (tls.key is None):
        raise ValueError("TLS cert and key go together")
    return grpc.ssl_channel_credentials(read(tls.ca), read(tls.key), read(tls.cert))


class Permit:
    """The right to make one call; report its outcome exactly once with `success()`,
    `failure()` or `ignore()` (or `report()`). The duration reported is the time since
    `acquire()` (the daemon counts a success slower than `slow_call_duration` as slow).

    `state` is the breaker's state as the decider saw it (None under fail-open);
    `fallback` is None when the daemon (or a lease) decided, else the policy that did.
    `kind` says who decided: "daemon" (a per-call Acquire), "leased" (a lease, no
    RPC), "local" (the LOCAL fallback's breaker), "unguarded" (fail open); "done"
    once reported.
    """

    __slots__ = ("breaker", "kind", "data", "state", "fallback", "acquired_at")

    def __init__(self, breaker, kind, data, state, fallback=None):
        self.breaker, self.kind, self.data = breaker, kind, data
        self.state, self.fallback = state, fallback
        self.acquired_at = time.monotonic()

    def success(self) -> Reported:
        """The call went well."""
        return self.report(Outcome.SUCCESS, time.monotonic() - self.acquired_at)

    def failure(self) -> Reported:
        """The dependency failed."""
        return self.report(Outcome.FAILURE, time.monotonic() - self.acquired_at)

    def ignore(self) -> Reported:
        """Count nothing (the caller's own fault, a cancellation); frees a probe slot."""
        return self.report(Outcome.IGNORED, None)

    def report(self, outcome: Outcome, duration_s: Optional[float] = None) -> Reported:
        """Reports `outcome` with `duration_s` seconds (None: unknown, never slow).
        Raises `AlreadyReported` on a second report of the same permit, and a typed
        `RpcError` when the daemon's Report fails."""
        kind, self.kind = self.kind, "done"
        if kind == "done":
            raise errors.AlreadyReported(f"permit of {self.breaker.name!r} already reported")
        return self.breaker._report(kind, self.data, Outcome(outcome), duration_s)

    def __repr__(self):
        return f"Permit({self.breaker.name!r}, {self.kind}, state={self.state!r})"


class Breaker:
    """A handle on one named breaker (from `Client.breaker`).

    Ways to guard a call: `breaker.call(fn, *args)`, the decorator `@breaker`, the
    context manager `with breaker:`, or the two-step `permit = breaker.acquire()` then
    `permit.success()` / `failure()` / `ignore()`. The wrappers report SUCCESS when the
    call returns, FAILURE when it raises an `Exception` (re-raised), IGNORED on other
    `BaseException`s (KeyboardInterrupt...), with the call's duration; a failing report
    is logged, never raised over the call's own result. A rejection raises
    `BreakerOpen` before the call runs.
    """

    _permit_class = Permit

    def __init__(self, client: Client, name: str):
        self.client = client
        self.name = name
        self._spec = None
        self._spec_at: Optional[float] = None
        self._spec_in_flight = False
        self._local: Optional[LocalBreaker] = None
        self._local_epoch = 0
        self._lease = LeaseSlot()
        self._permits = contextvars.ContextVar(f"cbd-permits-{name}", default=())
        self._mu = threading.Lock()
        self._guard = Guard(self, ())

    @property
    def leased(self) -> bool:
        """Whether a valid lease decides this breaker's calls now (no RPC)."""
        return self._lease.holds()

    # -- spec and fallback --------------------------------------------------------
    @property
    def spec(self):
        """The last cbd.v1.BreakerSpec learned from the daemon, or None."""
        return self._spec

    @property
    def fallback(self) -> Fallback:
        """The policy in force now: the known spec's, else the client's default."""
        s = self._spec
        if s is None or s.fallback == types_pb2.FALLBACK_UNSPECIFIED:
            return self.client.default_fallback if s is None else Fallback.FAIL_OPEN
        return Fallback(s.fallback)

    def refresh_spec(self, timeout: float = DEFAULT_ADMIN_DEADLINE):
        """Fetches the spec now (Admin GetBreaker) and remembers it; returns it."""
        self._spec_at = time.monotonic()
        status = self.client.admin.get_breaker(self.name, timeout=timeout)
        self._spec = status.spec
        return status.spec

    def _spec_due(self) -> bool:
        """Whether a background GetBreaker is due now: the first time, then every
        `spec_refresh` (every second while unknown); True marks one in flight."""
        with self._mu:
            if self._spec_in_flight:
                return False
            every = self.client.spec_refresh if self._spec is not None else SPEC_RETRY
            if self._spec_at is not None and time.monotonic() - self._spec_at < every:
                return False
            self._spec_in_flight = True
            self._spec_at = time.monotonic()
            return True

    def _spec_fetch_if_due(self) -> None:
        """After a daemon answer: learn the spec (its fallback policy) in the background."""
        if not self._spec_due():
            return
        fut = self.client._admin_stub().GetBreaker.future(
            admin_pb2.GetBreakerRequest(name=self.name), timeout=DEFAULT_ADMIN_DEADLINE,
            metadata=self.client.metadata)

        def done(f):
            try:
                self._spec = f.result().breaker.spec
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    self._spec = None
                log.debug("could not fetch the spec of %s: %s", self.name, e)
            except Exception as e:  # cancelled at close
                log.debug("spec fetch of %s ended: %s", self.name, e)
            finally:
                self._spec_in_flight = False

        fut.add_done_callback(done)

    def _daemon_answered(self) -> None:
        if self._local is not None:
            with self._mu:
                if self._local is not None:
                    self._local = None
                    self._local_epoch += 1
                    log.info("cbd answers again: local fallback breaker of %s discarded", self.name)

    def _fall_back(self, cause: Exception) -> Permit:
        self.client.stats["fallback_decisions"] += 1
        policy = self.fallback
        if policy == Fallback.FAIL_CLOSED:
            log.warning("cbd unreachable (%s): %s fails closed", cause, self.name)
            raise errors.BreakerOpen(self.name, State.OPEN, None, Fallback.FAIL_CLOSED)
        if policy == Fallback.LOCAL:
            with self._mu:
                if self._local is None:
                    self._local = LocalBreaker.from_spec(self._spec)
                local, epoch = self._local, self._local_epoch
            allowed, state, retry_after, probe = local.acquire()
            log.warning("cbd unreachable (%s): local breaker of %s decided %s", cause, self.name,
                        "allow" if allowed else "reject")
            if not allowed:
                raise errors.BreakerOpen(self.name, state, retry_after, Fallback.LOCAL)
            return self._permit_class(self, "local", (local, epoch, probe), state, Fallback.LOCAL)
        log.warning("cbd unreachable (%s): %s fails open", cause, self.name)
        return self._permit_class(self, "unguarded", None, None, Fallback.FAIL_OPEN)

    # -- the two steps --------------------------------------------------------------
    def acquire(self) -> Permit:
        """May I call? Returns a `Permit`, or raises `BreakerOpen` (with `retry_after`).

        Under a valid lease this decides locally with no RPC. Otherwise it asks the
        daemon within the client's `acquire_deadline`; past it, or on a transient
        error, the fallback policy decides. Other errors (NotFound, InvalidArgument,
        PermissionDenied, ...) are raised as they are.
        """
        permit = self._leased_permit()
        if permit is not None:
            return permit
        client = self.client
        try:
            answer = client._breakers_stub().Acquire(
                breakers_pb2.AcquireRequest(name=self.name, caller=client.caller),
                timeout=client.acquire_deadline,
                metadata=client.metadata)
        except grpc.RpcError as e:
            return self._acquire_failed(e)
        return self._acquired(answer)

    def _report(self, kind, data, outcome: Outcome, duration_s: Optional[float]) -> Reported:
        done = self._report_here(kind, data, outcome, duration_s)
        if done is not None:
            return done
        client = self.client
        try:
            answer = client._breakers_stub().Report(
                self._report_request(data, outcome, duration_s, client.caller),
                timeout=client.report_deadline,
                metadata=client.metadata)
        except grpc.RpcError as e:
            raise self._rpc_failed(e) from None
        return self._reported(answer)

    # The decisions around the RPCs, shared with cbd_client.aio.
    def _leased_permit(self) -> Optional[Permit]:
        ticket = self._lease.ticket()
        return None if ticket is None else self._permit_class(self, "leased", ticket, State.CLOSED)

    def _acquire_failed(self, e: grpc.RpcError) -> Permit:
        err = errors.from_rpc_error(e)
        if err.transient:
            self.client._failed_over(err)
            return self._fall_back(err)
        self._daemon_answered()
        raise err from None

    def _acquired(self, answer) -> Permit:
        client = self.client
        self._daemon_answered()
        self._spec_fetch_if_due()
        client.stats["rpc_decisions"] += 1
        if answer.HasField("valid_until"):
            client._want_lease(self)  # CLOSED and cache_ttl set: the next calls can be leased
        state = state_of(answer.state)
        if answer.allowed:
            return self._permit_class(self, "daemon", answer.permit, state)
        retry = answer.retry_after.ToNanoseconds() / 1e9 if answer.HasField("retry_after") else None
        raise errors.BreakerOpen(self.name, state, retry)

    def _report_here(self, kind, data, outcome, duration_s) -> Optional[Reported]:
        """Reports that need no RPC (leased, local, fail-open); None for a daemon permit."""
        if kind == "leased":
            self._lease.record(data, outcome, duration_s)
            return LEASED
        if kind == "local":
            local, epoch, probe = data
            if epoch != self._local_epoch:
                return Reported("local", local.state, stale=True)
            return Reported("local", local.report(outcome, probe))
        if kind != "daemon":
            return Reported("nowhere")
        return None

    @staticmethod
    def _report_request(permit: bytes, outcome: Outcome, duration_s: Optional[float],
                        caller: str = ""):
        request = breakers_pb2.ReportRequest(permit=permit, outcome=int(outcome), caller=caller)
        if duration_s is not None:
            request.duration.CopyFrom(duration(max(0.0, duration_s)))
        return request

    def _rpc_failed(self, e: grpc.RpcError) -> errors.RpcError:
        err = errors.from_rpc_error(e)
        self.client._failed_over(err)
        return err

    def _reported(self, answer) -> Reported:
        self._daemon_answered()
        return Reported("daemon", state_of(answer.state), answer.stale, answer.generation)

    # -- wrappers -----------------------------------------------------------------
    def call(self, fn, *args, **kwargs):
        """Runs `fn(*args, **kwargs)` guarded by this breaker; returns its result."""
        return self._guard.call(fn, *args, **kwargs)

    def __call__(self, fn):
        """`@breaker` decorates `fn` so that every call of it goes through `call`."""
        return self._guard(fn)

    def __enter__(self) -> Permit:
        return self._guard.__enter__()

    def __exit__(self, exc_type, exc, tb):
        return self._guard.__exit__(exc_type, exc, tb)

    def ignoring(self, *exceptions) -> "Guard":
        """The same wrappers (`call`, decorator, `with`), but an exception of one of
        these types is reported IGNORED (the caller's own fault), not FAILURE:
        `@breaker.ignoring(KeyError)`."""
        return Guard(self, tuple(exceptions))

    def __repr__(self):
        return f"Breaker({self.name!r})"


class Guard:
    """The call wrappers of a breaker (see `Breaker`), with the exception types that
    count as IGNORED instead of FAILURE."""

    __slots__ = ("breaker", "ignore")

    def __init__(self, breaker: Breaker, ignore: tuple):
        self.breaker, self.ignore = breaker, ignore

    def _outcome(self, exc_type) -> Outcome:
        if exc_type is None:
            return Outcome.SUCCESS
        if issubclass(exc_type, Exception) and not (self.ignore and issubclass(exc_type, self.ignore)):
            return Outcome.FAILURE
        return Outcome.IGNORED  # KeyboardInterrupt, cancellation, or told to ignore

    def _settle(self, permit: Permit, exc_type) -> None:
        outcome = self._outcome(exc_type)
        elapsed = None if outcome == Outcome.IGNORED else time.monotonic() - permit.acquired_at
        try:
            permit.report(outcome, elapsed)
        except errors.CbdError as e:  # never raised over the call's own result
            log.debug("report to %s failed: %s", self.breaker.name, e)

    def call(self, fn, *args, **kwargs):
        """Runs `fn(*args, **kwargs)` guarded by the breaker; returns its result."""
        slot = self.breaker._lease
        ticket = slot.ticket()
        if ticket is not None:
            # The leased hot path: no Permit, and no clock read for the duration
            # when the grant has no slow threshold.
            start = time.monotonic() if ticket[2] is not None else None
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                outcome = self._outcome(type(e))
                slot.record(ticket, outcome, None if start is None else time.monotonic() - start)
                raise
            slot.success(ticket, None if start is None else time.monotonic() - start)
            return result
        permit = self.breaker.acquire()
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            self._settle(permit, type(e))
            raise
        self._settle(permit, None)
        return result

    def __call__(self, fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            return self.call(fn, *args, **kwargs)

        return guarded

    def __enter__(self) -> Permit:
        permit = self.breaker.acquire()
        stack = self.breaker._permits
        stack.set(stack.get() + (permit,))
        return permit

    def __exit__(self, exc_type, exc, tb):
        stack = self.breaker._permits
        permits = stack.get()
        permit = permits[-1]
        stack.set(permits[:-1])
        if permit.kind != "done":  # else the block reported itself
            self._settle(permit, exc_type)
        return False


class Admin:
    """The Admin service, typed errors included. `client.admin.put_breaker(name,
    consecutive_failures=2, open_duration=30)` (fields as for `pb.spec`)."""

    def __init__(self, client: Client):
        self._client = client

    def _call(self, method, request, timeout):
        stub = self._client._admin_stub()
        try:
            return getattr(stub, method)(request, timeout=timeout, metadata=self._client.metadata)
        except grpc.RpcError as e:
            err = errors.from_rpc_error(e)
            self._client._failed_over(err)
            raise err from None

    def put_breaker(self, name: str, spec=None, *, timeout: float = DEFAULT_ADMIN_DEADLINE, **fields):
        """Creates or updates a breaker; `spec` a cbd.v1.BreakerSpec, or keyword fields."""
        if spec is None:
            spec = make_spec(**fields)
        elif fields:
            raise TypeError("pass either spec or keyword fields")
        return self._call("PutBreaker", admin_pb2.PutBreakerRequest(name=name, spec=spec), timeout)

    def get_breaker(self, name: str, *, timeout: float = DEFAULT_ADMIN_DEADLINE):
        """The breaker's cbd.v1.BreakerStatus (spec with defaults filled in, counts)."""
        return self._call("GetBreaker", admin_pb2.GetBreakerRequest(name=name), timeout).breaker

    def delete_breaker(self, name: str, *, timeout: float = DEFAULT_ADMIN_DEADLINE):
        return self._call("DeleteBreaker", admin_pb2.DeleteBreakerRequest(name=name), timeout)

    def set_override(self, name: str, override: int, *, reason: str = "",
                     duration: Optional[float] = None, timeout: float = DEFAULT_ADMIN_DEADLINE):
        """Sets an override (types_pb2.OVERRIDE_*); OVERRIDE_UNSPECIFIED clears it.
        `reason` goes to the event log with who made the change; `duration` (seconds)
        makes the override clear itself after that long (None: until cleared)."""
        request = admin_pb2.SetOverrideRequest(name=name, override=override, reason=reason)
        if duration is not None:
            request.duration.FromNanoseconds(int(duration * 1e9))
        return self._call("SetOverride", request, timeout)

    def reset_breaker(self, name: str, *, reason: str = "", timeout: float = DEFAULT_ADMIN_DEADLINE):
        """Back to CLOSED with an empty window; `reason` as for `set_override`."""
        return self._call("ResetBreaker", admin_pb2.ResetBreakerRequest(name=name, reason=reason), timeout)

    def status(self, *, timeout: float = DEFAULT_ADMIN_DEADLINE):
        """The daemon's cbd.v1.StatusResponse: version, revisions, breakers, sessions, leases."""
        return self._call("Status", admin_pb2.StatusRequest(), timeout)

    def list_breakers(self, prefix: str = "", *, page_size: int = 0, page_token: str = "",
                      timeout: float = DEFAULT_ADMIN_DEADLINE) -> List:
        """Every breaker under `prefix`, in name order, fetching page after page of
        `page_size` (0: the daemon's 100) from `page_token` (empty: the first)."""
        out, token = [], page_token
        while True:
            resp = self._call("ListBreakers", admin_pb2.ListBreakersRequest(
                prefix=prefix, page_size=page_size, page_token=token), timeout)
            out.extend(resp.breakers)
            token = resp.next_page_token
            if not token:
                return out


class Watch:
    """An iterator over changes: a `Snapshot` first (without `start_revision`), then
    cbd.v1.Event messages in revision order. After a transient error (daemon
    restarted, connection lost) it reconnects with backoff and resumes from the last
    revision seen + 1, so nothing is lost or repeated; a resume the daemon can no
    longer serve (compacted) yields a fresh `Snapshot(resync=True)`. Other errors are
    raised typed. `revision` is the last revision delivered or confirmed by progress.
    `close()` ends it.
    """

    def __init__(self, client, prefix, names, start_revision, progress_interval):
        if start_revision is not None and start_revision < 1:
            raise ValueError("start_revision must be >= 1")
        self._client = client
        self._filter = breakers_pb2.WatchFilter(prefix=prefix, names=list(names))
        self._progress = progress_interval
        # The next revision wanted; None: start with a snapshot.
        self._next = start_revision
        self.revision = (start_revision - 1) if start_revision else 0
        self._call = None
        self._closed = False
        self._resync = False
        self._snapshot = []
        self._deadline = None
        self.reconnects = 0

    def __iter__(self) -> Iterator:
        return self

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self):
        """The request of the next stream (from the next revision wanted, if known)."""
        req = breakers_pb2.WatchRequest(filter=self._filter, progress_interval=duration(self._progress))
        if self._next is not None:
            req.start_revision = self._next
        self._snapshot = []
        return req

    def _open(self):
        self._call = self._client._breakers_stub().Watch(
            self._request(), metadata=self._client.metadata, wait_for_ready=self.reconnects > 0)

    def _after_error(self, err: errors.RpcError) -> bool:
        """After the stream failed with `err`: True to reconnect (after a backoff),
        False to start over at once; raises when the error is not transient."""
        self._call = None
        if isinstance(err, errors.Compacted) and self._next is not None and self.reconnects:
            self._next, self._resync = None, True  # lost events: start over from a snapshot
            return False
        if not err.transient:
            raise err
        self._client._failed_over(err)
        self.reconnects += 1
        return True

    def next(self, timeout: Optional[float] = None):
        """The next `Snapshot` or event, like `next(watch)`; with `timeout` (seconds)
        raises `TimeoutError` when only progress messages came for that long (checked
        as each message arrives, so ask for a `progress_interval` below it)."""
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return self.__next__()
        finally:
            self._deadline = None

    def __next__(self):
        backoff = BACKOFF_FIRST
        while True:
            if self._closed:
                raise StopIteration
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise TimeoutError("no watch item in time")
            if self._call is None:
                self._open()
            try:
                msg = next(self._call)
            except StopIteration:
                err = errors.Unavailable(grpc.StatusCode.UNAVAILABLE, "watch stream ended")
            except grpc.RpcError as e:
                err = errors.from_rpc_error(e)
            else:
                backoff = BACKOFF_FIRST
                item = self._handle(msg)
                if item is not None:
                    return item
                continue
            if self._closed:
                raise StopIteration
            if self._after_error(err):
                time.sleep(jitter(backoff))
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _handle(self, msg):
        kind = msg.WhichOneof("kind")
        if kind == "event":
            if msg.event.revision < (self._next or 0):
                return None  # never repeat one already delivered
            self.revision = msg.event.revision
            self._next = self.revision + 1
            return msg.event
        if kind == "progress_revision":
            if msg.progress_revision >= self.revision:
                self.revision = msg.progress_revision
                self._next = self.revision + 1
            return None
        if kind == "snapshot":
            self._snapshot.extend(msg.snapshot.breakers)
            if not msg.snapshot.done:
                return None
            snap = Snapshot(list(self._snapshot), msg.snapshot.revision, self._resync)
            self._snapshot, self._resync = [], False
            self.revision = snap.revision
            self._next = snap.revision + 1
            return snap
        return None


# Set here, after the classes exist; cbd_client.aio's Client sets its own.
Client._breaker_class = Breaker
Client._admin_class = Admin
