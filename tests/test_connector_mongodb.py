"""MongoDB collections in and out (issue 13, point 2): the change-stream bridge
and the upserting sink, against the project's MongoDB-wire test server."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from mongo_server import MongoTestServer
from waiting import wait_for

from minibatch_rx import Stream, Window, stream
from minibatch_rx import store as store_module
from minibatch_rx.connectors.mongodb import CollectionBridge, CollectionSink
from minibatch_rx.errors import InvalidArgumentError

WAIT = 30.0




@pytest.fixture
def target(tmp_path: Path) -> Iterator[Stream]:
    yield stream("changes", f"sqlite://{tmp_path / 'target.db'}")
    store_module.close_all()


@pytest.fixture
def source(mongo_url: str) -> Iterator[pymongo.collection.Collection[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    database = client.get_default_database()
    yield database["orders"]
    client.drop_database(database.name)
    client.close()


def ops(s: Stream) -> list[tuple[str, Any]]:
    return [(m.data["op"], (m.data["doc"] or {}).get("n")) for m in s.read()]


def test_changes_arrive_in_order_with_their_documents(
    mongo_url: str, source: Any, target: Stream
) -> None:
    bridge = CollectionBridge(mongo_url, "orders", target).start()
    try:
        source.insert_one({"_id": 1, "n": 1})
        source.insert_one({"_id": 2, "n": 2})
        source.update_one({"_id": 1}, {"$set": {"n": 10}})
        source.delete_one({"_id": 2})
        wait_for(lambda: target.store.count(target.name) == 4, "four changes")
    finally:
        bridge.stop()
    assert ops(target) == [("insert", 1), ("insert", 2), ("update", 10), ("delete", None)]
    first = next(iter(target.read())).data
    assert first["ns"].endswith(".orders") and first["key"] == {"_id": 1}
    assert first["token"]["_data"]


def test_a_restarted_bridge_resumes_and_stores_nothing_twice(
    mongo_url: str, source: Any, target: Stream
) -> None:
    bridge = CollectionBridge(mongo_url, "orders", target).start()
    try:
        source.insert_many([{"n": i} for i in range(5)])
        wait_for(lambda: target.store.count(target.name) == 5, "the first five")
    finally:
        bridge.stop()
    source.insert_many([{"n": i} for i in range(5, 12)])  # while no bridge runs
    again = CollectionBridge(mongo_url, "orders", target).start()
    try:
        wait_for(lambda: target.store.count(target.name) == 12, "the changes made while stopped")
        source.insert_one({"n": 12})
        wait_for(lambda: target.store.count(target.name) == 13, "a change after the restart")
    finally:
        again.stop()
    assert [n for _, n in ops(target)] == list(range(13))


def test_a_crash_between_the_data_and_the_token_stores_nothing_twice(
    mongo_url: str, source: Any, target: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = CollectionBridge(mongo_url, "orders", target).start()
    try:
        source.insert_one({"n": 0})
        wait_for(lambda: target.store.count(target.name) == 1, "the first change")
    finally:
        first.stop()

    original = Stream.append
    crashed = threading.Event()

    def crash_on_token(self: Stream, payload: Any, key: str | None = None) -> int:
        if self.name.startswith("changes.bridge.") and not crashed.is_set():
            crashed.set()
            raise RuntimeError("killed between the batch and its token")
        return original(self, payload, key)

    monkeypatch.setattr(Stream, "append", crash_on_token)
    second = CollectionBridge(mongo_url, "orders", target).start()
    source.insert_many([{"n": 1}, {"n": 2}])
    wait_for(crashed.is_set, "the crash after the batch was stored")
    with pytest.raises(RuntimeError, match="killed"):
        second.stop()
    assert target.store.count(target.name) == 3  # the batch is stored, its token is not
    monkeypatch.setattr(Stream, "append", original)

    third = CollectionBridge(mongo_url, "orders", target).start()
    try:
        source.insert_one({"n": 3})
        wait_for(lambda: [n for _, n in ops(target)][-1:] == [3], "the change after the crash")
    finally:
        third.stop()
    # The batch was read again after the restart (its token was lost) and stored nothing.
    assert third.stored >= 3
    assert [n for _, n in ops(target)] == [0, 1, 2, 3]


def test_the_bridge_rides_out_a_server_restart(tmp_path: Path) -> None:
    server = MongoTestServer().start()
    url = f"mongodb://127.0.0.1:{server.port}/bridged?serverSelectionTimeoutMS=1000"
    target = stream("changes", f"sqlite://{tmp_path / 'restart.db'}")
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    orders = client.get_default_database()["orders"]
    bridge = CollectionBridge(url, "orders", target).start()
    try:
        orders.insert_many([{"n": i} for i in range(10)])
        wait_for(lambda: target.store.count(target.name) == 10, "changes before the restart")
        server.stop(keep_data=True)
        server.start()
        orders.insert_many([{"n": i} for i in range(10, 20)])
        wait_for(lambda: target.store.count(target.name) == 20, "changes after the restart", timeout=60)
        assert bridge.error is None
        assert [n for _, n in ops(target)] == list(range(20))
    finally:
        bridge.stop()
        client.close()
        server.stop()
        store_module.close_all()


def test_the_sink_upserts_by_key_so_a_replay_adds_nothing(mongo_url: str, source: Any) -> None:
    sink = CollectionSink(mongo_url, "totals")
    try:
        sink.write([{"sum": 3}, [{"a": 1}, {"a": 2}]], ["c|s:1-2|0", "c|s:3-4|0"])
        sink.flush()
        sink.write([{"sum": 3}], ["c|s:1-2|0"])  # the same window again, after a crash
        sink.flush()
        rows = list(source.database["totals"].find({}, sort=[("_id", 1)]))
    finally:
        sink.close()
    assert rows == [{"_id": "c|s:1-2|0", "sum": 3}, {"_id": "c|s:3-4|0.0", "a": 1},
                    {"_id": "c|s:3-4|0.1", "a": 2}]


def test_a_failed_flush_is_retried_by_writing_again(tmp_path: Path) -> None:
    server = MongoTestServer().start()
    url = f"mongodb://127.0.0.1:{server.port}/sinking?serverSelectionTimeoutMS=500"
    sink = CollectionSink(url, "out")
    try:
        sink.write([{"v": 1}], ["k1"])
        server.stop(keep_data=True)
        with pytest.raises(pymongo.errors.PyMongoError):
            sink.flush()
        server.start()
        sink.flush()  # a failed flush keeps nothing: this sends nothing
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
        out = client.get_default_database()["out"]
        assert list(out.find()) == []
        sink.write([{"v": 1}], ["k1"])  # what the pipeline does before its retry
        sink.flush()
        assert list(out.find()) == [{"_id": "k1", "v": 1}]
        client.close()
    finally:
        sink.close()
        server.stop()


def test_a_pipeline_sinks_into_a_collection_exactly_once(mongo_url: str, source: Any, tmp_path: Path) -> None:
    s = stream("nums", f"sqlite://{tmp_path / 'p.db'}")
    s.extend({"n": i} for i in range(6))

    def total(window: Window) -> dict[str, int]:
        return {"sum": sum(d["n"] for d in window.data)}

    pipeline = s.count_window(3).map(total)
    pipeline.sink(CollectionSink(mongo_url, "sums")).run(consumer="c", max_windows=2)
    # A crash before the position was committed replays both windows: same keys, same documents.
    s.forget("c")
    pipeline.sink(CollectionSink(mongo_url, "sums")).run(consumer="c", max_windows=2)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    rows = list(client.get_default_database()["sums"].find({}, sort=[("sum", 1)]))
    client.close()
    store_module.close_all()
    assert [r["sum"] for r in rows] == [3, 12]
    assert all(r["_id"].startswith("c|nums:") for r in rows)


def test_bad_arguments_are_refused_before_anything_runs(target: Stream) -> None:
    with pytest.raises(InvalidArgumentError, match="mongodb://"):
        CollectionBridge("postgres://x/db", "orders", target)
    with pytest.raises(InvalidArgumentError, match="batch"):
        CollectionBridge("mongodb://127.0.0.1:1/db", "orders", target, batch=0)
    with pytest.raises(InvalidArgumentError, match="names no database"):
        CollectionSink("mongodb://127.0.0.1:1", "out")


def test_stream_attach_runs_the_bridge_until_stop(mongo_url: str, source: Any, target: Stream) -> None:
    bridge = CollectionBridge(mongo_url, "orders")
    target.attach(bridge)
    try:
        wait_for(bridge.ready.is_set, "the change stream to open")
        source.insert_many([{"n": 1}, {"n": 2}])
        wait_for(lambda: target.store.count(target.name) == 2, "the attached bridge's changes")
    finally:
        assert target.stop(timeout=10), "the attached bridge did not stop"
    assert [n for _, n in ops(target)] == [1, 2]


def test_the_example_bridges_totals_and_upserts(mongo_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIBATCH_", "MONGO_URL"))}
    env["MINIBATCH_HOME"] = str(tmp_path / "home")
    result = subprocess.run([sys.executable, "examples/mongodb_bridge.py", "--source", mongo_url,
                             "--count", "12"], capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    # orders n = 0..11 with amount 10 + n, totalled per 4: 46, 62, 78
    assert "bridged 12 changes; totals per 4 orders: [46, 62, 78]" in result.stdout


def test_a_refused_value_leaves_nothing_in_the_sink(mongo_url: str, source: Any) -> None:
    s = stream("src", f"memory://refused-{uuid.uuid4().hex[:8]}")
    s.extend([{"n": 1}, {"n": 2}])
    sink = CollectionSink(mongo_url, "out")

    def value(window: Window) -> Any:
        n = window.data[0]["n"]
        return [{"ok": n}, 5] if n == 1 else {"ok": n}  # window 1 holds a non-dict: refused

    handle = s.count_window(1).map(value).sink(sink).run(consumer="c", max_windows=2)
    assert handle.dead_letters == 1
    docs = list(source.database["out"].find({}, {"_id": 0}))
    assert docs == [{"ok": 2}]  # nothing of the dead-lettered window


def test_one_sink_object_serves_several_runs(mongo_url: str, source: Any) -> None:
    s = stream("src", f"memory://reused-{uuid.uuid4().hex[:8]}")
    s.extend([{"n": 1}, {"n": 2}])
    pipeline = s.count_window(1).map(lambda w: {"n": w.data[0]["n"]}).sink(
        CollectionSink(mongo_url, "out")).with_retries(0)
    pipeline.run(consumer="c", max_windows=1)
    second = pipeline.run(consumer="c", max_windows=1)  # the first run closed the sink
    assert second.dead_letters == 0
    assert sorted(d["n"] for d in source.database["out"].find()) == [1, 2]


def test_a_resume_token_is_kept_whole(mongo_url: str, source: Any, target: Stream) -> None:
    from bson import json_util

    bridge = CollectionBridge(mongo_url, "orders", target).start()
    try:
        source.insert_one({"_id": 1.5, "n": 1})
        wait_for(lambda: target.store.count(target.name) == 1, "the first change")
    finally:
        bridge.stop()
    assert bridge.state is not None
    saved = next(iter(bridge.state.read())).data["token"]
    assert isinstance(saved, str) and "_data" in json_util.loads(saved)  # Extended JSON: binary kept
    source.insert_one({"_id": 2.5, "n": 2})
    again = CollectionBridge(mongo_url, "orders", target).start()
    try:
        wait_for(lambda: target.store.count(target.name) == 2, "the change made while stopped")
    finally:
        again.stop()
    assert [n for _, n in ops(target)] == [1, 2]
