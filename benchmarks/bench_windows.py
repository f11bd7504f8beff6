"""Time windows: minibatch_rx beside bytewax and raw reactivex, on the same events, in one run.

Every engine gets the same N (default 200,000) events
``{"key": str, "ts": float epoch seconds, "v": int}`` over 1,000 keys, arriving
one per millisecond with event times up to 3 s behind arrival (out of order),
and sums ``v`` per 10 s window. Rows: bytewax (``TestingSource(batch_size=1000)``,
``key_on``, ``EventClock``, ``TumblingWindower``, ``collect_window``); raw
reactivex ``buffer_with_count(100)`` on the stored ``Message`` objects; our
``fixed_time_window`` / time-based ``sliding_window`` operators on the same
objects; our DSL on a memory store holding the events (fixed, sliding and
``count_window(100)``, timed from ``start()`` until the sink saw every event);
and, once ``Pipeline`` has ``key_by`` and ``event_time``, bytewax's keyed
event-time workload through our DSL.

The memory store stamps each batch of 1,000 with the arrival time of its last
event, so ingest-time windows follow the arrival order; a last sentinel message
(``v`` = 0) 60 s later closes every window holding events, so no run waits for
a wall-clock timer. Every row checks its counts and sums (the keyed rows: each
(key, window) sum) and the script exits 1 on a mismatch. An untimed extra run
of the fixed-window DSL pipeline reports the threads alive and started.
benchmarks/README.md describes it all.

Usage::

    python benchmarks/bench_windows.py [--events N] [--quick] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import reactivex
from reactivex import Observable
from reactivex import operators as ops

from minibatch_rx import Message, Pipeline, Stream, Window, fixed_time_window, sliding_window
from minibatch_rx.store.memory import MemoryStore

KEYS = 1_000
SPACING = 0.001  # seconds between arrivals
JITTER = 3.0  # event times are up to this far behind their arrival
MAX_DELAY = 5.0  # bytewax wait_for_system_duration and our max_delay: nothing is late
WINDOW = 10.0
STEP = 5.0
BATCH = 1_000
BASE = 1_700_000_000.0  # a multiple of WINDOW
SENTINEL_GAP = 60.0  # the sentinel is this far after the last event
Summary = tuple[int, int]  # (events in a window, sum of their v)


class BenchError(Exception):
    """A benchmark failed its self-check."""


@dataclass
class Workload:
    """The events, the same messages as stored, and what every engine must produce."""

    events: list[dict[str, Any]]
    source: Stream  # memory store holding the events, then the sentinel
    messages: list[Message]  # the stored events (without the sentinel)
    total: int  # sum of v
    keyed: dict[tuple[str, int], int]  # (key, window index) -> sum of v


@dataclass
class Row:
    """One measured engine."""

    name: str
    eps: float | None  # events/s, median over runs
    runs: int
    target: str = ""
    note: str = ""


def build(n: int, seed: int = 7) -> Workload:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for i in range(n):
        ts = round(BASE + JITTER + i * SPACING - rng.uniform(0, JITTER), 6)
        events.append({"key": f"k{rng.randrange(KEYS):04d}", "ts": ts, "v": rng.randint(1, 100)})
    keyed: dict[tuple[str, int], int] = {}
    for e in events:
        slot = (e["key"], int(e["ts"] // WINDOW))
        keyed[slot] = keyed.get(slot, 0) + e["v"]
    stamp = [BASE]
    store = MemoryStore("memory://bench-windows", clock=lambda: datetime.fromtimestamp(stamp[0], UTC))
    source = Stream("bench-windows", store=store)
    for start in range(0, n, BATCH):
        batch = events[start:start + BATCH]
        stamp[0] = BASE + JITTER + (start + len(batch) - 1) * SPACING
        source.extend(batch)
    messages = list(source.read())
    last = max(stamp[0], max(e["ts"] for e in events))
    stamp[0] = last + SENTINEL_GAP
    source.append({"key": "~sentinel", "ts": last + SENTINEL_GAP, "v": 0})
    return Workload(events, source, messages, sum(e["v"] for e in events), keyed)


def summarize(window: Window) -> Summary:
    """The per-window work of every engine: a sum of ``v`` (and the count, to check)."""
    return len(window), sum(d["v"] for d in window.data)


def batch_summary(batch: list[Message]) -> Summary:
    """The same work on a plain reactivex buffer."""
    return len(batch), sum(m.data["v"] for m in batch)


class Tally:
    """Adds up window summaries; ``done`` is set once ``expected`` events were seen."""

    def __init__(self, expected: int) -> None:
        self.expected, self.events, self.total, self.windows = expected, 0, 0, 0
        self.done = threading.Event()

    def add(self, summary: Summary) -> None:
        count, total = summary
        if total == 0:  # the sentinel's window (every real v is >= 1)
            return
        self.events, self.total, self.windows = self.events + count, self.total + total, self.windows + 1
        if self.events >= self.expected:
            self.done.set()

    def check(self, what: str, events: int, total: int) -> None:
        if (self.events, self.total) != (events, total):
            raise BenchError(f"{what}: saw {self.events} events summing to {self.total}, "
                             f"expected {events} summing to {total}")


def timed(run: Callable[[], object], events: int) -> float:
    gc.collect()
    t0 = time.perf_counter()
    run()
    return events / (time.perf_counter() - t0)


# -- the engines: each returns a function that runs once and checks its output -----------------

def raw_rx(w: Workload) -> Callable[[], None]:
    def run() -> None:
        tally = Tally(len(w.messages))
        reactivex.from_iterable(w.messages).pipe(
            ops.buffer_with_count(100),
            ops.map(batch_summary),
        ).subscribe(tally.add)
        tally.check("raw reactivex", len(w.messages), w.total)
    return run


def ours_operator(w: Workload, make: Callable[[], Callable[[Observable[Message]], Observable[Window]]],
                  cover: int) -> Callable[[], None]:
    def run() -> None:
        tally = Tally(len(w.messages) * cover)
        reactivex.from_iterable(w.messages).pipe(make(), ops.map(summarize)).subscribe(tally.add)
        tally.check("ours, operator", len(w.messages) * cover, w.total * cover)
    return run


def ours_dsl(w: Workload, shape: Callable[[Stream], Pipeline], cover: int, timeout: float,
             label: str) -> Callable[[], Tally]:
    runs = [0]

    def run() -> Tally:
        runs[0] += 1
        tally = Tally(len(w.messages) * cover)
        pipeline = shape(w.source).map(summarize).sink(tally.add)
        handle = pipeline.start(consumer=f"bench-{label}-{runs[0]}")
        try:
            finished = tally.done.wait(timeout)
        finally:
            handle.stop(timeout=10)
        if handle.error is not None:
            raise BenchError(f"{label}: the pipeline failed: {handle.error!r}")
        if not finished:
            raise BenchError(f"{label}: only {tally.events} of {tally.expected} events in {timeout} s")
        tally.check(label, len(w.messages) * cover, w.total * cover)
        return tally
    return run


def keyed_dsl(w: Workload, timeout: float) -> Callable[[], None]:
    runs = [0]

    def run() -> None:
        runs[0] += 1
        sums: dict[tuple[str, int], int] = {}
        tally = Tally(len(w.messages))
        wrong: list[str] = []  # windows seen twice, of the wrong length, or late messages

        def collect(window: Window) -> None:
            count, total = summarize(window)
            if total and window.start is not None and window.end is not None:
                slot = (str(window.key), int(window.start.timestamp() // WINDOW))
                if slot in sums or (window.end - window.start).total_seconds() != WINDOW:
                    wrong.append(f"window {slot} [{window.start}, {window.end}) emitted again or misshapen")
                sums[slot] = sums.get(slot, 0) + total
            tally.add((count, total))

        def late(message: Message) -> None:
            wrong.append(f"late: {message.data}")
            tally.done.set()  # no point waiting for events that will not come

        pipeline = (w.source.key_by("key").event_time("ts", max_delay=f"{MAX_DELAY:g}s")
                    .fixed_time_window(f"{WINDOW:g}s").sink(collect).late(late))
        handle = pipeline.start(consumer=f"bench-keyed-{runs[0]}")
        try:
            finished = tally.done.wait(timeout)
        finally:
            handle.stop(timeout=10)
        if handle.error is not None or not finished or wrong:
            raise BenchError(f"ours keyed: error {handle.error!r}, {tally.events} of {tally.expected} events"
                             + (f"; {len(wrong)} faults, first: {wrong[0]}" if wrong else ""))
        if sums != w.keyed:
            raise BenchError(f"ours keyed: {len(sums)} (key, window) sums differ from "
                             f"the expected {len(w.keyed)}")
    return run


def bytewax_run(w: Workload) -> Callable[[], None] | str:
    try:
        import bytewax.operators as op
        from bytewax.dataflow import Dataflow
        from bytewax.operators import windowing as win
        from bytewax.testing import TestingSink, TestingSource, run_main
    except ImportError as error:
        return f"not installed ({error}); pip install -e '.[bench]'"

    def ts_of(event: dict[str, Any]) -> datetime:
        return datetime.fromtimestamp(event["ts"], UTC)

    def run() -> None:
        down: list[tuple[str, tuple[int, int]]] = []
        late: list[Any] = []
        flow = Dataflow("bench_windows")
        keyed = op.key_on("key", op.input("in", flow, TestingSource(w.events, batch_size=1000)),
                          lambda e: e["key"])
        clock = win.EventClock(ts_of, wait_for_system_duration=timedelta(seconds=MAX_DELAY))
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        windower = win.TumblingWindower(length=timedelta(seconds=WINDOW), align_to=epoch)
        out = win.collect_window("window", keyed, clock, windower)
        sums = op.map("sum", out.down, lambda kv: (kv[0], (kv[1][0], sum(e["v"] for e in kv[1][1]))))
        op.output("out", sums, TestingSink(down))
        op.output("late", out.late, TestingSink(late))
        run_main(flow)  # type: ignore[no-untyped-call]
        got = {(key, wid): total for key, (wid, total) in down}
        if late or len(got) != len(down) or got != w.keyed:
            raise BenchError(f"bytewax: {len(late)} late, {len(down)} windows, expected {len(w.keyed)}")
    return run


# -- threads -----------------------------------------------------------------------------------

def thread_growth(w: Workload, timeout: float) -> dict[str, int]:
    """Threads before, at most during (sampled every 5 ms), after, and started during an
    ingest-time ``fixed_time_window`` DSL run, with the number of windows it emitted."""
    before = threading.active_count()
    samples: list[int] = []
    started = [0]
    stop = threading.Event()

    def count_start(_frame: object, _event: str, _arg: object) -> None:
        started[0] += 1  # runs once, first thing in each thread the threading module starts
        sys.setprofile(None)

    def sample() -> None:
        sys.setprofile(None)
        while not stop.wait(0.005):
            samples.append(threading.active_count() - 1)  # not the sampler itself

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threading.setprofile(count_start)
    try:
        tally = ours_dsl(w, lambda s: s.fixed_time_window(f"{WINDOW:g}s"), 1, timeout, "threads")()
    finally:
        threading.setprofile(None)
        stop.set()
        sampler.join()
    after = threading.active_count()
    deadline = time.monotonic() + 2.0
    while after > before and time.monotonic() < deadline:  # give cancelled timers a moment to exit
        time.sleep(0.01)
        after = threading.active_count()
    return {"before": before, "max_during": max(samples, default=before), "after": after,
            "started": started[0], "windows": tally.windows, "messages": len(w.messages)}


# -- the report --------------------------------------------------------------------------------

BYTEWAX = "bytewax"
RAW = "raw reactivex buffer_with_count(100)"
FIXED_DSL = "ours, DSL: fixed_time_window"
SLIDING_DSL = "ours, DSL: sliding_window by time"
KEYED = "ours, DSL: key_by + event_time + fixed_time_window"
TARGETS = {KEYED: (BYTEWAX, 1.0), FIXED_DSL: (RAW, 0.5), SLIDING_DSL: (RAW, 0.5)}
"""The targets of issue 10: row -> (baseline row, least ratio to it)."""


@dataclass
class Target:
    """A row's ratio to its baseline, against the target."""

    name: str
    wanted: str
    ratio: float | None  # None: a side was not measured

    @property
    def passed(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= TARGETS[self.name][1]


@dataclass
class Report:
    """One run of every engine."""

    events: int
    rounds: int
    rows: list[Row]
    runs: dict[str, list[float]]  # events/s of every run, per row
    threads: dict[str, int]

    def eps(self, name: str) -> float | None:
        return next((row.eps for row in self.rows if row.name == name), None)

    def targets(self) -> list[Target]:
        out = []
        for name, (base, least) in TARGETS.items():
            value, against = self.eps(name), self.eps(base)
            wanted = f">= {least:.1f}x {'bytewax' if base == BYTEWAX else 'raw reactivex'}"
            out.append(Target(name, wanted, None if value is None or not against else value / against))
        return out


def measure(runners: dict[str, Callable[[], object]], events: dict[str, int], rounds: int,
            budget: float) -> dict[str, list[float]]:
    """Runs every engine once per round, in turn; an engine is not repeated once
    its runs took ``budget`` seconds."""
    results: dict[str, list[float]] = {name: [] for name in runners}
    spent = dict.fromkeys(runners, 0.0)
    for r in range(rounds):
        for name, run in runners.items():
            if r and spent[name] >= budget:
                continue
            t0 = time.perf_counter()
            results[name].append(timed(run, events[name]))
            spent[name] += time.perf_counter() - t0
            print(f"  round {r + 1}: {name}: {results[name][-1]:,.0f} events/s", file=sys.stderr)
    return results


def engines(w: Workload, timeout: float) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """Every engine's run function, by row name, and notes for rows that cannot run."""
    size, step = f"{WINDOW:g}s", f"{STEP:g}s"
    runners: dict[str, Callable[[], object]] = {}
    notes: dict[str, str] = {}
    bw = bytewax_run(w)
    if isinstance(bw, str):
        notes[BYTEWAX] = bw
    else:
        runners[BYTEWAX] = bw
    runners[RAW] = raw_rx(w)
    runners["ours, operator: fixed_time_window"] = ours_operator(w, lambda: fixed_time_window(size), 1)
    runners["ours, operator: sliding_window by time"] = ours_operator(
        w, lambda: sliding_window(size, step, by="time"), 2)
    runners[FIXED_DSL] = ours_dsl(w, lambda s: s.fixed_time_window(size), 1, timeout, "fixed")
    runners[SLIDING_DSL] = ours_dsl(w, lambda s: s.sliding_window(size, step, by="time"), 2, timeout,
                                    "sliding")
    runners["ours, DSL: count_window(100)"] = ours_dsl(w, lambda s: s.count_window(100), 1, timeout, "count")
    runners[KEYED] = keyed_dsl(w, timeout)
    return runners, notes


def run_benchmark(n: int, rounds: int, budget: float = 60.0, timeout: float = 600.0) -> Report:
    """Build the events, time every engine over ``rounds`` and watch the threads of one more run."""
    print(f"building {n:,} events over {KEYS:,} keys ...", file=sys.stderr)
    w = build(n)
    runners, notes = engines(w, timeout)
    results = measure(runners, dict.fromkeys(runners, n), rounds, budget)  # input events/s, also sliding
    print("threads: sampling an ingest-time fixed_time_window run ...", file=sys.stderr)
    threads = thread_growth(w, timeout)
    wanted = {t.name: t.wanted for t in Report(n, rounds, [], {}, {}).targets()}
    rows = [Row(name, statistics.median(results[name]) if results.get(name) else None,
                len(results.get(name, [])), wanted.get(name, ""), notes.get(name, ""))
            for name in [BYTEWAX, *[k for k in runners if k != BYTEWAX]]]
    return Report(n, rounds, rows, results, threads)


def ratio(value: float | None, base: float | None) -> str:
    return "-" if value is None or not base else f"{value / base:.3f}x"


def verdict(passed: bool | None) -> str:
    return "not measured" if passed is None else "PASS" if passed else "FAIL"


def table(report: Report) -> str:
    """The rows with their ratios to bytewax and raw reactivex, and each target's verdict."""
    bytewax, raw = report.eps(BYTEWAX), report.eps(RAW)
    verdicts = {t.name: verdict(t.passed) for t in report.targets()}
    lines = ["| engine | events/s | runs | / bytewax | / raw reactivex | target, note |",
             "|---|---:|---:|---:|---:|---|"]
    for row in report.rows:
        eps = "-" if row.eps is None else f"{row.eps:,.0f}"
        target = f"{row.target}: {verdicts[row.name]}" if row.target else ""
        lines.append(f"| {row.name} | {eps} | {row.runs} | {ratio(row.eps, bytewax)} | "
                     f"{ratio(row.eps, raw)} | {'; '.join(filter(None, [target, row.note]))} |")
    return "\n".join(lines)


def threads_line(threads: dict[str, int]) -> str:
    return (f"Threads, ingest-time fixed_time_window DSL run over {threads['messages']:,} events "
            f"({threads['windows']:,} windows): {threads['before']} before, at most {threads['max_during']} "
            f"during, {threads['after']} after; {threads['started']:,} threads started during the run.")


def render(report: Report) -> str:
    return (f"{report.events:,} events, {KEYS:,} keys, out of order by up to {JITTER:g} s; 10 s windows "
            f"(sliding: 10 s every 5 s); events/s, median of up to {report.rounds} runs\n\n"
            f"{table(report)}\n\n{threads_line(report.threads)}")


# -- the profile -------------------------------------------------------------------------------

def profile_keyed(n: int, timeout: float, top: int = 15) -> str:
    """cProfile of one keyed event-time DSL run (after a warm-up run), each thread
    on its own: the busiest thread's ``top`` functions by own time, then one line
    per other thread. On the memory store the caller of ``start()`` reads the
    backlog and runs the whole pipeline; the timer thread mostly waits for it."""
    run = keyed_dsl(build(n), timeout)
    run()
    profiles: list[tuple[str, cProfile.Profile]] = []

    def profile_thread(_frame: object, _event: str, _arg: object) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile()
        profiles.append((threading.current_thread().name, profiler))
        profiler.enable()

    main = cProfile.Profile()
    profiles.append(("main", main))
    threading.setprofile(profile_thread)
    t0 = time.perf_counter()
    main.enable()
    try:
        run()
    finally:
        main.disable()
        threading.setprofile(None)
    seconds = time.perf_counter() - t0
    out = io.StringIO()
    stats = [(name, pstats.Stats(profiler, stream=out)) for name, profiler in profiles]
    totals = [own_time_and_calls(st) for _, st in stats]
    busiest = max(range(len(stats)), key=lambda i: totals[i][1])
    name, st = stats[busiest]
    out.write(f"keyed event-time DSL run over {n:,} events: {seconds:.2f} s under the profiler "
              f"({n / seconds:,.0f} events/s); thread {name!r}, {totals[busiest][0]:.2f} s of own time, "
              f"top {top} by own time:\n")
    st.sort_stats("tottime").print_stats(top)
    for i, (other, _) in enumerate(stats):
        if i != busiest:
            out.write(f"thread {other!r}: {totals[i][0]:.2f} s of own time, {totals[i][1]:,} calls\n")
    return out.getvalue()


def own_time_and_calls(stats: pstats.Stats) -> tuple[float, int]:
    """A thread's total own time and number of calls."""
    entries = stats.stats.values()  # type: ignore[attr-defined]  # (calls, primitive, tottime, cumtime, callers)
    return sum(e[2] for e in entries), sum(e[1] for e in entries)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=None,
                        help="events (a multiple of 1000; default 200,000)")
    parser.add_argument("--quick", action="store_true", help="50,000 events, 1 round")
    parser.add_argument("--rounds", type=int, default=None,
                        help="runs per engine, median reported (default 3)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds after which an engine is not repeated (default 60)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per pipeline run")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="instead, profile one keyed event-time DSL run (cProfile, top 15 by own time)")
    args = parser.parse_args(argv)
    n = args.events if args.events is not None else 50_000 if args.quick else 200_000
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
    if n <= 0 or n % BATCH or rounds <= 0:
        parser.error(f"--events must be a positive multiple of {BATCH}, --rounds positive")
    if args.profile:
        print(profile_keyed(n, args.timeout))
        return 0
    report = run_benchmark(n, rounds, args.budget, args.timeout)
    print(f"\n{render(report)}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            targets = [{**asdict(t), "passed": t.passed} for t in report.targets()]
            json.dump({"events": n, "keys": KEYS, "rounds": rounds, "rows": [asdict(r) for r in report.rows],
                       "runs": report.runs, "threads": report.threads, "targets": targets}, out, indent=2)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench_windows: {error}", file=sys.stderr)
        sys.exit(1)
