"""The store's state documents (``update_state``) on every backend, and the split Store protocols."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_url

from minibatch_rx.errors import InvalidPayloadError, ReadOnlyStoreError, StoreBusyError
from minibatch_rx.store import MemoryStore, Store, close_all, open_store
from minibatch_rx.store import mongodb as mongodb_module
from minibatch_rx.store.base import Leases, Log, Notifier, Positions, notifier
from minibatch_rx.store.mongodb import MongoStore
from minibatch_rx.store.sqlite import SqliteStore

JOIN_TIMEOUT = 120.0  # seconds: bound on any thread or process of these tests


def peek(store: Store, stream: str, name: str) -> Any:
    """The document as stored now (an update that keeps it as it is)."""
    return store.update_state(stream, name, lambda doc, now: (doc, doc))


def put(store: Store, stream: str, name: str, value: Any) -> Any:
    """Store ``value`` (None: delete) and return what was there before."""
    return store.update_state(stream, name, lambda doc, now: (value, doc))


def increment(doc: Any, now: float) -> tuple[Any, int]:
    """A counter document one higher; the result is the new count."""
    count = (doc or {"n": 0})["n"] + 1
    return {"n": count}, count


def other_store(backend: str, url: str) -> Store:
    """A second store object on the same data (the same object for memory, which is per process)."""
    if backend == "sqlite":
        return SqliteStore(url)
    if backend == "mongodb":
        return MongoStore(url)
    return open_store(url)


# -- create, replace, delete ---------------------------------------------------------


def test_create_replace_and_delete_a_document(store: Store) -> None:
    assert peek(store, "s", "g/partitions") is None
    assert put(store, "s", "g/partitions", {"owners": {"0": "a"}, "epoch": 1}) is None
    assert peek(store, "s", "g/partitions") == {"owners": {"0": "a"}, "epoch": 1}
    previous = put(store, "s", "g/partitions", {"owners": {"0": "b", "1": "a"}, "epoch": 2})
    assert previous == {"owners": {"0": "a"}, "epoch": 1}
    assert peek(store, "s", "g/partitions") == {"owners": {"0": "b", "1": "a"}, "epoch": 2}
    assert put(store, "s", "g/partitions", None) == {"owners": {"0": "b", "1": "a"}, "epoch": 2}
    assert peek(store, "s", "g/partitions") is None
    assert put(store, "s", "g/partitions", None) is None  # deleting an absent document is fine


def test_the_result_is_returned_whatever_it_is(store: Store) -> None:
    assert store.update_state("s", "n", lambda doc, now: ({"v": 1}, ("created", 7))) == ("created", 7)
    marker = object()
    assert store.update_state("s", "n", lambda doc, now: (None, marker)) is marker
    assert peek(store, "s", "n") is None


def test_any_json_value_is_a_document(store: Store) -> None:
    values: list[Any] = [[1, "two", None], "text", 0, -2**70, 2.5, True, {"deep": [{"a": [{}]}]}]
    for value in values:
        put(store, "s", "v", value)
        got = peek(store, "s", "v")
        assert got == value and type(got) is type(value)


def test_stored_documents_are_copies(store: Store) -> None:
    written = {"members": ["a"]}
    returned = store.update_state("s", "d", lambda doc, now: (written, written))
    written["members"].append("changed by the writer afterwards")
    returned["members"].append("changed through the result")
    first = peek(store, "s", "d")
    first["members"].append("changed by a reader")
    assert peek(store, "s", "d") == {"members": ["a"]}


# -- the clock -------------------------------------------------------------------------


def test_now_is_the_memory_stores_virtual_clock() -> None:
    instants = [datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)]
    store = MemoryStore(clock=lambda: instants[0])
    seen = store.update_state("s", "t", lambda doc, now: ({"at": now}, now))
    assert seen == instants[0].timestamp()
    instants[0] += timedelta(seconds=90)

    def elapsed(doc: Any, now: float) -> tuple[Any, float]:
        return doc, now - doc["at"]

    assert store.update_state("s", "t", elapsed) == 90.0


@pytest.mark.parametrize("kind", ["sqlite", "mongodb"])
def test_now_is_the_wall_clock_on_durable_stores(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = open_store(make_url(kind, tmp_path, request))
    before = time.time()
    seen = store.update_state("s", "t", lambda doc, now: (None, now))
    after = time.time()
    assert before <= seen <= after


# -- isolation and removal -------------------------------------------------------------


def test_documents_are_kept_per_stream_and_name(store: Store) -> None:
    for stream in ("s1", "s2"):
        for name in ("g/partitions", "h/partitions", "g/other"):
            put(store, stream, name, {"stream": stream, "name": name})
    put(store, "s1", "g/partitions", {"changed": True})
    assert peek(store, "s1", "g/partitions") == {"changed": True}
    for stream, name in [("s1", "h/partitions"), ("s1", "g/other"), ("s2", "g/partitions"),
                         ("s2", "h/partitions"), ("s2", "g/other")]:
        assert peek(store, stream, name) == {"stream": stream, "name": name}


def test_deleting_a_stream_removes_its_documents_only(store: Store) -> None:
    store.append("gone", [{"n": 1}])
    put(store, "gone", "g/partitions", 1)
    put(store, "gone", "other", 2)
    put(store, "kept", "g/partitions", 3)
    store.delete("gone")
    assert peek(store, "gone", "g/partitions") is None
    assert peek(store, "gone", "other") is None
    assert peek(store, "kept", "g/partitions") == 3


def test_removing_a_group_removes_its_documents_only(store: Store) -> None:
    store.commit_position("s", "g", 0)
    names = ["g/partitions", "g/x/y", "g", "g2/partitions", "gg/partitions", "h/g/partitions",
             "g:x/partitions"]
    for name in names:
        put(store, "s", name, name)
    put(store, "other", "g/partitions", "other stream")
    assert store.remove_position("s", "g") is True
    assert [n for n in names if peek(store, "s", n) is None] == ["g/partitions", "g/x/y"]
    assert peek(store, "other", "g/partitions") == "other stream"


def test_removing_a_group_without_a_position_still_forgets_its_documents(store: Store) -> None:
    put(store, "s", "g/partitions", 1)
    assert store.remove_position("s", "g") is False
    assert peek(store, "s", "g/partitions") is None


def test_group_names_are_matched_literally_when_removing(store: Store) -> None:
    # '_' and '%' are LIKE wildcards, '.' and '*' regex ones: none of them may widen the match.
    group = "a_%.*"
    kept = ["ab%.*/p", "a_x.*/p", "a_%x*/p", "a_%./p", "a_%../p"]
    for name in [f"{group}/p", *kept]:
        put(store, "s", name, name)
    store.remove_position("s", group)
    assert peek(store, "s", f"{group}/p") is None
    assert [peek(store, "s", name) for name in kept] == kept


# -- concurrency -------------------------------------------------------------------------


def _count_in_threads(stores: list[Store]) -> list[int]:
    """50 increments of one counter from each store object's thread; every result."""
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def work(store: Store) -> None:
        try:
            start.wait(JOIN_TIMEOUT)
            for _ in range(50):
                count = store.update_state("s", "g:counter", increment)
                with lock:
                    results.append(count)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "an updating thread did not finish"
    assert errors == []
    return results


def test_concurrent_updates_from_threads_lose_nothing(store: Store) -> None:
    results = _count_in_threads([store] * 4)
    assert sorted(results) == list(range(1, 201))  # each increment saw a count of its own
    assert peek(store, "s", "g:counter") == {"n": 200}


def test_concurrent_updates_through_separate_store_objects_lose_nothing(
    backend: str, store: Store, store_url: str
) -> None:
    others = [other_store(backend, store_url) for _ in range(3)]
    try:
        results = _count_in_threads([store, *others])
    finally:
        for other in others:
            if other is not store:
                other.close()
    assert sorted(results) == list(range(1, 201))
    assert peek(store, "s", "g:counter") == {"n": 200}


def count_in_process(url: str, start: Any, results: Any) -> None:
    """A child process's 50 increments; it sends back the counts it got."""
    store = SqliteStore(url)
    try:
        start.wait(JOIN_TIMEOUT)
        results.put([store.update_state("s", "g:counter", increment) for _ in range(50)])
    finally:
        store.close()


def test_concurrent_updates_from_processes_lose_nothing_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'state.db'}"
    SqliteStore(url).close()  # the schema exists before the children race for it
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    results = context.Queue()
    children = [context.Process(target=count_in_process, args=(url, start, results)) for _ in range(2)]
    for child in children:
        child.start()
    try:
        counts = [results.get(timeout=JOIN_TIMEOUT) for _ in children]
        for child in children:
            child.join(JOIN_TIMEOUT)
            assert child.exitcode == 0
    finally:
        for child in children:
            if child.is_alive():
                child.kill()
    assert sorted(counts[0] + counts[1]) == list(range(1, 101))
    assert peek(open_store(url), "s", "g:counter") == {"n": 100}


# -- failures ----------------------------------------------------------------------------


class Refused(Exception):
    """Raised by an update on purpose."""


def test_a_raising_update_changes_nothing_and_its_exception_propagates(store: Store) -> None:
    put(store, "s", "d", {"n": 1})

    def fail(doc: Any, now: float) -> tuple[Any, None]:
        doc["n"] = 99  # even a mutated argument must not reach the store
        raise Refused("no")

    with pytest.raises(Refused, match="no"):
        store.update_state("s", "d", fail)
    assert peek(store, "s", "d") == {"n": 1}

    def refuse_to_create(doc: Any, now: float) -> tuple[Any, None]:
        assert doc is None
        raise Refused("not created")

    with pytest.raises(Refused, match="not created"):
        store.update_state("s", "absent", refuse_to_create)
    assert peek(store, "s", "absent") is None
    assert store.update_state("s", "d", increment) == 2  # the store is still usable


@pytest.mark.parametrize("bad", [{"at": {1, 2}}, {"at": float("nan")}, {"at": float("inf")},
                                 {"owners": {0: "a"}}, {"when": datetime(2030, 1, 1, tzinfo=UTC)}])
def test_a_document_that_is_not_json_is_refused_before_anything_is_stored(
    store: Store, bad: dict[str, Any]
) -> None:
    put(store, "s", "d", {"n": 1})
    with pytest.raises(InvalidPayloadError, match=r"state document 'd' of stream 's' is not JSON") as info:
        put(store, "s", "d", bad)
    assert isinstance(info.value, TypeError)
    assert peek(store, "s", "d") == {"n": 1}
    with pytest.raises(InvalidPayloadError):
        put(store, "s", "new", bad)
    assert peek(store, "s", "new") is None


def test_a_read_only_sqlite_store_refuses_updates(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    writable = open_store(f"sqlite://{path}")
    put(writable, "s", "d", {"n": 1})
    store = SqliteStore(f"sqlite://{path}?mode=ro")
    try:
        with pytest.raises(ReadOnlyStoreError):
            store.update_state("s", "d", increment)
    finally:
        store.close()
    assert peek(writable, "s", "d") == {"n": 1}


# -- persistence and older files ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "mongodb"])
def test_documents_persist_across_close_and_reopen(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(kind, tmp_path, request)
    old = open_store(url)
    put(old, "s", "g/partitions", {"owners": {"0": "a"}})
    close_all()
    reopened = open_store(url)
    assert reopened is not old
    assert peek(reopened, "s", "g/partitions") == {"owners": {"0": "a"}}


OLD_SCHEMA = """
CREATE TABLE mb_streams (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL DEFAULT 0,
                         created REAL NOT NULL, last_ts REAL) WITHOUT ROWID;
CREATE TABLE mb_messages (stream TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
                          data TEXT NOT NULL, key TEXT, PRIMARY KEY (stream, seq)) WITHOUT ROWID;
CREATE TABLE mb_leases (stream TEXT NOT NULL, grp TEXT NOT NULL, start INTEGER NOT NULL,
                        end INTEGER NOT NULL, owner TEXT NOT NULL, expires REAL NOT NULL,
                        done INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (stream, grp, start)) WITHOUT ROWID;
CREATE TABLE mb_positions (stream TEXT NOT NULL, consumer TEXT NOT NULL, seq INTEGER NOT NULL,
                           PRIMARY KEY (stream, consumer)) WITHOUT ROWID;
INSERT INTO mb_streams VALUES ('s', 1, 0, 1000.0);
INSERT INTO mb_messages VALUES ('s', 1, 1000.0, '{"n": 1}', NULL);
"""


def _old_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SCHEMA)
    conn.close()


def test_a_database_from_before_state_documents_opens_read_only(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    store = SqliteStore(f"sqlite://{path}?mode=ro")
    try:
        assert [m.data for m in store.read("s")] == [{"n": 1}]
    finally:
        store.close()


def test_a_database_from_before_state_documents_gains_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)
    store = open_store(f"sqlite://{path}")
    assert store.update_state("s", "g/partitions", increment) == 1
    assert peek(store, "s", "g/partitions") == {"n": 1}
    store.delete("s")
    assert peek(store, "s", "g/partitions") is None


# -- MongoDB: conflicts between optimistic writers ---------------------------------------


def _interfering(other: Store, writes: list[Any]) -> Any:
    """An increment that, on its first call only, lets ``other`` change the document
    between the read and the write (as a writer on another host would)."""
    calls: list[Any] = []

    def update(doc: Any, now: float) -> tuple[Any, int]:
        calls.append(doc)
        if len(calls) == 1:
            for write in writes:
                put(other, "s", "d", write)
        return increment(doc, now)

    update.calls = calls  # type: ignore[attr-defined]
    return update


@pytest.mark.parametrize("found, writes", [
    (None, [{"n": 10}]),             # created meanwhile: the insert collides
    ({"n": 1}, [{"n": 10}]),         # replaced meanwhile
    ({"n": 1}, [None]),              # deleted meanwhile
    ({"n": 1}, [None, {"n": 5}]),    # deleted and created again: a new version, not v 1 again
])
def test_mongodb_retries_an_update_whose_document_changed_meanwhile(
    mongo_url: str, found: Any, writes: list[Any]
) -> None:
    store, other = MongoStore(mongo_url), MongoStore(mongo_url)
    try:
        put(store, "s", "d", found)
        update = _interfering(other, writes)
        expected = (writes[-1] or {"n": 0})["n"] + 1
        assert store.update_state("s", "d", update) == expected
        assert update.calls == [found, writes[-1]]
        assert peek(store, "s", "d") == {"n": expected}
    finally:
        store.close()
        other.close()


def test_mongodb_gives_up_on_a_document_that_never_stops_changing(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mongodb_module, "STATE_ATTEMPTS", 3)
    store, other = MongoStore(mongo_url), MongoStore(mongo_url)
    calls: list[Any] = []

    def always_interfered(doc: Any, now: float) -> tuple[Any, None]:
        calls.append(doc)
        other.update_state("s", "g/partitions", increment)
        return {"mine": True}, None

    try:
        with pytest.raises(StoreBusyError, match=r"'g/partitions' of stream 's'.*3 tries"):
            store.update_state("s", "g/partitions", always_interfered)
        assert len(calls) == 3
        assert peek(store, "s", "g/partitions") == {"n": 3}
    finally:
        store.close()
        other.close()


# -- the protocols -----------------------------------------------------------------------


def test_every_backend_is_a_store_of_three_parts(store: Store) -> None:
    for part in (Store, Log, Positions, Leases):
        assert isinstance(store, part)


def test_only_a_pushing_store_is_a_notifier(backend: str, store: Store) -> None:
    assert isinstance(store, Notifier)  # every backend can listen in its own process
    if backend == "memory":
        assert notifier(store) is store
    else:
        assert notifier(store) is None


def test_a_store_without_listen_is_no_notifier() -> None:
    class Quiet:
        push = True

    assert not isinstance(Quiet(), Notifier)
    assert notifier(Quiet()) is None
