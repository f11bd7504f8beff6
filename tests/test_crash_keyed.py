"""Keyed event-time crash test: SIGKILL a ``key_by -> event_time ->
fixed_time_window -> stream sink`` consumer again and again while events
arrive live; every window must come out exactly once, as an uninterrupted
run emits it.

A producer thread in this process appends events in bursts: ``KEYS`` keys,
event times on a steady grid with out-of-order jitter smaller than the
clock's ``max_delay`` (so no event is ever late), and a value per event. A
worker process (tests/workers/keyed_consumer.py) runs the pipeline under one
consumer name and is killed with SIGKILL at random moments, at least ten
times, each after the sink made progress; then a last worker runs on. A
second worker, never killed, runs the same pipeline under another consumer
name into a stream of its own all along: the uninterrupted run. Once the
producer stops it appends a sentinel event far in the future, which moves
the watermark past every window but its own: the end is data-driven (the
clock's ``idle`` is longer than the test), not clock-driven.

Both outputs are then checked against the windows computed from the stored
source alone (per key, per grid window ``[j*SIZE, (j+1)*SIZE)``: its seqs in
seq order and the sum of its values): no window missing, none twice, none
extra or with other contents, no event in two windows or in none; each run's
late stream and the dead-letter stream stay empty; and the two outputs are
equal. Runs on SQLite and on MongoDB (the session's test server).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_url
from crash_harness import Setup, run_with_kills
from workers.keyed_consumer import KEY, MAX_DELAY, SIZE, TS, VALUE, late_stream

from minibatch_rx import Message, Stream, stream

WORKER = Path(__file__).parent / "workers" / "keyed_consumer.py"
SOURCE, SINK, REFERENCE = "kcrash.in", "kcrash.out", "kcrash.ref"
CONSUMER, REFERENCE_CONSUMER = "keyed-crash", "keyed-reference"
KILLS = 10
KEYS = 20
WORK = 0.005  # CPU seconds per window in the killed worker, so kills land mid-step
US = 1_000_000
SIZE_US = round(SIZE * US)
ORIGIN_US = 1_767_225_600 * US  # 2026-01-01T00:00:00Z: event times start here
STEP_US = 10_000  # event time between consecutive events (100 per window)
JITTER_US = round(MAX_DELAY * US * 0.8)  # how much older than its grid time an event may be
SENTINEL_KEY = "end"
SENTINEL_US = ORIGIN_US + 10**6 * US  # far past every event: closes every other window
# The end: everything before the sentinel acknowledged by both (its own window stays open).
SETUP = Setup(WORKER, SOURCE, SINK, REFERENCE, CONSUMER, REFERENCE_CONSUMER, KILLS, WORK,
              later=(0.2, 1.0), settled_before=1)

WindowId = tuple[str, int]  # (key, start in microseconds)


class Producer:
    """Appends events ``{"i", KEY, TS, VALUE}`` in bursts from one thread
    until stopped, then the sentinel. Event ``i`` happens at
    ``ORIGIN + i*STEP`` minus up to ``JITTER`` (out of order, never late)."""

    def __init__(self, source: Stream, seed: int) -> None:
        self.source = source
        self.rng = random.Random(seed)
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.produced = 0

    def event(self, i: int) -> dict[str, Any]:
        rng = self.rng
        t = ORIGIN_US + i * STEP_US - rng.randrange(JITTER_US)
        return {"i": i, KEY: f"k{rng.randrange(KEYS):02d}", TS: t / US, VALUE: rng.randrange(1000)}

    def start(self) -> None:
        self.thread.start()

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                burst = [self.event(self.produced + n) for n in range(self.rng.randint(20, 80))]
                self.source.extend(burst)
                self.produced += len(burst)
                self.stopped.wait(self.rng.uniform(0.05, 0.25))
        except BaseException as exc:  # reported by stop(), not lost in the thread
            self.errors.append(exc)

    def stop(self) -> int:
        """Stop the thread, append the sentinel; the sentinel's seq."""
        self.stopped.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the producer did not stop"
        assert not self.errors, self.errors
        return self.source.append({"i": -1, KEY: SENTINEL_KEY, TS: SENTINEL_US / US, VALUE: 0})


def expected_windows(events: Iterable[Message]) -> dict[WindowId, tuple[list[int], int]]:
    """The windows of ``events``, computed from the data alone: per key and
    per grid window of its event time, the seqs in seq order and the sum of
    the values. Valid because no event is late by construction."""
    windows: dict[WindowId, tuple[list[int], int]] = {}
    for m in sorted(events, key=lambda m: m.seq):
        t = round(m.data[TS] * US)
        seqs, total = windows.get((m.data[KEY], t - t % SIZE_US), ([], 0))
        windows[(m.data[KEY], t - t % SIZE_US)] = ([*seqs, m.seq], total + m.data[VALUE])
    return windows


def outputs(sink: Stream) -> list[tuple[WindowId, list[int], int]]:
    """The windows a sink stream holds, in sink order."""
    return [((out.data["key"], round(out.data["start"] * US)), list(out.data["seqs"]), out.data["sum"])
            for out in sink.read()]


def check(name: str, got: list[tuple[WindowId, list[int], int]],
          expected: dict[WindowId, tuple[list[int], int]]) -> list[str]:
    """Every way ``got`` differs from ``expected``, as text (empty if none)."""
    problems: list[str] = []

    def expect(ok: bool, text: str) -> None:
        if not ok:
            problems.append(f"{name}: {text}")

    counts = Counter(window for window, _, _ in got)
    twice = sorted(w for w, n in counts.items() if n > 1)
    expect(not twice, f"{len(twice)} windows emitted more than once, e.g. {twice[:3]}")
    missing = sorted(set(expected) - set(counts))
    expect(not missing, f"{len(missing)} windows missing, e.g. {missing[:3]}")
    extra = sorted(set(counts) - set(expected))
    expect(not extra, f"{len(extra)} windows not in the data, e.g. {extra[:3]}")
    wrong = [(w, seqs, expected[w][0]) for w, seqs, total in got
             if w in expected and (seqs, total) != expected[w]]
    expect(not wrong, f"{len(wrong)} windows with other contents (window, got, expected), e.g. {wrong[:2]}")
    windowed = Counter(s for _, seqs, _ in got for s in seqs)
    doubled = sorted(s for s, n in windowed.items() if n > 1)
    expect(not doubled, f"{len(doubled)} events in two windows, e.g. seqs {doubled[:8]}")
    lost = sorted({s for seqs, _ in expected.values() for s in seqs} - set(windowed))
    expect(not lost, f"{len(lost)} events in no window, e.g. seqs {lost[:8]}")
    return problems


def check_late(name: str, late: list[int], got: list[tuple[WindowId, list[int], int]]) -> list[str]:
    """No event is late by construction: ``late`` (seqs) must be empty. Say
    how many were in a window too (replayed members taken for late ones)."""
    if not late:
        return []
    windowed = {s for _, seqs, _ in got for s in seqs}
    both = sorted(set(late) & windowed)
    return [f"{name}: {len(late)} events in its late stream, though none is late; {len(both)} of them "
            f"are in a window as well, e.g. seqs {both[:8]}"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_sigkilled_keyed_event_time_consumer_emits_each_window_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(backend, tmp_path, request)
    source = stream(SOURCE, url)
    rng = random.Random(20260110)
    run = run_with_kills(SETUP, url, rng, Producer(source, rng.randrange(1 << 30)))
    assert run.finished, (f"not done: positions {source.position(CONSUMER)}, "
                          f"{source.position(REFERENCE_CONSUMER)} of {run.sentinel - 1}")

    events = [m for m in source.read() if m.seq != run.sentinel]
    assert [m.data["i"] for m in events] == list(range(len(events))), "the source is not the produced events"
    expected = expected_windows(events)
    seq_of = {m.data["i"]: m.seq for m in events}
    problems, results = [], []
    for name, sink in (("crashed run", SINK), ("uninterrupted run", REFERENCE)):
        got = outputs(stream(sink, url))
        late = [seq_of[m.data["i"]] for m in stream(late_stream(sink), url).read()]
        problems += check(name, got, expected) + check_late(name, late, got)
        results.append(sorted(got))
    if results[0] != results[1]:
        problems.append("the crashed and the uninterrupted run differ")
    dead = stream(f"{SOURCE}.dead", url).count()
    if dead:
        problems.append(f"{dead} records in the dead-letter stream {SOURCE}.dead")
    print(f"\n{backend}: {run.kills} SIGKILLs, {len(events)} events, {len(expected)} windows over {KEYS} "
          f"keys; outputs after each kill {run.progress[1:]}, events unacknowledged then {run.behind}; "
          f"{len(problems)} failed checks")
    for problem in problems:
        print(f"  FAIL {problem}")
    assert run.kills >= KILLS
    assert run.produced_at_last_kill < len(events), "the producer had stopped before the last kill"
    assert run.progress[-1] < len(expected), "the flow had finished before the last kill"
    assert not problems, "; ".join(problems)
