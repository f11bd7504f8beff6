"""The Store contract, checked through the public Stream API on every backend."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import make_url

from minibatch_rx import InvalidArgumentError, Message, Stream, list_streams, open_store
from minibatch_rx import store as store_module
from minibatch_rx.store.mongodb import MongoStore
from minibatch_rx.store.sqlite import SqliteStore

# The package re-exports a function called ``stream``, which shadows the module attribute.
stream_module = importlib.import_module("minibatch_rx.streams")

# -- appending -----------------------------------------------------------------


def test_append_returns_seqs_from_one(store_url: str) -> None:
    s = Stream.get_or_create("orders", url=store_url)
    assert [s.append({"n": n}) for n in range(5)] == [1, 2, 3, 4, 5]
    assert [m.seq for m in s.read()] == [1, 2, 3, 4, 5]
    assert [m.data["n"] for m in s.read()] == [0, 1, 2, 3, 4]


def test_extend_returns_consecutive_seqs_in_one_store_call(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Stream.get_or_create("orders", url=store_url)
    assert s.append({"n": 0}) == 1
    calls: list[int] = []
    real_append = s.store.append

    def spy(stream: str, payloads: Any, *args: Any, **kwargs: Any) -> list[int]:
        calls.append(len(payloads))
        return real_append(stream, payloads, *args, **kwargs)

    monkeypatch.setattr(s.store, "append", spy)
    assert s.extend({"n": n} for n in range(1, 5)) == [2, 3, 4, 5]
    assert calls == [4]
    assert s.extend([{"n": 5}]) == [6]
    assert [(m.seq, m.data["n"]) for m in s.read()] == [(i, i - 1) for i in range(1, 7)]


def test_extend_empty_returns_empty_and_stores_nothing(store_url: str) -> None:
    s = Stream.get_or_create("orders", url=store_url)
    assert s.extend([]) == []
    assert s.extend(iter(())) == []
    assert s.count() == 0
    assert s.last_seq() == 0
    assert s.append({"n": 1}) == 1


def test_streams_are_numbered_independently(store_url: str) -> None:
    a = Stream.get_or_create("a", url=store_url)
    b = Stream.get_or_create("b", url=store_url)
    assert a.extend([{"x": 1}, {"x": 2}]) == [1, 2]
    assert b.append({"y": 1}) == 1
    assert a.append({"x": 3}) == 3
    assert [m.data for m in b.read()] == [{"y": 1}]
    assert [m.stream for m in a.read()] == ["a", "a", "a"]


# -- reading -------------------------------------------------------------------


def test_read_after_and_limit(store_url: str) -> None:
    s = Stream.get_or_create("r", url=store_url)
    s.extend([{"n": n} for n in range(1, 11)])
    assert [m.seq for m in s.read()] == list(range(1, 11))
    assert [m.seq for m in s.read(after=4)] == list(range(5, 11))
    assert [m.seq for m in s.read(after=4, limit=3)] == [5, 6, 7]
    assert [m.seq for m in s.read(limit=1)] == [1]
    assert list(s.read(limit=0)) == []
    assert [m.seq for m in s.read(after=9, limit=5)] == [10]
    assert list(s.read(after=10)) == []
    assert list(s.read(after=1000)) == []
    with pytest.raises(InvalidArgumentError):
        list(s.read(limit=-1))


def test_read_pages_across_page_boundaries(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "_PAGE", 7)
    s = Stream.get_or_create("paged", url=store_url)
    s.extend([{"n": n} for n in range(1, 31)])
    assert [m.seq for m in s.read()] == list(range(1, 31))
    assert [m.seq for m in s.read(after=3, limit=15)] == list(range(4, 19))
    assert [m.seq for m in s.read(limit=14)] == list(range(1, 15))
    assert [m.seq for m in s.read(after=21)] == list(range(22, 31))
    # A page size that divides the total exactly ends cleanly too.
    assert [m.seq for m in s.read(after=2)] == list(range(3, 31))
    # Paging follows the seqs actually stored, not a count from the start.
    s.clear()
    s.extend([{"n": n} for n in range(31, 46)])
    assert [m.seq for m in s.read()] == list(range(31, 46))
    assert [m.seq for m in s.read(after=5, limit=9)] == list(range(31, 40))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_read_more_than_one_page(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = Stream.get_or_create("big", url=make_url(kind, tmp_path, request))
    total = 2500
    assert s.extend([{"n": n} for n in range(total)]) == list(range(1, total + 1))
    limits: list[int | None] = []
    real_read = s.store.read

    def spy(stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        limits.append(limit)
        return real_read(stream, after, limit)

    monkeypatch.setattr(s.store, "read", spy)
    messages = list(s.read())
    assert [m.seq for m in messages] == list(range(1, total + 1))
    assert [m.data["n"] for m in messages] == list(range(total))
    assert limits == [1000, 1000, 1000]  # paged, never the whole stream at once

    limits.clear()
    assert [m.seq for m in s.read(after=999, limit=1001)] == list(range(1000, 2001))
    assert limits == [1000, 1]

    limits.clear()
    first = next(iter(s.read()))
    assert first.seq == 1
    assert limits == [1000]  # lazy: one page fetched for the first message


def test_count_len_and_last_seq(store_url: str) -> None:
    s = Stream.get_or_create("c", url=store_url)
    assert s.count() == 0
    assert len(s) == 0
    assert s.last_seq() == 0
    s.extend([{"n": n} for n in range(4)])
    s.append({"n": 4})
    assert s.count() == 5
    assert len(s) == 5
    assert s.last_seq() == 5
    other = Stream.get_or_create("other", url=store_url)
    assert other.count() == 0
    assert other.last_seq() == 0


# -- clear and delete ----------------------------------------------------------


def test_clear_keeps_numbering(store_url: str) -> None:
    s = Stream.get_or_create("c", url=store_url)
    s.extend([{"n": n} for n in range(3)])
    s.commit("worker", 2)
    s.clear()
    assert s.count() == 0
    assert list(s.read()) == []
    assert s.last_seq() == 3
    assert s.position("worker") == 2  # clear keeps consumer positions
    assert "c" in list_streams(store_url)
    assert s.append({"n": 3}) == 4  # never reuse a seq
    assert [m.seq for m in s.read()] == [4]
    s.clear()
    s.clear()  # clearing an empty stream is harmless
    assert s.extend([{"n": 4}, {"n": 5}]) == [5, 6]
    assert s.last_seq() == 6


def test_delete_removes_stream_messages_and_positions(store_url: str) -> None:
    doomed = Stream.get_or_create("doomed", url=store_url)
    kept = Stream.get_or_create("kept", url=store_url)
    doomed.extend([{"n": n} for n in range(3)])
    kept.extend([{"n": n} for n in range(2)])
    doomed.commit("w", 3)
    kept.commit("w", 1)
    assert list_streams(store_url) == ["doomed", "kept"]

    doomed.delete()

    assert list_streams(store_url) == ["kept"]
    assert doomed.count() == 0
    assert list(doomed.read()) == []
    assert doomed.last_seq() == 0
    assert doomed.position("w") == 0
    # The other stream is untouched.
    assert [m.seq for m in kept.read()] == [1, 2]
    assert kept.position("w") == 1
    # Recreating the name gives a fresh stream.
    again = Stream.get_or_create("doomed", url=store_url)
    assert "doomed" in list_streams(store_url)
    assert again.append({"n": 0}) == 1
    assert again.position("w") == 0


def test_delete_of_unknown_stream_is_harmless(store_url: str) -> None:
    Stream("never-created", url=store_url).delete()
    assert list_streams(store_url) == []


# -- listing -------------------------------------------------------------------


def test_list_streams_sorted(store_url: str) -> None:
    for name in ["beta", "alpha", "c.x", "a-b:c_d", "Zed"]:
        Stream.get_or_create(name, url=store_url)
    Stream.get_or_create("alpha", url=store_url)  # get_or_create twice is fine
    expected = sorted(["beta", "alpha", "c.x", "a-b:c_d", "Zed"])
    assert list_streams(store_url) == expected
    assert open_store(store_url).streams() == expected
    assert Stream("alpha", url=store_url).count() == 0


def test_stream_is_listed_once_appended_to(store_url: str) -> None:
    lazy = Stream("lazy", url=store_url)  # a plain handle registers nothing
    assert list_streams(store_url) == []
    lazy.append({"n": 1})
    assert list_streams(store_url) == ["lazy"]


def test_get_or_create_rejects_unknown_keywords_but_accepts_legacy_ones(store_url: str) -> None:
    s = Stream.get_or_create("legacy", url=store_url, interval=1.0, batchsize=10)
    assert s.name == "legacy"
    with pytest.raises(TypeError, match="bogus"):
        Stream.get_or_create("legacy", url=store_url, bogus=1)


# -- consumer positions --------------------------------------------------------


def test_position_defaults_to_zero(store_url: str) -> None:
    s = Stream.get_or_create("p", url=store_url)
    assert s.position("nobody") == 0
    s.extend([{"n": 1}, {"n": 2}])
    assert s.position("nobody") == 0  # appending commits nothing


def test_commit_then_position(store_url: str) -> None:
    s = Stream.get_or_create("p", url=store_url)
    s.extend([{"n": n} for n in range(5)])
    s.commit("w", 2)
    assert s.position("w") == 2
    s.commit("w", 5)
    assert s.position("w") == 5
    s.commit("w", 5)  # idempotent
    assert s.position("w") == 5


def test_commit_never_moves_backwards(store_url: str) -> None:
    s = Stream.get_or_create("p", url=store_url)
    s.commit("w", 7)
    s.commit("w", 3)
    s.commit("w", 0)
    assert s.position("w") == 7
    with pytest.raises(InvalidArgumentError):
        s.commit("w", -1)
    assert s.position("w") == 7


def test_positions_are_independent_per_consumer_and_stream(store_url: str) -> None:
    a = Stream.get_or_create("a", url=store_url)
    b = Stream.get_or_create("b", url=store_url)
    a.commit("x", 4)
    a.commit("y", 9)
    b.commit("x", 2)
    a.commit("x/y", 1)  # consumer names may contain separators
    assert a.position("x") == 4
    assert a.position("y") == 9
    assert a.position("x/y") == 1
    assert b.position("x") == 2
    assert b.position("y") == 0


# -- messages ------------------------------------------------------------------


def test_message_fields(store_url: str) -> None:
    s = Stream.get_or_create("fields", url=store_url)
    payload = {
        "text": "grüße 🌍",
        "int": 42,
        "big": 2**63 - 1,
        "small": -(2**63),
        "float": 2.5,
        "flag": True,
        "nothing": None,
        "nested": {"list": [1, "two", {"three": 3.0}], "empty": {}},
        "empty_list": [],
    }
    before = datetime.now(UTC)
    seq = s.append(payload)
    after = datetime.now(UTC)
    [message] = list(s.read())
    assert isinstance(message, Message)
    assert message.stream == "fields"
    assert message.seq == seq == 1
    assert message.data == payload
    assert message.ts.tzinfo is not None
    assert message.ts.utcoffset() == timedelta(0)
    # MongoDB keeps milliseconds: allow for truncation, and a little clock slack.
    assert before - timedelta(seconds=1) <= message.ts <= after + timedelta(seconds=1)
    with pytest.raises(AttributeError):
        message.seq = 2  # type: ignore[misc]


def test_messages_of_one_batch_share_in_order_timestamps(store_url: str) -> None:
    s = Stream.get_or_create("ts", url=store_url)
    s.extend([{"n": 1}, {"n": 2}])
    s.append({"n": 3})
    stamps = [m.ts for m in s.read()]
    assert stamps[0] == stamps[1]
    assert stamps[0] <= stamps[2]


def test_tuples_are_stored_as_lists(store_url: str) -> None:
    s = Stream.get_or_create("tuples", url=store_url)
    s.append({"t": (1, (2, 3))})
    assert [m.data for m in s.read()] == [{"t": [1, [2, 3]]}]


def test_payload_is_copied_at_append(store_url: str) -> None:
    s = Stream.get_or_create("copy", url=store_url)
    payload: dict[str, Any] = {"n": 1, "items": [1, 2], "inner": {"k": "v"}}
    s.append(payload)
    batch: list[dict[str, Any]] = [{"n": 2, "items": [3]}]
    s.extend(batch)
    payload["n"] = 99
    payload["items"].append(3)
    payload["inner"]["k"] = "changed"
    payload["new"] = True
    batch[0]["items"].clear()
    batch[0]["n"] = 100
    assert [m.data for m in s.read()] == [
        {"n": 1, "items": [1, 2], "inner": {"k": "v"}},
        {"n": 2, "items": [3]},
    ]


# -- sharing and durability ----------------------------------------------------


def test_two_handles_on_one_url_share_data(store_url: str) -> None:
    first = Stream.get_or_create("shared", url=store_url)
    second = Stream("shared", url=store_url)
    assert first.store is second.store
    first.append({"from": "first"})
    assert second.append({"from": "second"}) == 2
    assert [m.data["from"] for m in first.read()] == ["first", "second"]
    second.commit("w", 2)
    assert first.position("w") == 2
    assert len(first) == len(second) == 2


def test_separate_store_objects_share_data(backend: str, store_url: str) -> None:
    s = Stream.get_or_create("shared", url=store_url)
    s.extend([{"n": 1}, {"n": 2}])
    s.commit("w", 1)
    if backend == "memory":
        # memory://NAME is one store per process: open_store hands out the same object.
        other: Any = open_store(store_url)
        assert other is s.store
    else:
        other = SqliteStore(store_url) if backend == "sqlite" else MongoStore(store_url)
        assert other is not s.store
    try:
        assert [m.data["n"] for m in other.read("shared")] == [1, 2]
        assert other.get_position("shared", "w") == 1
        assert other.append("shared", [{"n": 3}]) == [3]
        assert s.append({"n": 4}) == 4
        assert [m.seq for m in s.read()] == [1, 2, 3, 4]
    finally:
        if other is not s.store:
            other.close()


def test_repr_names_stream_and_url(store_url: str) -> None:
    s = Stream("named", url=store_url)
    assert repr(s) == f"Stream('named', url={store_url!r})"
    assert store_url in repr(s.store)


@pytest.mark.parametrize("kind", ["sqlite", "mongodb"])
def test_data_persists_across_close_and_reopen(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(kind, tmp_path, request)
    s = Stream.get_or_create("durable", url=url)
    Stream.get_or_create("empty", url=url)
    s.extend([{"n": 1}, {"n": 2}, {"n": 3}])
    s.commit("w", 2)
    s.clear()
    s.append({"n": 4})
    stamp = next(iter(s.read())).ts
    old_store = s.store

    store_module.close_all()

    reopened = Stream("durable", url=url)
    assert reopened.store is not old_store
    assert list_streams(url) == ["durable", "empty"]
    [message] = list(reopened.read())
    assert (message.seq, message.data, message.ts) == (4, {"n": 4}, stamp)
    assert reopened.last_seq() == 4
    assert reopened.position("w") == 2
    assert reopened.append({"n": 5}) == 5


def test_memory_store_is_dropped_by_close_all(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = make_url("memory", tmp_path, request)
    Stream.get_or_create("gone", url=url).append({"n": 1})
    store_module.close_all()
    assert list_streams(url) == []
    assert Stream("gone", url=url).append({"n": 1}) == 1
