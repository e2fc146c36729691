"""The resuming watch across kill -9 and a restart on the same data dir and port: no
event lost, none delivered twice, no second snapshot."""

import pytest

from cbd_client import Client, InvalidArgument, Snapshot


def test_watch_resumes_from_the_last_revision_after_kill_9_and_restart(daemon):
    with Client(daemon.address, acquire_deadline=2.0) as client:
        client.admin.put_breaker("w.before")
        with client.watch(prefix="w.", progress_interval=0.1) as watch:
            snap = watch.next(timeout=10)
            assert isinstance(snap, Snapshot) and not snap.resync
            assert [b.name for b in snap.breakers] == ["w.before"]
            put1 = client.admin.put_breaker("w.one")
            e1 = watch.next(timeout=10)
            assert (e1.name, e1.revision) == ("w.one", put1.revision)

            daemon.kill9()
            daemon.start()  # same port, same data dir
            # Two changes over a second connection; the watcher reconnects on its own.
            with Client(daemon.address, acquire_deadline=2.0) as other:
                put2 = other.admin.put_breaker("w.two")
                put3 = other.admin.put_breaker("w.three")
            e2 = watch.next(timeout=10)
            e3 = watch.next(timeout=10)
            assert [(e.name, e.revision) for e in (e2, e3)] == [("w.two", put2.revision),
                                                                ("w.three", put3.revision)]
            assert watch.reconnects >= 1
            assert watch.revision == put3.revision


def test_watch_from_a_start_revision_replays_then_follows(daemon):
    with Client(daemon.address, acquire_deadline=2.0) as client:
        r1 = client.admin.put_breaker("wr.one").revision
        r2 = client.admin.put_breaker("wr.two").revision
        with client.watch(names=["wr.two", "wr.three"], start_revision=r1, progress_interval=0.1) as watch:
            first = watch.next(timeout=10)
            assert (first.name, first.revision) == ("wr.two", r2), "filtered by name, no snapshot"
            r3 = client.admin.put_breaker("wr.three").revision
            assert watch.next(timeout=10).revision == r3


def test_a_bad_filter_fails_with_invalid_argument(daemon):
    with Client(daemon.address) as client:
        with pytest.raises(InvalidArgument):
            client.watch(prefix="bad prefix!").next(timeout=10)
        with pytest.raises(ValueError):
            client.watch(start_revision=0)
