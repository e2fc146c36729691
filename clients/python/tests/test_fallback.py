"""The fallback policies against a SIGSTOPped daemon (connected, but never answering:
every Acquire hits the client's deadline) and a killed one (refused at once): the
breaker spec's policy decides."""

import time

import pytest

from cbd_client import BreakerOpen, Client, Fallback, State

POLICIES = [("fb.open", Fallback.FAIL_OPEN), ("fb.closed", Fallback.FAIL_CLOSED),
            ("fb.local", Fallback.LOCAL)]


class Down(Exception):
    pass


def down():
    raise Down("dependency down")


@pytest.fixture
def client(daemon):
    c = Client(daemon.address, acquire_deadline=0.1)
    c.wait_for_ready()
    for name, fallback in POLICIES:
        c.admin.put_breaker(name, consecutive_failures=2, open_duration=30, fallback=fallback)
        c.breaker(name).refresh_spec()  # learn the policy while the daemon answers
    yield c
    daemon.resume()
    c.close()


def test_stopped_daemon_fail_open_allows_fail_closed_rejects_local_trips(daemon, client):
    assert client.breaker("fb.closed").fallback == Fallback.FAIL_CLOSED
    daemon.pause()
    before = client.stats["fallback_decisions"]

    t0 = time.monotonic()
    permit = client.breaker("fb.open").acquire()
    took = time.monotonic() - t0
    assert permit.fallback == Fallback.FAIL_OPEN and permit.state is None
    assert 0.09 <= took < 1.0, f"decided after {took} s, the deadline is 0.1 s"
    assert permit.success().to == "nowhere"
    assert client.breaker("fb.open").call(lambda: "ran") == "ran"

    with pytest.raises(BreakerOpen) as closed:
        client.breaker("fb.closed").acquire()
    assert (closed.value.fallback, closed.value.state, closed.value.retry_after) == \
        (Fallback.FAIL_CLOSED, State.OPEN, None)

    local = client.breaker("fb.local")
    for _ in range(2):
        with pytest.raises(Down):
            local.call(down)
    with pytest.raises(BreakerOpen) as tripped:
        local.acquire()
    assert (tripped.value.fallback, tripped.value.state) == (Fallback.LOCAL, State.OPEN)
    assert tripped.value.retry_after > 25
    assert client.stats["fallback_decisions"] - before == 6

    # Back: the daemon decides again (it never saw the local failures).
    daemon.resume()
    with Client(daemon.address, acquire_deadline=5.0) as fresh:
        p = fresh.breaker("fb.local").acquire()
        assert (p.fallback, p.state) == (None, State.CLOSED)
        p.ignore()
    p = client.breaker("fb.local")
    client.acquire_deadline = 5.0
    permit = p.acquire()
    assert permit.fallback is None, "the daemon answers again: the local breaker is dropped"
    permit.ignore()


def test_killed_daemon_falls_back_at_once(daemon, client):
    daemon.kill9()
    t0 = time.monotonic()
    with pytest.raises(BreakerOpen) as closed:
        client.breaker("fb.closed").acquire()
    assert closed.value.fallback == Fallback.FAIL_CLOSED
    assert client.breaker("fb.open").acquire().fallback == Fallback.FAIL_OPEN
    assert time.monotonic() - t0 < 1.0


def test_unknown_spec_uses_the_clients_default_fallback(daemon):
    with Client(daemon.address, acquire_deadline=0.1, default_fallback=Fallback.FAIL_CLOSED) as c:
        daemon.pause()
        try:
            with pytest.raises(BreakerOpen) as info:
                c.breaker("fb.never.seen").acquire()
            assert info.value.fallback == Fallback.FAIL_CLOSED
        finally:
            daemon.resume()
