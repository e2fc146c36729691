"""The Admin calls against a real cbd, and the error mapping by code."""

import grpc
import pytest

import cbd_client
from cbd_client import Client, InvalidArgument, NotFound, State, errors, pb


@pytest.fixture(scope="module")
def client(shared_daemon):
    c = Client(shared_daemon.address, acquire_deadline=2.0)
    c.wait_for_ready()
    yield c
    c.close()


def test_put_get_list_override_reset_delete(client):
    put = client.admin.put_breaker("adm.a", consecutive_failures=3, open_duration=12.5, cache_ttl=2,
                                   fallback=cbd_client.Fallback.FAIL_CLOSED)
    assert put.created and not put.unchanged
    again = client.admin.put_breaker("adm.a", pb.spec(consecutive_failures=3, open_duration=12.5,
                                                      cache_ttl=2, fallback=cbd_client.Fallback.FAIL_CLOSED))
    assert again.unchanged and again.revision == put.revision
    got = client.admin.get_breaker("adm.a")
    assert got.spec.consecutive_failures == 3
    assert got.spec.open_duration.ToNanoseconds() == 12_500_000_000
    assert got.spec.cache_ttl.seconds == 2
    assert got.spec.fallback == pb.FALLBACK_FAIL_CLOSED
    assert client.breaker("adm.a").refresh_spec().fallback == pb.FALLBACK_FAIL_CLOSED
    assert client.breaker("adm.a").fallback == cbd_client.Fallback.FAIL_CLOSED

    compat = client.admin.put_breaker("adm.compat", pb.spec(
        half_open_permits=4, half_open_failure_rate_percent=50, half_open_max_wait=60,
        half_open_max_wait_closes=True, slow_call_rate_percent=50, slow_call_duration=2,
        slow_includes_failures=True))
    got = compat.breaker.spec
    assert got.half_open_failure_rate_percent == 50
    assert got.half_open_max_wait.seconds == 60
    assert got.half_open_max_wait_closes and got.slow_includes_failures

    for i in range(3):
        client.admin.put_breaker(f"adm.list.{i}")
    names = [b.name for b in client.admin.list_breakers("adm.list.", page_size=2)]
    assert names == ["adm.list.0", "adm.list.1", "adm.list.2"], "every page, in name order"

    forced = client.admin.set_override("adm.a", pb.OVERRIDE_FORCED_OPEN)
    assert (forced.breaker.override, forced.breaker.state) == (pb.OVERRIDE_FORCED_OPEN, pb.STATE_OPEN)
    with pytest.raises(cbd_client.BreakerOpen) as info:
        client.breaker("adm.a").acquire()
    assert (info.value.state, info.value.retry_after) == (State.OPEN, None), "forced open: no retry_after"
    cleared = client.admin.set_override("adm.a", pb.OVERRIDE_UNSPECIFIED)
    assert cleared.breaker.state == pb.STATE_CLOSED

    b = client.breaker("adm.a")
    b.acquire().failure()
    assert client.admin.get_breaker("adm.a").consecutive_failures == 1
    reset = client.admin.reset_breaker("adm.a")
    assert reset.breaker.consecutive_failures == 0

    deleted = client.admin.delete_breaker("adm.a")
    assert deleted.revision > reset.revision
    with pytest.raises(NotFound):
        client.admin.get_breaker("adm.a")
    with pytest.raises(NotFound):
        client.admin.delete_breaker("adm.a")


def test_an_override_keeps_its_reason_and_expiry(client):
    client.admin.put_breaker("adm.why", consecutive_failures=3)
    forced = client.admin.set_override("adm.why", pb.OVERRIDE_FORCED_OPEN, reason="INC-123", duration=600)
    b = forced.breaker
    assert (b.override_operator.actor, b.override_operator.reason) == ("anonymous", "INC-123")
    assert b.override_until.ToNanoseconds() > 0
    with pytest.raises(InvalidArgument) as info:
        client.admin.set_override("adm.why", pb.OVERRIDE_UNSPECIFIED, duration=5)
    assert "duration" in info.value.details
    with pytest.raises(InvalidArgument) as info:
        client.admin.reset_breaker("adm.why", reason="x" * 257)
    assert "reason" in info.value.details


def test_status(client):
    client.admin.put_breaker("adm.status")
    s = client.admin.status()
    assert s.version and s.revision >= 1 and s.breakers >= 1
    assert s.role == pb.REPLICATION_ROLE_STANDALONE


def test_admin_errors_are_typed(client):
    with pytest.raises(InvalidArgument):
        client.admin.put_breaker("bad name!")
    with pytest.raises(InvalidArgument):
        client.admin.put_breaker("adm.bad", slow_call_rate_percent=10)  # needs slow_call_duration
    with pytest.raises(InvalidArgument):
        client.admin.list_breakers(prefix="bad prefix!")
    with pytest.raises(TypeError):
        client.admin.put_breaker("adm.x", pb.spec(), consecutive_failures=1)


def test_every_code_has_its_class_and_unknown_codes_are_rpc_errors():
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
        grpc.StatusCode.NOT_FOUND: errors.NotFound,
        grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
        grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
        grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
        grpc.StatusCode.OUT_OF_RANGE: errors.Compacted,
        grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
        grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
        grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
        grpc.StatusCode.CANCELLED: errors.Cancelled,
        grpc.StatusCode.INTERNAL: errors.Internal,
    }
    for code, cls in expected.items():
        # The same text for every code: the class must come from the code alone.
        err = errors.from_code(code, "not found")
        assert type(err) is cls and err.code == code
    other = errors.from_code(grpc.StatusCode.UNIMPLEMENTED, "invalid argument")
    assert type(other) is errors.RpcError
    assert errors.from_code(grpc.StatusCode.UNAVAILABLE).transient
    assert not errors.from_code(grpc.StatusCode.INVALID_ARGUMENT).transient


def test_status_items_and_the_compaction_trailer():
    from cbd_client._pb.google.rpc import status_pb2

    item = errors.from_status_proto(status_pb2.Status(code=9, message="sequence"))
    assert type(item) is errors.FailedPrecondition
    compacted = errors.from_code(grpc.StatusCode.OUT_OF_RANGE, "", (("cbd-compact-revision", "42"),))
    assert compacted.oldest_retained == 42
    assert errors.from_code(grpc.StatusCode.OUT_OF_RANGE).oldest_retained is None
