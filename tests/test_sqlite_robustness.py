"""SQLite failures surface as the library's own errors, with nothing stored.

Corrupt files, directories, missing folders, a full disk, a lock held while a
store opens, read-only files; plus the ingest time never decreasing along seq.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from minibatch_rx import MinibatchError, StoreBusyError, Stream, open_store, stream
from minibatch_rx import store as store_module
from minibatch_rx.errors import ReadOnlyStoreError, StoreFullError, StoreOpenError
from minibatch_rx.store import sqlite as sqlite_module
from minibatch_rx.store.sqlite import SqliteStore, parse_sqlite_url

PAGES = 48
"""Size limit of the 'full disk' (PRAGMA max_page_count, 4 KB pages)."""
PAD = "x" * 3000
"""Larger than a b-tree cell may hold in place: every such message needs a new
(overflow) page, so on a full database it fails rather than fitting in a gap."""


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (bounded)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


# -- opening ----------------------------------------------------------------------


def test_corrupt_file_raises_store_open_error_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    with pytest.raises(StoreOpenError, match="not a SQLite database or is corrupt") as failure:
        open_store(f"sqlite://{path}")
    assert str(path) in str(failure.value)
    assert isinstance(failure.value, MinibatchError)
    assert path.read_bytes() == garbage
    with pytest.raises(StoreOpenError):
        stream("s", f"sqlite://{path}")


def test_directory_given_as_the_database_raises_store_open_error(tmp_path: Path) -> None:
    folder = tmp_path / "folder.db"
    folder.mkdir()
    with pytest.raises(StoreOpenError, match="is a directory") as failure:
        open_store(f"sqlite://{folder}")
    assert str(folder) in str(failure.value)
    assert list(folder.iterdir()) == []


def test_only_the_files_own_folder_is_created(tmp_path: Path) -> None:
    deep = tmp_path / "missing" / "dir" / "x.db"
    with pytest.raises(StoreOpenError, match="does not exist") as failure:
        open_store(f"sqlite://{deep}")
    assert f"folder {tmp_path / 'missing'} does not exist" in str(failure.value)
    assert not (tmp_path / "missing").exists()

    own = tmp_path / "own" / "x.db"
    assert stream("s", f"sqlite://{own}").append({"n": 1}) == 1
    assert own.is_file()


def test_default_store_still_creates_its_folder(tmp_path: Path) -> None:
    # conftest sets MINIBATCH_HOME to tmp_path/home, which does not exist yet
    assert not (tmp_path / "home").exists()
    assert Stream.get_or_create("defaulted").append({"n": 1}) == 1
    assert (tmp_path / "home" / "streams.db").is_file()


def hold_write_lock_on_a_new_file(path: Path) -> sqlite3.Connection:
    """What a second process sees while the first is still creating the file:
    a database in rollback-journal mode with a write transaction open."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE other (n)")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO other VALUES (1)")
    return conn


def test_open_waits_out_a_lock_within_the_append_budget(tmp_path: Path) -> None:
    path = tmp_path / "opening.db"
    holder = hold_write_lock_on_a_new_file(path)
    release = threading.Timer(0.3, holder.commit)
    release.start()
    try:
        store = open_store(f"sqlite://{path}?timeout=0.2")  # budget: 4 x 0.2 s
    finally:
        release.join()
        holder.close()
    assert store.append("s", [{"n": 1}]) == [1]


def test_open_locked_past_the_budget_raises_store_busy(tmp_path: Path) -> None:
    path = tmp_path / "opening.db"
    holder = hold_write_lock_on_a_new_file(path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreBusyError, match="stayed locked") as failure:
            open_store(f"sqlite://{path}?timeout=0.1")
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert str(path) in str(failure.value)
    assert 0.4 <= elapsed < 3.0
    assert open_store(f"sqlite://{path}?timeout=0.1").append("s", [{"n": 1}]) == [1]


# -- disk full ----------------------------------------------------------------------


@pytest.fixture
def small_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every SQLite connection may grow its database to PAGES pages only:
    SQLite then fails writes with SQLITE_FULL, 'database or disk is full'."""
    connect = SqliteStore.connect

    def limited(self: SqliteStore) -> sqlite3.Connection:
        conn = connect(self)
        conn.execute(f"PRAGMA max_page_count = {PAGES}")
        return conn

    monkeypatch.setattr(SqliteStore, "connect", limited)


def fill(s: Stream) -> None:
    """Append big messages to ``s`` until the database is full."""
    for _ in range(PAGES):
        try:
            s.append({"pad": PAD})
        except StoreFullError:
            return
    raise AssertionError("the database never filled up")


def test_disk_full_on_append_raises_store_full_and_stores_nothing(
    tmp_path: Path, small_disk: None
) -> None:
    url = f"sqlite://{tmp_path / 'full.db'}"
    s = stream("s", url)
    s.extend([{"n": 1}, {"n": 2}])
    fill(stream("filler", url))
    with pytest.raises(StoreFullError, match="database or disk is full") as failure:
        s.extend([{"n": i, "pad": PAD} for i in range(3, 23)])
    assert str(tmp_path / "full.db") in str(failure.value)
    assert [m.data for m in s.read()] == [{"n": 1}, {"n": 2}]
    assert s.last_seq() == 2
    stream("filler", url).delete()  # space is back
    assert s.extend([{"n": 3, "pad": PAD}]) == [3]  # no seq was used up


CONSUMER = "c" + "x" * 99


def fill_positions(s: Stream) -> None:
    """Register consumers of ``s`` (names as long as CONSUMER, sorting before
    it) until the database is full: then registering CONSUMER needs a new page."""
    for i in range(PAGES * 40):
        try:
            s.commit(f"b{i:05d}".ljust(len(CONSUMER), "x"), 0)
        except StoreFullError:
            return
    raise AssertionError("the database never filled up")


@contextmanager
def full_disk_warnings() -> Iterator[threading.Event]:
    """An event set once the library logs that it is waiting out a full disk."""
    seen = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "database or disk is full" in record.getMessage():
                seen.set()

    watch = Watch(logging.WARNING)
    logging.getLogger("minibatch_rx").addHandler(watch)
    try:
        yield seen
    finally:
        logging.getLogger("minibatch_rx").removeHandler(watch)


def test_consumer_on_a_full_disk_waits_and_continues(tmp_path: Path, small_disk: None) -> None:
    url = f"sqlite://{tmp_path / 'full.db'}"
    source = stream("in", url)
    source.extend({"n": i} for i in range(20))
    out = stream("out", url)
    filler = stream("filler", url)
    fill(filler)
    fill_positions(source)
    with pytest.raises(StoreFullError):
        source.commit(CONSUMER, 0)

    pipeline = (source.count_window(5)
                .map(lambda w: {"sum": sum(m.data["n"] for m in w.messages), "pad": PAD})
                .sink(out).with_retries(max_retries=0))  # a retry must not be what saves it
    outcome: dict[str, Any] = {}

    def start() -> None:  # blocks while the consumer cannot be registered
        try:
            outcome["handle"] = pipeline.start(consumer=CONSUMER)
        except Exception as exc:
            outcome["error"] = exc

    with full_disk_warnings() as full:
        starter = threading.Thread(target=start)
        starter.start()
        assert wait_until(lambda: full.is_set() or bool(outcome)), "commit_position never hit the full disk"
        assert outcome == {}, outcome  # still waiting: neither started nor failed
        filler.delete()  # space is back
        starter.join(30)
        handle = outcome["handle"]
        try:
            assert wait_until(lambda: source.position(CONSUMER) == 20), handle.error
        finally:
            handle.stop()
    assert handle.error is None
    assert [m.data["sum"] for m in out.read()] == [10, 35, 60, 85]
    assert stream("in.dead", url).count() == 0


def test_sink_on_a_full_disk_waits_instead_of_dead_lettering(tmp_path: Path, small_disk: None) -> None:
    url = f"sqlite://{tmp_path / 'full.db'}"
    source = stream("in", url)
    source.extend({"n": i} for i in range(20))
    source.commit("c", 0)
    out = stream("out", url)
    filler = stream("filler", url)
    fill(filler)
    with full_disk_warnings() as full:
        handle = (source.count_window(5)
                  .map(lambda w: {"sum": sum(m.data["n"] for m in w.messages), "pad": PAD})
                  .sink(out).with_retries(max_retries=0)  # a retry must not be what saves it
                  .start(consumer="c"))
        try:
            assert full.wait(30), "the sink never hit the full disk"
            assert handle.running and handle.error is None
            assert out.count() == 0
            filler.delete()  # space is back
            assert wait_until(lambda: source.position("c") == 20), handle.error
        finally:
            handle.stop()
    assert handle.error is None
    assert [m.data["sum"] for m in out.read()] == [10, 35, 60, 85]
    assert stream("in.dead", url).count() == 0


# -- read-only ----------------------------------------------------------------------


def make_database(path: Path) -> None:
    s = stream("s", f"sqlite://{path}")
    s.extend([{"n": 1}, {"n": 2}])
    s.commit("c", 1)
    store_module.close_all()  # later opens of this URL start afresh


def test_mode_ro_is_a_url_option() -> None:
    assert parse_sqlite_url("sqlite:///x.db?mode=ro") == (Path("/x.db"), {"mode": "ro"})
    with pytest.raises(MinibatchError, match="mode must be 'ro'"):
        parse_sqlite_url("sqlite:///x.db?mode=rw")


def test_mode_ro_reads_and_refuses_every_write(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    make_database(path)
    before = path.read_bytes()
    url = f"sqlite://{path}?mode=ro"
    s = stream("s", url)  # registering an existing stream needs no write
    assert [m.data for m in s.read()] == [{"n": 1}, {"n": 2}]
    assert (s.count(), s.last_seq(), s.position("c")) == (2, 2, 1)
    writes: list[Callable[[], Any]] = [
        lambda: s.append({"n": 3}),
        lambda: s.extend([{"n": 3}], keys=["k"]),
        lambda: s.commit("c", 2),
        lambda: s.clear(),
        lambda: stream("new", url),
    ]
    for write in writes:
        with pytest.raises(ReadOnlyStoreError, match="opened read-only") as failure:
            write()
        assert str(path) in str(failure.value)
        assert isinstance(failure.value, PermissionError)
    assert path.read_bytes() == before


def test_mode_ro_observes_a_writer_live(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    make_database(path)
    writer = stream("s", f"sqlite://{path}")
    reader = stream("s", f"sqlite://{path}?mode=ro")
    seen: list[int] = []
    subscription = reader.observe(consumer="c").subscribe(lambda m: seen.append(m.seq))
    try:
        writer.append({"n": 3})
        assert wait_until(lambda: seen == [2, 3]), seen
    finally:
        subscription.dispose()


def test_mode_ro_on_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(StoreOpenError, match="does not exist"):
        open_store(f"sqlite://{path}?mode=ro")
    assert not path.exists()


def read_as_another_user(path: Path) -> dict[str, Any]:
    """Open ``path`` with no URL option, as a user who may not write it."""
    store = SqliteStore(f"sqlite://{path}")
    try:
        result: dict[str, Any] = {"read_only": store.read_only,
                                  "data": [m.data for m in store.read("s")]}
        try:
            store.append("s", [{"n": 3}])
        except ReadOnlyStoreError as exc:
            result["refused"] = str(exc)
        return result
    finally:
        store.close()


def _child(path: str, results: Any) -> None:
    os.setgid(65534)
    os.setuid(65534)  # nobody: may read the file, may not write it
    results.put(read_as_another_user(Path(path)))


def test_a_file_that_is_not_writable_opens_read_only(tmp_path: Path) -> None:
    # A folder of its own in the system temp folder, so that another user can reach it.
    folder = Path(tempfile.mkdtemp(prefix="minibatch-ro-"))
    try:
        path = folder / "ro.db"
        make_database(path)
        path.chmod(0o444)
        folder.chmod(0o777)  # SQLite's -shm file may still be created
        if os.geteuid() == 0:  # root writes anything: drop privileges in a child
            context = multiprocessing.get_context("fork")
            results = context.Queue()
            child = context.Process(target=_child, args=(str(path), results))
            child.start()
            result = results.get(timeout=60)
            child.join(60)
            assert child.exitcode == 0
        else:
            result = read_as_another_user(path)
    finally:
        shutil.rmtree(folder)
    assert result["read_only"] == "because the file is not writable"
    assert result["data"] == [{"n": 1}, {"n": 2}]
    assert "opened read-only (because the file is not writable)" in result["refused"]
    assert str(path) in result["refused"]


def test_no_write_access_means_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ro.db"
    make_database(path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    s = stream("s", f"sqlite://{path}")
    assert [m.seq for m in s.read()] == [1, 2]
    with pytest.raises(ReadOnlyStoreError, match="because the file is not writable"):
        s.append({"n": 3})


# -- remove_position (contract, memory and sqlite) --------------------------------


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_remove_position_unregisters_a_consumer_or_group(store: Any) -> None:
    store.append("s", [{"n": i} for i in range(10)])
    store.commit_position("s", "a", 4)
    store.commit_position("s", "b", 2)
    assert store.lease("s", "g", "w1", 3, 60.0, True) is not None
    assert store.complete("s", "g", 1, "w1")
    assert store.lease("s", "g", "w1", 3, 60.0, True) is not None
    assert store.positions("s") == {"a": 4, "b": 2, "g": 3}

    assert store.remove_position("s", "a") is True
    assert store.remove_position("s", "a") is False
    assert store.remove_position("s", "never") is False
    assert store.positions("s") == {"b": 2, "g": 3}
    assert store.get_position("s", "a") == 0

    assert store.remove_position("s", "g") is True
    assert store.positions("s") == {"b": 2}
    fresh = store.lease("s", "g", "w2", 3, 60.0, True)  # the group's leases went too
    assert (fresh.start, fresh.end, fresh.taken_over) == (1, 3, False)


# -- ingest time ----------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The SQLite store's wall clock, set by the test (it may go backwards)."""
    now = [1000.0]
    fake = SimpleNamespace(time=lambda: now[0], monotonic=time.monotonic, sleep=time.sleep)
    monkeypatch.setattr(sqlite_module, "time", fake)
    yield now


def test_ts_never_decreases_when_the_clock_goes_back(tmp_path: Path, clock: list[float]) -> None:
    store = open_store(f"sqlite://{tmp_path / 'ts.db'}")
    store.append("s", [{"n": 1}])
    clock[0] = 900.0
    store.append("s", [{"n": 2}, {"n": 3}])
    clock[0] = 800.0
    store.append("s", [{"n": 4}], keys=["k"])
    assert [m.ts.timestamp() for m in store.read("s")] == [1000.0] * 4
    clock[0] = 1100.0
    store.append("s", [{"n": 5}])
    store.trim("s", 5)  # the last message is gone: the stream still remembers its ts
    clock[0] = 700.0
    store.append("s", [{"n": 6}])
    assert [m.ts.timestamp() for m in store.read("s")] == [1100.0]
    store.clear("s")
    store.append("s", [{"n": 7}])
    assert [m.ts.timestamp() for m in store.read("s")] == [1100.0]


def test_a_database_from_before_the_ts_floor_column_is_upgraded_on_open(
    tmp_path: Path, clock: list[float]
) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE mb_streams (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL DEFAULT 0,
                                 created REAL NOT NULL) WITHOUT ROWID;
        CREATE TABLE mb_messages (stream TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
                                  data TEXT NOT NULL, key TEXT, PRIMARY KEY (stream, seq)) WITHOUT ROWID;
        INSERT INTO mb_streams VALUES ('s', 1, 0);
        INSERT INTO mb_messages VALUES ('s', 1, 1000.0, '{"n": 1}', NULL);
    """)
    old.close()
    store = open_store(f"sqlite://{path}")
    clock[0] = 500.0
    assert store.append("s", [{"n": 2}]) == [2]
    assert [m.ts.timestamp() for m in store.read("s")] == [1000.0, 1000.0]


def produce(url: str, count: int, start: Any) -> None:
    s = stream("ts", url)
    start.wait(60)  # every producer appends at the same time
    for i in range(count):
        s.append({"i": i})


def test_concurrent_producers_give_ts_non_decreasing_in_seq_order(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'ts.db'}?synchronous=normal"
    stream("ts", url)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    producers = [context.Process(target=produce, args=(url, 250, start)) for _ in range(4)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(120)
        assert producer.exitcode == 0
    stamps = [m.ts for m in stream("ts", url).read()]
    assert len(stamps) == 1000
    assert all(a <= b for a, b in itertools.pairwise(stamps))


HOLD_EXCLUSIVE = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute('CREATE TABLE IF NOT EXISTS junk(x)')
c.execute('BEGIN EXCLUSIVE'); c.execute('INSERT INTO junk VALUES (1)')
print('held', flush=True)
sys.stdin.readline()  # hold the lock until the test says so (or closes stdin)
c.execute('COMMIT')
"""


def test_a_new_connection_waits_out_a_lock_on_its_first_statement(tmp_path: Path) -> None:
    # A connection's first statement reads the schema, which an exclusive lock
    # blocks: it is retried within the append budget (4 x timeout), not failed
    # after one timeout.
    import subprocess
    import sys

    path = tmp_path / "locked.db"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline().strip() == "held"
    release = threading.Timer(0.8, lambda: holder.stdin.close() if holder.stdin else None)
    release.start()  # frees the lock after 0.8 s: more than one timeout, within the budget
    try:
        s = stream("x", f"sqlite://{path}?timeout=0.3")
        assert s.append({"a": 1}) == 1
    finally:
        release.cancel()
        holder.wait(10)
