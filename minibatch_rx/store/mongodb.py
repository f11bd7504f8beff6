"""MongoDB store (pymongo): for many machines, replica sets and sharding.

Layout, in the database named by the URL path (default ``minibatch``):

* ``mb_messages``: ``{s: stream, q: seq, t: ingest time, d: payload}``, with a
  unique index on ``(s, q)``;
* ``mb_streams``: ``{_id: stream, last: highest seq known to be stored}``;
* ``mb_positions``: ``{_id: "stream/consumer", s, c, q}``.

Ordering without transactions: a producer reads ``last`` (which only ever
trails what is stored), inserts its batch at ``last + 1 ...`` and then raises
``last`` with ``$max``. Seq ``n + 1`` is therefore only ever written after
``n`` is visible, so a reader that has seen ``n`` can never later find a
smaller seq. A collision on the unique index means another producer won the
race: the producer learns the true end of the stream and tries again. This
works on standalone servers, replica sets and sharded clusters alike.

Liveness: a change stream where the server offers one (replica sets and
sharded clusters), else polling with an adaptive back-off.

An unreachable server raises :class:`~minibatch_rx.errors.StoreUnavailableError`
after ``serverSelectionTimeoutMS`` (default here: 5000 ms; set it in the URL).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pymongo
from pymongo import errors as mongo_errors
from pymongo.collection import Collection

from minibatch_rx.errors import StoreUnavailableError
from minibatch_rx.message import Message
from minibatch_rx.store.base import Backoff, Listener
from minibatch_rx.store.url import redact

DEFAULT_DATABASE = "minibatch"
DEFAULT_TIMEOUT_MS = 5000
_MAX_ATTEMPTS = 1000


class MongoStore:
    """A :class:`~minibatch_rx.store.base.Store` on a MongoDB deployment."""

    push = False

    def __init__(self, url: str) -> None:
        self.url = redact(url)
        options: dict[str, Any] = {"tz_aware": True}
        if "serverselectiontimeoutms" not in url.lower():
            options["serverSelectionTimeoutMS"] = DEFAULT_TIMEOUT_MS
        try:
            self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url, **options)
        except mongo_errors.ConfigurationError as exc:
            raise StoreUnavailableError(f"cannot use MongoDB URL {self.url!r}: {exc}") from None
        db = self._client.get_default_database(DEFAULT_DATABASE)
        self._messages: Collection[dict[str, Any]] = db["mb_messages"]
        self._streams: Collection[dict[str, Any]] = db["mb_streams"]
        self._positions: Collection[dict[str, Any]] = db["mb_positions"]
        self._listeners: dict[str, list[Listener]] = {}
        self._lock = threading.Lock()
        self._change_streams: bool | None = None
        self._guard(lambda: self._messages.create_index([("s", 1), ("q", 1)], unique=True))

    def __repr__(self) -> str:
        return f"MongoStore({self.url!r})"

    def _guard(self, operation: Callable[[], Any]) -> Any:
        """Run ``operation``, turning connection failures into a clear error."""
        try:
            return operation()
        except (mongo_errors.ServerSelectionTimeoutError, mongo_errors.AutoReconnect) as exc:
            raise StoreUnavailableError(
                f"MongoDB at {self.url!r} is unreachable: {type(exc).__name__} "
                f"(timeout serverSelectionTimeoutMS, default {DEFAULT_TIMEOUT_MS} ms)"
            ) from None

    # -- messages ----------------------------------------------------------
    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]]) -> list[int]:
        # BSON dates hold milliseconds; truncate so what we return is what is stored.
        now = datetime.now(UTC)
        ts = now.replace(microsecond=now.microsecond // 1000 * 1000)
        seqs: list[int] = self._guard(lambda: self._append(stream, list(payloads), ts))
        return seqs

    def _append(self, stream: str, payloads: list[Mapping[str, Any]], ts: datetime) -> list[int]:
        seqs: list[int] = []
        last = self.last_seq(stream)
        for attempt in range(_MAX_ATTEMPTS):
            docs: list[dict[str, Any]] = [
                {"s": stream, "q": last + i, "t": ts, "d": p}
                for i, p in enumerate(payloads[len(seqs):], 1)
            ]
            try:
                self._messages.insert_many(docs, ordered=True)
                seqs.extend(d["q"] for d in docs)
                break
            except mongo_errors.BulkWriteError as exc:
                inserted = exc.details.get("nInserted", 0)
                seqs.extend(d["q"] for d in docs[:inserted])
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
                # Lost the race for the next seq: find the real end and retry.
                last = self._probe_end(stream, docs[inserted]["q"])
                time.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
        else:
            raise StoreUnavailableError(
                f"could not append to {stream!r} after {_MAX_ATTEMPTS} attempts"
            )
        self._streams.update_one(
            {"_id": stream}, {"$max": {"last": seqs[-1]}, "$setOnInsert": {"created": ts}}, upsert=True
        )
        with self._lock:
            listeners = list(self._listeners.get(stream, ()))
        for listener in listeners:
            listener()
        return seqs

    def _probe_end(self, stream: str, taken: int) -> int:
        """Highest stored seq at or above ``taken``, recorded as the new ``last``."""
        end = taken
        for doc in self._messages.find({"s": stream, "q": {"$gte": taken}}, {"q": 1, "_id": 0}).sort("q", 1):
            end = max(end, doc["q"])
        self._streams.update_one({"_id": stream}, {"$max": {"last": end}}, upsert=True)
        return max(end, self.last_seq(stream))

    def read(self, stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        cursor = self._messages.find({"s": stream, "q": {"$gt": after}}, {"_id": 0}).sort("q", 1)
        if limit is not None:
            cursor = cursor.limit(limit)
        messages: list[Message] = self._guard(
            lambda: [Message(stream, d["q"], d["t"], d["d"]) for d in cursor]
        )
        return messages

    def count(self, stream: str) -> int:
        return int(self._guard(lambda: self._messages.count_documents({"s": stream})))

    def last_seq(self, stream: str) -> int:
        doc = self._guard(lambda: self._streams.find_one({"_id": stream}, {"last": 1}))
        return int(doc.get("last", 0)) if doc else 0

    def ensure_stream(self, stream: str) -> None:
        self._guard(
            lambda: self._streams.update_one(
                {"_id": stream},
                {"$setOnInsert": {"last": 0, "created": datetime.now(UTC)}},
                upsert=True,
            )
        )

    def streams(self) -> list[str]:
        return sorted(self._guard(lambda: self._streams.distinct("_id")))

    def clear(self, stream: str) -> None:
        self._guard(lambda: self._messages.delete_many({"s": stream}))

    def trim(self, stream: str, upto: int) -> int:
        result = self._guard(lambda: self._messages.delete_many({"s": stream, "q": {"$lte": upto}}))
        return int(result.deleted_count)

    def delete(self, stream: str) -> None:
        def run() -> None:
            self._messages.delete_many({"s": stream})
            self._positions.delete_many({"s": stream})
            self._streams.delete_one({"_id": stream})

        self._guard(run)

    # -- positions ---------------------------------------------------------
    def get_position(self, stream: str, consumer: str) -> int:
        doc = self._guard(lambda: self._positions.find_one({"_id": f"{stream}/{consumer}"}))
        return int(doc["q"]) if doc else 0

    def commit_position(self, stream: str, consumer: str, seq: int) -> None:
        self._guard(
            lambda: self._positions.update_one(
                {"_id": f"{stream}/{consumer}"},
                {"$max": {"q": seq}, "$set": {"s": stream, "c": consumer}},
                upsert=True,
            )
        )

    # -- liveness ----------------------------------------------------------
    def supports_change_streams(self) -> bool:
        """True if the deployment offers change streams (replica set or sharded)."""
        if self._change_streams is None:
            hello = self._guard(lambda: self._client.admin.command("hello"))
            self._change_streams = bool(hello.get("setName") or hello.get("msg") == "isdbgrid")
        return self._change_streams

    def reader(self, stream: str) -> MongoReader:
        return MongoReader(self, stream)

    def listen(self, stream: str, callback: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.setdefault(stream, []).append(callback)

        def remove() -> None:
            with self._lock:
                callbacks = self._listeners.get(stream, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return remove

    def close(self) -> None:
        self._client.close()


class MongoReader:
    """A live cursor: a change stream when available, polling otherwise."""

    _AWAIT_MS = 100

    def __init__(self, store: MongoStore, stream: str) -> None:
        self._store = store
        self._stream = stream
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._backoff = Backoff(start=0.001, limit=0.05)
        self._changes: Any = None
        if store.supports_change_streams():
            # Opened before the first read, so no insert can slip between them.
            self._changes = store._guard(
                lambda: store._messages.watch(
                    [{"$match": {"operationType": "insert", "fullDocument.s": stream}}],
                    max_await_time_ms=self._AWAIT_MS,
                )
            )

    def read(self, after: int, limit: int | None = None) -> list[Message]:
        messages = self._store.read(self._stream, after, limit)
        if messages:
            self._backoff.reset()
        return messages

    def wait(self, after: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set() and time.monotonic() < deadline:
            if self._changes is None:
                self._closed.wait(self._backoff.next(deadline))
                return not self._closed.is_set()
            with self._lock:
                if self._closed.is_set():
                    break
                change = self._store._guard(self._changes.try_next)
            if change is not None:
                return True
        return False

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._changes is not None:
                self._changes.close()
