"""Reading a SQLite store: the shared row decoder and the live cursor.

Split from :mod:`minibatch_rx.store.sqlite`, which re-exports
:class:`SqliteReader`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from json.scanner import make_scanner
from typing import TYPE_CHECKING, Any, cast

from minibatch_rx.message import Message
from minibatch_rx.store.base import Backoff

if TYPE_CHECKING:
    from minibatch_rx.store.sqlite import SqliteStore

_SELECT = "SELECT seq, ts, data FROM mb_messages WHERE stream = ? AND seq > ? ORDER BY seq"
_DECODER = json.JSONDecoder()


def select(conn: sqlite3.Connection, stream: str, after: int, limit: int | None) -> list[Message]:
    """Messages of ``stream`` with ``seq > after``, at most ``limit``, decoded."""
    if limit is None:
        rows = conn.execute(_SELECT, (stream, after)).fetchall()
    else:
        rows = conn.execute(_SELECT + " LIMIT ?", (stream, after, limit)).fetchall()
    messages: list[Message] = []
    append = messages.append
    stamp, moment = None, None
    # The payloads are the store's own compact JSON: the decoder's C scanner
    # reads one in a single call, where json.loads adds two regex matches and
    # two Python frames. Anything else (surrounding blanks, bytes, bad JSON)
    # goes through json.loads, which decodes it or raises as it always did.
    scan = cast(Callable[[str, int], tuple[Any, int]], make_scanner(_DECODER))  # type: ignore[arg-type]
    loads = json.loads
    for seq, ts, data in rows:
        if ts != stamp:  # a batch shares one ingest time: convert it once
            stamp, moment = ts, datetime.fromtimestamp(ts, UTC)
        try:
            payload, end = scan(data, 0)
        except (StopIteration, ValueError, TypeError):
            payload = loads(data)
        else:
            if end != len(data):
                payload = loads(data)
        append(Message(stream, seq, moment, payload))  # type: ignore[arg-type]
    return messages


class SqliteReader:
    """A live cursor with its own connection; see :class:`~minibatch_rx.store.base.Reader`."""

    def __init__(self, store: SqliteStore, stream: str) -> None:
        self._store = store
        self._stream = stream
        self._conn = store.connect()
        self._lock = threading.Lock()
        self._closed = False
        self._version = -1
        self._backoff = Backoff()

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def read(self, after: int, limit: int | None = None) -> list[Message]:
        with self._lock:
            if self._closed:
                return []
            # Sample the version before reading, so a commit landing right after
            # this read is seen as a change by the next wait().
            try:
                self._version = self._data_version()
                messages = select(self._conn, self._stream, after, limit)
            except sqlite3.Error as exc:
                raise self._store.translate(exc) from exc
        if messages:
            self._backoff.reset()
        return messages

    def wait(self, after: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        appended = self._store._appended
        while not self._closed:
            with self._lock:
                if self._closed:
                    break
                try:
                    if self._data_version() != self._version:
                        return True
                except sqlite3.Error as exc:
                    raise self._store.translate(exc) from exc
            delay = self._backoff.next(deadline)
            if delay <= 0:
                return False
            with appended:
                if appended.wait(delay):
                    return not self._closed
        return False

    def close(self) -> None:
        self._closed = True
        with self._store._appended:
            self._store._appended.notify_all()
        with self._lock:
            self._conn.close()
