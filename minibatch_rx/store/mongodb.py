"""MongoDB store (pymongo): for many machines, replica sets and sharding.

Layout, in the database named by the URL path (default ``minibatch``):

* ``mb_messages``: ``{_id, s: stream, q: seq, t: ingest time, d: payload}``,
  with a unique index on ``(s, q)``; a keyed message's ``_id`` is
  ``"<stream>/<key>"``, so the always-present ``_id`` index both finds keys
  and keeps them unique (a partial index would do too, but not every server
  speaking the protocol uses one for lookups);
* ``mb_streams``: one document per registered stream;
* ``mb_positions``: ``{_id: "stream/consumer", s, c, q}``;
* ``mb_leases`` and ``mb_groups``: consumer-group leases and lease cursors;
* ``mb_state``: small shared documents (:meth:`MongoStore.update_state`),
  ``{_id: {s, n}, s: stream, n: name, doc: JSON text, v: version}``. The
  document is kept as JSON text, so it reads back exactly as on the other
  backends (no BSON limits on keys or integers). Changes are optimistic: a
  write names the version it read, and a new version is a fresh ``ObjectId``,
  never a counter, so a document deleted and created again cannot be mistaken
  for the one read (no lost update).

Ordering without transactions or a hot counter document: a producer finds
the end of the stream (the highest stored seq ``n``) and inserts its batch at
``n + 1 ...``. Seq ``n + 1`` is therefore only ever written after ``n`` is
visible, so a reader that has seen ``n`` can never later find a smaller seq.
A batch is stored whole or not at all: one insert command when it fits one,
else the staged commit of :mod:`minibatch_rx.store.mongo_batch`, whose
uncommitted documents no reader sees and no producer appends after. The
producer also stamps its batch no earlier than the end's ingest time, so
ingest times never decrease in seq order, whatever the producers' clocks.
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

import json
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import errors as mongo_errors
from pymongo.collection import Collection

from minibatch_rx.errors import (
    InvalidURLError,
    StoreAuthenticationError,
    StoreBusyError,
    StoreUnavailableError,
)
from minibatch_rx.message import Message
from minibatch_rx.store.base import (
    Backoff,
    Listener,
    Listeners,
    R,
    StateUpdate,
    encode_state,
    fresh_indexes,
    merge_seqs,
)
from minibatch_rx.store.leases import Lease, advance, next_range
from minibatch_rx.store.mongo_batch import (
    MAX_ATTEMPTS,
    Batches,
    document_sizes,
    key_id,
    needs_staging,
    new_doc,
)
from minibatch_rx.store.mongo_watch import MongoWatch
from minibatch_rx.store.url import redact

DEFAULT_DATABASE = "minibatch"
DEFAULT_TIMEOUT_MS = 5000
_AUTH_FAILED = 18  # wrong user, password or authSource
_UNAUTHORIZED = 13  # no credentials, or a user without the needed role
STATE_ATTEMPTS = 100
"""Tries of :meth:`MongoStore.update_state` against concurrent writers before
it raises :class:`~minibatch_rx.errors.StoreBusyError`."""
_STATE_PAUSE_LIMIT = 0.05  # seconds: the longest random pause between two tries


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
        self._registered: set[str] = set()
        self._leases: Collection[dict[str, Any]] = db["mb_leases"]
        self._groups: Collection[dict[str, Any]] = db["mb_groups"]
        self._states: Collection[dict[str, Any]] = db["mb_state"]
        self._batches = Batches(self._messages)
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
        except mongo_errors.OperationFailure as exc:
            reason = redact(str((exc.details or {}).get("errmsg") or exc))
            if exc.code == _AUTH_FAILED or "authentication failed" in reason.lower():
                raise StoreAuthenticationError(
                    f"MongoDB at {self.url!r} refused the credentials in the URL ({reason}); "
                    "check the user, the password and authSource"
                ) from None
            if exc.code == _UNAUTHORIZED:
                raise StoreAuthenticationError(
                    f"MongoDB at {self.url!r} does not let this client do this ({reason}); "
                    "put a user with read/write access to the database in the URL"
                ) from None
            raise

    # -- messages ----------------------------------------------------------
    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]],
               keys: Sequence[str | None] | None = None) -> list[int]:
        # BSON dates hold milliseconds; truncate so what we return is what is stored.
        now = datetime.now(UTC)
        ts = now.replace(microsecond=now.microsecond // 1000 * 1000)
        keys = [None] * len(payloads) if keys is None else list(keys)
        sizes = document_sizes(stream, payloads, keys)
        seqs: list[int] = self._guard(lambda: self._append(stream, list(payloads), keys, sizes, ts))
        return seqs

    def _append(self, stream: str, payloads: list[Mapping[str, Any]], keys: list[str | None],
                sizes: list[int], ts: datetime) -> list[int]:
        def numbered(last: int, ts: datetime, indexes: list[int]) -> list[dict[str, Any]]:
            return [new_doc(stream, last + n, ts, payloads[i], keys[i]) for n, i in enumerate(indexes, 1)]

        self._register(stream, ts)
        for _ in range(MAX_ATTEMPTS):
            last, ts = self._batches.end(stream, ts)
            wanted = {key_id(stream, k): k for k in keys if k is not None}
            existing: dict[str, int] = {}
            if wanted:
                found = self._messages.find({"_id": {"$in": list(wanted)}}, {"q": 1})
                existing = {wanted[d["_id"]]: d["q"] for d in found}
            pending = fresh_indexes(keys, existing)
            if len(pending) < 2 or not needs_staging([sizes[i] for i in pending]):
                fresh, seqs = self._batches.insert(stream, numbered, keys, existing, pending, last, ts)
                break
            docs = numbered(last, ts, pending)
            if self._batches.write(stream, docs, [sizes[i] for i in pending]):
                fresh, seqs = pending, [d["q"] for d in docs]
                break
        else:
            raise StoreUnavailableError(f"could not append to {stream!r} after {MAX_ATTEMPTS} attempts")
        if seqs:
            self._batches.ends[stream] = seqs[-1]
            self._listeners.notify(stream)
        return merge_seqs(keys, existing, fresh, seqs)

    def _register(self, stream: str, ts: datetime) -> None:
        if stream not in self._registered:
            self._streams.update_one({"_id": stream}, {"$setOnInsert": {"created": ts}}, upsert=True)
            self._registered.add(stream)

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
            visible: int = self._guard(partial(self._batches.visible_prefix, stream, docs, after))
            kept = [Message(stream, d["q"], d["t"], d["d"]) for d in docs[:visible] if "gone" not in d]
            messages.extend(kept)
            if want is None or len(docs) < want or len(kept) == len(docs) or visible < len(docs):
                return messages
            after = docs[-1]["q"]

    def count(self, stream: str) -> int:
        def count() -> int:
            meta = self._streams.find_one({"_id": stream}, {"tomb": 1}) or {}
            tomb = meta.get("tomb")
            top = self._batches.visible_end(stream)  # uncommitted batches lie above it
            total = self._messages.count_documents({"s": stream, "q": {"$lte": top["q"]}}) if top else 0
            gone = tomb is not None and self._messages.find_one({"s": stream, "q": tomb}, {"_id": 1})
            return total - (1 if gone else 0)

        return int(self._guard(count))

    def last_seq(self, stream: str) -> int:
        def last() -> int:
            doc = self._batches.visible_end(stream)
            return int(doc["q"]) if doc else 0

        return int(self._guard(last))

    def _remove(self, stream: str, upto: int | None = None, before: datetime | None = None) -> int:
        """Delete the stream's messages with ``seq <= upto`` and ingested
        ``before`` (each bound optional); the highest message, if it matches
        too, becomes a tombstone so the numbering survives."""
        top = self._batches.visible_end(stream)  # an uncommitted batch above it is left alone
        if top is None:
            return 0
        self._batches.finalize_upto(stream, top["q"])
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
            self._batches.ends.pop(stream, None)
            self._registered.discard(stream)
            self._positions.delete_many({"s": stream})
            self._leases.delete_many({"s": stream})
            self._groups.delete_many({"_id": {"$regex": f"^{re.escape(stream)}/"}})
            self._states.delete_many({"s": stream})
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

    def remove_position(self, stream: str, consumer: str) -> bool:
        def remove() -> bool:
            known = self._positions.delete_one({"_id": f"{stream}/{consumer}"}).deleted_count
            self._leases.delete_many({"s": stream, "g": consumer})
            self._groups.delete_one({"_id": f"{stream}/{consumer}"})
            self._states.delete_many({"s": stream, "n": {"$regex": f"^{re.escape(consumer)}/"}})
            return bool(known)

        removed: bool = self._guard(remove)
        return removed

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
        for _ in range(MAX_ATTEMPTS):
            cursor = self._groups.find_one({"_id": cursor_id}) or {}
            lease = next_range(max(int(cursor.get("leased", 0)), self.get_position(stream, group)),
                               self.last_seq(stream), count, partial)
            if lease is None:
                return None
            start, end = lease.start, lease.end
            try:
                row = self._leases.insert_one({"s": stream, "g": group, "start": start, "end": end,
                                               "owner": owner, "exp": now + ttl, "done": False})
                if self.get_position(stream, group) >= start:
                    # Read stale: another member leased, finished and (its row deleted with the
                    # position moving over it) let go of this range between our reads and our
                    # insert. Its row being gone means the position is past it: take ours back.
                    self._leases.delete_one({"_id": row.inserted_id})
                    continue
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

    def update_state(self, stream: str, name: str, update: StateUpdate[R]) -> R:
        result: R = self._guard(lambda: self._update_state(stream, name, update))
        return result

    def _update_state(self, stream: str, name: str, update: StateUpdate[R]) -> R:
        key = {"s": stream, "n": name}
        for attempt in range(STATE_ATTEMPTS):
            found = self._states.find_one({"_id": key})
            new, result = update(None if found is None else json.loads(found["doc"]), time.time())
            if new is None and found is None:
                return result  # nothing to delete: the read was the whole update
            if new is None:
                assert found is not None
                if self._states.delete_one({"_id": key, "v": found["v"]}).deleted_count:
                    return result
            else:
                doc = {"_id": key, "s": stream, "n": name, "doc": encode_state(stream, name, new),
                       "v": ObjectId()}
                if found is not None:
                    if self._states.replace_one({"_id": key, "v": found["v"]}, doc).matched_count:
                        return result
                else:
                    try:
                        self._states.insert_one(doc)
                        return result
                    except mongo_errors.DuplicateKeyError:
                        pass  # another writer created it first: read it and try again
            # Another writer changed the document since it was read: a random pause
            # (growing with the tries) keeps contenders from colliding in lock step.
            time.sleep(random.uniform(0, min(0.001 * 2 ** attempt, _STATE_PAUSE_LIMIT)))
        raise StoreBusyError(
            f"state document {name!r} of stream {stream!r} in MongoDB at {self.url!r} kept being "
            f"changed by other writers: {STATE_ATTEMPTS} tries to update it failed")

    # -- liveness ----------------------------------------------------------
    def supports_change_streams(self) -> bool:
        """True if the deployment offers change streams (replica set or sharded)."""
        if self._change_streams is None:
            hello = self._guard(lambda: self._client.admin.command("hello"))
            self._change_streams = bool(hello.get("setName") or hello.get("msg") == "isdbgrid")
        return self._change_streams

    def reader(self, stream: str) -> MongoReader:
        return MongoReader(self, stream)

    def watch(self) -> MongoWatch:
        """One change stream for every stream of the database (see :class:`MongoWatch`)."""
        return MongoWatch(self)

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
