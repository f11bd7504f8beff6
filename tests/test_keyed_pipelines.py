"""key_by and event_time in pipelines, in virtual time (issue 10, point 7).

The DSL end to end (keys, event time, late and dead-letter streams), stages
before a window, the arguments refused when the pipeline is built, and
restart determinism: a pipeline that crashes after any window and restarts
writes the same sink and late streams as one that never stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from minibatch_rx import InvalidArgumentError, Pipeline, Stream, Window
from minibatch_rx.testing import Emission, VirtualTime, seconds
from minibatch_rx.windows import _timed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""Event times are offsets from here, written as ISO-8601 text."""


def iso(offset: float) -> str:
    """``T0 + offset`` seconds as ISO-8601 text with a ``Z``."""
    return (T0 + timedelta(seconds=offset)).isoformat().replace("+00:00", "Z")


def since_t0(moment: datetime | None) -> float | None:
    """A window bound as seconds after :data:`T0`."""
    return None if moment is None else (moment - T0).total_seconds()


def payloads(vt: VirtualTime, name: str) -> list[Any]:
    """The payloads of stream ``name`` (none if it was never created)."""
    return [m.data for m in vt.stream(name).read()] if name in vt.store.streams() else []


def readings(vt: VirtualTime, plan: Sequence[tuple[float, Mapping[str, Any]]], name: str = "r",
             stamped: bool = False) -> Stream:
    """Stream ``name`` with each ``(at, payload)`` of ``plan`` appended at virtual time
    ``at``; ``stamped``: with ingest ts ``payload['t']`` (a producer whose clock is off)."""
    s = vt.stream(name)
    for at, payload in plan:
        vt.append_at(at, s, payload, stamp=payload["t"] if stamped else None)
    return s


def summary(window: Window) -> dict[str, Any]:
    """A window of readings as ``{'key', 'start' (seconds after T0), 'v' (the values)}``."""
    return {"key": window.key, "start": since_t0(window.start), "v": [d["v"] for d in window.data]}


def said(key: Any, start: float, values: list[Any]) -> dict[str, Any]:
    """What :func:`summary` says of a window."""
    return {"key": key, "start": start, "v": values}


# -- the DSL end to end ------------------------------------------------------------------------

ROOMS = [
    (1, {"room": "kitchen", "ts": iso(1), "v": 1}),
    (2, {"room": "hall", "ts": iso(2), "v": 2}),
    (3, {"room": "kitchen", "ts": iso(4), "v": 3}),
    (4, {"room": "hall", "ts": iso(3.5), "v": 4}),  # out of order (after 4), [0, 5) open: watermark 2
    (5, {"room": "kitchen", "ts": iso(8), "v": 5}),  # watermark 6: the [0, 5) windows close
    (6, {"room": "hall", "ts": iso(4.5), "v": 6}),  # hall's [0, 5) is out: late
    (7, {"room": "hall", "ts": iso(9), "v": 7}),  # watermark 7
]


def test_keyed_event_time_windows_through_the_dsl() -> None:
    vt = VirtualTime()
    s = readings(vt, ROOMS)
    pipeline = (s.key_by("room").event_time("ts", max_delay="2s", idle="1s")
                .fixed_time_window("5s").map(summary).sink("rooms"))

    out = vt.run(pipeline, until=30)

    assert out == [
        # [0, 5) by first record: kitchen (seq 1), then hall (seq 2).
        Emission(5.0, said("kitchen", 0, [1, 3])), Emission(5.0, said("hall", 0, [2, 4])),
        # Quiet after 7: watermark 7 advances from 7 + 1 and reaches 10 at 8 + 3 = 11.
        Emission(11.0, said("kitchen", 5, [5])), Emission(11.0, said("hall", 5, [7])),
    ]
    assert payloads(vt, "r.late") == [ROOMS[5][1]]
    assert payloads(vt, "rooms") == [e.value for e in out]
    assert s.position("default") == 7


def test_window_key_and_bounds_reach_user_code() -> None:
    vt = VirtualTime()
    s = readings(vt, ROOMS[:2])
    seen: list[Window] = []
    vt.run(s.key_by("room").event_time("ts").fixed_time_window("5s").sink(seen.append), until=10)
    # Event time: quiet from 2 + 1 s at watermark 2, [0, 5) closes at 3 + 3 = 6 for both rooms.
    assert [(w.key, w.start, w.end, w.stream) for w in seen] == [
        ("kitchen", T0, T0 + timedelta(seconds=5), "r"), ("hall", T0, T0 + timedelta(seconds=5), "r")]


def test_late_records_of_keyed_event_time_windows_go_to_a_late_callable() -> None:
    vt = VirtualTime()
    s = readings(vt, ROOMS)
    late: list[tuple[float, int]] = []
    pipeline = (s.key_by("room").event_time("ts", max_delay=2).fixed_time_window(5)
                .late(lambda m: late.append((vt.now, m.seq))).map(summary))
    vt.run(pipeline, until=30)
    assert late == [(6.0, 6)]
    assert "r.late" not in vt.store.streams()


# -- dead letters -------------------------------------------------------------------------------

BAD = [
    (1, {"room": "kitchen", "ts": iso(1), "v": 1}),
    (2, {"room": "kitchen", "v": 2}),  # no ts
    (2.5, {"room": "kitchen", "ts": "yesterday", "v": 3}),
    (3, {"room": "kitchen", "ts": True, "v": 4}),
    (3.5, {"ts": iso(2), "v": 5}),  # no room
    (4, {"room": {"id": 1}, "ts": iso(3), "v": 6}),
    (4.5, {"room": "kitchen", "ts": iso(4), "v": 7}),
]
BAD_REASONS = [
    (2, "BadRecordError: event_time field 'ts' is missing from {'room': 'kitchen', 'v': 2}"),
    (3, "BadRecordError: timestamp 'yesterday' is not ISO-8601 text, epoch seconds or a datetime"),
    (4, "BadRecordError: timestamp True is not ISO-8601 text, epoch seconds or a datetime"),
    (5, "BadRecordError: key_by field 'room' is missing from {'ts': '2026-01-01T00:00:02Z', 'v': 5}"),
    (6, "BadRecordError: key {'id': 1} is a dict; keys must be str, int, float, bool, None "
        "or a tuple of them"),
]


def bad_records_pipeline(s: Stream) -> Pipeline:
    return s.key_by("room").event_time("ts").fixed_time_window(5).map(summary)


def test_records_without_a_valid_timestamp_or_key_are_dead_lettered_and_the_stream_flows_on() -> None:
    vt = VirtualTime()
    s = readings(vt, BAD)
    out = vt.run(bad_records_pipeline(s), until=30)
    # A rejected record is no arrival: the watermark 1 of record 1 advances from 1 + 1 s,
    # 3.5 by 4.5, when record 7 (time 4) still finds [0, 5) open. Quiet from 4.5 + 1 at
    # watermark 4: [0, 5) closes at 5.5 + 1.
    assert out == [Emission(6.5, said("kitchen", 0, [1, 7]))]
    dead = payloads(vt, "r.dead")
    assert [(d["first_seq"], d["error"]) for d in dead] == BAD_REASONS
    assert all(d["stage"] == "window" and d["attempts"] == 1 and d["stream"] == "r" for d in dead)
    assert [d["data"] for d in dead] == [[BAD[seq - 1][1]] for seq, _ in BAD_REASONS]
    assert s.position("default") == 7


def test_a_dead_letter_is_stored_once_when_a_restart_reads_its_record_again() -> None:
    vt = VirtualTime()
    s = readings(vt, BAD)
    crashes = iter([True])

    def crash_once(window: Window) -> Window:
        if next(crashes, False):
            raise Crash
        return window

    pipeline = bad_records_pipeline(s).map(crash_once)
    with pytest.raises(Crash):
        vt.run(pipeline, until=30)
    vt.scheduler.stop()
    assert s.position("default") == 0  # the window was not acknowledged: all is read again
    vt.run(pipeline, until=40)
    assert [(d["first_seq"], d["error"]) for d in payloads(vt, "r.dead")] == BAD_REASONS
    assert s.position("default") == 7


# -- stages before the window: it holds their values --------------------------------------------


def test_map_before_the_window_makes_the_records_keys_and_times_are_read_from() -> None:
    vt = VirtualTime()
    s = readings(vt, [(1, {"raw": "kitchen|1|10"}), (2, {"raw": "hall|2|20"}), (3, {"raw": "kitchen|3|30"})])

    def parse(message: Any) -> dict[str, Any]:
        room, t, v = message.data["raw"].split("|")
        return {"room": room, "t": iso(int(t)), "v": int(v)}

    out = vt.run(s.map(parse).key_by("room").event_time("t").fixed_time_window(10).map(summary), until=30)
    # Times 1..3 s: [0, 10) per room; quiet from 3 + 1 at watermark 3, closes at 4 + 7.
    assert out == [Emission(11.0, said("kitchen", 0, [10, 30])), Emission(11.0, said("hall", 0, [20]))]


def test_filter_before_the_window_drops_records_and_their_seqs_still_count_as_handled() -> None:
    vt = VirtualTime()
    plan = [(at, {"room": "kitchen", "t": at, "v": at}) for at in (1, 2, 3, 4)]
    s = readings(vt, plan)
    seen: list[Window] = []
    pipeline = (s.filter(lambda m: m.data["v"] % 2 == 0).key_by("room").event_time("t")
                .fixed_time_window(10).sink(seen.append))
    vt.run(pipeline, until=30)
    # Records 2 and 4 only; quiet from 4 + 1 at watermark 4: [0, 10) closes at 5 + 6 = 11.
    assert [[m.seq for m in w.messages] for w in seen] == [[2, 4]]
    assert seen[0].ack == 4
    assert s.position("default") == 4


def test_flat_map_before_the_window_makes_several_records_of_one_message() -> None:
    vt = VirtualTime()
    s = readings(vt, [
        (1, {"room": "kitchen", "batch": [{"t": 1, "v": 1}, {"t": 12, "v": 2}]}),
        (2, {"room": "hall", "batch": [{"t": 3, "v": 3}]}),
    ])

    def unbatch(message: Any) -> list[dict[str, Any]]:
        return [{"room": message.data["room"], **item} for item in message.data["batch"]]

    seen: list[Window] = []
    pipeline = s.flat_map(unbatch).key_by("room").event_time("t").fixed_time_window(10).sink(seen.append)
    vt.run(pipeline, until=40)
    # Watermark 12 after message 1: its first record's [0, 10) closes at once; hall's t = 3
    # then comes late. Quiet from 2 + 1 at watermark 12: [10, 20) closes at 3 + 8 = 11.
    assert [(w.key, seconds(w.start), [m.seq for m in w.messages], w.data) for w in seen] == [
        ("kitchen", 0.0, [1], [{"room": "kitchen", "t": 1, "v": 1}]),  # epoch times: [0, 10)
        ("kitchen", 10.0, [1], [{"room": "kitchen", "t": 12, "v": 2}]),
    ]
    assert [w.ack for w in seen] == [0, 2]  # message 1 is done only with its second record
    assert payloads(vt, "r.late") == [{"room": "hall", "t": 3, "v": 3}]


# -- refused when the pipeline is built ---------------------------------------------------------

Build = Callable[[Stream], Any]


@pytest.mark.parametrize(("build", "message"), [
    (lambda s: s.key_by("k").map(len), "key_by and event_time must be followed by a window, not by map:len"),
    (lambda s: s.event_time("t").filter(bool), "must be followed by a window, not by filter:bool"),
    (lambda s: s.fixed_time_window(5).key_by("k").sink("out"),  # key_by after a window: a second one
     "must be followed by a window, not by sink:out"),
    (lambda s: s.key_by("k").key_by("j"), "key_by is already set for this window"),
    (lambda s: s.event_time("t").event_time("u"), "event_time is already set for this window"),
    (lambda s: s.event_time("t").count_window(2),
     "event_time applies to time windows (fixed_time_window, sliding_window(by='time'), "
     "session_window), not to count_window(2)"),
    (lambda s: s.event_time("t").relaxed_time_window(5), "not to relaxed_time_window(5)"),
    (lambda s: s.event_time("t").sliding_window(3, 1),
     "event_time applies to sliding_window(by='time'), not to sliding_window(3,1)"),
    (lambda s: s.key_by("k").fixed_time_window(5, emit_empty=True),
     "fixed_time_window(emit_empty=True) cannot run per key (key_by)"),
    (lambda s: s.key_by("k").relaxed_time_window(5, emit_empty=True), "cannot run per key (key_by)"),
    (lambda s: s.key_by("k").sliding_window(3, 1), "sliding_window(3,1) cannot run per key (key_by) yet"),
    (lambda s: s.event_time("t", max_delay=-1), "event_time max_delay must be >= 0, got -1"),
    (lambda s: s.event_time("t", max_delay="soon"), "event_time max_delay 'soon' is not an interval"),
    (lambda s: s.event_time("t", idle=-2), "event_time idle must be >= 0, got -2"),
    (lambda s: s.event_time(""), "event_time field name must not be empty"),
    (lambda s: s.key_by(""), "key_by field name must not be empty"),
    (lambda s: s.key_by(42), "key_by needs a field name or a callable, got 42"),
    (lambda s: s.event_time(None), "event_time needs a field name or a callable, got None"),
])
def test_misplaced_or_bad_key_by_and_event_time_are_refused_when_built(build: Build, message: str) -> None:
    s = VirtualTime().stream("r")
    with pytest.raises(InvalidArgumentError) as info:
        build(s)
    assert message in str(info.value)


def test_a_keyed_group_refuses_a_second_window_and_a_changed_partition_count() -> None:
    vt = VirtualTime()
    s = vt.stream("r")
    with pytest.raises(InvalidArgumentError, match="one window or pattern"):
        s.key_by("k").count_window(2).count_window(3).start(group="g", scheduler=vt.scheduler)
    first = s.key_by("k").count_window(2).start(group="g", partitions=4, scheduler=vt.scheduler)
    try:
        with pytest.raises(InvalidArgumentError, match="this group has 4 partitions"):
            s.key_by("k").count_window(2).start(group="g", partitions=6, scheduler=vt.scheduler)
    finally:
        first.stop()


# -- restart determinism --------------------------------------------------------------------------


class Crash(BaseException):
    """Stands in for SIGKILL: no stage catches it, so nothing after it runs."""


Plan = list[tuple[float, dict[str, Any]]]
BuildPipeline = Callable[[Stream], Pipeline]

# Three keys with max_delay 2: records out of order within the delay (b 3.5 after a 6),
# late ones (b 4 once [0, 5) is out, c 18 once 20 is passed), and two quiet spells in
# which the idle clock closes windows, the last one ending the scenario.
KEYED_PLAN: Plan = [(at, {"k": k, "t": t}) for at, k, t in [
    (1, "a", 1), (2, "b", 2), (3, "a", 6), (4, "b", 3.5), (5, "c", 9), (6, "a", 13), (7, "b", 4),
    (8, "c", 12), (9, "a", 16),
    (14, "b", 25), (15, "a", 22), (16, "c", 18), (17, "b", 27), (18, "a", 31),
    (26, "c", 40), (27, "a", 41), (28, "b", 39), (29, "c", 50),
]]
# Key a keeps one session open for 12 s (a record every 2 s, gap 3) while b's sessions
# close: each of b's windows is committed with a's session open, whose first records' own
# sessions ([0, 3), [2, 5)...) the watermark has passed.
LONG_SESSION: Plan = [(at, {"k": k, "t": t}) for at, k, t in [
    (1, "a", 0), (2, "b", 1), (3, "a", 2), (5, "a", 4), (7, "a", 6), (8, "b", 7), (9, "a", 8),
    (11, "a", 10), (13, "a", 12), (14, "b", 13), (20, "a", 30), (21, "b", 31),
]]

def one_a_second(*records: tuple[str, float]) -> Plan:
    """``(key, time)`` records arriving at 1, 2, 3... s."""
    return [(at, {"k": k, "t": t}) for at, (k, t) in enumerate(records, start=1)]


# Event time, gap 3, max_delay 2; b's session stays open and holds the ack at 0, so a
# restart replays everything. Seq 6 (a, 3.5) is late inside a's session [1, 4), emitted
# at seq 5 (watermark 4); by the checkpoint of d's session (seq 10, watermark 8) a's
# [1, 4) is no longer a's remembered session (8 - 3 >= 4). Replayed as if on time, seq 6
# would open [3.5, 6.5), and seq 7 (a, 6.4) join it instead of starting [6.4, 9.4).
LATE_INSIDE = one_a_second(("b", 0), ("a", 1), ("b", 2), ("b", 4), ("b", 6), ("a", 3.5), ("a", 6.4),
                           ("d", 5), ("b", 8), ("b", 10), ("b", 12))
# Event time, gap 3, max_delay 4; b holds the ack at 0. Seq 8 (d, 12) moves the watermark
# to 8 without closing anything; seq 9 (a, 4.5), whose own session [4.5, 7.5) ends behind
# it, is late; seq 10 (a, 6.5) joins a's [9, 12): [6.5, 12). h's session (seq 11), closed
# by seq 13 (watermark 10.5), is checkpointed while a's is open. Replayed as if on time,
# seq 9 would open [4.5, 7.5) and seq 10 bridge it into a's session.
LATE_BEHIND = one_a_second(("b", 0), ("b", 2), ("b", 4), ("c", 1), ("b", 6), ("b", 8), ("a", 9),
                           ("d", 12), ("a", 4.5), ("a", 6.5), ("h", 7), ("b", 10), ("e", 14.5),
                           ("g", 16), ("x", 17.5))
END = 80.0


def keyed_event(s: Stream) -> Pipeline:
    return s.key_by("k").event_time("t", max_delay=2, idle=1)


LATE = {"fixed", "fixed-grace", "sliding-time", "session", "ingest-fixed", "ingest-session", "flat-map",
        "session-late-inside", "session-late-behind"}
# name: (pipeline, plan, records stamped with ingest ts t)
RESTARTS: dict[str, tuple[BuildPipeline, Plan, bool]] = {
    "fixed": (lambda s: keyed_event(s).fixed_time_window(5), KEYED_PLAN, False),
    "fixed-grace": (lambda s: keyed_event(s).fixed_time_window(5, grace=1), KEYED_PLAN, False),
    "sliding-time": (lambda s: keyed_event(s).sliding_window(10, 5, by="time"), KEYED_PLAN, False),
    "session": (lambda s: keyed_event(s).session_window(3), KEYED_PLAN, False),
    "count-timeout": (lambda s: s.key_by("k").count_window(2, timeout=3), KEYED_PLAN, False),
    "session-long": (lambda s: s.key_by("k").event_time("t").session_window(3), LONG_SESSION, False),
    "session-late-inside": (lambda s: s.key_by("k").event_time("t", max_delay=2, idle=5).session_window(3),
                            LATE_INSIDE, False),
    "session-late-behind": (lambda s: s.key_by("k").event_time("t", max_delay=4, idle=5).session_window(3),
                            LATE_BEHIND, False),
    "ingest-fixed": (lambda s: s.key_by("k").fixed_time_window(5), KEYED_PLAN, True),
    "ingest-session": (lambda s: s.key_by("k").session_window(3), KEYED_PLAN, True),
    "ingest-session-in-order": (lambda s: s.key_by("k").session_window(3), KEYED_PLAN, False),
    # One message, several records (a flat_map before the window): the record that closes
    # a window may follow one of its members in the same message.
    "flat-map": (lambda s: s.flat_map(lambda m: m.data["rs"]).event_time("t").fixed_time_window(10),
                 [(1, {"t": 5, "rs": [{"t": 5}]}), (2, {"t": 13, "rs": [{"t": 7}, {"t": 13}]}),
                  (3, {"t": 24, "rs": [{"t": 24}]}), (4, {"t": 26, "rs": [{"t": 26}, {"t": 12}]}),
                  (5, {"t": 38, "rs": [{"t": 38}]})], False),
}


def describe(window: Window) -> dict[str, Any]:
    return {"key": window.key, "seqs": [m.seq for m in window.messages],
            "start": seconds(window.start), "values": window.data}


def crashing(after: int | None, seen: list[Any]) -> Callable[[Any], Any]:
    """A stage that notes each value and crashes on the ``after``-th (never if ``None``)."""

    def stage(value: Any) -> Any:
        seen.append(value)
        if len(seen) == after:
            raise Crash
        return value

    return stage


class Outcome:
    """One run of a restart scenario: the sink and late streams, when the last run
    sank each window, and every window handed on (again after a restart included)."""

    def __init__(self, out: list[Any], late: list[Any], times: list[float], seen: list[Any]) -> None:
        self.out, self.late, self.times, self.seen = out, late, times, seen


def restarted(name: str, crash_after: int | None) -> Outcome:
    """One run of scenario ``name``, crashing right after the ``crash_after``-th window
    was sunk (then restarting), or not."""
    build, plan, stamped = RESTARTS[name]
    vt = VirtualTime()
    s = readings(vt, plan, "in", stamped)
    seen: list[Any] = []
    pipeline = build(s).map(describe).sink("out").map(crashing(crash_after, seen))
    try:
        out = vt.run(pipeline, until=END)
    except Crash:
        out = vt.run(pipeline, until=END)  # restart: same consumer, same store
    return Outcome(payloads(vt, "out"), payloads(vt, "in.late"), [e.time for e in out], seen)


def identity(window: dict[str, Any]) -> tuple[Any, ...]:
    """What tells a window apart within a run: its key, start and first seq."""
    return window["key"], window["start"], window["seqs"][0]


def test_the_restart_scenarios_close_windows_on_the_idle_clock_and_find_late_records() -> None:
    for name, (_, plan, _) in RESTARTS.items():
        run = restarted(name, None)
        assert len(run.out) >= 4, name
        assert set(run.times) - {at for at, _ in plan}, f"{name}: some window closed on the clock alone"
        assert bool(run.late) == (name in LATE), f"{name}: late records {run.late}"


def assert_restarts_the_same(name: str) -> None:
    expected = restarted(name, None)
    windows = {identity(w): w for w in expected.seen}
    assert len(windows) == len(expected.seen), "the scenario's windows are told apart"
    for crash_after in range(1, len(expected.out) + 1):
        run = restarted(name, crash_after)
        assert run.out == expected.out, f"crash after window {crash_after}"
        assert run.late == expected.late, f"crash after window {crash_after}"
        # A window handed on again after the restart (its sink write is then skipped as a
        # duplicate) holds what it held the first time.
        assert [windows.get(identity(w)) for w in run.seen] == run.seen, f"crash after window {crash_after}"


@pytest.mark.parametrize("name", sorted(RESTARTS))
def test_a_crash_after_any_window_then_a_restart_writes_the_same_streams(name: str) -> None:
    assert_restarts_the_same(name)


@pytest.mark.parametrize("name", ["sliding-time", "fixed", "session-long", "flat-map"])
def test_a_restart_is_the_same_when_the_closing_history_was_cut_short(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Beyond MAX_CLOSURES closing steps between two checkpoints the oldest two are merged;
    # the merge must err towards "placed before" (a replayed record late in between was
    # written late when first read), never send a window's member late.
    monkeypatch.setattr(_timed, "MAX_CLOSURES", 1)
    assert_restarts_the_same(name)


# -- reported, not fixed here -----------------------------------------------------------------


def test_after_a_quiet_spell_the_next_record_meets_the_watermark_the_clock_moved() -> None:
    vt = VirtualTime()
    s = readings(vt, [(1, {"k": "a", "t": 1}), (25, {"k": "a", "t": 12})])
    out = vt.run(s.key_by("k").event_time("t", idle=1).fixed_time_window(10)
                 .map(lambda w: [d["t"] for d in w.data]), until=60)
    # [0, 10) closes on the idle clock at 1 + 1 + (10 - 1) = 11. By 25 the watermark is
    # 1 + (25 - 1 - 1) = 24: [10, 20) is behind it, so t = 12 is late, as the operator alone
    # finds it (tests/windows: test_event_tumbling_idle_advance). In a pipeline it was
    # windowed instead, and [10, 20) emitted at 25 + 1 + (20 - 12) = 34.
    assert out == [Emission(11.0, [1])]
    assert payloads(vt, "r.late") == [{"k": "a", "t": 12}]


class _Crash(BaseException):
    """Escapes every stage, as a kill would end the run."""


def idle_run(where: str | None) -> tuple[list[Any], list[Any]]:
    """Event 0.5 arrives at 0.5, event 3.5 at 5.8 (idle 1): by 5.8 the idle clock
    has moved the watermark to 0.5 + (5.8 - 0.5 - 1) = 4.8 >= 4, so 3.5 is late for
    [2, 4). ``where``: crash in the sink after the first window, or in a map before
    the window while the second message is handled (before any clock decision on it)."""
    vt = VirtualTime()
    s = vt.stream("idle")
    vt.append_at(0.5, s, {"ts": 0.5})
    vt.append_at(5.8, s, {"ts": 3.5})
    crashed: list[int] = []

    def crash_once(here: str, value: Any, when: bool) -> Any:
        if where == here and when and not crashed:
            crashed.append(1)
            raise _Crash
        return value

    pipeline = (s.map(lambda m: crash_once("pre", m.data, m.seq == 2))
                .event_time("ts", idle=1).fixed_time_window(2)
                .map(lambda w: {"start": w.start.timestamp() if w.start else None,
                                "ts": [d["ts"] for d in w.data]})
                .sink("out").map(lambda v: crash_once("sink", v, True)))
    try:
        vt.run(pipeline, until=30)
    except _Crash:
        vt.run(pipeline, until=30)
    late = [m.data for m in vt.stream("idle.late").read()] if "idle.late" in vt.store.streams() else []
    return [m.data for m in vt.stream("out").read()], late


@pytest.mark.parametrize("where", ["sink", "pre"])
def test_the_idle_advance_before_a_record_is_the_same_after_a_restart(where: str) -> None:
    # The quiet spell is measured in ingest time, which a replay finds again, and the
    # last arrival travels with the checkpoint: a restart decides 3.5 is late too.
    expected = ([{"start": 0.0, "ts": [0.5]}], [{"ts": 3.5}])
    assert idle_run(None) == expected
    assert idle_run(where) == expected
