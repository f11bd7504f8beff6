"""MongoDB store: its own errors for oversized documents and refused
credentials, unregistering a consumer, ingest times in seq order, and a test
server that leaves no data behind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, tzinfo
from typing import Any

import pymongo
import pytest
from mongo_server import MongoTestServer

from minibatch_rx import PayloadTooLargeError, StoreAuthenticationError, stream
from minibatch_rx.store import mongodb
from minibatch_rx.store.mongodb import MongoStore

OVER_16_MB = "x" * (16 * 1024 * 1024)


def raw_count(url: str) -> int:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        return client.get_default_database()["mb_messages"].count_documents({})
    finally:
        client.close()


def test_document_over_16_mb_is_refused_before_anything_is_stored(mongo_url: str) -> None:
    store = MongoStore(mongo_url)
    with pytest.raises(PayloadTooLargeError, match=r"payload 0 .*16,777,216 bytes"):
        store.append("s", [{"big": OVER_16_MB}])
    with pytest.raises(PayloadTooLargeError, match="payload 2 for 's'"):
        store.append("s", [{"i": 1}, {"i": 2}, {"big": OVER_16_MB}])
    s = stream("s", mongo_url)
    with pytest.raises(PayloadTooLargeError):
        s.append({"big": OVER_16_MB})
    with pytest.raises(PayloadTooLargeError):
        s.extend([{"i": 1}, {"big": OVER_16_MB}])
    assert raw_count(mongo_url) == 0
    assert store.append("s", [{"just": "x" * (16 * 1024 * 1024 - 1000)}]) == [1], "just under the limit fits"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[MongoTestServer]:
    """A SecantusDB server started with ``--auth`` and one user, ``app``."""
    server = MongoTestServer().start()
    try:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(f"mongodb://127.0.0.1:{server.port}")
        client.admin.command("createUser", "app", pwd="s3cret", roles=["root"])
        client.close()
        server.stop(keep_data=True)
        server.options = ["--auth"]
        server.start()
        yield server
    finally:
        server.stop()


def test_wrong_password_raises_store_authentication_error(auth_server: MongoTestServer) -> None:
    host = f"127.0.0.1:{auth_server.port}"
    with pytest.raises(StoreAuthenticationError, match="refused the credentials") as failure:
        MongoStore(f"mongodb://app:wrong-pw@{host}/db?authSource=admin&serverSelectionTimeoutMS=3000")
    assert "wrong-pw" not in str(failure.value)
    assert "app:***@" in str(failure.value)
    with pytest.raises(StoreAuthenticationError, match="user with read/write access"):
        MongoStore(f"mongodb://{host}/db?serverSelectionTimeoutMS=3000")
    good = MongoStore(f"mongodb://app:s3cret@{host}/db?authSource=admin&serverSelectionTimeoutMS=3000")
    assert good.append("s", [{"i": 1}]) == [1]


def test_remove_position_forgets_a_consumer_and_a_group(mongo_url: str) -> None:
    store = MongoStore(mongo_url)
    store.append("s", [{"i": i} for i in range(6)])
    store.commit_position("s", "stale", 2)
    store.commit_position("s", "other", 4)
    lease = store.lease("s", "grp", "m1", 2, 60, partial=False)
    assert lease is not None
    assert store.complete("s", "grp", lease.start, "m1")
    assert store.lease("s", "grp", "m1", 2, 60, partial=False) is not None  # held, unfinished

    assert store.remove_position("s", "stale") is True
    assert store.positions("s") == {"other": 4, "grp": 2}
    assert store.remove_position("s", "stale") is False, "already gone"
    assert store.remove_position("s", "nobody") is False

    assert store.remove_position("s", "grp") is True
    assert store.positions("s") == {"other": 4}
    # The group's lease and lease cursor are gone: it starts again from the beginning.
    again = store.lease("s", "grp", "m2", 2, 60, partial=False)
    assert again is not None and (again.start, again.end, again.taken_over) == (1, 2, False)


class Behind(datetime):
    """The clock of a machine five minutes behind."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) - timedelta(minutes=5)


def test_ingest_time_never_decreases_in_seq_order(mongo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = MongoStore(mongo_url)
    slow = MongoStore(mongo_url)

    def slow_append(payloads: list[dict[str, Any]], name: str = "s") -> list[int]:
        with monkeypatch.context() as patch:
            patch.setattr(mongodb, "datetime", Behind)
            return slow.append(name, payloads)

    fast.append("s", [{"p": "fast"}])
    slow_append([{"p": "slow"}, {"p": "slow"}])
    fast.append("s", [{"p": "fast"}])
    slow_append([{"p": "slow"}])
    messages = fast.read("s")
    assert [m.seq for m in messages] == [1, 2, 3, 4, 5]
    times = [m.ts for m in messages]
    assert times == sorted(times), times
    assert slow_append([{"alone": True}], "t") == [1]
    assert fast.read("t")[0].ts < times[0], "with nothing before it, a batch keeps its own clock"


def test_stop_removes_the_servers_own_data() -> None:
    server = MongoTestServer().start()
    data = server.data_dir
    assert data.exists()
    server.stop(keep_data=True)
    assert data.exists(), "kept for a restart"
    server.start()
    server.stop()
    assert not data.exists()


def test_a_lease_computed_from_stale_reads_is_not_granted_for_a_range_already_done(
        mongo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Member A reads the group's lease cursor and position, is paused, and meanwhile
    member B leases that range, finishes it and (the position moving over it) its lease
    row is deleted. A's insert then meets no duplicate: it must notice the position and
    not process the range a second time (a count-window group delivered windows twice)."""
    s = stream("lease.race", mongo_url)
    s.extend({"i": i} for i in range(15))
    a = MongoStore(mongo_url)
    b = MongoStore(mongo_url)
    stale = {"cursor": True, "position": True}
    real_position = a.get_position
    real_find_one = a._groups.find_one

    def position(stream_: str, consumer: str) -> int:
        if stale["position"]:  # what A read before its pause
            stale["position"] = False
            first = b.lease("lease.race", "g", "b", 10, 30.0, False)  # B, during A's pause
            assert first is not None and (first.start, first.end) == (1, 10)
            assert b.complete("lease.race", "g", 1, "b")
            return 0
        return real_position(stream_, consumer)

    def find_one(query: Any, *args: Any, **kwargs: Any) -> Any:
        if stale["cursor"]:
            stale["cursor"] = False
            return None  # the cursor as it was before B's lease
        return real_find_one(query, *args, **kwargs)

    monkeypatch.setattr(a, "get_position", position)
    monkeypatch.setattr(a._groups, "find_one", find_one)
    lease = a.lease("lease.race", "g", "a", 10, 30.0, True)
    assert lease is not None
    assert (lease.start, lease.end) == (11, 15)  # not 1..10 again
    assert b.get_position("lease.race", "g") == 10
