"""Watching a whole MongoDB database for appends: one change stream per store.

Split from :mod:`minibatch_rx.store.mongodb`. One :class:`MongoWatch` serves
every reader of a store object in the process (see :mod:`minibatch_rx.readhub`),
where each reader used to open its own change stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from minibatch_rx.store.base import Backoff

if TYPE_CHECKING:
    from minibatch_rx.store.mongodb import MongoStore

AWAIT_MS = 100
"""How long one wait on the change stream lasts on the server, milliseconds."""


class MongoWatch:
    """A :class:`~minibatch_rx.store.base.ChangeWatch` on a MongoDB database.

    On a replica set or sharded cluster it follows one change stream of the
    messages collection's inserts, and reports the streams they belong to.
    On a standalone server, which has no change streams, it reports every
    watched stream after an adaptive poll interval (1 to 50 ms), and each
    reader then reads.
    """

    def __init__(self, store: MongoStore) -> None:
        self._store = store
        self._woken = threading.Event()
        self._backoff = Backoff(start=0.001, limit=0.05)
        self._changes: Any = None
        if store.supports_change_streams():
            self._changes = store._guard(lambda: store._messages.watch(
                [{"$match": {"operationType": "insert"}}], max_await_time_ms=AWAIT_MS))

    def poll(self, streams: Collection[str], timeout: float) -> dict[str, int | None]:
        deadline = time.monotonic() + timeout
        if self._changes is None:
            if self._woken.wait(self._backoff.next(deadline)):
                self._woken.clear()
                self._backoff.reset()
            return dict.fromkeys(streams)
        while not self._woken.is_set():
            change = self._store._guard(self._changes.try_next)
            if change is not None:
                name = (change.get("fullDocument") or {}).get("s")
                return {name: None} if isinstance(name, str) and name in streams else {}
            if time.monotonic() >= deadline:
                return {}
        self._woken.clear()
        return {}

    def wake(self) -> None:
        self._woken.set()

    def close(self) -> None:
        if self._changes is not None:
            self._changes.close()
