"""Watching a whole SQLite store for appends: the doorbell, then the change counter.

Split from :mod:`minibatch_rx.store.sqlite`. One :class:`SqliteWatch` serves
every reader of a store object (see :mod:`minibatch_rx.readhub`).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from minibatch_rx.store.base import Backoff
from minibatch_rx.store.doorbell import SUPPORTED, Bell, bell_folder

if TYPE_CHECKING:
    from minibatch_rx.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

FALLBACK_WITH_BELL = 0.05
"""With a doorbell, the longest wait between two checks of the change counter, seconds."""
FALLBACK_WITHOUT_BELL = 0.02
"""Without one (no Unix sockets, or no folder for them), the longest poll interval."""
_HEADS_CHUNK = 500


class SqliteWatch:
    """A :class:`~minibatch_rx.store.base.ChangeWatch` on a SQLite file.

    It waits on the process's doorbell (rung by appends in other processes),
    on a local wake-up (appends in this process), and at worst until the
    fallback interval passes; then it reads ``PRAGMA data_version``, which
    changes when another connection commits. Only when it changed are the
    watched streams' heads read, in one query.
    """

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._conn = store.connect()
        self._version = -1
        self._lock = threading.Lock()
        self._woken = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.bell: Bell | None = None
        if SUPPORTED:
            try:
                self.bell = Bell(bell_folder(store.path))
            except OSError as exc:
                log.info("no doorbell for %s (%s): polling every %g s", store.path, exc,
                         FALLBACK_WITHOUT_BELL)
        limit = FALLBACK_WITH_BELL if self.bell is not None else FALLBACK_WITHOUT_BELL
        self._backoff = Backoff(start=0.0005 if self.bell is None else limit, limit=limit)
        store._ringer.own = None if self.bell is None else str(self.bell.path)

    def poll(self, streams: Collection[str], timeout: float) -> dict[str, int | None]:
        deadline = time.monotonic() + timeout
        while True:
            if self._changed():
                self._backoff.reset()
                return self._heads(streams)
            delay = self._backoff.next(deadline)
            if delay <= 0:
                return {}
            if self._sleep(delay):
                self._backoff.reset()

    def _changed(self) -> bool:
        with self._lock:
            woken, self._woken = self._woken, False
        try:
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise self._store.translate(exc) from exc
        changed = version != self._version
        self._version = version
        return changed or woken

    def _sleep(self, delay: float) -> bool:
        """Wait for a ring or a local wake-up; True if one came."""
        wake = self._wake_r.fileno()
        if self.bell is not None:
            woken = self.bell.wait(delay, wake)
            self.bell.drain()
        else:
            woken = bool(select.select([wake], [], [], delay)[0])
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while self._wake_r.recv(64):
                pass
        return woken

    def _heads(self, streams: Collection[str]) -> dict[str, int | None]:
        names = list(streams)
        heads: dict[str, int | None] = {}
        try:
            for i in range(0, len(names), _HEADS_CHUNK):
                chunk = names[i:i + _HEADS_CHUNK]
                heads.update(self._conn.execute(
                    f"SELECT name, last_seq FROM mb_streams WHERE name IN ({','.join('?' * len(chunk))})",
                    chunk).fetchall())
        except sqlite3.Error as exc:
            raise self._store.translate(exc) from exc
        return heads

    def wake(self) -> None:
        with self._lock:
            self._woken = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\x01")

    def close(self) -> None:
        self._store._unwatch(self)
        if self.bell is not None:
            if self._store._ringer.own == str(self.bell.path):
                self._store._ringer.own = None
            self.bell.close()
        self._wake_r.close()
        self._wake_w.close()
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
