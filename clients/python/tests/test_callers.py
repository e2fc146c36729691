"""The `caller` option against a real cbd (DESIGN §3.7): sent on every Acquire and
Report (and leased outcome), so a quorum of two callers holds against one failing
client and trips on a second; the breaker shows who failed."""

import pytest

from cbd_client import BreakerOpen, Client, State


class Boom(Exception):
    pass


def boom():
    raise Boom("down")


def test_two_callers_make_the_quorum_one_does_not(shared_daemon):
    a = Client(shared_daemon.address, acquire_deadline=2.0, caller="svc-a")
    b = Client(shared_daemon.address, acquire_deadline=2.0, caller="svc-b")
    try:
        a.admin.put_breaker("callers.quorum", consecutive_failures=2, min_distinct_callers=2,
                            open_duration=30)
        for _ in range(4):
            with pytest.raises(Boom):
                a.breaker("callers.quorum").call(boom)
        status = a.admin.get_breaker("callers.quorum")
        assert status.state == State.CLOSED
        assert [(c.caller, c.failures, c.calls) for c in status.failing_callers] == [
            ("svc-a", 4, 4)]
        with pytest.raises(Boom):
            b.breaker("callers.quorum").call(boom)
        assert a.admin.get_breaker("callers.quorum").state == State.OPEN
        with pytest.raises(BreakerOpen):
            a.breaker("callers.quorum").call(lambda: None)
    finally:
        a.close()
        b.close()
