"""Logic shared by the sync and asyncio clients: the leased-outcome aggregate, the
lease slot of a breaker, and the in-process breaker of the LOCAL fallback."""

import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ._pb.cbd.v1 import breakers_pb2
from .types import Outcome, State


@dataclass
class Aggregate:
    """Counts of outcomes in the order they ended, as LeasedOutcomes carries them
    (the same rules as the daemon's cbd_breaker::Aggregate)."""

    successes: int = 0
    slow_successes: int = 0
    failures: int = 0
    ignored: int = 0
    leading_failures: int = 0
    longest_failure_run: int = 0
    trailing_failures: int = 0

    def record(self, outcome: Outcome, slow: bool = False) -> None:
        """Adds one outcome after the ones already counted."""
        if outcome == Outcome.IGNORED:
            self.ignored += 1
        elif outcome == Outcome.SUCCESS:
            if slow:
                self.slow_successes += 1
            else:
                self.successes += 1
            self.trailing_failures = 0
        else:
            if self.successes + self.slow_successes == 0:
                self.leading_failures += 1
            self.failures += 1
            self.trailing_failures += 1
            self.longest_failure_run = max(self.longest_failure_run, self.trailing_failures)

    def total(self) -> int:
        return self.successes + self.slow_successes + self.failures + self.ignored


@dataclass
class _Book:
    """One lease's outcomes: pending (not sent yet) and sent but unanswered."""

    token: bytes
    sequence: int = 0
    pending: Aggregate = field(default_factory=Aggregate)
    unacked: List[breakers_pb2.LeasedOutcomes] = field(default_factory=list)
    ended: Optional[float] = None


class LeaseSlot:
    """A breaker's current lease (if any) and the books of its recent leases.

    The decision under a lease reads one attribute, `current` (a tuple replaced as a
    whole, so a reader sees one lease or none, never a mix: the analogue of the Rust
    client's seqlock), and the monotonic clock: allowed while `now < valid_until`,
    where `valid_until` was counted from when the lease request was *sent* (so it
    ends no later than the daemon's).
    """

    def __init__(self, clock=time.monotonic):
        self.lock = threading.Lock()
        self.clock = clock
        self.epoch = 0
        #: (epoch, valid_until, slow threshold or None, _Book) of the lease in force.
        self.current = None
        self.token: Optional[bytes] = None
        self.valid_until = 0.0
        self.slow: Optional[float] = None
        self.used = False
        self.wanted = False  # a lease was asked for (or is held): do not ask again
        self.books: Dict[int, _Book] = {}

    def ticket(self):
        """The `current` tuple when a valid lease is held now, else None (the hot path:
        no lock)."""
        cur = self.current
        if cur is not None and self.clock() < cur[1]:
            self.used = True  # a benign race: only read to decide on renewing
            return cur
        return None

    def holds(self) -> bool:
        cur = self.current
        return cur is not None and self.clock() < cur[1]

    def grant(self, token: bytes, valid_until: float, slow: Optional[float]) -> None:
        """Installs a new lease (a renewal too): a new epoch and a new book."""
        with self.lock:
            self._end_locked()
            self.epoch += 1
            self.token, self.valid_until, self.slow, self.used = token, valid_until, slow, False
            book = self.books[self.epoch] = _Book(token)
            self.current = (self.epoch, valid_until, slow, book)

    def void(self) -> bool:
        """A push, a lost stream or a revocation: the lease must not be used again.
        True if a lease was held (so the caller counts one revocation, not one per
        push: a trip is pushed at the change and again once committed)."""
        with self.lock:
            held = self.current is not None
            self.current = None
            self._end_locked()
            self.token, self.valid_until = None, 0.0
            return held

    def _end_locked(self):
        book = self.books.get(self.epoch)
        if book is not None and book.ended is None:
            book.ended = self.clock()

    def record(self, ticket, outcome: Outcome, duration: Optional[float]) -> None:
        """Counts an outcome of a call allowed under the lease of `ticket` (from
        `ticket()`), in that lease's book even if a newer lease came meanwhile."""
        slow = ticket[2]
        is_slow = (outcome == Outcome.SUCCESS and slow is not None and duration is not None
                   and duration > slow)
        with self.lock:
            ticket[3].pending.record(outcome, is_slow)

    def success(self, ticket, duration: Optional[float]) -> None:
        """`record(ticket, Outcome.SUCCESS, duration)`, the hot path's common case
        without the outcome dispatch."""
        slow = ticket[2]
        with self.lock:
            p = ticket[3].pending
            if slow is not None and duration is not None and duration > slow:
                p.slow_successes += 1
            else:
                p.successes += 1
            p.trailing_failures = 0

    def take_outgoing(self) -> List[breakers_pb2.LeasedOutcomes]:
        """Turns every book's pending counts into a numbered LeasedOutcomes (kept as
        unacked until answered) and drops books nothing more can come to."""
        out = []
        with self.lock:
            now = self.clock()
            for epoch, book in list(self.books.items()):
                p = book.pending
                if p.total():
                    book.sequence += 1
                    item = breakers_pb2.LeasedOutcomes(
                        lease=book.token, sequence=book.sequence,
                        successes=p.successes, slow_successes=p.slow_successes,
                        failures=p.failures, ignored=p.ignored,
                        leading_failures=p.leading_failures,
                        longest_failure_run=p.longest_failure_run,
                        trailing_failures=p.trailing_failures)
                    book.pending = Aggregate()
                    book.unacked.append(item)
                    out.append(item)
                # The daemon forgets a lease 30 s after its end; keep a margin.
                if book.ended is not None and (now - book.ended > 25 or (
                        not book.unacked and now - book.ended > 2)):
                    del self.books[epoch]
        return out

    def acked(self, token: bytes, sequence: int) -> None:
        with self.lock:
            for book in self.books.values():
                if book.token == token:
                    book.unacked = [o for o in book.unacked if o.sequence != sequence]

    def unacked(self) -> List[breakers_pb2.LeasedOutcomes]:
        with self.lock:
            return [o for b in self.books.values() for o in b.unacked]

    def has_unsent(self) -> bool:
        with self.lock:
            return any(b.pending.total() or b.unacked for b in self.books.values())


class LocalBreaker:
    """The LOCAL fallback's in-process breaker: a documented subset of the daemon's
    state machine, fed the last spec the client saw.

    Implemented: the consecutive-failures condition (the spec's, or 5 when unset),
    OPEN for the spec's `open_duration` (30 s when unknown), then HALF_OPEN with one
    probe at a time: a probe success closes, a failure re-opens. Not implemented:
    failure-rate and slow-call-rate conditions, backoff, several probes.
    """

    def __init__(self, threshold: int = 5, open_duration: float = 30.0, clock=time.monotonic):
        self.threshold = max(1, threshold)
        self.open_duration = open_duration
        self.clock = clock
        self.lock = threading.Lock()
        self.state = State.CLOSED
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    @classmethod
    def from_spec(cls, spec, clock=time.monotonic):
        """From a cbd.v1.BreakerSpec (or None: the defaults)."""
        threshold, open_duration = 5, 30.0
        if spec is not None:
            if spec.HasField("consecutive_failures"):
                threshold = spec.consecutive_failures
            if spec.HasField("open_duration"):
                open_duration = spec.open_duration.ToNanoseconds() / 1e9
        return cls(threshold, open_duration, clock)

    def acquire(self):
        """(allowed, state, retry_after seconds or None, probe?)."""
        with self.lock:
            now = self.clock()
            if self.state == State.OPEN:
                if now < self.open_until:
                    return False, State.OPEN, self.open_until - now, False
                self.state, self.probing = State.HALF_OPEN, False
            if self.state == State.HALF_OPEN:
                if self.probing:
                    return False, State.HALF_OPEN, None, False
                self.probing = True
                return True, State.HALF_OPEN, None, True
            return True, State.CLOSED, None, False

    def report(self, outcome: Outcome, probe: bool) -> State:
        with self.lock:
            if probe and self.state == State.HALF_OPEN:
                self.probing = False
                if outcome == Outcome.SUCCESS:
                    self.state, self.failures = State.CLOSED, 0
                elif outcome == Outcome.FAILURE:
                    self._trip()
            elif not probe and self.state == State.CLOSED:
                if outcome == Outcome.SUCCESS:
                    self.failures = 0
                elif outcome == Outcome.FAILURE:
                    self.failures += 1
                    if self.failures >= self.threshold:
                        self._trip()
            return self.state

    def _trip(self):
        self.state, self.failures = State.OPEN, 0
        self.open_until = self.clock() + self.open_duration
