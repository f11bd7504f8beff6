"""The embedded default store: one SQLite file, safe for many processes.

Design notes:

* WAL journal, so readers never block the writer and vice versa.
* ``append`` takes the write lock (``BEGIN IMMEDIATE``), reads the stream's
  counter, inserts and bumps the counter in one transaction. Writers are
  serialised by SQLite, so seqs are gap-free and become visible in order.
* SQLite cannot notify other processes. A reader polls ``PRAGMA
  data_version`` (one cheap call that changes when another connection
  commits) with an adaptive back-off, and is woken at once by appends made in
  its own process.

URL: ``sqlite:///absolute/path.db`` or ``sqlite://relative/path.db``, with
optional query parameters ``timeout`` (seconds to wait for the write lock,
default 10) and ``synchronous`` (``full``, the default, or ``normal``).
"""

from __future__ import annotations

import json
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from minibatch_rx.errors import InvalidURLError, StoreBusyError
from minibatch_rx.message import Message
from minibatch_rx.store.base import Backoff, Lease, Listener, Listeners, advance, fresh_indexes, merge_seqs
from minibatch_rx.validation import encode_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mb_streams (
    name TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mb_messages (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    key TEXT,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS mb_messages_key ON mb_messages (stream, key) WHERE key IS NOT NULL;
CREATE TABLE IF NOT EXISTS mb_leases (
    stream TEXT NOT NULL,
    grp TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    owner TEXT NOT NULL,
    expires REAL NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, grp, start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mb_positions (
    stream TEXT NOT NULL,
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (stream, consumer)
) WITHOUT ROWID;
"""
_SELECT = "SELECT seq, ts, data FROM mb_messages WHERE stream = ? AND seq > ? ORDER BY seq"
_BUSY_RETRIES = 3
_POOL_SIZE = 8


def parse_sqlite_url(url: str) -> tuple[Path, dict[str, str]]:
    """Split ``sqlite://PATH?opts`` into the file path and its options."""
    rest = url.split("://", 1)[1]
    path, _, query = rest.partition("?")
    if not path:
        raise InvalidURLError(f"sqlite URL {url!r} names no file; use sqlite:///path/to/file.db")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"timeout", "synchronous"}
    if unknown:
        raise InvalidURLError(f"unknown sqlite URL option(s) {sorted(unknown)} in {url!r}")
    if options.get("synchronous", "full").lower() not in ("full", "normal"):
        raise InvalidURLError(f"sqlite synchronous must be 'full' or 'normal' in {url!r}")
    try:
        timeout = float(options.get("timeout", 10))
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout >= 0):
        raise InvalidURLError(f"sqlite timeout must be a number of seconds >= 0 in {url!r}")
    return Path(path), options


class SqliteStore:
    """A :class:`~minibatch_rx.store.base.Store` in one SQLite database file.

    >>> import tempfile, os
    >>> store = SqliteStore(f"sqlite://{tempfile.mkdtemp()}/doc.db")
    >>> store.append('s', [{'a': 1}])
    [1]
    >>> store.close()
    """

    push = False

    def __init__(self, url: str) -> None:
        path, options = parse_sqlite_url(url)
        self.url = url
        self.path = path
        self._timeout = float(options.get("timeout", 10))
        self._synchronous = options.get("synchronous", "full").upper()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._appended = threading.Condition()
        self._listeners = Listeners()
        self._closed = False
        with self._connection() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            self._retry_busy(lambda: conn.executescript(_SCHEMA))

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"

    # -- connections -------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        """A new connection configured for this store (caller closes it)."""
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self.connect()
            with self._pool_lock:
                self._all.append(conn)
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.rollback()
            if self._closed or self._pool.qsize() >= _POOL_SIZE:
                conn.close()
                with self._pool_lock:
                    if conn in self._all:
                        self._all.remove(conn)
            else:
                self._pool.put(conn)

    def _retry_busy(self, operation: Callable[[], Any]) -> Any:
        for attempt in range(_BUSY_RETRIES + 1):
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if "locked" not in text and "busy" not in text:
                    raise
                if attempt == _BUSY_RETRIES:
                    raise StoreBusyError(
                        f"SQLite database {self.path} stayed locked for "
                        f"{_BUSY_RETRIES + 1} x {self._timeout:g}s; another process holds "
                        "a long write transaction"
                    ) from exc
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _write(self, relaxed: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``relaxed`` commits without waiting for the disk
        (``synchronous=NORMAL``): still safe against a process crash, and used
        only for bookkeeping whose loss on power failure means redelivery,
        never loss (consumer positions and group leases)."""
        with self._connection() as conn:
            if relaxed and self._synchronous != "NORMAL":
                conn.execute("PRAGMA synchronous=NORMAL")
            try:
                self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
                yield conn
                conn.execute("COMMIT")
            finally:
                if relaxed and self._synchronous != "NORMAL":
                    if conn.in_transaction:
                        conn.rollback()
                    conn.execute(f"PRAGMA synchronous={self._synchronous}")

    # -- messages ----------------------------------------------------------
    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]],
               keys: Sequence[str | None] | None = None) -> list[int]:
        if keys is not None and any(k is not None for k in keys):
            return self._append_keyed(stream, payloads, keys)
        encoded = [encode_json(p) for p in payloads]
        ts = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT last_seq FROM mb_streams WHERE name = ?", (stream,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO mb_streams (name, last_seq, created) VALUES (?, 0, ?)", (stream, ts)
                )
                last = 0
            else:
                last = row[0]
            conn.executemany(
                "INSERT INTO mb_messages (stream, seq, ts, data) VALUES (?, ?, ?, ?)",
                [(stream, last + i, ts, data) for i, data in enumerate(encoded, 1)],
            )
            conn.execute(
                "UPDATE mb_streams SET last_seq = ? WHERE name = ?", (last + len(encoded), stream)
            )
        self._notify(stream)
        return list(range(last + 1, last + 1 + len(encoded)))

    def _append_keyed(self, stream: str, payloads: Sequence[Mapping[str, Any]],
                      keys: Sequence[str | None]) -> list[int]:
        ts = time.time()
        with self._write() as conn:
            wanted = sorted({k for k in keys if k is not None})
            existing: dict[str, int] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                existing.update(conn.execute(
                    "SELECT key, seq FROM mb_messages WHERE stream = ? AND key IN "
                    f"({','.join('?' * len(chunk))})", (stream, *chunk)).fetchall())
            fresh = fresh_indexes(keys, existing)
            row = conn.execute("SELECT last_seq FROM mb_streams WHERE name = ?", (stream,)).fetchone()
            last = row[0] if row else 0
            if row is None:
                conn.execute("INSERT INTO mb_streams (name, last_seq, created) VALUES (?, 0, ?)",
                             (stream, ts))
            conn.executemany(
                "INSERT INTO mb_messages (stream, seq, ts, data, key) VALUES (?, ?, ?, ?, ?)",
                [(stream, last + n, ts,
                  encode_json(payloads[i]), keys[i])
                 for n, i in enumerate(fresh, 1)],
            )
            conn.execute("UPDATE mb_streams SET last_seq = ? WHERE name = ?", (last + len(fresh), stream))
        if fresh:
            self._notify(stream)
        return merge_seqs(keys, existing, fresh, range(last + 1, last + 1 + len(fresh)))

    def _notify(self, stream: str) -> None:
        with self._appended:
            self._appended.notify_all()
        self._listeners.notify(stream)

    def read(self, stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        with self._connection() as conn:
            return _select(conn, stream, after, limit)

    def count(self, stream: str) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT count(*) FROM mb_messages WHERE stream = ?", (stream,)).fetchone()
        return int(row[0])

    def last_seq(self, stream: str) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT last_seq FROM mb_streams WHERE name = ?", (stream,)).fetchone()
        return int(row[0]) if row else 0

    def ensure_stream(self, stream: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO mb_streams (name, last_seq, created) VALUES (?, 0, ?)",
                (stream, time.time()),
            )

    def streams(self) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute("SELECT name FROM mb_streams ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def clear(self, stream: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM mb_messages WHERE stream = ?", (stream,))

    def trim(self, stream: str, upto: int) -> int:
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM mb_messages WHERE stream = ? AND seq <= ?", (stream, upto))
        return int(cursor.rowcount)

    def delete(self, stream: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM mb_messages WHERE stream = ?", (stream,))
            conn.execute("DELETE FROM mb_positions WHERE stream = ?", (stream,))
            conn.execute("DELETE FROM mb_leases WHERE stream = ?", (stream,))
            conn.execute("DELETE FROM mb_streams WHERE name = ?", (stream,))

    # -- positions ---------------------------------------------------------
    def get_position(self, stream: str, consumer: str) -> int:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT seq FROM mb_positions WHERE stream = ? AND consumer = ?", (stream, consumer)
            ).fetchone()
        return int(row[0]) if row else 0

    def commit_position(self, stream: str, consumer: str, seq: int) -> None:
        with self._write(relaxed=True) as conn:
            conn.execute(
                "INSERT INTO mb_positions (stream, consumer, seq) VALUES (?, ?, ?) "
                "ON CONFLICT (stream, consumer) DO UPDATE SET seq = max(seq, excluded.seq)",
                (stream, consumer, seq),
            )

    def positions(self, stream: str) -> dict[str, int]:
        with self._connection() as conn:
            rows = conn.execute("SELECT consumer, seq FROM mb_positions WHERE stream = ?", (stream,))
            return dict(rows.fetchall())

    def expire(self, stream: str, max_age: float) -> int:
        before = time.time() - max_age
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM mb_messages WHERE stream = ? AND ts < ?", (stream, before))
        return int(cursor.rowcount)

    # -- consumer groups -----------------------------------------------------
    def lease(self, stream: str, group: str, owner: str, count: int, ttl: float,
              partial: bool) -> Lease | None:
        now = time.time()
        with self._write(relaxed=True) as conn:
            expired = conn.execute(
                "SELECT start, end FROM mb_leases WHERE stream = ? AND grp = ? AND done = 0 "
                "AND expires < ? ORDER BY start LIMIT 1", (stream, group, now)).fetchone()
            if expired is not None:
                conn.execute("UPDATE mb_leases SET owner = ?, expires = ? WHERE stream = ? AND grp = ? "
                             "AND start = ?", (owner, now + ttl, stream, group, expired[0]))
                return Lease(expired[0], expired[1], taken_over=True)
            start = 1 + max(
                conn.execute("SELECT coalesce(max(end), 0) FROM mb_leases WHERE stream = ? AND grp = ?",
                             (stream, group)).fetchone()[0],
                (conn.execute("SELECT seq FROM mb_positions WHERE stream = ? AND consumer = ?",
                              (stream, group)).fetchone() or (0,))[0],
            )
            row = conn.execute("SELECT last_seq FROM mb_streams WHERE name = ?", (stream,)).fetchone()
            end = min(start + count - 1, row[0] if row else 0)
            if end < start or (end - start + 1 < count and not partial):
                return None
            conn.execute("INSERT INTO mb_leases (stream, grp, start, end, owner, expires) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (stream, group, start, end, owner, now + ttl))
        return Lease(start, end)

    def complete(self, stream: str, group: str, start: int, owner: str) -> bool:
        with self._write(relaxed=True) as conn:
            done = conn.execute("UPDATE mb_leases SET done = 1 WHERE stream = ? AND grp = ? AND start = ? "
                                "AND owner = ? AND done = 0", (stream, group, start, owner)).rowcount
            position = (conn.execute("SELECT seq FROM mb_positions WHERE stream = ? AND consumer = ?",
                                     (stream, group)).fetchone() or (0,))[0]
            finished = conn.execute("SELECT start, end FROM mb_leases WHERE stream = ? AND grp = ? "
                                    "AND done = 1 AND start > ? ORDER BY start",
                                    (stream, group, position)).fetchall()
            advanced = advance(position, finished)
            if advanced > position:
                conn.execute("INSERT INTO mb_positions (stream, consumer, seq) VALUES (?, ?, ?) ON CONFLICT "
                             "(stream, consumer) DO UPDATE SET seq = max(seq, excluded.seq)",
                             (stream, group, advanced))
                conn.execute("DELETE FROM mb_leases WHERE stream = ? AND grp = ? AND end <= ? AND done = 1",
                             (stream, group, advanced))
        return bool(done)

    # -- liveness ----------------------------------------------------------
    def reader(self, stream: str) -> SqliteReader:
        return SqliteReader(self, stream)

    def listen(self, stream: str, callback: Listener) -> Callable[[], None]:
        return self._listeners.add(stream, callback)

    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        with self._appended:
            self._appended.notify_all()


def _select(conn: sqlite3.Connection, stream: str, after: int, limit: int | None) -> list[Message]:
    if limit is None:
        rows = conn.execute(_SELECT, (stream, after)).fetchall()
    else:
        rows = conn.execute(_SELECT + " LIMIT ?", (stream, after, limit)).fetchall()
    messages = []
    stamp, moment = None, None
    loads = json.loads
    for seq, ts, data in rows:
        if ts != stamp:  # a batch shares one ingest time: convert it once
            stamp, moment = ts, datetime.fromtimestamp(ts, UTC)
        messages.append(Message(stream, seq, moment, loads(data)))  # type: ignore[arg-type]
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
            self._version = self._data_version()
            messages = _select(self._conn, self._stream, after, limit)
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
                if self._data_version() != self._version:
                    return True
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
