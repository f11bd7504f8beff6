"""Retention: keep=False trims only what every registered consumer and group
acknowledged; max_age removes by age; numbering survives every removal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from minibatch_rx import Stream, stream
from minibatch_rx.store import MemoryStore


def test_trim_waits_for_every_registered_consumer(store_url: str) -> None:
    s = stream("ret.in", store_url)
    s.extend({"i": i} for i in range(10))
    s.count_window(5).map(len).sink(lambda n: None).run(consumer="slow", max_windows=1)
    assert s.position("slow") == 5
    fast = s.count_window(5).map(len).sink(lambda n: None).trim_processed()
    fast.run(consumer="fast", max_windows=2)
    assert s.position("fast") == 10
    # 'slow' has acknowledged only 5: messages 6..10 must stay.
    assert [m.seq for m in s.read()] == [6, 7, 8, 9, 10]
    s.count_window(5).map(len).sink(lambda n: None).trim_processed().run(consumer="slow", max_windows=1)
    assert s.count() == 0
    assert s.append({"i": 10}) == 11, "numbering continues after trimming everything"


def test_a_consumer_is_registered_before_its_first_ack(store_url: str) -> None:
    s = stream("ret.reg", store_url)
    s.extend({"i": i} for i in range(4))
    # A group that has started but not yet acknowledged anything still holds messages back.
    handle = s.count_window(100).map(len).sink(lambda n: None).start(group="late-group")
    try:
        s.count_window(2).map(len).sink(lambda n: None).trim_processed().run(consumer="eager", max_windows=2)
    finally:
        handle.stop()
    assert s.positions() == {"late-group": 0, "eager": 4}
    assert s.count() == 4


def test_keep_false_in_the_streaming_decorator_trims_acknowledged(store_url: str) -> None:
    from minibatch_rx import streaming

    s = Stream.get_or_create("ret.compat", url=store_url)
    s.extend({"v": v} for v in range(4))
    seen: list[list[int]] = []
    streaming("ret.compat", size=2, keep=False, url=store_url, max_windows=2)(
        lambda w: seen.append([d["v"] for d in w.data])
    )
    assert seen == [[0, 1], [2, 3]]
    assert s.count() == 0


def test_expire_removes_by_age_on_the_store_clock() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    store = MemoryStore("memory://expire", clock=lambda: now[0])
    s = Stream.get_or_create("ret.age", store=store)
    s.append({"old": True})
    now[0] += timedelta(hours=2)
    s.append({"old": False})
    removed = s.expire("1h")
    assert removed == 1
    assert [m.data for m in s.read()] == [{"old": False}]


def test_expire_keeps_young_messages_and_numbering(store_url: str) -> None:
    s = stream("ret.expire", store_url)
    s.extend({"i": i} for i in range(5))
    assert s.expire("1h") == 0
    assert s.count() == 5
    assert s.expire(0) == 5
    assert s.count() == 0
    assert s.append({"i": 5}) == 6


def test_retain_expires_while_running(store_url: str) -> None:
    s = stream("ret.running", store_url)
    s.extend({"i": i} for i in range(6))
    # Every message is older than a nanosecond by the time the first window is acknowledged.
    s.count_window(3).map(len).sink(lambda n: None).retain(1e-9).run(consumer="c", max_windows=1)
    assert s.count() == 0
    assert s.position("c") == 3


def test_retain_follows_a_virtual_clock() -> None:
    from minibatch_rx.testing import VirtualTime

    vt = VirtualTime()
    s = vt.stream("ret.virtual")
    for t in (1, 2, 50, 120):
        vt.append_at(t, s, {"t": t})
    out = vt.run(s.count_window(1).map(lambda w: w.data[0]["t"]).retain("100s"), until=200)
    assert [e.value for e in out] == [1, 2, 50, 120]
    # At t=120 the messages from t=1 and t=2 were over 100 s old.
    assert [m.data["t"] for m in s.read()] == [50, 120]


@pytest.mark.parametrize("cycles", [1, 3])
def test_reads_skip_removed_messages_and_numbering_survives(store_url: str, cycles: int) -> None:
    s = stream("ret.page", store_url)
    for _ in range(cycles):
        s.extend({"i": i} for i in range(3))
        s.clear()  # on MongoDB the last message stays behind as a tombstone
    expected = s.extend({"j": j} for j in range(3))
    assert expected == [3 * cycles + 1, 3 * cycles + 2, 3 * cycles + 3]
    assert [m.seq for m in s.read(limit=2)] == expected[:2]
    assert [m.seq for m in s.read(after=0, limit=3)] == expected
    assert [m.seq for m in s.read()] == expected
    assert s.count() == 3
    assert s.trim(expected[0]) == 1
    assert [m.seq for m in s.read()] == expected[1:]
