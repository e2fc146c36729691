"""End to end against a real cbd: trip, reject, half-open probe, stale report, ignore,
the call wrappers (call, decorator, context manager), the permit API, typed errors."""

import grpc
import pytest

import cbd_client
from cbd_client import (AlreadyReported, BreakerOpen, Client, InvalidArgument, NotFound, Outcome,
                        RpcError, State)
from conftest import until


@pytest.fixture(scope="module")
def client(shared_daemon):
    # A generous deadline: these tests are about the daemon's answers, not the fallback.
    c = Client(shared_daemon.address, acquire_deadline=2.0)
    c.wait_for_ready()
    yield c
    c.close()


class Boom(Exception):
    pass


def boom():
    raise Boom("down")


def test_consecutive_failures_trip_then_reject_with_retry_after(client):
    client.admin.put_breaker("trip.a", consecutive_failures=2, open_duration=30)
    b = client.breaker("trip.a")
    assert b.call(lambda: "ok") == "ok"
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(boom)
    ran = []
    with pytest.raises(BreakerOpen) as info:
        b.call(lambda: ran.append(1))
    assert ran == [], "fn must not run when rejected"
    err = info.value
    assert (err.name, err.state, err.fallback) == ("trip.a", State.OPEN, None)
    assert 25 < err.retry_after <= 30
    assert client.admin.get_breaker("trip.a").state == cbd_client.pb.STATE_OPEN


def test_decorator_and_context_manager_report_success_and_failure(client):
    client.admin.put_breaker("wrap.a", consecutive_failures=3, open_duration=30)
    b = client.breaker("wrap.a")

    @b
    def fetch(x, scale=1):
        if x < 0:
            raise Boom("negative")
        return x * scale

    assert fetch(2, scale=3) == 6
    assert fetch.__name__ == "fetch"
    with pytest.raises(Boom):
        fetch(-1)
    with b as permit:
        assert permit.state == State.CLOSED and permit.fallback is None
    with pytest.raises(Boom):
        with b:
            boom()
    s = client.admin.get_breaker("wrap.a")
    assert (s.window_calls, s.window_failures, s.consecutive_failures) == (4, 2, 1)


def test_a_block_that_reports_itself_is_not_reported_again(client):
    client.admin.put_breaker("wrap.self", consecutive_failures=3)
    b = client.breaker("wrap.self")
    with b as permit:
        assert permit.failure().to == "daemon"
    s = client.admin.get_breaker("wrap.self")
    assert (s.window_calls, s.window_failures) == (1, 1)


def test_ignoring_reports_chosen_exceptions_as_ignored(client):
    client.admin.put_breaker("classify.a", consecutive_failures=1)
    b = client.breaker("classify.a")
    with pytest.raises(KeyError):
        b.ignoring(KeyError).call(lambda: {}["missing"])

    @b.ignoring(LookupError)
    def lookup():
        raise IndexError("caller bug")

    with pytest.raises(IndexError):
        lookup()
    s = client.admin.get_breaker("classify.a")
    assert (s.state, s.window_calls) == (cbd_client.pb.STATE_CLOSED, 0)
    with pytest.raises(Boom):
        b.ignoring(KeyError).call(boom)  # not an ignored type: a failure, which trips
    assert client.admin.get_breaker("classify.a").state == cbd_client.pb.STATE_OPEN


def test_half_open_allows_one_probe_and_its_success_closes(client):
    client.admin.put_breaker("probe.a", consecutive_failures=1, open_duration=0.3, half_open_permits=1)
    b = client.breaker("probe.a")
    with pytest.raises(Boom):
        b.call(boom)
    with pytest.raises(BreakerOpen) as info:
        b.acquire()
    # The daemon's timer half-opens it: poll its status instead of sleeping a guess.
    until(lambda: client.admin.get_breaker("probe.a").state == cbd_client.pb.STATE_HALF_OPEN,
          info.value.retry_after + 5, "probe.a to half-open")
    probe = b.acquire()
    assert probe.state == State.HALF_OPEN
    with pytest.raises(BreakerOpen) as second:
        b.acquire()
    assert second.value.state == State.HALF_OPEN, "a second probe must be rejected"
    answer = probe.success()
    assert (answer.to, answer.state, answer.stale) == ("daemon", State.CLOSED, False)


def test_a_permit_from_before_a_trip_is_stale_and_reported_once(client):
    client.admin.put_breaker("stale.a", consecutive_failures=1, open_duration=30)
    b = client.breaker("stale.a")
    early = b.acquire()
    tripped = b.acquire().failure()
    assert tripped.state == State.OPEN
    late = early.success()
    assert (late.stale, late.state) == (True, State.OPEN)
    assert late.generation == tripped.generation
    with pytest.raises(AlreadyReported):
        early.success()


def test_ignore_counts_nothing_and_breaks_no_failure_run(client):
    client.admin.put_breaker("ignore.a", consecutive_failures=2, open_duration=30)
    b = client.breaker("ignore.a")
    b.acquire().failure()
    b.acquire().ignore()
    s = client.admin.get_breaker("ignore.a")
    assert (s.consecutive_failures, s.window_calls) == (1, 1)
    assert b.acquire().report(Outcome.FAILURE, 0.01).state == State.OPEN


def test_slow_successes_count_by_the_reported_duration(client):
    client.admin.put_breaker("slow.a", slow_call_rate_percent=50, slow_call_duration=0.5,
                             minimum_calls=2, count_window=10)
    b = client.breaker("slow.a")
    assert b.acquire().report(Outcome.SUCCESS, 0.01).state == State.CLOSED
    assert b.acquire().report(Outcome.SUCCESS, 0.3).state == State.CLOSED
    s = client.admin.get_breaker("slow.a")
    assert (s.window_calls, s.window_slow_calls) == (2, 0)
    # A third success over slow_call_duration: 1 of 3 is below 50 %, a fourth trips.
    assert b.acquire().report(Outcome.SUCCESS, 2.0).state == State.CLOSED
    assert client.admin.get_breaker("slow.a").window_slow_calls == 1
    assert b.acquire().report(Outcome.SUCCESS, 2.0).state == State.OPEN


def test_errors_are_typed_by_grpc_code(client):
    with pytest.raises(NotFound) as missing:
        client.breaker("no.such.breaker").acquire()
    assert isinstance(missing.value, RpcError)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert not missing.value.transient
    with pytest.raises(InvalidArgument):
        client.breaker("bad name!").acquire()
    with pytest.raises(InvalidArgument):
        client.admin.put_breaker("spec.bad", failure_rate_percent=101)
    with pytest.raises(NotFound):
        client.admin.get_breaker("no.such.breaker")
