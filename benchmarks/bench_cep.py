"""CEP patterns: the keyed pattern engine beside a hand-written per-key state machine, in one run.

The pattern has three steps, relaxed contiguity and a time bound::

    Pattern.begin("a").where(type == "a")
        .followed_by("b").where(type == "b")
        .followed_by("c").where(type == "c")
        .within(5 s)                              # after_match: no_skip (the default)

The events are N (default 1,000,000) payloads ``{"key", "type", "ts", "i"}``
over 1,000 keys, generated from a fixed seed: a key and a type (``a``, ``b``,
``c`` or ``other``, equally likely) drawn at random, event time ``i`` ticks of
1/1024 s after ``BASE`` plus a jitter of 0 to 7 ticks (so events arrive a
little out of order, and several share a time). The times are multiples of
1/1024 s, so ``t - start >= within`` is computed exactly and the half-open
bound of ``within`` is really exercised. A last *sentinel* event, 50 s after
the others, moves the watermark past everything, so every partial match left
times out and nothing waits for a wall clock. Rows:

* ``hand-written: per-key HandRun.process`` (the baseline): a dict key ->
  ``HandRun``, a small object holding the key's partial matches
  ``[start, a, b]``; each event, in time order, goes to its key's
  ``process(event, t)``, which returns the matches it completes and the
  partial matches that timed out (the shape of ``Run``'s interface).
* ``hand-written: one inlined loop`` (for information): the same logic in a
  single loop over the events, no call and no result lists per event: the
  fastest hand-written form. Targets are given against both.
* ``engine``: the NFA alone, one ``Automaton.run()`` per key, fed the events in
  time order with ``Run.advance(t)`` then ``Run.process(event, t, eid)`` (what
  ``Pattern.evaluate`` does), then ``advance`` to the sentinel's time.
* ``stage``: the keyed stage pipelines run, a ``PatternCore`` made by
  ``PatternSpec(pattern).operator(key_by=KeyBy("key"), clock=EventTime("ts",
  max_delay=8 ticks, idle=None))``, fed pre-built ``Message`` objects in arrival
  order with the calls the window operator makes per message (``clock_due``,
  ``on_message``, then ``late``, ``rejected`` and ``side_output``): it buffers
  them until the watermark passes and matches them in time order.
* ``pipeline, memory`` and ``pipeline, sqlite`` (for information, default
  200,000 events): ``stream.key_by("key").event_time("ts", ...).match(p,
  timeouts=fn).map(ids).sink(fn)`` on a store already holding the events,
  timed from ``start()`` until the sink and the timeouts target saw every match
  and timeout.

Rounds alternate the rows (median of ``--rounds``, default 3). Before timing,
one untimed run of each in-process row (and the hand-written machine on the
pipelines' events) collects every match and timeout as the ``i`` of their
events; they must be the same multisets (exit status 1 otherwise), and every
timed run must find the same numbers (the pipeline rows the same matches).
Memory: ``tracemalloc``'s peak during a stage run over ``--memory-sizes``
events (default 100,000 and 1,000,000), each message generated when fed
(nothing else holds them); flat means the ratio of the peaks is near 1.
``--profile engine|stage`` measures nothing: it prints the top functions of
one run under ``cProfile`` by own time.

Usage::

    python benchmarks/bench_cep.py [--events N] [--quick] [--rounds 3] [--json OUT] [--profile engine]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import itertools
import json
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reactivex.scheduler import HistoricalScheduler  # noqa: E402

from minibatch_rx import Message, Stream  # noqa: E402
from minibatch_rx.cep import Match, Pattern  # noqa: E402
from minibatch_rx.cep.compiler import Automaton  # noqa: E402
from minibatch_rx.cep.nfa import Path as NfaPath  # noqa: E402
from minibatch_rx.cep.nfa import Run  # noqa: E402
from minibatch_rx.cep.stage import MatchWindow, PatternCore, PatternSpec  # noqa: E402
from minibatch_rx.store.memory import MemoryStore  # noqa: E402
from minibatch_rx.windows.clocks import EventTime  # noqa: E402
from minibatch_rx.windows.keys import KeyBy  # noqa: E402

KEYS = 1_000
TYPES = ("a", "b", "c", "other")
TICK = 1 / 1024  # seconds between events: a power of two, so time arithmetic is exact
JITTER = 8  # an event's time is 0 to JITTER - 1 ticks after its place in the arrival order
MAX_DELAY = JITTER * TICK  # the stage's max_delay: no event is late
WITHIN = 5.0
BASE = 1_700_000_000.0
SENTINEL_GAP = 50.0  # the sentinel is this far after the last event
SENTINEL = "~end"
SEED = 11
EVENTS = 1_000_000
PIPELINE_EVENTS = 200_000
MEMORY_SIZES = (100_000, 1_000_000)
QUICK_EVENTS, QUICK_PIPELINE_EVENTS, QUICK_MEMORY_SIZES = 100_000, 20_000, (20_000, 100_000)
TARGET_EPS = 150_000.0
TARGET_RATIO = 0.3  # of the hand-written machine
FLAT_RATIO = 1.25  # peak memory at the most events over the fewest
FILL_BATCH = 10_000
STREAM = "cep-bench"
CONSUMERS = itertools.count(1)  # every pipeline run reads as a consumer of its own
SAMPLE_EVERY = 1_000  # events between samples of the partial matches alive (memory runs)

Ids = tuple[int, ...]  # the ``i`` of a match's (or timeout's) events, in order

HAND, INLINED = "hand-written: per-key HandRun.process", "hand-written: one inlined loop"
ENGINE, STAGE = "engine: per-key Run.advance/process", "stage: PatternCore"
PIPE_MEMORY, PIPE_SQLITE = "pipeline, memory store", "pipeline, sqlite store"


class BenchError(Exception):
    """A benchmark failed its self-check."""


def pattern(within: float = WITHIN) -> Pattern[dict[str, Any]]:
    """The measured pattern: an ``a``, then a ``b``, then a ``c``, all within ``within`` s."""
    return (
        Pattern.begin("a")
        .where(lambda e: e["type"] == "a")
        .followed_by("b")
        .where(lambda e: e["type"] == "b")
        .followed_by("c")
        .where(lambda e: e["type"] == "c")
        .within(within)
    )


# -- the workload ------------------------------------------------------------------------------


def generate(n: int, keys: int = KEYS, seed: int = SEED) -> Iterator[dict[str, Any]]:
    """``n`` payloads in arrival order, then the sentinel; the same seed gives the same events."""
    rng = random.Random(seed)
    names = [f"k{k:04d}" for k in range(keys)]
    for i in range(n):
        ts = BASE + (i + rng.randrange(JITTER)) * TICK
        yield {"key": names[rng.randrange(keys)], "type": TYPES[rng.randrange(4)], "ts": ts, "i": i}
    yield sentinel(n)


def sentinel(n: int) -> dict[str, Any]:
    """The last event: far enough after the others that every partial match times out."""
    return {"key": SENTINEL, "type": "other", "ts": BASE + (n + JITTER) * TICK + SENTINEL_GAP, "i": n}


@dataclass
class Workload:
    """The events in arrival order (the sentinel last), in time order, and as messages."""

    arrival: list[dict[str, Any]]
    ordered: list[dict[str, Any]] = field(init=False)
    messages: list[Message] = field(init=False)

    def __post_init__(self) -> None:
        # Time order, equal times in arrival order: how the stage matches them.
        self.ordered = sorted(self.arrival, key=lambda e: (e["ts"], e["i"]))
        ingest = datetime.fromtimestamp(BASE, UTC)
        self.messages = [Message(STREAM, i + 1, ingest, e) for i, e in enumerate(self.arrival)]

    @property
    def events(self) -> int:
        """Events, the sentinel not counted."""
        return len(self.arrival) - 1


def build(n: int, keys: int = KEYS, seed: int = SEED) -> Workload:
    return Workload(list(generate(n, keys, seed)))


def messages(n: int, keys: int = KEYS, seed: int = SEED) -> Iterator[Message]:
    """The workload's messages made one at a time (for the memory runs)."""
    ingest = datetime.fromtimestamp(BASE, UTC)
    for seq, event in enumerate(generate(n, keys, seed), 1):
        yield Message(STREAM, seq, ingest, event)


@dataclass
class Outcome:
    """What a row found: counts, and with ``keep`` the events of each match and timeout."""

    matches: int = 0
    timeouts: int = 0
    match_ids: list[Ids] = field(default_factory=list)
    timeout_ids: list[Ids] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        return self.matches, self.timeouts


def path_ids(path: NfaPath) -> Ids:
    ids: list[int] = []
    node = path
    while node is not None:
        ids.append(node[3]["i"])
        node = node[4]
    return tuple(reversed(ids))


def window_ids(window: MatchWindow) -> Ids:
    return tuple(m.data["i"] for m in window.messages)


def match_ids(match: Match[Any]) -> Ids:
    return tuple(e["i"] for e in match.events)


# -- the rows ----------------------------------------------------------------------------------


class HandRun:
    """The pattern written by hand for one key: its partial matches in the order they
    started, each ``[start time, a, b or None]``. An ``a`` starts one; a ``b`` is taken
    by every partial match still waiting for one (relaxed contiguity takes the first
    ``b`` after its ``a``); a ``c`` completes every partial match holding a ``b``
    (no_skip: several ``a`` may share the same ``b`` and ``c``). Before an event at
    ``t``, the partial matches with ``t - start >= within`` time out (half-open)."""

    __slots__ = ("partials", "within")

    def __init__(self, within: float = WITHIN) -> None:
        self.partials: list[list[Any]] = []
        self.within = within

    def process(self, event: dict[str, Any], t: float) -> tuple[list[tuple[Any, ...]], list[list[Any]]]:
        """Feed one event (in time order); (the matches it completes, the partial matches timed out)."""
        partials = self.partials
        timeouts: list[list[Any]] = []
        if partials:
            lapsed = 0
            while lapsed < len(partials) and t - partials[lapsed][0] >= self.within:
                lapsed += 1
            if lapsed:
                timeouts = partials[:lapsed]
                del partials[:lapsed]
        matches: list[tuple[Any, ...]] = []
        kind = event["type"]
        if kind == "a":
            partials.append([t, event, None])
        elif kind == "b":
            for partial in partials:
                if partial[2] is None:
                    partial[2] = event
        elif kind == "c" and partials:
            waiting = []
            for partial in partials:
                if partial[2] is None:
                    waiting.append(partial)
                else:
                    matches.append((partial[1], partial[2], event))
            self.partials = waiting
        return matches, timeouts


def hand_written(ordered: Sequence[dict[str, Any]], keep: bool = False, within: float = WITHIN) -> Outcome:
    """The baseline: a dict key -> :class:`HandRun`, each event handed to its key's
    machine in time order (as the engine row hands it to its key's ``Run``); at the
    end (the sentinel's time) every partial match left times out."""
    out = Outcome()
    runs: dict[str, HandRun] = {}
    for event in ordered:
        key = event["key"]
        run = runs.get(key)
        if run is None:
            run = runs[key] = HandRun(within)
        matches, timeouts = run.process(event, event["ts"])
        if matches:
            out.matches += len(matches)
            if keep:
                out.match_ids += [tuple(e["i"] for e in m) for m in matches]
        if timeouts:
            out.timeouts += len(timeouts)
            if keep:
                out.timeout_ids += [_hand_ids(p) for p in timeouts]
    for run in runs.values():
        out.timeouts += len(run.partials)
        if keep:
            out.timeout_ids += [_hand_ids(p) for p in run.partials]
    return out


def hand_inlined(ordered: Sequence[dict[str, Any]], keep: bool = False, within: float = WITHIN) -> Outcome:
    """:class:`HandRun`'s logic written into one loop over the events (no call per
    event, no result lists): the fastest hand-written form, for information."""
    out = Outcome()
    by_key: dict[str, list[list[Any]]] = {}
    for event in ordered:
        t = event["ts"]
        partials = by_key.get(event["key"])
        if partials:
            lapsed = 0
            while lapsed < len(partials) and t - partials[lapsed][0] >= within:
                lapsed += 1
            if lapsed:
                out.timeouts += lapsed
                if keep:
                    out.timeout_ids += [_hand_ids(p) for p in partials[:lapsed]]
                del partials[:lapsed]
        kind = event["type"]
        if kind == "a":
            if partials is None:
                partials = by_key[event["key"]] = []
            partials.append([t, event, None])
        elif not partials:
            continue
        elif kind == "b":
            for partial in partials:
                if partial[2] is None:
                    partial[2] = event
        elif kind == "c":
            waiting = [p for p in partials if p[2] is None]
            if len(waiting) < len(partials):
                out.matches += len(partials) - len(waiting)
                if keep:
                    out.match_ids += [
                        (p[1]["i"], p[2]["i"], event["i"]) for p in partials if p[2] is not None
                    ]
                partials[:] = waiting
    for partials in by_key.values():  # the sentinel's time: every partial match is over
        out.timeouts += len(partials)
        if keep:
            out.timeout_ids += [_hand_ids(p) for p in partials]
    return out


def _hand_ids(partial: list[Any]) -> Ids:
    return (partial[1]["i"],) if partial[2] is None else (partial[1]["i"], partial[2]["i"])


def engine(ordered: Sequence[dict[str, Any]], auto: Automaton, keep: bool = False) -> Outcome:
    """The NFA alone: a run per key, ``feed`` (``advance(t)`` then ``process``) for
    each event in time order, then every run advanced to the sentinel's time."""
    out = Outcome()
    runs: dict[str, Run] = {}
    for eid, event in enumerate(ordered):
        t = event["ts"]
        key = event["key"]
        run = runs.get(key)
        if run is None:
            run = runs[key] = auto.run()
        matched, lapsed, found = run.feed(event, t, eid)
        if matched or lapsed:
            _engine_out(out, matched, lapsed, keep)
        if found:
            out.matches += len(found)
            if keep:
                out.match_ids += [path_ids(p.path) for p in found]
    end = ordered[-1]["ts"]
    for run in runs.values():
        _engine_out(out, *run.advance(end), keep)
    return out


def _engine_out(out: Outcome, matched: list[Any], lapsed: list[Any], keep: bool) -> None:
    out.matches += len(matched)
    out.timeouts += len(lapsed)
    if keep:
        out.match_ids += [path_ids(p.path) for p in matched]
        out.timeout_ids += [path_ids(p.path) for p in lapsed]


def make_core(pat: Pattern[Any]) -> PatternCore:
    """The keyed stage as ``.key_by("key").event_time("ts", MAX_DELAY, idle=None).match(pat)`` makes it."""
    clock = EventTime("ts", max_delay=MAX_DELAY, idle=None)
    operator = PatternSpec(pat).operator(HistoricalScheduler(), key_by=KeyBy("key"), clock=clock)
    core = operator.make_core()
    if not isinstance(core, PatternCore):
        raise BenchError(f"PatternSpec made a {type(core).__name__}, not a PatternCore")
    return core


NOW = BASE  # the scheduler time given to the stage (idle=None: it never moves the watermark)


def stage(
    source: Iterable[Message],
    pat: Pattern[Any],
    keep: bool = False,
    sample: Callable[[PatternCore], None] | None = None,
) -> Outcome:
    """Feed the messages, in arrival order, to a fresh ``PatternCore`` with the calls the
    window operator makes per message; check that nothing was late or rejected and that
    only the sentinel is left in its state."""
    out = Outcome()
    core = make_core(pat)
    core.start(NOW)
    bad = 0
    for count, message in enumerate(source):
        core.clock_due(NOW)
        for window in core.on_message(message, NOW):
            if isinstance(window, MatchWindow):
                out.matches += 1
                if keep:
                    out.match_ids.append(window_ids(window))
        bad += len(core.late()) + len(core.rejected())
        aside = core.side_output()
        if aside:
            out.timeouts += len(aside)
            if keep:
                out.timeout_ids += [window_ids(w) for w in aside if isinstance(w, MatchWindow)]
        if sample is not None and count % SAMPLE_EVERY == 0:
            sample(core)
    if bad:
        raise BenchError(f"stage: {bad} late or rejected events")
    open_keys = [key for key, state in core.keys.items() if state.run.active or state.run.completed]
    if open_keys or [entry[4].data["key"] for entry in core.buffer] != [SENTINEL]:
        raise BenchError(
            f"stage: state left at the end: {len(open_keys)} keys with partial matches, "
            f"{len(core.buffer)} buffered events (only the sentinel expected)"
        )
    return out


class Tally:
    """The pipeline's sink and timeouts target; ``done`` once ``expected`` arrived in all."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.matches: list[Ids] = []
        self.timeouts: list[Ids] = []
        self.late = 0
        self.done = threading.Event()
        self.lock = threading.Lock()

    def match(self, ids: Ids) -> None:
        with self.lock:
            self.matches.append(ids)
            self._check()

    def timeout(self, match: Match[Any]) -> None:
        with self.lock:
            self.timeouts.append(match_ids(match))
            self._check()

    def on_late(self, _message: Any) -> None:
        self.late += 1
        self.done.set()  # no point waiting for what will not come

    def _check(self) -> None:
        if len(self.matches) + len(self.timeouts) >= self.expected:
            self.done.set()


def fill(source: Stream, n: int) -> None:
    """Append the workload's events (generated as they go) and the sentinel to ``source``."""
    batch: list[dict[str, Any]] = []
    for event in generate(n):
        batch.append(event)
        if len(batch) == FILL_BATCH:
            source.extend(batch)
            batch = []
    if batch:
        source.extend(batch)


def pipeline(
    source: Stream, pat: Pattern[Any], expected: Outcome, timeout: float, label: str
) -> Callable[[], Outcome]:
    """A function running the pipeline once over ``source`` (a new consumer each time)
    and checking it found ``expected`` (its match and timeout multisets)."""

    def run() -> Outcome:
        tally = Tally(expected.matches + expected.timeouts)
        chain = (
            source.key_by("key")
            .event_time("ts", max_delay=MAX_DELAY, idle=None)
            .match(pat, timeouts=tally.timeout)
            .map(match_ids)
            .sink(tally.match)
            .late(tally.on_late)
        )
        handle = chain.start(consumer=f"bench-cep-{label}-{next(CONSUMERS)}")
        try:
            finished = tally.done.wait(timeout)
        finally:
            handle.stop(timeout=10)
        with tally.lock:
            got = Outcome(len(tally.matches), len(tally.timeouts), list(tally.matches), list(tally.timeouts))
        if handle.error is not None or not finished or tally.late:
            raise BenchError(
                f"{label}: error {handle.error!r}, {tally.late} late, {got.matches} matches and "
                f"{got.timeouts} timeouts of {expected.matches} and {expected.timeouts} "
                f"in {timeout:g} s"
            )
        compare({HAND: expected, label: got})
        return got

    return run


# -- checks ------------------------------------------------------------------------------------


def compare(outcomes: dict[str, Outcome]) -> None:
    """Every row's matches and timeouts (as multisets of event ids) equal the first row's."""
    (base_name, base), *others = outcomes.items()
    want_m, want_t = Counter(base.match_ids), Counter(base.timeout_ids)
    for name, got in others:
        for what, want, have in (
            ("matches", want_m, Counter(got.match_ids)),
            ("timeouts", want_t, Counter(got.timeout_ids)),
        ):
            if want != have:
                missing = sorted((want - have).elements())[:3]
                extra = sorted((have - want).elements())[:3]
                raise BenchError(
                    f"{name} and {base_name} differ in {what}: {sum(have.values())} vs "
                    f"{sum(want.values())}; only {base_name}: {missing}...; only {name}: {extra}..."
                )


def cross_check(
    w: Workload, pat: Pattern[Any] | None = None, hand: Callable[..., Outcome] = hand_written
) -> dict[str, Outcome]:
    """The in-process rows over ``w`` with every match and timeout kept; they must agree."""
    pat = pat or pattern()
    outcomes = {
        HAND: hand(w.ordered, keep=True),
        INLINED: hand_inlined(w.ordered, keep=True),
        ENGINE: engine(w.ordered, pat.compiled(), keep=True),
        STAGE: stage(w.messages, pat, keep=True),
    }
    for name, o in outcomes.items():
        if (len(o.match_ids), len(o.timeout_ids)) != o.counts():
            raise BenchError(
                f"{name}: counted {o.counts()}, kept {len(o.match_ids)} and {len(o.timeout_ids)}"
            )
    compare(outcomes)
    return outcomes


# -- memory ------------------------------------------------------------------------------------


@dataclass
class Memory:
    """One traced stage run over ``events`` generated messages."""

    events: int
    peak_mib: float
    seconds: float  # under tracemalloc
    partials_max: int  # partial matches alive (start states not counted), sampled
    keys_max: int  # keys holding partial matches, sampled
    matches: int
    timeouts: int


def measure_memory(n: int, pat: Pattern[Any]) -> Memory:
    """``tracemalloc``'s peak during a stage run, the messages made as they are fed."""
    most = [0, 0]

    def sample(core: PatternCore) -> None:
        alive = sum(len(k.run.partials) - 1 for k in core.keys.values())
        holding = sum(1 for k in core.keys.values() if k.run.active)
        most[0], most[1] = max(most[0], alive), max(most[1], holding)

    gc.collect()
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        out = stage(messages(n), pat, sample=sample)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return Memory(n, peak / 2**20, seconds, most[0], most[1], out.matches, out.timeouts)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured row: events/s (median of its runs) and every run's rate."""

    name: str
    events: int
    rates: list[float]

    @property
    def eps(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


@dataclass
class Target:
    """One target of the issue, measured."""

    name: str
    wanted: str
    measured: str
    passed: bool | None


@dataclass
class Report:
    """Everything one run measured."""

    events: int
    pipeline_events: int
    rounds: int
    matches: int
    timeouts: int
    rows: list[Row]
    memory: list[Memory]
    notes: dict[str, str] = field(default_factory=dict)

    def eps(self, name: str) -> float | None:
        return next((row.eps for row in self.rows if row.name == name), None)

    def targets(self) -> list[Target]:
        out: list[Target] = []
        for name in (ENGINE, STAGE):
            eps = self.eps(name)
            out.append(
                Target(
                    f"{name}, {self.events:,} events",
                    f">= {TARGET_EPS:,.0f} events/s",
                    "-" if eps is None else f"{eps:,.0f} events/s",
                    None if eps is None else eps >= TARGET_EPS,
                )
            )
            for base in (HAND, INLINED):
                against = self.eps(base)
                rel = None if eps is None or not against else eps / against
                out.append(
                    Target(
                        f"{name} / {base}",
                        f">= {TARGET_RATIO:g}x",
                        "-" if rel is None else f"{rel:.2f}x",
                        None if rel is None else rel >= TARGET_RATIO,
                    )
                )
        if len(self.memory) >= 2:
            few, most = self.memory[0], self.memory[-1]
            ratio = most.peak_mib / few.peak_mib
            out.append(
                Target(
                    f"stage peak memory with within, {most.events:,} / {few.events:,} events",
                    f"flat (<= {FLAT_RATIO:g}x)",
                    f"{ratio:.2f}x ({most.peak_mib:.2f} vs {few.peak_mib:.2f} MiB)",
                    ratio <= FLAT_RATIO,
                )
            )
        return out


def timed(run: Callable[[], Outcome], expected: tuple[int, int], name: str) -> float:
    gc.collect()
    t0 = time.perf_counter()
    got = run()
    seconds = time.perf_counter() - t0
    if got.counts() != expected:
        raise BenchError(f"{name}: {got.counts()} matches and timeouts, expected {expected}")
    return seconds


def run_benchmark(
    n: int,
    pipeline_n: int,
    rounds: int,
    memory_sizes: Sequence[int],
    budget: float = 60.0,
    timeout: float = 600.0,
    stores: Sequence[str] = ("memory", "sqlite"),
) -> Report:
    """Build the events, cross-check the rows, time them in alternating rounds, trace the memory."""
    pat = pattern()
    print(f"building {n:,} events over {KEYS:,} keys ...", file=sys.stderr)
    w = build(n)
    print("cross-check (untimed): every in-process row keeps its matches and timeouts ...", file=sys.stderr)
    expected = cross_check(w, pat)[HAND].counts()
    print(f"  {expected[0]:,} matches, {expected[1]:,} timeouts: the same in every row", file=sys.stderr)
    rows = time_rows(w, pat, expected, pipeline_n, rounds, budget, timeout, stores)
    del w  # the memory runs make their messages as they go
    memory = []
    for size in memory_sizes:
        print(f"memory: stage over {size:,} events under tracemalloc ...", file=sys.stderr)
        memory.append(measure_memory(size, pat))
    return Report(n, pipeline_n, rounds, expected[0], expected[1], rows, memory)


def time_rows(
    w: Workload,
    pat: Pattern[Any],
    expected: tuple[int, int],
    pipeline_n: int,
    rounds: int,
    budget: float,
    timeout: float,
    stores: Sequence[str],
) -> list[Row]:
    """Every row once per round, in turn (a row is not repeated once its runs took
    ``budget`` seconds); each run must find ``expected`` (the pipelines: their own)."""
    auto = pat.compiled()
    runners: dict[str, Callable[[], Outcome]] = {
        HAND: lambda: hand_written(w.ordered),
        INLINED: lambda: hand_inlined(w.ordered),
        ENGINE: lambda: engine(w.ordered, auto),
        STAGE: lambda: stage(w.messages, pat),
    }
    sizes = dict.fromkeys(runners, w.events)
    wanted = dict.fromkeys(runners, expected)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cep-"))
    opened: list[Stream] = []
    try:
        if stores and pipeline_n:
            pipe_expected = hand_written(build(pipeline_n).ordered, keep=True)
            for store in stores:
                name = PIPE_MEMORY if store == "memory" else PIPE_SQLITE
                print(f"filling the {store} store with {pipeline_n:,} events ...", file=sys.stderr)
                if store == "memory":
                    source = Stream(STREAM, store=MemoryStore("memory://bench-cep"))
                else:
                    source = Stream(STREAM, f"sqlite://{workdir / 'cep.db'}")
                opened.append(source)
                fill(source, pipeline_n)
                runners[name] = pipeline(source, pat, pipe_expected, timeout, store)
                sizes[name], wanted[name] = pipeline_n, pipe_expected.counts()
        rates: dict[str, list[float]] = {name: [] for name in runners}
        spent = dict.fromkeys(runners, 0.0)
        for r in range(rounds):
            for name, run in runners.items():
                if r and spent[name] >= budget:
                    continue
                seconds = timed(run, wanted[name], name)
                spent[name] += seconds
                rates[name].append(sizes[name] / seconds)
                print(f"  round {r + 1}: {name}: {rates[name][-1]:,.0f} events/s", file=sys.stderr)
    finally:
        for source in opened:
            source.store.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return [Row(name, sizes[name], rates[name]) for name in rates]


# -- the report --------------------------------------------------------------------------------


def verdict(passed: bool | None) -> str:
    return "not measured" if passed is None else "PASS" if passed else "FAIL"


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.3f}x"


def table(report: Report) -> str:
    hand, inlined = report.eps(HAND), report.eps(INLINED)
    lines = [
        "| row | events | events/s (median) | runs | / hand-written HandRun | / hand-written inlined |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        eps = row.eps
        lines.append(
            f"| {row.name} | {row.events:,} | {'-' if eps is None else f'{eps:,.0f}'} | "
            f"{len(row.rates)} | {ratio(eps, hand)} | {ratio(eps, inlined)} |"
        )
    return "\n".join(lines)


def memory_table(report: Report) -> str:
    lines = [
        "| events | traced peak MiB | partial matches alive (max sampled) | keys holding them (max) | "
        "matches | timeouts | s (traced) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {m.events:,} | {m.peak_mib:.2f} | {m.partials_max:,} | {m.keys_max:,} | {m.matches:,} | "
        f"{m.timeouts:,} | {m.seconds:.1f} |"
        for m in report.memory
    ]
    return "\n".join(lines)


def targets_table(report: Report) -> str:
    lines = ["| target | wanted | measured | result |", "|---|---|---|---|"]
    lines += [f"| {t.name} | {t.wanted} | {t.measured} | {verdict(t.passed)} |" for t in report.targets()]
    return "\n".join(lines)


def render(report: Report) -> str:
    return (
        f"{report.events:,} events over {KEYS:,} keys (pipelines: {report.pipeline_events:,}); "
        f"begin(a).followed_by(b).followed_by(c).within({WITHIN:g}s), no_skip; "
        f"{report.matches:,} matches and {report.timeouts:,} timeouts, the same in every row; "
        f"events/s, median of up to {report.rounds} runs\n\n{table(report)}\n\n"
        f"Peak memory of the stage (tracemalloc), messages generated as fed:\n\n{memory_table(report)}\n\n"
        f"{targets_table(report)}"
    )


# -- the profile -------------------------------------------------------------------------------


def profile(n: int, what: str, top: int = 15) -> str:
    """cProfile of one ``engine`` or ``stage`` run over ``n`` events (after an untimed
    warm-up): the ``top`` functions by own time, with their share of all own time."""
    pat = pattern()
    w = build(n)
    auto = pat.compiled()
    run: Callable[[], Outcome] = (
        (lambda: engine(w.ordered, auto)) if what == "engine" else (lambda: stage(w.messages, pat))
    )
    run()
    profiler = cProfile.Profile()
    gc.collect()
    t0 = time.perf_counter()
    profiler.enable()
    run()
    profiler.disable()
    seconds = time.perf_counter() - t0
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]  # {(file, line, name): (cc, calls, tottime, cumtime, callers)}
    total = sum(e[2] for e in entries.values())
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    lines = [
        f"{what} over {n:,} events: {seconds:.2f} s under cProfile ({n / seconds:,.0f} events/s; "
        f"profiling slows it, compare the shares); {total:.2f} s of own time; top {top} by own time:",
        "| own s | share | calls | cumulative s | function |",
        "|---:|---:|---:|---:|---|",
    ]
    for (file, line, name), (_cc, calls, own, cum, _callers) in ranked:
        where = name if file == "~" else f"{name} ({Path(file).name}:{line})"
        lines.append(f"| {own:.2f} | {100 * own / total:.1f}% | {calls:,} | {cum:.2f} | {where} |")
    return "\n".join(lines)


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, help=f"events of the in-process rows (default {EVENTS:,})")
    parser.add_argument(
        "--pipeline-events",
        type=int,
        help=f"events of the pipeline rows (default {PIPELINE_EVENTS:,}; 0 skips them)",
    )
    parser.add_argument(
        "--memory-sizes",
        type=parse_sizes,
        help="events of the traced stage runs (default 100000,1000000; '' for none)",
    )
    parser.add_argument("--stores", default="memory,sqlite", help="pipeline stores (default memory,sqlite)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_EVENTS:,} events, pipelines {QUICK_PIPELINE_EVENTS:,}, memory "
        f"{','.join(map(str, QUICK_MEMORY_SIZES))}, 1 round",
    )
    parser.add_argument("--rounds", type=int, help="runs per row, median reported (default 3)")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds after which a row is not repeated (default 60)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per pipeline run")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument(
        "--profile",
        choices=("engine", "stage"),
        help="instead, profile one run of that row (cProfile, top 15 by own time)",
    )
    args = parser.parse_args(argv)
    n = args.events if args.events is not None else QUICK_EVENTS if args.quick else EVENTS
    pipeline_n = (
        args.pipeline_events
        if args.pipeline_events is not None
        else QUICK_PIPELINE_EVENTS
        if args.quick
        else PIPELINE_EVENTS
    )
    sizes = (
        args.memory_sizes
        if args.memory_sizes is not None
        else QUICK_MEMORY_SIZES
        if args.quick
        else MEMORY_SIZES
    )
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if n <= 0 or pipeline_n < 0 or rounds <= 0 or not set(stores) <= {"memory", "sqlite"}:
        parser.error(
            "--events and --rounds must be positive, --pipeline-events >= 0, "
            "--stores a subset of memory,sqlite"
        )
    if args.profile:
        print(profile(n, args.profile))
        return 0
    report = run_benchmark(n, pipeline_n, rounds, sizes, args.budget, args.timeout, stores)
    print(f"\n{render(report)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(
                {
                    "events": n,
                    "pipeline_events": pipeline_n,
                    "keys": KEYS,
                    "rounds": rounds,
                    "within": WITHIN,
                    "matches": report.matches,
                    "timeouts": report.timeouts,
                    "rows": [{**asdict(r), "eps": r.eps} for r in report.rows],
                    "memory": [asdict(m) for m in report.memory],
                    "targets": [asdict(t) for t in report.targets()],
                },
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench_cep: {error}", file=sys.stderr)
        sys.exit(1)
