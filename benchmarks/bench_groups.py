"""Consumer-group throughput against the number of members, for a CPU-bound function.

On the sqlite store (a temporary file), for each member count (default 1, 2
and 4) this starts that many worker processes in one fresh consumer group, for
one or both of two pipelines (``--pipeline count|keyed-time|both``, default
both):

* ``count`` (worker ``tests/workers/consumer.py``), windows leased one by one::

      stream(SOURCE, url).count_window(20).map(process).sink(SINK).run(group=GROUP)

  ``process`` returns one output per input message (source seq, worker pid);
  ``--messages`` (default 4,000) messages make 200 windows.

* ``keyed-time`` (worker ``benchmarks/group_worker.py``), keys shared by
  partition (the library's default of 12 partitions, ``--partitions``)::

      stream(SOURCE, url).key_by('k').event_time('t', idle=None).fixed_time_window(20)
          .map(process).sink(SINK).run(group=GROUP)

  ``process`` returns one output per window (key, start, message count, first
  and last seq, worker pid). The input: ``--keys`` keys (default 48), chosen
  so that each partition holds the same number of them (4 of the 12: the
  work divides evenly among 1, 2 and 4 members; random keys would add the
  luck of the hash), each with ``messages // (keys x 20)`` windows of 20
  events (4 with the defaults: 192 windows, 3,840 events), one event a
  second per key, keys interleaved in event-time order; then one event far in
  the future (of a key of its own) whose watermark closes every key's last
  window. The sink holds one output per window, so the expected windows (key,
  start, first and last seq) are known beforehand.

In both, ``process`` burns ``--work`` seconds of CPU per window (default
0.05 s, real work, not a sleep: measured with ``time.process_time`` in the
count worker, ``time.thread_time`` in the keyed one, whose member runs each
partition in threads of its own, so the process's clock would also count the
other partitions' work),
and the sink stream is idempotent (keyed on the group or partition and the
source seq range), so a window processed twice is stored once.

Every run gets its own source stream, group and sink stream in the same
database. A fair start needs care: a worker begins leasing windows as soon as
it is up, and start-up (a Python interpreter importing minibatch_rx) takes a
noticeable fraction of a second, so with a pre-filled source the first worker
would be well ahead before the last one joined. The script therefore:

1. starts all the run's workers on an empty source stream and waits for each
   one's ``ready`` line (start-up is excluded from the timing); with
   ``keyed-time``, it then also waits until the group's partition table shows
   every partition held and each member holding its share (partitions move
   at the members' lease renewals, every third of ``--lease-timeout``);
2. waits a short settle period (``--settle``, default 0.5 s) so that every
   member (every partition's run) is idle-polling the empty stream;
3. starts the clock and appends all source messages with **one**
   ``Stream.extend`` call (one SQLite transaction: every member sees the
   whole backlog at the same instant; the append is part of the timed region);
4. polls the sink stream's last seq (cheap, every 10 ms, bounded by
   ``--timeout``) until it holds every expected output, and stops the clock.

After each run (outside the timed region) it checks the sink: ``count``: the
group's committed position reached the last seq, every source seq is in the
sink exactly once, and each window's outputs come from one member;
``keyed-time``: every expected window is in the sink exactly once, with its
20 events (first and last seq), and no other window. In both, every member
must have processed at least one window (outputs carry the worker's pid). It
also reads each worker's CPU time (``/proc``, Linux) over the timed region and
counts lease take-overs (``count``: reported on the workers' stderr;
``keyed-time``: keys whose windows came from more than one member, i.e. a
partition moved during the run). Workers are killed at the end of each run,
and on any error; the temporary files are removed; the exit status is
non-zero on any failure.

``--rebalance`` adds one more ``keyed-time`` run, untimed as throughput: 2
members with ``--rebalance-lease`` (default 3 s), the same input; once the
sink holds half the windows, one member is SIGKILLed, and the script polls the
partition table (``store.update_state(stream, '<group>/partitions', ...)``,
every 20 ms) until the survivor holds every partition. The rebalance time is
from the kill to that moment (the library promises at most the lease timeout
plus a third of it); it also reports the time until the sink was complete,
and checks the output as above (every window exactly once, although the
killed member's partitions were replayed by the survivor).

The ideal speed-up is ``min(members, cores)``: with 2 cores, 4 members can be
no faster than about 2x. A shared machine does not always deliver its
nominal cores (other processes, a busy virtual-machine host), so three more
columns tell a machine limit from a library one:

* ``cores used``: the CPU time all members got during the timed region
  (``/proc/PID/stat``), divided by the elapsed time;
* ``other load``: the CPU time everything else on the machine used during
  the timed region (busy time in ``/proc/stat``, minus the members and this
  script), divided by the elapsed time;
* ``cores avail.``: measured just before and just after each run
  (``--calibrate``, default 2 s each; 0 skips it): as many plain Python
  processes as the run has members spin the workers' ``time.process_time()``
  loop, with no store involved; the CPU time they got together per second of
  wall time is what the machine gave (the mean of both measurements).

If ``cores used`` is close to ``cores avail.`` but below the ideal, the
machine was the limit. If both are high but the speed-up is low, the members
spent CPU on coordination (``count``: each window takes three SQLite write
transactions, serialised by the write lock: lease, sink, complete;
``keyed-time``: each partition's run reads the whole stream and windows only
its keys, so a member holding 12 partitions reads every message 12 times);
the per-run details give the workers' CPU time beyond the pure work, per
window. If ``cores used`` is well below ``cores avail.``, members sat idle
(waiting for the write lock, or polling).

Usage::

    python benchmarks/bench_groups.py [--pipeline both] [--messages 4000] [--members 1,2,4]
        [--work 0.05] [--rebalance] [--json PATH]

``run_benchmark(args)`` returns the :class:`Report` (``benchmarks/run_all.py``
calls it for its ``groups`` section) and ``markdown(report)`` its tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from minibatch_rx.partitions import DEFAULT_PARTITIONS, holders, partition_of, share, state_name
from minibatch_rx.store import close_all
from minibatch_rx.streams import Stream

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "consumer.py"
KEYED_WORKER = ROOT / "benchmarks" / "group_worker.py"
COUNT, KEYED = "count", "keyed-time"
PIPELINES = (COUNT, KEYED)
WINDOW = 20  # messages per count window; events per key and keyed time window
MESSAGES = 4_000
MEMBERS = (1, 2, 4)
WORK = 0.05
KEYS = 48  # keyed-time: keys, as many in each partition
EVENT_WINDOW = 20  # keyed-time: seconds of event time per window (one event a second per key)
BASE = 1_700_000_000  # keyed-time: the first event time (epoch seconds, a multiple of EVENT_WINDOW)
CLOSER_KEY = "end"  # keyed-time: the key of the last, far-future event
LEASE_TIMEOUT = 10.0  # seconds; far above a window's run time, so no lease expires in a healthy run
REBALANCE_LEASE = 3.0  # seconds: the lease timeout of the --rebalance run
READY_TIMEOUT = 60.0  # seconds for all of a run's workers to print "ready"
SETTLE = 0.5  # seconds between the last "ready" (keyed-time: a balanced table) and the fill
POLL = 0.01  # seconds between checks of the sink stream
TABLE_POLL = 0.02  # seconds between reads of the partition table (each is a write transaction)
ACK_TIMEOUT = 30.0  # seconds for the group position to reach M after the sink is complete
PREFIX = "bench.groups"
CALIBRATE = 2.0  # seconds each calibration burner spins
# A calibration burner: spins the consumer's CPU loop for argv[1] wall seconds once told
# to go, then prints the CPU seconds it got.
BURNER = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
seconds = float(sys.argv[1])
cpu, start = time.process_time(), time.perf_counter()
while time.perf_counter() - start < seconds:
    time.process_time()
print(time.process_time() - cpu, time.perf_counter() - start, flush=True)
"""


@dataclass
class Run:
    """One timed run of one member count."""

    pipeline: str
    members: int
    repeat: int
    group: str
    source: str
    sink: str
    elapsed: float
    fill_seconds: float
    windows_by_pid: dict[int, int]
    worker_cpu_seconds: float | None
    other_cpu_seconds: float | None
    cores_available_before: float | None
    cores_available_after: float | None
    taken_over: int
    lost: int
    balance_seconds: float = 0.0  # keyed-time: from "ready" to a balanced partition table (untimed)

    @property
    def cores_available(self) -> float | None:
        """Cores the machine gave spinning processes around the run (mean of before and after)."""
        if self.cores_available_before is None or self.cores_available_after is None:
            return None
        return (self.cores_available_before + self.cores_available_after) / 2

    @property
    def cores_used(self) -> float | None:
        """The members' CPU time over the timed region / elapsed."""
        return None if self.worker_cpu_seconds is None else self.worker_cpu_seconds / self.elapsed

    @property
    def other_load(self) -> float | None:
        """CPU time of every other process over the timed region / elapsed."""
        return None if self.other_cpu_seconds is None else self.other_cpu_seconds / self.elapsed

    def as_json(self) -> dict[str, Any]:
        """The run as JSON-able data."""
        data = asdict(self)
        data["cores_used"] = self.cores_used
        data["other_load"] = self.other_load
        data["cores_available"] = self.cores_available
        data["windows_by_pid"] = {str(pid): n for pid, n in self.windows_by_pid.items()}
        return data


@dataclass
class Row:
    """One pipeline and member count, over its repeats (the median run is reported)."""

    pipeline: str
    members: int
    messages: int
    windows: int
    runs: list[Run] = field(default_factory=list)

    @property
    def median_run(self) -> Run:
        """The run of median elapsed time (the lower one of an even number)."""
        ordered = sorted(self.runs, key=lambda r: r.elapsed)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def elapsed(self) -> float:
        """The median run's elapsed seconds."""
        return self.median_run.elapsed

    @property
    def windows_per_s(self) -> float:
        """Windows processed per second."""
        return self.windows / self.elapsed

    @property
    def messages_per_s(self) -> float:
        """Source messages processed per second."""
        return self.messages / self.elapsed

    def as_json(self, baseline: float | None, cores: int) -> dict[str, Any]:
        """The row as JSON-able data, its speed-up against ``baseline`` seconds."""
        return {
            "pipeline": self.pipeline,
            "members": self.members,
            "messages": self.messages,
            "windows": self.windows,
            "elapsed_s": self.elapsed,
            "windows_per_s": self.windows_per_s,
            "messages_per_s": self.messages_per_s,
            "speedup": None if baseline is None else baseline / self.elapsed,
            "ideal_speedup": min(self.members, cores),
            "cores_used": self.median_run.cores_used,
            "other_load": self.median_run.other_load,
            "cores_available": self.median_run.cores_available,
            "runs": [r.as_json() for r in self.runs],
        }


@dataclass
class Rebalance:
    """The ``--rebalance`` run: a member SIGKILLed mid-run, the survivor takes over."""

    lease_timeout: float
    partitions: int
    moved: int  # partitions the killed member held
    killed_after: float  # seconds from the fill to the kill
    windows_at_kill: int  # outputs in the sink at the kill
    rebalance_seconds: float  # from the kill until the survivor held every partition
    complete_seconds: float  # from the kill until the sink was complete
    windows_by_pid: dict[int, int]

    def as_json(self) -> dict[str, Any]:
        """The run as JSON-able data."""
        data = asdict(self)
        data["windows_by_pid"] = {str(pid): n for pid, n in self.windows_by_pid.items()}
        return data


@dataclass
class Report:
    """Everything one invocation measured."""

    environment: dict[str, Any]
    rows: list[Row]
    rebalance: Rebalance | None
    cores: int

    def pipeline_rows(self, pipeline: str) -> list[Row]:
        """The rows of one pipeline, in member order as run."""
        return [row for row in self.rows if row.pipeline == pipeline]

    def as_json(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        results = []
        for pipeline in PIPELINES:
            rows = self.pipeline_rows(pipeline)
            base = baseline(rows)
            results += [row.as_json(base, self.cores) for row in rows]
        return {"environment": self.environment, "results": results,
                "rebalance": None if self.rebalance is None else self.rebalance.as_json()}


def check(condition: bool, message: str) -> None:
    """Raise unless ``condition``: a failed self-check of the benchmark."""
    if not condition:
        raise RuntimeError(f"benchmark self-check failed: {message}")


# -- workers ----------------------------------------------------------------------------
@dataclass
class Worker:
    """A consumer process and the file its stderr goes to."""

    process: subprocess.Popen[str]
    stderr_path: Path
    stderr_file: IO[str]

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        self.stderr_file.flush()
        return self.stderr_path.read_text(errors="replace")

    def describe_exit(self) -> str:
        tail = self.stderr().strip().splitlines()[-20:]
        return f"worker {self.pid} exited with {self.process.returncode}:\n" + "\n".join(tail)


def start_workers(commands: Sequence[list[str]], group: str, workdir: Path, workers: list[Worker]) -> None:
    """Start one worker per command; each is added to ``workers`` as soon as it exists,
    so the caller can kill it whatever happens next."""
    for i, command in enumerate(commands):
        stderr_path = workdir / f"{group}.{i}.stderr"
        stderr_file = stderr_path.open("w")
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr_file, text=True,
                                       cwd=ROOT)
        except BaseException:
            stderr_file.close()
            raise
        workers.append(Worker(process, stderr_path, stderr_file))


def wait_ready(workers: Sequence[Worker], timeout: float) -> None:
    """Block until every worker printed ``ready``, or raise."""
    deadline = time.monotonic() + timeout
    for worker in workers:
        stdout = worker.process.stdout
        assert stdout is not None
        remaining = deadline - time.monotonic()
        readable, _, _ = select.select([stdout], [], [], max(0.0, remaining))
        if not readable:
            raise RuntimeError(f"worker {worker.pid} not ready after {timeout:g} s")
        line = stdout.readline().strip()
        if line != "ready":
            worker.process.wait(5)
            raise RuntimeError(f"worker {worker.pid} printed {line!r}, not 'ready'; "
                               + worker.describe_exit())


def kill_workers(workers: Sequence[Worker]) -> None:
    """SIGKILL each worker this script started (by its own handle) and reap it."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
    for worker in workers:
        try:
            worker.process.wait(10)
        except subprocess.TimeoutExpired:
            print(f"warning: worker {worker.pid} did not exit after SIGKILL", file=sys.stderr)
        if worker.process.stdout is not None:
            worker.process.stdout.close()
        worker.stderr_file.close()


def check_alive(workers: Sequence[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is not None:
            raise RuntimeError(worker.describe_exit())


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float | None:
    """CPU time all processors spent busy since boot (Linux ``/proc/stat``), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
        # cpu user nice system idle iowait irq softirq steal ...
        busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8) if i < len(fields))
    except (OSError, ValueError, IndexError):
        return None
    return busy / _CLOCK_TICKS


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def cpu_seconds(pids: Sequence[int]) -> float | None:
    """User + system CPU time of ``pids`` so far (Linux ``/proc``), or None."""
    total = 0
    try:
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    except (OSError, ValueError, IndexError):
        return None
    return total / _CLOCK_TICKS


# -- CPU calibration ------------------------------------------------------------------
def cpu_capacity(processes: int, seconds: float) -> float:
    """CPU seconds per wall second that ``processes`` spinning Python processes get together:
    the cores the machine delivers to that many CPU-bound processes right now."""
    burners: list[subprocess.Popen[str]] = []
    try:
        for _ in range(processes):
            burners.append(subprocess.Popen([sys.executable, "-c", BURNER, repr(seconds)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for burner in burners:
            assert burner.stdout is not None
            check(burner.stdout.readline().strip() == "ready", "calibration burner did not start")
        for burner in burners:
            assert burner.stdin is not None
            burner.stdin.write("go\n")
            burner.stdin.flush()
        cpu = wall = 0.0
        for burner in burners:
            out, _ = burner.communicate(timeout=seconds + 60)
            check(burner.returncode == 0, f"calibration burner exited with {burner.returncode}")
            used, elapsed = (float(x) for x in out.split())
            cpu, wall = cpu + used, max(wall, elapsed)
        return cpu / wall
    finally:
        for burner in burners:
            if burner.poll() is None:
                burner.kill()
                burner.wait(10)


# -- inputs -----------------------------------------------------------------------------
def balanced_keys(count: int, partitions: int) -> tuple[str, ...]:
    """``count`` keys ``k<n>``, ``count // partitions`` in each partition (the first names that fit)."""
    check(count % partitions == 0, f"{count} keys do not divide evenly among {partitions} partitions")
    per, chosen, filled = count // partitions, list[str](), Counter[int]()
    n = 0
    while len(chosen) < count:
        key, n = f"k{n}", n + 1
        p = partition_of(key, partitions)
        if filled[p] < per:
            filled[p] += 1
            chosen.append(key)
    return tuple(chosen)


@dataclass(frozen=True)
class KeyedInput:
    """The keyed-time source messages and the windows they must produce."""

    keys: tuple[str, ...]
    per_key: int  # windows per key
    docs: list[dict[str, Any]]
    expected: dict[tuple[str, float], tuple[int, int]]  # (key, window start) -> (first seq, last seq)

    @property
    def windows(self) -> int:
        """Windows the sink must hold."""
        return len(self.expected)

    @property
    def messages(self) -> int:
        """Source messages, the closing event included."""
        return len(self.docs)


def keyed_input(messages: int, keys: int, partitions: int) -> KeyedInput:
    """About ``messages`` events over ``keys`` balanced keys, windows of WINDOW events each,
    in event-time order, then one far-future event that closes every window."""
    names = balanced_keys(keys, partitions)
    per_key = max(1, messages // (keys * WINDOW))
    docs: list[dict[str, Any]] = []
    expected: dict[tuple[str, float], tuple[int, int]] = {}
    for j in range(per_key * WINDOW):  # one event a second per key, keys interleaved
        for key in names:
            docs.append({"k": key, "t": BASE + j * EVENT_WINDOW // WINDOW, "j": j})
            seq = len(docs)  # seqs start at 1 in a fresh stream
            start = float(BASE + (j // WINDOW) * EVENT_WINDOW)
            if j % WINDOW == 0:
                expected[(key, start)] = (seq, seq)
            else:
                expected[(key, start)] = (expected[(key, start)][0], seq)
    docs.append({"k": CLOSER_KEY, "t": BASE + (per_key + 10) * EVENT_WINDOW, "j": -1})
    return KeyedInput(names, per_key, docs, expected)


# -- the partition table ----------------------------------------------------------------
def table(source: Stream, group: str) -> dict[int, str]:
    """Who holds each partition of ``group`` now (the store's clock, unexpired leases)."""
    return source.store.update_state(source.name, state_name(group),
                                     lambda doc, now: (doc, holders(doc, now)))


def balanced(held: dict[int, str], members: Sequence[str], partitions: int) -> bool:
    """Every partition held, each of ``members`` holding its share."""
    counts = Counter(held.values())
    ordered = tuple(sorted(members))
    return len(held) == partitions and set(counts) == set(members) and all(
        counts[m] == share(ordered, m, partitions) for m in members)


def member_name(i: int) -> str:
    """The name worker ``i`` joins its group under."""
    return f"w{i}"


# -- one run ------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], bool], timeout: float, workers: Sequence[Worker], what: str,
             poll: float = POLL) -> float:
    """Poll ``predicate()`` every ``poll`` seconds until true; the time it became true
    (``time.perf_counter``). Raises after ``timeout`` or if a worker died."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        check_alive(workers)
        time.sleep(poll)


def commands(pipeline: str, members: int, url: str, source: str, sink: str, group: str,
             args: argparse.Namespace, lease_timeout: float) -> list[list[str]]:
    """The command line of each worker of a run."""
    if pipeline == COUNT:
        return [[sys.executable, str(WORKER), url, source, sink, "--group", group, "--size", str(WINDOW),
                 "--work", repr(args.work), "--lease-timeout", repr(lease_timeout)]
                for _ in range(members)]
    return [[sys.executable, str(KEYED_WORKER), url, source, sink, "--group", group,
             "--member", member_name(i), "--window", str(EVENT_WINDOW), "--work", repr(args.work),
             "--lease-timeout", repr(lease_timeout), "--partitions", str(args.partitions)]
            for i in range(members)]


def balance_timeout(lease_timeout: float) -> float:
    """How long partitions may take to spread over the members: a few renewal rounds."""
    return 30.0 + 4 * lease_timeout


def run_once(url: str, pipeline: str, members: int, repeat: int, args: argparse.Namespace,
             workdir: Path) -> Run:
    """One timed run: ``members`` fresh workers, one fill, until the sink is complete."""
    tag = f"{'count' if pipeline == COUNT else 'keyed'}.m{members}.r{repeat}"
    source = Stream.get_or_create(f"{PREFIX}.{tag}.in", url)
    sink = Stream.get_or_create(f"{PREFIX}.{tag}.out", url)
    group = f"{PREFIX}.{tag}.group"
    keyed = keyed_input(args.messages, args.keys, args.partitions) if pipeline == KEYED else None
    docs = keyed.docs if keyed is not None else [{"producer": 0, "i": i} for i in range(args.messages)]
    outputs = keyed.windows if keyed is not None else args.messages
    available_before = cpu_capacity(members, args.calibrate) if args.calibrate > 0 else None
    workers: list[Worker] = []
    balance_seconds = 0.0
    try:
        start_workers(commands(pipeline, members, url, source.name, sink.name, group, args,
                               args.lease_timeout), group, workdir, workers)
        wait_ready(workers, READY_TIMEOUT)
        if keyed is not None:
            names = [member_name(i) for i in range(members)]
            ready = time.perf_counter()
            balance_seconds = wait_for(lambda: balanced(table(source, group), names, args.partitions),
                                       balance_timeout(args.lease_timeout), workers,
                                       f"{members} members to share {args.partitions} partitions",
                                       TABLE_POLL) - ready
        time.sleep(args.settle)  # lets the members go idle on the empty stream
        check_alive(workers)
        check(source.count() == 0 and sink.count() == 0, "fresh streams are not empty")
        pids = [w.pid for w in workers]

        cpu_before, busy_before, own_before = cpu_seconds(pids), machine_busy_seconds(), own_cpu_seconds()
        started = time.perf_counter()
        source.extend(docs)  # one transaction: the whole backlog appears at once
        filled = time.perf_counter()
        finished = wait_for(lambda: sink.last_seq() >= outputs, args.timeout, workers,
                            f"{outputs:,} outputs in {sink.name!r} ({members} members)")
        cpu_after, busy_after, own_after = cpu_seconds(pids), machine_busy_seconds(), own_cpu_seconds()
        elapsed = finished - started

        if keyed is None:  # not timed: every window acknowledged, so no member still holds a lease
            wait_for(lambda: source.positions().get(group, 0) >= args.messages, ACK_TIMEOUT, workers,
                     f"group {group!r} to acknowledge seq {args.messages:,}")
        else:  # not timed: no partition moved during the run
            check(balanced(table(source, group), names, args.partitions),
                  f"group {group!r}: the partitions moved during the run")
        check_alive(workers)
        stderr = "".join(w.stderr() for w in workers)
    finally:
        kill_workers(workers)

    workers_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    other_cpu = (None if workers_cpu is None or busy_before is None or busy_after is None
                 else max(0.0, busy_after - busy_before - workers_cpu - (own_after - own_before)))
    if keyed is None:
        windows_by_pid = verify(source, sink, args.messages, pids, group)
        taken_over = stderr.count("took over expired lease")
    else:
        windows_by_pid, taken_over = verify_keyed(source, sink, keyed, pids, group)
    available_after = cpu_capacity(members, args.calibrate) if args.calibrate > 0 else None
    return Run(
        pipeline=pipeline,
        members=members,
        repeat=repeat,
        group=group,
        source=source.name,
        sink=sink.name,
        elapsed=elapsed,
        fill_seconds=filled - started,
        windows_by_pid=windows_by_pid,
        worker_cpu_seconds=workers_cpu,
        other_cpu_seconds=other_cpu,
        cores_available_before=available_before,
        cores_available_after=available_after,
        taken_over=taken_over,
        lost=stderr.count("expired before it was completed") + stderr.count("went to another member"),
        balance_seconds=balance_seconds,
    )


def rebalance_once(url: str, args: argparse.Namespace, workdir: Path) -> Rebalance:
    """2 keyed-time members; SIGKILL one once the sink holds half the windows; the time
    until the survivor holds every partition, and until the sink is complete."""
    members, lease = 2, args.rebalance_lease
    source = Stream.get_or_create(f"{PREFIX}.rebalance.in", url)
    sink = Stream.get_or_create(f"{PREFIX}.rebalance.out", url)
    group = f"{PREFIX}.rebalance.group"
    keyed = keyed_input(args.messages, args.keys, args.partitions)
    names = [member_name(i) for i in range(members)]
    workers: list[Worker] = []
    try:
        start_workers(commands(KEYED, members, url, source.name, sink.name, group, args, lease),
                      group, workdir, workers)
        wait_ready(workers, READY_TIMEOUT)
        wait_for(lambda: balanced(table(source, group), names, args.partitions), balance_timeout(lease),
                 workers, f"{members} members to share {args.partitions} partitions", TABLE_POLL)
        time.sleep(args.settle)  # lets the members go idle on the empty stream
        pids = [w.pid for w in workers]
        victim, survivor = workers[1], workers[0]

        started = time.perf_counter()
        source.extend(keyed.docs)
        wait_for(lambda: sink.last_seq() >= keyed.windows // 2, args.timeout, workers,
                 f"half the windows in {sink.name!r}")
        moved = sum(1 for owner in table(source, group).values() if owner == names[1])
        victim.process.kill()  # SIGKILL: no clean leave, its leases must expire
        killed = time.perf_counter()
        at_kill = sink.last_seq()
        victim.process.wait(10)
        taken = wait_for(lambda: set(table(source, group).values()) == {names[0]}
                         and len(table(source, group)) == args.partitions,
                         balance_timeout(lease), [survivor], f"{names[0]} to hold every partition",
                         TABLE_POLL)
        complete = wait_for(lambda: sink.last_seq() >= keyed.windows, args.timeout, [survivor],
                            f"{keyed.windows:,} outputs in {sink.name!r} after the kill")
        check_alive([survivor])
    finally:
        kill_workers(workers)
    windows_by_pid, _moved_keys = verify_keyed(source, sink, keyed, pids, group)
    return Rebalance(lease_timeout=lease, partitions=args.partitions, moved=moved,
                     killed_after=killed - started, windows_at_kill=at_kill,
                     rebalance_seconds=taken - killed, complete_seconds=complete - killed,
                     windows_by_pid=windows_by_pid)


def verify(source: Stream, sink: Stream, messages: int, pids: Sequence[int], group: str) -> dict[int, int]:
    """Check a count run's output; return the windows each member processed, by pid."""
    check(source.last_seq() == messages, f"source {source.name!r} holds seqs up to {source.last_seq()}")
    outputs = [m.data for m in sink.read()]
    check(len(outputs) == messages, f"sink {sink.name!r} holds {len(outputs):,} outputs, not {messages:,}")
    seen = Counter(o["src"] for o in outputs)
    duplicated = sorted(s for s, n in seen.items() if n > 1)
    missing = sorted(set(range(1, messages + 1)) - set(seen))
    check(not duplicated, f"{len(duplicated)} source seqs sunk more than once, e.g. {duplicated[:5]}")
    check(not missing, f"{len(missing)} source seqs missing from the sink, e.g. {missing[:5]}")
    check(set(seen) == set(range(1, messages + 1)), "sink holds seqs outside the source range")
    check(all(o["i"] == o["src"] - 1 for o in outputs), "an output does not match its source message")

    windows: dict[int, set[int]] = {pid: set() for pid in pids}
    owners: dict[int, set[int]] = {}
    for o in outputs:
        pid = o["pid"]
        check(pid in windows, f"output from pid {pid}, not a member of group {group!r}")
        index = (o["src"] - 1) // WINDOW
        windows[pid].add(index)
        owners.setdefault(index, set()).add(pid)
    check(all(len(p) == 1 for p in owners.values()), "a window's outputs come from more than one member")
    idle = [pid for pid, w in windows.items() if not w]
    check(not idle, f"members {idle} of group {group!r} processed no window")
    return {pid: len(w) for pid, w in windows.items()}


def verify_keyed(source: Stream, sink: Stream, keyed: KeyedInput, pids: Sequence[int],
                 group: str) -> tuple[dict[int, int], int]:
    """Check a keyed-time run's output: every expected window exactly once, with its
    events. Returns the windows each member processed (by pid) and how many keys had
    windows from more than one member (their partition moved)."""
    check(source.last_seq() == keyed.messages, f"source {source.name!r} holds seqs up to {source.last_seq()}")
    outputs = [m.data for m in sink.read()]
    seen = Counter((o["key"], float(o["start"])) for o in outputs)
    duplicated = sorted(w for w, n in seen.items() if n > 1)
    missing = sorted(set(keyed.expected) - set(seen))
    extra = sorted(set(seen) - set(keyed.expected))
    check(not duplicated, f"{len(duplicated)} windows sunk more than once, e.g. {duplicated[:5]}")
    check(not missing, f"{len(missing)} windows missing from the sink, e.g. {missing[:5]}")
    check(not extra, f"{len(extra)} unexpected windows in the sink, e.g. {extra[:5]}")
    check(len(outputs) == keyed.windows, f"sink {sink.name!r} holds {len(outputs):,} outputs, "
          f"not {keyed.windows:,}")
    for o in outputs:
        first, last = keyed.expected[(o["key"], float(o["start"]))]
        check(o["n"] == WINDOW and (o["first"], o["last"]) == (first, last),
              f"window {o['key']}@{o['start']} holds {o['n']} events, seqs {o['first']}..{o['last']}, "
              f"not {WINDOW}, {first}..{last}")
    windows: dict[int, int] = {pid: 0 for pid in pids}
    by_key: dict[str, set[int]] = {}
    for o in outputs:
        check(o["pid"] in windows, f"output from pid {o['pid']}, not a member of group {group!r}")
        windows[o["pid"]] += 1
        by_key.setdefault(o["key"], set()).add(o["pid"])
    idle = [pid for pid, n in windows.items() if not n]
    check(not idle, f"members {idle} of group {group!r} processed no window")
    return windows, sum(1 for p in by_key.values() if len(p) > 1)


# -- report ---------------------------------------------------------------------------
def baseline(rows: Sequence[Row]) -> float | None:
    """The 1-member elapsed time speed-ups are relative to, if 1 was measured."""
    return next((row.elapsed for row in rows if row.members == 1), None)


def fmt_cores(value: float | None) -> str:
    """A cores figure, ``-`` when not measured."""
    return "-" if value is None else f"{value:.2f}"


HEADER = ("members", "elapsed s", "windows/s", "messages/s", "speed-up", "ideal", "cores used",
          "other load", "cores avail.", "windows per member")


def cells(rows: Sequence[Row], cores: int) -> list[tuple[str, ...]]:
    """The table's cells, one tuple per row (HEADER's columns)."""
    base = baseline(rows)
    lines: list[tuple[str, ...]] = []
    for row in rows:
        median_run = row.median_run
        lines.append((
            str(row.members),
            f"{row.elapsed:.2f}",
            f"{row.windows_per_s:,.1f}",
            f"{row.messages_per_s:,.0f}",
            "-" if base is None else f"{base / row.elapsed:.2f}x",
            f"{min(row.members, cores)}x",
            fmt_cores(median_run.cores_used),
            fmt_cores(median_run.other_load),
            fmt_cores(median_run.cores_available),
            "/".join(str(n) for n in sorted(median_run.windows_by_pid.values(), reverse=True)),
        ))
    return lines


def render(rows: Sequence[Row], cores: int) -> str:
    """The rows of one pipeline as an aligned text table."""
    lines = cells(rows, cores)
    widths = [max(len(r[i]) for r in [HEADER, *lines]) for i in range(len(HEADER))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i < len(cells) - 1 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(HEADER), line(["-" * w for w in widths]), *(line(r) for r in lines)])


def diagnose(rows: Sequence[Row], cores: int) -> list[str]:
    """Plain-language notes on runs that fell short of the ideal, from the cores columns."""
    notes = []
    for row in rows:
        run, ideal = row.median_run, min(row.members, cores)
        who = f"{row.pipeline}, {row.members} member(s)"
        if run.other_load is not None and run.other_load > 0.1:
            notes.append(f"note: {who}: other processes on this machine used "
                         f"{run.other_load:.2f} of its {cores} cores during the run")
        if run.cores_available is not None and run.cores_available < 0.9 * ideal:
            notes.append(f"note: {who}: the machine delivered only "
                         f"{run.cores_available:.2f} of {ideal} cores to plain spinning processes around "
                         "the run; the speed-up is bounded by that, not by the library")
        if (run.cores_used is not None and run.cores_available is not None
                and run.cores_used < 0.85 * run.cores_available):
            notes.append(f"note: {who} used {run.cores_used:.2f} cores of "
                         f"{run.cores_available:.2f} available: members were idle part of the time")
    return notes


def render_details(rows: Sequence[Row], work: float) -> str:
    """Per run: the fill, worker CPU against the pure work, take-overs."""
    out = []
    for row in rows:
        for r in row.runs:
            cpu = r.worker_cpu_seconds
            pure = row.windows * work
            overhead = "-" if cpu is None else f"{(cpu - pure) * 1000 / row.windows:.1f} ms/window"
            moved = ("take-overs" if r.pipeline == COUNT else "keys moved")
            out.append(
                f"  {r.pipeline} members={r.members} run={r.repeat}: {r.elapsed:.3f} s, "
                f"fill {r.fill_seconds * 1000:.0f} ms, "
                + (f"partitions shared after {r.balance_seconds:.1f} s, " if r.pipeline == KEYED else "")
                + f"worker CPU {'-' if cpu is None else f'{cpu:.2f}'} s for {pure:.2f} s of work "
                f"(overhead {overhead}), other load {fmt_cores(r.other_load)}, "
                f"cores used {fmt_cores(r.cores_used)} of "
                f"{fmt_cores(r.cores_available)} available ({fmt_cores(r.cores_available_before)} before, "
                f"{fmt_cores(r.cores_available_after)} after), {moved} {r.taken_over}, "
                f"lost leases {r.lost}"
            )
    return "\n".join(out)


def render_rebalance(r: Rebalance) -> str:
    """One line on the ``--rebalance`` run."""
    return (f"rebalance (keyed-time, 2 members, lease_timeout {r.lease_timeout:g} s, {r.partitions} "
            f"partitions): one member SIGKILLed {r.killed_after:.2f} s into the run with {r.windows_at_kill} "
            f"windows in the sink, holding {r.moved} partitions; the survivor held all {r.partitions} "
            f"{r.rebalance_seconds:.2f} s after the kill (bound: lease_timeout + a third = "
            f"{r.lease_timeout * 4 / 3:.1f} s) and the sink was complete {r.complete_seconds:.2f} s after "
            f"it; windows per member {'/'.join(str(n) for n in r.windows_by_pid.values())} "
            "(killed member second), every window exactly once")


def describe(pipeline: str, report: Report) -> str:
    """What a pipeline's runs did, in one sentence."""
    env = report.environment
    if pipeline == COUNT:
        return (f"`count`: `stream(SOURCE, url).count_window({WINDOW}).map(process).sink(SINK)"
                f".run(group=GROUP)`, {env['messages']:,} messages = {env['messages'] // WINDOW:,} windows")
    return (f"`keyed-time`: `stream(SOURCE, url).key_by('k').event_time('t', idle=None)"
            f".fixed_time_window({EVENT_WINDOW}).map(process).sink(SINK).run(group=GROUP)`, "
            f"{env['keys']} keys ({env['keys'] // env['partitions']} in each of {env['partitions']} "
            "partitions), "
            f"{env['keyed_windows_per_key']} windows of {WINDOW} events per key = {env['keyed_windows']:,} "
            f"windows, {env['keyed_messages']:,} events (the last one, far in the future, closes the "
            "last windows)")


def markdown(report: Report) -> str:
    """The report's tables in Markdown, for RESULTS.md."""
    env, out = report.environment, list[str]()
    out.append(f"Python {env['python']}, SQLite {env['sqlite']} (synchronous={env['sqlite_synchronous']}), "
               f"{env['cpu_count']} cores (os.cpu_count(), {env['cpu_affinity']} usable); "
               f"{env['work_s']:g} s CPU per window (a CPU-time spin), lease_timeout "
               f"{env['lease_timeout_s']:g} s, median of {env['repeat']} run(s) per row; "
               f"{env['seconds']:g} s in all.")
    for pipeline in PIPELINES:
        rows = report.pipeline_rows(pipeline)
        if not rows:
            continue
        out += ["", describe(pipeline, report) + ":", "",
                "| " + " | ".join(HEADER) + " |", "|" + "---:|" * (len(HEADER) - 1) + "---|"]
        out += ["| " + " | ".join(r) + " |" for r in cells(rows, report.cores)]
    if report.rebalance is not None:
        out += ["", render_rebalance(report.rebalance) + "."]
    notes = diagnose(report.rows, report.cores)
    if notes:
        out += [""] + [f"- {n.removeprefix('note: ')}" for n in notes]
    return "\n".join(out)


def parse_members(text: str) -> list[int]:
    """``1,2,4`` -> ``[1, 2, 4]``."""
    try:
        members = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not members or any(m < 1 for m in members):
        raise argparse.ArgumentTypeError(f"member counts must be >= 1: {text!r}")
    return members


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pipeline", choices=(COUNT, KEYED, "both"), default="both",
                        help="which pipeline to measure (default: %(default)s)")
    parser.add_argument("--messages", type=int, default=MESSAGES,
                        help=f"source messages per run, a multiple of {WINDOW} (%(default)s); keyed-time: "
                             f"rounded down to whole windows of {WINDOW} events per key")
    parser.add_argument("--members", type=parse_members, default=list(MEMBERS),
                        help="comma-separated member counts (default: 1,2,4)")
    parser.add_argument("--work", type=float, default=WORK, help="CPU seconds per window (%(default)s)")
    parser.add_argument("--keys", type=int, default=KEYS,
                        help="keyed-time: keys, a multiple of --partitions (%(default)s)")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS,
                        help="keyed-time: the group's partitions (%(default)s, the library's default)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs per member count; the median is reported (%(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a run may take to fill the sink (default: 60 + 5 x the 1-member "
                             "pure work)")
    parser.add_argument("--lease-timeout", type=float, default=LEASE_TIMEOUT,
                        help="the workers' lease_timeout in seconds (%(default)s)")
    parser.add_argument("--rebalance", action="store_true",
                        help="also time a keyed-time member's SIGKILL until the survivor holds every "
                             "partition")
    parser.add_argument("--rebalance-lease", type=float, default=REBALANCE_LEASE,
                        help="the lease_timeout of the --rebalance run (%(default)s)")
    parser.add_argument("--settle", type=float, default=SETTLE,
                        help="seconds between the last 'ready' and the fill (%(default)s)")
    parser.add_argument("--sqlite-synchronous", choices=("full", "normal"), default="full",
                        help="PRAGMA synchronous of the store (default: %(default)s, the store's default)")
    parser.add_argument("--calibrate", type=float, default=CALIBRATE,
                        help="seconds to measure the cores available before and after each run; 0 skips it "
                             "(%(default)s)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    args.pipelines = list(PIPELINES) if args.pipeline == "both" else [args.pipeline]
    if args.messages < WINDOW or args.messages % WINDOW:
        parser.error(f"--messages must be a positive multiple of the window size {WINDOW}: without a "
                     "window timeout, a partial last window is never leased")
    if args.work < 0 or args.repeat < 1 or args.settle < 0 or args.lease_timeout <= 0 or args.calibrate < 0 \
            or args.rebalance_lease <= 0:
        parser.error("--work, --settle and --calibrate must be >= 0, --repeat >= 1, --lease-timeout and "
                     "--rebalance-lease > 0")
    if not 1 <= args.partitions <= 1024 or args.keys < args.partitions or args.keys % args.partitions:
        parser.error("--keys must be a positive multiple of --partitions (1 to 1024)")
    if args.timeout is None:
        args.timeout = 60.0 + 5 * (args.messages // WINDOW) * args.work
    return args


def run_benchmark(args: argparse.Namespace) -> Report:
    """Every run ``args`` asks for (``parse_args``); raises on a failed run or self-check."""
    cores = os.cpu_count() or 1
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    rows: list[Row] = []
    rebalance: Rebalance | None = None
    started = time.perf_counter()
    keyed = keyed_input(args.messages, args.keys, args.partitions)
    workdir = Path(tempfile.mkdtemp(prefix="minibatch-groups-"))
    url = f"sqlite://{workdir / 'groups.db'}?synchronous={args.sqlite_synchronous}"
    try:
        for pipeline in args.pipelines:
            for members in args.members:
                row = (Row(pipeline, members, args.messages, args.messages // WINDOW) if pipeline == COUNT
                       else Row(pipeline, members, keyed.messages, keyed.windows))
                for repeat in range(1, args.repeat + 1):
                    print(f"{pipeline}: {members} member(s), run {repeat} ...", file=sys.stderr, flush=True)
                    row.runs.append(run_once(url, pipeline, members, repeat, args, workdir))
                rows.append(row)
        if args.rebalance:
            print("keyed-time: rebalance after a SIGKILL ...", file=sys.stderr, flush=True)
            rebalance = rebalance_once(url, args, workdir)
    finally:
        close_all()
        shutil.rmtree(workdir, ignore_errors=True)
    environment: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_synchronous": args.sqlite_synchronous,
        "cpu_count": cores,
        "cpu_affinity": affinity,
        "window": WINDOW,
        "messages": args.messages,
        "keys": args.keys,
        "partitions": args.partitions,
        "keyed_windows_per_key": keyed.per_key,
        "keyed_windows": keyed.windows,
        "keyed_messages": keyed.messages,
        "work_s": args.work,
        "lease_timeout_s": args.lease_timeout,
        "settle_s": args.settle,
        "repeat": args.repeat,
        "calibrate_s": args.calibrate,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return Report(environment, rows, rebalance, cores)


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the tables (and write ``--json``); non-zero on any failure."""
    args = parse_args(argv)
    try:
        report = run_benchmark(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("benchmark failed", file=sys.stderr)
        return 1
    env, cores = report.environment, report.cores
    print(
        f"Python {env['python']}, SQLite {env['sqlite']} "
        f"(synchronous={args.sqlite_synchronous}); {cores} cores (os.cpu_count()"
        + (f", {env['cpu_affinity']} usable" if env["cpu_affinity"] != cores else "") + "); "
        f"{args.work:g} s CPU per window"
    )
    for pipeline in PIPELINES:
        rows = report.pipeline_rows(pipeline)
        if rows:
            pure = rows[0].windows * args.work
            print(f"\n{describe(pipeline, report)} ({pure:.1f} s of pure work per run)")
            print(render(rows, cores))
    print(f"\nideal = min(members, cores): on {cores} cores the ceiling is about {cores}x. "
          "cores used = members' CPU time / elapsed; other load = CPU time of all other processes / "
          "elapsed; cores avail. = CPU time per second that as many spinning processes (no store) got "
          "before and after the run"
          + ("" if args.repeat == 1 else f"; each row is the median of {args.repeat} runs"))
    for note in diagnose(report.rows, cores):
        print(note)
    print(render_details(report.rows, args.work))
    if report.rebalance is not None:
        print(render_rebalance(report.rebalance))
    print(f"total {env['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
