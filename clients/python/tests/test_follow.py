"""Following the leader (DESIGN §11): a standby answers UNAVAILABLE naming the
leader in `cbd-leader`, and the client moves there; a standby that knows no leader
sends it to the next endpoint. The standby is the daemon's own standby routes
(target/debug/standby); the leader a real cbd."""

import asyncio
import time

import pytest

import cbd_client
from cbd_client import aio, errors

from conftest import Standby


@pytest.fixture
def standby_of():
    started = []

    def start(leader):
        s = Standby(leader)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def test_a_standby_naming_the_leader_sends_the_client_there(daemon, standby_of):
    standby = standby_of(f"http://{daemon.address}")
    with cbd_client.Client([standby.address], leases=False, acquire_deadline=2.0) as client:
        with pytest.raises(errors.Unavailable) as raised:
            client.admin.put_breaker("follow.a", consecutive_failures=3)
        assert raised.value.leader == f"http://{daemon.address}"
        assert client.endpoint == daemon.address
        client.admin.put_breaker("follow.a", consecutive_failures=3)
        permit = client.breaker("follow.a").acquire()
        assert permit.fallback is None  # decided by the leader
        permit.success()
        assert client.stats["rpc_decisions"] == 1


def test_a_standby_without_a_leader_moves_the_client_to_the_next(daemon, standby_of):
    standby = standby_of(None)
    with cbd_client.Client([standby.address, daemon.address], leases=False) as client:
        with pytest.raises(errors.Unavailable) as raised:
            client.admin.get_breaker("follow.none")
        assert raised.value.leader == ""
        assert client.endpoint == daemon.address
        with pytest.raises(errors.NotFound):
            client.admin.get_breaker("follow.none")


def test_the_asyncio_client_follows_too(daemon, standby_of):
    standby = standby_of(f"http://{daemon.address}")

    async def main():
        async with aio.Client([standby.address], leases=False) as client:
            with pytest.raises(errors.Unavailable):
                await client.admin.put_breaker("follow.c", consecutive_failures=3)
            assert client.endpoint == daemon.address
            await client.admin.put_breaker("follow.c", consecutive_failures=3)

    asyncio.run(main())


def test_a_lease_stream_that_meets_a_standby_moves_the_client_to_the_leader(daemon, standby_of):
    standby = standby_of(f"http://{daemon.address}")
    with cbd_client.Client([standby.address, daemon.address], leases=True) as client:
        # What the first acquire does, without its unary call (which would move the
        # client by itself): the lease stream opens on the standby.
        client._want_lease(client.breaker("follow.lease"))
        deadline = time.monotonic() + 5
        while client.endpoint != daemon.address:
            assert time.monotonic() < deadline, f"still on {client.endpoint}"
            time.sleep(0.01)
