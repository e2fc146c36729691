"""The asyncio client: the same surface as `cbd_client`, on grpc.aio, with every RPC
awaited.

    from cbd_client import BreakerOpen
    from cbd_client.aio import Client

    async with Client(["127.0.0.1:7411"]) as client:
        payments = client.breaker("payments.charge")
        async with payments:
            await charge(card)

`await breaker.call(fn, *args)` (fn a coroutine function, or a plain one), the
decorator `@breaker` on an `async def`, `async with breaker:`, the two-step
`permit = await breaker.acquire()` then `await permit.success()`, `await
client.admin.put_breaker(...)`, and `async for item in client.watch(...)`. Decisions,
fallback policies, errors and leases are those of the sync client (one asyncio task
owns the lease Session stream). Create and use a client inside one event loop.
"""

import asyncio
import functools
import logging
import time
from typing import List, Optional

import grpc

from . import client as _sync
from . import errors
from ._lease_sync import SessionState
from ._pb.cbd.v1 import admin_pb2, breakers_pb2
from .types import Outcome, Reported

log = logging.getLogger("cbd_client")

__all__ = ["Admin", "Breaker", "Client", "Guard", "Permit", "Watch"]


class Client(_sync.Client):
    """An asyncio connection to cbd: the arguments of `cbd_client.Client`.
    Use `async with Client(...) as client:` or `await client.close()`."""

    @staticmethod
    def _dial(endpoint, tls):
        if tls is None:
            return grpc.aio.insecure_channel(endpoint, options=_sync.CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(endpoint, _sync._credentials(tls), options=_sync.CHANNEL_OPTIONS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tasks = set()

    def _spawn(self, coro) -> None:
        """Runs `coro` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_session(self):
        return _AioLeaseSession(self)

    async def wait_for_ready(self, timeout: float = 10.0) -> None:
        """Waits until the current endpoint's channel is connected; raises
        `Unavailable` after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._channel().channel_ready(), timeout)
        except asyncio.TimeoutError:
            raise errors.Unavailable(grpc.StatusCode.UNAVAILABLE,
                                     f"{self.endpoints[self._current]} not ready in {timeout} s") from None

    def watch(self, prefix: str = "", names=(), start_revision: Optional[int] = None,
              progress_interval: float = 5.0) -> "Watch":
        """Follow changes; see `Watch` (an async iterator)."""
        return Watch(self, prefix, names, start_revision, progress_interval)

    async def flush(self, timeout: float = 1.0) -> bool:
        """Sends every leased outcome counted so far and waits (at most `timeout`
        seconds) until the daemon answered them. True when nothing is left unanswered."""
        if self._session is None:
            return True
        return await self._session.flush(timeout)

    async def close(self) -> None:
        """Flushes leased outcomes (at most a second), ends the session, closes channels."""
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            await self._session.close()
        for task in list(self._tasks):
            task.cancel()
        for ch in self._channels:
            await ch.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def __enter__(self):
        raise TypeError("cbd_client.aio.Client is used with `async with`")

    def __exit__(self, *exc):  # pragma: no cover - __enter__ raises
        return False


class Permit(_sync.Permit):
    """An awaitable `cbd_client.Permit`: `await permit.success()` / `failure()` /
    `ignore()` / `report(outcome, duration_s)`."""

    __slots__ = ()

    async def success(self) -> Reported:
        """The call went well."""
        return await self.report(Outcome.SUCCESS, time.monotonic() - self.acquired_at)

    async def failure(self) -> Reported:
        """The dependency failed."""
        return await self.report(Outcome.FAILURE, time.monotonic() - self.acquired_at)

    async def ignore(self) -> Reported:
        """Count nothing (the caller's own fault, a cancellation); frees a probe slot."""
        return await self.report(Outcome.IGNORED, None)

    async def report(self, outcome: Outcome, duration_s: Optional[float] = None) -> Reported:
        """As `cbd_client.Permit.report`, awaited."""
        kind, self.kind = self.kind, "done"
        if kind == "done":
            raise errors.AlreadyReported(f"permit of {self.breaker.name!r} already reported")
        return await self.breaker._report(kind, self.data, Outcome(outcome), duration_s)


class Breaker(_sync.Breaker):
    """An asyncio handle on one breaker (from `Client.breaker`); see `cbd_client.Breaker`.
    `await breaker.call(fn, *args)`, `@breaker` on an `async def`, `async with breaker:`,
    `permit = await breaker.acquire()`."""

    _permit_class = Permit

    def __init__(self, client, name):
        super().__init__(client, name)
        self._guard = Guard(self, ())

    async def refresh_spec(self, timeout: float = _sync.DEFAULT_ADMIN_DEADLINE):
        """Fetches the spec now (Admin GetBreaker) and remembers it; returns it."""
        self._spec_at = time.monotonic()
        status = await self.client.admin.get_breaker(self.name, timeout=timeout)
        self._spec = status.spec
        return status.spec

    def _spec_fetch_if_due(self) -> None:
        if self._spec_due():
            self.client._spawn(self._fetch_spec())

    async def _fetch_spec(self):
        try:
            answer = await self.client._admin_stub().GetBreaker(
                admin_pb2.GetBreakerRequest(name=self.name), timeout=_sync.DEFAULT_ADMIN_DEADLINE,
                metadata=self.client.metadata)
            self._spec = answer.breaker.spec
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                self._spec = None
            log.debug("could not fetch the spec of %s: %s", self.name, e)
        finally:
            self._spec_in_flight = False

    async def acquire(self) -> Permit:
        """May I call? As `cbd_client.Breaker.acquire`, awaited (no RPC under a lease)."""
        permit = self._leased_permit()
        if permit is not None:
            return permit
        client = self.client
        try:
            answer = await client._breakers_stub().Acquire(
                breakers_pb2.AcquireRequest(name=self.name, caller=client.caller),
                timeout=client.acquire_deadline,
                metadata=client.metadata)
        except grpc.RpcError as e:
            return self._acquire_failed(e)
        return self._acquired(answer)

    async def _report(self, kind, data, outcome, duration_s) -> Reported:
        done = self._report_here(kind, data, outcome, duration_s)
        if done is not None:
            return done
        client = self.client
        try:
            answer = await client._breakers_stub().Report(
                self._report_request(data, outcome, duration_s, client.caller),
                timeout=client.report_deadline,
                metadata=client.metadata)
        except grpc.RpcError as e:
            raise self._rpc_failed(e) from None
        return self._reported(answer)

    async def call(self, fn, *args, **kwargs):
        """Awaits `fn(*args, **kwargs)` (a plain function's result is used as is)
        guarded by this breaker; returns its result."""
        return await self._guard.call(fn, *args, **kwargs)

    def __call__(self, fn):
        """`@breaker` on an `async def`: every call of it goes through `call`."""
        return self._guard(fn)

    def ignoring(self, *exceptions) -> "Guard":
        """As `cbd_client.Breaker.ignoring`: these exception types report IGNORED."""
        return Guard(self, tuple(exceptions))

    async def __aenter__(self) -> Permit:
        return await self._guard.__aenter__()

    async def __aexit__(self, exc_type, exc, tb):
        return await self._guard.__aexit__(exc_type, exc, tb)

    def __enter__(self):
        raise TypeError("an asyncio breaker is used with `async with`")


class Guard(_sync.Guard):
    """The asyncio call wrappers of a breaker, with the exception types that count as
    IGNORED (asyncio.CancelledError, a BaseException, is IGNORED too)."""

    __slots__ = ()

    async def _settle_async(self, permit: Permit, exc_type) -> None:
        outcome = self._outcome(exc_type)
        elapsed = None if outcome == Outcome.IGNORED else time.monotonic() - permit.acquired_at
        try:
            await permit.report(outcome, elapsed)
        except errors.CbdError as e:  # never raised over the call's own result
            log.debug("report to %s failed: %s", self.breaker.name, e)

    async def call(self, fn, *args, **kwargs):
        slot = self.breaker._lease
        ticket = slot.ticket()
        if ticket is not None:  # the leased hot path, as in cbd_client.Guard.call
            start = time.monotonic() if ticket[2] is not None else None
            try:
                result = fn(*args, **kwargs)
                if hasattr(result, "__await__"):
                    result = await result
            except BaseException as e:
                outcome = self._outcome(type(e))
                slot.record(ticket, outcome, None if start is None else time.monotonic() - start)
                raise
            slot.success(ticket, None if start is None else time.monotonic() - start)
            return result
        permit = await self.breaker.acquire()
        try:
            result = fn(*args, **kwargs)
            if hasattr(result, "__await__"):
                result = await result
        except BaseException as e:
            await self._settle_async(permit, type(e))
            raise
        await self._settle_async(permit, None)
        return result

    def __call__(self, fn):
        @functools.wraps(fn)
        async def guarded(*args, **kwargs):
            return await self.call(fn, *args, **kwargs)

        return guarded

    async def __aenter__(self) -> Permit:
        permit = await self.breaker.acquire()
        stack = self.breaker._permits
        stack.set(stack.get() + (permit,))
        return permit

    async def __aexit__(self, exc_type, exc, tb):
        stack = self.breaker._permits
        permits = stack.get()
        permit = permits[-1]
        stack.set(permits[:-1])
        if permit.kind != "done":  # else the block reported itself
            await self._settle_async(permit, exc_type)
        return False


class Admin(_sync.Admin):
    """The Admin service, awaited: `await client.admin.put_breaker(name, ...)`; the
    methods and typed errors of `cbd_client.Admin`."""

    async def _call(self, method, request, timeout):
        stub = self._client._admin_stub()
        try:
            return await getattr(stub, method)(request, timeout=timeout, metadata=self._client.metadata)
        except grpc.RpcError as e:
            err = errors.from_rpc_error(e)
            self._client._failed_over(err)
            raise err from None

    async def get_breaker(self, name: str, *, timeout: float = _sync.DEFAULT_ADMIN_DEADLINE):
        """The breaker's cbd.v1.BreakerStatus (spec with defaults filled in, counts)."""
        return (await self._call("GetBreaker", admin_pb2.GetBreakerRequest(name=name), timeout)).breaker

    async def list_breakers(self, prefix: str = "", *, page_size: int = 0, page_token: str = "",
                            timeout: float = _sync.DEFAULT_ADMIN_DEADLINE) -> List:
        """Every breaker under `prefix`, in name order (all pages from `page_token`)."""
        out, token = [], page_token
        while True:
            resp = await self._call("ListBreakers", admin_pb2.ListBreakersRequest(
                prefix=prefix, page_size=page_size, page_token=token), timeout)
            out.extend(resp.breakers)
            token = resp.next_page_token
            if not token:
                return out


class Watch(_sync.Watch):
    """An async iterator over changes, resuming as `cbd_client.Watch` does:
    `async for item in client.watch(prefix="payments.")`, or `await watch.next(timeout)`."""

    def __aiter__(self):
        return self

    def __iter__(self):
        raise TypeError("an asyncio watch is used with `async for`")

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()

    async def next(self, timeout: Optional[float] = None):
        """As `cbd_client.Watch.next`, awaited."""
        self._deadline = None if timeout is None else time.monotonic() + timeout
        try:
            return await self.__anext__()
        finally:
            self._deadline = None

    async def __anext__(self):
        backoff = _sync.BACKOFF_FIRST
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise TimeoutError("no watch item in time")
            if self._call is None:
                self._open()
            try:
                msg = await self._call.read()
            except grpc.RpcError as e:
                err = errors.from_rpc_error(e)
            except asyncio.CancelledError:
                if self._closed:
                    raise StopAsyncIteration from None
                raise
            else:
                if msg is grpc.aio.EOF:
                    err = errors.Unavailable(grpc.StatusCode.UNAVAILABLE, "watch stream ended")
                else:
                    backoff = _sync.BACKOFF_FIRST
                    item = self._handle(msg)
                    if item is not None:
                        return item
                    continue
            if self._closed:
                raise StopAsyncIteration
            if self._after_error(err):
                await asyncio.sleep(_sync.jitter(backoff))
                backoff = min(backoff * 2, _sync.BACKOFF_MAX)


class _AioLeaseSession(SessionState):
    """The asyncio client's session: one task owns the stream (with a reader task for
    the answers) and flushes and renews every flush interval."""

    def __init__(self, client):
        super().__init__(client)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._flush()
            if not self.has_unsent():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(left, self.client.lease_flush_interval))

    async def close(self):
        await self.flush(1.0)
        with self.lock:
            self.closed = True
            if self.requests is not None:
                self.requests.put_nowait(None)
        try:
            await asyncio.wait_for(self.task, 2.0)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass

    async def _run(self):
        backoff = _sync.BACKOFF_FIRST
        while not self.closed:
            requests = asyncio.Queue()

            async def outgoing(q=requests):
                while True:
                    item = await q.get()
                    if item is None:
                        return
                    yield item

            try:
                call = self.client._breakers_stub().Session(
                    outgoing(), metadata=self.client.metadata, wait_for_ready=True)
            except Exception as e:  # the channel is closed
                log.debug("session could not start: %s", e)
                return
            self._opened(requests)
            reader = asyncio.ensure_future(self._read(call))
            while not reader.done() and not self.closed:
                await asyncio.sleep(self.client.lease_flush_interval)
                self._flush()
                self._renew()
            if self.closed:
                try:
                    await asyncio.wait_for(reader, 1.0)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass
                call.cancel()
                return
            backoff = self._next_backoff(backoff)
            await asyncio.sleep(_sync.jitter(backoff))

    async def _read(self, call):
        try:
            async for answer in call:
                self._answered(answer)
        except grpc.RpcError as e:
            log.debug("lease session lost: %s", e.code())
            # As the sync session: the next stream goes where calls go next.
            self.client._failed_over(errors.from_rpc_error(e))
        finally:
            self._stream_lost()


Client._breaker_class = Breaker
Client._admin_class = Admin
