"""Consumer-group throughput against the number of members, for a CPU-bound function.

On the sqlite store (a temporary file), for each member count (default 1, 2
and 4) this starts that many worker processes (``tests/workers/consumer.py``)
in one fresh consumer group. Each worker runs::

    stream(SOURCE, url).count_window(20).map(process).sink(SINK).run(group=GROUP)

where ``process`` burns ``--work`` seconds of CPU per window (default 0.05 s,
measured with ``time.process_time``, so it is real work, not a sleep) and
returns one output per input message, recording the source seq and the
worker's pid. The sink stream is idempotent (keyed on the group and the source
seq range), so a window processed twice still leaves one output per message.

Every run gets its own source stream, group and sink stream in the same
database. A fair start needs care: a worker begins leasing windows as soon as
it is up, and start-up (a Python interpreter importing minibatch_rx) takes a
noticeable fraction of a second, so with a pre-filled source the first worker
would be well ahead before the last one joined. The script therefore:

1. starts all the run's workers on an empty source stream and waits for each
   one's ``ready`` line (start-up is excluded from the timing);
2. waits a short settle period (``--settle``, default 0.5 s) so that every
   member is idle-polling the empty stream inside its group feed;
3. starts the clock and appends all M source messages with **one**
   ``Stream.extend`` call (one SQLite transaction: every member sees the
   whole backlog at the same instant; the append is part of the timed region);
4. polls the sink stream's last seq (cheap, every 10 ms, bounded by
   ``--timeout``) until it holds all M outputs, and stops the clock.

After each run (outside the timed region) it checks that the group's
committed position reached M, that the sink holds every source seq exactly
once, and that every member processed at least one window (outputs carry the
worker's pid). It also reads each worker's CPU time (``/proc``, Linux) over
the timed region and counts lease take-overs reported on the workers' stderr.
Workers are killed at the end of each run, and on any error; the temporary
files are removed; the exit status is non-zero on any failure.

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
spent CPU on coordination (each window takes three SQLite write
transactions, serialised by the write lock: lease, sink, complete); the
per-run details give the workers' CPU time beyond the pure work, per window.
If ``cores used`` is well below ``cores avail.``, members sat idle (waiting
for the write lock, or polling in the group feed).

Usage::

    python benchmarks/bench_groups.py [--messages 4000] [--members 1,2,4] [--work 0.05] [--json PATH]
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

from minibatch_rx.store import close_all
from minibatch_rx.streams import Stream

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "consumer.py"
WINDOW = 20
MESSAGES = 4_000
MEMBERS = (1, 2, 4)
WORK = 0.05
LEASE_TIMEOUT = 10.0  # seconds; far above a window's run time, so no lease expires in a healthy run
READY_TIMEOUT = 60.0  # seconds for all of a run's workers to print "ready"
SETTLE = 0.5  # seconds between the last "ready" and the fill
POLL = 0.01  # seconds between checks of the sink stream
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

    @property
    def cores_available(self) -> float | None:
        if self.cores_available_before is None or self.cores_available_after is None:
            return None
        return (self.cores_available_before + self.cores_available_after) / 2

    @property
    def cores_used(self) -> float | None:
        return None if self.worker_cpu_seconds is None else self.worker_cpu_seconds / self.elapsed

    @property
    def other_load(self) -> float | None:
        return None if self.other_cpu_seconds is None else self.other_cpu_seconds / self.elapsed

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cores_used"] = self.cores_used
        data["other_load"] = self.other_load
        data["cores_available"] = self.cores_available
        data["windows_by_pid"] = {str(pid): n for pid, n in self.windows_by_pid.items()}
        return data


@dataclass
class Row:
    """One member count, over its repeats (the median run is reported)."""

    members: int
    messages: int
    runs: list[Run] = field(default_factory=list)

    @property
    def windows(self) -> int:
        return self.messages // WINDOW

    @property
    def median_run(self) -> Run:
        """The run of median elapsed time (the lower one of an even number)."""
        ordered = sorted(self.runs, key=lambda r: r.elapsed)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def elapsed(self) -> float:
        return self.median_run.elapsed

    @property
    def windows_per_s(self) -> float:
        return self.windows / self.elapsed

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.elapsed

    def as_json(self, baseline: float | None, cores: int) -> dict[str, Any]:
        return {
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


def check(condition: bool, message: str) -> None:
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


def start_workers(count: int, url: str, source: str, sink: str, group: str, work: float,
                  lease_timeout: float, workdir: Path, workers: list[Worker]) -> None:
    """Start ``count`` consumers; each is added to ``workers`` as soon as it exists,
    so the caller can kill it whatever happens next."""
    for i in range(count):
        stderr_path = workdir / f"{group}.{i}.stderr"
        stderr_file = stderr_path.open("w")
        command = [sys.executable, str(WORKER), url, source, sink, "--group", group,
                   "--size", str(WINDOW), "--work", repr(work), "--lease-timeout", repr(lease_timeout)]
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


# -- one run ------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], bool], timeout: float, workers: Sequence[Worker], what: str) -> float:
    """Poll ``predicate()`` every POLL seconds until true; the time it became true
    (``time.perf_counter``). Raises after ``timeout`` or if a worker died."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        check_alive(workers)
        time.sleep(POLL)


def run_once(url: str, members: int, repeat: int, args: argparse.Namespace, workdir: Path) -> Run:
    tag = f"m{members}.r{repeat}"
    source = Stream.get_or_create(f"{PREFIX}.{tag}.in", url)
    sink = Stream.get_or_create(f"{PREFIX}.{tag}.out", url)
    group = f"{PREFIX}.{tag}.group"
    messages = args.messages
    docs = [{"producer": 0, "i": i} for i in range(messages)]
    available_before = cpu_capacity(members, args.calibrate) if args.calibrate > 0 else None
    workers: list[Worker] = []
    try:
        start_workers(members, url, source.name, sink.name, group, args.work, args.lease_timeout,
                      workdir, workers)
        wait_ready(workers, READY_TIMEOUT)
        time.sleep(args.settle)
        check_alive(workers)
        check(source.count() == 0 and sink.count() == 0, "fresh streams are not empty")
        pids = [w.pid for w in workers]

        cpu_before, busy_before, own_before = cpu_seconds(pids), machine_busy_seconds(), own_cpu_seconds()
        started = time.perf_counter()
        source.extend(docs)  # one transaction: the whole backlog appears at once
        filled = time.perf_counter()
        finished = wait_for(lambda: sink.last_seq() >= messages, args.timeout, workers,
                            f"{messages:,} outputs in {sink.name!r} ({members} members)")
        cpu_after, busy_after, own_after = cpu_seconds(pids), machine_busy_seconds(), own_cpu_seconds()
        elapsed = finished - started

        # Not timed: every window acknowledged, so no member still holds a lease.
        wait_for(lambda: source.positions().get(group, 0) >= messages, ACK_TIMEOUT, workers,
                 f"group {group!r} to acknowledge seq {messages:,}")
        check_alive(workers)
        stderr = "".join(w.stderr() for w in workers)
    finally:
        kill_workers(workers)

    workers_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    other_cpu = (None if workers_cpu is None or busy_before is None or busy_after is None
                 else max(0.0, busy_after - busy_before - workers_cpu - (own_after - own_before)))
    windows_by_pid = verify(source, sink, messages, pids, group)
    available_after = cpu_capacity(members, args.calibrate) if args.calibrate > 0 else None
    return Run(
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
        taken_over=stderr.count("took over expired lease"),
        lost=stderr.count("expired before it was completed"),
    )


def verify(source: Stream, sink: Stream, messages: int, pids: Sequence[int], group: str) -> dict[int, int]:
    """Check the run's output; return the windows each member processed, by pid."""
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


# -- report ---------------------------------------------------------------------------
def baseline(rows: Sequence[Row]) -> float | None:
    """The 1-member elapsed time speed-ups are relative to, if 1 was measured."""
    return next((row.elapsed for row in rows if row.members == 1), None)


def fmt_cores(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(rows: Sequence[Row], cores: int) -> str:
    header = ("members", "elapsed s", "windows/s", "messages/s", "speed-up", "ideal", "cores used",
              "other load", "cores avail.", "windows per member")
    base = baseline(rows)
    lines = []
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
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i < len(cells) - 1 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in lines)])


def diagnose(rows: Sequence[Row], cores: int) -> list[str]:
    """Plain-language notes on runs that fell short of the ideal, from the cores columns."""
    notes = []
    for row in rows:
        run, ideal = row.median_run, min(row.members, cores)
        if run.other_load is not None and run.other_load > 0.1:
            notes.append(f"note: {row.members} member(s): other processes on this machine used "
                         f"{run.other_load:.2f} of its {cores} cores during the run")
        if run.cores_available is not None and run.cores_available < 0.9 * ideal:
            notes.append(f"note: {row.members} member(s): the machine delivered only "
                         f"{run.cores_available:.2f} of {ideal} cores to plain spinning processes around "
                         "the run; the speed-up is bounded by that, not by the library")
        if (run.cores_used is not None and run.cores_available is not None
                and run.cores_used < 0.85 * run.cores_available):
            notes.append(f"note: {row.members} member(s) used {run.cores_used:.2f} cores of "
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
            out.append(
                f"  members={r.members} run={r.repeat}: {r.elapsed:.3f} s, "
                f"fill {r.fill_seconds * 1000:.0f} ms, "
                f"worker CPU {'-' if cpu is None else f'{cpu:.2f}'} s for {pure:.2f} s of work "
                f"(overhead {overhead}), other load {fmt_cores(r.other_load)}, "
                f"cores used {fmt_cores(r.cores_used)} of "
                f"{fmt_cores(r.cores_available)} available ({fmt_cores(r.cores_available_before)} before, "
                f"{fmt_cores(r.cores_available_after)} after), take-overs {r.taken_over}, "
                f"lost leases {r.lost}"
            )
    return "\n".join(out)


def parse_members(text: str) -> list[int]:
    try:
        members = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not members or any(m < 1 for m in members):
        raise argparse.ArgumentTypeError(f"member counts must be >= 1: {text!r}")
    return members


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=MESSAGES,
                        help=f"source messages per run, a multiple of {WINDOW} (%(default)s)")
    parser.add_argument("--members", type=parse_members, default=list(MEMBERS),
                        help="comma-separated member counts (default: 1,2,4)")
    parser.add_argument("--work", type=float, default=WORK, help="CPU seconds per window (%(default)s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs per member count; the median is reported (%(default)s)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a run may take to fill the sink (default: 60 + 5 x the 1-member "
                             "pure work)")
    parser.add_argument("--lease-timeout", type=float, default=LEASE_TIMEOUT,
                        help="the workers' lease_timeout in seconds (%(default)s)")
    parser.add_argument("--settle", type=float, default=SETTLE,
                        help="seconds between the last 'ready' and the fill (%(default)s)")
    parser.add_argument("--sqlite-synchronous", choices=("full", "normal"), default="full",
                        help="PRAGMA synchronous of the store (default: %(default)s, the store's default)")
    parser.add_argument("--calibrate", type=float, default=CALIBRATE,
                        help="seconds to measure the cores available before and after each run; 0 skips it "
                             "(%(default)s)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.messages < WINDOW or args.messages % WINDOW:
        parser.error(f"--messages must be a positive multiple of the window size {WINDOW}: without a "
                     "window timeout, a partial last window is never leased")
    if args.work < 0 or args.repeat < 1 or args.settle < 0 or args.lease_timeout <= 0 or args.calibrate < 0:
        parser.error("--work, --settle and --calibrate must be >= 0, --repeat >= 1, --lease-timeout > 0")
    if args.timeout is None:
        args.timeout = 60.0 + 5 * (args.messages // WINDOW) * args.work
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cores = os.cpu_count() or 1
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    rows: list[Row] = []
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="minibatch-groups-"))
    url = f"sqlite://{workdir / 'groups.db'}?synchronous={args.sqlite_synchronous}"
    try:
        for members in args.members:
            row = Row(members, args.messages)
            for repeat in range(1, args.repeat + 1):
                print(f"{members} member(s), run {repeat} ...", file=sys.stderr, flush=True)
                row.runs.append(run_once(url, members, repeat, args, workdir))
            rows.append(row)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("benchmark failed", file=sys.stderr)
        return 1
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
        "work_s": args.work,
        "lease_timeout_s": args.lease_timeout,
        "settle_s": args.settle,
        "repeat": args.repeat,
        "calibrate_s": args.calibrate,
        "seconds": round(time.perf_counter() - started, 1),
    }
    windows = args.messages // WINDOW
    print(
        f"Python {environment['python']}, SQLite {environment['sqlite']} "
        f"(synchronous={args.sqlite_synchronous}); {cores} cores (os.cpu_count()"
        + (f", {affinity} usable" if affinity != cores else "") + "); "
        f"{args.messages:,} messages = {windows:,} windows of {WINDOW}, {args.work:g} s CPU per window "
        f"({windows * args.work:.1f} s of pure work per run)"
    )
    print(render(rows, cores))
    print(f"ideal = min(members, cores): on {cores} cores the ceiling is about {cores}x. "
          "cores used = members' CPU time / elapsed; other load = CPU time of all other processes / "
          "elapsed; cores avail. = CPU time per second that as many spinning processes (no store) got "
          "before and after the run"
          + ("" if args.repeat == 1 else f"; each row is the median of {args.repeat} runs"))
    for note in diagnose(rows, cores):
        print(note)
    print(render_details(rows, args.work))
    print(f"total {environment['seconds']} s")
    if args.json:
        base = baseline(rows)
        payload = {"environment": environment, "results": [r.as_json(base, cores) for r in rows]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
