"""Count-window consumer groups in virtual time: a TestScheduler drives the
members' turns, partial windows, lease expiry and outage back-off."""

from __future__ import annotations

from typing import Any

import pytest

from minibatch_rx.errors import StoreUnavailableError
from minibatch_rx.testing import VirtualTime


def shared(vt: VirtualTime, timeout: float | None = None, members: int = 2) -> tuple[list[Any], list[Any]]:
    s = vt.stream("jobs")
    got: list[tuple[str, float, list[int]]] = []
    handles = []
    for name in "ab"[:members]:
        def record(v: list[int], name: str = name) -> None:
            got.append((name, vt.now, v))

        pipeline = s.count_window(3, timeout=timeout).map(lambda w: [d["i"] for d in w.data]).sink(record)
        handles.append(pipeline.start(group="g", scheduler=vt.scheduler, lease_timeout=10))
    return got, handles


def test_two_members_take_turns_on_a_backlog_and_every_message_is_processed_once() -> None:
    vt = VirtualTime()
    s = vt.stream("jobs")
    s.extend({"i": i} for i in range(12))  # a backlog: the members take turns
    for i in range(12, 15):
        vt.append_at(1 + i, s, {"i": i})  # then live: the window is made as its third message arrives
    got, handles = shared(vt)
    vt.advance_to(40)
    for handle in handles:
        handle.stop()
    assert sorted(i for _, _, items in got for i in items) == list(range(15))
    assert [(name, t, items) for name, t, items in got[:4]] == [
        ("a", 0.0, [0, 1, 2]), ("b", 0.0, [3, 4, 5]), ("a", 0.0, [6, 7, 8]), ("b", 0.0, [9, 10, 11])]
    assert [(t, items) for _, t, items in got[4:]] == [(15.0, [12, 13, 14])]
    assert s.position("g") == 15


def test_a_partial_window_is_leased_when_the_timeout_passes_on_the_virtual_clock() -> None:
    vt = VirtualTime()
    s = vt.stream("jobs")
    for i, t in enumerate([1, 2, 3, 20, 21]):
        vt.append_at(t, s, {"i": i})
    got, handles = shared(vt, timeout=5, members=1)
    vt.advance_to(20.5)
    assert [(t, items) for _, t, items in got] == [(3.0, [0, 1, 2])]  # nothing partial while idle
    vt.advance_to(40)
    handles[0].stop()
    assert [(t, items) for _, t, items in got] == [(3.0, [0, 1, 2]), (25.0, [3, 4])]
    assert s.position("g") == 5


def test_an_abandoned_lease_is_taken_over_only_once_it_expires() -> None:
    vt = VirtualTime()
    s = vt.stream("jobs")
    s.extend({"i": i} for i in range(3))
    taken = vt.store.lease("jobs", "g", "gone", 3, 10.0, False)  # a member that died holding it
    assert taken is not None and (taken.start, taken.end) == (1, 3)
    got, handles = shared(vt, members=1)
    vt.advance_to(9.5)
    assert got == []
    vt.advance_to(11)
    handles[0].stop()
    assert [items for _, _, items in got] == [[0, 1, 2]]
    assert 10.0 <= got[0][1] <= 10.5  # found within one idle turn after it expired
    assert s.position("g") == 3


def test_a_store_outage_is_waited_out_with_back_off_on_the_virtual_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    vt = VirtualTime()
    s = vt.stream("jobs")
    s.extend({"i": i} for i in range(3))
    real = vt.store.lease
    failures = [0]

    def lease(*args: Any) -> Any:
        if failures[0] < 4:
            failures[0] += 1
            raise StoreUnavailableError("store down (test)")
        return real(*args)

    monkeypatch.setattr(vt.store, "lease", lease)
    got, handles = shared(vt, members=1)
    vt.advance_to(0.7)
    assert got == []  # 0.05 + 0.1 + 0.2 + 0.4 = 0.75 s of back-off
    vt.advance_to(1)
    handles[0].stop()
    assert failures[0] == 4
    assert [(round(t, 2), items) for _, t, items in got] == [(0.75, [0, 1, 2])]
