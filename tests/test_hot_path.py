"""Behaviour the read and window hot paths must keep while they are made fast:
messages stay immutable values, decoding keeps json.loads' results and errors,
windows handed on with an ack are copies, a stuck stage is still named."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import re
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.scheduler import ImmediateScheduler
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from minibatch_rx.calls import Activity, Fused, subscribe_to
from minibatch_rx.message import Message
from minibatch_rx.store.sqlite_reader import select
from minibatch_rx.window import Window
from minibatch_rx.windows import count_window
from minibatch_rx.windows._engine import WindowOperator, acked

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- Message -------------------------------------------------------------------


def test_message_keeps_its_fields_positional_and_by_name() -> None:
    m = Message("s", 7, T0, {"a": 1})
    assert (m.stream, m.seq, m.ts, m.data) == ("s", 7, T0, {"a": 1})
    assert Message(stream="s", seq=7, ts=T0, data={"a": 1}) == m
    with pytest.raises(TypeError):
        Message("s", 7, T0)  # type: ignore[call-arg]


def test_message_is_immutable() -> None:
    m = Message("s", 7, T0, {"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.seq = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del m.data
    # (Python 3.11's frozen slotted dataclasses refuse a new attribute with a TypeError.)
    with pytest.raises((AttributeError, TypeError)):
        m.extra = 1  # type: ignore[attr-defined]
    assert m.seq == 7


def test_message_equality_and_repr() -> None:
    m = Message("s", 7, T0, {"a": 1})
    assert m == Message("s", 7, T0, {"a": 1})
    assert m != Message("s", 8, T0, {"a": 1})
    assert m != Message("s", 7, T0, {"a": 2})
    assert m != ("s", 7, T0, {"a": 1})  # type: ignore[comparison-overlap]
    assert repr(m) == f"Message(stream='s', seq=7, ts={T0!r}, data={{'a': 1}})"


def test_message_works_with_dataclass_tools_copy_and_pickle() -> None:
    m = Message("s", 7, T0, {"a": 1})
    moved = dataclasses.replace(m, seq=9, data={"b": 2})
    assert moved == Message("s", 9, T0, {"b": 2})
    assert m.seq == 7
    assert [f.name for f in dataclasses.fields(m)] == ["stream", "seq", "ts", "data"]
    assert dataclasses.asdict(m) == {"stream": "s", "seq": 7, "ts": T0, "data": {"a": 1}}
    assert copy.deepcopy(m) == m
    assert pickle.loads(pickle.dumps(m)) == m


def test_message_matches_by_position() -> None:
    match Message("s", 7, T0, {"a": 1}):
        case Message(stream, seq, _, data):
            assert (stream, seq, data) == ("s", 7, {"a": 1})
        case _:
            pytest.fail("Message no longer matches by position")


# -- decoding rows ------------------------------------------------------------


def _table(rows: list[tuple[str, int, float, object]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE mb_messages (stream TEXT, seq INTEGER, ts REAL, data)")
    conn.executemany("INSERT INTO mb_messages VALUES (?, ?, ?, ?)", rows)
    return conn


def test_select_decodes_as_json_loads_does() -> None:
    texts = ['{"a":1,"b":[1,2.5,"x"],"c":{"d":null,"e":true}}', ' {"a": 1} ', '{"n":NaN}',
             '{"u":"gr\\u00fc\\u00dfe \\ud83c\\udf0d"}', '{"big":9223372036854775807}']
    conn = _table([("s", i, 1.5, text) for i, text in enumerate(texts, 1)]
                  + [("s", 9, 2.0, b'{"raw":1}')])
    messages = select(conn, "s", 0, None)
    decoded = [m.data for m in messages]
    expected = [json.loads(text) for text in texts] + [{"raw": 1}]
    assert json.dumps(decoded[:2] + decoded[3:]) == json.dumps(expected[:2] + expected[3:])
    assert decoded[2]["n"] != decoded[2]["n"]  # NaN
    assert [m.seq for m in messages] == [1, 2, 3, 4, 5, 9]
    assert messages[0].ts == datetime.fromtimestamp(1.5, UTC)
    assert messages[-1].ts == datetime.fromtimestamp(2.0, UTC)
    assert all(m.stream == "s" for m in messages)
    assert [m.seq for m in select(conn, "s", 2, 2)] == [3, 4]


@pytest.mark.parametrize("text", ['{"a":1}x', '{"a":', "", '{"a":1}{"b":2}'])
def test_select_raises_what_json_loads_raises_on_bad_data(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    conn = _table([("s", 1, 1.0, text)])
    with pytest.raises(json.JSONDecodeError) as raised:
        select(conn, "s", 0, None)
    assert str(raised.value) == str(expected.value)


# -- windows and the window driver ----------------------------------------------


def test_window_keeps_its_fields_defaults_and_equality() -> None:
    m = Message("s", 1, T0, {"v": 1})
    w = Window((m,), "s")
    assert (w.messages, w.stream, w.start, w.end, w.ack, w.checkpoint, w.key, w.tag) == (
        (m,), "s", None, None, None, None, None, None)
    full = Window(messages=(m,), stream="s", start=T0, end=T0, ack=1, checkpoint={"c": 1}, key="k", tag="t")
    assert (full.start, full.end, full.ack, full.checkpoint, full.key, full.tag) == (
        T0, T0, 1, {"c": 1}, "k", "t")
    # checkpoint and tag take no part in equality nor repr
    assert full == Window((m,), "s", T0, T0, 1, None, "k", None)
    assert full != Window((m,), "s", T0, T0, 2, None, "k", None)
    assert repr(w) == f"Window(messages=({m!r},), stream='s', start=None, end=None, ack=None, key=None)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.ack = 3  # type: ignore[misc]
    assert dataclasses.replace(w, key="k").key == "k"


def test_acked_window_is_a_copy() -> None:
    m = Message("s", 1, T0, {"v": 1})
    w = Window((m,), "s", T0, T0, key="k", tag="t")
    copy_ = acked(w, 5, {"state": 1})
    assert copy_ is not w
    assert (copy_.ack, copy_.checkpoint) == (5, {"state": 1})
    assert (copy_.messages, copy_.stream, copy_.start, copy_.end, copy_.key, copy_.tag) == (
        (m,), "s", T0, T0, "k", "t")
    assert (w.ack, w.checkpoint) == (None, None)  # the core's window is left as it was


def test_acked_keeps_a_window_subclass() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Tagged(Window[dict[str, Any]]):
        note: str = ""

    w = Tagged((Message("s", 1, T0, {}),), "s", note="kept")
    copy_ = acked(w, 1, None)
    assert type(copy_) is Tagged
    assert (copy_.note, copy_.ack) == ("kept", 1)


def _guarded(active: list[bool]) -> tuple[WindowOperator, Subject[Message]]:
    operator = count_window(2)
    operator.guarded, operator.active = True, lambda: active[0]
    return operator, Subject()


def test_guarded_operator_drops_input_and_windows_once_inactive() -> None:
    active = [True]
    operator, source = _guarded(active)
    out: list[list[int]] = []
    operator(source).subscribe(lambda w: out.append([m.seq for m in w.messages]),
                               scheduler=ImmediateScheduler())
    for seq in (1, 2, 3):
        source.on_next(Message("s", seq, T0, {}))
    active[0] = False
    for seq in (4, 5, 6):
        source.on_next(Message("s", seq, T0, {}))
    assert out == [[1, 2]]


def test_guarded_operator_turns_a_downstream_error_into_on_error() -> None:
    operator, source = _guarded([True])
    errors: list[Exception] = []
    seen: list[int | None] = []

    def fail(window: Window) -> None:
        seen.append(window.ack)
        raise RuntimeError("sink broke")

    operator(source).subscribe(fail, errors.append, scheduler=ImmediateScheduler())
    for seq in (1, 2, 3, 4):
        source.on_next(Message("s", seq, T0, {}))  # must not raise into the source
    assert seen == [2]
    assert [str(e) for e in errors] == ["sink broke"]


def test_unguarded_operator_lets_a_downstream_error_reach_the_source() -> None:
    operator = count_window(1)
    source: Subject[Message] = Subject()

    def fail(window: Window) -> None:
        raise RuntimeError("sink broke")

    operator(source).subscribe(fail, scheduler=ImmediateScheduler())
    with pytest.raises(RuntimeError, match="sink broke"):
        source.on_next(Message("s", 1, T0, {}))


def test_count_window_with_timeout_still_flushes_on_time() -> None:
    scheduler = TestScheduler()
    operator = count_window(3, timeout=5.0, scheduler=scheduler)
    source: Subject[Message] = Subject()
    out: list[tuple[float, list[int]]] = []
    operator(source).subscribe(
        lambda w: out.append((scheduler.clock, [m.seq for m in w.messages])))
    moments = {10.0: 1, 11.0: 2, 30.0: 3, 31.0: 4, 32.0: 5, 33.0: 6}
    def send(at: float, seq: int) -> None:
        scheduler.schedule_absolute(
            at, lambda _s, _st: source.on_next(Message("s", seq, datetime.fromtimestamp(at, UTC), {})))

    for at, seq in moments.items():
        send(at, seq)
    scheduler.start()
    assert out == [(15.0, [1, 2]), (32.0, [3, 4, 5]), (38.0, [6])]


# -- naming what runs -----------------------------------------------------------


def test_activity_names_the_longest_running_stage() -> None:
    activity = Activity()
    assert activity.describe() is None
    messages = tuple(Message("s", seq, T0, {}) for seq in (3, 1, 2))
    entered, release = threading.Event(), threading.Event()

    def stuck() -> None:
        activity.enter("map", Window(messages, "s"))
        entered.set()
        release.wait(10)
        activity.leave()

    worker = threading.Thread(target=stuck)
    worker.start()
    try:
        assert entered.wait(10)
        assert not activity.running_here()
        activity.enter("sink", Message("s", 9, T0, {}))
        assert activity.running_here()
        text = activity.describe()
        assert text is not None
        assert re.fullmatch(r"map on window s#1\.\.3 for \d+\.\d s", text), text
        activity.leave()
        assert not activity.running_here()
    finally:
        release.set()
        worker.join(10)
    assert activity.describe() is None


def test_activity_describes_a_message() -> None:
    activity = Activity()
    activity.enter("filter", Message("s", 7, T0, {}))
    text = activity.describe()
    assert text is not None and text.startswith("filter on message s#7 for ")


# -- our operators calling each other ----------------------------------------------


def _relay(source: Observable[int]) -> Fused[int]:
    """A Fused operator passing values on, subscribing upstream through subscribe_to."""

    def subscribe(observer: abc.ObserverBase[int], scheduler: abc.SchedulerBase | None = None
                  ) -> abc.DisposableBase:
        return subscribe_to(source, observer.on_next, observer.on_error, observer.on_completed, scheduler)

    return Fused(subscribe)


def test_fused_chain_passes_values_errors_and_completion() -> None:
    source: Subject[int] = Subject()
    got: list[object] = []
    _relay(_relay(source)).subscribe(got.append, lambda e: got.append(f"error {e}"),
                                     lambda: got.append("done"))
    source.on_next(1)
    source.on_next(2)
    source.on_completed()
    assert got == [1, 2, "done"]

    failing: Subject[int] = Subject()
    errors: list[str] = []
    _relay(_relay(failing)).subscribe(got.append, lambda e: errors.append(str(e)))
    failing.on_error(RuntimeError("boom"))
    assert errors == ["boom"]


def test_fused_keeps_reactivex_rules_for_outside_subscribers() -> None:
    emitted: list[abc.ObserverBase[int]] = []

    def subscribe(observer: abc.ObserverBase[int], scheduler: abc.SchedulerBase | None = None
                  ) -> abc.DisposableBase:
        emitted.append(observer)
        return Disposable()

    got: list[object] = []
    subscription = Fused(subscribe).subscribe(got.append, lambda e: got.append("error"),
                                              lambda: got.append("done"))
    [observer] = emitted
    observer.on_next(1)
    observer.on_completed()
    observer.on_next(2)  # after completion: dropped
    observer.on_error(RuntimeError("late"))  # after completion: dropped
    assert got == [1, "done"]
    subscription.dispose()


def test_disposing_a_fused_chain_stops_its_source() -> None:
    source: Subject[int] = Subject()
    got: list[int] = []
    subscription = _relay(_relay(source)).subscribe(got.append)
    source.on_next(1)
    subscription.dispose()
    source.on_next(2)
    assert got == [1]
    assert not source.observers
