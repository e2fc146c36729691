"""Python (grpcio) against a real cbd: stubs generated from proto/ at test time."""

import datetime
import queue
import threading
import time

import grpc
import pytest
from google.protobuf import duration_pb2

DEADLINE = 10.0  # seconds: every wait below is bounded by this
OPEN_MS = 800  # long enough that a loaded CI machine still acquires while OPEN


def spec(pb, **extra):
    return pb.types.BreakerSpec(
        consecutive_failures=3,
        open_duration=duration_pb2.Duration(nanos=OPEN_MS * 1_000_000),
        **extra,
    )


def put(d, name, **extra):
    return d.admin.PutBreaker(d.pb.admin.PutBreakerRequest(name=name, spec=spec(d.pb, **extra)), timeout=5)


def get(d, name):
    return d.admin.GetBreaker(d.pb.admin.GetBreakerRequest(name=name), timeout=5)


def acquire(d, name):
    return d.breakers.Acquire(d.pb.breakers.AcquireRequest(name=name), timeout=5)


def report(d, permit, outcome, ms=1):
    return d.breakers.Report(
        d.pb.breakers.ReportRequest(
            permit=permit, outcome=outcome, duration=duration_pb2.Duration(nanos=ms * 1_000_000)
        ),
        timeout=5,
    )


def wait_state(d, name, state, timeout=DEADLINE):
    """Polls GetBreaker until the breaker is in `state` (the daemon's timer moves it)."""
    deadline = time.monotonic() + timeout
    while True:
        got = get(d, name).breaker.state
        if got == state:
            return
        assert time.monotonic() < deadline, (
            f"{name}: still {d.pb.types.State.Name(got)} after {timeout}s, "
            f"want {d.pb.types.State.Name(state)}"
        )
        time.sleep(0.02)


def trip(d, name):
    """Three failures in a row: CLOSED, CLOSED, then OPEN."""
    t = d.pb.types
    for i in range(3):
        a = acquire(d, name)
        assert a.allowed and a.permit and a.state == t.STATE_CLOSED, a
        r = report(d, a.permit, t.OUTCOME_FAILURE)
        assert not r.stale
        assert r.state == (t.STATE_OPEN if i == 2 else t.STATE_CLOSED), (i, r)


def probe_and_close(d, name):
    """Waits for HALF_OPEN, sends one successful probe: back to CLOSED."""
    t = d.pb.types
    wait_state(d, name, t.STATE_HALF_OPEN)
    a = acquire(d, name)
    assert a.allowed and a.state == t.STATE_HALF_OPEN, a
    r = report(d, a.permit, t.OUTCOME_SUCCESS)
    assert r.state == t.STATE_CLOSED, r


class WatchReader:
    """Reads a Watch stream on a thread into a queue, so every wait has a deadline."""

    def __init__(self, d, names, start_revision=None, progress_ms=50):
        b = d.pb.breakers
        req = b.WatchRequest(
            filter=b.WatchFilter(names=names),
            progress_interval=duration_pb2.Duration(nanos=progress_ms * 1_000_000),
        )
        if start_revision is not None:
            req.start_revision = start_revision
        self.call = d.breakers.Watch(req)
        self.q = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for msg in self.call:
                self.q.put(msg)
            self.q.put("end of stream")
        except grpc.RpcError as e:
            self.q.put(e)

    def next(self, deadline):
        try:
            item = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("watch: no message before the deadline") from None
        if isinstance(item, grpc.RpcError):
            raise AssertionError(f"watch failed: {item.code()} {item.details()}")
        if isinstance(item, str):
            raise AssertionError(f"watch: {item}")
        return item

    def snapshot(self):
        """Reads the snapshot messages; returns (breakers, revision) of the whole."""
        deadline = time.monotonic() + DEADLINE
        breakers = []
        while True:
            msg = self.next(deadline)
            assert msg.WhichOneof("kind") == "snapshot", f"before the snapshot's end: {msg}"
            breakers.extend(msg.snapshot.breakers)
            if msg.snapshot.done:
                return breakers, msg.snapshot.revision

    def events_through(self, revision):
        """Events until a progress message says the stream has passed `revision`:
        everything up to it has then been delivered."""
        deadline = time.monotonic() + DEADLINE
        events = []
        while True:
            msg = self.next(deadline)
            kind = msg.WhichOneof("kind")
            assert kind in ("event", "progress_revision"), f"unexpected message: {msg}"
            if kind == "event":
                events.append(msg.event)
            elif msg.progress_revision >= revision:
                return events

    def cancel(self):
        self.call.cancel()
        self.thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


def transitions(pb, events):
    t = pb.types
    return [(t.EventKind.Name(e.kind), t.State.Name(e.previous_state), t.State.Name(e.state)) for e in events]


TRIP_TO_CLOSE = [
    ("EVENT_KIND_STATE_CHANGED", "STATE_CLOSED", "STATE_OPEN"),
    ("EVENT_KIND_STATE_CHANGED", "STATE_OPEN", "STATE_HALF_OPEN"),
    ("EVENT_KIND_STATE_CHANGED", "STATE_HALF_OPEN", "STATE_CLOSED"),
]


def assert_increasing(events, after):
    revs = [e.revision for e in events]
    assert all(a < b for a, b in zip([after] + revs, revs)), f"revisions not strictly increasing after {after}: {revs}"
    gens = [e.generation for e in events]
    assert all(a < b for a, b in zip(gens, gens[1:])), f"generations not increasing: {gens}"


# --- Admin ---------------------------------------------------------------------------


def test_admin_put_and_get(daemon, pb):
    t = pb.types
    created = put(daemon, "py.admin")
    assert created.created and not created.unchanged
    assert created.revision > 0
    b = created.breaker
    assert b.name == "py.admin"
    assert b.state == t.STATE_CLOSED
    assert b.spec.consecutive_failures == 3
    assert b.spec.open_duration.ToMilliseconds() == OPEN_MS
    # documented defaults, filled in
    assert b.spec.half_open_permits == 1 and b.spec.success_threshold == 1
    assert b.spec.permit_ttl.ToSeconds() == 10

    again = put(daemon, "py.admin")
    assert not again.created and again.unchanged
    assert again.revision == created.revision, "an identical put writes nothing"

    got = get(daemon, "py.admin")
    assert got.breaker == created.breaker
    assert got.revision == created.revision

    listed = daemon.admin.ListBreakers(pb.admin.ListBreakersRequest(prefix="py."), timeout=5)
    assert [x.name for x in listed.breakers] == ["py.admin"]


# --- Acquire / Report: the tutorial ----------------------------------------------------


def test_tutorial_acquire_report(daemon, pb):
    t = pb.types
    put(daemon, "py.tutorial")
    trip(daemon, "py.tutorial")

    rejected = acquire(daemon, "py.tutorial")
    assert not rejected.allowed and not rejected.permit
    assert rejected.state == t.STATE_OPEN
    assert rejected.HasField("retry_after")
    assert datetime.timedelta(0) < rejected.retry_after.ToTimedelta() <= datetime.timedelta(milliseconds=OPEN_MS)

    # the daemon's timer, not traffic, moves it to HALF_OPEN
    wait_state(daemon, "py.tutorial", t.STATE_HALF_OPEN)
    probe = acquire(daemon, "py.tutorial")
    assert probe.allowed and probe.permit and probe.state == t.STATE_HALF_OPEN
    second = acquire(daemon, "py.tutorial")
    assert not second.allowed, "only one probe while it is in flight"
    assert second.state == t.STATE_HALF_OPEN

    closed = report(daemon, probe.permit, t.OUTCOME_SUCCESS)
    assert closed.state == t.STATE_CLOSED and not closed.stale
    after = acquire(daemon, "py.tutorial")
    assert after.allowed and after.state == t.STATE_CLOSED
    assert after.revision >= closed.revision > rejected.revision


def test_helper_context_manager(daemon, pb, cbd_breaker):
    t = pb.types
    breaker, BreakerOpen = cbd_breaker.breaker, cbd_breaker.BreakerOpen
    stub = daemon.breakers
    put(daemon, "py.helper")

    class Boom(Exception):
        pass

    for i in (1, 2, 3):
        with pytest.raises(Boom):  # reported as FAILURE, then re-raised
            with breaker(stub, "py.helper"):
                raise Boom()
        if i < 3:
            assert get(daemon, "py.helper").breaker.consecutive_failures == i
    assert get(daemon, "py.helper").breaker.state == t.STATE_OPEN

    ran = []
    with pytest.raises(BreakerOpen) as rejected:
        with breaker(stub, "py.helper"):
            ran.append(1)
    assert not ran, "the body must not run when rejected"
    assert rejected.value.state == t.STATE_OPEN
    assert datetime.timedelta(0) < rejected.value.retry_after <= datetime.timedelta(milliseconds=OPEN_MS)

    wait_state(daemon, "py.helper", t.STATE_HALF_OPEN)
    with breaker(stub, "py.helper") as probe:
        assert probe.state == t.STATE_HALF_OPEN
        with pytest.raises(BreakerOpen) as second:
            with breaker(stub, "py.helper"):
                ran.append(2)
        assert second.value.state == t.STATE_HALF_OPEN
    assert not ran
    assert get(daemon, "py.helper").breaker.state == t.STATE_CLOSED, "the probe's SUCCESS closes it"


def test_helper_reports_duration_and_ignores_cancellation(daemon, pb, cbd_breaker):
    # Slow calls are counted (never tripping: minimum_calls is out of reach), so the
    # window shows whether the helper sent the block's duration.
    put(
        daemon,
        "py.slow",
        slow_call_rate_percent=100,
        slow_call_duration=duration_pb2.Duration(nanos=50_000_000),
        minimum_calls=100,  # the default window is the last 100 calls
    )
    with cbd_breaker.breaker(daemon.breakers, "py.slow"):
        time.sleep(0.15)
    b = get(daemon, "py.slow").breaker
    assert (b.window_calls, b.window_failures, b.window_slow_calls) == (1, 0, 1)
    with cbd_breaker.breaker(daemon.breakers, "py.slow"):
        pass
    b = get(daemon, "py.slow").breaker
    assert (b.window_calls, b.window_failures, b.window_slow_calls) == (2, 0, 1)
    with pytest.raises(KeyboardInterrupt):  # a cancellation: IGNORED, not counted
        with cbd_breaker.breaker(daemon.breakers, "py.slow"):
            raise KeyboardInterrupt
    b = get(daemon, "py.slow").breaker
    assert (b.window_calls, b.window_failures, b.consecutive_failures) == (2, 0, 0)


# --- Errors -----------------------------------------------------------------------------


def test_errors_are_grpc_status_codes(daemon, pb):
    t, b, a = pb.types, pb.breakers, pb.admin

    def code(fn, *args):
        with pytest.raises(grpc.RpcError) as e:
            fn(*args, timeout=5)
        assert isinstance(e.value.code(), grpc.StatusCode)
        return e.value.code()

    assert code(daemon.breakers.Acquire, b.AcquireRequest(name="py.unknown")) == grpc.StatusCode.NOT_FOUND
    assert code(daemon.admin.GetBreaker, a.GetBreakerRequest(name="py.unknown")) == grpc.StatusCode.NOT_FOUND
    assert code(daemon.breakers.Acquire, b.AcquireRequest(name="has space")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(daemon.admin.GetBreaker, a.GetBreakerRequest(name="has space")) == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        code(daemon.admin.PutBreaker, a.PutBreakerRequest(name="has space", spec=spec(pb)))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        code(daemon.breakers.Report, b.ReportRequest(permit=b"garbage", outcome=t.OUTCOME_SUCCESS))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    put(daemon, "py.errors")
    permit = acquire(daemon, "py.errors").permit
    assert (
        code(daemon.breakers.Report, b.ReportRequest(permit=permit, outcome=t.OUTCOME_UNSPECIFIED))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # on a server stream the code arrives when reading
    with pytest.raises(grpc.RpcError) as e:
        list(daemon.breakers.Watch(b.WatchRequest(start_revision=0), timeout=5))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- Reflection -------------------------------------------------------------------------


def test_reflection(daemon, pb):
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    db = ProtoReflectionDescriptorDatabase(daemon.channel)
    services = set(db.get_services())
    assert {"cbd.v1.Breakers", "cbd.v1.Admin", "grpc.health.v1.Health"} <= services, services

    pool = descriptor_pool.DescriptorPool(db)
    acquire_method = pool.FindServiceByName("cbd.v1.Breakers").FindMethodByName("Acquire")
    assert acquire_method.input_type.full_name == "cbd.v1.AcquireRequest"
    assert acquire_method.output_type.full_name == "cbd.v1.AcquireResponse"
    request_type = pool.FindMessageTypeByName("cbd.v1.AcquireRequest")
    assert request_type.fields_by_name["name"].number == 1

    # A client built from reflection alone (as grpcurl does) can call the daemon.
    put(daemon, "py.reflected")
    Req = message_factory.GetMessageClass(request_type)
    Resp = message_factory.GetMessageClass(acquire_method.output_type)
    call = daemon.channel.unary_unary(
        "/cbd.v1.Breakers/Acquire", request_serializer=Req.SerializeToString, response_deserializer=Resp.FromString
    )
    resp = call(Req(name="py.reflected"), timeout=5)
    assert resp.allowed and resp.state == pb.types.STATE_CLOSED


# --- Watch ------------------------------------------------------------------------------


def test_watch_snapshot_then_transitions_in_order(daemon, pb):
    t = pb.types
    created = put(daemon, "py.watch")
    put(daemon, "py.other")  # not in the filter
    with WatchReader(daemon, ["py.watch"]) as w:
        breakers, snap_rev = w.snapshot()
        assert [(x.name, x.state) for x in breakers] == [("py.watch", t.STATE_CLOSED)]
        assert snap_rev >= created.revision

        trip(daemon, "py.watch")
        trip(daemon, "py.other")
        probe_and_close(daemon, "py.watch")
        now = get(daemon, "py.watch").revision
        events = w.events_through(now)

    assert transitions(pb, events) == TRIP_TO_CLOSE
    assert all(e.name == "py.watch" for e in events)
    assert events[0].reason == "3 consecutive failures"
    assert all(e.reason for e in events)
    assert_increasing(events, after=snap_rev)
    assert events[-1].revision <= now


def test_watch_resume_after_restart_loses_nothing(daemon, pb):
    t = pb.types
    put(daemon, "py.resume")
    with WatchReader(daemon, ["py.resume"]) as w:
        _, snap_rev = w.snapshot()
        trip(daemon, "py.resume")
        probe_and_close(daemon, "py.resume")
        seen = w.events_through(get(daemon, "py.resume").revision)
    assert transitions(pb, seen) == TRIP_TO_CLOSE
    received = list(seen)

    def quick_restart():
        # back within open_duration: the restarted daemon's timer half-opens it
        daemon.restart()

    def restart_after_open_until():
        # down past open_until: recovery half-opens it while the daemon starts
        open_until = get(daemon, "py.resume").breaker.open_until.ToDatetime(datetime.timezone.utc)
        rc = daemon.stop()
        assert rc == 0, f"cbd exited with {rc} on SIGTERM"
        deadline = time.monotonic() + DEADLINE
        while datetime.datetime.now(datetime.timezone.utc) <= open_until:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        daemon.start()

    for restart in (quick_restart, restart_after_open_until):
        last = received[-1].revision
        # The watcher is gone: trip it again (an event it misses), then restart the
        # daemon (SIGTERM, same data dir) while the breaker is open.
        trip(daemon, "py.resume")
        restart()
        assert get(daemon, "py.resume").breaker.state in (t.STATE_OPEN, t.STATE_HALF_OPEN)

        with WatchReader(daemon, ["py.resume"], start_revision=last + 1) as w:
            probe_and_close(daemon, "py.resume")  # after the restart: live
            resumed = w.events_through(get(daemon, "py.resume").revision)  # no snapshot allowed
        assert transitions(pb, resumed) == TRIP_TO_CLOSE, restart.__name__
        assert resumed[0].reason == "3 consecutive failures"
        assert_increasing(resumed, after=last)  # nothing at or before `last`: no duplicate
        received += resumed

    # Exactly the missing events: the log replayed from the start holds, after the
    # snapshot, what the first stream saw and then what each resumed one got.
    with WatchReader(daemon, ["py.resume"], start_revision=1) as w:
        replay = w.events_through(get(daemon, "py.resume").revision)
    assert [e for e in replay if e.revision > snap_rev] == received
    assert [t.EventKind.Name(e.kind) for e in replay if e.revision <= snap_rev] == ["EVENT_KIND_SPEC_PUT"]
