"""Every window strategy cuts the same windows after a restart, in virtual time.

Each scenario runs a pipeline once without interruption, and once with a
crash (an exception no stage catches, right after the k-th window was sunk
and before its position was committed) followed by a restart under the same
consumer name. The sink stream and the late stream must come out identical,
and a window that was acknowledged must never reach a sink again.
The cross-process SIGKILL version of this is tests/test_crash_windows.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from minibatch_rx import Pipeline, Stream, Window
from minibatch_rx import flow as flows
from minibatch_rx.testing import VirtualTime, seconds
from minibatch_rx.windows import Tumbling


class Crash(BaseException):
    """Stands in for SIGKILL: no stage catches it, so nothing after it runs."""


Schedule = list[tuple[float, float | None]]  # (append time, ts when the producer's clock lags)
Build = Callable[[Stream], Pipeline]

STEADY: Schedule = [(t, None) for t in (1, 2, 5, 9, 11, 12, 17, 25, 26, 27, 33, 41, 42, 55, 61)]

STRATEGIES: dict[str, tuple[Build, Schedule]] = {
    "fixed": (lambda s: s.fixed_time_window(10), STEADY),
    "fixed-grace-empty": (lambda s: s.fixed_time_window(10, grace=2, emit_empty=True), STEADY),
    "sliding-time": (lambda s: s.sliding_window(10, 5, by="time"), STEADY),
    "sliding-count": (lambda s: s.sliding_window(3, 2), STEADY),
    "session": (lambda s: s.session_window(4), STEADY),
    "count-timeout": (lambda s: s.count_window(3, timeout=4), STEADY),
    "relaxed": (lambda s: s.relaxed_time_window(10), STEADY),
    # Messages stamped by a producer whose clock lags: some arrive after their
    # window was closed by the clock, and go to the late stream.
    "fixed-late": (lambda s: s.fixed_time_window(10),
                   [(1, None), (3, None), (12, 9.5), (14, None), (31, 29.0), (32, 28.0), (44, None)]),
    "session-late": (lambda s: s.session_window(4),
                     [(1, None), (2, None), (9, 2.5), (10, None), (20, None), (27, 21.0), (40, None)]),
}
END = 80.0


def describe(window: Window) -> dict[str, Any]:
    return {"seqs": [m.seq for m in window.messages],
            "start": window.start.timestamp() if window.start else None}


def schedule(vt: VirtualTime, s: Stream, plan: Schedule) -> None:
    for i, (at, ts) in enumerate(plan):
        if ts is None:
            vt.append_at(at, s, {"i": i})
        else:
            stamp_at(vt, at, s, ts, {"i": i})


def stamp_at(vt: VirtualTime, at: float, s: Stream, ts: float, payload: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    def action(*_: Any) -> None:
        clock = vt.store.clock
        vt.store.clock = lambda: datetime.fromtimestamp(ts, UTC)
        try:
            s.append(payload)
        finally:
            vt.store.clock = clock

    vt.scheduler.schedule_absolute(at, action)


def crashing(after: int | None, seen: list[Any]) -> Callable[[Any], Any]:
    """A stage that records each value and crashes on the ``after``-th (never if ``None``)."""

    def stage(value: Any) -> Any:
        seen.append(value)
        if after is not None and len(seen) == after:
            raise Crash
        return value

    return stage


def run(build: Build, plan: Schedule, crash_after: int | None) -> tuple[list[Any], list[Any], list[Any]]:
    """Sink stream, late stream and every window a callable saw, for one run
    (crashing after the ``crash_after``-th sunk window, then restarting)."""
    vt = VirtualTime()
    s = vt.stream("in")
    schedule(vt, s, plan)
    seen: list[Any] = []
    pipeline = build(s).map(describe).sink("out").map(crashing(crash_after, seen))
    try:
        vt.run(pipeline, until=END)
    except Crash:
        vt.scheduler.stop()  # the crash left the scheduler mid-advance
        vt.run(pipeline, until=END)  # restart: same consumer, same store
    out = [m.data for m in vt.stream("out").read()]
    late = [m.data for m in vt.stream("in.late").read()] if "in.late" in vt.store.streams() else []
    return out, late, seen


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_restart_after_a_crash_cuts_the_same_windows(name: str) -> None:
    build, plan = STRATEGIES[name]
    expected, expected_late, _ = run(build, plan, None)
    assert len(expected) >= 3, "the scenario must produce several windows"
    for crash_after in range(1, len(expected) + 1):
        out, late, _ = run(build, plan, crash_after)
        assert out == expected, f"crash after window {crash_after}"
        assert late == expected_late, f"crash after window {crash_after}"


def test_late_scenarios_really_produce_late_messages() -> None:
    for name in ("fixed-late", "session-late"):
        build, plan = STRATEGIES[name]
        _, late, _ = run(build, plan, None)
        assert late, name


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_stop_and_start_never_hands_an_acknowledged_window_to_a_sink_again(name: str) -> None:
    build, plan = STRATEGIES[name]
    vt = VirtualTime()
    s = vt.stream("in")
    schedule(vt, s, plan)
    seen: list[Any] = []
    pipeline = build(s).map(describe).sink(seen.append)
    for stop_at in (7.5, 15.5, 28.5, 43.5):  # plain stop() and start() again, four times
        vt.run(pipeline, until=stop_at)
    vt.run(pipeline, until=END)
    uninterrupted: list[Any] = []
    vt2 = VirtualTime()
    s2 = vt2.stream("in")
    schedule(vt2, s2, plan)
    vt2.run(build(s2).map(describe).sink(uninterrupted.append), until=END)
    keys = [(w["start"], tuple(w["seqs"])) for w in seen]
    assert len(keys) == len(set(keys)), f"a window reached the sink twice: {seen}"
    if name != "relaxed":  # relaxed windows are cut by the clock at each start, by design
        assert seen == uninterrupted


def test_late_messages_are_written_once_and_never_also_windowed() -> None:
    build, plan = STRATEGIES["fixed-late"]
    for crash_after in range(1, 6):
        out, late, _ = run(build, plan, crash_after)
        windowed = {seq for w in out for seq in w["seqs"]}
        late_ids = [d["i"] for d in late]
        assert len(late_ids) == len(set(late_ids))
        assert not windowed & {i + 1 for i in late_ids}  # seq = i + 1 in this stream


def test_changing_the_window_under_the_same_consumer_starts_its_decisions_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vt = VirtualTime()
    s = vt.stream("in")
    schedule(vt, s, STEADY)
    first: list[Any] = []
    vt.run(s.fixed_time_window(10).map(describe).sink(first.append), until=30)
    assert first, "the first strategy emitted windows"
    then: list[Any] = []
    vt.run(s.session_window(4).map(describe).sink(then.append), until=END)  # same consumer
    assert then and all(w["start"] is not None for w in then)
    assert "discarded" in caplog.text
    again: list[Any] = []
    vt.run(s.session_window(4).map(describe).sink(again.append), until=END + 10)
    assert "discarded" not in caplog.text.split("discarded", 1)[1]  # warned once, not at every start


# -- regressions found in review: each scenario below cut different windows before the fix --

LAG: Schedule = [(1, None), (3, None), (12, 9.5), (14, None), (31, 29.0), (32, 28.0), (44, None),
                 (46, 44.5), (58, 51)]
AHEAD: Schedule = [(1, None), (3, None), (7, 12), (8, None), (15, None), (22, None), (35, None)]


@pytest.mark.parametrize("name, build, plan", [
    ("empty windows with late messages", lambda s: s.fixed_time_window(10, emit_empty=True), LAG),
    ("no quiet period", lambda s: s.window(Tumbling(10, quiet=0)), STEADY),
    ("a producer clock ahead", lambda s: s.fixed_time_window(10), AHEAD),
])
def test_more_strategies_cut_the_same_windows_after_a_crash(name: str, build: Build, plan: Schedule) -> None:
    expected, expected_late, _ = run(build, plan, None)
    for crash_after in range(1, len(expected) + 1):
        out, late, _ = run(build, plan, crash_after)
        assert (out, late) == (expected, expected_late), f"{name}: crash after window {crash_after}"


def deferred_commits(monkeypatch: pytest.MonkeyPatch, hold: Callable[[], bool]) -> Callable[[], None]:
    """Commits are held back (as the default 50 ms coalescing does) while ``hold()``;
    the returned function writes the held one, as the flusher thread would."""
    real = flows.acknowledger
    pending: list[Callable[[], None]] = []

    def acknowledger(pipeline: Pipeline, *args: Any, **kwargs: Any) -> Callable[[int, Any], None]:
        acknowledge = real(pipeline, *args, **kwargs)

        def deferred(seq: int, checkpoint: Any) -> None:
            if hold():
                pending[:] = [lambda: acknowledge(seq, checkpoint)]
            else:
                acknowledge(seq, checkpoint)

        return deferred

    monkeypatch.setattr(flows, "acknowledger", acknowledger)

    def flush() -> None:
        while pending:
            pending.pop()()

    return flush


def test_a_commit_written_while_the_next_window_is_in_flight_keeps_its_clock_decision(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan: Schedule = [(1, None), (5, None), (12, None), (15, None), (21, 19.5), (33, None)]
    expected, expected_late, _ = run(lambda s: s.fixed_time_window(10), plan, None)
    flush = deferred_commits(monkeypatch, lambda: True)
    vt = VirtualTime()
    s = vt.stream("in")
    schedule(vt, s, plan)
    count = [0]

    def work(window: Window) -> Window:
        count[0] += 1
        flush()  # the flusher writes the previous window's position meanwhile
        if count[0] == 2:
            raise Crash
        return window

    pipeline = s.fixed_time_window(10).map(work).map(describe).sink("out")
    with pytest.raises(Crash):
        vt.run(pipeline, until=END)
    vt.scheduler.stop()
    vt.advance_to(25)
    vt.run(pipeline, until=END)
    flush()
    assert [m.data for m in vt.stream("out").read()] == expected
    assert [m.data for m in vt.stream("in.late").read()] == expected_late


def test_clock_decisions_survive_a_replayed_window_committed_before_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan: Schedule = [(1, None), (5, None), (12, None), (15, None), (21, 19.5), (33, None)]
    expected, expected_late, _ = run(lambda s: s.fixed_time_window(10), plan, None)
    state = {"run": 1, "n": 0}
    deferred_commits(monkeypatch, lambda: state["run"] == 1)  # run 1 dies before any commit
    vt = VirtualTime()
    s = vt.stream("in")
    schedule(vt, s, plan)

    def work(window: Window) -> dict[str, Any]:
        state["n"] += 1
        if state["run"] in (1, 2) and state["n"] == 2:
            raise Crash
        return describe(window)

    pipeline = s.fixed_time_window(10).map(work).sink("out")
    for run_no, restart_at in ((1, 0), (2, 22), (3, 23)):
        state.update(run=run_no, n=0)
        if vt.now < restart_at:
            vt.advance_to(restart_at)
        try:
            vt.run(pipeline, until=END)
        except Crash:
            vt.scheduler.stop()
    assert [m.data for m in vt.stream("out").read()] == expected
    assert [m.data for m in vt.stream("in.late").read()] == expected_late


def test_relaxed_windows_keep_their_start_across_a_restart() -> None:
    vt = VirtualTime()
    s = vt.stream("in")
    schedule(vt, s, STEADY)
    seen: list[Window] = []
    pipeline = s.relaxed_time_window(10).map(crashing(2, seen)).map(describe).sink("out")
    with pytest.raises(Crash):
        vt.run(pipeline, until=END)
    vt.scheduler.stop()
    vt.advance_to(100)  # down for a while
    vt.run(pipeline, until=130)
    assert seen[1].messages == seen[2].messages  # the unacknowledged window, again
    assert all(w.start is not None and w.end is not None and w.start <= w.end for w in seen)
    assert (seen[2].start, seen[2].end) == (seen[1].start, seen[1].end)


def test_max_windows_stops_between_steps_so_the_next_run_goes_on() -> None:
    vt = VirtualTime()
    s = vt.stream("in")
    for t in (1, 2, 11):
        vt.append_at(t, s, {"t": t})
    vt.advance_to(12)
    seen: list[tuple[float | None, list[int]]] = []
    pipeline = s.sliding_window(10, 5, by="time").sink(
        lambda w: seen.append((seconds(w.start), [m.seq for m in w.messages])))
    first = pipeline.start("c", scheduler=vt.scheduler, max_windows=1)
    vt.advance_to(13)  # one step closes two windows: the run stops after both
    assert not first.running and first.windows == 2 and first.position == 2
    second = pipeline.start("c", scheduler=vt.scheduler, max_windows=1)
    vt.advance_to(30)
    assert not second.running and second.windows == 1
    assert seen == [(-5.0, [1, 2]), (0.0, [1, 2]), (5.0, [3])]  # nothing handed over twice


def test_a_forgotten_consumer_starts_afresh_for_every_window_strategy() -> None:
    vt = VirtualTime()
    s = vt.stream("in")
    schedule(vt, s, STEADY)
    first: list[Any] = []
    vt.run(s.sliding_window(3, 1).map(describe).sink(first.append), until=END, consumer="sl")
    assert s.forget("sl")
    assert not any(name.startswith("_mb.windows.sl.") for name in vt.store.streams())
    again: list[Any] = []
    vt.run(s.sliding_window(3, 1).map(describe).sink(again.append), until=END + 1, consumer="sl")
    assert again == first  # from the beginning, as a new consumer


def test_a_stop_between_the_checkpoint_and_its_position_sends_nothing_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The window state is saved just before the position. A run killed between
    # the two left the newer state with the older position: the restart then
    # found replayed members of an emitted window behind its pruned closure
    # history and sent them to the late stream.
    def build(s: Stream) -> Pipeline:
        return s.event_time("ts", idle=60).fixed_time_window(1).map(
            lambda w: {"seqs": [m.seq for m in w.messages]}).sink("out")

    vt = VirtualTime()
    s = vt.stream("in")
    for at, ts in [(1, 0.1), (2, 0.5), (3, 1.2), (4, 2.5)]:
        vt.append_at(at, s, {"ts": ts})
    real = Stream.commit
    # Run 1: seq 4 closes [1, 2) (seq 3): its checkpoint (ack 3) is written, then
    # the "kill" keeps the position at 2.
    monkeypatch.setattr(Stream, "commit", lambda self, c, seq: real(self, c, min(seq, 2)))
    vt.run(build(s), until=10)
    monkeypatch.setattr(Stream, "commit", real)
    vt.run(build(s), until=20)
    assert [m.data for m in vt.stream("out").read()] == [{"seqs": [1, 2]}, {"seqs": [3]}]
    assert "in.late" not in vt.store.streams()


@pytest.mark.parametrize("build", [lambda s: s.key_by("k").relaxed_time_window(10),
                                   lambda s: s.key_by("k").count_window(3, timeout=4)],
                         ids=["relaxed-per-key", "count-timeout-per-key"])
def test_a_keyed_restart_after_a_long_pause_windows_each_message_once(build: Build) -> None:
    """Stopped, then restarted after more than the interval: the clock closes
    windows while the backlog is replayed. A message already in an emitted
    window must be skipped by the replay, not windowed again (the restored
    "emitted up to" marks were dropped by the first snapshot of the replay)."""
    vt = VirtualTime()
    s, out = vt.stream("in"), vt.stream("out")
    for i in range(120):
        vt.append_at(0.5 * i, s, {"k": f"k{i % 3 if i % 7 else 3}", "i": i})
    pipeline = build(s).map(lambda w: {"key": w.key, "i": [d["i"] for d in w.data]}).sink(out)
    first = pipeline.start(consumer="c", scheduler=vt.scheduler)
    vt.advance_to(31.2)
    first.stop()
    vt.advance_to(49.1)  # the restored keys' windows are all overdue
    second = pipeline.start(consumer="c", scheduler=vt.scheduler)
    vt.advance_to(120)
    second.stop()
    windowed = sorted(i for m in out.read() for i in m.data["i"])
    assert windowed == list(range(120))
