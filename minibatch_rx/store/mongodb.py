"""MongoDB store (pymongo): for many machines, replica sets and sharding.

Layout, in the database named by the URL path (default ``minibatch``):

* ``mb_messages``: ``{_id, s: stream, q: seq, t: ingest time, d: payload}``,
  with a unique index on ``(s, q)``; a keyed message's ``_id`` is
  ``"<stream>/<key>"``, so the always-present ``_id`` index both finds keys
  and keeps them unique (a partial index would do too, but not every server
  speaking the protocol uses one for lookups);
* ``mb_streams``: one document per registered stream;
* ``mb_positions``: ``{_id: "stream/consumer", s, c, q}``;
* ``mb_leases`` and ``mb_groups``: consumer-group leases and lease cursors.

Ordering without transactions or a hot counter document: a producer finds
the end of the stream (the highest stored seq ``n``) and inserts its batch at
``n + 1 ...``. Seq ``n + 1`` is therefore only ever written after ``n`` is
visible, so a reader that has seen ``n`` can never later find a smaller seq.
A collision on the unique index means another producer won the race: the
producer scans forward from the contested seq to the new end and tries again.
Each producer remembers the end it last saw, so an uncontended append is two
round trips (a short forward scan and the insert). ``clear``, ``trim`` and
``expire`` never delete the stream's highest message: they turn it into a
tombstone (``gone: true``, payload removed) that readers skip, so the end of
the stream, and with it the numbering, survives. This works on standalone
servers, replica sets and sharded clusters alike (shard by ``s``).

Liveness: a change stream where the server offers one (replica sets and
sharded clusters), else polling with an adaptive back-off.

An unreachable server raises :class:`~minibatch_rx.errors.StoreUnavailableError`
after ``serverSelectionTimeoutMS`` (default here: 5000 ms; set it in the URL).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pymongo
from pymongo import errors as mongo_errors
from pymongo.collection import Collection

from minibatch_rx.errors import InvalidURLError, StoreUnavailableError
from minibatch_rx.message import Message
from minibatch_rx.store.base import Backoff, Lease, Listener, Listeners, advance, fresh_indexes, merge_seqs
from minibatch_rx.store.url import redact

DEFAULT_DATABASE = "minibatch"
DEFAULT_TIMEOUT_MS = 5000
_SCAN_LIMIT = 1000  # a forward scan longer than this falls back to a reverse index lookup
_MAX_ATTEMPTS = 1000


def _key_id(stream: str, key: str | None) -> str:
    return f"{stream}/{key}"


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
        except (mongo_errors.InvalidURI, ValueError) as exc:  # pymongo raises both for bad URLs
            raise InvalidURLError(f"malformed MongoDB URL {self.url!r}: {redact(str(exc))}") from None
        except mongo_errors.ConfigurationError as exc:  # e.g. an SRV record that does not resolve
            raise StoreUnavailableError(f"cannot use MongoDB URL {self.url!r}: {redact(str(exc))}") from None
        db = self._client.get_default_database(DEFAULT_DATABASE)
        self._messages: Collection[dict[str, Any]] = db["mb_messages"]
        self._streams: Collection[dict[str, Any]] = db["mb_streams"]
        self._positions: Collection[dict[str, Any]] = db["mb_positions"]
        self._listeners = Listeners()
        self._change_streams: bool | None = None
        self._ends: dict[str, int] = {}  # the end of each stream as last seen here
        self._registered: set[str] = set()
        self._leases: Collection[dict[str, Any]] = db["mb_leases"]
        self._groups: Collection[dict[str, Any]] = db["mb_groups"]
        self._guard(self._create_indexes)

    def __repr__(self) -> str:
        return f"MongoStore({self.url!r})"

    def _create_indexes(self) -> None:
        self._messages.create_index([("s", 1), ("q", 1)], unique=True)
        self._leases.create_index([("s", 1), ("g", 1), ("start", 1)], unique=True)

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
    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]],
               keys: Sequence[str | None] | None = None) -> list[int]:
        # BSON dates hold milliseconds; truncate so what we return is what is stored.
        now = datetime.now(UTC)
        ts = now.replace(microsecond=now.microsecond // 1000 * 1000)
        keys = [None] * len(payloads) if keys is None else list(keys)
        seqs: list[int] = self._guard(lambda: self._append(stream, list(payloads), keys, ts))
        return seqs

    def _append(self, stream: str, payloads: list[Mapping[str, Any]], keys: list[str | None],
                ts: datetime) -> list[int]:
        wanted = {_key_id(stream, k): k for k in keys if k is not None}
        existing: dict[str, int] = {}
        if wanted:
            found = self._messages.find({"_id": {"$in": list(wanted)}}, {"q": 1})
            existing = {wanted[d["_id"]]: d["q"] for d in found}
        pending = fresh_indexes(keys, existing)
        fresh: list[int] = []
        seqs: list[int] = []
        self._register(stream, ts)
        last = self._find_end(stream)
        for attempt in range(_MAX_ATTEMPTS):
            if not pending:
                break
            docs: list[dict[str, Any]] = []
            for n, index in enumerate(pending, 1):
                doc = {"s": stream, "q": last + n, "t": ts, "d": payloads[index]}
                if keys[index] is not None:
                    doc["_id"] = _key_id(stream, keys[index])
                docs.append(doc)
            try:
                self._messages.insert_many(docs, ordered=True)
                fresh.extend(pending)
                seqs.extend(d["q"] for d in docs)
                break
            except mongo_errors.BulkWriteError as exc:
                inserted = exc.details.get("nInserted", 0)
                fresh.extend(pending[:inserted])
                seqs.extend(d["q"] for d in docs[:inserted])
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != 11000 for e in errors):
                    raise
                failed, pending = pending[inserted], pending[inserted + 1:]
                if "_id" in (errors[0].get("keyPattern") or {}) or "_id_" in errors[0].get("errmsg", ""):
                    # Another producer stored the same key meanwhile: reuse its seq.
                    key = str(keys[failed])
                    found_doc = self._messages.find_one({"_id": _key_id(stream, key)}, {"q": 1})
                    existing[key] = int(found_doc["q"]) if found_doc else last
                    last = docs[inserted - 1]["q"] if inserted else last
                else:
                    # Lost the race for the next seq: find the real end and retry.
                    pending.insert(0, failed)
                    last = self._scan_end(stream, docs[inserted]["q"])
                    time.sleep(random.uniform(0, 0.0005 * min(attempt, 20)))
        else:
            raise StoreUnavailableError(
                f"could not append to {stream!r} after {_MAX_ATTEMPTS} attempts"
            )
        if seqs:
            self._ends[stream] = seqs[-1]
            self._listeners.notify(stream)
        return merge_seqs(keys, existing, fresh, seqs)

    def _register(self, stream: str, ts: datetime) -> None:
        if stream not in self._registered:
            self._streams.update_one({"_id": stream}, {"$setOnInsert": {"created": ts}}, upsert=True)
            self._registered.add(stream)

    def _find_end(self, stream: str) -> int:
        """The highest seq stored in the stream (tombstone included), starting
        from the end this store object saw last."""
        hint = self._ends.get(stream)
        if hint is not None:
            found = self._scan(stream, hint)
            if found and found[0] == hint and len(found) < _SCAN_LIMIT:
                return found[-1]
        return self._top(stream)

    def _scan(self, stream: str, start: int) -> list[int]:
        """The stored seqs from ``start`` on (at most ``_SCAN_LIMIT``)."""
        cursor = self._messages.find({"s": stream, "q": {"$gte": start}}, {"q": 1, "_id": 0})
        return [int(d["q"]) for d in cursor.sort("q", 1).limit(_SCAN_LIMIT)]

    def _top(self, stream: str) -> int:
        doc = self._messages.find_one({"s": stream}, {"q": 1, "_id": 0}, sort=[("q", -1)])
        return int(doc["q"]) if doc else 0

    def _scan_end(self, stream: str, taken: int) -> int:
        """The end of the stream, knowing that seq ``taken`` is stored."""
        found = self._scan(stream, taken)
        return found[-1] if 0 < len(found) < _SCAN_LIMIT else self._top(stream)

    def read(self, stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        # Tombstones are skipped here, not in the query: a filter on the
        # tombstone flag can keep a server from using the (s, q) index.
        messages: list[Message] = []
        while True:
            want = None if limit is None else limit - len(messages)
            cursor = self._messages.find({"s": stream, "q": {"$gt": after}}, {"_id": 0}).sort("q", 1)
            if want is not None:
                cursor = cursor.limit(want)
            docs: list[dict[str, Any]] = self._guard(partial(list, cursor))
            kept = [Message(stream, d["q"], d["t"], d["d"]) for d in docs if "gone" not in d]
            messages.extend(kept)
            if want is None or len(docs) < want or len(kept) == len(docs):
                return messages
            after = docs[-1]["q"]

    def count(self, stream: str) -> int:
        def count() -> int:
            meta = self._streams.find_one({"_id": stream}, {"tomb": 1}) or {}
            tomb = meta.get("tomb")
            total = self._messages.count_documents({"s": stream})
            gone = tomb is not None and self._messages.find_one({"s": stream, "q": tomb}, {"_id": 1})
            return total - (1 if gone else 0)

        return int(self._guard(count))

    def last_seq(self, stream: str) -> int:
        return int(self._guard(lambda: self._top(stream)))

    def _remove(self, stream: str, upto: int | None = None, before: datetime | None = None) -> int:
        """Delete the stream's messages with ``seq <= upto`` and ingested
        ``before`` (each bound optional); the highest message, if it matches
        too, becomes a tombstone so the numbering survives."""
        top = self._messages.find_one({"s": stream}, {"q": 1, "t": 1, "gone": 1}, sort=[("q", -1)])
        if top is None:
            return 0
        below_top = top["q"] - 1 if upto is None else min(upto, top["q"] - 1)
        condition: dict[str, Any] = {"s": stream, "q": {"$lte": below_top}}
        if before is not None:
            condition["t"] = {"$lt": before}
        # The stream document remembers the tombstone, so it is not counted as removed.
        meta = self._streams.find_one({"_id": stream}, {"tomb": 1}) or {}
        removed = self._messages.delete_many(condition).deleted_count
        if meta.get("tomb") is not None and meta["tomb"] <= below_top and removed:
            removed -= 1
        top_matches = (upto is None or top["q"] <= upto) and (before is None or top["t"] < before)
        if not top.get("gone") and top_matches:
            self._messages.update_one(
                {"_id": top["_id"]}, {"$set": {"gone": True}, "$unset": {"d": ""}}
            )
            self._streams.update_one({"_id": stream}, {"$set": {"tomb": top["q"]}}, upsert=True)
            removed += 1
        return int(removed)

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
        self._guard(lambda: self._remove(stream))

    def trim(self, stream: str, upto: int) -> int:
        removed: int = self._guard(
            lambda: self._remove(stream, upto=upto)
        )
        return removed

    def delete(self, stream: str) -> None:
        def run() -> None:
            self._messages.delete_many({"s": stream})
            self._ends.pop(stream, None)
            self._registered.discard(stream)
            self._positions.delete_many({"s": stream})
            self._leases.delete_many({"s": stream})
            self._groups.delete_many({"_id": {"$regex": f"^{re.escape(stream)}/"}})
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

    def positions(self, stream: str) -> dict[str, int]:
        docs = self._guard(lambda: list(self._positions.find({"s": stream}, {"c": 1, "q": 1})))
        return {d["c"]: int(d["q"]) for d in docs}

    def expire(self, stream: str, max_age: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=max_age)
        removed: int = self._guard(
            lambda: self._remove(stream, before=cutoff)
        )
        return removed

    # -- consumer groups -----------------------------------------------------
    def lease(self, stream: str, group: str, owner: str, count: int, ttl: float,
              partial: bool) -> Lease | None:
        result: Lease | None = self._guard(lambda: self._lease(stream, group, owner, count, ttl, partial))
        return result

    def _lease(self, stream: str, group: str, owner: str, count: int, ttl: float,
               partial: bool) -> Lease | None:
        now = time.time()
        taken = self._leases.find_one_and_update(
            {"s": stream, "g": group, "done": False, "exp": {"$lt": now}},
            {"$set": {"owner": owner, "exp": now + ttl}}, sort=[("start", 1)],
        )
        if taken is not None:
            return Lease(taken["start"], taken["end"], taken_over=True)
        cursor_id = f"{stream}/{group}"
        for _ in range(_MAX_ATTEMPTS):
            cursor = self._groups.find_one({"_id": cursor_id}) or {}
            start = 1 + max(int(cursor.get("leased", 0)), self.get_position(stream, group))
            end = min(start + count - 1, self.last_seq(stream))
            if end < start or (end - start + 1 < count and not partial):
                return None
            try:
                self._leases.insert_one({"s": stream, "g": group, "start": start, "end": end,
                                         "owner": owner, "exp": now + ttl, "done": False})
            except mongo_errors.DuplicateKeyError:
                # Another member claimed this range first: skip past what is leased.
                claimed = self._leases.find({"s": stream, "g": group, "start": {"$gte": start}})
                ends = [d["end"] for d in claimed]
                self._groups.update_one({"_id": cursor_id}, {"$max": {"leased": max(ends, default=start)}},
                                        upsert=True)
                continue
            self._groups.update_one({"_id": cursor_id}, {"$max": {"leased": end}}, upsert=True)
            return Lease(start, end)
        raise StoreUnavailableError(f"could not lease from {stream!r} for group {group!r}")

    def complete(self, stream: str, group: str, start: int, owner: str) -> bool:
        done: bool = self._guard(lambda: self._complete(stream, group, start, owner))
        return done

    def _complete(self, stream: str, group: str, start: int, owner: str) -> bool:
        marked = self._leases.update_one(
            {"s": stream, "g": group, "start": start, "owner": owner, "done": False},
            {"$set": {"done": True}},
        ).modified_count
        position = self.get_position(stream, group)
        finished = self._leases.find(
            {"s": stream, "g": group, "done": True, "start": {"$gt": position}}
        ).sort("start", 1)
        advanced = advance(position, [(d["start"], d["end"]) for d in finished])
        if advanced > position:
            self.commit_position(stream, group, advanced)
            self._leases.delete_many({"s": stream, "g": group, "done": True, "end": {"$lte": advanced}})
        return bool(marked)

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
        return self._listeners.add(stream, callback)

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
