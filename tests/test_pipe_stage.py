"""``Pipeline.pipe``: reactivex operators applied to each window's values on their own.

Each window (or message) gets a fresh operator chain whose input completes
with the window, so what an operator holds is flushed, and attributed to that
window, before its position is committed. Time-based operators fail clearly;
an operator error dead-letters its window only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import reactivex
import reactivex.operators as ops
from reactivex import Observable
from reactivex.abc import SchedulerBase

from minibatch_rx import InvalidArgumentError, Message, Stream, Window, stream
from minibatch_rx.pipe_stage import rx_stage
from minibatch_rx.stages import Ack, Envelope, Failure, Item, RetryPolicy
from minibatch_rx.testing import VirtualTime

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # seconds: upper bound for a real-time run that should end at once
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def memory_url() -> str:
    return f"memory://{uuid.uuid4().hex}"


def seeded(n: int, url: str | None = None) -> Stream:
    """Stream ``in`` holding ``{'v': 1}`` .. ``{'v': n}`` (seq == v)."""
    src = stream("in", url or memory_url())
    src.extend([{"v": i} for i in range(1, n + 1)])
    return src


def by_message(window: Window) -> list[dict[str, Any]]:
    """One value per message of the window: what flat_map feeds into pipe()."""
    return [{"seq": m.seq} for m in window.messages]


def payloads(s: Stream) -> list[dict[str, Any]]:
    return [m.data for m in s.read()]


def window(*seqs: int, ack: int | None) -> Window:
    return Window(tuple(Message("in", seq, T0, {"v": seq}) for seq in seqs), "in", ack=ack)


def through_stage(operators: tuple[Any, ...], envelopes: list[Envelope],
                  dead: Stream) -> list[Envelope]:
    """What ``rx_stage(operators)`` passes on for ``envelopes``."""
    failure = Failure(RetryPolicy(), dead, None)
    out: list[Envelope] = []
    reactivex.from_iterable(envelopes).pipe(rx_stage(operators, failure)).subscribe(out.append)
    return out


# -- holding operators flush per window, before the window's Ack ----------------------------


def test_a_holding_operator_flushes_each_window_with_its_origin_before_its_ack() -> None:
    w1, w2, w3, w4 = window(1, 2, ack=None), window(3, 4, ack=4), window(5, ack=5), window(6, ack=6)
    envelopes: list[Envelope] = [
        Item("a", w1), Item("b", w1), Ack(None),    # closed together with w2: seq None
        Item("c", w2), Item("d", w2), Item("e", w2), Item("f", w2), Ack(4),
        Ack(5),                                     # w3's values were all filtered out upstream
        Item("g", w4), Ack(6),
    ]
    assert w3.ack == 5

    out = through_stage((ops.buffer_with_count(3),), envelopes, stream("in.dead", memory_url()))

    assert out == [
        Item(["a", "b"], w1), Ack(None),
        Item(["c", "d", "e"], w2), Item(["f"], w2), Ack(4),
        Ack(5),
        Item(["g"], w4), Ack(6),
    ]
    origins = [e.origin for e in out if isinstance(e, Item)]
    assert [o is w for o, w in zip(origins, [w1, w2, w2, w4], strict=True)] == [True] * 4


def test_buffered_outputs_are_sunk_before_their_window_is_committed() -> None:
    src = seeded(6)
    sunk: list[tuple[int, list[int]]] = []  # (committed position when sunk, seqs of the output)

    def deliver(batch: list[dict[str, Any]]) -> None:
        sunk.append((src.position("c"), [d["seq"] for d in batch]))

    (src.count_window(2).flat_map(by_message).pipe(ops.buffer_with_count(3))
     .sink(deliver).with_commit_interval(0).run("c", max_windows=3, duration=WAIT))

    assert [seqs for _, seqs in sunk] == [[1, 2], [3, 4], [5, 6]]
    for position, seqs in sunk:
        assert position < min(seqs), f"{seqs} sunk after position {position} was committed"
    assert src.position("c") == 6


def test_a_stop_after_one_window_has_sunk_that_window_held_values() -> None:
    """The crash case: the position of window 1 is committed, so its values
    must be in the sink even though buffer_with_count(3) never filled up."""
    src = seeded(6)
    out = stream("out", src.store.url)

    (src.count_window(2).flat_map(by_message).pipe(ops.buffer_with_count(3))
     .sink(out).run("c", max_windows=1, duration=WAIT))

    assert src.position("c") == 2
    assert payloads(out) == [{"seq": 1}, {"seq": 2}]


def test_stream_sink_keys_are_per_window_so_a_replay_stores_nothing_twice() -> None:
    src = seeded(6)
    out = stream("out", src.store.url)
    pipeline = src.count_window(2).flat_map(by_message).pipe(ops.buffer_with_count(3)).sink(out)

    pipeline.run("c", max_windows=3, duration=WAIT)
    first = payloads(out)
    # A crash right after window 1 was committed: windows 2 and 3 run again.
    src.forget("c")
    src.commit("c", 2)
    pipeline.run("c", max_windows=2, duration=WAIT)

    assert first == [{"seq": s} for s in range(1, 7)]
    assert payloads(out) == first
    assert src.position("c") == 6


def test_to_list_and_skip_last_work_within_each_window() -> None:
    src = seeded(6)
    got: list[Any] = []
    (src.count_window(3).flat_map(by_message)
     .pipe(ops.skip_last(1), ops.map(lambda d: d["seq"]), ops.to_list())
     .to_observable("c").subscribe(got.append))

    assert got == [[1, 2], [4, 5]]
    assert src.position("c") == 6


def test_operators_that_schedule_without_delay_run_within_the_window() -> None:
    """start_with and concat schedule on the current thread: the chain runs
    them at once, even while the pipeline's own subscription is in progress."""
    src = seeded(4)
    got: list[Any] = []
    (src.count_window(2).flat_map(by_message)
     .pipe(ops.map(lambda d: d["seq"]), ops.start_with("begin"), ops.concat(reactivex.of("end")))
     .to_observable("c").subscribe(got.append))

    assert got == ["begin", 1, 2, "end", "begin", 3, 4, "end"]


# -- plain operators -----------------------------------------------------------------------


def test_map_and_filter_operators_still_work_on_messages() -> None:
    src = seeded(6)
    out = stream("out", src.store.url)

    handle = (src.pipe(ops.filter(lambda m: m.data["v"] % 2 == 1),
                       ops.map(lambda m: {"tenfold": m.data["v"] * 10}))
              .sink(out).run("c", max_windows=6, duration=WAIT))

    assert payloads(out) == [{"tenfold": 10}, {"tenfold": 30}, {"tenfold": 50}]
    assert handle.position == 6
    assert payloads(stream("in.dead", src.store.url)) == []


def test_map_operator_on_windows_through_to_observable() -> None:
    src = seeded(6)
    got: list[int] = []
    total: Callable[[Observable[Window]], Observable[int]] = ops.map(lambda w: sum(d["v"] for d in w.data))
    src.count_window(2).pipe(total).to_observable().subscribe(got.append)
    assert got == [3, 7, 11]


# -- time-based operators fail clearly --------------------------------------------------------


def test_a_time_based_operator_fails_the_run_and_commits_nothing() -> None:
    src = seeded(4)
    out = stream("out", src.store.url)

    with pytest.raises(InvalidArgumentError, match=r"pipe\(delay\) must finish when a window's values end"):
        src.count_window(2).pipe(ops.delay(1.0)).sink(out).run("c", max_windows=2, duration=WAIT)

    assert src.position("c") == 0
    assert payloads(out) == []
    assert payloads(stream("in.dead", src.store.url)) == []


@pytest.mark.parametrize("on_pipeline_scheduler", [False, True])
def test_a_time_based_operator_is_an_error_in_virtual_time(on_pipeline_scheduler: bool) -> None:
    """Without a scheduler of its own, delay would wait on the chain's immediate
    scheduler; with one, it completes later: both are the same clear error."""
    vt = VirtualTime()
    src = vt.stream("in")
    for t in (1, 2):
        vt.append_at(t, src, {"v": t})
    scheduler: SchedulerBase | None = vt.scheduler if on_pipeline_scheduler else None
    delay = ops.delay(0.5, scheduler=scheduler)

    with pytest.raises(InvalidArgumentError, match=r"delay or sample hold values across windows"):
        vt.run(src.count_window(1).pipe(ops.map(lambda w: w.data), delay), until=10)

    assert src.position("default") == 0


def test_sample_names_the_operators_in_the_error() -> None:
    src = seeded(2)
    errors: list[Exception] = []
    src.count_window(2).pipe(ops.map(len), ops.sample(5.0)).to_observable().subscribe(
        on_error=errors.append)

    assert len(errors) == 1
    assert isinstance(errors[0], InvalidArgumentError)
    assert "pipe(map, sample)" in str(errors[0])
    assert "window in#1..2" in str(errors[0])


# -- operator errors dead-letter one window ---------------------------------------------------


def test_an_operator_error_dead_letters_only_that_window_and_later_windows_flow() -> None:
    src = stream("in", memory_url())
    src.extend([{"v": v} for v in (5, 2, 1, 0, 10, 1)])
    out = stream("out", src.store.url)

    handle = (src.count_window(2).flat_map(lambda w: w.data)
              .pipe(ops.map(lambda d: {"q": 10 // d["v"]}), ops.to_list())
              .sink(out).run("c", max_windows=3, duration=WAIT))

    # Window 2 ({"v": 1}, {"v": 0}) fails whole: its first value's output is not sunk either.
    assert payloads(out) == [{"q": 2}, {"q": 5}, {"q": 1}, {"q": 10}]
    dead = payloads(stream("in.dead", src.store.url))
    assert [(d["stage"], d["first_seq"], d["last_seq"], d["error"]) for d in dead] == [
        ("pipe", 3, 4, "ZeroDivisionError: integer division or modulo by zero"),
    ]
    assert handle.dead_letters == 1
    assert handle.position == 6


def test_an_operator_that_fails_to_build_dead_letters_each_window() -> None:
    def broken(_: Observable[Any]) -> Observable[Any]:
        raise ValueError("cannot build")

    dead = stream("in.dead", memory_url())
    w1, w2 = window(1, ack=1), window(2, ack=2)
    out = through_stage((broken,), [Item(1, w1), Ack(1), Item(2, w2), Ack(2)], dead)

    assert out == [Ack(1), Ack(2)]
    assert [(d["first_seq"], d["error"]) for d in payloads(dead)] == [
        (1, "ValueError: cannot build"), (2, "ValueError: cannot build"),
    ]


# -- idempotent dead letters -----------------------------------------------------------------


def test_bury_with_a_key_stores_once() -> None:
    dead = stream("in.dead", memory_url())
    failure = Failure(RetryPolicy(), dead, None)
    message = Message("in", 3, T0, {"ts": "not a time"})

    for _ in range(2):
        failure.bury("window", message, ValueError("bad timestamp"), 1, key="c|dead|in:3")
    assert [(d["first_seq"], d["error"]) for d in payloads(dead)] == [(3, "ValueError: bad timestamp")]

    for _ in range(2):
        failure.bury("window", message, ValueError("bad timestamp"), 1)  # unkeyed: stored each time
    assert len(payloads(dead)) == 3
