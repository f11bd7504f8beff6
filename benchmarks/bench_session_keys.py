"""Session windows over a million distinct keys: memory follows the keys open at once, not the keys seen.

Every message has a key of its own (``k0000000``, ``k0000001``, ...) and an
event time ``GAP / OPEN`` after the previous one, so each key's session
(``session_window(GAP)`` per key, on event time) closes ``GAP`` after its only
message: about ``OPEN`` (default 1,000) keys hold an open session at any
moment, while all of them pass through. A last *sentinel* message, far later,
closes every session. Two ways in:

* ``operator``: ``Session(GAP).operator(key_by=KeyBy("key"), clock=EventTime("ts"))``
  on a virtual-time scheduler that never moves (only the data closes
  sessions), fed one generated ``Message`` at a time through a ``Subject``;
  nothing else holds the messages.
* ``dsl``: ``stream.key_by("key").event_time("ts", idle="1h").window(spec).sink(fn)``
  on a memory store that already holds the messages, where ``spec`` is
  ``Session(GAP)`` (what ``.session_window(GAP)`` builds) in a wrapper that
  keeps the window cores it makes, so the run can look at their state.

Each run is a fresh subprocess. It resets its peak RSS (``/proc/self/clear_refs``)
after its set-up, runs once untimed by tracing (events/s, growth of peak RSS
over the RSS at the start), and, in ``operator`` mode, once more under
``tracemalloc`` (peak of Python allocations made during the run). A reference
run, ``all open``, gives every message the same event time, so all its keys
are open at once until the sentinel: that is what memory would look like if
the engine kept every key it saw.

Checks (exit status 1 on failure): each key's session is emitted exactly
once, in key order, holding its one message with the right start and end;
nothing is late or dead-lettered; at the end the engine's per-key table
holds at most the sentinel's key, it remembers no closed session, and it
holds no message but the sentinel. Memory: the traced peak at the most keys
must be within ``TARGET_RATIO`` (2x) of the peak at the fewest, and so must
the RSS growth (growth under ``RSS_FLOOR_MIB`` counts as flat); the
``all open`` run must show growth (else the measurement could not see held
keys). benchmarks/README.md describes it all.

Usage::

    python benchmarks/bench_session_keys.py [--sizes 10000,100000,1000000] [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reactivex import abc  # noqa: E402
from reactivex.scheduler import HistoricalScheduler  # noqa: E402
from reactivex.subject import Subject  # noqa: E402

from benchmarks.bench_backlog_memory import proc_status_kib  # noqa: E402
from minibatch_rx import Message, Stream, Window  # noqa: E402
from minibatch_rx.store.memory import MemoryStore  # noqa: E402
from minibatch_rx.windows import Session, WindowCore, WindowOperator, WindowSpec  # noqa: E402
from minibatch_rx.windows.clocks import ClockSpec, EventTime  # noqa: E402
from minibatch_rx.windows.keys import KeyBy  # noqa: E402

BASE = 1_700_000_000.0  # event time of the first message, epoch seconds
GAP = 1.0  # seconds of silence that end a session
OPEN = 1_000  # sessions open at once: messages arrive GAP / OPEN apart
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
DSL_SIZES = (10_000, 100_000)  # the DSL pays per window what the operator does, plus checkpoints
QUICK_DSL_SIZES = (2_000, 10_000)
TARGET_RATIO = 2.0
RSS_FLOOR_MIB = 16.0  # RSS growth below this is noise (allocator arenas), not held keys
SENTINEL = "~end"
SAMPLE_EVERY = 100  # messages (windows, in the DSL) between samples of the open keys
CHILD_TIMEOUT = 1800.0
FILL_BATCH = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TICK = timedelta(microseconds=1)

Report = dict[str, Any]


class BenchError(Exception):
    """A benchmark failed its self-check."""


@dataclass
class Result:
    """One run: ``keys`` messages, each with a key of its own."""

    mode: str  # "operator" or "dsl"
    keys: int
    all_open: bool
    open_max: int  # most keys with an open session, sampled every SAMPLE_EVERY
    seconds: float  # the untraced run
    rss_growth_mib: float | None  # peak RSS during the untraced run - RSS at its start
    traced_peak_mib: float | None  # tracemalloc peak of the traced run (operator mode)

    @property
    def rate(self) -> float:
        return self.keys / self.seconds if self.seconds else 0.0

    @property
    def label(self) -> str:
        return f"{self.mode}{', all open' if self.all_open else ''}"


@dataclass
class Verdict:
    """One memory criterion."""

    name: str
    target: str
    measured: str
    passed: bool


# -- the workload ------------------------------------------------------------------------

def key_name(i: int) -> str:
    return f"k{i:07d}"


def event_time(i: int, all_open: bool, open_: int) -> float:
    return BASE if all_open else BASE + i * GAP / open_


def payloads(n: int, all_open: bool, open_: int) -> Callable[[int], dict[str, Any]]:
    """Message ``i``'s payload; ``i == n`` is the sentinel, beyond every session's end."""
    last = event_time(n, all_open, open_) + 10 * GAP

    def payload(i: int) -> dict[str, Any]:
        if i == n:
            return {"key": SENTINEL, "ts": last}
        return {"key": key_name(i), "ts": event_time(i, all_open, open_)}

    return payload


def near(got: datetime | None, expected: datetime) -> bool:
    """Equal to the microsecond (float event times are exact to one)."""
    return got is not None and abs(got - expected) <= _TICK


class Checker:
    """Checks each window as it comes: the next key, its one message, its bounds."""

    def __init__(self, n: int, all_open: bool, open_: int) -> None:
        self.n, self.all_open, self.open_ = n, all_open, open_
        self.next = 0
        self.error: str | None = None
        self.late = 0
        self.done = threading.Event()
        self.gap = timedelta(seconds=GAP)

    def window(self, window: Window) -> None:
        if self.error is not None or window.key == SENTINEL:
            return
        i, key = self.next, key_name(self.next)
        start = _EPOCH + timedelta(seconds=event_time(i, self.all_open, self.open_))
        if (window.key != key or len(window) != 1 or window.data[0]["key"] != key
                or not near(window.start, start) or not near(window.end, start + self.gap)):
            self.fail(f"window {i}: expected key {key} holding its message, [{start}, +{GAP:g} s); got key "
                      f"{window.key!r}, {len(window)} messages, [{window.start}, {window.end})")
            return
        self.next += 1
        if self.next == self.n:
            self.done.set()

    def on_late(self, _message: Any) -> None:
        self.late += 1
        self.fail(f"{self.late} late message(s)")

    def fail(self, error: str) -> None:
        self.error = self.error or error
        self.done.set()

    def verify(self) -> None:
        if self.error is None and self.next != self.n:
            self.error = f"{self.next:,} of {self.n:,} sessions emitted"
        if self.error is not None:
            raise BenchError(self.error)


# -- the engine's per-key state ----------------------------------------------------------

@dataclass(frozen=True)
class Watched(WindowSpec):
    """A window spec that keeps the cores it makes, so the run can look at
    the engine's per-key state (``cores[-1]`` is the one subscribed last)."""

    inner: WindowSpec
    cores: list[WindowCore] = field(default_factory=list, compare=False)
    timed: ClassVar[bool] = True

    @property
    def label(self) -> str:
        return self.inner.label

    def check(self, key_by: KeyBy | None, clock: ClockSpec | None) -> None:
        self.inner.check(key_by, clock)

    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        inner = self.inner.operator(scheduler, key_by=key_by, clock=clock)

        def make() -> WindowCore:
            core = inner.make_core()
            self.cores.append(core)
            return core

        return WindowOperator(make, inner.scheduler)


def open_keys(core: WindowCore) -> int:
    """Keys with an open window in the time-window engine (its table ``by_key``)."""
    table = getattr(core, "by_key", None)
    if not isinstance(table, dict):
        raise BenchError(f"{type(core).__name__} has no per-key table `by_key`: update open_keys()")
    return len(table)


def check_emptied(core: WindowCore, sentinel_seq: int) -> None:
    """At the end only the sentinel's session may be open; no closed session is remembered."""
    keys = set(getattr(core, "by_key", {}))
    remembered = len(getattr(core, "recent", {}))
    held = core.held_min_seq()
    if not keys <= {SENTINEL} or remembered or held not in (None, sentinel_seq):
        raise BenchError(f"per-key state left at the end: {len(keys):,} keys with open sessions "
                         f"({sorted(keys)[:3]}...), {remembered:,} closed sessions remembered, "
                         f"oldest message held: seq {held}")


# -- one run (in the child process) ------------------------------------------------------

def run_operator(n: int, all_open: bool, open_: int, trace: bool) -> tuple[float, int, int | None]:
    """Feed ``n`` messages and the sentinel through the keyed session operator;
    (seconds, most keys open at once, traced peak bytes)."""
    spec = Watched(Session(f"{GAP:g}s"))
    operator = spec.operator(HistoricalScheduler(), key_by=KeyBy("key"), clock=EventTime("ts"))
    checker = Checker(n, all_open, open_)
    operator.late.subscribe(checker.on_late)
    operator.rejected.subscribe(lambda bad: checker.fail(f"rejected: {bad[1]}"))
    source: Subject[Message] = Subject()
    source.pipe(operator).subscribe(checker.window, lambda e: checker.fail(f"error: {e!r}"))
    core, payload, ingest = spec.cores[-1], payloads(n, all_open, open_), datetime.now(UTC)
    most = 0
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    for i in range(n + 1):
        if i % SAMPLE_EVERY == 0 or i == n:  # before the sentinel closes the rest
            most = max(most, open_keys(core))
        source.on_next(Message("sessions", i + 1, ingest, payload(i)))
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    tracemalloc.stop()
    checker.verify()
    check_emptied(core, n + 1)
    return seconds, most, peak


def run_dsl(n: int, all_open: bool, open_: int, timeout: float) -> Callable[[], tuple[float, int]]:
    """Store ``n`` messages and the sentinel in a memory store; the returned
    function runs the keyed session pipeline over them once."""
    source = Stream("sessions", store=MemoryStore("memory://bench-session-keys"))
    payload = payloads(n, all_open, open_)
    for start in range(0, n + 1, FILL_BATCH):
        source.extend([payload(i) for i in range(start, min(n + 1, start + FILL_BATCH))])

    def run() -> tuple[float, int]:
        checker, spec = Checker(n, all_open, open_), Watched(Session(f"{GAP:g}s"))
        most = [0]

        def sink(window: Window) -> None:
            checker.window(window)
            if checker.next % SAMPLE_EVERY == 0:
                most[0] = max(most[0], open_keys(spec.cores[-1]))

        # idle="1h": the wall clock never closes a session here, the sentinel does.
        pipeline = source.key_by("key").event_time("ts", idle="1h").window(spec)
        started = time.perf_counter()
        handle = pipeline.sink(sink).late(checker.on_late).start(consumer="bench")
        try:
            checker.done.wait(timeout)
            seconds = time.perf_counter() - started
            checker.verify()
            check_emptied(spec.cores[-1], n + 1)
        finally:
            handle.stop(timeout=10)
        if handle.error is not None:
            raise BenchError(f"the pipeline failed: {handle.error!r}")
        dead = source.store.count("sessions.dead")
        if dead:
            raise BenchError(f"{dead} dead-lettered records")
        return seconds, most[0]

    return run


def reset_peak_rss() -> int | None:
    """Reset this process's peak RSS to its current RSS (Linux); the RSS in KiB, or None."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return None
    return proc_status_kib("VmRSS")


def growth_mib(start_kib: int | None) -> float | None:
    peak = proc_status_kib("VmHWM")
    return None if start_kib is None or peak is None else (peak - start_kib) / 1024


def child(params: Report) -> Report:
    mode, n, all_open, open_ = params["mode"], params["keys"], params["all_open"], params["open"]
    if mode == "dsl":
        run = run_dsl(n, all_open, open_, params["timeout"])
        gc.collect()
        start = reset_peak_rss()
        seconds, most = run()
        return {"seconds": seconds, "open_max": most, "rss_growth_mib": growth_mib(start),
                "traced_peak_mib": None}
    gc.collect()
    start = reset_peak_rss()
    seconds, most, _ = run_operator(n, all_open, open_, trace=False)
    rss = growth_mib(start)
    gc.collect()
    _, _, peak = run_operator(n, all_open, open_, trace=True)
    return {"seconds": seconds, "open_max": most, "rss_growth_mib": rss,
            "traced_peak_mib": None if peak is None else peak / 2**20}


# -- the parent --------------------------------------------------------------------------

def measure(mode: str, n: int, all_open: bool, open_: int, timeout: float = CHILD_TIMEOUT) -> Result:
    """One run in a fresh subprocess (so its RSS is its own)."""
    params = {"mode": mode, "keys": n, "all_open": all_open, "open": open_, "timeout": timeout}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(params)]
    print(f"  {mode}{' all open' if all_open else ''}: {n:,} keys ...", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{mode} run over {n:,} keys took more than {timeout:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"{mode} run over {n:,} keys failed:\n{done.stderr.strip()}")
    report: Report = json.loads(done.stdout.strip().splitlines()[-1])
    return Result(mode, n, all_open, **report)


def measure_all(sizes: Sequence[int], dsl_sizes: Sequence[int], all_open: int, open_: int,
                timeout: float = CHILD_TIMEOUT) -> list[Result]:
    """Every run: the operator over ``sizes`` (then ``all_open`` keys all open
    at once, unless 0) and the DSL over ``dsl_sizes``."""
    results = [measure("operator", n, False, open_, timeout) for n in sizes]
    if all_open:
        results.append(measure("operator", all_open, True, open_, timeout))
    results += [measure("dsl", n, False, open_, timeout) for n in dsl_sizes]
    return results


def verdicts(results: Sequence[Result]) -> list[Verdict]:
    """The memory criteria: flat across keys seen (traced peak and RSS growth),
    and the all-open reference growing."""
    out: list[Verdict] = []
    for mode in ("operator", "dsl"):
        runs = sorted((r for r in results if r.mode == mode and not r.all_open), key=lambda r: r.keys)
        if len(runs) < 2:
            continue
        few, most = runs[0], runs[-1]
        what = f"{mode}: {most.keys:,} keys seen vs {few.keys:,}"
        if few.traced_peak_mib is not None and most.traced_peak_mib is not None:
            ratio = most.traced_peak_mib / few.traced_peak_mib
            measured = f"{ratio:.2f}x ({most.traced_peak_mib:.2f} vs {few.traced_peak_mib:.2f} MiB)"
            target = f"<= {TARGET_RATIO:g}x"
            out.append(Verdict(f"{what}, traced peak", target, measured, ratio <= TARGET_RATIO))
        if few.rss_growth_mib is not None and most.rss_growth_mib is not None:
            limit = TARGET_RATIO * max(few.rss_growth_mib, RSS_FLOOR_MIB)
            measured = f"{most.rss_growth_mib:.1f} vs {few.rss_growth_mib:.1f} MiB (limit {limit:.1f})"
            target = f"<= {TARGET_RATIO:g}x (under {RSS_FLOOR_MIB:g} MiB: flat)"
            out.append(Verdict(f"{what}, RSS growth", target, measured, most.rss_growth_mib <= limit))
    reference = next((r for r in results if r.all_open), None)
    flowing = max((r for r in results if r.mode == "operator" and not r.all_open), key=lambda r: r.keys,
                  default=None)
    if reference and flowing and reference.traced_peak_mib and flowing.traced_peak_mib:
        ratio = reference.traced_peak_mib / flowing.traced_peak_mib
        name = (f"all {reference.keys:,} keys open at once vs {flowing.keys:,} flowing, traced peak "
                "(the measurement sees held keys)")
        out.append(Verdict(name, f"> {TARGET_RATIO:g}x", f"{ratio:.1f}x", ratio > TARGET_RATIO))
    return out


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(results: Sequence[Result]) -> str:
    lines = ["| run | keys seen | keys open at once (max sampled) | s | events/s | traced peak MiB | "
             "RSS growth MiB |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.label} | {r.keys:,} | {r.open_max:,} | {r.seconds:.1f} | {r.rate:,.0f} | "
              f"{cell(r.traced_peak_mib, 2)} | {cell(r.rss_growth_mib, 1)} |" for r in results]
    return "\n".join(lines)


def parse_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(part) for part in text.split(",") if part.strip())
    if any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=parse_sizes,
                        help="keys of the operator runs (default 10000,100000,1000000)")
    parser.add_argument("--dsl-sizes", type=parse_sizes,
                        help="keys of the DSL runs (default 10000,100000; '' for none)")
    parser.add_argument("--all-open", type=int, help="keys of the all-open reference (default: the most "
                        "keys of --sizes; 0 skips it)")
    parser.add_argument("--open", type=int, default=OPEN, help=f"sessions open at once (default {OPEN})")
    parser.add_argument("--quick", action="store_true",
                        help="operator 10,000 and 100,000 keys; DSL 2,000 and 10,000")
    parser.add_argument("--timeout", type=float, default=CHILD_TIMEOUT, help="seconds per run")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    sizes = args.sizes if args.sizes is not None else QUICK_SIZES if args.quick else SIZES
    dsl_sizes = args.dsl_sizes if args.dsl_sizes is not None else QUICK_DSL_SIZES if args.quick else DSL_SIZES
    all_open = args.all_open if args.all_open is not None else max(sizes, default=0)
    if args.open <= 0 or all_open < 0:
        parser.error("--open must be positive, --all-open >= 0")

    print(f"session_window({GAP:g}s) per key, one message per key, ~{args.open:,} keys open at once",
          file=sys.stderr)
    results = measure_all(sizes, dsl_sizes, all_open, args.open, args.timeout)
    checks = verdicts(results)
    print(f"\nsession_window({GAP:g}s) per key on event time; every message has a key of its own; "
          f"~{args.open:,} keys open at once (all open: every key until the end)\n")
    print(table(results))
    print()
    for check in checks:
        verdict = "PASS" if check.passed else "FAIL"
        print(f"  {verdict}  {check.name}: {check.measured} (target {check.target})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"open": args.open, "gap": GAP, "results": [asdict(r) for r in results],
                       "checks": [asdict(c) for c in checks]}, out, indent=2)
    failed = [c.name for c in checks if not c.passed]
    if failed:
        print(f"bench_session_keys: memory grows with the keys seen: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"bench_session_keys: {error}", file=sys.stderr)
        sys.exit(1)
