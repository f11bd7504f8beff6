"""The Sink protocol as a pipeline uses it (issue 13, point 1): keys, flush
before the commit, retries by writing again, dead letters, close on stop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from minibatch_rx import Stream, Window, stream
from minibatch_rx.sinks import CallableSink, Sink, StreamSink, as_sink


class Recording:
    """A Sink keeping what it was given, and what was committed when it flushed."""

    def __init__(self, source: Stream, consumer: str, failures: int = 0) -> None:
        self.source, self.consumer = source, consumer
        self.pending: list[tuple[Any, str]] = []
        self.stored: dict[str, Any] = {}
        self.flushes: list[tuple[list[str], int]] = []  # keys flushed, position at the time
        self.failures = failures
        self.closed = 0

    def write(self, values: Sequence[Any], keys: Sequence[str]) -> None:
        self.pending.extend(zip(values, keys, strict=True))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the target refused the batch")
        for value, key in pending:
            self.stored.setdefault(key, value)
        self.flushes.append(([k for _, k in pending], self.source.position(self.consumer)))

    def close(self) -> None:
        self.closed += 1


def totals(window: Window) -> dict[str, int]:
    return {"sum": sum(d["n"] for d in window.data)}


def seeded(url: str, n: int = 6) -> Stream:
    s = stream("in", url)
    s.extend({"n": i} for i in range(n))
    return s


def test_a_sink_gets_keyed_values_flushed_before_each_commit_and_is_closed(fast_url: str) -> None:
    s = seeded(fast_url)
    sink = Recording(s, "c")
    assert isinstance(sink, Sink)
    s.count_window(2).map(totals).sink(sink).run(consumer="c", max_windows=3)
    assert list(sink.stored.values()) == [{"sum": 1}, {"sum": 5}, {"sum": 9}]
    assert list(sink.stored) == ["c|in:1-2|0", "c|in:3-4|0", "c|in:5-6|0"]
    # Each window's values were flushed before the position covering them was committed.
    for (keys, position), last_seq in zip(sink.flushes, (2, 4, 6), strict=True):
        assert position < last_seq, (keys, position)
    assert s.position("c") == 6
    assert sink.closed == 1


def test_a_replayed_window_gets_the_same_keys(fast_url: str) -> None:
    s = seeded(fast_url, 4)
    first = Recording(s, "c")
    s.count_window(2).map(totals).sink(first).run(consumer="c", max_windows=2)
    s.forget("c")  # as if the run had crashed before committing
    again = Recording(s, "c")
    s.count_window(2).map(totals).sink(again).run(consumer="c", max_windows=2)
    assert list(again.stored) == list(first.stored)


def test_a_failed_flush_is_retried_after_writing_the_window_again(fast_url: str) -> None:
    s = seeded(fast_url, 2)
    sink = Recording(s, "c", failures=2)
    (s.count_window(2).map(totals).with_retries(3, backoff=0)
     .sink(sink).run(consumer="c", max_windows=1))
    assert sink.stored == {"c|in:1-2|0": {"sum": 1}}
    assert s.position("c") == 2
    assert Stream.get_or_create("in.dead", url=fast_url).count() == 0


def test_a_flush_that_keeps_failing_dead_letters_the_window_and_stops_its_values(fast_url: str) -> None:
    s = seeded(fast_url, 4)
    sink = Recording(s, "c", failures=2)
    after: list[Any] = []
    (s.count_window(2).map(totals).with_retries(1, backoff=0)
     .sink(sink).sink(after.append).run(consumer="c", max_windows=2))
    dead = [m.data for m in Stream.get_or_create("in.dead", url=fast_url).read()]
    assert [(d["stage"], d["first_seq"], d["last_seq"]) for d in dead] == [("sink.flush", 1, 2)]
    assert "refused the batch" in dead[0]["error"]
    assert sink.stored == {"c|in:3-4|0": {"sum": 5}}
    assert after == [{"sum": 5}]  # the dead-lettered window's value went no further
    assert s.position("c") == 4  # dead-lettered windows are acknowledged


def test_a_value_the_sink_refuses_is_dead_lettered(fast_url: str) -> None:
    s = seeded(fast_url, 2)
    out = stream("out", fast_url)
    s.count_window(2).map(lambda w: len(w)).sink(StreamSink(out)).run(consumer="c", max_windows=1)
    dead = [m.data for m in Stream.get_or_create("in.dead", url=fast_url).read()]
    assert len(dead) == 1 and "cannot sink a int" in dead[0]["error"]
    assert out.count() == 0


def test_a_stream_sink_stores_a_window_of_many_values_in_one_append(
    fast_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = seeded(fast_url, 10)
    out = stream("out", fast_url)
    appends: list[int] = []
    original = Stream.extend

    def counting(self: Stream, payloads: Any, keys: Any = None) -> list[int]:
        items = list(payloads)
        if self.name == "out":
            appends.append(len(items))
        return original(self, items, keys)

    monkeypatch.setattr(Stream, "extend", counting)
    s.count_window(5).flat_map(lambda w: w.data).sink(out).run(consumer="c", max_windows=2)
    assert [m.data["n"] for m in out.read()] == list(range(10))
    assert appends == [5, 5]


def test_callables_and_sinks_are_adapted() -> None:
    seen: list[int] = []
    adapted = as_sink(seen.append)
    assert isinstance(adapted, CallableSink)
    adapted.write([1, 2], ["a", "b"])
    adapted.flush()
    adapted.close()
    assert seen == [1, 2]
    sink = StreamSink(stream("x", "memory://adapted"))
    assert as_sink(sink) is sink
    with pytest.raises(TypeError, match="a sink is a Stream, a Sink or a callable"):
        as_sink(42)  # type: ignore[arg-type]
