"""MongoDB collections in and out: a change-stream bridge and an upserting sink.

:class:`CollectionBridge` follows a change stream on any collection (of a
replica set or sharded cluster: standalone servers have no change streams)
and appends each change to a stream, one transaction per batch. Every change
is keyed by its resume token, and the token of the last change stored is
kept in a small stream of the target store (``<stream>.bridge.<name>``). A
restarted bridge resumes after that token, and a change that was stored but
whose token was not (a crash between the two) is stored again under the same
key, which stores nothing: each change is in the stream exactly once.

Each message is ``{"op", "ns", "key", "doc", "token"}``: the operation
(``insert``, ``update``, ``replace``, ``delete``, ...), ``db.collection``,
the document key (its ``_id``), the full document (for updates, as looked up
after the change; ``None`` once the document is gone, and for deletes) and
the resume token. BSON values are turned into plain JSON values (see
:func:`to_json`: an ObjectId becomes its hex string, a date ISO 8601 text).

:class:`CollectionSink` upserts a pipeline's values into a collection by
their idempotency keys (the ``_id`` of each document), so a window replayed
after a crash replaces what its first run wrote instead of adding to it.

Example (not run here: it needs a replica set)::

    bridge = CollectionBridge("mongodb://db1/shop", "orders", stream("orders"))
    bridge.start()
    ...
    bridge.stop()

    stream("orders").count_window(100).map(totals).sink(
        CollectionSink("mongodb://db1/shop", "order_totals"))
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import pymongo
from bson import json_util
from bson.decimal128 import Decimal128
from pymongo import errors as mongo_errors

from minibatch_rx.errors import InvalidArgumentError, MinibatchError, StoreUnavailableError
from minibatch_rx.store.base import Backoff
from minibatch_rx.streams import Stream
from minibatch_rx.validation import check_stream_name

log = logging.getLogger(__name__)

_HISTORY_LOST = 286  # ChangeStreamHistoryLost: the resume token fell off the oplog
_RETRYABLE = (mongo_errors.AutoReconnect, mongo_errors.ServerSelectionTimeoutError,
              mongo_errors.NetworkTimeout, StoreUnavailableError)


def _database_name(url: str) -> str:
    """The database a ``mongodb://`` URL names in its path, or a clear error."""
    if not url.startswith(("mongodb://", "mongodb+srv://")):
        raise InvalidArgumentError(f"a MongoDB connector needs a mongodb:// URL, got {url!r}")
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise InvalidArgumentError(f"the URL {url!r} names no database (mongodb://host/DB)")
    return str(name)


class ResumeTokenLostError(MinibatchError):
    """The change stream cannot resume where the bridge stopped: the server no
    longer holds that part of its history (the oplog moved past it)."""


def to_json(value: Any) -> Any:
    """A BSON value as plain JSON values a stream can hold: an ObjectId as its
    hex string, a datetime as ISO 8601 text, a Decimal128 as its decimal
    text, binary data as base64 text, and any other non-JSON value as
    ``str(value)``. (MongoDB's Extended JSON would keep the types, but its
    ``$``-keys are not allowed in stream payloads.)

    >>> from bson import ObjectId
    >>> from datetime import datetime, timezone
    >>> to_json({'_id': ObjectId('65a1b2c3d4e5f60718293a4b'),
    ...          'at': datetime(2026, 1, 2, tzinfo=timezone.utc)})
    {'_id': '65a1b2c3d4e5f60718293a4b', 'at': '2026-01-02T00:00:00+00:00'}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal128):
        return str(value.to_decimal())
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


class CollectionBridge:
    """Appends the changes of one MongoDB collection to a stream.

    Args:
        source: a ``mongodb://`` URL whose path names the database.
        collection: the collection to follow.
        target: the stream the changes go to.
        name: names the bridge's saved resume token (default: the
            collection's name); two bridges into one stream need two names.
        operations: the operation types kept (others are skipped).
        batch: most changes stored in one append.
        max_await: how long one wait on the server lasts, seconds (also how
            quickly :meth:`stop` is noticed).
    """

    def __init__(self, source: str, collection: str, target: Stream | None = None, *,
                 name: str | None = None,
                 operations: Sequence[str] = ("insert", "update", "replace", "delete"),
                 batch: int = 500, max_await: float = 0.2) -> None:
        if not isinstance(batch, int) or isinstance(batch, bool) or batch <= 0:
            raise InvalidArgumentError(f"batch must be a positive int, got {batch!r}")
        self.name = name or collection
        self.target: Stream | None = None
        self.state: Stream | None = None
        if target is not None:
            self._bind(target)
        self.operations = frozenset(operations)
        self.batch, self.max_await = batch, max_await
        database = _database_name(source)
        self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            source, serverSelectionTimeoutMS=5000)
        self._collection = self._client[database][collection]
        self._stop = threading.Event()
        self.ready = threading.Event()
        """Set once the change stream is open."""
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.stored = 0
        """Changes appended to the stream by this bridge object (replays included)."""

    def _bind(self, target: Stream) -> None:
        check_stream_name(f"{target.name}.bridge.{self.name}")
        self.target = target
        self.state = Stream.get_or_create(f"{target.name}.bridge.{self.name}", url=target.store.url)

    # -- the original package's source protocol (Stream.attach) ------------------
    def stream(self, target: Stream) -> None:
        """Bridge into ``target`` until :meth:`cancel` (``target.attach(bridge)`` calls this)."""
        self._bind(target)
        self.run()

    def cancel(self) -> None:
        """Stop a bridge started by ``Stream.attach`` (``stream.stop()`` calls this)."""
        self._stop.set()

    # -- running -----------------------------------------------------------
    def start(self, timeout: float = 30.0) -> CollectionBridge:
        """Run in a background thread; :meth:`stop` ends it. Returns once the
        change stream is open (changes made from then on are bridged), or
        after ``timeout`` seconds if the source cannot be reached yet (the
        bridge keeps trying)."""
        self._thread = threading.Thread(target=self._run_guarded, name=f"bridge-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.error is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                break
        return self

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # kept for stop()/join() to re-raise
            self.error = exc
            log.error("bridge %s stopped: %r", self.name, exc)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and wait for the thread; re-raises the error that ended it, if any."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._client.close()
        if self.error is not None:
            raise self.error

    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Bridge in this thread until :meth:`stop` (or ``until()`` is true),
        riding out outages of the source or the target with back-off."""
        if self.target is None:
            raise InvalidArgumentError(
                "CollectionBridge has no stream: pass one, or use stream.attach(bridge)")
        backoff = Backoff(start=0.1, limit=5.0)
        while not self._stop.is_set() and not (until and until()):
            try:
                self._follow(until)
                return
            except _RETRYABLE as exc:
                delay = backoff.next(time.monotonic() + 5.0)
                log.warning("bridge %s: %s; retrying in %.1f s", self.name, exc, delay)
                self._stop.wait(delay)
            except mongo_errors.OperationFailure as exc:
                if exc.code == _HISTORY_LOST:
                    raise ResumeTokenLostError(
                        f"bridge {self.name!r} cannot resume the change stream of "
                        f"{self._collection.full_name}: the server's history no longer reaches the "
                        "last stored change (its oplog moved on). Changes were missed; remove "
                        f"stream {self.state.name if self.state else ''!r} to start again from now") from exc
                raise

    def resume_token(self) -> dict[str, Any] | None:
        """The token of the last change stored, from the target store."""
        assert self.state is not None
        last = self.state.store.last_seq(self.state.name)
        if last == 0:
            return None
        messages = list(self.state.read(after=last - 1))
        if not messages:
            return None
        token = messages[-1].data["token"]
        # Kept as MongoDB Extended JSON text, so binary parts (_typeBits) come back as they were.
        return dict(json_util.loads(token)) if isinstance(token, str) else dict(token)

    def _follow(self, until: Callable[[], bool] | None) -> None:
        token = self.resume_token()
        with self._collection.watch(full_document="updateLookup", resume_after=token,
                                    max_await_time_ms=int(self.max_await * 1000)) as changes:
            self.ready.set()
            while not self._stop.is_set() and not (until and until()):
                batch: list[Mapping[str, Any]] = []
                while len(batch) < self.batch:
                    change = changes.try_next()
                    if change is None:
                        break
                    batch.append(change)
                if batch:
                    self._store(batch)

    def _store(self, batch: list[Mapping[str, Any]]) -> None:
        assert self.target is not None and self.state is not None
        kept = [c for c in batch if c["operationType"] in self.operations]
        payloads = [self.message(c) for c in kept]
        keys = [f"{self.name}/{c['_id']['_data']}" for c in kept]
        if payloads:
            self.target.extend(payloads, keys=keys)
            self.stored += len(payloads)
        # The token goes after the data: a crash between the two replays the
        # batch, whose keys store nothing twice.
        self.state.append({"token": json_util.dumps(batch[-1]["_id"])})
        trimmed = self.state.store.last_seq(self.state.name) - 1
        if trimmed > 0:
            self.state.store.trim(self.state.name, trimmed)

    def message(self, change: Mapping[str, Any]) -> dict[str, Any]:
        """The stream message for one change event."""
        ns = change.get("ns") or {}
        return {
            "op": change["operationType"],
            "ns": f"{ns.get('db')}.{ns.get('coll')}",
            "key": to_json(change.get("documentKey")),
            "doc": to_json(change.get("fullDocument")),
            "token": to_json(change["_id"]),
        }


class CollectionSink:
    """A :class:`~minibatch_rx.sinks.Sink` that upserts values into a collection.

    Each value (a dict; a list of dicts is one document each) is stored with
    ``_id`` = its idempotency key (``key.0``, ``key.1`` ... for a list), or
    the value's own ``_id`` with ``own_ids=True``. Writes are buffered by
    :meth:`write` and sent as one ordered bulk write, acknowledged by a
    majority of the replica set, in :meth:`flush`.
    """

    def __init__(self, url: str, collection: str, *, own_ids: bool = False,
                 write_concern: str | int = "majority") -> None:
        self.url, self.database, self.collection = url, _database_name(url), collection
        self.write_concern = pymongo.WriteConcern(w=write_concern)
        self.own_ids = own_ids
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None
        self._pending: list[pymongo.ReplaceOne[dict[str, Any]]] = []

    def _target(self) -> Any:
        """The collection, connecting first (again, after :meth:`close`: a pipeline
        description, and its sink, may run more than once)."""
        if self._client is None:
            self._client = pymongo.MongoClient(self.url, serverSelectionTimeoutMS=5000)
        return self._client[self.database].get_collection(self.collection,
                                                          write_concern=self.write_concern)

    def write(self, values: Sequence[Any], keys: Sequence[str]) -> None:
        """Buffer one upsert per document (nothing of a value that is refused)."""
        upserts: list[pymongo.ReplaceOne[dict[str, Any]]] = []
        for value, key in zip(values, keys, strict=True):
            documents = value if isinstance(value, (list, tuple)) else [value]
            for j, document in enumerate(documents):
                if not isinstance(document, Mapping):
                    raise TypeError(f"CollectionSink stores dicts, got {type(document).__name__}")
                ident = document.get("_id") if self.own_ids else (
                    key if len(documents) == 1 and not isinstance(value, (list, tuple)) else f"{key}.{j}")
                if ident is None:
                    raise InvalidArgumentError("own_ids=True but a document has no _id")
                upserts.append(pymongo.ReplaceOne({"_id": ident}, {**document, "_id": ident}, upsert=True))
        self._pending += upserts

    def flush(self) -> None:
        """Send the buffered upserts as one bulk write; raises if the server did
        not take them all. Either way the buffer is emptied: after a failure
        the pipeline writes the window again (its upserts replace, so the
        part that did reach the server is not doubled)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        self._target().bulk_write(pending, ordered=True)

    def close(self) -> None:
        """Close the connection (unsent writes are dropped: flush first); a later
        flush connects again."""
        client, self._client = self._client, None
        if client is not None:
            client.close()
