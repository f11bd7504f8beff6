"""Consumer memory against backlog size: a huge backlog is never loaded at once.

For each backlog size (default 10,000 and 1,000,000 messages) this fills a
fresh SQLite store (a temporary file) with that many messages, using
``Stream.extend`` in batches of 10,000, then starts a consumer in a fresh
Python subprocess, so that the peak RSS it reports is its own::

    stream(name, url).count_window(100).map(lambda w: len(w)).run(
        consumer="bench", max_windows=size // 100)

The consumer processes the whole backlog and prints, as JSON on stdout, its
peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux), the
time the run took and its throughput. For reference, a baseline subprocess
only imports ``minibatch_rx`` and opens the same store: its peak RSS is the
floor every consumer starts from.

The pass criterion is ``peak_RSS(largest backlog) / peak_RSS(smallest) <= 1.2``:
a consumer that pages through the store stays flat, one that loaded the
backlog would grow with it. The script exits non-zero if the ratio exceeds
the target, or if a consumer did not process exactly the backlog.

Measuring pitfall: on Linux, ``exec`` folds the peak RSS of the process being
replaced into the new program's ``ru_maxrss``, and ``subprocess`` starts
children with ``vfork``, so a plain child reports at least its *parent's* peak
RSS. The store is therefore filled in a subprocess too (the parent stays
small), and every child is started through ``/bin/sh``, which forks it: its
``ru_maxrss`` then starts from the shell's ~1 MiB. Children also report
``VmHWM`` (their own peak, from ``/proc``) as a cross-check.

``--tracemalloc`` adds, after the measured runs, one traced consumer run per
size (under another consumer name) that reports the peak of Python
allocations and the source lines whose allocations grew most between the
start and the last window of the run: a diagnosis aid. Tracing slows the
consumer several times, so those runs are not timed and do not count for the
criterion.

Usage::

    python benchmarks/bench_backlog_memory.py [--sizes 10000,1000000] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SIZES = (10_000, 1_000_000)
QUICK_SIZES = (10_000, 200_000)
FILL_BATCH = 10_000
WINDOW = 100
CONSUMER = "bench"
STREAM = "backlog"
TARGET_RATIO = 1.2
CHILD_TIMEOUT = 1800.0  # seconds per subprocess; a 1,000,000 backlog takes about a minute
TRACE_TOP = 10
SHELL = "/bin/sh"

Report = dict[str, Any]


@dataclass
class Result:
    """One backlog: its fill, its consumer run and its baseline."""

    backlog: int
    fill_seconds: float
    peak_rss_kib: int
    seconds: float
    windows: int
    position: int
    baseline_peak_rss_kib: int
    vmhwm_kib: int | None = None
    end_rss_kib: int | None = None
    baseline_vmhwm_kib: int | None = None

    @property
    def rate(self) -> float:
        return self.backlog / self.seconds if self.seconds else 0.0

    def as_json(self) -> Report:
        data = asdict(self)
        data.update(peak_rss_mib=self.peak_rss_kib / 1024, msgs_per_s=self.rate)
        return data


# -- the subprocesses -----------------------------------------------------------------
# They run this file again with ``--child MODE URL SIZE``. The module imports only the
# standard library; ``minibatch_rx`` is imported by the child functions.
def peak_rss_kib() -> int:
    """Peak resident set size of this process, in KiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``), where there is one."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_report() -> Report:
    return {
        "peak_rss_kib": peak_rss_kib(),
        "vmhwm_kib": proc_status_kib("VmHWM"),
        "end_rss_kib": proc_status_kib("VmRSS"),
    }


def child_fill(url: str, size: int) -> Report:
    """Store ``size`` messages with ``Stream.extend`` in batches of ``FILL_BATCH``."""
    from minibatch_rx.store import close_all
    from minibatch_rx.streams import Stream

    target = Stream.get_or_create(STREAM, url)
    started = time.perf_counter()
    for start in range(0, size, FILL_BATCH):
        stop = min(start + FILL_BATCH, size)
        target.extend({"sensor": "s-1", "i": i, "value": 1.5, "tags": ["a", "b"]} for i in range(start, stop))
    seconds = time.perf_counter() - started
    stored = target.count()
    close_all()  # checkpoints the WAL: the consumer finds the file as after a restart
    return {"seconds": seconds, "stored": stored}


def child_baseline(url: str) -> Report:
    """Import the package and open the store, nothing more."""
    from minibatch_rx import stream

    source = stream(STREAM, url)
    source.position(CONSUMER)  # one query, so the store's connection is really used
    return memory_report()


def traced_len(windows: int, report: Report) -> Callable[[Any], int]:
    """``len`` of a window that, at the last of ``windows`` windows, records into
    ``report`` the traced peak and what grew since it was made."""
    import tracemalloc

    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    seen = 0

    def fn(window: Any) -> int:
        nonlocal seen
        seen += 1
        if seen == windows:  # the last window: all the run's state is still alive
            after = tracemalloc.take_snapshot()
            report["traced_peak_kib"] = tracemalloc.get_traced_memory()[1] // 1024
            report["top_growth"] = [
                {"where": str(s.traceback), "size_diff_kib": s.size_diff / 1024, "count_diff": s.count_diff}
                for s in after.compare_to(before, "lineno")[:TRACE_TOP]
            ]
        return len(window)

    return fn


def child_consume(url: str, size: int, trace: bool) -> Report:
    """Process the whole backlog of ``size`` messages in windows of ``WINDOW``."""
    from minibatch_rx import stream

    source = stream(STREAM, url)
    windows = size // WINDOW
    report: Report = {}
    consumer = f"{CONSUMER}-trace" if trace else CONSUMER
    fn = traced_len(windows, report) if trace else (lambda w: len(w))
    started = time.perf_counter()
    handle = source.count_window(WINDOW).map(fn).run(consumer=consumer, max_windows=windows)
    seconds = time.perf_counter() - started
    return {
        **memory_report(),
        "seconds": seconds,
        "msgs_per_s": size / seconds if seconds else 0.0,
        "windows": handle.windows,
        "position": handle.position,
        "committed": source.position(consumer),
        **report,
    }


def child_main(mode: str, url: str, size: int) -> int:
    if mode == "fill":
        report = child_fill(url, size)
    elif mode == "baseline":
        report = child_baseline(url)
    elif mode in ("consume", "trace"):
        report = child_consume(url, size, trace=mode == "trace")
    else:
        print(f"unknown child mode {mode!r}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def run_child(mode: str, url: str, size: int, timeout: float) -> Report:
    """Run this script as a fresh ``--child`` process and return its JSON report.

    Through ``/bin/sh`` (when there is one), so that the child is forked by the
    shell and its ``ru_maxrss`` does not start from this process's peak. The
    trailing ``exit`` stops the shell from ``exec``-ing the command in its place.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, url, str(size)]
    if os.path.exists(SHELL):
        command = [SHELL, "-c", '"$@"; exit $?', "sh", *command]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)  # the shell and its child: their own group
            process.wait()
            raise
    if process.returncode != 0:
        raise RuntimeError(
            f"{mode} subprocess for {size:,} messages exited with {process.returncode}:\n{stderr}"
        )
    if stderr.strip():
        print(stderr.rstrip(), file=sys.stderr)
    report: Report = json.loads(stdout.strip().splitlines()[-1])
    return report


# -- the parent -----------------------------------------------------------------------
def measure(
    size: int, workdir: Path, synchronous: str, timeout: float, trace: bool
) -> tuple[Result, Report | None]:
    """Fill a store with ``size`` messages, consume it in a subprocess, and
    measure the baseline on it; with ``trace``, also the traced report."""
    path = workdir / f"backlog-{size}.db"
    url = f"sqlite://{path}?synchronous={synchronous}"
    try:
        print(f"filling {size:,} messages ...", file=sys.stderr, flush=True)
        filled = run_child("fill", url, size, timeout)
        if filled["stored"] != size:
            raise RuntimeError(f"self-check failed: filled {filled['stored']:,} messages of {size:,}")
        print(f"consuming {size:,} messages in a subprocess ...", file=sys.stderr, flush=True)
        report = run_child("consume", url, size, timeout)
        expected = size // WINDOW
        if report["windows"] != expected or report["position"] != size or report["committed"] != size:
            raise RuntimeError(
                f"self-check failed for {size:,}: {report['windows']:,} windows of {expected:,}, "
                f"position {report['position']:,}, committed {report['committed']:,}"
            )
        baseline = run_child("baseline", url, size, timeout)
        result = Result(
            backlog=size,
            fill_seconds=filled["seconds"],
            peak_rss_kib=report["peak_rss_kib"],
            seconds=report["seconds"],
            windows=report["windows"],
            position=report["position"],
            baseline_peak_rss_kib=baseline["peak_rss_kib"],
            vmhwm_kib=report["vmhwm_kib"],
            end_rss_kib=report["end_rss_kib"],
            baseline_vmhwm_kib=baseline["vmhwm_kib"],
        )
        traced = None
        if trace:
            print(f"tracing a consumer of {size:,} messages ...", file=sys.stderr, flush=True)
            traced = run_child("trace", url, size, timeout)
        return result, traced
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- report ---------------------------------------------------------------------------
def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:,.1f}"


def render(results: list[Result]) -> str:
    header = (
        "backlog",
        "fill s",
        "peak RSS MiB",
        "VmHWM MiB",
        "end RSS MiB",
        "baseline MiB",
        "consume s",
        "msgs/s",
    )
    rows = [
        (
            f"{r.backlog:,}",
            f"{r.fill_seconds:.1f}",
            mib(r.peak_rss_kib),
            mib(r.vmhwm_kib),
            mib(r.end_rss_kib),
            mib(r.baseline_peak_rss_kib),
            f"{r.seconds:.1f}",
            f"{r.rate:,.0f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def render_trace(size: int, traced: Report) -> str:
    lines = [
        f"tracemalloc, backlog {size:,}: traced peak {traced.get('traced_peak_kib', 0) / 1024:,.1f} MiB "
        f"(peak RSS {mib(traced['peak_rss_kib'])} MiB, slowed by tracing); top growth over the run:"
    ]
    for stat in traced.get("top_growth", []):
        lines.append(
            f"  {stat['size_diff_kib']:+10,.1f} KiB {stat['count_diff']:+8,d} blocks  {stat['where']}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sizes",
        default=",".join(str(s) for s in SIZES),
        help=f"comma-separated backlog sizes, multiples of {WINDOW} (default: %(default)s)",
    )
    quick = " and ".join(f"{s:,}" for s in QUICK_SIZES)
    parser.add_argument("--quick", action="store_true", help=f"backlogs of {quick} (smoke run)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("full", "normal"),
        default="full",
        help="PRAGMA synchronous of the store (default: %(default)s, the store's default)",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also run one traced consumer per size and report what its allocations grew by",
    )
    parser.add_argument(
        "--timeout", type=float, default=CHILD_TIMEOUT, help="seconds per subprocess (%(default)s)"
    )
    parser.add_argument("--child", nargs=3, metavar=("MODE", "URL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return args
    if args.quick:
        args.sizes = list(QUICK_SIZES)
        return args
    try:
        sizes = sorted({int(s.strip().replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--sizes: not a comma-separated list of integers: {args.sizes!r}")
    if len(sizes) < 2 or any(s < WINDOW or s % WINDOW for s in sizes):
        parser.error(f"--sizes needs at least two different positive multiples of {WINDOW}")
    args.sizes = sizes
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        mode, url, size = args.child
        return child_main(mode, url, int(size))

    results: list[Result] = []
    traces: dict[int, Report] = {}
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="minibatch-backlog-"))
    try:
        for size in args.sizes:
            result, traced = measure(size, workdir, args.sqlite_synchronous, args.timeout, args.tracemalloc)
            results.append(result)
            if traced is not None:
                traces[size] = traced
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("benchmark failed", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    small, large = results[0], results[-1]
    ratio = large.peak_rss_kib / small.peak_rss_kib
    passed = ratio <= TARGET_RATIO
    environment: Report = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_synchronous": args.sqlite_synchronous,
        "fill_batch": FILL_BATCH,
        "window": WINDOW,
        "sizes": args.sizes,
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
    }

    print(
        f"Python {environment['python']}, SQLite {environment['sqlite']} "
        f"(synchronous={args.sqlite_synchronous}), count_window({WINDOW}), one consumer subprocess "
        "per backlog"
    )
    print(render(results))
    print(
        "peak RSS: ru_maxrss of the consumer; VmHWM: its own peak from /proc; "
        "baseline: a subprocess that only imports minibatch_rx and opens the store"
    )
    print(
        f"peak RSS ratio {large.backlog:,} / {small.backlog:,}: {ratio:.3f} "
        f"(target <= {TARGET_RATIO}) {'PASS' if passed else 'FAIL'}"
    )
    for r in results:
        if r.vmhwm_kib is not None and r.peak_rss_kib > 1.05 * r.vmhwm_kib:
            print(
                f"warning: backlog {r.backlog:,}: ru_maxrss exceeds VmHWM by more than 5%; "
                "the child's ru_maxrss includes memory that is not its own",
                file=sys.stderr,
            )
    for size, traced in traces.items():
        print(render_trace(size, traced))
    print(f"total {environment['seconds']} s")
    if args.json:
        payload = {
            "environment": environment,
            "results": [r.as_json() for r in results],
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "passed": passed,
            "tracemalloc": {str(k): v for k, v in traces.items()},
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    if not passed:
        print(
            f"FAIL: the consumer of {large.backlog:,} messages peaked at {mib(large.peak_rss_kib)} MiB, "
            f"{ratio:.2f}x the {mib(small.peak_rss_kib)} MiB of the consumer of {small.backlog:,}: "
            f"more than {TARGET_RATIO}x, so its memory grows with the backlog "
            "(rerun with --tracemalloc to see what grows)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
