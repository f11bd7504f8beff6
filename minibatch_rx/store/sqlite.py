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
* The ingest time ``ts`` is read inside the write transaction and never goes
  below the stream's last message's, so ``ts`` never decreases along ``seq``.
* SQLite errors surface as :class:`~minibatch_rx.errors.MinibatchError`
  subclasses (see :func:`_translate`); a failed write stores nothing.

URL: ``sqlite:///absolute/path.db`` or ``sqlite://relative/path.db``, with
optional query parameters ``timeout`` (seconds to wait for the write lock,
default 10), ``synchronous`` (``full``, the default, or ``normal``) and
``mode=ro`` (read-only; also chosen when the file is not writable).
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from minibatch_rx.errors import (
    MinibatchError,
    ReadOnlyStoreError,
    StoreBusyError,
    StoreFullError,
    StoreOpenError,
    StoreUnavailableError,
)
from minibatch_rx.message import Message
from minibatch_rx.store.base import (
    Listener,
    Listeners,
    R,
    StateUpdate,
    encode_state,
    fresh_indexes,
    merge_seqs,
)
from minibatch_rx.store.doorbell import Ringer, bell_folder
from minibatch_rx.store.leases import Lease, advance, next_range
from minibatch_rx.store.sqlite_reader import SqliteReader, select
from minibatch_rx.store.sqlite_watch import SqliteWatch
from minibatch_rx.store.url import parse_sqlite_url, prepare_sqlite_file
from minibatch_rx.validation import encode_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mb_streams (
    name TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    last_ts REAL
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
CREATE TABLE IF NOT EXISTS mb_state (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (stream, name)
) WITHOUT ROWID;
"""
_BUSY_RETRIES = 3
_POOL_SIZE = 8


# The stream's counter, and the latest ingest time it gave (kept in the stream's row, so
# it outlives the message; databases made before that column read the last message).
_LAST = ("SELECT s.last_seq, max(coalesce(s.last_ts, m.ts, 0), coalesce(m.ts, 0)) FROM mb_streams s "
         "LEFT JOIN mb_messages m ON m.stream = s.name AND m.seq = s.last_seq WHERE s.name = ?")
__all__ = ["SqliteReader", "SqliteStore", "parse_sqlite_url"]


def _translate(exc: sqlite3.Error, store: SqliteStore) -> MinibatchError | None:
    """The library's error for a SQLite error, or None for one it does not know."""
    code = getattr(exc, "sqlite_errorcode", -1) & 0xFF
    text = str(exc)
    where = f"SQLite database {store.path}"
    if code == sqlite3.SQLITE_FULL or "disk is full" in text:
        return StoreFullError(f"{where}: database or disk is full; nothing of this write was stored")
    if code == sqlite3.SQLITE_READONLY or "readonly database" in text:
        return ReadOnlyStoreError(f"{where} cannot be written: {text}")
    if code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return StoreOpenError(f"{where} is not a SQLite database or is corrupt ({text})")
    if code == sqlite3.SQLITE_CANTOPEN:
        hint = " (read-only: its folder must be writable, or its -wal and -shm files exist)"
        return StoreOpenError(f"cannot open {where}: {text}{hint if store.read_only else ''}")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusyError(f"{where} is locked: {text}")
    if code == sqlite3.SQLITE_IOERR:
        return StoreUnavailableError(f"{where}: disk I/O error ({text})")
    return None


_live: weakref.WeakSet[SqliteStore] = weakref.WeakSet()


def _after_fork() -> None:
    """In a child made by ``fork``: the parent's connections, watches and bell are not
    this process's (SQLite forbids using a connection across a fork); forget them,
    unused, so the child opens its own and its appends ring the parent's bell."""
    for store in list(_live):
        store._watches = []
        store._ringer = Ringer(store._ringer.folder)
        store._pool = queue.LifoQueue()
        store._all = []
        store._pool_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


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
        self.read_only: str | None = (
            "with ?mode=ro" if options.get("mode") == "ro"
            else "because the file is not writable" if path.exists() and not os.access(path, os.W_OK)
            else None)
        """Why the store was opened read-only, or None if it may write."""
        prepare_sqlite_file(path, bool(self.read_only))
        self._pool: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._all: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._appended = threading.Condition()
        self._listeners = Listeners()
        self._ringer = Ringer(bell_folder(path))
        self._watches: list[SqliteWatch] = []
        _live.add(self)
        self._closed = False
        try:
            with self._connection() as conn:
                self._retry_busy(lambda: self._prepare(conn))
        except BaseException:
            self.close()
            raise

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Create the schema, or (read-only) check that it is there."""
        if not self.read_only:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(mb_streams)")}
            if "last_ts" not in columns:  # a database made by an earlier version
                try:
                    conn.execute("ALTER TABLE mb_streams ADD COLUMN last_ts REAL")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process just added it
                        raise
            return
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"mb_streams", "mb_messages", "mb_positions", "mb_leases"} <= tables:
            raise StoreOpenError(f"SQLite database {self.path} holds no minibatch_rx streams, and it "
                                 f"was opened read-only ({self.read_only}), so they cannot be created")

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"

    def translate(self, exc: sqlite3.Error) -> Exception:
        """The :class:`~minibatch_rx.errors.MinibatchError` to raise for a SQLite
        error (``exc`` itself if it is not one the library knows)."""
        return _translate(exc, self) or exc

    # -- connections -------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        """A new connection configured for this store (caller closes it)."""
        target = f"file:{quote(str(self.path))}?mode=ro" if self.read_only else str(self.path)
        try:
            conn = sqlite3.connect(target, timeout=self._timeout, isolation_level=None,
                                   check_same_thread=False, uri=bool(self.read_only))
            # The first statement reads the schema, which another writer may lock:
            # retried within the same budget as appends.
            self._retry_busy(lambda: conn.execute(f"PRAGMA synchronous={self._synchronous}"))
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
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
        except sqlite3.Error as exc:
            error = self.translate(exc)
            if error is exc:
                raise
            raise error from exc
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
        """Run ``operation``, retrying while the file is locked: at least
        ``_BUSY_RETRIES`` times and for ``_BUSY_RETRIES + 1`` busy timeouts (some
        locks, like switching a new file to WAL, fail without waiting)."""
        budget = (_BUSY_RETRIES + 1) * self._timeout
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if "locked" not in text and "busy" not in text:
                    raise
                attempt += 1
                if attempt > _BUSY_RETRIES and time.monotonic() - started >= budget:
                    raise StoreBusyError(
                        f"SQLite database {self.path} stayed locked for "
                        f"{_BUSY_RETRIES + 1} x {self._timeout:g}s; another process holds "
                        "a long write transaction"
                    ) from exc
                time.sleep(min(0.05 * attempt, 0.25))

    @contextmanager
    def _write(self, relaxed: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. ``relaxed`` commits without waiting for the disk
        (``synchronous=NORMAL``): still safe against a process crash, and used
        only for bookkeeping whose loss on power failure means redelivery,
        never loss (consumer positions and group leases)."""
        if self.read_only:
            raise ReadOnlyStoreError(f"SQLite database {self.path} was opened read-only "
                                     f"({self.read_only}); writing to it is not possible")
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

    def _ingest(self, conn: sqlite3.Connection, stream: str) -> tuple[int, float]:
        """Inside a write transaction: the stream's last seq (registering the
        stream if new) and the ingest time for the next messages, never below
        the last message's."""
        ts = time.time()
        row = conn.execute(_LAST, (stream,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO mb_streams (name, last_seq, created) VALUES (?, 0, ?)", (stream, ts))
            return 0, ts
        return row[0], max(ts, row[1] or 0.0)

    # -- messages ----------------------------------------------------------
    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]],
               keys: Sequence[str | None] | None = None) -> list[int]:
        if keys is not None and any(k is not None for k in keys):
            return self._append_keyed(stream, payloads, keys)
        encoded = [encode_json(p) for p in payloads]
        with self._write() as conn:
            last, ts = self._ingest(conn, stream)
            conn.executemany(
                "INSERT INTO mb_messages (stream, seq, ts, data) VALUES (?, ?, ?, ?)",
                [(stream, last + i, ts, data) for i, data in enumerate(encoded, 1)],
            )
            conn.execute("UPDATE mb_streams SET last_seq = ?, last_ts = ? WHERE name = ?",
                         (last + len(encoded), ts, stream))
        self._notify(stream)
        return list(range(last + 1, last + 1 + len(encoded)))

    def _append_keyed(self, stream: str, payloads: Sequence[Mapping[str, Any]],
                      keys: Sequence[str | None]) -> list[int]:
        with self._write() as conn:
            wanted = sorted({k for k in keys if k is not None})
            existing: dict[str, int] = {}
            for i in range(0, len(wanted), 500):
                chunk = wanted[i:i + 500]
                existing.update(conn.execute(
                    "SELECT key, seq FROM mb_messages WHERE stream = ? AND key IN "
                    f"({','.join('?' * len(chunk))})", (stream, *chunk)).fetchall())
            fresh = fresh_indexes(keys, existing)
            last, ts = self._ingest(conn, stream)
            conn.executemany(
                "INSERT INTO mb_messages (stream, seq, ts, data, key) VALUES (?, ?, ?, ?, ?)",
                [(stream, last + n, ts,
                  encode_json(payloads[i]), keys[i])
                 for n, i in enumerate(fresh, 1)],
            )
            if fresh:
                conn.execute("UPDATE mb_streams SET last_seq = ?, last_ts = ? WHERE name = ?",
                             (last + len(fresh), ts, stream))
        if fresh:
            self._notify(stream)
        return merge_seqs(keys, existing, fresh, range(last + 1, last + 1 + len(fresh)))

    def _notify(self, stream: str) -> None:
        self._ringer.ring()  # readers in other processes
        for watch in self._watches:  # readers in this one
            watch.wake()
        with self._appended:
            self._appended.notify_all()
        self._listeners.notify(stream)

    def read(self, stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        with self._connection() as conn:
            return select(conn, stream, after, limit)

    def count(self, stream: str) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT count(*) FROM mb_messages WHERE stream = ?", (stream,)).fetchone()
        return int(row[0])

    def last_seq(self, stream: str) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT last_seq FROM mb_streams WHERE name = ?", (stream,)).fetchone()
        return int(row[0]) if row else 0

    def ensure_stream(self, stream: str) -> None:
        with self._connection() as conn:  # a read first: no write lock, and works read-only
            if conn.execute("SELECT 1 FROM mb_streams WHERE name = ?", (stream,)).fetchone():
                return
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
            conn.execute("DELETE FROM mb_state WHERE stream = ?", (stream,))
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

    def remove_position(self, stream: str, consumer: str) -> bool:
        with self._write() as conn:
            known = conn.execute("DELETE FROM mb_positions WHERE stream = ? AND consumer = ?",
                                 (stream, consumer)).rowcount
            conn.execute("DELETE FROM mb_leases WHERE stream = ? AND grp = ?", (stream, consumer))
            prefix = consumer + "/"  # compared as text: LIKE would read '_' and '%' in names as wildcards
            conn.execute("DELETE FROM mb_state WHERE stream = ? AND substr(name, 1, length(?)) = ?",
                         (stream, prefix, prefix))
        return bool(known)

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
            claimed = max(
                conn.execute("SELECT coalesce(max(end), 0) FROM mb_leases WHERE stream = ? AND grp = ?",
                             (stream, group)).fetchone()[0],
                (conn.execute("SELECT seq FROM mb_positions WHERE stream = ? AND consumer = ?",
                              (stream, group)).fetchone() or (0,))[0],
            )
            row = conn.execute("SELECT last_seq FROM mb_streams WHERE name = ?", (stream,)).fetchone()
            lease = next_range(claimed, row[0] if row else 0, count, partial)
            if lease is not None:
                conn.execute("INSERT INTO mb_leases (stream, grp, start, end, owner, expires) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (stream, group, lease.start, lease.end, owner, now + ttl))
        return lease

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

    def update_state(self, stream: str, name: str, update: StateUpdate[R]) -> R:
        # One write transaction (BEGIN IMMEDIATE) holds the read and the write: writers in
        # every process are serialised by SQLite, so ``update`` runs once and wins.
        with self._write() as conn:
            row = conn.execute("SELECT doc FROM mb_state WHERE stream = ? AND name = ?",
                               (stream, name)).fetchone()
            new, result = update(None if row is None else json.loads(row[0]), time.time())
            if new is None:
                if row is not None:
                    conn.execute("DELETE FROM mb_state WHERE stream = ? AND name = ?", (stream, name))
            else:
                conn.execute("INSERT INTO mb_state (stream, name, doc) VALUES (?, ?, ?) "
                             "ON CONFLICT (stream, name) DO UPDATE SET doc = excluded.doc",
                             (stream, name, encode_state(stream, name, new)))
        return result

    # -- liveness ----------------------------------------------------------
    def reader(self, stream: str) -> SqliteReader:
        return SqliteReader(self, stream)

    def watch(self) -> SqliteWatch:
        """One watch on every stream of the file (see :class:`SqliteWatch`)."""
        watch = SqliteWatch(self)
        self._watches = [*self._watches, watch]
        return watch

    def _unwatch(self, watch: SqliteWatch) -> None:
        self._watches = [w for w in self._watches if w is not watch]

    def listen(self, stream: str, callback: Listener) -> Callable[[], None]:
        return self._listeners.add(stream, callback)

    def close(self) -> None:
        self._closed = True
        # Only the idle connections: one in use by another thread is closed when it
        # comes back to the pool (closing it under that thread crashes SQLite).
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                break
            with self._pool_lock:
                if conn in self._all:
                    self._all.remove(conn)
            conn.close()
        for watch in self._watches:
            watch.wake()
        self._ringer.close()
        with self._appended:
            self._appended.notify_all()
