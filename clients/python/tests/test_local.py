"""The LOCAL fallback's in-process breaker (the documented subset) and the leased
outcome aggregate, on a fake clock: no daemon needed."""

from cbd_client import Outcome, State, pb
from cbd_client._core import Aggregate, LeaseSlot, LocalBreaker


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_local_breaker_trips_opens_probes_and_closes():
    clock = Clock()
    b = LocalBreaker.from_spec(pb.spec(consecutive_failures=3, open_duration=2), clock)
    for _ in range(2):
        b.report(Outcome.FAILURE, b.acquire()[3])
    b.report(Outcome.SUCCESS, b.acquire()[3])  # breaks the run
    for _ in range(3):
        b.report(Outcome.FAILURE, b.acquire()[3])
    allowed, state, retry_after, _ = b.acquire()
    assert (allowed, state, retry_after) == (False, State.OPEN, 2.0)
    clock.now += 1.999
    assert b.acquire()[0] is False
    clock.now += 0.001
    allowed, state, _, probe = b.acquire()
    assert (allowed, state, probe) == (True, State.HALF_OPEN, True)
    assert b.acquire()[0] is False, "one probe at a time"
    assert b.report(Outcome.FAILURE, True) == State.OPEN
    clock.now += 2
    assert b.report(Outcome.SUCCESS, b.acquire()[3]) == State.CLOSED
    assert b.acquire()[:2] == (True, State.CLOSED)


def test_local_breaker_defaults_without_a_spec():
    clock = Clock()
    b = LocalBreaker.from_spec(None, clock)
    for _ in range(4):
        b.report(Outcome.FAILURE, b.acquire()[3])
    assert b.acquire()[0] is True
    b.report(Outcome.FAILURE, False)
    allowed, state, retry_after, _ = b.acquire()
    assert (allowed, state, retry_after) == (False, State.OPEN, 30.0)


def test_aggregate_counts_and_the_three_failure_runs():
    a = Aggregate()
    for o, slow in [("f", 0), ("f", 0), ("s", 0), ("f", 0), ("i", 0), ("f", 0), ("f", 0), ("s", 1), ("f", 0)]:
        a.record({"f": Outcome.FAILURE, "s": Outcome.SUCCESS, "i": Outcome.IGNORED}[o], bool(slow))
    assert (a.successes, a.slow_successes, a.failures, a.ignored) == (1, 1, 6, 1)
    assert (a.leading_failures, a.longest_failure_run, a.trailing_failures) == (2, 3, 1)
    b = Aggregate()
    b.record(Outcome.FAILURE)
    b.record(Outcome.FAILURE)
    assert (b.leading_failures, b.longest_failure_run, b.trailing_failures) == (2, 2, 2)


def test_lease_slot_ends_at_valid_until_and_numbers_outcomes():
    clock = Clock()
    slot = LeaseSlot(clock)
    assert slot.ticket() is None
    slot.grant(b"lease-1", clock.now + 1.0, 0.5)
    ticket = slot.ticket()
    assert ticket[2] == 0.5
    slot.record(ticket, Outcome.SUCCESS, 0.1)
    slot.record(ticket, Outcome.SUCCESS, 0.9)  # slower than the grant's threshold
    slot.record(ticket, Outcome.FAILURE, 0.1)
    (first,) = slot.take_outgoing()
    assert (first.lease, first.sequence, first.successes, first.slow_successes, first.failures) == \
        (b"lease-1", 1, 1, 1, 1)
    assert slot.take_outgoing() == [], "nothing new: nothing sent"
    slot.record(ticket, Outcome.IGNORED, None)
    (second,) = slot.take_outgoing()
    assert (second.sequence, second.ignored) == (2, 1)
    assert [o.sequence for o in slot.unacked()] == [1, 2]
    slot.acked(b"lease-1", 1)
    assert [o.sequence for o in slot.unacked()] == [2]
    clock.now += 0.999
    assert slot.ticket() is not None
    clock.now += 0.001
    assert slot.ticket() is None, "never used at or after valid_until"
    slot.grant(b"lease-2", clock.now + 1.0, None)
    slot.record(ticket, Outcome.FAILURE, 0.1)  # a call allowed under lease-1, ending now
    slot.record(slot.ticket(), Outcome.SUCCESS, 5.0)  # no slow threshold: never slow
    by_lease = {o.lease: o for o in slot.take_outgoing()}
    assert (by_lease[b"lease-1"].sequence, by_lease[b"lease-1"].failures) == (3, 1)
    assert (by_lease[b"lease-2"].sequence, by_lease[b"lease-2"].successes) == (1, 1)
    slot.void()
    assert slot.ticket() is None, "a voided lease is not used again"


def test_lease_slot_success_counts_as_record_success_does():
    clock = Clock()
    fast, general = LeaseSlot(clock), LeaseSlot(clock)
    for slot in (fast, general):
        slot.grant(b"lease", clock.now + 1.0, 0.5)
    calls = [(Outcome.FAILURE, 0.1), (Outcome.SUCCESS, 0.1), (Outcome.SUCCESS, 0.9),
             (Outcome.SUCCESS, None), (Outcome.FAILURE, 0.1), (Outcome.FAILURE, 0.2)]
    for outcome, duration in calls:
        general.record(general.ticket(), outcome, duration)
        if outcome == Outcome.SUCCESS:
            fast.success(fast.ticket(), duration)
        else:
            fast.record(fast.ticket(), outcome, duration)
    (a,), (b,) = fast.take_outgoing(), general.take_outgoing()
    assert a == b
    assert (a.successes, a.slow_successes, a.failures, a.trailing_failures) == (2, 1, 3, 2)


class _FakeClient:
    caller = ""

    def __init__(self):
        self.stats = {"leases_revoked": 0, "leases_granted": 0}


class _FakeBreaker:
    def __init__(self, name):
        self.name = name
        self._lease = LeaseSlot()


def _revoked(name, revision):
    return pb.breakers_pb2.SessionResponse(
        id=0, revoked=pb.breakers_pb2.LeaseRevoked(name=name, revision=revision))


def test_one_revocation_per_voided_lease_not_per_push():
    """A trip is pushed at the change (revision 0) and again once committed: the
    second push voids nothing, so it neither counts nor cancels a lease asked for
    since (its grant must still be taken)."""
    from cbd_client._lease_sync import SessionState

    client = _FakeClient()
    state = SessionState(client)
    b = _FakeBreaker("db")
    state.breakers["db"] = b
    b._lease.wanted = True
    b._lease.grant(b"t1", b._lease.clock() + 10, None)
    state._answered(_revoked("db", 0))
    assert client.stats["leases_revoked"] == 1
    assert b._lease.ticket() is None and b._lease.wanted is False

    b._lease.wanted = True  # a per-call acquire asked for a new lease
    state._answered(_revoked("db", 7))  # the committed follow-up
    assert client.stats["leases_revoked"] == 1
    assert b._lease.wanted is True
