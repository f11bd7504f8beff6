"""CEP crash test: SIGKILL a ``key_by -> event_time -> match(pattern) -> stream
sink`` consumer again and again while events arrive live; every match and
every timed-out partial match must come out exactly once, as an uninterrupted
run emits them.

A producer thread in this process appends events in bursts: ``KEYS`` keys,
a type ``a``, ``b`` or ``c``, event times on a steady grid with out-of-order
jitter smaller than the clock's ``max_delay`` (so no event is ever late). The
pattern (tests/workers/cep_consumer.py) is ``a`` followed by ``b`` followed by
``c`` within ``WITHIN`` seconds: some ``a`` complete, the others time out
after taking a ``b`` or none. A worker process runs the pipeline under one
consumer name, matches into one stream and timeouts into another, and is
killed with SIGKILL at random moments, at least ten times, each after the sink
made progress; then a last worker runs on. A second worker, never killed, runs
the same pipeline under another consumer name into streams of its own all
along: the uninterrupted run.

The end is data-driven (the clock's ``idle`` is longer than the test): once
the producer stops it appends a sentinel event ``max_delay + WITHIN/2``
after the last grid time, which moves the watermark to ``sentinel -
max_delay``: past every other event, so all are matched, and past the
``within`` of most partial matches, which time out, but not of those begun in
the last ``WITHIN/2``: they stay pending in the state, and must not come out.
That watermark is where the input ends. The sentinel is followed by ``TICK``
more events at its own time (still ahead of the watermark), so even a step
that emits no match is followed by a checkpoint-only window, and each
consumer's position passes the sentinel.

Both runs' matches and timeouts are then checked against the ones computed
from the stored source alone: per key, ``pattern.evaluate`` on its events in
seq order (it orders them by event time, equal times in list order, as the
pipeline does), with ``end`` at the sentinel's watermark. No match or timeout
missing, none twice, none extra or with another time span; no ``a`` event
starts two of them, and each at least ``WITHIN`` before the end starts one;
each run's late stream and the dead-letter stream stay empty; and the two
runs' outputs are equal. Runs on SQLite and on MongoDB (the session's test
server, with a smaller volume).
"""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import make_url
from crash_harness import Setup, run_with_kills
from workers.cep_consumer import (
    ID,
    KEY,
    MAX_DELAY,
    TS,
    TYPE,
    WITHIN,
    late_stream,
    pattern,
    timeouts_stream,
)

from minibatch_rx import Message, Stream, stream
from minibatch_rx.cep import Match
from minibatch_rx.cep.stage import TICK

WORKER = Path(__file__).parent / "workers" / "cep_consumer.py"
SOURCE, SINK, REFERENCE = "ccrash.in", "ccrash.out", "ccrash.ref"
CONSUMER, REFERENCE_CONSUMER = "cep-crash", "cep-reference"
KILLS = 10
KEYS = 20
WORK = 0.005  # CPU seconds per match in the killed worker, so kills land between store and ack
US = 1_000_000
ORIGIN_US = 1_767_225_600 * US  # 2026-01-01T00:00:00Z: event times start here
STEP_US = 10_000  # event time between consecutive events (one per key every KEYS steps on average)
JITTER_US = round(MAX_DELAY * US * 0.8)  # how much older than its grid time an event may be
SENTINEL_KEY = "end"
SENTINEL_AFTER_US = round((MAX_DELAY + WITHIN / 2) * US)  # the sentinel's time after the last grid time
BURSTS = {"sqlite": (20, 80), "mongodb": (10, 40)}  # events per burst of the producer
# The end: the sentinel's step (the last timeouts, the last matches) acknowledged by both.
SETUP = Setup(WORKER, SOURCE, SINK, REFERENCE, CONSUMER, REFERENCE_CONSUMER, KILLS, WORK,
              later=(0.3, 1.5), settled_before=0)

Steps = tuple[tuple[str, tuple[int, ...]], ...]  # step name -> event ids, in pattern order
Found = tuple[str, Steps]  # (key, steps): which match (or timeout) it is
Span = tuple[float | None, float | None, float | None]  # (start, end, timed out at)
Output = tuple[Found, Span]


class Producer:
    """Appends events ``{ID, KEY, TS, TYPE}`` in bursts from one thread until
    stopped, then the sentinel and its padding. Event ``i`` happens at
    ``ORIGIN + i*STEP`` minus up to ``JITTER`` (out of order, never late)."""

    def __init__(self, source: Stream, seed: int, burst: tuple[int, int]) -> None:
        self.source = source
        self.rng = random.Random(seed)
        self.burst = burst
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.produced = 0

    def event(self, i: int) -> dict[str, Any]:
        rng = self.rng
        t = ORIGIN_US + i * STEP_US - rng.randrange(JITTER_US)
        return {ID: i, KEY: f"k{rng.randrange(KEYS):02d}", TS: t / US, TYPE: rng.choice("abc")}

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                burst = [self.event(self.produced + n) for n in range(self.rng.randint(*self.burst))]
                self.source.extend(burst)
                self.produced += len(burst)
                self.stopped.wait(self.rng.uniform(0.05, 0.25))
        except BaseException as exc:  # reported by stop(), not lost in the thread
            self.errors.append(exc)

    def stop(self) -> int:
        """Stop the thread, append the sentinel and ``TICK`` events at its
        time (no type of the pattern); the sentinel's seq."""
        self.stopped.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the producer did not stop"
        assert not self.errors, self.errors
        t = ORIGIN_US + (self.produced - 1) * STEP_US + SENTINEL_AFTER_US
        end = [{ID: -1 - n, KEY: SENTINEL_KEY, TS: t / US, TYPE: "end"} for n in range(TICK + 1)]
        return self.source.extend(end)[0]


def found(key: str, steps: Mapping[str, Sequence[int]]) -> Found:
    """Which match (or timeout) it is: its key and its event ids per step."""
    return key, tuple((step, tuple(ids)) for step, ids in steps.items())


def ids_of(match: Match[dict[str, Any]]) -> dict[str, list[int]]:
    """The event ids of ``match``, per step."""
    return {step: [event[ID] for event in events] for step, events in match.items()}


def expected_outputs(events: Iterable[Message], end: float) -> tuple[dict[Found, Span], dict[Found, Span]]:
    """The matches and the timeouts of ``events``, computed from the data
    alone: per key, ``pattern().evaluate`` on its events in seq order (it
    sorts them by event time, equal times keeping seq order, as the pipeline
    does), up to the last watermark ``end``. Only events at or before ``end``
    are ever matched by the pipeline (all but the sentinel's), and only the
    partial matches whose ``within`` ends by then time out."""
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in sorted(events, key=lambda m: m.seq):
        if m.data[TS] <= end:
            by_key[m.data[KEY]].append(m.data)
    p = pattern()
    matches: dict[Found, Span] = {}
    timeouts: dict[Found, Span] = {}
    for key, data in by_key.items():
        result = p.evaluate(data, time=TS, end=end)
        for into, got in ((matches, result.matches), (timeouts, result.timeouts)):
            for match in got:
                ident = found(key, ids_of(match))
                assert ident not in into, f"evaluate() found {ident} twice"
                into[ident] = (match.start, match.end, match.timed_out_at)
    return matches, timeouts


def match_outputs(sink: Stream) -> list[Output]:
    """The matches a sink stream holds (the worker's summaries), in sink order."""
    return [
        (found(out.data["key"], out.data["steps"]), (out.data["start"], out.data["end"], None))
        for out in sink.read()
    ]


def timeout_outputs(timeouts: Stream) -> list[Output]:
    """The timed-out partial matches a stream holds (``Match.as_payload()``), in order."""
    return [
        (
            found(
                out.data["key"],
                {step: [event[ID] for event in events] for step, events in out.data["steps"].items()},
            ),
            (out.data["start"], out.data["end"], out.data["timed_out_at"]),
        )
        for out in timeouts.read()
    ]


def check(name: str, got: list[Output], expected: dict[Found, Span]) -> list[str]:
    """Every way ``got`` differs from ``expected``, as text (empty if none)."""
    problems: list[str] = []

    def expect(ok: bool, text: str) -> None:
        if not ok:
            problems.append(f"{name}: {text}")

    counts = Counter(ident for ident, _ in got)
    twice = sorted(f for f, n in counts.items() if n > 1)
    expect(not twice, f"{len(twice)} emitted more than once, e.g. {twice[:3]}")
    missing = sorted(set(expected) - set(counts))
    expect(not missing, f"{len(missing)} missing, e.g. {missing[:3]}")
    extra = sorted(set(counts) - set(expected))
    expect(not extra, f"{len(extra)} not in the data, e.g. {extra[:3]}")
    wrong = [(f, span, expected[f]) for f, span in got if f in expected and span != expected[f]]
    expect(not wrong, f"{len(wrong)} with another time span (found, got, expected), e.g. {wrong[:2]}")
    return problems


def check_starts(name: str, matches: list[Output], timeouts: list[Output], a_events: set[int]) -> list[str]:
    """No ``a`` event starts two matches or timeouts, and each of ``a_events``
    (those whose ``within`` ended before the end: each either completed or
    ran out) starts one."""
    starts = Counter(steps[0][1][0] for (_, steps), _ in [*matches, *timeouts])
    problems = []
    doubled = sorted(i for i, n in starts.items() if n > 1)
    if doubled:
        problems.append(f"{name}: {len(doubled)} a events start two outputs, e.g. ids {doubled[:8]}")
    lost = sorted(a_events - set(starts))
    if lost:
        problems.append(f"{name}: {len(lost)} a events start no output, e.g. ids {lost[:8]}")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_sigkilled_pattern_consumer_emits_each_match_and_timeout_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(backend, tmp_path, request)
    source = stream(SOURCE, url)
    rng = random.Random(20260111)
    run = run_with_kills(SETUP, url, rng, Producer(source, rng.randrange(1 << 30), BURSTS[backend]))
    assert run.finished, (
        f"not done: positions {source.position(CONSUMER)}, "
        f"{source.position(REFERENCE_CONSUMER)} of {run.sentinel}"
    )

    stored = list(source.read())
    events = [m for m in stored if m.seq < run.sentinel]
    assert [m.data[ID] for m in events] == list(range(len(events))), "the source is not the produced events"
    assert [m.data[ID] for m in stored if m.seq >= run.sentinel] == [-1 - n for n in range(TICK + 1)]
    end = stored[-1].data[TS] - MAX_DELAY  # the watermark the sentinel gives: where the input ends
    assert max(m.data[TS] for m in events) < end, "the sentinel does not pass every event"
    expected_matches, expected_timeouts = expected_outputs(stored, end)
    a_events = {m.data[ID] for m in events if m.data[TYPE] == "a" and m.data[TS] + WITHIN <= end}
    starts = {steps[0][1][0] for _, steps in [*expected_matches, *expected_timeouts]}
    pending = {m.data[ID] for m in events if m.data[TYPE] == "a"} - starts
    problems: list[str] = []
    results = []
    for name, sink in (("crashed run", SINK), ("uninterrupted run", REFERENCE)):
        matches = match_outputs(stream(sink, url))
        timeouts = timeout_outputs(stream(timeouts_stream(sink), url))
        problems += check(f"{name} matches", matches, expected_matches)
        problems += check(f"{name} timeouts", timeouts, expected_timeouts)
        problems += check_starts(name, matches, timeouts, a_events)
        late = sorted(m.data[ID] for m in stream(late_stream(sink), url).read())
        if late:
            problems.append(
                f"{name}: {len(late)} events in its late stream, though none is late, e.g. ids {late[:8]}"
            )
        results.append((sorted(matches), sorted(timeouts)))
    if results[0] != results[1]:
        problems.append("the crashed and the uninterrupted run differ")
    dead = stream(f"{SOURCE}.dead", url).count()
    if dead:
        problems.append(f"{dead} records in the dead-letter stream {SOURCE}.dead")
    partial = Counter(tuple(step for step, _ in steps) for _, steps in expected_timeouts)
    print(
        f"\n{backend}: {run.kills} SIGKILLs, {len(events)} events over {KEYS} keys, "
        f"{len(expected_matches)} matches and {len(expected_timeouts)} timeouts expected "
        f"(timed out after {dict(partial)}), {len(pending)} partial matches pending at the end; "
        f"matches after each kill {run.progress[1:]}, "
        f"events unacknowledged then {run.behind}; {len(problems)} failed checks"
    )
    for problem in problems:
        print(f"  FAIL {problem}")
    assert not problems, "; ".join(problems)
    assert run.kills >= KILLS
    assert run.produced_at_last_kill < len(events), "the producer had stopped before the last kill"
    assert run.progress[-1] < len(expected_matches), "the flow had finished before the last kill"
    assert expected_timeouts and expected_matches, "the data gives no matches or no timeouts: nothing tested"
    assert pending, "no partial match is pending at the end: the end is not tested"
