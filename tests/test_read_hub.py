"""One reader per store per process (issue 12, points 1 and 2).

Every pipeline and ``observe()`` subscription on a store shares one watch and
a small pool of threads; idle, they neither spin nor grow in threads; a
commit in another process rings a doorbell, and a missed ring is made up for
by the fallback poll of the store's change counter.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_url
from reactivex import Observer
from waiting import wait_for

from minibatch_rx import StoreUnavailableError, Window, stream
from minibatch_rx import readhub as readhub_module
from minibatch_rx import store as store_module
from minibatch_rx.message import Message
from minibatch_rx.readhub import ReadHub
from minibatch_rx.source import hand_on
from minibatch_rx.store.doorbell import Bell, Ringer, bell_folder
from minibatch_rx.store.sqlite import SqliteStore
from minibatch_rx.store.sqlite_watch import SqliteWatch
from minibatch_rx.windows import ReadProgress

WAIT = 20.0




def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "minibatch-reader"]


class Seen:
    """Messages delivered per stream, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_stream: dict[str, list[int]] = {}

    def add(self, name: str, seqs: list[int]) -> None:
        with self.lock:
            self.by_stream.setdefault(name, []).extend(seqs)

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.by_stream.values())

    def of(self, name: str) -> list[int]:
        with self.lock:
            return list(self.by_stream.get(name, []))


def sink_into(seen: Seen, name: str) -> Callable[[Window], None]:
    def sink(window: Window) -> None:
        seen.add(name, [m.seq for m in window.messages])

    return sink


@pytest.fixture(autouse=True)
def _fresh_stores() -> Any:
    yield
    store_module.close_all()


def test_many_pipelines_share_one_watch_and_a_bounded_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readhub_module, "IDLE_EXIT", 0.2)
    url = f"sqlite://{tmp_path / 'many.db'}"
    names = [f"s{i}" for i in range(40)]
    seen = Seen()
    before = len(reader_threads())
    handles = [stream(n, url).count_window(1).sink(sink_into(seen, n)).start(consumer="c")
               for n in names]
    try:
        store = store_module.open_store(url)
        assert isinstance(store, SqliteStore)
        for n in names:
            stream(n, url).extend([{"n": n, "i": i} for i in range(3)])
        wait_for(lambda: seen.count() == 3 * len(names), "every message delivered")
        assert all(seen.of(n) == [1, 2, 3] for n in names), seen.by_stream
        # One watch (one connection polling the file) for all 40 pipelines, and
        # no more reader threads than the pool's size.
        assert len(store._watches) == 1
        assert len(reader_threads()) - before <= readhub_module.WORKERS
        # Idle, the pool shrinks back to the one thread watching the store.
        wait_for(lambda: len(reader_threads()) - before == 1, "the idle pool to shrink")
        stream("s7", url).append({"n": "s7", "i": 3})
        wait_for(lambda: seen.of("s7") == [1, 2, 3, 4], "a message after the pool shrank")
    finally:
        for handle in handles:
            handle.stop(timeout=5)
    wait_for(lambda: len(reader_threads()) == before, "reader threads to end after the last stop")
    assert store._watches == []


def test_idle_pipelines_neither_spin_nor_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite://{tmp_path / 'idle.db'}"
    names = [f"idle{i}" for i in range(50)]
    for n in names:
        stream(n, url).append({"warm": True})
    checks = [0]
    reads = [0]
    original_changed = SqliteWatch._changed
    original_read = SqliteStore.read

    def counting_changed(self: SqliteWatch) -> bool:
        checks[0] += 1
        return original_changed(self)

    def counting_read(self: SqliteStore, name: str, after: int = 0,
                      limit: int | None = None) -> list[Message]:
        reads[0] += 1
        return original_read(self, name, after, limit)

    monkeypatch.setattr(SqliteWatch, "_changed", counting_changed)
    monkeypatch.setattr(SqliteStore, "read", counting_read)
    seen = Seen()
    handles = [stream(n, url).count_window(1).sink(sink_into(seen, n)).start(consumer="c")
               for n in names]
    try:
        wait_for(lambda: seen.count() == len(names), "the first message of every stream")
        assert len(reader_threads()) <= readhub_module.WORKERS
        checks[0] = reads[0] = 0
        cpu = time.process_time()
        threads = len(reader_threads())
        # An idle interval being measured, not a wait for a result:
        time.sleep(1.0)  # noqa: sleep-ok
        spent = time.process_time() - cpu
        # The watch checks the file's change counter about every 50 ms, and
        # nothing is read: 50 pipelines polling would make thousands of checks.
        assert checks[0] <= 60, f"{checks[0]} change checks in 1 s of idling"
        assert reads[0] == 0, f"{reads[0]} reads while nothing was appended"
        # (The whole process, so generous: 50 readers polling would take most of the second.)
        assert spent < 0.4, f"{spent:.3f} s of CPU in 1 s of idling"
        assert len(reader_threads()) == threads
    finally:
        for handle in handles:
            handle.stop(timeout=5)


def test_only_streams_with_new_data_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite://{tmp_path / 'only.db'}"
    names = [f"o{i}" for i in range(10)]
    seen = Seen()
    handles = [stream(n, url).count_window(1).sink(sink_into(seen, n)).start(consumer="c")
               for n in names]
    try:
        for n in names:
            stream(n, url).append({"first": True})
        wait_for(lambda: seen.count() == len(names), "one message per stream")
        read_streams: list[str] = []
        original = SqliteStore.read

        def recording(self: SqliteStore, name: str, after: int = 0,
                      limit: int | None = None) -> list[Message]:
            read_streams.append(name)
            return original(self, name, after, limit)

        monkeypatch.setattr(SqliteStore, "read", recording)
        for _ in range(5):
            stream("o3", url).append({"more": True})
        wait_for(lambda: len(seen.of("o3")) == 6, "the five new messages of o3")
        assert set(read_streams) == {"o3"}, read_streams
    finally:
        for handle in handles:
            handle.stop(timeout=5)


def test_a_missed_doorbell_still_delivers_through_the_fallback_poll(tmp_path: Path) -> None:
    # A writer that never rings (here SQL straight into the file, through a
    # connection of its own: no doorbell, no in-process wake-up) is seen by
    # the watch's periodic check of the change counter.
    path = tmp_path / "missed.db"
    url = f"sqlite://{path}"
    s = stream("quiet", url)
    s.append({"i": 0})
    seen = Seen()
    handle = s.count_window(1).sink(sink_into(seen, "quiet")).start(consumer="c")
    try:
        wait_for(lambda: seen.of("quiet") == [1], "the first message")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO mb_messages (stream, seq, ts, data) VALUES ('quiet', 2, ?, '{\"i\": 1}')",
                     (time.time(),))
        conn.execute("UPDATE mb_streams SET last_seq = 2 WHERE name = 'quiet'")
        conn.execute("COMMIT")
        conn.close()
        wait_for(lambda: seen.of("quiet") == [1, 2], "the message written without a ring")
    finally:
        handle.stop(timeout=5)


def test_a_ring_wakes_a_bell_and_stale_bells_are_removed(tmp_path: Path) -> None:
    folder = bell_folder(tmp_path / "bells.db")
    bell = Bell(folder)
    dead = Bell(folder)
    dead_path = dead.path
    dead._socket.close()  # a process killed with -9 leaves its socket file behind
    try:
        assert dead_path.exists()
        ringer = Ringer(folder)
        ringer.ring()
        assert bell.wait(WAIT), "the bell was not rung"
        assert bell.drain() == 1
        assert not dead_path.exists(), "the dead process's bell should be removed"
        assert not bell.wait(0.0)
        ringer.close()
    finally:
        bell.close()
    assert not bell.path.exists()


def test_a_commit_in_another_process_rings_this_process(tmp_path: Path) -> None:
    path = tmp_path / "cross.db"
    url = f"sqlite://{path}"
    stream("x", url).append({"i": 0})
    bell = Bell(bell_folder(path))
    try:
        code = ("import sys; from minibatch_rx import stream; "
                "stream('x', sys.argv[1]).append({'i': 1})")
        subprocess.run([sys.executable, "-c", code, url], check=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert bell.wait(0.0), "the other process's commit did not ring this process's bell"
        assert bell.drain() >= 1
    finally:
        bell.close()


def test_a_long_backlog_does_not_starve_another_stream(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'fair.db'}"
    store = store_module.open_store(url)
    store.append("big", [{"i": i} for i in range(20_000)])
    store.append("small", [{"i": 0}])
    hub = ReadHub(store, hand_on, workers=1)
    order: list[tuple[str, int]] = []
    lock = threading.Lock()

    def recorder(name: str) -> Observer[Message]:
        def on_next(message: Message) -> None:
            with lock:
                order.append((name, message.seq))

        def on_error(error: Exception) -> None:
            errors.append(error)

        return Observer(on_next, on_error)

    errors: list[Exception] = []
    stops = [hub.subscribe("big", recorder("big"), lambda: 0, 500, ReadProgress()),
             hub.subscribe("small", recorder("small"), lambda: 0, 500, ReadProgress())]
    try:
        wait_for(lambda: len(order) == 20_001, "both streams read")
        small_at = order.index(("small", 1))
        # One thread, batches of 500, 8 batches a turn: "small" is served after
        # at most one turn of "big", not after its whole backlog.
        assert small_at <= readhub_module.FAIR_BATCHES * 500, small_at
        assert [seq for name, seq in order if name == "big"] == list(range(1, 20_001))
        assert errors == []
    finally:
        for stop in stops:
            stop()


def test_a_stuck_function_does_not_stall_other_pipelines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readhub_module, "WORKERS", 1)
    monkeypatch.setattr(readhub_module, "JOIN_TIMEOUT", 0.5)
    url = f"sqlite://{tmp_path / 'stuck.db'}"
    release = threading.Event()
    entered = threading.Event()

    def stuck(window: Window) -> None:
        entered.set()
        release.wait(3 * WAIT)  # released by the test's end, long after its checks

    seen = Seen()
    stuck_handle = stream("stuck", url).count_window(1).sink(stuck).start(consumer="c")
    other = stream("fine", url).count_window(1).sink(sink_into(seen, "fine")).start(consumer="c")
    try:
        stream("stuck", url).append({"i": 0})
        assert entered.wait(WAIT)
        stuck_handle.stop(timeout=0.5)  # abandons the stuck call: the pool replaces its thread
        stream("fine", url).append({"i": 0})
        wait_for(lambda: seen.of("fine") == [1], "the other pipeline's message")
    finally:
        release.set()
        other.stop(timeout=5)


@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_one_watch_per_store_whatever_the_number_of_pipelines(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(backend, tmp_path, request)
    store = store_module.open_store(url)
    opened: list[object] = []
    original = type(store).watch  # type: ignore[attr-defined]

    def counting(self: Any) -> Any:
        watch = original(self)
        opened.append(watch)
        return watch

    monkeypatch.setattr(type(store), "watch", counting)
    names = [f"w{i}" for i in range(12)]
    seen = Seen()
    handles = [stream(n, url).count_window(2).sink(sink_into(seen, n)).start(consumer="c")
               for n in names]
    try:
        for n in names:
            stream(n, url).extend([{"i": 0}, {"i": 1}])
        wait_for(lambda: seen.count() == 2 * len(names), "every window")
        assert all(seen.of(n) == [1, 2] for n in names)
        assert len(opened) == 1, f"{len(opened)} watches (change streams) for {len(names)} pipelines"
    finally:
        for handle in handles:
            handle.stop(timeout=5)


def test_a_failing_watch_is_reopened_and_delivery_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite://{tmp_path / 'failing.db'}"
    s = stream("f", url)
    s.append({"i": 0})
    seen = Seen()
    failures = [0]
    original = SqliteWatch.poll

    def failing_once(self: SqliteWatch, streams: Any, timeout: float) -> dict[str, int | None]:
        if failures[0] == 0:
            failures[0] += 1
            raise RuntimeError("the watch broke")
        return original(self, streams, timeout)

    monkeypatch.setattr(SqliteWatch, "poll", failing_once)
    handle = s.count_window(1).sink(sink_into(seen, "f")).start(consumer="c")
    try:
        wait_for(lambda: seen.of("f") == [1], "the stored message")
        wait_for(lambda: failures[0] == 1, "the watch to fail once")
        s.append({"i": 1})
        wait_for(lambda: seen.of("f") == [1, 2], "a message appended after the failure")
        assert "the watch broke" in caplog.text
    finally:
        handle.stop(timeout=5)


def _child_runs_a_pipeline(url: str) -> None:
    """In a forked child: a pipeline of its own, then an append the parent's pipeline must see."""
    done = threading.Event()
    s = stream("child", url)
    handle = s.count_window(1).sink(lambda _w: done.set()).start(consumer="c")
    s.append({"i": 0})  # after the start: the child's own watch must see it
    delivered = done.wait(20)
    handle.stop(timeout=5)
    stream("parent", url).append({"from": "child"})
    os._exit(0 if delivered else 3)


def test_a_forked_child_reads_with_threads_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'fork.db'}"
    seen = Seen()
    handle = stream("parent", url).count_window(1).sink(sink_into(seen, "parent")).start(consumer="c")
    try:
        stream("parent", url).append({"i": 0})
        wait_for(lambda: seen.of("parent") == [1], "the parent's first message")
        child = multiprocessing.get_context("fork").Process(target=_child_runs_a_pipeline, args=(url,))
        child.start()
        child.join(60)
        assert child.exitcode == 0, "the child's pipeline delivered nothing (exit 3) or failed"
        wait_for(lambda: seen.of("parent") == [1, 2], "the child's append, in the parent")
    finally:
        handle.stop(timeout=5)


def test_a_stream_first_subscribed_while_the_watch_waits_is_not_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The leader polls with the streams it knew when it began; an append to a stream
    # subscribed meanwhile is used up by that poll, and must still be delivered.
    store = store_module.open_store(f"sqlite://{tmp_path / 'late.db'}")
    store.append("A", [{"i": 0}])
    polling, go = threading.Event(), threading.Event()
    original = SqliteWatch.poll

    def held(self: SqliteWatch, streams: Any, timeout: float) -> dict[str, int | None]:
        polling.set()
        go.wait(WAIT)
        return original(self, streams, timeout)

    monkeypatch.setattr(SqliteWatch, "poll", held)
    hub = ReadHub(store, hand_on)
    got: dict[str, list[int]] = {"A": [], "B": []}

    def recorder(name: str) -> Observer[Message]:
        return Observer(lambda m: got[name].append(m.seq))

    stops = [hub.subscribe("A", recorder("A"), lambda: 0, 100, ReadProgress())]
    try:
        go.set()
        wait_for(lambda: got["A"] == [1], "A's message")
        go.clear()
        polling.clear()
        assert polling.wait(WAIT), "the leader's next poll (knowing only A)"
        progress = ReadProgress()
        progress.behind = True
        stops.append(hub.subscribe("B", recorder("B"), lambda: 0, 100, progress))
        wait_for(lambda: not progress.behind, "B's first read (of an empty stream)")
        store.append("B", [{"i": 0}])
        go.set()
        wait_for(lambda: got["B"] == [1], "B's message, appended during the poll")
    finally:
        go.set()
        for stop in stops:
            stop()


def test_closing_the_stores_tells_running_pipelines_and_ends_the_readers(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'closing.db'}"
    before = set(reader_threads())  # (other tests' readers may still be ending)
    seen = Seen()
    handles = [stream(f"c{i}", url).count_window(1).sink(sink_into(seen, f"c{i}")).start(consumer="c")
               for i in range(5)]
    for i in range(5):
        stream(f"c{i}", url).append({"i": i})
    wait_for(lambda: seen.count() == 5, "a message per pipeline")
    store_module.close_all()  # while they run
    for handle in handles:
        assert handle.join(WAIT), "a pipeline did not end when its store was closed"
        assert isinstance(handle.error, StoreUnavailableError) and "closed" in str(handle.error)
    wait_for(lambda: set(reader_threads()) <= before, "the reader threads to end")


def test_an_unreachable_store_is_retried_with_a_growing_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_module.open_store(f"sqlite://{tmp_path / 'down.db'}")
    attempts: list[float] = []

    def down(self: SqliteStore, name: str, after: int = 0, limit: int | None = None) -> list[Message]:
        attempts.append(time.monotonic())
        raise StoreUnavailableError("down for the test")

    monkeypatch.setattr(SqliteStore, "read", down)
    hub = ReadHub(store, hand_on)
    stop = hub.subscribe("s", Observer(lambda _m: None), lambda: 0, 100, ReadProgress())
    try:
        wait_for(lambda: len(attempts) >= 5, "five attempts")
    finally:
        stop()
    gaps = [b - a for a, b in itertools.pairwise(attempts[:5])]
    assert gaps[-1] > 2 * gaps[0], f"the back-off did not grow: {gaps}"
