"""cbd_client.aio end to end against a real cbd: the wrappers, the permit API, typed
errors, admin, the fallbacks against a SIGSTOPped daemon, leases (no Acquire RPC,
exact counts, revoked by a trip) and the watch resuming across kill -9. Each test
runs its own event loop (asyncio.run)."""

import asyncio
import time

import pytest

from cbd_client import (AlreadyReported, BreakerOpen, Fallback, InvalidArgument, NotFound, Snapshot,
                        State, pb)
from cbd_client.aio import Client

ACQUIRE = "cbd.v1.Breakers/Acquire"


class Down(Exception):
    pass


async def down():
    await asyncio.sleep(0)
    raise Down("down")


async def until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.02)


def test_wrappers_trip_reject_and_the_permit_api(shared_daemon):
    async def main():
        async with Client(shared_daemon.address, acquire_deadline=2.0) as client:
            await client.wait_for_ready()
            await client.admin.put_breaker("aio.trip", consecutive_failures=3, open_duration=30)
            b = client.breaker("aio.trip")

            @b
            async def fetch(x):
                await asyncio.sleep(0)
                return x * 2

            assert await fetch(21) == 42
            assert await b.call(lambda: "plain") == "plain"
            async with b as permit:
                assert (permit.kind, permit.state) == ("daemon", State.CLOSED)
            with pytest.raises(KeyError):
                await b.ignoring(KeyError).call(lambda: {}["caller bug"])
            s = await client.admin.get_breaker("aio.trip")
            assert (s.window_calls, s.window_failures) == (3, 0), "the ignored call counts nowhere"
            with pytest.raises(Down):
                await b.call(down)
            with pytest.raises(Down):
                async with b:
                    await down()
            p = await b.acquire()
            r = await p.failure()
            assert (r.to, r.state, r.stale) == ("daemon", State.OPEN, False)
            with pytest.raises(AlreadyReported):
                await p.success()
            ran = []
            with pytest.raises(BreakerOpen) as info:
                await b.call(lambda: ran.append(1))
            assert ran == [] and info.value.fallback is None
            assert 25 < info.value.retry_after <= 30
            with pytest.raises(TypeError):
                with b:
                    pass

    asyncio.run(main())


def test_typed_errors_and_admin(shared_daemon):
    async def main():
        async with Client(shared_daemon.address, acquire_deadline=2.0) as client:
            with pytest.raises(NotFound):
                await client.breaker("aio.no.such").acquire()
            with pytest.raises(InvalidArgument):
                await client.breaker("bad name!").acquire()
            with pytest.raises(InvalidArgument):
                await client.admin.put_breaker("aio.bad", failure_rate_percent=101)
            put = await client.admin.put_breaker("aio.adm.a", consecutive_failures=2)
            assert put.created
            await client.admin.put_breaker("aio.adm.b")
            names = [b.name for b in await client.admin.list_breakers("aio.adm.", page_size=1)]
            assert names == ["aio.adm.a", "aio.adm.b"]
            forced = await client.admin.set_override("aio.adm.a", pb.OVERRIDE_FORCED_OPEN)
            assert forced.breaker.state == pb.STATE_OPEN
            await client.admin.reset_breaker("aio.adm.a")
            await client.admin.delete_breaker("aio.adm.b")
            with pytest.raises(NotFound):
                await client.admin.get_breaker("aio.adm.b")
            assert (await client.admin.status()).breakers >= 1
            assert (await client.breaker("aio.adm.a").refresh_spec()).consecutive_failures == 2

    asyncio.run(main())


def test_fallbacks_with_the_daemon_stopped(daemon):
    async def main():
        async with Client(daemon.address, acquire_deadline=0.1) as client:
            for name, fallback in [("afb.open", Fallback.FAIL_OPEN), ("afb.closed", Fallback.FAIL_CLOSED),
                                   ("afb.local", Fallback.LOCAL)]:
                await client.admin.put_breaker(name, consecutive_failures=2, open_duration=30,
                                               fallback=fallback)
                await client.breaker(name).refresh_spec()
            daemon.pause()
            try:
                t0 = time.monotonic()
                permit = await client.breaker("afb.open").acquire()
                took = time.monotonic() - t0
                assert permit.fallback == Fallback.FAIL_OPEN
                assert 0.09 <= took < 1.0, f"decided after {took} s, the deadline is 0.1 s"
                assert (await permit.success()).to == "nowhere"
                with pytest.raises(BreakerOpen) as closed:
                    await client.breaker("afb.closed").acquire()
                assert (closed.value.fallback, closed.value.retry_after) == (Fallback.FAIL_CLOSED, None)
                local = client.breaker("afb.local")
                for _ in range(2):
                    with pytest.raises(Down):
                        await local.call(down)
                with pytest.raises(BreakerOpen) as tripped:
                    await local.acquire()
                assert (tripped.value.fallback, tripped.value.state) == (Fallback.LOCAL, State.OPEN)
            finally:
                daemon.resume()

    asyncio.run(main())


def test_leases_no_acquire_rpc_exact_counts_and_revoked_by_a_trip(daemon):
    async def main():
        async with Client(daemon.address, acquire_deadline=2.0) as client:
            await client.admin.put_breaker("aio.lease", consecutive_failures=3, cache_ttl=10,
                                           open_duration=30, count_window=1000)
            b = client.breaker("aio.lease")
            await b.call(lambda: None)  # the daemon's decision, with valid_until
            await until(lambda: b.leased, 5, "the lease")
            rpc, acquires = client.stats["rpc_decisions"], daemon.rpc_count(ACQUIRE)
            for i in range(100):
                async with b as permit:
                    assert permit.kind == "leased"
            assert await client.flush(2.0)
            assert client.stats["rpc_decisions"] == rpc
            assert daemon.rpc_count(ACQUIRE) == acquires, "the daemon answered no Acquire meanwhile"
            s = await client.admin.get_breaker("aio.lease")
            assert s.window_calls == 101
            for _ in range(3):
                with pytest.raises(Down):
                    await b.call(down)
            await until(lambda: not b.leased, 3, "the revocation")
            assert client.stats["leases_revoked"] == 1
            with pytest.raises(BreakerOpen) as info:
                await b.acquire()
            assert (info.value.fallback, info.value.state) == (None, State.OPEN)

    asyncio.run(main())


def test_watch_resumes_after_kill_9_and_restart(daemon):
    async def main():
        async with Client(daemon.address, acquire_deadline=2.0) as client:
            await client.admin.put_breaker("aw.before")
            async with client.watch(prefix="aw.", progress_interval=0.1) as watch:
                snap = await watch.next(timeout=10)
                assert isinstance(snap, Snapshot)
                assert [b.name for b in snap.breakers] == ["aw.before"]
                put1 = await client.admin.put_breaker("aw.one")
                assert (await watch.next(timeout=10)).revision == put1.revision
                daemon.kill9()
                daemon.start()
                async with Client(daemon.address, acquire_deadline=2.0) as other:
                    put2 = await other.admin.put_breaker("aw.two")
                got = []
                async for event in watch:
                    got.append((event.name, event.revision))
                    break
                assert got == [("aw.two", put2.revision)]
                assert watch.reconnects >= 1

    asyncio.run(main())
