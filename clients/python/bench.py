"""Guarded calls/s in one process, in one run: cbd per call (Acquire + Report) and
leased, sync and asyncio; the shared-state breakers peers use, a Redis-Lua breaker
(redis-py) and pybreaker with CircuitRedisStorage, against a redis-server the bench
starts; and pybreaker in process (memory storage).

    CBD_BIN=target/release/cbd clients/python/.venv/bin/python clients/python/bench.py [seconds=3] [threads=8] [tasks=64]

The Redis rows need `redis-server` on PATH (Debian's redis-server); without it they
are skipped, saying so.
"""

import asyncio
import shutil
import sys
import threading
import time
from pathlib import Path

import pybreaker
import redis
from importlib.metadata import version

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "tests"))
import cbd_client  # noqa: E402
import cbd_client.aio  # noqa: E402
from conftest import Daemon, until  # noqa: E402
from redis_breaker import RedisLuaBreaker, RedisServer, Rejected  # noqa: E402

PYBREAKER = version("pybreaker")  # pybreaker has no __version__


def noop():
    return None


def threaded(call, seconds, threads):
    """calls/s of `call()` run in a loop by `threads` threads for `seconds`."""
    end = time.monotonic() + seconds
    counts = [0] * threads

    def worker(i):
        n = 0
        while time.monotonic() < end:
            call()
            n += 1
        counts[i] = n

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / seconds


async def tasks_rate(call, seconds, tasks):
    end = time.monotonic() + seconds
    count = 0

    async def worker():
        nonlocal count
        while time.monotonic() < end:
            await call()
            count += 1

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return count / seconds


def check_trips(breaker: RedisLuaBreaker) -> None:
    """The comparison is with a working breaker: 5 failures trip it, then it rejects."""
    def fail():
        raise RuntimeError("down")

    for _ in range(5):
        try:
            breaker.call(fail)
        except RuntimeError:
            pass
    try:
        breaker.call(noop)
    except Rejected:
        return
    raise AssertionError("the Redis-Lua breaker did not trip after 5 failures")


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    tasks = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        daemon = Daemon(Path(tmp)).start()
        try:
            rows = []
            with cbd_client.Client(daemon.address, acquire_deadline=5.0) as client:
                client.admin.put_breaker("bench.rpc", consecutive_failures=5)
                client.admin.put_breaker("bench.lease", consecutive_failures=5, cache_ttl=10)
                rpc = client.breaker("bench.rpc")
                rows.append((f"sync, per call (Acquire + Report), {threads} threads",
                             threaded(lambda: rpc.call(noop), seconds, threads)))
                lease = client.breaker("bench.lease")
                lease.call(noop)
                until(lambda: lease.leased, 5, "the lease")
                rows.append((f"sync, leased, {threads} threads", threaded(lambda: lease.call(noop), seconds, threads)))
                rows.append(("sync, leased, 1 thread", threaded(lambda: lease.call(noop), seconds, 1)))
                assert client.flush(5.0)
                window = client.admin.get_breaker("bench.lease").window_calls

            async def aio_rows():
                async with cbd_client.aio.Client(daemon.address, acquire_deadline=5.0) as c:
                    b = c.breaker("bench.rpc")
                    rows.append((f"asyncio, per call (Acquire + Report), {tasks} tasks",
                                 await tasks_rate(lambda: b.call(noop), seconds, tasks)))
                    lb = c.breaker("bench.lease")
                    await lb.call(noop)
                    while not lb.leased:
                        await asyncio.sleep(0.02)
                    rows.append((f"asyncio, leased, {tasks} tasks",
                                 await tasks_rate(lambda: lb.call(noop), seconds, tasks)))

            asyncio.run(aio_rows())
            if shutil.which("redis-server"):
                server = RedisServer()
                try:
                    lua = RedisLuaBreaker(server.client(), "bench.lua")
                    rows.append((f"Redis-Lua breaker (redis-py {redis.__version__}), 1 thread",
                                 threaded(lambda: lua.call(noop), seconds, 1)))
                    rows.append((f"Redis-Lua breaker (redis-py {redis.__version__}), {threads} threads",
                                 threaded(lambda: lua.call(noop), seconds, threads)))
                    check_trips(RedisLuaBreaker(server.client(), "bench.lua.check"))
                    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, server.client(),
                                                            namespace="bench")
                    shared = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)
                    rows.append((f"pybreaker {PYBREAKER} + CircuitRedisStorage, 1 thread",
                                 threaded(lambda: shared.call(noop), seconds, 1)))
                    rows.append((f"pybreaker {PYBREAKER} + CircuitRedisStorage, {threads} threads",
                                 threaded(lambda: shared.call(noop), seconds, threads)))
                finally:
                    server.stop()
            else:
                print("redis-server not on PATH (Debian package redis-server): Redis rows skipped")
            pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
            rows.append((f"pybreaker {PYBREAKER} in process (memory storage), 1 thread",
                         threaded(lambda: pb.call(noop), seconds, 1)))
            rows.append((f"pybreaker {PYBREAKER} in process (memory storage), {threads} threads",
                         threaded(lambda: pb.call(noop), seconds, threads)))
        finally:
            daemon.stop()
    print(f"Python {sys.version.split()[0]}, {seconds:g} s per row; daemon window_calls of bench.lease "
          f"after the sync leased rows: {window} (count window of 100)")
    print("| mode | guarded calls/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")
    rate = dict(rows)
    unary = rate[f"sync, per call (Acquire + Report), {threads} threads"]
    leased = rate[f"sync, leased, {threads} threads"]
    in_process = rate[f"pybreaker {PYBREAKER} in process (memory storage), 1 thread"]
    print(f"leased / per call, {threads} threads: {leased / unary:,.0f}x; "
          f"leased 1 thread / pybreaker in process 1 thread: "
          f"{rate['sync, leased, 1 thread'] / in_process:.2f}x")


if __name__ == "__main__":
    main()
