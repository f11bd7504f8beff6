"""What every ``minibatch`` command shares: errors and exit codes, opening the
store, finding a stream, printing text or JSON, and stopping on a signal."""

from __future__ import annotations

import difflib
import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from minibatch_rx.message import Message
from minibatch_rx.store import Store, open_store, resolve_url
from minibatch_rx.store.url import parse_sqlite_url, redact, scheme_of
from minibatch_rx.streams import Stream

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130
"""Exit codes: done; the work failed (store, data, pipeline); the command line
is wrong (options, values, URL scheme, stream name, MODULE:ATTR); Ctrl-C where
it is not the normal way to stop."""


class CommandError(Exception):
    """A command could not do its work: printed on stderr, exit code 1."""

    exit_code = FAILED


class UsageError(CommandError):
    """The command line is wrong: printed on stderr, exit code 2."""

    exit_code = USAGE


def store_url(url: str | None) -> str:
    """The URL the command works on: ``--url``, else the usual resolution
    (``MINIBATCH_URL``, ``MINIBATCH_MONGO_URL``/``MONGO_URL``, the SQLite default)."""
    resolved = resolve_url(url)
    scheme_of(resolved)
    return resolved


def open_existing(url: str | None) -> Store:
    """The store at ``url``, which must already exist: a command that reads
    does not create an empty SQLite file where a path was mistyped."""
    resolved = store_url(url)
    if scheme_of(resolved) == "sqlite":
        path, _options = parse_sqlite_url(resolved)
        if not path.exists():
            raise CommandError(f"no store at {redact(resolved)}: the SQLite file {path} does not exist")
    return open_store(resolved)


def known_stream(store: Store, name: str) -> Stream:
    """The stream ``name`` of ``store`` (not created), or a :class:`CommandError`
    naming the store and the closest names it does hold."""
    stream = Stream(name, store=store)  # checks the name (InvalidStreamNameError: exit 2)
    names = store.streams()
    if name not in names:
        raise CommandError(f"unknown stream {name!r} in {store.url}{_suggest(name, names)}")
    return stream


def _suggest(name: str, names: list[str]) -> str:
    visible = [n for n in names if not n.startswith("_mb.")]
    close = difflib.get_close_matches(name, visible, n=3)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    if not visible:
        return " (it holds no streams)"
    return "; `minibatch streams` lists them"


def print_json(document: Any) -> None:
    """One JSON document (or one JSON line) on stdout."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def message_json(message: Message) -> dict[str, Any]:
    """A message as a JSON object: ``seq``, ``ts`` (ISO 8601, UTC) and ``data``."""
    return {"seq": message.seq, "ts": message.ts.isoformat(), "data": message.data}


def message_line(message: Message) -> str:
    """A message as one line of text: seq, ingest time, payload as compact JSON."""
    payload = json.dumps(message.data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{message.seq}  {message.ts.isoformat(timespec='milliseconds')}  {payload}"


def age_seconds(ts: datetime, now: datetime | None = None) -> float:
    """Seconds since ``ts`` (never negative: clocks of other producers may run ahead)."""
    return max(0.0, ((now or datetime.now(UTC)) - ts).total_seconds())


def human_age(seconds: float | None) -> str:
    """``'45s'``, ``'12m 5s'``, ``'3h 2m'``, ``'4d 1h'``; ``'-'`` for none.

    >>> human_age(3725), human_age(None)
    ('1h 2m', '-')
    """
    if seconds is None or math.isnan(seconds):
        return "-"
    whole = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if whole >= size:
            rest = (whole % size) // sub_size
            return f"{whole // size}{unit}" + (f" {rest}{sub}" if rest else "")
    return f"{whole}s"


def table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """Rows under headers in aligned columns (``numeric`` columns right-aligned)."""
    right = numeric or set()
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


class Abort(BaseException):
    """A second Ctrl-C/SIGTERM while stopping: give up waiting (exit 130)."""


@contextmanager
def stop_signals(stop: threading.Event, on_second: Callable[[], None] | None = None) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM set ``stop`` instead of killing the
    process; a second signal raises :class:`Abort` in the main thread."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            if on_second is not None:
                on_second()
            raise Abort(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
