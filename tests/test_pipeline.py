"""The fluent pipeline: building, stages, sinks, running, handles, Rx interop.

Most tests run on every backend (``store_url``) or on the two fast ones
(``fast_url``). Pipelines are stopped with ``max_windows`` so ``run()``
returns on its own; real-time waits are bounded ``join(timeout)`` calls.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import reactivex
import reactivex.operators as ops

from minibatch_rx import (
    InvalidArgumentError,
    InvalidStreamNameError,
    Message,
    Pipeline,
    PipelineHandle,
    Stream,
    Window,
    list_streams,
    stream,
)
from minibatch_rx.store.sqlite import SqliteStore

# A lost message would otherwise block a run until the session-wide timeout.
pytestmark = pytest.mark.timeout(120)

WAIT = 10.0  # seconds: upper bound for anything real-time to happen



def values(s: Stream) -> list[dict[str, Any]]:
    return [m.data for m in s.read()]


def seeded(url: str, name: str = "in", n: int = 6) -> Stream:
    """Stream ``name`` holding ``{'v': 1}`` ... ``{'v': n}`` (seqs 1..n)."""
    s = stream(name, url)
    s.extend([{"v": i} for i in range(1, n + 1)])
    return s


def vs(window: Window) -> list[int]:
    return [d["v"] for d in window.data]


# -- the full fluent chain ------------------------------------------------------------


def test_fluent_chain_runs_on_every_backend(store_url: str) -> None:
    src = seeded(store_url)
    out = Stream.get_or_create("results", url=store_url)

    handle = (
        stream("in", store_url)
        .count_window(2)
        .map(vs)                                        # [1, 2] [3, 4] [5, 6]
        .filter(lambda pair: sum(pair) != 7)            # drops [3, 4]
        .flat_map(lambda pair: [{"v": v} for v in pair])
        .pipe(ops.map(lambda d: {"v": d["v"], "square": d["v"] ** 2}))
        .sink(out)
        .run(max_windows=3, duration=WAIT)
    )

    assert values(out) == [
        {"v": 1, "square": 1}, {"v": 2, "square": 4}, {"v": 5, "square": 25}, {"v": 6, "square": 36},
    ]
    assert handle.windows == 3  # the filtered window counts as processed
    assert handle.position == 6
    assert src.position(handle.consumer) == 6
    assert handle.error is None
    assert not handle.running


# -- sink targets ---------------------------------------------------------------------


def test_sink_into_a_stream_object(store_url: str) -> None:
    seeded(store_url)
    out = Stream.get_or_create("summary", url=store_url)
    pipeline = stream("in", store_url).count_window(3).map(lambda w: {"sum": sum(vs(w))}).sink(out)
    pipeline.run(max_windows=2, duration=WAIT)
    assert values(out) == [{"sum": 6}, {"sum": 15}]


def test_sink_into_a_stream_name_creates_it_on_the_same_store(fast_url: str) -> None:
    seeded(fast_url)
    assert "by-name" not in list_streams(fast_url)
    pipeline = stream("in", fast_url).count_window(3).map(lambda w: {"sum": sum(vs(w))})
    pipeline.sink("by-name").run(max_windows=2, duration=WAIT)
    assert "by-name" in list_streams(fast_url)
    assert values(Stream("by-name", url=fast_url)) == [{"sum": 6}, {"sum": 15}]


def test_sink_into_a_callable(fast_url: str) -> None:
    seeded(fast_url)
    got: list[Any] = []
    stream("in", fast_url).count_window(2).map(vs).sink(got.append).run(max_windows=3, duration=WAIT)
    assert got == [[1, 2], [3, 4], [5, 6]]


def test_sink_windows_lists_and_dicts_into_streams(fast_url: str) -> None:
    src = seeded(fast_url)
    src.count_window(2).sink("windows").run(consumer="w", max_windows=3, duration=WAIT)
    src.count_window(2).map(lambda w: [{"x": v * 10} for v in vs(w)]).sink("lists").run(
        consumer="l", max_windows=2, duration=WAIT
    )
    src.count_window(3).map(lambda w: {"n": len(w), "last": w.last_seq}).sink("dicts").run(
        consumer="d", max_windows=2, duration=WAIT
    )
    src.map(lambda m: m).sink("messages").run(consumer="m", max_windows=2, duration=WAIT)

    assert values(Stream("windows", url=fast_url)) == [{"v": i} for i in range(1, 7)]
    assert values(Stream("lists", url=fast_url)) == [{"x": 10}, {"x": 20}, {"x": 30}, {"x": 40}]
    assert values(Stream("dicts", url=fast_url)) == [{"n": 3, "last": 3}, {"n": 3, "last": 6}]
    assert values(Stream("messages", url=fast_url)) == [{"v": 1}, {"v": 2}]


def test_unsinkable_value_is_dead_lettered_with_a_clear_type_error(fast_url: str) -> None:
    src = seeded(fast_url, n=4)
    pipeline = src.count_window(2).map(lambda w: sum(vs(w))).with_retries(0).sink("out")
    handle = pipeline.run(max_windows=2, duration=WAIT)

    assert Stream.get_or_create("out", url=fast_url).count() == 0
    dead = values(Stream("in.dead", url=fast_url))
    assert [(d["stage"], d["first_seq"], d["last_seq"]) for d in dead] == [("sink", 1, 2), ("sink", 3, 4)]
    assert dead[0]["error"].startswith("TypeError: cannot sink a int into stream 'out'")
    assert "dict or a list of dicts" in dead[0]["error"]
    assert handle.position == 4  # dead-lettered windows are acknowledged


def test_chained_sinks_each_get_every_value_in_order(fast_url: str) -> None:
    seeded(fast_url)
    first = Stream.get_or_create("first", url=fast_url)
    seen_first_when_called: list[int] = []
    got: list[dict[str, int]] = []

    def second(value: dict[str, int]) -> None:
        seen_first_when_called.append(first.count())  # the earlier sink already ran
        got.append(value)

    (stream("in", fast_url).count_window(2).map(lambda w: {"sum": sum(vs(w))})
     .sink(first).sink(second).sink("third").run(max_windows=3, duration=WAIT))

    expected = [{"sum": 3}, {"sum": 7}, {"sum": 11}]
    assert values(first) == expected
    assert got == expected
    assert values(Stream("third", url=fast_url)) == expected
    assert seen_first_when_called == [1, 2, 3]


# -- run / start / handles ----------------------------------------------------------------


def test_run_max_windows_returns_a_finished_handle(store_url: str) -> None:
    src = seeded(store_url, n=10)
    got: list[int] = []
    handle = src.map(lambda m: m.seq).sink(got.append).run(consumer="c", max_windows=3, duration=WAIT)

    assert isinstance(handle, PipelineHandle)
    # Exactly max_windows, even while a synchronous catch-up is still feeding.
    assert (handle.windows, handle.position) == (3, 3)
    assert got == [1, 2, 3]
    assert src.position("c") == 3
    assert not handle.running
    assert handle.join(0) is True


def test_max_windows_stops_mid_catch_up_with_count_windows(fast_url: str) -> None:
    src = seeded(fast_url, n=20)
    got: list[list[int]] = []
    handle = src.count_window(2).map(vs).sink(got.append).run(max_windows=4, duration=WAIT)
    assert got == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert (handle.windows, handle.position, src.position(handle.consumer)) == (4, 8, 8)


def test_run_with_duration_returns_after_about_that_long(fast_url: str) -> None:
    src = seeded(fast_url, n=5)
    got: list[list[int]] = []
    began = time.monotonic()
    handle = src.count_window(2).map(vs).sink(got.append).run(duration=0.5)
    elapsed = time.monotonic() - began

    assert 0.45 <= elapsed < WAIT
    assert not handle.running
    assert got == [[1, 2], [3, 4]]  # message 5 waits for a partner
    assert (handle.windows, handle.position) == (2, 4)


def test_run_rejects_bad_limits(fast_url: str) -> None:
    src = seeded(fast_url, n=1)
    with pytest.raises(InvalidArgumentError):
        src.map(str).run(max_windows=0, duration=WAIT)
    with pytest.raises(ValueError, match="duration"):
        src.map(str).run(duration=-1)


def test_start_returns_a_running_handle_until_stopped(fast_url: str) -> None:
    src = seeded(fast_url, n=3)
    got: list[int] = []
    all_seen = threading.Event()

    def sink(seq: int) -> None:
        got.append(seq)
        if len(got) == 3:
            all_seen.set()

    handle = src.map(lambda m: m.seq).sink(sink).start(consumer="bg")
    try:
        assert handle.running
        assert all_seen.wait(WAIT)
        assert handle.running  # caught up, still listening
        assert handle.join(0.05) is False  # bounded: it does not finish on its own
    finally:
        handle.stop()
    assert not handle.running
    assert handle.join(0) is True
    handle.stop()  # idempotent
    assert handle.error is None
    assert got == [1, 2, 3]
    # Message 2's ack preceded message 3; message 3's may have been cut off by stop().
    assert src.position("bg") in (2, 3)


def test_a_stopped_pipeline_processes_nothing_more() -> None:
    url = "memory://stopped"
    src = seeded(url, n=2)
    got: list[int] = []
    handle = src.map(lambda m: m.seq).sink(got.append).start()
    assert got == [1, 2]  # push store: catch-up is synchronous
    handle.stop()
    src.append({"v": 3})  # memory appends call listeners in this thread
    assert got == [1, 2]
    assert src.position(handle.consumer) == 2


def test_stop_ends_the_reader_thread_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'stop.db'}"
    src = seeded(url, name="stopper", n=1)
    handle = src.map(lambda m: m.seq).start()
    handle.stop()
    readers = [t for t in threading.enumerate() if t.name == "minibatch-reader-stopper" and t.is_alive()]
    assert readers == []


def test_live_appends_from_another_thread_reach_a_started_pipeline_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'live.db'}"
    src = stream("live", url)
    got: list[list[int]] = []
    handle = src.count_window(2).map(lambda w: [d["i"] for d in w.data]).sink(got.append).start(max_windows=3)
    assert handle.running

    def produce() -> None:
        for i in range(6):
            Stream("live", url=url).append({"i": i})

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(WAIT)
    assert handle.join(timeout=WAIT), "the pipeline did not see the live appends"
    assert got == [[0, 1], [2, 3], [4, 5]]
    assert (handle.windows, handle.position, handle.error) == (3, 6, None)


def test_live_appends_through_another_connection_reach_a_started_pipeline(tmp_path: Path) -> None:
    """The producer has its own SQLite store object, as another process would."""
    url = f"sqlite://{tmp_path / 'other.db'}"
    src = stream("live", url)
    got: list[int] = []
    handle = src.map(lambda m: m.data["i"]).sink(got.append).start(max_windows=3)
    other = SqliteStore(url)
    try:
        Stream("live", store=other).extend([{"i": i} for i in range(3)])
        assert handle.join(timeout=WAIT)
    finally:
        handle.stop()
        other.close()
    assert got == [0, 1, 2]


# -- Rx interop -----------------------------------------------------------------------------


def test_to_observable_composes_with_reactivex(fast_url: str) -> None:
    src = seeded(fast_url)
    observable = src.count_window(2).map(lambda w: sum(vs(w))).to_observable(consumer="rx")
    assert isinstance(observable, reactivex.Observable)

    got: list[list[int]] = []
    errors: list[Exception] = []
    done = threading.Event()
    observable.pipe(ops.take(3), ops.to_list()).subscribe(got.append, errors.append, done.set)

    assert done.wait(WAIT)
    assert errors == []
    assert got == [[3, 7, 11]]
    # Windows consumed before take(3) unsubscribed are acknowledged; the ack of
    # the third may be cut off by the unsubscription (at-least-once: redelivered).
    assert src.position("rx") in (4, 6)


def test_to_observable_with_consumer_commits_what_was_consumed() -> None:
    src = seeded("memory://rx-commit", n=5)
    got: list[int] = []
    subscription = src.count_window(2).map(lambda w: sum(vs(w))).to_observable("rx").subscribe(got.append)
    assert got == [3, 7]
    assert src.position("rx") == 4  # message 5 is still held by an open window
    src.append({"v": 6})  # live: the memory store pushes in this thread
    subscription.dispose()
    assert got == [3, 7, 11]
    assert src.position("rx") == 6


def test_to_observable_without_consumer_commits_nothing() -> None:
    src = seeded("memory://rx-anon", n=4)
    got: list[Window] = []
    subscription = src.count_window(2).to_observable().subscribe(got.append)
    subscription.dispose()
    assert [vs(w) for w in got] == [[1, 2], [3, 4]]
    assert src.positions() == {}


# -- window-less pipelines -----------------------------------------------------------------------


def test_window_less_pipeline_gets_messages(fast_url: str) -> None:
    src = seeded(fast_url, n=4)
    got: list[Message] = []

    def record_and_double(m: Message) -> dict[str, Any]:
        got.append(m)
        return {"seq": m.seq, "twice": m.data["v"] * 2}

    pipeline = src.map(record_and_double).sink("out")
    handle = pipeline.run(max_windows=4, duration=WAIT)
    assert all(isinstance(m, Message) for m in got)
    assert [(m.stream, m.seq, m.data) for m in got] == [("in", i, {"v": i}) for i in range(1, 5)]
    assert values(Stream("out", url=fast_url)) == [{"seq": i, "twice": 2 * i} for i in range(1, 5)]
    assert handle.position == 4


def test_window_less_filter_and_sink_start_pipelines(fast_url: str) -> None:
    src = seeded(fast_url)
    evens: list[int] = []
    src.filter(lambda m: m.data["v"] % 2 == 0).map(lambda m: m.data["v"]).sink(evens.append).run(
        consumer="f", max_windows=6, duration=WAIT
    )
    src.sink("copy").run(consumer="s", max_windows=6, duration=WAIT)
    assert evens == [2, 4, 6]
    assert values(Stream("copy", url=fast_url)) == [{"v": i} for i in range(1, 7)]


# -- immutability and building -----------------------------------------------------------------


def test_fluent_calls_return_new_pipelines_and_leave_the_old_ones_alone() -> None:
    src = seeded("memory://immutable")
    base = src.count_window(2)
    mapped = base.map(vs)
    filtered = mapped.filter(lambda pair: pair[0] > 1)

    assert isinstance(base, Pipeline)
    assert len({id(base), id(mapped), id(filtered)}) == 3
    assert (len(base.stages), len(mapped.stages), len(filtered.stages)) == (0, 1, 2)
    assert base.window_spec is mapped.window_spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.stages = ()  # type: ignore[misc]

    # Two pipelines grown from one base run independently.
    sums: list[int] = []
    pairs: list[list[int]] = []
    base.map(lambda w: sum(vs(w))).sink(sums.append).run(consumer="a", max_windows=3, duration=WAIT)
    filtered.sink(pairs.append).run(consumer="b", max_windows=3, duration=WAIT)
    assert sums == [3, 7, 11]
    assert pairs == [[3, 4], [5, 6]]


@pytest.mark.parametrize(
    "build",
    [
        lambda p: p.map(42),
        lambda p: p.filter("yes"),
        lambda p: p.flat_map(None),
        lambda p: p.pipe(ops.map(str), 3),
        lambda p: p.sink(42),
        lambda p: p.sink(None),
        lambda p: p.late(1.5),
        lambda p: p.with_retries(-1),
        lambda p: p.with_retries(True),
        lambda p: p.with_retries(backoff=-1),
        lambda p: p.count_window(0),
        lambda p: p.fixed_time_window(-5),
    ],
    ids=["map", "filter", "flat_map", "pipe", "sink-int", "sink-none", "late", "retries-negative",
         "retries-bool", "backoff-negative", "count-zero", "interval-negative"],
)
def test_bad_arguments_fail_when_the_pipeline_is_built(build: Any) -> None:
    pipeline = stream("bad", "memory://bad").pipeline()
    with pytest.raises(InvalidArgumentError) as info:
        build(pipeline)
    assert isinstance(info.value, ValueError)


def test_bad_sink_stream_name_fails_when_the_pipeline_is_built() -> None:
    pipeline = stream("bad", "memory://bad-name").pipeline()
    with pytest.raises(InvalidStreamNameError):
        pipeline.sink("no spaces allowed")
    with pytest.raises(InvalidStreamNameError):
        pipeline.late("")


# -- consumers ---------------------------------------------------------------------------------


def test_different_consumer_names_each_see_every_message(store_url: str) -> None:
    src = seeded(store_url, n=4)
    got: dict[str, list[list[int]]] = {"a": [], "b": []}
    for name in ("a", "b"):
        src.count_window(2).map(vs).sink(got[name].append).run(consumer=name, max_windows=2, duration=WAIT)
    assert got == {"a": [[1, 2], [3, 4]], "b": [[1, 2], [3, 4]]}
    assert (src.position("a"), src.position("b")) == (4, 4)

    src.extend([{"v": 5}, {"v": 6}])
    src.count_window(2).map(vs).sink(got["a"].append).run(consumer="a", max_windows=1, duration=WAIT)
    assert got["a"] == [[1, 2], [3, 4], [5, 6]]  # "a" resumes; "b" is untouched
    assert src.position("b") == 4
