"""Leases end to end (DESIGN §10): granted after an Acquire that carries valid_until,
decided with no RPC (the daemon's own Acquire counter does not move), outcomes sent as
aggregates the daemon counts exactly, revoked at once by a trip or an override, and
never used past valid_until when the daemon goes silent."""

import threading
import time

import pytest

from cbd_client import BreakerOpen, Client, Fallback, State, pb
from conftest import until

ACQUIRE = "cbd.v1.Breakers/Acquire"


class Down(Exception):
    pass


def down():
    raise Down("down")


@pytest.fixture
def client(daemon):
    c = Client(daemon.address, acquire_deadline=2.0)
    c.wait_for_ready()
    yield c
    daemon.resume()
    c.close()


def leased(client, name, **spec):
    """Creates the breaker, makes one per-call decision, and waits for its lease."""
    client.admin.put_breaker(name, **{"cache_ttl": 10, "open_duration": 30, **spec})
    b = client.breaker(name)
    permit = b.acquire()
    assert permit.kind == "daemon", "the first decision is the daemon's"
    permit.success()
    until(lambda: b.leased, 5, f"a lease on {name}")
    return b


def test_leased_calls_make_no_acquire_rpc_and_the_daemon_counts_the_aggregates(daemon, client):
    b = leased(client, "lease.count", consecutive_failures=100, count_window=1000)
    rpc, acquires = client.stats["rpc_decisions"], daemon.rpc_count(ACQUIRE)
    assert acquires >= 1
    failures = ignored = 0
    for i in range(200):
        if i % 10 == 3:
            failures += 1
            with pytest.raises(Down):
                b.call(down)
        elif i % 25 == 7:
            ignored += 1
            with pytest.raises(KeyError):
                b.ignoring(KeyError).call(lambda: {}["caller bug"])
        else:
            with b as permit:
                assert permit.kind == "leased"
    assert client.stats["rpc_decisions"] == rpc, "no Acquire while leased"
    assert client.flush(2.0), "every aggregate answered"
    assert daemon.rpc_count(ACQUIRE) == acquires, "the daemon answered no Acquire meanwhile"
    assert client.stats["leased_decisions"] == 200
    s = client.admin.get_breaker("lease.count")
    assert (s.window_calls, s.window_failures) == (1 + 200 - ignored, failures)
    assert client.admin.status().leases >= 1


def test_a_trip_by_leased_failures_revokes_the_lease_and_the_daemon_rejects(client):
    b = leased(client, "lease.trip", consecutive_failures=3)
    revoked = client.stats["leases_revoked"]
    for _ in range(3):
        with pytest.raises(Down):
            b.call(down)
    # The flush carries the three failures; the daemon trips and pushes the revocation.
    until(lambda: not b.leased, 3, "the revocation")
    assert client.stats["leases_revoked"] == revoked + 1
    with pytest.raises(BreakerOpen) as info:
        b.acquire()
    assert (info.value.fallback, info.value.state) == (None, State.OPEN)
    assert client.admin.get_breaker("lease.trip").state == pb.STATE_OPEN


def test_a_forced_open_revokes_the_lease_at_once(client):
    b = leased(client, "lease.forced", consecutive_failures=5)
    client.admin.set_override("lease.forced", pb.OVERRIDE_FORCED_OPEN)
    until(lambda: not b.leased, 3, "the revocation")
    ran = []
    with pytest.raises(BreakerOpen) as info:
        b.call(lambda: ran.append(1))
    assert ran == [] and info.value.retry_after is None, "forced open has no retry_after"


def test_a_silent_daemon_lease_is_used_until_valid_until_never_after(daemon, client):
    # A lease long enough to outlast pausing the daemon on a loaded machine.
    b = leased(client, "lease.silent", consecutive_failures=5, cache_ttl=1.5,
               fallback=Fallback.FAIL_CLOSED)
    b.refresh_spec()
    # Record the lease clock's readings: the one a decision was made on is the last.
    # Only this thread's readings: the session thread reads the same clock.
    reads, me = [0.0], threading.get_ident()

    def clock():
        t = time.monotonic()
        if threading.get_ident() == me:
            reads[0] = t
        return t

    b._lease.clock = clock
    daemon.pause()
    last_leased = None  # the lease clock's reading of the last leased decision
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline, "the lease never ended"
        try:
            permit = b.acquire()
        except BreakerOpen as e:
            rejected_at, err = time.monotonic(), e
            break
        assert permit.kind == "leased", "allowed only under the lease"
        last_leased = reads[0]
        permit.success()
    valid_until = b._lease.valid_until  # counted from when the lease request was sent
    assert last_leased is not None, "the lease was used while valid"
    assert last_leased < valid_until <= rejected_at, "never used at or after valid_until"
    assert err.fallback == Fallback.FAIL_CLOSED


def test_without_cache_ttl_no_lease_is_asked_for(client):
    client.admin.put_breaker("lease.none", consecutive_failures=5)
    b = client.breaker("lease.none")
    for _ in range(3):
        assert b.acquire().kind == "daemon"
    assert not b.leased


def test_leases_off_decides_every_call_at_the_daemon(daemon):
    with Client(daemon.address, acquire_deadline=2.0, leases=False) as c:
        c.admin.put_breaker("lease.off", cache_ttl=10)
        b = c.breaker("lease.off")
        before = daemon.rpc_count(ACQUIRE)
        for _ in range(5):
            b.call(lambda: None)
        assert daemon.rpc_count(ACQUIRE) - before == 5
        assert c.stats["leases_granted"] == 0
