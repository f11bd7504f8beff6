"""Every benchmark of minibatch_rx in one run, with its baselines and targets.

One command measures, on the memory store, SQLite and a MongoDB-wire server,
and reports each figure beside a baseline measured in the same run::

    python benchmarks/run_all.py [--quick]

Sections (each writes a table into ``benchmarks/RESULTS.md``):

1. **Append throughput**: ``Stream.append`` (single) and ``Stream.extend``
   (batches of 1,000) against the raw driver limit (``sqlite3`` autocommitted
   ``INSERT`` / ``executemany``; pymongo ``insert_one`` / ``insert_many``), with
   the functions of ``bench_append.py``.
2. **End-to-end throughput**: a producer process appends N messages
   (``Stream.extend``, batches of 1,000) while a consumer process runs
   ``stream(name).count_window(100).sink(fn).run(consumer=..., max_windows=N // 100)``;
   messages/s from the producer's first append to the consumer function's
   last window (wall clock, ``time.time()`` in both processes).
3. **Cross-process latency**: the producer appends ``{"t": time.time()}``
   one message at a time at a fixed pace; the consumer process runs
   ``count_window(1)`` and its function records ``time.time() - t``; p50 and
   p99 over the samples after a warm-up.
4. **In-process overhead**: pre-built ``Message`` objects through
   ``reactivex.from_iterable(...).pipe(count_window(100), ops.map(len))`` against
   the same chain in plain reactivex (``ops.buffer_with_count(100)``), in
   alternating rounds; the ratio of the medians. For information, the full
   DSL path (``stream(...).count_window(100).map(len).run(...)``) on the
   memory store.
5. **The original minibatch 0.6.0** on the same MongoDB-wire server and the
   same workloads as sections 2 and 3 (``@streaming(name, size=N, url=...)``),
   compared with minibatch_rx: throughput and latency ratios. The original is
   run with its defaults (see ``ORIGINAL_NOTES``); if it is not installed or
   fails, the error is reported and the other sections still run.
6. **Consumer peak memory against backlog size**, with the subprocess
   approach and functions of ``bench_backlog_memory.py``.
7. **Time windows beside bytewax and raw reactivex**, with ``bench_windows.py``:
   200,000 out-of-order events over 1,000 keys in 10 s windows, every engine in
   the same run; the keyed event-time DSL against bytewax, the ingest-time
   DSL windows against ``buffer_with_count(100)``; threads during a run.
8. **Session windows over 1,000,000 distinct keys**, with
   ``bench_session_keys.py``: peak memory (traced and RSS) stays flat across
   the keys seen, while a run with every key open at once grows.
9. **CEP patterns beside a hand-written state machine**, with the functions
   of ``bench_cep.py``: a three-step pattern with ``within`` over 1,000,000
   events on 1,000 keys through a hand-written per-key machine (the
   baseline), the NFA engine, the ``PatternCore`` stage and, for
   information, whole pipelines; then the stage's peak memory at 100,000
   and 1,000,000 events.
10. **Many streams, latency beside Redis, the read path** (issue 12), with
   ``bench_streams.py``: 1, 10 and 100 pipelines in one consumer process fed
   round-robin by a producer process (end-to-end msg/s), and their idle CPU
   and threads (peer: a Redis client blocked on 100 streams); cross-process
   latency with the children of section 3 beside Redis Streams (``XADD`` /
   ``XREADGROUP BLOCK`` + ``XACK``, a redis-server started on a free loopback
   port without persistence and with ``appendfsync always``); a
   ``count_window(100)`` pipeline over a 200,000-message backlog against the
   raw ``SELECT`` + ``json.loads`` read of the same file; end to end with count
   windows of 1, 100 and 1,000; and ``bench_producer.py``'s buffered producer.
   Without redis-server or the ``redis`` client the Redis peers are skipped
   with a note. Also draws ``streams.png``.
11. **Consumer groups: scaling with members** (issue 14), with
   ``bench_groups.py``: a CPU-bound function (0.05 s of CPU per window) run
   by groups of 1, 2 and 4 member processes on SQLite, for count windows
   leased one by one and for keyed event-time windows shared by key
   partition; speed-up against one member beside the cores used, the
   other load on the machine and the cores available; and the time a
   keyed group takes to hand a SIGKILLed member's partitions to the survivor.

Every target of the project (``TARGETS`` in the report) is printed beside the
measured value with PASS or FAIL. The script writes ``benchmarks/RESULTS.md``
and, if matplotlib is installed (the ``bench`` extra), ``benchmarks/results.png``.
It exits non-zero if a benchmark fails (an exception, a self-check), not
when a target is missed.

``--sections`` runs some sections only. If ``RESULTS.md`` already exists in
the output directory, they are merged into it: the sections run replace
theirs, the others stay as the earlier runs wrote them (the header names
every run and what it measured; a comment at the end of the file records
which run wrote which section). Sections 2, 3 and 5 share tables, so
``e2e``, ``latency`` and ``original`` are replaced together: those of them
not rerun are dropped. ``--fresh`` writes only the sections run. The plot is
redrawn only when none of the sections it shows come from an earlier run.

MongoDB: ``MINIBATCH_TEST_MONGO_URL`` if set, else the SecantusDB test server
(``tests/mongo_server.py``, from the ``dev`` extra) started and stopped by this
script. Each measurement uses a fresh database, dropped afterwards; SQLite
files live in a temporary directory removed at the end. SecantusDB is a
Python server, far slower than ``mongod``: its MongoDB numbers compare
implementations on the same server, they are not MongoDB's speed.

Usage::

    python benchmarks/run_all.py                 # about 9 minutes
    python benchmarks/run_all.py --quick         # about 2 minutes
    python benchmarks/run_all.py --sections cep  # about 3 minutes, merged into RESULTS.md
    python benchmarks/run_all.py --sections streams  # about 4 minutes, merged into RESULTS.md
    python benchmarks/run_all.py --sections groups   # about 2 minutes, merged into RESULTS.md
    python benchmarks/run_all.py --sections e2e,latency --output /tmp/out
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import queue
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_append, bench_backlog_memory  # noqa: E402

if TYPE_CHECKING:  # imported where measured: they load minibatch_rx, which children may not need
    from benchmarks import bench_cep, bench_groups, bench_session_keys, bench_streams, bench_windows

HERE = Path(__file__).resolve().parent
SECTIONS = (
    "append",
    "e2e",
    "latency",
    "overhead",
    "original",
    "memory",
    "windows",
    "sessions",
    "cep",
    "streams",
    "groups",
)
WINDOW = 100  # count window of the throughput runs
PRODUCER_BATCH = 1000  # messages per Stream.extend of the throughput producers
CONSUMER = "bench"
CHILD_TIMEOUT = 600.0  # seconds a benchmark subprocess may take
READY_TIMEOUT = 60.0  # seconds a consumer subprocess may take to start
SETTLE = 0.3  # seconds between a consumer's "ready" and the producer's start

Report = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (full or ``--quick``)."""

    append: dict[str, bench_append.Sizes]
    e2e: dict[str, int]  # messages per store
    e2e_repeats: int  # runs per store; the median one is reported
    latency_samples: dict[str, int]  # measured samples per store
    latency_warmup: int
    latency_pace: dict[str, float]  # seconds between two appends, per store
    overhead_messages: int
    overhead_rounds: int
    backlog_sizes: tuple[int, ...]
    windows_events: int  # bench_windows: events, rounds
    windows_rounds: int
    session_sizes: tuple[int, ...]  # bench_session_keys: keys of the operator runs (the largest all open too)
    session_dsl_sizes: tuple[int, ...]  # and of the DSL runs
    original_e2e: int  # messages of the throughput comparison with the original
    original_samples: int  # latency samples of the comparison with the original
    original_pace: float  # seconds between two appends there
    cep_events: int  # bench_cep: events of the in-process rows
    cep_pipeline_events: int  # and of the pipeline rows
    cep_rounds: int
    cep_memory_sizes: tuple[int, ...]  # events of the traced stage runs
    streams: str  # bench_streams' sizes: "full" or "quick"
    groups: tuple[str, ...]  # bench_groups' command line


FULL = Plan(
    append=bench_append.SIZES,
    e2e={"sqlite": 200_000, "mongodb": 5_000},
    e2e_repeats=3,
    latency_samples={"sqlite": 500, "mongodb": 500},
    latency_warmup=50,
    latency_pace={"sqlite": 0.005, "mongodb": 0.01},
    overhead_messages=200_000,
    overhead_rounds=5,
    backlog_sizes=bench_backlog_memory.SIZES,
    windows_events=200_000,
    windows_rounds=3,
    session_sizes=(10_000, 100_000, 1_000_000),
    session_dsl_sizes=(10_000, 100_000),
    original_e2e=1_000,
    original_samples=500,
    original_pace=0.05,
    cep_events=1_000_000,
    cep_pipeline_events=200_000,
    cep_rounds=3,
    cep_memory_sizes=(100_000, 1_000_000),
    streams="full",
    groups=("--pipeline", "both", "--members", "1,2,4", "--rebalance"),
)
QUICK = Plan(
    append=bench_append.QUICK_SIZES,
    e2e={"sqlite": 50_000, "mongodb": 2_000},
    e2e_repeats=1,
    latency_samples={"sqlite": 200, "mongodb": 200},
    latency_warmup=20,
    latency_pace={"sqlite": 0.005, "mongodb": 0.01},
    overhead_messages=50_000,
    overhead_rounds=3,
    backlog_sizes=bench_backlog_memory.QUICK_SIZES,
    windows_events=50_000,
    windows_rounds=1,
    session_sizes=(10_000, 100_000),
    session_dsl_sizes=(2_000, 10_000),
    original_e2e=500,
    original_samples=100,
    original_pace=0.05,
    cep_events=100_000,
    cep_pipeline_events=20_000,
    cep_rounds=1,
    cep_memory_sizes=(20_000, 100_000),
    streams="quick",
    groups=("--pipeline", "both", "--members", "1,2", "--messages", "1000", "--calibrate", "0.5",
            "--rebalance"),
)
STREAMS_NOTES = (
    "`bench_streams.py` (issue 12), SQLite files (WAL, `synchronous=full`). **Many pipelines**: a consumer "
    "process starts P pipelines `stream(f's{i}').count_window(100).sink(fn).start(consumer='c')`, then a "
    "producer process appends N messages round-robin over the P streams with `Stream.extend` (batches of "
    "1,000); msg/s from the first append to the last window of any stream, median of the runs (the counts "
    "alternate); *threads*: `threading.active_count()` in the consumer while running. **Idle cost**: a fresh "
    "consumer process with P pipelines started on empty streams; CPU time / wall time over a few seconds "
    "without data, and its threads; then each stream gets one window and every pipeline must deliver it. "
    "Peer: one Redis client process in a single `XREAD BLOCK` on P streams (and the redis-server's CPU over "
    "the same span). **Latency**: section 3's children (`count_window(1)`, `fn` records `time.time() - t`) "
    "beside Redis Streams at the same pace: `XADD` in the producer, `XREADGROUP ... BLOCK 0 COUNT 1` then "
    "`XACK` in the consumer, on a redis-server started for the run on a free loopback port, with "
    '`--save "" --appendonly no` and with `--appendonly yes --appendfsync always` (every write on disk '
    "before the reply, as ours). **Read path**: one process fills a stream, then alternates the raw limit "
    "(`SELECT seq, ts, data FROM mb_messages WHERE stream=? AND seq>? ORDER BY seq LIMIT 1000` and "
    "`json.loads` per row, on the same file) with `count_window(100).map(fn).run(max_windows=N // 100)` "
    "(a new consumer each time), after an untimed round of each; median. **Per-window cost**: section 2's "
    "children with count windows of 1, 100 and 1,000. **Buffered producer**: `bench_producer.py`'s run in a "
    "child process. Every consumer checks each message arrives once and in order (seq and payload) and the "
    "committed positions; the Redis consumer checks its order and that nothing is left pending."
)
CEP_FLAT_RATIO = 1.5  # stage peak memory at the most events over the fewest (bench_cep checks 1.25 itself)


def original_notes(plan: Plan) -> str:
    """How the original is run, for RESULTS.md."""
    return (
        "The original runs with its defaults: `@streaming(name, size=N, url=...)` builds a `CountWindow`, "
        "whose loop polls MongoDB (a count of unprocessed `Buffer` documents, `limit(N)`) and sleeps "
        "0.01 s between rounds (`CountWindow.interval`); each window marks its documents processed one "
        "`find_one_and_update` (mongoengine `modify`) at a time, saves a `Window` document, runs the "
        "function in a `ProcessPoolExecutor` (dill-serialised; its workers start with the first window), "
        "then deletes the documents one by one (`keep=False`). The function's result reaches the "
        "consumer process through the `sink=` hook, which stops the emitter (`queue=`) after the last "
        "window. Its producer uses `Stream.get_or_create(name, url=..., batchsize=1000)`, `append` and "
        "`flush` in the throughput run (batched `insert_many`, its best case, like our `extend`) and "
        "plain `append` (one `insert_one`) in the latency run, as ours appends one message at a time "
        "there.\n\n"
        f"Same workloads for both, ours measured right before theirs: throughput with "
        f"{plan.original_e2e:,} messages, latency with one message every {plan.original_pace * 1000:g} ms "
        f"({plan.original_samples:,} samples after {plan.latency_warmup} warm-up messages). Both are "
        "smaller or slower than in sections 2 and 3 because of the original's speed on this server: at "
        "5 ms it cannot keep up (one window per round of 0.01 s sleep plus about eight round trips), so "
        "its latency would grow without bound; and the test server's `find_one_and_update` scans the "
        "collection (see the probe below), so the original's cost per window grows with the backlog "
        "and 5,000 messages would take minutes. That server trait slows the original more than a real "
        "`mongod` would. The test server announces a replica set, so our MongoDB reader waits on a "
        "change stream."
    )


# -- subprocesses -------------------------------------------------------------------
class Child:
    """This script (or ``script``, another benchmark with the same ``--child``
    entry point) run as ``--child MODE PARAMS`` in its own process group.

    Its stdout lines are collected by a thread (so the parent can wait for a
    ``ready`` line with a timeout); stderr goes to a temporary file, shown if
    the child fails. The last stdout line of a finished child is its JSON report.
    """

    def __init__(self, mode: str, params: Report, script: Path | None = None) -> None:
        self.mode = mode
        self.stderr: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by kill()
        self.process = subprocess.Popen(
            [sys.executable, str(script or Path(__file__).resolve()), "--child", mode, json.dumps(params)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def error_text(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().strip()
        return "\n".join(text.splitlines()[-40:])

    def wait_for(self, expected: str, timeout: float) -> None:
        """Wait for the stdout line ``expected``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.mode}: no {expected!r} line within {timeout:g} s") from None
            if line is None:
                self.process.wait()
                raise RuntimeError(
                    f"{self.mode} exited with {self.process.returncode} before {expected!r}:\n"
                    + self.error_text()
                )
            self.output.append(line)
            if line == expected:
                return

    def result(self, timeout: float) -> Report:
        """Wait for the child to exit and return its JSON report."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.mode} did not finish within {timeout:g} s") from None
        self.pump.join(5)
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        if self.process.returncode != 0:
            raise RuntimeError(f"{self.mode} exited with {self.process.returncode}:\n{self.error_text()}")
        for line in reversed(self.output):
            if line.startswith("{"):
                report: Report = json.loads(line)
                return report
        raise RuntimeError(f"{self.mode} printed no report:\n{self.error_text()}")

    def kill(self) -> None:
        """Kill the child and everything it started (its own process group)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()


def run_pair(
    consumer: tuple[str, Report], producer: tuple[str, Report], script: Path | None = None
) -> tuple[Report, Report]:
    """Start the consumer, wait until it is ready, run the producer, and return
    both reports (consumer, producer). Both processes are killed on any error.
    ``script``: the benchmark whose ``--child`` modes these are (default: this one)."""
    with contextlib.ExitStack() as stack:
        cons = Child(*consumer, script=script)
        stack.callback(cons.kill)
        cons.wait_for("ready", READY_TIMEOUT)
        time.sleep(SETTLE)
        prod = Child(*producer, script=script)
        stack.callback(prod.kill)
        produced = prod.result(CHILD_TIMEOUT)
        consumed = cons.result(CHILD_TIMEOUT)
        return consumed, produced


def emit(report: Report) -> None:
    print(json.dumps(report), flush=True)


# -- children: minibatch_rx ---------------------------------------------------------
def child_producer(params: Report) -> None:
    """Append ``n`` documents with ``Stream.extend`` in batches (after ``ready``)."""
    from minibatch_rx.store import close_all
    from minibatch_rx.streams import Stream

    target = Stream.get_or_create(params["stream"], params["url"])
    docs = bench_append.make_docs(params["n"])
    batches = list(bench_append.chunks(docs, params["batch"]))
    started = time.time()
    for batch in batches:
        target.extend(batch)
    finished = time.time()
    close_all()
    emit({"t_first": started, "t_done": finished})


def child_consumer(params: Report) -> None:
    """``count_window(window).sink(fn).run(max_windows=n // window)``; ``fn`` records
    the time of the last window and checks that the messages come in seq order."""
    from minibatch_rx import stream
    from minibatch_rx.store import close_all

    n, window = params["n"], params["window"]
    state: dict[str, Any] = {"messages": 0, "last": 0, "t_first": 0.0, "t_last": 0.0, "in_order": True}

    def consume(w: Any) -> None:
        now = time.time()
        if not state["messages"]:
            state["t_first"] = now
        state["in_order"] = state["in_order"] and w.first_seq == state["last"] + 1
        state["last"] = w.last_seq
        state["messages"] += len(w)
        state["t_last"] = now

    source = stream(params["stream"], params["url"])
    pipeline = source.count_window(window).sink(consume)
    print("ready", flush=True)
    handle = pipeline.run(consumer=CONSUMER, max_windows=n // window)
    committed = source.position(CONSUMER)
    close_all()
    emit({**state, "windows": handle.windows, "position": handle.position, "committed": committed})


def paced_appends(append: Callable[[dict[str, Any]], Any], pace: float, total: int) -> Report:
    """Call ``append({"i": i, "t": time.time()})`` ``total`` times, one every
    ``pace`` seconds on an absolute schedule; report the append durations and
    how many appends started late (the previous one overran the pace)."""
    late = 0
    durations: list[float] = []
    start = time.monotonic()
    for i in range(total):
        delay = start + i * pace - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late += 1
        sent = time.time()
        append({"i": i, "t": sent})
        durations.append(time.time() - sent)
    return {"late": late, "append_seconds": durations}


def child_latency_producer(params: Report) -> None:
    """Append ``{"i", "t": time.time()}`` one at a time, one every ``pace`` seconds."""
    from minibatch_rx.store import close_all
    from minibatch_rx.streams import Stream

    target = Stream.get_or_create(params["stream"], params["url"])
    pace, total = params["pace"], params["warmup"] + params["samples"]
    emit(paced_appends(target.append, pace, total))
    close_all()


def child_latency_consumer(params: Report) -> None:
    """``count_window(1)``; the function records delivery time - send time."""
    from minibatch_rx import stream
    from minibatch_rx.store import close_all

    latencies: list[float] = []
    order: list[int] = []

    def consume(w: Any) -> None:
        now = time.time()
        data = w.data[0]
        latencies.append(now - data["t"])
        order.append(data["i"])

    total = params["warmup"] + params["samples"]
    pipeline = stream(params["stream"], params["url"]).count_window(1).sink(consume)
    print("ready", flush=True)
    pipeline.run(consumer=CONSUMER, max_windows=total)
    close_all()
    emit({"latencies": latencies, "order": order})


# -- children: the original minibatch -------------------------------------------------
class _OriginalSink:
    """The original's ``sink=`` hook: collects the function's results in the
    consumer process and stops the emitter (through its ``queue=``) at the end."""

    def __init__(self, windows: int, stop: queue.Queue[bool]) -> None:
        self.windows = windows
        self.stop = stop
        self.results: list[Any] = []

    def put(self, value: Any) -> None:
        self.results.append(value)
        if len(self.results) == self.windows:
            self.stop.put(True)


def _original_package() -> Any:
    """The original ``minibatch`` module (untyped, so typed ``Any`` here)."""
    import minibatch  # type: ignore[import-untyped]

    return minibatch


def _original_window(window: Any) -> dict[str, Any]:
    """The original's window function (runs in its process pool)."""
    now = time.time()
    data = window.data
    return {"t": now, "n": len(data), "i": [d["i"] for d in data], "lat": now - data[0].get("t", now)}


def child_original_producer(params: Report) -> None:
    """The original's producer: ``append`` per message, batched by its
    ``batchsize`` option when ``batch`` > 1 (then ``flush``)."""
    minibatch = _original_package()

    target = minibatch.Stream.get_or_create(params["stream"], url=params["url"], batchsize=params["batch"])
    docs = bench_append.make_docs(params["n"])
    started = time.time()
    for doc in docs:
        target.append(doc)
    target.flush()
    emit({"t_first": started, "t_done": time.time()})
    sys.stdout.flush()
    os._exit(0)  # mongoengine/pymongo threads of the original must not delay the exit


def child_original_latency_producer(params: Report) -> None:
    """The original's producer for latency: one ``append`` (``insert_one``) per message."""
    minibatch = _original_package()

    target = minibatch.Stream.get_or_create(params["stream"], url=params["url"])
    pace, total = params["pace"], params["warmup"] + params["samples"]
    emit(paced_appends(target.append, pace, total))
    sys.stdout.flush()
    os._exit(0)


def child_original_consumer(params: Report) -> None:
    """``@streaming(name, size=window, url=url, sink=..., queue=...)`` until
    ``windows`` windows came back."""
    minibatch = _original_package()

    stop: queue.Queue[bool] = queue.Queue()
    sink = _OriginalSink(params["windows"], stop)
    minibatch.Stream.get_or_create(params["stream"], url=params["url"])
    print("ready", flush=True)

    @minibatch.streaming(  # type: ignore[untyped-decorator]
        params["stream"], size=params["window"], url=params["url"], sink=sink, queue=stop
    )
    def process(window: Any) -> dict[str, Any]:
        return _original_window(window)

    results = sink.results
    emit(
        {
            "windows": len(results),
            "messages": sum(r["n"] for r in results),
            "t_first": min((r["t"] for r in results), default=0.0),
            "t_last": max((r["t"] for r in results), default=0.0),
            "latencies": [r["lat"] for r in results],
            "order": [i for r in results for i in r["i"]],
        }
    )
    sys.stdout.flush()
    os._exit(0)


CHILDREN: dict[str, Callable[[Report], None]] = {
    "producer": child_producer,
    "consumer": child_consumer,
    "latency-producer": child_latency_producer,
    "latency-consumer": child_latency_consumer,
    "original-producer": child_original_producer,
    "original-latency-producer": child_original_latency_producer,
    "original-consumer": child_original_consumer,
}


# -- results ------------------------------------------------------------------------
@dataclass
class Throughput:
    """One end-to-end run: producer process -> count window -> consumer process."""

    store: str
    implementation: str
    messages: int
    window: int
    seconds: float  # producer's first append -> consumer's last window
    producer_seconds: float
    all_rates: list[float] = field(default_factory=list)  # every repeat's end-to-end msg/s

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def producer_rate(self) -> float:
        return self.messages / self.producer_seconds if self.producer_seconds else 0.0


@dataclass
class Latency:
    """One latency run: append -> window delivered to the consumer function."""

    store: str
    implementation: str
    pace: float
    latencies: list[float]  # seconds, samples after warm-up, in send order
    append_seconds: list[float]  # how long each of those appends took in the producer
    late_sends: int

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        """The nearest-rank ``q``-th percentile of the latencies (or ``values``), in ms."""
        ordered = sorted(self.latencies if values is None else values)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[index] * 1000

    @property
    def append_p50(self) -> float:
        return self.percentile(50, self.append_seconds)

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.latencies) * 1000

    @property
    def max(self) -> float:
        return max(self.latencies) * 1000


@dataclass
class Overhead:
    """Section 4: our operator chain against plain reactivex, and the DSL."""

    messages: int
    ours: list[float]  # seconds per round
    raw: list[float]
    dsl: list[float]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ours) / statistics.median(self.raw)

    def rate(self, times: list[float]) -> float:
        return self.messages / statistics.median(times)


@dataclass
class Target:
    """One target of the project beside what this run measured."""

    name: str
    target: str
    measured: str
    passed: bool | None  # None: not measured
    section: str  # the entry of SECTIONS that measures it


@dataclass
class Run:
    """Everything one run of the script measured."""

    quick: bool
    started: dt.datetime
    environment: dict[str, str] = field(default_factory=dict)
    append: list[bench_append.Result] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    latency: list[Latency] = field(default_factory=list)
    overhead: Overhead | None = None
    backlog: list[bench_backlog_memory.Result] = field(default_factory=list)
    windows: bench_windows.Report | None = None
    sessions: list[bench_session_keys.Result] = field(default_factory=list)
    cep: bench_cep.Report | None = None
    streams: bench_streams.Report | None = None
    groups: bench_groups.Report | None = None
    original_error: str | None = None
    probe: list[tuple[int, str, float]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def find_throughput(
        self, store: str, implementation: str, messages: int | None = None
    ) -> Throughput | None:
        return next(
            (
                t
                for t in self.throughput
                if t.store == store and t.implementation == implementation and messages in (None, t.messages)
            ),
            None,
        )

    def find_latency(self, store: str, implementation: str, pace: float | None = None) -> Latency | None:
        return next(
            (
                t
                for t in self.latency
                if t.store == store and t.implementation == implementation and pace in (None, t.pace)
            ),
            None,
        )

    def compared(self) -> tuple[Throughput | None, Throughput | None, Latency | None, Latency | None]:
        """Ours and the original's throughput and latency on the same workloads."""
        theirs_t, theirs_l = self.find_throughput("mongodb", ORIGINAL), self.find_latency("mongodb", ORIGINAL)
        ours_t = self.find_throughput("mongodb", OURS, theirs_t.messages) if theirs_t else None
        ours_l = self.find_latency("mongodb", OURS, theirs_l.pace) if theirs_l else None
        return ours_t, theirs_t, ours_l, theirs_l


OURS = "minibatch_rx"
ORIGINAL = "minibatch 0.6.0"


# -- section 2 and 3: minibatch_rx across processes ----------------------------------
@contextlib.contextmanager
def fresh_store(store: str, workdir: Path, mongo: str | None, tag: str) -> Iterator[str]:
    """A fresh store URL for one measurement: a new SQLite file or MongoDB
    database, removed (dropped) afterwards."""
    if store == "sqlite":
        path = workdir / f"{tag}-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite://{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if mongo is None:
        raise RuntimeError("no MongoDB server")
    url, drop = fresh_mongo(mongo, tag)
    try:
        yield url
    finally:
        drop()


def fresh_mongo(mongo: str, tag: str) -> tuple[str, Callable[[], None]]:
    return mongo_database(mongo, f"mbrun_{tag}_{uuid.uuid4().hex[:8]}")


def mongo_database(base_url: str, database: str) -> tuple[str, Callable[[], None]]:
    """``base_url`` pointed at ``database``, and a function that drops it."""
    import pymongo

    prefix, _, query = base_url.partition("?")
    scheme, rest = prefix.split("://", 1)
    host = rest.split("/", 1)[0]
    url = f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")

    def drop() -> None:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
        try:
            client.drop_database(database)
        finally:
            client.close()

    return url, drop


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark self-check failed: {message}")


CHILD_MODES = {
    OURS: ("consumer", "producer", "latency-consumer", "latency-producer"),
    ORIGINAL: ("original-consumer", "original-producer", "original-consumer", "original-latency-producer"),
}


def measure_throughput(store: str, implementation: str, url: str, n: int, window: int = WINDOW) -> Throughput:
    """One producer process appends ``n`` messages in batches while one consumer
    process takes them in count windows of ``window``."""
    consumer, producer, _, _ = CHILD_MODES[implementation]
    params = {
        "url": url,
        "stream": "e2e",
        "n": n,
        "window": window,
        "batch": PRODUCER_BATCH,
        "windows": n // window,
    }
    consumed, produced = run_pair((consumer, params), (producer, params))
    what = f"{implementation} on {store}"
    check(consumed["messages"] == n, f"{what}: the consumer saw {consumed['messages']:,} of {n:,} messages")
    if implementation == OURS:
        check(consumed["windows"] == n // window, f"{what}: {consumed['windows']} of {n // window} windows")
        check(consumed["committed"] == n, f"{what}: committed position {consumed['committed']} of {n}")
        check(consumed["in_order"], f"{what}: windows out of seq order")
    else:
        check(sorted(consumed["order"]) == list(range(n)), f"{what}: messages lost or duplicated")
    return Throughput(
        store,
        implementation,
        n,
        window,
        seconds=consumed["t_last"] - produced["t_first"],
        producer_seconds=produced["t_done"] - produced["t_first"],
    )


def measure_latency(
    store: str, implementation: str, url: str, warmup: int, samples: int, pace: float
) -> Latency:
    """One message every ``pace`` seconds from a producer process to a
    ``count_window(1)`` consumer process; the samples after ``warmup``."""
    _, _, consumer, producer = CHILD_MODES[implementation]
    total = warmup + samples
    params = {
        "url": url,
        "stream": "latency",
        "window": 1,
        "windows": total,
        "warmup": warmup,
        "samples": samples,
        "pace": pace,
    }
    consumed, produced = run_pair((consumer, params), (producer, params))
    what = f"{implementation} on {store}"
    check(len(consumed["latencies"]) == total, f"{what}: {len(consumed['latencies'])} samples of {total}")
    check(sorted(consumed["order"]) == list(range(total)), f"{what}: messages lost or duplicated")
    if implementation == OURS:
        check(consumed["order"] == list(range(total)), f"{what}: messages out of order")
    return Latency(
        store,
        implementation,
        pace,
        latencies=consumed["latencies"][warmup:],
        append_seconds=produced["append_seconds"][warmup:],
        late_sends=produced["late"],
    )


# -- section 4: in-process overhead --------------------------------------------------
def measure_overhead(n: int, rounds: int) -> Overhead:
    """Our count_window + map against buffer_with_count + map, and the DSL on memory."""
    import reactivex
    from reactivex import operators as ops

    from minibatch_rx import stream
    from minibatch_rx.message import Message
    from minibatch_rx.store import close_all
    from minibatch_rx.windows import count_window

    ts = dt.datetime.now(dt.UTC)
    messages = [Message("overhead", i, ts, doc) for i, doc in enumerate(bench_append.make_docs(n), 1)]
    windows = n // WINDOW

    def ours() -> float:
        out: list[int] = []
        started = time.perf_counter()
        reactivex.from_iterable(messages).pipe(count_window(WINDOW), ops.map(len)).subscribe(out.append)
        seconds = time.perf_counter() - started
        check(len(out) == windows and sum(out) == n, f"ours emitted {len(out)} windows")
        return seconds

    def raw() -> float:
        out: list[int] = []
        started = time.perf_counter()
        reactivex.from_iterable(messages).pipe(ops.buffer_with_count(WINDOW), ops.map(len)).subscribe(
            out.append
        )
        seconds = time.perf_counter() - started
        check(len(out) == windows and sum(out) == n, f"raw emitted {len(out)} windows")
        return seconds

    source = stream("overhead", "memory://run-all-overhead")
    for batch in bench_append.chunks(bench_append.make_docs(n), PRODUCER_BATCH):
        source.extend(batch)

    def dsl(round_: int) -> float:
        consumer = f"dsl-{round_}"
        started = time.perf_counter()
        handle = source.count_window(WINDOW).map(len).run(consumer=consumer, max_windows=windows)
        seconds = time.perf_counter() - started
        check(handle.windows == windows and handle.position == n, f"DSL ran {handle.windows} windows")
        return seconds

    ours(), raw()  # warm-up
    result = Overhead(n, [], [], [])
    gc.collect()
    for r in range(rounds):
        result.ours.append(ours())
        result.raw.append(raw())
        result.dsl.append(dsl(r))
    close_all()
    return result


# -- section 5: the original minibatch ------------------------------------------------
def original_version() -> str | None:
    try:
        return metadata.version("minibatch")
    except metadata.PackageNotFoundError:
        return None


def measure_original(run: Run, plan: Plan, mongo: str) -> None:
    """The comparison with the original on ``mongo``: ours, then theirs, on the
    same workloads (throughput of ``plan.original_e2e`` messages, latency at
    ``plan.original_pace``); appends to ``run``."""
    version = original_version()
    if version is None:
        run.original_error = (
            "minibatch is not installed: pip install minibatch==0.6.0 (or the `bench` extra); "
            "its imports need mongoengine and dill"
        )
        return
    if version != "0.6.0":
        print(f"note: minibatch {version} installed, not 0.6.0", file=sys.stderr)
    run.probe = probe_server(mongo)
    for implementation in (OURS, ORIGINAL):
        try:
            print(f"   {implementation}: throughput ...", file=sys.stderr, flush=True)
            with fresh_store("mongodb", Path(), mongo, "e2e") as url:
                run.throughput.append(measure_throughput("mongodb", implementation, url, plan.original_e2e))
            print(f"   {implementation}: latency ...", file=sys.stderr, flush=True)
            with fresh_store("mongodb", Path(), mongo, "latency") as url:
                run.latency.append(
                    measure_latency(
                        "mongodb",
                        implementation,
                        url,
                        plan.latency_warmup,
                        plan.original_samples,
                        plan.original_pace,
                    )
                )
        except Exception as exc:
            if implementation == OURS:
                raise
            # The original failing is a result to report, not an error of this benchmark.
            traceback.print_exc()
            run.original_error = f"{type(exc).__name__}: {exc}"


PROBE_SIZES = (100, 1_000, 2_000)
PROBE_CALLS = 20


def probe_server(mongo: str) -> list[tuple[int, str, float]]:
    """Milliseconds per call of the operations the original uses per message,
    by ``_id``, on collections of ``PROBE_SIZES`` documents: (size, operation, ms)."""
    import pymongo

    url, drop = fresh_mongo(mongo, "probe")
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    out: list[tuple[int, str, float]] = []
    try:
        database = client.get_default_database()
        for size in PROBE_SIZES:
            collection = database[f"probe{size}"]
            ids = collection.insert_many([{"i": i, "processed": False} for i in range(size)]).inserted_ids
            for name in ("find_one", "update_one", "find_one_and_update", "delete_one"):
                started = time.perf_counter()
                for x in ids[:PROBE_CALLS]:
                    if name == "find_one":
                        collection.find_one({"_id": x})
                    elif name == "update_one":
                        collection.update_one({"_id": x}, {"$set": {"processed": True}})
                    elif name == "find_one_and_update":
                        collection.find_one_and_update({"_id": x}, {"$set": {"processed": True}})
                    else:
                        collection.delete_one({"_id": x})
                out.append((size, name, (time.perf_counter() - started) / PROBE_CALLS * 1000))
    finally:
        client.close()
        drop()
    return out


# -- section 6: backlog memory --------------------------------------------------------
def measure_backlog(sizes: Sequence[int], workdir: Path) -> list[bench_backlog_memory.Result]:
    results = []
    for size in sizes:
        result, _ = bench_backlog_memory.measure(size, workdir, "full", CHILD_TIMEOUT, trace=False)
        results.append(result)
    return results


# -- sections 7 and 8: time windows, session keys ---------------------------------------
def measure_windows(plan: Plan) -> bench_windows.Report:
    from benchmarks import bench_windows

    return bench_windows.run_benchmark(plan.windows_events, plan.windows_rounds)


def measure_sessions(plan: Plan) -> list[bench_session_keys.Result]:
    from benchmarks import bench_session_keys

    sizes = plan.session_sizes
    return bench_session_keys.measure_all(sizes, plan.session_dsl_sizes, max(sizes), bench_session_keys.OPEN)


def render_windows(run: Run) -> str:
    from benchmarks import bench_windows

    return "" if run.windows is None else bench_windows.render(run.windows)


def render_sessions(run: Run) -> str:
    from benchmarks import bench_session_keys

    return bench_session_keys.table(run.sessions) if run.sessions else ""


def session_verdicts(run: Run) -> list[bench_session_keys.Verdict]:
    from benchmarks import bench_session_keys

    return bench_session_keys.verdicts(run.sessions)


# -- section 11: consumer groups ---------------------------------------------------------
def measure_groups(plan: Plan) -> bench_groups.Report:
    """``bench_groups.py`` with the plan's command line (its self-checks raise)."""
    from benchmarks import bench_groups

    return bench_groups.run_benchmark(bench_groups.parse_args(plan.groups))


def render_groups(report: bench_groups.Report | None) -> str:
    """Section 11's tables (empty without them)."""
    if report is None:
        return ""
    from benchmarks import bench_groups

    return bench_groups.markdown(report)


# -- section 9: CEP patterns ------------------------------------------------------------
def measure_cep(plan: Plan) -> bench_cep.Report:
    """``bench_cep.py``'s rows and memory runs at the plan's sizes (its self-checks raise)."""
    from benchmarks import bench_cep

    return bench_cep.run_benchmark(
        plan.cep_events, plan.cep_pipeline_events, plan.cep_rounds, plan.cep_memory_sizes
    )


def render_cep(report: bench_cep.Report) -> str:
    """Section 9's tables: events/s per row and the stage's traced peak memory."""
    from benchmarks import bench_cep

    return (
        f"{report.events:,} events over {bench_cep.KEYS:,} keys (pipelines: {report.pipeline_events:,}); "
        f"{report.matches:,} matches and {report.timeouts:,} timeouts, the same in every row; events/s, "
        f"median of up to {report.rounds} runs\n\n{bench_cep.table(report)}\n\n"
        "Peak memory of the stage (tracemalloc), messages generated as fed:\n\n"
        f"{bench_cep.memory_table(report)}"
    )


def cep_targets(report: bench_cep.Report) -> list[Target]:
    """Section 9's targets: engine and stage events/s, the engine against the
    hand-written per-key machine, and the stage's memory from the fewest events to the most."""
    from benchmarks import bench_cep

    engine, stage = report.eps(bench_cep.ENGINE), report.eps(bench_cep.STAGE)
    hand = report.eps(bench_cep.HAND)

    def rate(name: str, eps: float | None) -> Target:
        return Target(
            f"CEP {name}, {report.events:,} events",
            f">= {bench_cep.TARGET_EPS:,.0f} events/s",
            "-" if eps is None else f"{eps:,.0f} events/s",
            None if eps is None else eps >= bench_cep.TARGET_EPS,
            "cep",
        )

    relative = engine / hand if engine is not None and hand else None
    out = [
        rate("engine (per-key NFA runs)", engine),
        Target(
            "CEP engine / hand-written per-key machine",
            f">= {bench_cep.TARGET_RATIO:g}x",
            "-" if relative is None else f"{relative:.2f}x ({engine:,.0f} vs {hand:,.0f} events/s)",
            None if relative is None else relative >= bench_cep.TARGET_RATIO,
            "cep",
        ),
        rate("stage (PatternCore)", stage),
    ]
    if len(report.memory) >= 2:
        few, most = report.memory[0], report.memory[-1]
        ratio = most.peak_mib / few.peak_mib
        out.append(
            Target(
                f"CEP stage peak memory, {most.events:,} / {few.events:,} events",
                f"flat (<= {CEP_FLAT_RATIO:g}x)",
                f"{ratio:.2f}x ({most.peak_mib:.2f} vs {few.peak_mib:.2f} MiB)",
                ratio <= CEP_FLAT_RATIO,
                "cep",
            )
        )
    return out


# -- section 10: many streams, latency beside Redis, the read path ----------------------
def measure_streams(plan: Plan) -> bench_streams.Report:
    """``bench_streams.py``'s parts at the plan's sizes (its self-checks raise)."""
    from benchmarks import bench_streams

    return bench_streams.run_benchmark(bench_streams.FULL if plan.streams == "full" else bench_streams.QUICK)


def render_streams(report: bench_streams.Report | None) -> str:
    """Section 10's tables (its targets go to the targets table)."""
    from benchmarks import bench_streams

    return "" if report is None else bench_streams.render(report, with_targets=False)


def streams_targets(report: bench_streams.Report) -> list[Target]:
    """Section 10's targets, as ``bench_streams.targets`` states them."""
    from benchmarks import bench_streams

    return [Target(t.name, t.wanted, t.measured, t.passed, "streams") for t in bench_streams.targets(report)]


# -- environment ----------------------------------------------------------------------
def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "?"
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {"cores": str(os.cpu_count()), "ram": ram, "cpu": cpu, "os": platform.platform()}


def environment() -> dict[str, str]:
    return {
        **machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pymongo": package_version("pymongo"),
        "reactivex": package_version("reactivex"),
        "minibatch_rx": package_version("minibatch_rx"),
        "minibatch": package_version("minibatch"),
        "mongoengine": package_version("mongoengine"),
        "secantusdb": package_version("secantusdb"),
        "bytewax": package_version("bytewax"),
        "load": load_average(),
    }


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"


# -- targets --------------------------------------------------------------------------
def targets(run: Run) -> list[Target]:
    """Every target of the project, in the order of ``SECTIONS``; those of the sections
    not run are "not measured" (sections 6 to 9: absent)."""
    out: list[Target] = []

    def append_ratio(store: str, name: str, raw: str) -> None:
        result = next((r for r in run.append if r.store == store and r.mode == "extend"), None)
        ratio = result.ratio if result is not None else None
        out.append(
            Target(
                name,
                f">= 50% of raw {raw}",
                "-"
                if ratio is None
                else f"{ratio:.0%} ({fmt_rate(result.rate if result else None)} vs "
                f"{fmt_rate(result.raw_rate if result else None)} msg/s)",
                None if ratio is None else ratio >= 0.5,
                "append",
            )
        )

    append_ratio("sqlite", "SQLite batched append", "executemany")
    append_ratio("mongodb", "MongoDB batched append", "insert_many (same server)")
    e2e = run.find_throughput("sqlite", OURS)
    out.append(
        Target(
            f"SQLite end-to-end, count_window({WINDOW})",
            ">= 100,000 msg/s",
            "-" if e2e is None else f"{e2e.rate:,.0f} msg/s",
            None if e2e is None else e2e.rate >= 100_000,
            "e2e",
        )
    )
    lat = run.find_latency("sqlite", OURS)
    out.append(
        Target(
            "SQLite cross-process latency p50",
            "<= 5 ms",
            "-" if lat is None else f"{lat.p50:.2f} ms",
            None if lat is None else lat.p50 <= 5,
            "latency",
        )
    )
    out.append(
        Target(
            "SQLite cross-process latency p99",
            "<= 25 ms",
            "-" if lat is None else f"{lat.p99:.2f} ms",
            None if lat is None else lat.p99 <= 25,
            "latency",
        )
    )
    ov = run.overhead
    out.append(
        Target(
            "In-process overhead, count_window + map vs raw reactivex",
            "<= 1.5x",
            "-" if ov is None else f"{ov.ratio:.2f}x",
            None if ov is None else ov.ratio <= 1.5,
            "overhead",
        )
    )
    ours_t, theirs_t, ours_l, theirs_l = run.compared()
    ratio_t = ours_t.rate / theirs_t.rate if ours_t and theirs_t else None
    out.append(
        Target(
            "vs minibatch 0.6.0: end-to-end throughput (MongoDB)",
            ">= 10x",
            "-"
            if ratio_t is None or not ours_t or not theirs_t
            else f"{ratio_t:.1f}x ({ours_t.rate:,.0f} vs {theirs_t.rate:,.0f} msg/s)",
            None if ratio_t is None else ratio_t >= 10,
            "original",
        )
    )
    ratio_l = theirs_l.p50 / ours_l.p50 if ours_l and theirs_l else None
    out.append(
        Target(
            "vs minibatch 0.6.0: latency p50 (MongoDB)",
            ">= 10x lower",
            "-"
            if ratio_l is None or not ours_l or not theirs_l
            else f"{ratio_l:.1f}x lower ({ours_l.p50:.1f} vs {theirs_l.p50:.1f} ms)",
            None if ratio_l is None else ratio_l >= 10,
            "original",
        )
    )
    if len(run.backlog) >= 2:
        small, large = run.backlog[0], run.backlog[-1]
        ratio_m = large.peak_rss_kib / small.peak_rss_kib
        out.append(
            Target(
                f"Consumer peak RSS, backlog {large.backlog:,} / {small.backlog:,}",
                f"<= {bench_backlog_memory.TARGET_RATIO}",
                f"{ratio_m:.2f}",
                ratio_m <= bench_backlog_memory.TARGET_RATIO,
                "memory",
            )
        )
    if run.windows is not None:
        for t in run.windows.targets():
            out.append(
                Target(
                    f"Time windows: {t.name}",
                    t.wanted,
                    "-" if t.ratio is None else f"{t.ratio:.2f}x",
                    t.passed,
                    "windows",
                )
            )
    for v in session_verdicts(run) if run.sessions else []:
        out.append(Target(f"Session keys, {v.name}", v.target, v.measured, v.passed, "sessions"))
    if run.cep is not None:
        out += cep_targets(run.cep)
    if run.streams is not None:
        out += streams_targets(run.streams)
    return out


def verdict(passed: bool | None) -> str:
    return "not measured" if passed is None else ("PASS" if passed else "FAIL")


# -- report -------------------------------------------------------------------------
def fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def section_append(run: Run) -> str:
    rows = [
        (
            r.store,
            "append (single)" if r.mode == "append" else f"extend ({bench_append.BATCH:,})",
            f"{r.messages:,}",
            fmt_rate(r.rate),
            fmt_rate(r.raw_rate),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
        )
        for r in run.append
    ]
    return table(("store", "mode", "messages", "ours msg/s", "raw msg/s", "ours/raw"), rows)


def section_throughput(run: Run) -> str:
    rows = [
        (
            t.store,
            t.implementation,
            f"{t.messages:,}",
            f"count {t.window}",
            f"{t.producer_seconds:.2f}",
            fmt_rate(t.producer_rate),
            f"{t.seconds:.2f}",
            fmt_rate(t.rate),
            ", ".join(fmt_rate(r) for r in t.all_rates) if len(t.all_rates) > 1 else "-",
        )
        for t in run.throughput
    ]
    return table(
        (
            "store",
            "implementation",
            "messages",
            "window",
            "producer s",
            "producer msg/s",
            "first append -> last window s",
            "end-to-end msg/s",
            "all repeats msg/s",
        ),
        rows,
    )


def section_latency(run: Run) -> str:
    rows = [
        (
            t.store,
            t.implementation,
            f"{t.pace * 1000:g}",
            f"{len(t.latencies):,}",
            f"{t.p50:.2f}",
            f"{t.p99:.2f}",
            f"{t.mean:.2f}",
            f"{t.max:.2f}",
            f"{t.append_p50:.2f}",
            str(t.late_sends),
        )
        for t in run.latency
    ]
    return table(
        (
            "store",
            "implementation",
            "pace ms",
            "samples",
            "p50 ms",
            "p99 ms",
            "mean ms",
            "max ms",
            "append p50 ms",
            "late sends",
        ),
        rows,
    )


def section_overhead(ov: Overhead) -> str:
    raw_median = statistics.median(ov.raw)
    rows = [
        (
            "raw reactivex: `buffer_with_count(100)` + `map`",
            f"{raw_median * 1000:.1f}",
            fmt_rate(ov.rate(ov.raw)),
            "1.00",
        ),
        (
            "ours: `count_window(100)` + `map`",
            f"{statistics.median(ov.ours) * 1000:.1f}",
            fmt_rate(ov.rate(ov.ours)),
            f"{ov.ratio:.2f}",
        ),
        (
            "DSL on memory store: `count_window(100).map(len).run()`",
            f"{statistics.median(ov.dsl) * 1000:.1f}",
            fmt_rate(ov.rate(ov.dsl)),
            f"{statistics.median(ov.dsl) / raw_median:.2f}",
        ),
    ]
    return table(
        (f"chain ({ov.messages:,} messages, median of {len(ov.ours)} rounds)", "ms", "msg/s", "/ raw"), rows
    )


def section_original(run: Run, plan: Plan) -> str:
    parts = [original_notes(plan)]
    if run.original_error:
        parts.append(f"**The original did not run:**\n\n```text\n{run.original_error}\n```")
        return "\n\n".join(parts)
    rows = []
    ours_t, theirs_t, ours_l, theirs_l = run.compared()
    if ours_t and theirs_t:
        rows.append(
            (
                f"end-to-end throughput, {ours_t.messages:,} messages, window {WINDOW}",
                f"{ours_t.rate:,.0f} msg/s",
                f"{theirs_t.rate:,.0f} msg/s",
                f"{ours_t.rate / theirs_t.rate:.1f}x faster",
            )
        )
    if ours_l and theirs_l:
        for name, a, b in (("p50", ours_l.p50, theirs_l.p50), ("p99", ours_l.p99, theirs_l.p99)):
            rows.append(
                (
                    f"latency {name}, size 1, one message every {ours_l.pace * 1000:g} ms",
                    f"{a:.2f} ms",
                    f"{b:.2f} ms",
                    f"{b / a:.1f}x lower",
                )
            )
    parts.append(table(("MongoDB-wire test server", OURS, ORIGINAL, "ours vs theirs"), rows))
    if run.probe:
        names = list(dict.fromkeys(name for _, name, _ in run.probe))
        sizes = list(dict.fromkeys(size for size, _, _ in run.probe))
        cells = {(size, name): ms for size, name, ms in run.probe}
        parts.append(
            f"Probe of the server: ms per call by `_id` (pymongo, mean of {PROBE_CALLS} calls) "
            "against the collection's size."
        )
        parts.append(
            table(
                ("documents", *names),
                [(f"{size:,}", *(f"{cells[size, n]:.2f}" for n in names)) for size in sizes],
            )
        )
    return "\n\n".join(parts)


def section_backlog(run: Run) -> str:
    rows = [
        (
            f"{r.backlog:,}",
            f"{r.fill_seconds:.1f}",
            bench_backlog_memory.mib(r.peak_rss_kib),
            bench_backlog_memory.mib(r.vmhwm_kib),
            bench_backlog_memory.mib(r.baseline_peak_rss_kib),
            f"{r.seconds:.1f}",
            fmt_rate(r.rate),
        )
        for r in run.backlog
    ]
    return table(
        ("backlog", "fill s", "consumer peak RSS MiB", "VmHWM MiB", "baseline MiB", "consume s", "msg/s"),
        rows,
    )


def section_blocks(run: Run, plan: Plan) -> dict[int, str]:
    """The numbered sections of RESULTS.md that ``run`` has results for: number -> markdown."""
    blocks: dict[int, str] = {}

    def add(parts: list[str]) -> None:
        text = "\n".join(parts).strip()
        blocks[int(text[3 : text.index(".")])] = text

    if run.append:
        add(
            [
                "",
                "## 1. Append throughput",
                "",
                "`Stream.append` per message and `Stream.extend` in batches of 1,000, against the raw "
                "driver on the same machine with the same documents (`bench_append.py`: sqlite3 "
                "autocommitted `INSERT` / `executemany` in one transaction per batch into a table of the "
                "same shape; pymongo `insert_one` / `insert_many`). Ours and raw alternate over "
                f"{bench_append.ROUNDS} rounds after a warm-up.",
                "",
                section_append(run),
            ]
        )
    if any(t.implementation == OURS for t in run.throughput):
        add(
            [
                "",
                "## 2. End-to-end throughput",
                "",
                f"A producer process appends N messages with `Stream.extend` (batches of {PRODUCER_BATCH:,}) "
                "while a consumer process, started first, runs "
                f"`stream(name).count_window({WINDOW}).sink(fn)"
                f".run(consumer=..., max_windows=N // {WINDOW})`. "
                "Time: from the producer's first append to `fn` receiving the last window (`time.time()` "
                "in both processes). The consumer checks windows arrive in seq order and the committed "
                f"position is N. SQLite runs {plan.e2e_repeats} times (fresh file each) and the median run "
                "is shown.",
                "",
                section_throughput(run),
            ]
        )
    if run.latency:
        add(
            [
                "",
                "## 3. Cross-process latency",
                "",
                f"The producer process appends `{{'i': i, 't': time.time()}}` one message at a time, one "
                "every *pace* ms (on an absolute schedule; *late sends* counts appends that could not keep "
                "it); the consumer process runs `count_window(1).sink(fn)` and `fn` records "
                f"`time.time() - t`. The first {plan.latency_warmup} messages are a warm-up and not counted. "
                "*append p50* is the producer's median `append` call, part of every latency (ours on "
                "MongoDB: two round trips, the end-of-stream lookup and the insert). MongoDB's pace is "
                "10 ms because one append takes several ms on the test server: at 5 ms the producer "
                "could not keep its schedule. The rows at "
                f"{plan.original_pace * 1000:g} ms are the comparison with the original (section 5), at a "
                "pace it keeps up with.",
                "",
                section_latency(run),
            ]
        )
    if run.overhead is not None:
        add(
            [
                "",
                "## 4. In-process overhead",
                "",
                f"{run.overhead.messages:,} pre-built `Message` objects through "
                "`reactivex.from_iterable(msgs).pipe(<window>, ops.map(len))` in one thread, ours and "
                "raw alternating after a warm-up; the DSL row processes the same number of messages, "
                "stored beforehand in a memory store, with `count_window(100).map(len).run(...)` "
                "(reading, windowing, committing the position after every window).",
                "",
                section_overhead(run.overhead),
            ]
        )
    if run.original_error or any(t.implementation == ORIGINAL for t in run.throughput):
        add(["", "## 5. Against the original minibatch 0.6.0", "", section_original(run, plan)])
    if run.backlog:
        add(
            [
                "",
                "## 6. Consumer memory against backlog size",
                "",
                "`bench_backlog_memory.py`: a SQLite store is filled in a subprocess, then a fresh consumer "
                f"subprocess runs `count_window({WINDOW}).map(len).run(...)` over the whole backlog and "
                "reports its peak RSS (`ru_maxrss`; VmHWM from `/proc` as a cross-check). Baseline: a "
                "subprocess that only imports minibatch_rx and opens the store.",
                "",
                section_backlog(run),
            ]
        )
    if run.windows is not None:
        add(
            [
                "",
                "## 7. Time windows beside bytewax and raw reactivex",
                "",
                "`bench_windows.py`: the same events for every engine, in one run: N payloads "
                "`{key, ts, v}` over 1,000 keys arriving one per millisecond with event times up to 3 s "
                "behind arrival (out of order); 10 s windows and a sum of `v` per window. bytewax: "
                "`TestingSource(batch_size=1000)`, `key_on`, `EventClock` (5 s wait), `TumblingWindower`, "
                "`collect_window`. Raw reactivex: `buffer_with_count(100)` on the stored messages. Ours: the "
                "operators on the same messages, and the DSL on a memory store holding the events (ingest "
                "time: each batch of 1,000 stamped with its last arrival), timed from `start()` until the "
                "sink saw every event; the keyed row is bytewax's workload, "
                "`key_by('key').event_time('ts', max_delay='5s').fixed_time_window('10s')`. Every row checks "
                "its counts and sums (bytewax and the keyed row: each (key, window) sum, no late event). "
                "Events/s are input events, median of the runs; engines alternate within each round.",
                "",
                render_windows(run),
            ]
        )
    if run.sessions:
        from benchmarks import bench_session_keys

        add(
            [
                "",
                "## 8. Session windows over many distinct keys: memory",
                "",
                "`bench_session_keys.py`: every message has a key of its own and sessions "
                f"(`session_window('{bench_session_keys.GAP:g}s')` per key, event time) close "
                f"continuously, about {bench_session_keys.OPEN:,} keys open at once; a sentinel closes the "
                "rest. *operator*: the keyed session operator fed one generated message at a time (nothing "
                "else holds them); *dsl*: `key_by('key').event_time('ts').session_window(...).sink(fn)` "
                "on a memory store already holding the messages; *all open*: every message at the same "
                "time, so every key stays open until the end (what keeping all keys would cost). Each run "
                "is a fresh subprocess; RSS growth is its peak RSS during the run over its RSS at the "
                "start (after the store was filled); the traced peak is `tracemalloc`'s during a second, "
                "traced run (operator only: tracing slows the DSL several times). Every run checks each "
                "key's session is emitted once, in order, with its message and bounds, nothing late, and "
                "that the engine's per-key state is empty at the end. Events/s: the flowing runs close "
                "one session per message; the all-open runs close them all in one step at the end.",
                "",
                render_sessions(run),
            ]
        )
    if run.cep is not None:
        from benchmarks import bench_cep

        add(
            [
                "## 9. CEP patterns beside a hand-written state machine",
                "",
                "`bench_cep.py`: the pattern `begin('a').where(type == 'a').followed_by('b')"
                ".where(type == 'b').followed_by('c').where(type == 'c')"
                f".within('{bench_cep.WITHIN:g}s')` (relaxed contiguity, no_skip) over N generated "
                f"events on {bench_cep.KEYS:,} keys: each of type a, b, c or other with equal odds, "
                f"event times 1/{round(1 / bench_cep.TICK)} s apart plus up to {bench_cep.JITTER - 1} "
                "such ticks (slightly out of order, often equal), and a last sentinel "
                f"{bench_cep.SENTINEL_GAP:g} s later that times out every partial match left. "
                "*hand-written HandRun* (the baseline): a dict key -> a small object holding that key's "
                "partial matches, called once per event in time order and returning the matches it "
                "completes and the partial matches that timed out; *inlined*: the same logic in one "
                "loop. *engine*: one `Automaton.run()` per key, `advance(t)` then "
                "`process(event, t, eid)` per event in time order. *stage*: the `PatternCore` that "
                "`.key_by('key').event_time('ts', max_delay="
                f"{bench_cep.JITTER}/{round(1 / bench_cep.TICK)} s, idle=None).match(p)` builds, fed "
                "pre-built messages in arrival order with the calls the window operator makes per "
                "message (it buffers them until the watermark passes). *pipeline* rows, for "
                "information: the whole DSL on a memory or SQLite store already holding the events, "
                "timed from `start()` until the sink and the `timeouts=` target saw every match and "
                "timeout. An untimed run first checks that every in-process row finds the same matches "
                "and timeouts, event for event; every timed run checks its counts (the pipelines: the "
                "matches themselves). The rows alternate within each round. Memory: `tracemalloc`'s "
                "peak during a stage run over each size, the messages generated as they are fed "
                "(nothing else holds them).",
                "",
                render_cep(run.cep),
            ]
        )
    if run.streams is not None:
        add(
            [
                "## 10. Many streams per process, latency beside Redis Streams, the read path",
                "",
                STREAMS_NOTES,
                "",
                render_streams(run.streams),
            ]
        )
    if run.groups is not None:
        from benchmarks import bench_groups

        add(
            [
                "## 11. Consumer groups: scaling with members, CPU-bound function",
                "",
                "`bench_groups.py` (issue 14), SQLite file (`synchronous=full`), as "
                f"`python benchmarks/bench_groups.py {' '.join(plan.groups)}`. Each member is a process; "
                "`process` burns a fixed CPU time per window (a spin on the thread's or process's CPU "
                "clock). Each run: "
                "fresh streams and group, the members started on the empty stream and settled (keyed: "
                "until the partition table shows each member holding its share), then the clock runs "
                "from one `extend` of the whole input until the sink holds every expected output. "
                "Checked after each run: every expected window (count: every source seq) in the sink "
                "exactly once with its messages, and every member processed some. The keyed input has "
                "as many keys in each partition (random keys would add the luck of the hash). "
                "*Ideal* is min(members, cores); *cores used*: the members' CPU time / elapsed; "
                "*other load*: CPU time of every other process on the machine / elapsed (other "
                "people's tests run here too); *cores avail.*: CPU per second that as many plain "
                "spinning processes got just before and after the run.",
                "",
                bench_groups.markdown(run.groups),
            ]
        )
    return blocks


# -- RESULTS.md: the runs that wrote it, merged -----------------------------------------
BLOCK_SECTIONS: dict[int, tuple[str, ...]] = {  # numbered heading -> the sections whose results it shows
    1: ("append",),
    2: ("e2e", "original"),
    3: ("latency", "original"),
    4: ("overhead",),
    5: ("original",),
    6: ("memory",),
    7: ("windows",),
    8: ("sessions",),
    9: ("cep",),
    10: ("streams",),
    11: ("groups",),
}
MONGO_SECTIONS = ("append", "e2e", "latency", "original")  # the sections that start MongoDB
PLOT_SECTIONS = ("append", "e2e", "latency", "overhead", "original")  # the sections results.png shows
STATE_START = "<!-- run_all.py: which run wrote which section, for later --sections runs to merge: "
STATE_END = " -->"
NOT_MEASURED = verdict(None)
KNOWN_HEADINGS = ("Targets", "Errors", "Time per section", "end")  # "end": parse_blocks' sentinel
LEGACY_TARGETS = (  # target name prefix -> section, for a RESULTS.md written before the state comment
    ("SQLite batched append", "append"),
    ("MongoDB batched append", "append"),
    ("SQLite end-to-end", "e2e"),
    ("SQLite cross-process latency", "latency"),
    ("In-process overhead", "overhead"),
    ("vs minibatch 0.6.0", "original"),
    ("Consumer peak RSS", "memory"),
    ("Time windows", "windows"),
    ("Session keys", "sessions"),
    ("CEP ", "cep"),
)  # (section 10, streams, came after the state comment: never in a legacy file)
WRITTEN = re.compile(
    r"^Written by `(?P<command>[^`]+)` on (?P<started>\d{4}-\d\d-\d\d \d\d:\d\d) UTC(?P<quick>[^;]*); "
    r"(?P<seconds>[\d.]+) s in all",
    re.MULTILINE,
)
LOAD = re.compile(r"at the start and the end: (\S+) and (\S+) on (\S+) cores")


def merge_group(section: str) -> set[str]:
    """``section`` and every section sharing a numbered heading with it, transitively:
    their tables mix, so a ``--sections`` run replaces them together."""
    group = {section}
    while True:
        wider = group.union(*(set(shown) for shown in BLOCK_SECTIONS.values() if group & set(shown)))
        if wider == group:
            return group
        group = wider


def label_section(label: str, sections: Sequence[str]) -> str:
    """The section of a "Time per section" or error label (``e2e sqlite`` -> ``e2e``);
    ``start MongoDB`` goes with the first of ``sections`` that uses MongoDB."""
    first = label.split(" ", 1)[0]
    if first in SECTIONS:
        return first
    if label == "start MongoDB":
        return next((s for s in MONGO_SECTIONS if s in sections), "")
    return ""


def section_order(section: str) -> int:
    return SECTIONS.index(section) if section in SECTIONS else len(SECTIONS)


@dataclass
class Stamp:
    """One run of this script, as the header of RESULTS.md names it."""

    command: str
    started: str  # "YYYY-MM-DD HH:MM", UTC
    quick: bool
    seconds: float  # the time of its sections in the file
    load: str  # load average at the start and the end
    load_end: str
    cores: str
    machine: str  # the header's "Machine: ...", "Versions: ..." and "MongoDB: ..." lines
    versions: str
    mongodb: str
    sections: list[str]  # its sections in the file


@dataclass
class Doc:
    """RESULTS.md as data: the runs that wrote it and what each section holds."""

    runs: list[Stamp]  # the newest first
    targets: list[list[str]]  # [section, name, wanted, measured, result]
    errors: list[list[str]]  # [section, label, traceback]
    blocks: dict[int, str]  # numbered heading -> its markdown, heading included
    seconds: list[tuple[str, str, float]]  # (section, label, seconds)


def doc_of(run: Run, plan: Plan, command: str, sections: Sequence[str]) -> Doc:
    """What ``run`` (of ``sections``) writes into RESULTS.md."""
    env = run.environment
    stamp = Stamp(
        command=command,
        started=f"{run.started:%Y-%m-%d %H:%M}",
        quick=run.quick,
        seconds=sum(run.seconds.values()),
        load=env.get("load", "?"),
        load_end=env.get("load_end", "?"),
        cores=env["cores"],
        machine=f"Machine: {env['cores']} cores, {env['ram']} RAM, {env['cpu']}; {env['os']}.",
        versions=f"Versions: Python {env['python']}, SQLite {env['sqlite']}, pymongo {env['pymongo']}, "
        f"reactivex {env['reactivex']}, minibatch_rx {env['minibatch_rx']}, minibatch {env['minibatch']} "
        f"(mongoengine {env['mongoengine']}), SecantusDB {env['secantusdb']}, bytewax {env['bytewax']}.",
        mongodb=f"MongoDB: {env.get('mongodb', 'not used')}. SQLite: WAL, `synchronous=full` (the store's "
        "default), a temporary file.",
        sections=[s for s in SECTIONS if s in sections],
    )
    return Doc(
        runs=[stamp],
        targets=[[t.section, t.name, t.target, t.measured, verdict(t.passed)] for t in targets(run)],
        errors=[[label_section(label, sections), label, text] for label, text in run.errors.items()],
        blocks=section_blocks(run, plan),
        seconds=sorted(
            ((label_section(label, sections), label, s) for label, s in run.seconds.items()),
            key=lambda row: section_order(row[0]),
        ),
    )


def header(runs: Sequence[Stamp]) -> list[str]:
    """The lines under the title: the run (or runs) that wrote the file and the machine."""
    if len(runs) == 1:
        run = runs[0]
        return [
            f"Written by `{run.command}` on {run.started} UTC"
            f"{' (quick sizes: a smoke run)' if run.quick else ''}; "
            f"{run.seconds:.0f} s in all. Do not edit: rerun the command.",
            "",
            f"{run.machine}  ",
            f"{run.versions}  ",
            f"Load average (1 min) at the start and the end: {run.load} and {run.load_end} on {run.cores} "
            "cores (other processes share the machine).  ",
            run.mongodb,
        ]
    out = [
        f"Written by {len(runs)} runs of `run_all.py`, newest first (a `--sections` run replaces its "
        "sections and keeps the others). Do not edit: rerun the commands.",
        "",
    ]
    for run in runs:
        out.append(
            f"- `{run.command}` on {run.started} UTC{' (quick sizes: a smoke run)' if run.quick else ''}: "
            f"{', '.join(run.sections)}; {run.seconds:.0f} s; load average (1 min) {run.load} at the start "
            f"and {run.load_end} at the end on {run.cores} cores."
        )
    out.append("")
    lines: list[str] = []
    for attr in ("machine", "versions", "mongodb"):
        pool = list(runs)
        if attr == "mongodb":
            pool = [r for r in runs if set(r.sections) & set(MONGO_SECTIONS)] or pool[:1]
        values: dict[str, list[str]] = {}
        for run in pool:
            values.setdefault(getattr(run, attr), []).append(run.started)
        if len(values) == 1:
            lines += values
        else:
            lines += [
                f"{value} ({'run' if len(dates) == 1 else 'runs'} of {', '.join(dates)} UTC)"
                for value, dates in values.items()
            ]
    return [*out, "  \n".join(lines)]


def render_doc(doc: Doc) -> str:
    """RESULTS.md, with the state comment a later ``--sections`` run merges into."""
    missed = [row for row in doc.targets if row[4] == verdict(False)]
    out = [
        "# Benchmark results",
        "",
        *header(doc.runs),
        "",
        "## Targets",
        "",
        table(("target", "wanted", "measured", "result"), [row[1:] for row in doc.targets]),
    ]
    if missed:
        out += [
            "",
            f"**Short of target in this {'run' if len(doc.runs) == 1 else 'file'} ({len(missed)}):** "
            + "; ".join(f"{name}: {measured}, wanted {wanted}" for _, name, wanted, measured, _ in missed)
            + ".",
        ]
    if doc.errors:
        out += ["", "## Errors", ""]
        for _, label, text in doc.errors:
            out += [f"Section `{label}` failed:", "", "```text", text.rstrip(), "```", ""]
    for number in sorted(doc.blocks):
        out += ["", doc.blocks[number]]
    started = {s: run.started for run in doc.runs for s in run.sections}
    if len(doc.runs) == 1:
        times = table(("section", "seconds"), [(label, f"{s:.1f}") for _, label, s in doc.seconds])
    else:
        times = table(
            ("section", "seconds", "run of"),
            [(label, f"{s:.1f}", started.get(section, "?")) for section, label, s in doc.seconds],
        )
    state = json.dumps(
        {
            "version": 1,
            "runs": [asdict(run) for run in doc.runs],
            "targets": doc.targets,
            "errors": doc.errors,
            "seconds": doc.seconds,
        },
        separators=(",", ":"),
    ).replace("-->", "--\\u003e")
    out += ["", "## Time per section", "", times, "", STATE_START + state + STATE_END, ""]
    return "\n".join(out)


def render(run: Run, plan: Plan, command: str, sections: Sequence[str] = SECTIONS) -> str:
    """RESULTS.md for ``run`` alone."""
    return render_doc(doc_of(run, plan, command, sections))


def parse_blocks(text: str) -> tuple[dict[int, str], list[str]]:
    """The numbered sections of a RESULTS.md (each up to the next ``## `` heading), and the
    headings of any other section not written by this script."""
    blocks: dict[int, str] = {}
    others: list[str] = []
    number: int | None = None
    lines: list[str] = []
    for line in [*text.split("\n"), "## end"]:
        if not (line.startswith("## ") or line.startswith(STATE_START)):
            lines.append(line)
            continue
        if number is not None:
            blocks[number] = "\n".join(lines).strip()
        found = re.match(r"## (\d+)\. ", line)
        number = int(found.group(1)) if found and int(found.group(1)) in BLOCK_SECTIONS else None
        if number is None and line.startswith("## ") and line[3:] not in KNOWN_HEADINGS:
            others.append(line[3:])
        lines = [line]
    return blocks, others


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The cells of the body rows of the first table under ``## heading``."""
    start = text.find(f"\n## {heading}\n")
    if start < 0:
        return []
    rows: list[list[str]] = []
    for line in text[start + len(heading) + 5 :].split("\n"):
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows or line.startswith("## "):
            break
    return rows[2:]


def read_doc(text: str) -> tuple[Doc | None, list[str]]:
    """An earlier RESULTS.md as data (None if it cannot be read), and notes on what it
    holds that a merge drops."""
    blocks, others = parse_blocks(text)
    notes = [f"'## {heading}' dropped: not written by run_all.py" for heading in others]
    state_line = next((line for line in text.split("\n") if line.startswith(STATE_START)), None)
    if state_line is None:
        doc = read_legacy(text, blocks)
        return doc, notes if doc is not None else ["no run header found"]
    try:
        state = json.loads(state_line[len(STATE_START) : -len(STATE_END)])
        if state.get("version") != 1:
            return None, [f"state version {state.get('version')!r}, not 1"]
        doc = Doc(
            runs=[Stamp(**run) for run in state["runs"]],
            targets=[list(map(str, row)) for row in state["targets"]],
            errors=[list(map(str, row)) for row in state["errors"]],
            blocks=blocks,
            seconds=[(str(section), str(label), float(s)) for section, label, s in state["seconds"]],
        )
    except (ValueError, TypeError, KeyError) as exc:
        return None, [f"unreadable state comment ({type(exc).__name__}: {exc})"]
    return doc, notes


def read_legacy(text: str, blocks: dict[int, str]) -> Doc | None:
    """A RESULTS.md written before the state comment: one run, its sections found from
    the "Time per section" labels and its targets by name."""
    written = WRITTEN.search(text)
    if written is None:
        return None
    lines = {
        line.split(":", 1)[0]: line.rstrip()
        for line in text.split("\n")
        if line.startswith(("Machine:", "Versions:", "MongoDB:"))
    }
    load = LOAD.search(text)
    labels = [(row[0], float(row[1])) for row in table_rows(text, "Time per section") if len(row) >= 2]
    sections = [s for s in SECTIONS if any(label_section(label, ()) == s for label, _ in labels)]
    seconds = [(label_section(label, sections), label, s) for label, s in labels]
    rows = []
    for row in table_rows(text, "Targets"):
        section = next((s for prefix, s in LEGACY_TARGETS if row[0].startswith(prefix)), "")
        if section and len(row) == 4:
            rows.append([section, *row])
    errors = [
        [label_section(label, sections), label, trace]
        for label, trace in re.findall(
            r"^Section `([^`]+)` failed:\n\n```text\n(.*?)\n```", text, re.MULTILINE | re.DOTALL
        )
    ]
    stamp = Stamp(
        command=written["command"],
        started=written["started"],
        quick="quick" in written["quick"],
        seconds=float(written["seconds"]),
        load=load[1] if load else "?",
        load_end=load[2] if load else "?",
        cores=load[3] if load else "?",
        machine=lines.get("Machine", "Machine: ?"),
        versions=lines.get("Versions", "Versions: ?"),
        mongodb=lines.get("MongoDB", "MongoDB: ?"),
        sections=sections,
    )
    return Doc([stamp], rows, errors, blocks, seconds)


def merge(new: Doc, prior: Doc) -> tuple[Doc, list[str]]:
    """``new`` (one run) written over ``prior``: the sections it ran, and those sharing
    tables with them, come from ``new``; every other section ``prior`` holds is kept,
    with its run, targets, errors and times. Also notes on what was dropped."""
    ran = new.runs[0].sections
    touched: set[str] = set()
    for section in ran:
        touched |= merge_group(section)
    held = [s for run in prior.runs for s in run.sections]
    kept = [s for s in SECTIONS if s in held and s not in touched]
    dropped = [s for s in SECTIONS if s in held and s in touched and s not in ran]
    notes = []
    if dropped:
        notes.append(
            f"dropped from the file: {', '.join(dropped)} (their tables mix with those of "
            f"{', '.join(s for s in ran if merge_group(s) & set(dropped))}, rerun here; run them together)"
        )
    runs = [new.runs[0]]
    for run in prior.runs:
        mine = [s for s in run.sections if s in kept]
        if mine:
            spent = sum(s for section, _, s in prior.seconds if section in mine)
            runs.append(replace(run, sections=mine, seconds=spent))
            if run.machine != new.runs[0].machine:
                notes.append(f"{', '.join(mine)} kept from a run on another machine ({run.machine})")
    rows: list[list[str]] = []
    for section in SECTIONS:
        earlier = [row for row in prior.targets if row[0] == section and row[4] != NOT_MEASURED]
        rows += earlier if section in kept and earlier else [row for row in new.targets if row[0] == section]
    blocks = {n: text for n, text in prior.blocks.items() if set(BLOCK_SECTIONS[n]) & set(kept)}
    blocks.update(new.blocks)
    return Doc(
        runs=runs,
        targets=rows,
        errors=new.errors + [row for row in prior.errors if row[0] in kept],
        blocks=blocks,
        seconds=sorted(
            new.seconds + [row for row in prior.seconds if row[0] in kept],
            key=lambda row: section_order(row[0]),
        ),
    ), notes


def plot(run: Run, path: Path) -> bool:
    """Write the summary chart; False (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "note: matplotlib is not installed (pip install -e '.[bench]'); results.png not written",
            file=sys.stderr,
        )
        return False
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0][0]
    if run.append:
        labels = [f"{r.store}\n{r.mode}" for r in run.append]
        xs = range(len(labels))
        ax.bar([x - 0.2 for x in xs], [r.rate for r in run.append], 0.4, label="minibatch_rx")
        ax.bar([x + 0.2 for x in xs], [r.raw_rate or 0 for r in run.append], 0.4, label="raw driver")
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_yscale("log")
        ax.legend()
    ax.set_title("1. Append throughput (msg/s, log)")
    ax = axes[0][1]
    if run.throughput:
        labels = [f"{t.store}\n{t.implementation}\n{t.messages:,} msgs" for t in run.throughput]
        ax.bar(
            labels,
            [t.rate for t in run.throughput],
            color=["tab:blue" if t.implementation == OURS else "tab:red" for t in run.throughput],
        )
        ax.set_yscale("log")
        ax.tick_params(axis="x", labelsize=8)
    ax.set_title(f"2./5. End-to-end throughput, count window {WINDOW} (msg/s, log)")
    ax = axes[1][0]
    for lat in run.latency:
        values = sorted(v * 1000 for v in lat.latencies)
        ax.plot(
            values,
            [(i + 1) / len(values) for i in range(len(values))],
            label=f"{lat.store} {lat.implementation} (pace {lat.pace * 1000:g} ms)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("append -> window delivered (ms, log)")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=8)
    ax.set_title("3./5. Cross-process latency, count window 1 (CDF)")
    ax = axes[1][1]
    if run.overhead is not None:
        ov = run.overhead
        names = ["raw reactivex", "count_window", "DSL (memory)"]
        ax.bar(
            names,
            [ov.rate(ov.raw), ov.rate(ov.ours), ov.rate(ov.dsl)],
            color=["tab:gray", "tab:blue", "tab:cyan"],
        )
    ax.set_title("4. In-process, window 100 + map (msg/s)")
    fig.suptitle(
        f"minibatch_rx benchmarks, {run.started:%Y-%m-%d}"
        f"{' (quick)' if run.quick else ''}: {run.environment.get('cores')} cores, "
        f"{run.environment.get('cpu')}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_streams(report: bench_streams.Report, path: Path) -> bool:
    """Section 10's chart (``bench_streams.plot``), from this run only."""
    from benchmarks import bench_streams

    return bench_streams.plot(report, path)


# -- the parent -----------------------------------------------------------------------
@contextlib.contextmanager
def timed_section(run: Run, name: str) -> Iterator[None]:
    """Time a section; record its error (the run goes on with the next section)."""
    print(f"== {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        yield
    except KeyboardInterrupt:
        raise
    except Exception:
        text = traceback.format_exc()
        print(text, file=sys.stderr)
        run.errors[name] = text
    finally:
        run.seconds[name] = time.perf_counter() - started
        print(f"   {name}: {run.seconds[name]:.1f} s", file=sys.stderr, flush=True)


def measure_all(run: Run, plan: Plan, sections: Sequence[str], workdir: Path) -> None:
    with contextlib.ExitStack() as stack:
        mongo: str | None = None
        if any(s in sections for s in ("append", "e2e", "latency", "original")):
            with timed_section(run, "start MongoDB"):
                mongo, where = stack.enter_context(bench_append.mongo_url())
                run.environment["mongodb"] = where
        if "append" in sections:
            with timed_section(run, "append"):
                run.append += bench_append.bench_memory(plan.append["memory"], bench_append.ROUNDS)
                run.append += bench_append.bench_sqlite(
                    plan.append["sqlite"], bench_append.ROUNDS, "full", workdir
                )
                if mongo is not None:
                    run.append += bench_append.bench_mongodb(
                        plan.append["mongodb"], bench_append.ROUNDS, mongo
                    )
        if "e2e" in sections:
            for store in ("sqlite", "mongodb"):
                with timed_section(run, f"e2e {store}"):
                    repeats = plan.e2e_repeats if store == "sqlite" else 1
                    results = []
                    for _ in range(repeats):
                        with fresh_store(store, workdir, mongo, "e2e") as url:
                            results.append(measure_throughput(store, OURS, url, plan.e2e[store]))
                    results.sort(key=lambda t: t.rate)
                    median = results[len(results) // 2]
                    median.all_rates = [t.rate for t in results]
                    run.throughput.append(median)
        if "latency" in sections:
            for store in ("sqlite", "mongodb"):
                with timed_section(run, f"latency {store}"), fresh_store(store, workdir, mongo, "lat") as url:
                    run.latency.append(
                        measure_latency(
                            store,
                            OURS,
                            url,
                            plan.latency_warmup,
                            plan.latency_samples[store],
                            plan.latency_pace[store],
                        )
                    )
        if "overhead" in sections:
            with timed_section(run, "overhead"):
                run.overhead = measure_overhead(plan.overhead_messages, plan.overhead_rounds)
        if "original" in sections and mongo is not None:
            with timed_section(run, "original"):
                measure_original(run, plan, mongo)
    if "memory" in sections:
        with timed_section(run, "memory"):
            run.backlog = measure_backlog(plan.backlog_sizes, workdir)
    if "windows" in sections:
        with timed_section(run, "windows"):
            run.windows = measure_windows(plan)
    if "sessions" in sections:
        with timed_section(run, "sessions"):
            run.sessions = measure_sessions(plan)
    if "cep" in sections:
        with timed_section(run, "cep"):
            run.cep = measure_cep(plan)
    if "streams" in sections:
        with timed_section(run, "streams"):
            run.streams = measure_streams(plan)
    if "groups" in sections:
        with timed_section(run, "groups"):
            run.groups = measure_groups(plan)


def print_summary(run: Run, sections: Sequence[str]) -> None:
    """This run's tables and targets, on stdout."""
    for name, text in (
        ("append", section_append(run) if run.append else ""),
        ("end-to-end", section_throughput(run) if run.throughput else ""),
        ("latency", section_latency(run) if run.latency else ""),
        ("overhead", section_overhead(run.overhead) if run.overhead else ""),
        ("backlog memory", section_backlog(run) if run.backlog else ""),
        ("time windows", render_windows(run)),
        ("session keys", render_sessions(run)),
        ("cep patterns", render_cep(run.cep) if run.cep is not None else ""),
        ("many streams, latency beside Redis, read path", render_streams(run.streams)),
        ("consumer groups", render_groups(run.groups)),
    ):
        if text:
            print(f"\n{name}\n{text}")
    if run.original_error:
        print(f"\nthe original minibatch did not run: {run.original_error}")
    print("\ntargets")
    for t in targets(run):
        if t.section not in sections:
            continue
        print(f"  {verdict(t.passed):12} {t.name}: {t.measured} (target {t.target})")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, ~1 minute)")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset of %(default)s"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=HERE,
        help="directory for RESULTS.md and results.png (default: benchmarks/)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="with --sections: write only the sections run, do not merge them into the existing RESULTS.md",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
        unknown = sorted(set(args.sections) - set(SECTIONS))
        if unknown or not args.sections:
            parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        mode, params = args.child
        CHILDREN[mode](json.loads(params))
        return 0
    plan = QUICK if args.quick else FULL
    run = Run(quick=args.quick, started=dt.datetime.now(dt.UTC), environment=environment())
    workdir = Path(tempfile.mkdtemp(prefix="minibatch-run-all-"))
    try:
        measure_all(run, plan, args.sections, workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    run.environment["minibatch"] = package_version("minibatch")
    run.environment["load_end"] = load_average()
    command = "python benchmarks/run_all.py" + (" --quick" if args.quick else "")
    if args.sections != list(SECTIONS):
        command += f" --sections {','.join(args.sections)}" + (" --fresh" if args.fresh else "")
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / "RESULTS.md"
    doc, notes = doc_of(run, plan, command, args.sections), list[str]()
    if not args.fresh and set(args.sections) != set(SECTIONS) and path.exists():
        prior, notes = read_doc(path.read_text())
        if prior is None:
            notes.append(f"{path} not merged into (not written by run_all.py): it now holds this run only")
        else:
            doc, more = merge(doc, prior)
            notes += more
    path.write_text(render_doc(doc))
    earlier = {s for stamp in doc.runs[1:] for s in stamp.sections}
    drawn = False
    if earlier & set(PLOT_SECTIONS):
        notes.append("results.png left as it was: sections it shows come from an earlier run")
    elif set(args.sections) & set(PLOT_SECTIONS):
        drawn = plot(run, args.output / "results.png")
    streams_png = args.output / "streams.png"
    if run.streams is not None and plot_streams(run.streams, streams_png):
        notes.append(f"wrote {streams_png}")
    print_summary(run, args.sections)
    for note in notes:
        print(f"note: {note}")
    if len(doc.runs) > 1:
        print(
            "kept from earlier runs: "
            + "; ".join(f"{', '.join(stamp.sections)} ({stamp.started} UTC)" for stamp in doc.runs[1:])
        )
    print(f"\nwrote {path}" + (f" and {args.output / 'results.png'}" if drawn else ""))
    if run.errors:
        print(f"FAILED sections: {', '.join(run.errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
