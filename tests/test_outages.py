"""Outages: a locked SQLite file and a MongoDB server stopped mid-run.

Producers either succeed within a documented bound or raise a clear error;
consumers resume once the store is back; nothing acknowledged is lost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from mongo_server import MongoTestServer

from minibatch_rx import StoreBusyError, StoreUnavailableError, Window, stream
from minibatch_rx.partition_group import GroupMemberHandle
from minibatch_rx.running import PipelineHandle
from minibatch_rx.store.sqlite import _BUSY_RETRIES


def hold_write_lock(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def test_sqlite_locked_past_the_bound_raises_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    s = stream("busy", f"sqlite://{path}?timeout=0.2")
    s.append({"before": True})
    blocker = hold_write_lock(path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusyError, match="stayed locked") as failure:
            s.append({"during": True})
        elapsed = time.monotonic() - started
    finally:
        blocker.rollback()
        blocker.close()
    assert str(path) in str(failure.value)
    # (retries + 1) waits of the 0.2 s busy timeout, plus short pauses between them
    assert 0.2 * (_BUSY_RETRIES + 1) <= elapsed < 0.2 * (_BUSY_RETRIES + 1) + 2.0
    assert [m.data for m in s.read()] == [{"before": True}]
    assert s.append({"after": True}) == 2


def test_sqlite_lock_released_within_the_bound_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    s = stream("busy", f"sqlite://{path}?timeout=0.2")
    blocker = hold_write_lock(path)
    release = threading.Timer(0.3, blocker.rollback)
    release.start()
    try:
        assert s.append({"during": True}) == 1
    finally:
        release.join()
        blocker.close()
    assert s.count() == 1


class Seqs(list[int]):
    """The seqs of the windows a pipeline delivered, waited on under a condition."""

    def __init__(self) -> None:
        super().__init__()
        self.got = threading.Condition()

    def collect(self, window: Window) -> None:
        with self.got:
            self.extend(m.seq for m in window.messages)
            self.got.notify_all()

    def wait_for(self, n: int, timeout: float = 60) -> None:
        with self.got:
            assert self.got.wait_for(lambda: len(set(self)) >= n, timeout), f"delivered {len(set(self))}"


@pytest.mark.slow
def test_mongodb_restart_mid_run_loses_nothing() -> None:
    server = MongoTestServer().start()
    url = f"mongodb://127.0.0.1:{server.port}/outage?serverSelectionTimeoutMS=1000"
    try:
        s = stream("outage.in", url)
        s.extend({"i": i} for i in range(50))
        seen = Seqs()
        collect, wait_for = seen.collect, seen.wait_for
        handle = s.count_window(10).sink(collect).start(consumer="c")
        wait_for(50)

        server.stop(keep_data=True)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as failure:
            s.append({"i": "while down"})
        assert time.monotonic() - started < 15, "an append must fail within its documented bound"
        assert "unreachable" in str(failure.value)

        server.start()
        acknowledged = s.extend({"i": i} for i in range(50, 100))
        assert acknowledged == list(range(51, 101))
        wait_for(100)
        assert handle.running and handle.error is None
        handle.stop()
        assert sorted(set(seen)) == list(range(1, 101))
        assert s.position("c") == 100
        assert [m.data["i"] for m in s.read()] == list(range(100))
    finally:
        server.stop()


def outage_met(caplog: pytest.LogCaptureFixture, handle: PipelineHandle, logged: str) -> None:
    """Wait (bounded) until the running ``handle`` logged ``logged`` about the outage,
    still running: it waits the outage out instead of stopping with the error."""
    deadline = time.monotonic() + 60
    while logged not in caplog.text and handle.error is None and time.monotonic() < deadline:
        handle.join(0.05)
    assert handle.error is None, f"the member stopped on the outage: {handle.error!r}"
    assert logged in caplog.text


def test_a_keyed_group_member_rides_out_a_mongodb_restart(caplog: pytest.LogCaptureFixture) -> None:
    # A member of a group by key partition: its partitions' runs wait the outage out as
    # single consumers do, and so does the renewal of its partition leases.
    server = MongoTestServer().start()
    url = f"mongodb://127.0.0.1:{server.port}/keyedoutage?serverSelectionTimeoutMS=1000"
    try:
        s = stream("kout.in", url)
        s.extend({"k": i % 5, "i": i} for i in range(50))
        seen = Seqs()
        collect, wait_for = seen.collect, seen.wait_for
        handle = s.key_by("k").count_window(2).sink(collect).start(group="kg", lease_timeout=3, partitions=4)
        assert isinstance(handle, GroupMemberHandle)
        wait_for(50)
        server.stop(keep_data=True)
        outage_met(caplog, handle, "cannot renew partition leases")
        server.start()
        s.extend({"k": i % 5, "i": i} for i in range(50, 100))
        wait_for(100)
        assert handle.running and handle.error is None
        assert sorted(handle.partitions) == [0, 1, 2, 3]  # alone: it holds them all again
        handle.stop()
        assert sorted(seen) == list(range(1, 101))  # each once: no window of a partition twice
    finally:
        server.stop()


def test_a_group_member_rides_out_a_mongodb_restart(caplog: pytest.LogCaptureFixture) -> None:
    # Group members used to stop with the error where single consumers wait it out.
    server = MongoTestServer().start()
    url = f"mongodb://127.0.0.1:{server.port}/groupoutage?serverSelectionTimeoutMS=1000"
    try:
        s = stream("gout.in", url)
        s.extend({"i": i} for i in range(50))
        seen = Seqs()
        collect, wait_for = seen.collect, seen.wait_for
        handle = s.count_window(10).sink(collect).start(group="g", lease_timeout=5)
        wait_for(50)
        deadline = time.monotonic() + 60
        while handle.position < 50 and time.monotonic() < deadline:
            handle.join(0.05)
        assert handle.position == 50  # all committed: the member is idle, polling for leases
        server.stop(keep_data=True)
        # The member meets the outage while looking for work, and must wait it out.
        outage_met(caplog, handle, "group 'g' reading")
        assert "retrying" in caplog.text
        server.start()
        s.extend({"i": i} for i in range(50, 100))
        wait_for(100)
        assert handle.running and handle.error is None
        handle.stop()
        assert sorted(set(seen)) == list(range(1, 101))
    finally:
        server.stop()
