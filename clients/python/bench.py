"""Guarded calls/s in one process: per-call Acquire+Report vs leases, sync and
asyncio, and pybreaker (in process, memory storage) on the same loop.

    CBD_BIN=/work/bin/cbd clients/python/.venv/bin/python clients/python/bench.py [seconds=3] [threads=8] [tasks=64]
"""

import asyncio
import sys
import threading
import time
from pathlib import Path

import pybreaker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "tests"))
import cbd_client  # noqa: E402
import cbd_client.aio  # noqa: E402
from conftest import Daemon, until  # noqa: E402


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
            pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
            rows.append(("pybreaker 1.4.1 in process (memory storage), 1 thread",
                         threaded(lambda: pb.call(noop), seconds, 1)))
            rows.append((f"pybreaker 1.4.1 in process (memory storage), {threads} threads",
                         threaded(lambda: pb.call(noop), seconds, threads)))
        finally:
            daemon.stop()
    print(f"Python {sys.version.split()[0]}, {seconds:g} s per row; daemon window_calls of bench.lease "
          f"after the sync leased rows: {window} (count window of 100)")
    print("| mode | guarded calls/s |\n|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
