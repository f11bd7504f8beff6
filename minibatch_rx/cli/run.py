"""``minibatch run MODULE:ATTR``: run a pipeline defined in a module until
Ctrl-C or SIGTERM, showing how it catches up, and stop it with its position
committed."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from minibatch_rx.cli.common import (
    FAILED,
    INTERRUPTED,
    OK,
    Abort,
    CommandError,
    UsageError,
    human_age,
    print_json,
    stop_signals,
    store_url,
)
from minibatch_rx.partition_group import GroupMemberHandle
from minibatch_rx.pipeline import Pipeline
from minibatch_rx.running import PipelineHandle
from minibatch_rx.store.url import redact
from minibatch_rx.streams import Stream

TICK = 1.0
"""Seconds between progress updates on a terminal."""
RATE_SPAN = 5.0
"""The rate shown is over about this many seconds."""
log = logging.getLogger("minibatch_rx.cli")


def load_pipeline(spec: str) -> Pipeline[Any, Any]:
    """The pipeline ``spec`` names: ``module:attr`` or ``path/to/file.py:attr``
    (the current folder is importable), where ``attr`` (dotted for nested
    names) is a Pipeline or a function of no arguments returning one."""
    module_part, colon, attr = spec.rpartition(":")
    if not colon or not module_part or not attr:
        raise UsageError(f"{spec!r} is not MODULE:ATTRIBUTE (e.g. jobs:pipeline or jobs/etl.py:build)")
    module = _import(module_part)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"{module_part!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if isinstance(target, Pipeline):
        return target
    if isinstance(target, Stream) or not callable(target):
        raise UsageError(f"{spec} is {_a(type(target).__name__)}, not a Pipeline (nor a function "
                         "returning one); e.g. pipeline = stream('in').count_window(10).map(fn).sink('out')")
    try:
        made = target()
    except TypeError as error:
        if error.__traceback__ is not None and error.__traceback__.tb_next is None:
            raise UsageError(f"{spec} cannot be called without arguments: {error}") from None
        raise
    if not isinstance(made, Pipeline):
        raise UsageError(f"{spec}() returned {_a(type(made).__name__)}, not a Pipeline")
    return made


def _eta(seconds: float) -> str:
    return "<1s" if seconds < 1 else "~" + human_age(seconds)


def _a(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _import(module_part: str) -> ModuleType:
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        path = Path(module_part if module_part.endswith(".py") else module_part + ".py").resolve()
        if not path.is_file():
            raise UsageError(f"cannot load {module_part!r}: no file {path}")
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot load {module_part!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as error:
        if error.name is not None and module_part.startswith(error.name):
            raise UsageError(f"no module named {module_part!r} (looked in {os.getcwd()} "
                             "and sys.path)") from None
        raise


@dataclass
class Progress:
    """What one update shows: committed position, head, lag and rate."""

    position: int
    head: int
    rate: float
    windows: int
    dead: int

    @property
    def lag(self) -> int:
        """Messages appended but not yet acknowledged."""
        return max(0, self.head - self.position)

    def text(self) -> str:
        """One human line."""
        share = f" ({100 * self.position / self.head:.0f}%)" if self.head else ""
        eta = f", {_eta(self.lag / self.rate)} to catch up" if self.lag and self.rate > 0 else ""
        return (f"position {self.position} / head {self.head}{share}, {self.rate:,.0f} msg/s, "
                f"lag {self.lag}{eta}, {self.windows} windows, {self.dead} dead")

    def fields(self) -> dict[str, Any]:
        """The figures as a JSON object."""
        return {"position": self.position, "head": self.head, "lag": self.lag,
                "rate": round(self.rate, 1), "windows": self.windows, "dead_letters": self.dead}


class Reporter:
    """Progress every second on a terminal (one line, rewritten), else a log
    line every ``interval`` seconds when something moved (and at least once
    a minute when idle); JSON lines with ``--json``."""

    def __init__(self, out: TextIO, as_json: bool, interval: float) -> None:
        self.out, self.as_json, self.interval = out, as_json, interval
        self.tty = out.isatty() and not as_json
        self.last_line = 0.0
        self.last_shown: tuple[int, ...] | None = None

    def show(self, text: str, fields: dict[str, Any], marker: tuple[int, ...], now: float) -> None:
        """Show one progress update (``text``, or ``fields`` as JSON) if it is
        time to; ``marker`` holds the figures whose change counts as moving."""
        if self.tty:
            self.out.write("\r\x1b[K" + text)
            self.out.flush()
            return
        moved = marker != self.last_shown
        if now - self.last_line < (self.interval if moved else max(60.0, self.interval)):
            return
        self.last_line, self.last_shown = now, marker
        self.line(text, {"event": "progress", **fields})

    def line(self, text: str, fields: dict[str, Any]) -> None:
        """A line of its own (a terminal's progress line is cleared first)."""
        if self.tty:
            self.out.write("\r\x1b[K")
        if self.as_json:
            self.out.write(_json_line({"time": datetime.now(UTC).isoformat(), **fields}))
        else:
            self.out.write(f"{datetime.now().astimezone().isoformat(timespec='seconds')} {text}\n")
        self.out.flush()


def _json_line(fields: dict[str, Any]) -> str:
    import json

    return json.dumps(fields, default=str) + "\n"


def run(args: argparse.Namespace) -> int:
    """Load and start the pipeline, report progress, stop cleanly on a signal."""
    if args.metrics_port is not None:
        from minibatch_rx.connectors import MissingExtraError, require

        try:
            require("prometheus_client", "metrics", "--metrics-port")
        except MissingExtraError as error:
            raise CommandError(str(error)) from None
    if args.url is not None:
        os.environ["MINIBATCH_URL"] = store_url(args.url)  # the module's stream() calls resolve to it
    if args.group is None and (args.partitions is not None or args.member is not None):
        raise UsageError("--partitions and --member need --group")
    stop = threading.Event()
    reporter = Reporter(sys.stderr, args.json, args.progress_interval)
    with stop_signals(stop):
        pipeline = load_pipeline(args.pipeline)
        # After the import: a module that configures logging itself keeps its set-up.
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger("minibatch_rx").setLevel(args.log_level.upper())
        source = pipeline.source
        if args.url is not None and source.store.url != redact(store_url(args.url)):
            log.warning("the pipeline reads %r from %s, not from --url %s (its module chose the store)",
                        source.name, source.store.url, redact(store_url(args.url)))
        grouping: dict[str, Any] = {}
        if args.group is not None:
            grouping = {"lease_timeout": args.lease_timeout, "partitions": args.partitions,
                        "member": args.member}
        handle = pipeline.start(consumer=args.consumer, group=args.group, **grouping)
        try:
            if args.metrics_port is not None:
                _serve_metrics(args, handle, reporter)
            return _watch(args, handle, source, stop, reporter)
        except Abort:
            print(f"minibatch run: interrupted again; stopped waiting for consumer {handle.consumer!r} "
                  f"(position {source.position(handle.consumer)} is committed; the window in flight "
                  "is delivered again)", file=sys.stderr)
            return INTERRUPTED


def _serve_metrics(args: argparse.Namespace, handle: PipelineHandle, reporter: Reporter) -> None:
    """Serve the run's metrics to Prometheus until it stops, and say where."""
    try:
        port = handle.serve_metrics(args.metrics_port, args.metrics_addr)
    except OSError as error:
        handle.stop(timeout=args.stop_timeout)
        raise CommandError(f"--metrics-port {args.metrics_port}: cannot serve metrics on "
                           f"{args.metrics_addr}: {error}") from None
    host = f"[{args.metrics_addr}]" if ":" in args.metrics_addr else args.metrics_addr
    url = f"http://{host}:{port}/metrics"
    reporter.line(f"serving metrics at {url}", {"event": "metrics", "url": url, "port": port})


def _watch(args: argparse.Namespace, handle: PipelineHandle, source: Stream, stop: threading.Event,
           reporter: Reporter) -> int:
    name = handle.consumer
    start = _progress(handle, source, 0.0)
    reporter.line(f"running {args.pipeline}: stream {source.name!r} on {source.store.url}, "
                  f"{'group' if args.group else 'consumer'} {name!r}, from position {start.position} "
                  f"(head {start.head})",
                  {"event": "started", "pipeline": args.pipeline, "stream": source.name,
                   "url": source.store.url, "consumer": name, **start.fields()})
    samples = deque([(time.monotonic(), start.position)])  # the rate is over the last RATE_SPAN s
    while not stop.wait(TICK) and handle.running:
        now = time.monotonic()
        progress = _progress(handle, source, 0.0)
        samples.append((now, progress.position))
        while len(samples) > 2 and now - samples[1][0] >= RATE_SPAN:
            samples.popleft()
        then, before = samples[0]
        progress.rate = max(0, progress.position - before) / max(now - then, 1e-6)
        reporter.show(progress.text(), progress.fields(), (progress.position, progress.head), now)
    clean = handle.stop(timeout=args.stop_timeout)
    final = _progress(handle, source, 0.0)
    fields = {"event": "stopped", "stream": source.name, "consumer": name, **final.fields(), "clean": clean}
    if args.json:
        if reporter.tty:
            reporter.out.write("\r\x1b[K")
        print_json(fields)
    else:
        if reporter.tty:
            reporter.out.write("\r\x1b[K")
            reporter.out.flush()
        print(f"stopped: {'group' if args.group else 'consumer'} {name!r} on stream {source.name!r} at "
              f"committed position {final.position} (head {final.head}); {final.windows} windows, "
              f"{final.dead} dead letter(s) this run", flush=True)
    if handle.error is not None:
        print(f"minibatch run: the pipeline failed: {type(handle.error).__name__}: {handle.error}",
              file=sys.stderr)
        return FAILED
    if not clean:
        print(f"minibatch run: gave up waiting after {args.stop_timeout}s; stuck in {handle.stuck}; that "
              "window is delivered again on the next run", file=sys.stderr)
        return FAILED
    return OK


def _progress(handle: PipelineHandle, source: Stream, rate: float) -> Progress:
    # A group run by key partition has a position per partition: its lowest is the group's.
    position = handle.metrics().position if isinstance(handle, GroupMemberHandle) \
        else source.position(handle.consumer)
    return Progress(position, source.last_seq(), rate, handle.windows, handle.dead_letters)
