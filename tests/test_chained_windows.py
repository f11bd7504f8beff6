"""Several windows in one pipeline: ``...fixed_time_window(...).map(mean).key_by('floor').count_window(2)``.

The values between two windows pass through a stage stream of the same store,
so each window keeps its own position and journal. These tests check the
values, exactly-once output across crashes in either window, that the stage
stream is trimmed once read, and the errors for what cannot be chained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from minibatch_rx import Pipeline, Stream, Window
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.testing import VirtualTime


class Crash(BaseException):
    """Stands in for SIGKILL: no stage catches it."""


# Readings of two rooms on floor 1 and one room on floor 2, one per second,
# event time = arrival time - 0.5 s.
ROOMS = [("kitchen", 1), ("hall", 1), ("attic", 2)]


def feed(vt: VirtualTime, s: Stream, seconds: int = 24) -> None:
    for t in range(1, seconds + 1):
        room, floor = ROOMS[t % 3]
        vt.append_at(t, s, {"room": room, "floor": floor, "ts": t - 0.5, "temp": t})


def mean(window: Window) -> dict[str, Any]:
    temps = [d["temp"] for d in window.data]
    return {"room": window.key, "floor": window.data[0]["floor"], "start": window.start.timestamp()
            if window.start else None, "mean": sum(temps) / len(temps)}


def floors(s: Stream) -> Pipeline:
    return (s.key_by("room").event_time("ts").fixed_time_window(6).map(mean)
            .key_by("floor").count_window(2)
            .map(lambda w: {"floor": w.key, "rooms": [(d["room"], d["start"]) for d in w.data],
                            "means": [d["mean"] for d in w.data]}))


def expected_floor_windows(seconds: int, until_ts: float) -> list[dict[str, Any]]:
    """The same computation written out: 6 s event-time windows per room, closed
    once the watermark (latest ts) passes their end, then pairs per floor."""
    per_room: dict[tuple[str, int], list[int]] = {}
    for t in range(1, seconds + 1):
        room, _ = ROOMS[t % 3]
        per_room.setdefault((room, int((t - 0.5) // 6)), []).append(t)
    # Emitted in closing order, then by first seq (= the first temp, one reading a second).
    closed = sorted((k * 6 + 6, per_room[(room, k)][0], k, room)
                    for (room, k) in per_room if k * 6 + 6 <= until_ts)
    pending: dict[int, list[tuple[str, float, float]]] = {}
    out = []
    for _, _, k, room in closed:
        floor = dict(ROOMS)[room]
        temps = per_room[(room, k)]
        pending.setdefault(floor, []).append((room, float(k * 6), sum(temps) / len(temps)))
        if len(pending[floor]) == 2:
            pairs = pending.pop(floor)
            out.append({"floor": floor, "rooms": [(r, st) for r, st, _ in pairs],
                        "means": [m for _, _, m in pairs]})
    return out


def test_values_flow_through_two_windows() -> None:
    vt = VirtualTime()
    s = vt.stream("rooms")
    feed(vt, s)
    out = vt.run(floors(s), until=26)  # idle advance: at 24 + 1 s the watermark follows the clock
    # Watermark at the last reading: 23.5; room windows ending at 6, 12, 18 are closed by data.
    # The last room windows [18, 24) close by the idle advance: 24 + 1 + (24 - 23.5) = 25.5.
    assert [e.value for e in out] == expected_floor_windows(24, 24)
    assert len(out) >= 4


def run_with_crash(build: Callable[[Stream, Callable[[Any], Any]], Pipeline],
                   crash_after: int | None) -> tuple[list[Any], list[str]]:
    vt = VirtualTime()
    s = vt.stream("rooms")
    feed(vt, s)
    seen: list[Any] = []

    def stage(value: Any) -> Any:
        seen.append(value)
        if crash_after is not None and len(seen) == crash_after:
            raise Crash
        return value

    pipeline = build(s, stage)
    try:
        vt.run(pipeline, until=40)
    except Crash:
        vt.scheduler.stop()
        vt.run(pipeline, until=40)
    return [m.data for m in vt.stream("out").read()], vt.store.streams()


def crash_in_second_window(s: Stream, stage: Callable[[Any], Any]) -> Pipeline:
    return floors(s).sink("out").map(stage)


def crash_in_first_window(s: Stream, stage: Callable[[Any], Any]) -> Pipeline:
    return (s.key_by("room").event_time("ts").fixed_time_window(6).map(mean).map(stage)
            .key_by("floor").count_window(2).map(lambda w: {"floor": w.key, "n": len(w)}).sink("out"))


@pytest.mark.parametrize("build", [crash_in_second_window, crash_in_first_window])
def test_a_crash_in_either_window_changes_nothing_downstream(
        build: Callable[[Stream, Callable[[Any], Any]], Pipeline]) -> None:
    expected, _ = run_with_crash(build, None)
    assert len(expected) >= 4
    for crash_after in range(1, 9):
        out, _ = run_with_crash(build, crash_after)
        assert out == expected, f"crash after value {crash_after}"


def test_the_stage_stream_is_trimmed_once_read() -> None:
    vt = VirtualTime()
    s = vt.stream("rooms")
    feed(vt, s)
    vt.run(floors(s).sink("out"), until=40)
    stage = [name for name in vt.store.streams() if name.startswith("_mb.stages.")]
    assert len(stage) == 1
    # 12 room windows went through it, 3 per closing step. A stage message is trimmed
    # once the floor window acknowledged it and the room window's position passed its
    # source messages; the room position moves after its last step's values were
    # read, so only that step's values (the [18, 24) windows, stage seqs 10-12) remain.
    left = [m.seq for m in vt.stream(stage[0]).read()]
    assert left and min(left) >= 10 and max(left) == 12
    assert vt.stream("out").count() == len(expected_floor_windows(24, 24))


def test_a_value_that_cannot_be_stored_between_windows_is_dead_lettered() -> None:
    vt = VirtualTime()
    s = vt.stream("raw")
    for t in range(1, 7):
        vt.append_at(t, s, {"n": t})
    odd_out = (s.count_window(2).map(lambda w: {"n": object()} if w.data[0]["n"] == 3 else {"n": len(w)})
               .count_window(2).map(len))
    out = vt.run(odd_out.with_retries(0), until=20)
    # Windows (1,2) and (5,6) reach the second window; (3,4) made a value the store refuses.
    assert [e.value for e in out] == [2]
    dead = [m.data for m in vt.stream("raw.dead").read()]
    assert len(dead) == 1 and dead[0]["first_seq"] == 3 and "JSON" in dead[0]["error"]


def test_what_cannot_be_chained_is_refused_when_built() -> None:
    vt = VirtualTime()
    s = vt.stream("refused")
    with pytest.raises(InvalidArgumentError, match="must be followed by a window"):
        s.key_by("k").map(str)
    chained = s.count_window(2).count_window(2)
    with pytest.raises(InvalidArgumentError, match="second window"):
        chained.start(group="g")


def keyed_counts(s: Stream, stage: Callable[[Any], Any]) -> Pipeline:
    return s.key_by("room").count_window(2).map(
        lambda w: {"room": w.key, "seqs": [m.seq for m in w.messages]}).sink("out").map(stage)


def test_keyed_count_windows_emitted_past_the_position_are_not_rebuilt_after_a_crash() -> None:
    # Keys interleave (hall, attic, kitchen, ...): hall and kitchen complete windows
    # while attic still holds its first message, so their windows lie past the
    # committed position (the lowest held seq - 1). The replay after a crash feeds
    # them again; they must be recognised as emitted, not paired anew.
    expected, _ = run_with_crash(keyed_counts, None)
    assert {"room": "kitchen", "seqs": [3, 6]} in expected
    for crash_after in range(1, 9):
        out, _ = run_with_crash(keyed_counts, crash_after)
        assert out == expected, f"crash after window {crash_after}"


def test_late_records_of_one_message_are_each_stored_once_across_a_restart() -> None:
    # A flat_map before the window makes two records of one message; both are late
    # (t 1 and 2, once the watermark is 30). Late keys name the record, not only
    # its message: both are stored, and a replay of the same message stores nothing.
    vt = VirtualTime()
    s = vt.stream("split")
    vt.append_at(1, s, {"ts": [30]})
    vt.append_at(2, s, {"ts": [1, 2]})
    vt.append_at(3, s, {"ts": [31]})

    def build() -> Pipeline:
        return (s.flat_map(lambda m: [{"t": t} for t in m.data["ts"]])
                .event_time("t").fixed_time_window(10).map(len))

    vt.run(build(), until=10, consumer="first")
    vt.run(build(), until=20, consumer="first")  # restarts from position 0: nothing acked yet
    assert [m.data for m in vt.stream("split.late").read()] == [{"t": 1}, {"t": 2}]


def test_review_findings_refused_or_kept_apart() -> None:
    vt = VirtualTime()
    s = vt.stream("misc")
    # key_by / event_time with no window after them: refused when run, not ignored.
    with pytest.raises(InvalidArgumentError, match="key_by\\(k\\) must be followed by a window"):
        s.key_by("k").to_observable("c")
    with pytest.raises(InvalidArgumentError, match="must be followed by a window"):
        s.count_window(2).map(len).event_time("t").start(consumer="c")
    # Several windows need a consumer: their stage stream is named after it.
    with pytest.raises(InvalidArgumentError, match="needs a consumer name"):
        s.count_window(2).count_window(2).to_observable()
    # A custom window factory that makes no operator fails where it is written.
    with pytest.raises(InvalidArgumentError, match="must return a WindowOperator"):
        s.window(lambda scheduler: len)


def test_event_time_without_idle_leaves_the_watermark_to_the_events() -> None:
    # A device uploading in bursts 30 s behind: with the idle advance (1 s), the
    # watermark runs on during the 400 s silence and the second burst is late;
    # with idle=None only the events move it.
    def run(idle: float | None) -> tuple[list[Any], list[Any]]:
        vt = VirtualTime()
        s = vt.stream("bursts")
        for at, ts in [(100, 70), (101, 71), (500, 370), (501, 375)]:
            vt.append_at(at, s, {"ts": ts})
        out = vt.run(s.event_time("ts", max_delay="5s", idle=idle).fixed_time_window(10)
                     .map(lambda w: [d["ts"] for d in w.data]), until=1000)
        late = [m.data["ts"] for m in vt.stream("bursts.late").read()] \
            if "bursts.late" in vt.store.streams() else []
        return [e.value for e in out], late

    assert run(None) == ([[70, 71]], [])  # [370, 380) waits for later events
    windows, late = run(1)
    assert late == [370, 375]  # at 500 the watermark is 71 - 5 + (500 - 101 - 1) = 464 >= 380
    assert windows == [[70, 71]]


def gapped_run(stop_at: float | None) -> list[Any]:
    vt = VirtualTime()
    s = vt.stream("gapped")
    vt.append_at(1, s, {"ts": [12.5]})
    vt.append_at(2, s, {"ts": [14.5, 15.5]})  # 14.5 lies in the gap [14, 15); 15.5 in [15, 17)
    vt.append_at(3, s, {"ts": [18]})
    pipeline = (s.flat_map(lambda m: [{"ts": t} for t in m.data["ts"]]).event_time("ts", idle=100)
                .sliding_window(2, 3, by="time")
                .map(lambda w: {"start": w.start.timestamp() if w.start else None,
                                "ts": [d["ts"] for d in w.data]}).sink("out"))
    if stop_at is not None:
        vt.run(pipeline, until=stop_at)
    vt.run(pipeline, until=400)
    return [m.data for m in vt.stream("out").read()]


def test_a_window_closed_amid_one_messages_records_does_not_acknowledge_that_message() -> None:
    # Record 14.5 (message 2) moves the watermark to 14.5 and closes [12, 14); the
    # message's next record, 15.5, is not placed yet. Acknowledging message 2 with
    # that window lost 15.5 (and its window [15, 17)) to a stop and start at 2.5.
    expected = [{"start": 12.0, "ts": [12.5]}, {"start": 15.0, "ts": [15.5]}, {"start": 18.0, "ts": [18]}]
    assert gapped_run(None) == expected
    assert gapped_run(2.5) == expected


def test_flat_map_before_a_window_that_cannot_tell_its_records_apart_is_refused() -> None:
    s = VirtualTime().stream("split")
    for build in (lambda: s.flat_map(lambda m: [m.data]).count_window(3),
                  lambda: s.pipe(lambda o: o).key_by("k").relaxed_time_window(1),
                  lambda: s.flat_map(lambda m: [m.data]).sliding_window(3, 1)):
        with pytest.raises(InvalidArgumentError, match="flat_map or pipe before"):
            build()
