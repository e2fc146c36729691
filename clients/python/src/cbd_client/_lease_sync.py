"""The sync client's lease session (DESIGN §10): one Session stream per client,
owned by a background thread that asks for and renews leases, applies pushed
revocations, and sends leased outcomes every flush interval with sequence numbers
(resending unanswered ones, in order, on a new stream)."""

import logging
import queue
import threading
import time

import grpc

from . import errors
from ._pb.cbd.v1 import breakers_pb2

log = logging.getLogger("cbd_client")
RECONNECT_FIRST, RECONNECT_MAX = 0.05, 2.0


class SessionState:
    """What a lease session knows, apart from its transport (shared by the thread
    of the sync client and the task of the asyncio one): the breakers it serves, the
    requests in flight, and what an answer does. `requests` is the live stream's
    outgoing queue (anything with `put_nowait`), None while the stream is down."""

    def __init__(self, client):
        self.client = client
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.breakers = {}  # name -> Breaker
        self.asked = {}  # id -> ("lease", name, sent) | ("outcomes", name, token, sequence)
        self.renew_at = {}  # name -> monotonic time
        self.next_id = 0
        self.requests = None
        self.closed = False
        self.answers = 0  # answers on the current stream (resets the reconnect backoff)

    def want(self, breaker):
        """Serve `breaker`: ask for a lease on it now (or when the stream is up)."""
        with self.lock:
            self.breakers[breaker.name] = breaker
            if self.requests is not None:
                self._ask_lease(breaker.name)

    def has_unsent(self) -> bool:
        return any(b._lease.has_unsent() for b in list(self.breakers.values()))

    def _opened(self, requests):
        """A new stream: resend the unanswered outcomes in order, then ask again for
        the leases that were wanted."""
        with self.lock:
            self.requests = requests
            self.answers = 0
            for name, b in self.breakers.items():
                for item in sorted(b._lease.unacked(), key=lambda o: o.sequence):
                    self._send(("outcomes", name, item.lease, item.sequence), outcomes=item)
                with b._lease.lock:
                    wanted = b._lease.wanted
                if wanted:
                    self._ask_lease(name)

    def _send(self, asked, **kind):
        """Queues one request (lock held); returns False while the stream is down."""
        if self.requests is None:
            return False
        self.next_id += 1
        self.asked[self.next_id] = asked
        self.requests.put_nowait(breakers_pb2.SessionRequest(id=self.next_id, **kind))
        return True

    def _ask_lease(self, name):
        self._send(("lease", name, time.monotonic()), lease=breakers_pb2.LeaseRequest(
            name=name, caller=self.client.caller))

    def _next_backoff(self, backoff: float) -> float:
        """The reconnect delay after this one: back to the first after a stream that
        was answered, else doubled up to RECONNECT_MAX."""
        return RECONNECT_FIRST if self.answers else min(backoff * 2, RECONNECT_MAX)

    def _stream_lost(self):
        """No push can arrive any more: no lease may be used."""
        with self.lock:
            if self.requests is not None:
                self.requests.put_nowait(None)
            self.requests = None
            self.asked.clear()
            self.renew_at.clear()
            for b in self.breakers.values():
                b._lease.void()
                with b._lease.lock:
                    b._lease.wanted = False
            self.cond.notify_all()

    def _answered(self, answer):
        kind = answer.WhichOneof("kind")
        with self.lock:
            self.answers += 1
            if kind == "revoked":
                b = self.breakers.get(answer.revoked.name)
                if b is not None:
                    # A follow-up push (the change committed, or a later change) finds
                    # no lease held: only a push that voids one counts. A lease asked
                    # for meanwhile stays asked for: its answer still comes.
                    self.renew_at.pop(b.name, None)
                    if b._lease.void():
                        with b._lease.lock:
                            b._lease.wanted = False  # the next per-call acquire asks again
                        self.client.stats["leases_revoked"] += 1
                return
            asked = self.asked.pop(answer.id, None)
            if asked is None:
                return
            b = self.breakers.get(asked[1])
            if b is None:
                return
            if asked[0] == "lease":
                if kind == "lease" and answer.lease.granted:
                    g = answer.lease
                    length = g.valid_for.ToNanoseconds() / 1e9
                    slow = g.slow_call_duration.ToNanoseconds() / 1e9 if g.HasField("slow_call_duration") else None
                    # From when the request was sent: ends no later than at the daemon.
                    b._lease.grant(g.lease, asked[2] + length, slow)
                    self.renew_at[b.name] = asked[2] + length / 2
                    self.client.stats["leases_granted"] += 1
                else:
                    with b._lease.lock:
                        b._lease.wanted = False
                return
            _, name, token, sequence = asked
            if kind == "outcomes":
                b._lease.acked(token, sequence)
                self.cond.notify_all()
                return
            err = (errors.from_status_proto(answer.error) if kind == "error" else
                   errors.Internal(grpc.StatusCode.INTERNAL, f"unexpected answer {kind}"))
            if not err.transient:
                # Never countable (the breaker was deleted, the lease is bad, a gap):
                # resending would get the same answer, so drop it.
                log.warning("leased outcomes of %s dropped: %s", name, err)
                b._lease.acked(token, sequence)
                self.cond.notify_all()
                return
            for item in sorted(b._lease.unacked(), key=lambda o: o.sequence):
                if item.lease == token and item.sequence >= sequence:
                    self._send(("outcomes", name, token, item.sequence), outcomes=item)

    def _flush(self):
        with self.lock:
            self._flush_locked()

    def _flush_locked(self):
        if self.requests is None:
            return
        for name, b in self.breakers.items():
            for item in b._lease.take_outgoing():
                item.caller = self.client.caller  # kept on the unacked copy for resends
                self.client.stats["leased_decisions"] += (item.successes + item.slow_successes
                                                          + item.failures + item.ignored)
                self._send(("outcomes", name, item.lease, item.sequence), outcomes=item)

    def _renew(self):
        """Renews due leases that were used; lets unused ones go."""
        now = time.monotonic()
        with self.lock:
            for name, at in list(self.renew_at.items()):
                if at > now:
                    continue
                del self.renew_at[name]
                slot = self.breakers[name]._lease
                with slot.lock:
                    used = slot.used
                if used and slot.holds():
                    self._ask_lease(name)
                else:
                    with slot.lock:
                        slot.wanted = False


class LeaseSession(SessionState):
    """The sync client's session: a thread owns the stream (with a reader thread for
    the answers) and flushes and renews every flush interval."""

    def __init__(self, client):
        super().__init__(client)
        self.kick = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cbd-lease-session", daemon=True)
        self.thread.start()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        self._flush()
        with self.cond:
            while self.has_unsent():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, self.client.lease_flush_interval))
                self._flush_locked()
        return True

    def close(self):
        self.flush(1.0)
        with self.lock:
            self.closed = True
            if self.requests is not None:
                self.requests.put_nowait(None)
        self.kick.set()
        self.thread.join(2.0)

    def _run(self):
        backoff = RECONNECT_FIRST
        while not self.closed:
            requests = queue.Queue()
            try:
                call = self.client._breakers_stub().Session(
                    iter(requests.get, None), metadata=self.client.metadata, wait_for_ready=True)
            except Exception as e:  # the channel is closed
                log.debug("session could not start: %s", e)
                return
            if self.closed:
                return
            self._opened(requests)
            reader = threading.Thread(target=self._read, args=(call,), daemon=True)
            reader.start()
            while reader.is_alive() and not self.closed:
                self.kick.wait(self.client.lease_flush_interval)
                self.kick.clear()
                self._flush()
                self._renew()
            if self.closed:
                reader.join(1.0)
                call.cancel()
                return
            backoff = self._next_backoff(backoff)
            time.sleep(backoff * (0.8 + 0.4 * (time.monotonic() % 1)))

    def _read(self, call):
        try:
            for answer in call:
                self._answered(answer)
        except grpc.RpcError as e:
            log.debug("lease session lost: %s", e.code())
            # A standby naming the leader, or a replica gone: the next stream goes
            # where the client's calls go next (DESIGN §11.2).
            self.client._failed_over(errors.from_rpc_error(e))
        finally:
            self._stream_lost()
