"""Checks of the claims in docs/mongodb-at-scale.md that the test server can check.

The test server (SecantusDB) is a single-node replica set speaking the
MongoDB protocol, not mongod: it has no shards, no secondaries and no
rollback, and its query planner is its own. What is checked here is what the
store *sends* (recorded with pymongo's command monitoring: filters, write and
read concerns, retryability), what it *creates* (indexes), how the test
server answers the store's own queries (explain), and how the store behaves
when the test server steps down. The document names each test next to the
claim it checks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from mongo_server import MongoTestServer
from pymongo import monitoring
from pymongo.collection import Collection
from waiting import wait_for

from minibatch_rx import StoreUnavailableError, Window, stream
from minibatch_rx import store as store_module
from minibatch_rx.store import mongo_batch
from minibatch_rx.store.mongodb import MongoStore

WAIT = 20.0
WRITES = {"insert", "update", "delete", "findAndModify"}
READS = {"find", "aggregate", "distinct", "count"}
_SESSION_FIELDS = {"lsid", "$db", "$clusterTime", "txnNumber", "$readPreference", "readConcern",
                   "writeConcern", "apiVersion", "apiStrict", "apiDeprecationErrors"}




def with_options(url: str, options: str) -> str:
    """``url`` with more URI options appended."""
    return f"{url}{'&' if '?' in url else '?'}{options}"


class Recorder(monitoring.CommandListener):
    """Every command the monitored clients send: (database, command document)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self.lock:
            self.commands.append((event.database_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Nothing to record."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Nothing to record."""

    def clear(self) -> None:
        with self.lock:
            self.commands.clear()

    def sent(self, name: str | None = None, collection: str | None = None) -> list[dict[str, Any]]:
        """The command documents sent, optionally of one name and on one collection."""
        with self.lock:
            docs = [c for _, c in self.commands]
        return [c for c in docs if (name is None or next(iter(c)) == name)
                and (collection is None or c.get(next(iter(c))) == collection)]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Record the commands of every MongoClient created during the test."""
    listener = Recorder()
    real = pymongo.MongoClient

    def monitored(*args: Any, **kwargs: Any) -> pymongo.MongoClient[dict[str, Any]]:
        return real(*args, event_listeners=[listener], **kwargs)

    monkeypatch.setattr(pymongo, "MongoClient", monitored)
    return listener


def raw_db(url: str) -> Iterator[pymongo.database.Database[dict[str, Any]]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        yield client.get_default_database()
    finally:
        client.close()


@pytest.fixture
def db(mongo_url: str) -> Iterator[pymongo.database.Database[dict[str, Any]]]:
    """The test's database through a client of its own (not recorded)."""
    yield from raw_db(mongo_url)


def plan_of(database: pymongo.database.Database[dict[str, Any]], command: dict[str, Any]) -> list[str]:
    """The test server's winning plan for a command the store sent, outermost stage first
    (``IXSCAN:<index> <direction>`` for an index scan)."""
    sent = {k: v for k, v in command.items() if k not in _SESSION_FIELDS}
    explained = database.command("explain", sent, verbosity="queryPlanner")
    stage: dict[str, Any] | None = explained["queryPlanner"]["winningPlan"]
    stages = []
    while stage is not None:
        name = str(stage["stage"])
        if name == "IXSCAN":
            name += f":{stage['indexName']} {stage['direction']}"
        stages.append(name)
        stage = stage.get("inputStage")
    return stages


def scan_of(database: pymongo.database.Database[dict[str, Any]], command: dict[str, Any]) -> str:
    """The innermost stage of the plan: the index scan or the collection scan."""
    return plan_of(database, command)[-1]


# -- indexes -------------------------------------------------------------------
def test_the_store_creates_exactly_the_documented_indexes(
    mongo_url: str, db: pymongo.database.Database[dict[str, Any]],
) -> None:
    store = MongoStore(mongo_url)
    store.append("s", [{"i": 1}, {"i": 2}], keys=["a", None])
    store.commit_position("s", "c", 1)
    assert store.lease("s", "g", "me", 1, 30.0, True) is not None
    store.ensure_stream("t")
    indexes = {name: {i["name"]: (dict(i["key"]), bool(i.get("unique"))) for i in db[name].list_indexes()}
               for name in ("mb_messages", "mb_streams", "mb_positions", "mb_leases", "mb_groups")}
    assert indexes == {
        "mb_messages": {"_id_": ({"_id": 1}, False), "s_1_q_1": ({"s": 1, "q": 1}, True)},
        "mb_streams": {"_id_": ({"_id": 1}, False)},
        "mb_positions": {"_id_": ({"_id": 1}, False)},  # nothing on "s": positions(stream) scans
        "mb_leases": {"_id_": ({"_id": 1}, False), "s_1_g_1_start_1": ({"s": 1, "g": 1, "start": 1}, True)},
        "mb_groups": {"_id_": ({"_id": 1}, False)},
    }


# -- the queries and the indexes they use ----------------------------------------
def test_the_stores_own_queries_are_answered_from_the_documented_indexes(
    mongo_url: str, db: pymongo.database.Database[dict[str, Any]], recorder: Recorder,
) -> None:
    store = MongoStore(mongo_url)
    store.append("s", [{"i": i} for i in range(30)])
    store.append("other", [{"i": 0}])
    recorder.clear()
    assert store.append("s", [{"k": 1}, {"k": 2}], keys=["k1", "k2"]) == [31, 32]
    appended = recorder.sent("find", "mb_messages")
    # The end of the stream: the last index entry of the stream, walked backwards.
    ends = [c for c in appended if c.get("sort") == {"q": -1}]
    assert ends and all(c["filter"]["s"] == "s" and c.get("limit") == 1 for c in ends)
    assert {scan_of(db, c) for c in ends} == {"IXSCAN:s_1_q_1 backward"}
    # The keys already stored: the _id index (keyed messages' _id is "<stream>/<key>").
    keyed = [c for c in appended if "_id" in c["filter"]]
    assert [c["filter"] for c in keyed] == [{"_id": {"$in": ["s/k1", "s/k2"]}}]
    assert scan_of(db, keyed[0]) == "IXSCAN:_id_ forward"

    recorder.clear()
    assert [m.seq for m in store.read("s", after=10, limit=5)] == [11, 12, 13, 14, 15]
    reads = recorder.sent("find", "mb_messages")
    assert reads[0]["filter"] == {"s": "s", "q": {"$gt": 10}} and reads[0]["sort"] == {"q": 1}
    assert scan_of(db, reads[0]) == "IXSCAN:s_1_q_1 forward"

    recorder.clear()
    assert store.count("s") == 32
    counts = recorder.sent("aggregate", "mb_messages")
    assert len(counts) == 1 and scan_of(db, counts[0]) == "IXSCAN:s_1_q_1 forward"

    store.commit_position("s", "c", 3)
    store.commit_position("other", "c", 1)
    recorder.clear()
    assert store.get_position("s", "c") == 3
    assert scan_of(db, recorder.sent("find", "mb_positions")[0]) == "IXSCAN:_id_ forward"
    recorder.clear()
    assert store.positions("s") == {"c": 3}
    by_stream = recorder.sent("find", "mb_positions")
    assert by_stream[0]["filter"] == {"s": "s"}
    assert scan_of(db, by_stream[0]) == "COLLSCAN", "mb_positions has no index on s"


def test_only_the_key_lookup_and_the_tombstone_update_lack_the_stream_name(
    mongo_url: str, recorder: Recorder,
) -> None:
    # On a collection sharded on s, a filter without s goes to every shard.
    store = MongoStore(mongo_url)
    store.append("s", [{"i": i} for i in range(5)], keys=[f"k{i}" for i in range(5)])
    store.append("s", [{"i": 5}])
    store.read("s")
    store.count("s")
    store.last_seq("s")
    store.trim("s", 6)  # the highest message becomes a tombstone
    store.expire("s", 3600.0)
    filters: list[tuple[str, dict[str, Any]]] = []
    for command in recorder.sent(collection="mb_messages"):
        name = next(iter(command))
        if name in ("find", "count", "distinct"):
            filters.append((name, command.get("filter") or command.get("query") or {}))
        elif name == "aggregate":
            filters.extend((name, stage["$match"]) for stage in command["pipeline"] if "$match" in stage)
        elif name in ("update", "delete"):
            filters.extend((name, statement["q"]) for statement in command[f"{name}s"])
    without_stream = [(name, f) for name, f in filters if "s" not in f]
    assert filters and without_stream == [
        ("find", {"_id": {"$in": [f"s/k{i}" for i in range(5)]}}),
        ("update", {"_id": without_stream[-1][1]["_id"]}),
    ]
    assert all(isinstance(f["s"], str) for _, f in filters if "s" in f), "s is always an equality"


# -- write and read concerns ----------------------------------------------------------
def run_every_kind_of_operation(store: MongoStore) -> None:
    store.append("s", [{"i": 1}, {"i": 2}, {"i": 3}], keys=["a", None, None])
    store.read("s")
    store.count("s")
    store.commit_position("s", "c", 1)
    store.positions("s")
    lease = store.lease("s", "g", "me", 2, 30.0, True)
    assert lease is not None
    assert store.complete("s", "g", lease.start, "me")
    store.trim("s", 3)
    store.streams()


def test_write_and_read_concern_from_the_url_reach_every_command(
    mongo_url: str, recorder: Recorder,
) -> None:
    store = MongoStore(with_options(mongo_url, "w=majority&wtimeoutMS=5000&readConcernLevel=majority"))
    collections = [store._messages, store._streams, store._positions, store._leases, store._groups]
    assert all(c.write_concern.document == {"w": "majority", "wtimeout": 5000} for c in collections)
    assert {c.read_concern.level for c in collections} == {"majority"}
    recorder.clear()
    run_every_kind_of_operation(store)
    watch = store.watch()
    watch.close()
    writes = [c for c in recorder.sent() if next(iter(c)) in WRITES]
    reads = [c for c in recorder.sent() if next(iter(c)) in READS]
    assert {next(iter(c)) for c in writes} == WRITES
    assert {next(iter(c)) for c in reads} == {"find", "aggregate", "distinct"}
    assert all(c.get("writeConcern") == {"w": "majority", "wtimeout": 5000} for c in writes)
    assert all(c.get("readConcern") == {"level": "majority"} for c in reads)


def test_without_concerns_in_the_url_the_store_sends_none(mongo_url: str, recorder: Recorder) -> None:
    # Nothing in the store sets a concern: the server's defaults decide.
    store = MongoStore(mongo_url)
    assert store._messages.write_concern.document == {}
    assert store._messages.read_concern.level is None
    assert store._messages.read_preference == pymongo.ReadPreference.PRIMARY
    run_every_kind_of_operation(store)
    sent = [c for c in recorder.sent() if next(iter(c)) in WRITES | READS]
    assert sent
    assert [c for c in sent if "writeConcern" in c or "readConcern" in c] == []


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage any batch over 2 KB, in chunks of at most 3 documents."""
    monkeypatch.setattr(mongo_batch, "CHUNK_BYTES", 2000)
    monkeypatch.setattr(mongo_batch, "CHUNK_DOCS", 3)


def test_which_writes_the_driver_may_retry(mongo_url: str, recorder: Recorder, small_chunks: None) -> None:
    store = MongoStore(mongo_url)
    hello = store._client.admin.command("hello")
    if not hello.get("setName") and hello.get("msg") != "isdbgrid":
        pytest.skip("retryable writes need a replica set or a sharded cluster")
    run_every_kind_of_operation(store)
    store.append("big", [{"i": i, "pad": "x" * 300} for i in range(10)])  # staged: finalize = update_many
    store.delete("s")
    retryable = {True: set(), False: set()}  # type: dict[bool, set[str]]
    for command in recorder.sent():
        name = next(iter(command))
        if name not in WRITES:
            continue
        if name == "update":
            kind = "update_many" if any(u.get("multi") for u in command["updates"]) else "update_one"
        elif name == "delete":
            kind = "delete_many" if any(d["limit"] == 0 for d in command["deletes"]) else "delete_one"
        else:
            kind = name
        retryable["txnNumber" in command].add(kind)
    assert retryable == {True: {"insert", "update_one", "delete_one", "findAndModify"},
                         False: {"update_many", "delete_many"}}


# -- failures injected by the server (failCommand) --------------------------------------
@pytest.fixture(scope="module")
def test_commands_server() -> Iterator[MongoTestServer]:
    """A server of this module's own with mongod's test commands (fail points) on."""
    server = MongoTestServer(options=["--enable-test-commands"]).start()
    try:
        yield server
    finally:
        server.stop()


class FailPoint:
    """A fresh database on the fail-point server, and one ``failCommand`` for one client (by appName)."""

    def __init__(self, server: MongoTestServer) -> None:
        self.app = f"scale-{uuid.uuid4().hex[:8]}"
        self.base = (f"mongodb://127.0.0.1:{server.port}/fp_{uuid.uuid4().hex[:8]}"
                     "?serverSelectionTimeoutMS=3000&heartbeatFrequencyMS=500")
        self.url = with_options(self.base, f"appName={self.app}")
        self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(self.base)
        self.messages = self.client.get_default_database()["mb_messages"]

    def arm(self, data: dict[str, Any]) -> None:
        """Fail (or spoil) the next matching command of the store's client, once."""
        self.client.admin.command("configureFailPoint", "failCommand", mode={"times": 1},
                                  data={**data, "appName": self.app})

    def close(self) -> None:
        self.client.admin.command("configureFailPoint", "failCommand", mode="off")
        self.client.close()


@pytest.fixture
def fail_point(test_commands_server: MongoTestServer) -> Iterator[FailPoint]:
    point = FailPoint(test_commands_server)
    try:
        yield point
    finally:
        store_module.close_all()
        point.close()


NOT_PRIMARY = {"errorCode": 10107, "errorLabels": ["RetryableWriteError"]}  # as mongod >= 4.4 answers


def test_a_not_primary_insert_is_retried_once_and_stored_once(
    fail_point: FailPoint, recorder: Recorder,
) -> None:
    store = MongoStore(fail_point.url)
    store.append("s", [{"i": 0}])
    recorder.clear()
    fail_point.arm({"failCommands": ["insert"], **NOT_PRIMARY})
    assert store.append("s", [{"i": 1}, {"i": 2}]) == [2, 3]
    inserts = recorder.sent("insert", "mb_messages")
    assert len(inserts) == 2, "one retry"
    assert inserts[0]["txnNumber"] == inserts[1]["txnNumber"], "the retry is the same write"
    assert fail_point.messages.count_documents({"s": "s"}) == 3


def test_a_not_primary_multi_document_delete_is_not_retried(
    fail_point: FailPoint, recorder: Recorder,
) -> None:
    store = MongoStore(fail_point.url)
    store.append("s", [{"i": i} for i in range(5)])
    recorder.clear()
    fail_point.arm({"failCommands": ["delete"], **NOT_PRIMARY})
    with pytest.raises(StoreUnavailableError):
        store.trim("s", 3)
    assert len(recorder.sent("delete", "mb_messages")) == 1, "a delete_many is not retried"
    assert fail_point.messages.count_documents({"s": "s"}) == 5
    assert store.trim("s", 3) == 3, "the same store object works on"


def test_a_write_concern_timeout_on_append_raises_a_raw_driver_error_after_storing(
    fail_point: FailPoint,
) -> None:
    # ``w=majority&wtimeoutMS=...`` timing out: the documents are stored on the primary,
    # the caller does not learn their seqs, and the error is pymongo's own.
    store = MongoStore(with_options(fail_point.url, "w=majority&wtimeoutMS=1000"))
    store.append("s", [{"i": 0}])
    fail_point.arm({"failCommands": ["insert"], "writeConcernError": {
        "code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out",
        "errInfo": {"wtimeout": True}}})
    with pytest.raises(pymongo.errors.BulkWriteError) as raised:
        store.append("s", [{"i": 1}])
    assert raised.value.details["writeConcernErrors"][0]["code"] == 64
    assert fail_point.messages.count_documents({"s": "s"}) == 2, "stored all the same"
    assert store.append("s", [{"i": 2}]) == [3]


# -- change streams -------------------------------------------------------------------
def test_one_change_stream_per_store_sees_every_streams_inserts_with_their_payloads(
    mongo_url: str, db: pymongo.database.Database[dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[tuple[str, list[dict[str, Any]]]] = []
    original = Collection.watch

    def counting(self: Collection[Any], pipeline: Any = None, *args: Any, **kwargs: Any) -> Any:
        opened.append((self.name, list(pipeline or [])))
        return original(self, pipeline, *args, **kwargs)

    monkeypatch.setattr(Collection, "watch", counting)
    if not MongoStore(mongo_url).supports_change_streams():
        pytest.skip("a standalone server has no change streams")
    names = [f"cs{i}" for i in range(6)]
    seen: dict[str, list[int]] = {}
    lock = threading.Lock()

    def into(name: str) -> Callable[[Window[Any]], None]:
        def sink(window: Window[Any]) -> None:
            with lock:
                seen.setdefault(name, []).extend(m.seq for m in window.messages)
        return sink

    handles = [stream(n, mongo_url).count_window(1).sink(into(n)).start(consumer="c") for n in names]
    try:
        for n in names:
            stream(n, mongo_url).append({"i": 0})
        wait_for(lambda: all(seen.get(n) == [1] for n in names), "every pipeline's message")
        # One change stream for the six pipelines, on every stream's inserts.
        assert opened == [("mb_messages", [{"$match": {"operationType": "insert"}}])]
    finally:
        for handle in handles:
            handle.stop(timeout=5)
    # What each event of that change stream carries: the whole document, payload included,
    # also for a stream nobody in the process reads.
    with db["mb_messages"].watch(opened[0][1], max_await_time_ms=100) as changes:
        payload = {"unread": "x" * 1000}
        stream("nobody_reads_this", mongo_url).append(payload)
        event = None
        deadline = time.monotonic() + WAIT
        while event is None and time.monotonic() < deadline:
            event = changes.try_next()
    assert event is not None
    assert event["fullDocument"]["s"] == "nobody_reads_this"
    assert event["fullDocument"]["d"] == payload


def test_each_reader_opens_a_change_stream_of_its_own_filtered_on_its_stream(
    mongo_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What consumer-group members (group.py) and pull feeds use: store.reader().
    store = MongoStore(mongo_url)
    if not store.supports_change_streams():
        pytest.skip("a standalone server has no change streams")
    opened: list[list[dict[str, Any]]] = []
    original = Collection.watch

    def counting(self: Collection[Any], pipeline: Any = None, *args: Any, **kwargs: Any) -> Any:
        opened.append(list(pipeline or []))
        return original(self, pipeline, *args, **kwargs)

    monkeypatch.setattr(Collection, "watch", counting)
    readers = [store.reader("g") for _ in range(3)]
    try:
        assert opened == [[{"$match": {"operationType": "insert", "fullDocument.s": "g"}}]] * 3
    finally:
        for reader in readers:
            reader.close()


# -- a primary step-down --------------------------------------------------------------
@pytest.fixture
def private_server() -> Iterator[MongoTestServer]:
    """A server of this test's own: a step-down must not disturb the shared one."""
    server = MongoTestServer().start()
    try:
        yield server
    finally:
        server.stop()


def is_writable_primary(url: str) -> bool:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, directConnection=True)
    try:
        return bool(client.admin.command("hello").get("isWritablePrimary"))
    finally:
        client.close()


def test_a_step_down_fails_appends_cleanly_and_a_running_pipeline_rides_it_out(
    private_server: MongoTestServer,
) -> None:
    url = (f"mongodb://127.0.0.1:{private_server.port}/stepdown"
           "?serverSelectionTimeoutMS=1000&heartbeatFrequencyMS=500")
    s = stream("sd", url)
    s.extend([{"i": i} for i in range(3)])
    seen: list[int] = []
    got = threading.Condition()

    def collect(window: Window[Any]) -> None:
        with got:
            seen.extend(m.seq for m in window.messages)
            got.notify_all()

    handle = s.count_window(1).sink(collect).start(consumer="c")
    try:
        with got:
            assert got.wait_for(lambda: seen == [1, 2, 3], WAIT), seen
        admin: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, directConnection=True)
        try:
            admin.admin.command("replSetStepDown", 3, force=True)
        finally:
            admin.close()
        assert not is_writable_primary(url)
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            s.append({"i": "during the step-down"})
        wait_for(lambda: is_writable_primary(url), "the node to be primary again")
        # The store object (and its client) is used as is: no reopening.
        appended: list[int] = []

        def append_once() -> bool:
            if not appended:
                try:
                    appended.append(s.append({"i": 3}))
                except StoreUnavailableError:  # the driver has not seen the new primary yet
                    return False
            return True

        wait_for(append_once, "an append after the step-down")
        assert appended == [4], "the refused append stored nothing"
        with got:
            assert got.wait_for(lambda: seen == [1, 2, 3, 4], WAIT), seen
        assert handle.running and handle.error is None
        assert [m.data["i"] for m in s.read()] == [0, 1, 2, 3]
    finally:
        handle.stop(timeout=5)
        store_module.close_all()  # before the private server stops
