"""Stream.observe(): catch-up from a position, then live messages, and clean disposal."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import reactivex.operators as ops
from conftest import make_url

from minibatch_rx import InvalidArgumentError, Message, Stream
from minibatch_rx import store as store_module


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Return once ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        tick.wait(0.01)


class Collector:
    """A thread-safe observer that records what it receives and on which thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[Message] = []
        self.threads: set[int] = set()
        self.errors: list[Exception] = []
        self.completed = False

    def on_next(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)
            self.threads.add(threading.get_ident())

    def on_error(self, error: Exception) -> None:
        with self.lock:
            self.errors.append(error)

    def on_completed(self) -> None:
        with self.lock:
            self.completed = True

    def seqs(self) -> list[int]:
        with self.lock:
            return [m.seq for m in self.messages]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[int]:
        wait_until(lambda: self.count() >= count or bool(self.errors), timeout, f"{count} messages")
        assert self.errors == []
        return self.seqs()

    def subscribe_to(self, source: Any) -> Any:
        return source.subscribe(self.on_next, self.on_error, self.on_completed)


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def open_db_fds(db: Path) -> int:
    """How many of this process's file descriptors point at the database or its WAL/SHM files."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the fd was closed while we listed the directory
        if target.startswith(str(db)):
            count += 1
    return count


# -- catch-up and live delivery -------------------------------------------------


def test_replays_existing_then_delivers_live_appends_from_another_thread(store_url: str) -> None:
    s = Stream.get_or_create("live", url=store_url)
    s.extend([{"n": n} for n in range(1, 4)])
    seen = Collector()
    sub = seen.subscribe_to(s.observe())
    try:
        assert seen.wait_for(3) == [1, 2, 3]

        def produce() -> None:
            for n in range(4, 7):
                s.append({"n": n})

        producer = threading.Thread(target=produce)
        producer.start()
        producer.join(10)
        assert not producer.is_alive()
        assert seen.wait_for(6) == [1, 2, 3, 4, 5, 6]
        assert [m.data["n"] for m in seen.messages] == [1, 2, 3, 4, 5, 6]
        assert all(m.stream == "live" for m in seen.messages)
        assert seen.completed is False  # a stream never completes
    finally:
        sub.dispose()


def test_observe_of_an_empty_stream_waits_for_the_first_append(store_url: str) -> None:
    s = Stream.get_or_create("empty", url=store_url)
    seen = Collector()
    sub = seen.subscribe_to(s.observe())
    try:
        assert seen.count() == 0
        s.append({"first": True})
        assert seen.wait_for(1) == [1]
        assert seen.messages[0].data == {"first": True}
    finally:
        sub.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "mongodb"])
def test_delivers_appends_made_by_another_process(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(kind, tmp_path, request)
    s = Stream.get_or_create("xproc", url=url)
    s.append({"n": 0})
    seen = Collector()
    sub = seen.subscribe_to(s.observe())
    try:
        assert seen.wait_for(1) == [1]
        code = (
            "import sys\n"
            "from minibatch_rx import Stream\n"
            "s = Stream.get_or_create('xproc', url=sys.argv[1])\n"
            "print(s.extend([{'n': 1}, {'n': 2}]), s.append({'n': 3}))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[2, 3] 4"
        assert seen.wait_for(4) == [1, 2, 3, 4]
        assert [m.data["n"] for m in seen.messages] == [0, 1, 2, 3]
    finally:
        sub.dispose()


def test_small_batch_size_still_delivers_everything_in_order(store_url: str) -> None:
    s = Stream.get_or_create("batched", url=store_url)
    s.extend([{"n": n} for n in range(23)])
    seen = Collector()
    sub = seen.subscribe_to(s.observe(batch_size=4))
    try:
        assert seen.wait_for(23) == list(range(1, 24))
        s.extend([{"n": n} for n in range(23, 30)])
        assert seen.wait_for(30) == list(range(1, 31))
    finally:
        sub.dispose()


def test_batch_size_must_be_positive(store_url: str) -> None:
    s = Stream.get_or_create("batched", url=store_url)
    with pytest.raises(InvalidArgumentError):
        s.observe(batch_size=0)
    with pytest.raises(InvalidArgumentError):
        s.observe(batch_size=-5)


def test_concurrent_subscriptions_each_see_every_message(store_url: str) -> None:
    s = Stream.get_or_create("fanout", url=store_url)
    s.extend([{"n": 1}, {"n": 2}])
    first, second = Collector(), Collector()
    subs = [first.subscribe_to(s.observe()), second.subscribe_to(s.observe(after=1))]
    try:
        s.append({"n": 3})
        assert first.wait_for(3) == [1, 2, 3]
        assert second.wait_for(2) == [2, 3]
    finally:
        for sub in subs:
            sub.dispose()


# -- where observation starts ---------------------------------------------------


def test_observe_with_consumer_starts_after_its_committed_position(store_url: str) -> None:
    s = Stream.get_or_create("positions", url=store_url)
    s.extend([{"n": n} for n in range(1, 6)])
    s.commit("worker", 2)
    seen = Collector()
    sub = seen.subscribe_to(s.observe(consumer="worker"))
    try:
        assert seen.wait_for(3) == [3, 4, 5]
        s.append({"n": 6})
        assert seen.wait_for(4) == [3, 4, 5, 6]
        assert s.position("worker") == 2  # observing never commits
    finally:
        sub.dispose()


def test_observe_with_unknown_consumer_starts_at_the_beginning(store_url: str) -> None:
    s = Stream.get_or_create("positions", url=store_url)
    s.extend([{"n": n} for n in range(1, 4)])
    seen = Collector()
    sub = seen.subscribe_to(s.observe(consumer="newcomer"))
    try:
        assert seen.wait_for(3) == [1, 2, 3]
    finally:
        sub.dispose()
    assert s.position("newcomer") == 0


def test_observe_after(store_url: str) -> None:
    s = Stream.get_or_create("after", url=store_url)
    s.extend([{"n": n} for n in range(1, 6)])
    seen = Collector()
    sub = seen.subscribe_to(s.observe(after=3))
    try:
        assert seen.wait_for(2) == [4, 5]
        s.append({"n": 6})
        assert seen.wait_for(3) == [4, 5, 6]
    finally:
        sub.dispose()


def test_observe_after_overrides_consumer_position(store_url: str) -> None:
    s = Stream.get_or_create("after", url=store_url)
    s.extend([{"n": n} for n in range(1, 6)])
    s.commit("worker", 4)
    seen = Collector()
    sub = seen.subscribe_to(s.observe(consumer="worker", after=1))
    try:
        assert seen.wait_for(4) == [2, 3, 4, 5]
    finally:
        sub.dispose()


def test_observe_after_the_end_waits_for_later_seqs(store_url: str) -> None:
    s = Stream.get_or_create("after", url=store_url)
    s.extend([{"n": 1}, {"n": 2}])
    seen = Collector()
    sub = seen.subscribe_to(s.observe(after=3))
    try:
        s.append({"n": 3})  # seq 3: not after 3
        s.append({"n": 4})  # seq 4: delivered
        assert seen.wait_for(1) == [4]
        s.append({"n": 5})
        assert seen.wait_for(2) == [4, 5]
    finally:
        sub.dispose()


def test_position_is_read_at_subscribe_time(store_url: str) -> None:
    s = Stream.get_or_create("late", url=store_url)
    s.extend([{"n": n} for n in range(1, 5)])
    source = s.observe(consumer="worker")
    s.commit("worker", 3)  # committed after observe() but before subscribing
    seen = Collector()
    sub = seen.subscribe_to(source)
    try:
        assert seen.wait_for(1) == [4]
    finally:
        sub.dispose()


# -- disposal -------------------------------------------------------------------


def test_dispose_stops_background_threads_and_delivery(backend: str, store_url: str) -> None:
    s = Stream.get_or_create("dispose", url=store_url)
    s.append({"n": 1})
    before = set(threading.enumerate())
    seen = Collector()
    sub = seen.subscribe_to(s.observe())
    assert seen.wait_for(1) == [1]
    if backend == "memory":
        assert new_threads(before) == []  # push delivery needs no thread
    else:
        assert len(new_threads(before)) >= 1  # the reader thread is running

    sub.dispose()

    wait_until(lambda: new_threads(before) == [], timeout=10, what="reader threads to end")
    assert threading.active_count() <= len(before)
    s.append({"n": 2})
    # The reader thread is gone, so nothing can deliver seq 2 any more.
    assert seen.seqs() == [1]
    assert seen.errors == []
    sub.dispose()  # disposing twice is harmless


def test_dispose_closes_sqlite_file_descriptors(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s = Stream.get_or_create("fds", url=make_url("sqlite", tmp_path, request))
    s.append({"n": 1})
    db = s.store.path  # type: ignore[attr-defined]

    def observe_once() -> None:
        seen = Collector()
        sub = seen.subscribe_to(s.observe())
        assert seen.wait_for(1)[0] == 1
        sub.dispose()

    # SQLite's unix VFS keeps the database fd of a closed connection open while
    # another connection in the process holds a lock on the file, and reuses it
    # for the next connection. So warm up once, then measure.
    before = set(threading.enumerate())
    observe_once()
    # Once the last subscription is gone, the store's reader threads end and
    # its watch closes its connection.
    wait_until(lambda: all(not t.name.startswith("minibatch-reader") for t in new_threads(before)),
               timeout=10, what="reader threads to end")
    baseline = open_db_fds(db)
    assert baseline >= 3  # the pooled connection's db, -wal and -shm files

    for round_ in range(3):
        observe_once()  # the process's watch on the store holds a connection meanwhile
        wait_until(lambda: open_db_fds(db) == baseline, timeout=10, what=f"fds closed (round {round_})")

    store_module.close_all()
    assert open_db_fds(db) == 0  # closing the store releases everything


def test_second_subscription_works_after_disposal(store_url: str) -> None:
    s = Stream.get_or_create("again", url=store_url)
    s.extend([{"n": 1}, {"n": 2}])
    source = s.observe()
    first = Collector()
    sub = first.subscribe_to(source)
    assert first.wait_for(2) == [1, 2]
    sub.dispose()

    s.append({"n": 3})
    second = Collector()
    sub = second.subscribe_to(source)  # the same observable, subscribed again
    try:
        assert second.wait_for(3) == [1, 2, 3]
        s.append({"n": 4})
        assert second.wait_for(4) == [1, 2, 3, 4]
    finally:
        sub.dispose()
    assert first.seqs() == [1, 2]


def test_operator_that_completes_disposes_the_source(backend: str, store_url: str) -> None:
    s = Stream.get_or_create("take", url=store_url)
    s.extend([{"n": n} for n in range(1, 6)])
    before = set(threading.enumerate())
    seen = Collector()
    seen.subscribe_to(s.observe().pipe(ops.take(3)))
    wait_until(lambda: seen.completed, what="take(3) to complete")
    assert seen.seqs() == [1, 2, 3]
    wait_until(lambda: new_threads(before) == [], timeout=10, what="reader threads to end")
    s.append({"n": 6})
    assert seen.seqs() == [1, 2, 3]


# -- memory: push delivery ------------------------------------------------------


def test_memory_delivers_synchronously_inside_append(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    s = Stream.get_or_create("sync", url=make_url("memory", tmp_path, request))
    s.append({"n": 1})
    seen = Collector()
    sub = seen.subscribe_to(s.observe())
    try:
        assert seen.seqs() == [1]  # catch-up happens inside subscribe
        assert s.append({"n": 2}) == 2
        assert seen.seqs() == [1, 2]  # no waiting: delivered before append returned
        assert s.extend([{"n": 3}, {"n": 4}]) == [3, 4]
        assert seen.seqs() == [1, 2, 3, 4]
        assert seen.threads == {threading.get_ident()}
    finally:
        sub.dispose()
    s.append({"n": 5})
    assert seen.seqs() == [1, 2, 3, 4]


def test_memory_appends_from_inside_on_next_are_delivered_in_order(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    s = Stream.get_or_create("reentrant", url=make_url("memory", tmp_path, request))
    seen: list[int] = []

    def on_next(message: Message) -> None:
        seen.append(message.seq)
        if message.seq < 5:
            s.append({"n": message.seq + 1})

    sub = s.observe().subscribe(on_next)
    try:
        s.append({"n": 1})
        assert seen == [1, 2, 3, 4, 5]
    finally:
        sub.dispose()
