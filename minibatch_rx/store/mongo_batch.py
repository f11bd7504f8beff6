"""MongoDB batches too large for one insert command, stored all-or-nothing.

pymongo splits an ``insert_many`` into several commands past 48 MB (or
100,000 documents); a producer killed between them would leave part of its
batch behind. A batch that fits one command is stored whole or not at all by
the server (the command arrives complete or not at all), so only large
batches take the staged path here, in this order:

1. the *tail* (seqs ``n + 2 ...``) is inserted in chunks, each document
   marked ``h: n + 1`` (its head's seq) and ``b: <batch token>``;
2. the *head* (seq ``n + 1``, same token) is inserted: the commit;
3. the tail's ``h`` marks are removed (tidying; readers do not need it).

A tail document is visible only once its head is stored with the same token,
so readers stop in front of a batch until its commit and then see all of it.
Producers do not append after an uncommitted tail: they wait for it, and if
it does not grow for ``STALE_AFTER`` seconds (its writer died) they *claim*
its head seq with a void fence document, delete the tail and remove the
fence, so the seqs are reused, but never one a reader has seen. Documents
a reader cannot see all lie above the last one it can see. The unique
``(s, q)`` index decides between a commit and a claim; a writer whose head
seq was taken deletes its tail and stores the batch again further on.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import bson
from pymongo import errors as mongo_errors
from pymongo.collection import Collection

from minibatch_rx.errors import PayloadTooLargeError, StoreUnavailableError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # MongoDB's BSON document limit
CHUNK_BYTES = 32 * 1000 * 1000  # below pymongo's 48 MB split, so a chunk is one command
CHUNK_DOCS = 50_000  # below the servers' 100,000 documents per command
STALE_AFTER = 30.0  # seconds an uncommitted tail may stand still before it is claimed
_POLL = 0.02
_OVERHEAD = 160  # bytes of the stored fields besides the payload, stream name and key
MAX_ATTEMPTS = 1000
_END_FIELDS = {"q": 1, "t": 1, "h": 1, "b": 1, "void": 1, "s": 1, "gone": 1}  # what is needed of the end

MESSAGE, COMMITTED, PENDING, ZOMBIE, FENCE = "message", "committed", "pending", "zombie", "fence"
Doc = dict[str, Any]


def key_id(stream: str, key: str | None) -> str:
    """The ``_id`` of a keyed message: keys are unique per stream through it."""
    return f"{stream}/{key}"


def new_doc(stream: str, seq: int, ts: datetime, payload: Mapping[str, Any], key: str | None) -> Doc:
    """A message document as stored."""
    doc = {"s": stream, "q": seq, "t": ts, "d": payload}
    if key is not None:
        doc["_id"] = key_id(stream, key)
    return doc


def document_sizes(stream: str, payloads: Sequence[Mapping[str, Any]],
                   keys: Sequence[str | None]) -> list[int]:
    """Each payload's stored size in bytes (an upper bound); raises
    :class:`PayloadTooLargeError` naming the first one over MongoDB's 16 MB."""
    sizes = []
    for index, (payload, key) in enumerate(zip(payloads, keys, strict=True)):
        size = len(bson.encode(payload)) + _OVERHEAD + 2 * len(stream.encode()) + len((key or "").encode())
        if size > MAX_DOCUMENT_BYTES:
            raise PayloadTooLargeError(
                f"payload {index} for {stream!r} is {size:,} bytes stored; MongoDB documents "
                f"are limited to {MAX_DOCUMENT_BYTES:,} bytes: split it or store a reference"
            )
        sizes.append(size)
    return sizes


def needs_staging(sizes: Sequence[int]) -> bool:
    """True if a batch of documents of these sizes does not fit one insert command."""
    return len(sizes) > CHUNK_DOCS or sum(sizes) > CHUNK_BYTES


def chunked(docs: Sequence[Doc], sizes: Sequence[int]) -> Iterator[list[Doc]]:
    """``docs`` in consecutive chunks that each fit one insert command."""
    chunk: list[Doc] = []
    total = 0
    for doc, size in zip(docs, sizes, strict=True):
        if chunk and (total + size > CHUNK_BYTES or len(chunk) >= CHUNK_DOCS):
            yield chunk
            chunk, total = [], 0
        chunk.append(doc)
        total += size
    if chunk:
        yield chunk


class Batches:
    """Numbering and storing batches on one messages collection; ``ends``
    holds the end of each stream as last seen, where the next search starts."""

    def __init__(self, messages: Collection[Doc]) -> None:
        self._messages = messages
        self.ends: dict[str, int] = {}

    def end(self, stream: str, ts: datetime, taken: int | None = None) -> tuple[int, datetime]:
        """The highest seq stored in the stream (tombstone included) once no
        uncommitted batch is at its end, and ``ts`` raised to that message's
        ingest time. ``taken`` is a seq known to be stored, where the search
        starts; else it starts from the end seen last."""
        end = self.settled(stream, self._end_doc(stream, taken), lambda: self._end_doc(stream))
        if end is None:
            return 0, ts
        return int(end["q"]), max(ts, end["t"])

    def _end_doc(self, stream: str, start: int | None = None) -> Doc | None:
        start = self.ends.get(stream) if start is None else start
        if start is not None:  # the index walked back from the end, no further than ``start``
            found = self._messages.find_one({"s": stream, "q": {"$gte": start}}, _END_FIELDS,
                                            sort=[("q", -1)])
            if found is not None:
                return found
        return self._messages.find_one({"s": stream}, _END_FIELDS, sort=[("q", -1)])

    def visible_end(self, stream: str) -> Doc | None:
        """The stream's highest document a reader may see (tombstone included)."""
        doc = self._messages.find_one({"s": stream}, _END_FIELDS, sort=[("q", -1)])
        while doc is not None:
            state = self.state(stream, doc)
            if state in (MESSAGE, COMMITTED):
                return doc
            below = doc["q"] if state == FENCE else doc["h"]
            if state == ZOMBIE:  # an abandoned tail may lie above newer messages
                lowest = self._messages.find_one(_tail(stream, doc["b"], doc["h"]), {"q": 1}, sort=[("q", 1)])
                below = min(doc["q"], lowest["q"] if lowest else doc["q"])
            doc = self._messages.find_one({"s": stream, "q": {"$lt": below}}, _END_FIELDS, sort=[("q", -1)])
        return None

    def insert(self, stream: str, docs: Callable[[int, datetime, list[int]], list[Doc]],
               keys: list[str | None], existing: dict[str, int], pending: list[int], last: int,
               ts: datetime) -> tuple[list[int], list[int]]:
        """Insert a batch that fits one command after seq ``last``; ``docs(last,
        ts, pending)`` numbers the payloads still to store. On a lost race for a
        seq the rest is numbered again after the new end; returns the indexes
        stored and their seqs."""
        fresh: list[int] = []
        seqs: list[int] = []
        for attempt in range(MAX_ATTEMPTS):
            if not pending:
                return fresh, seqs
            batch = docs(last, ts, pending)
            try:
                self._messages.insert_many(batch, ordered=True)
                return fresh + pending, seqs + [d["q"] for d in batch]
            except mongo_errors.BulkWriteError as exc:
                inserted = exc.details.get("nInserted", 0)
                fresh.extend(pending[:inserted])
                seqs.extend(d["q"] for d in batch[:inserted])
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != 11000 for e in errors):
                    raise
                failed, pending = pending[inserted], pending[inserted + 1:]
                if "_id" in (errors[0].get("keyPattern") or {}) or "_id_" in errors[0].get("errmsg", ""):
                    # Another producer stored the same key meanwhile: reuse its seq.
                    key = str(keys[failed])
                    found = self._messages.find_one({"_id": key_id(stream, key)}, {"q": 1})
                    existing[key] = int(found["q"]) if found else last
                    last = batch[inserted - 1]["q"] if inserted else last
                else:
                    # Lost the race for the next seq: find the real end and retry.
                    pending.insert(0, failed)
                    last, ts = self.end(stream, ts, taken=batch[inserted]["q"])
                    time.sleep(random.uniform(0, 0.0005 * min(attempt, 20)))
        raise StoreUnavailableError(f"could not append to {stream!r} after {MAX_ATTEMPTS} attempts")

    def state(self, stream: str, doc: Doc, known: Mapping[int, Doc] | None = None) -> str:
        """Whether ``doc`` is a plain message, part of a committed batch, part
        of an uncommitted (``PENDING``) or abandoned (``ZOMBIE``) tail, or a
        claim's ``FENCE``. ``known`` maps seqs to documents already fetched."""
        if doc.get("void"):
            return FENCE
        if "h" not in doc:
            return MESSAGE
        head = (known or {}).get(doc["h"])
        if head is None:
            head = self._messages.find_one({"s": stream, "q": doc["h"]}, {"b": 1, "void": 1})
        if head is None:
            return PENDING
        return COMMITTED if head.get("b") == doc["b"] and not head.get("void") else ZOMBIE

    def visible_prefix(self, stream: str, docs: Sequence[Doc], after: int) -> int:
        """How many of ``docs`` (in seq order, everything after seq ``after``)
        a reader may see: it stops at the first one of a batch that is not
        committed. A tail whose head is after ``after`` but not among ``docs``
        was committed after the read: the head would be skipped, so the reader
        stops there and reads again."""
        known = {int(d["q"]): d for d in docs}
        decided: dict[Any, bool] = {}
        for index, doc in enumerate(docs):
            if "h" in doc:
                if int(doc["h"]) > after and int(doc["h"]) not in known:
                    return index
                mark = (doc.get("h"), doc.get("b"), doc.get("void"))
                if mark not in decided:
                    decided[mark] = self.state(stream, doc, known) == COMMITTED
                if not decided[mark]:
                    return index
        return len(docs)

    def settled(self, stream: str, end: Doc | None, find_end: Any) -> Doc | None:
        """The stream's last document once no uncommitted batch is at its end:
        waits for a batch being written, claims one whose writer died, removes
        abandoned tails. ``find_end()`` fetches the last document again."""
        watched: tuple[Any, ...] | None = None
        since = time.monotonic()
        while end is not None:
            state = self.state(stream, end)
            if state == MESSAGE:
                return end
            if state == COMMITTED:
                self.finalize(stream, end["b"], end["h"])
                return end
            if state == ZOMBIE:
                self.discard(stream, end["b"], end["h"])
            else:
                mark = (end["q"], end.get("b"))
                if mark != watched:
                    watched, since = mark, time.monotonic()
                elif time.monotonic() - since > STALE_AFTER:
                    self._claim(stream, end, state)
                    watched = None
                else:
                    time.sleep(_POLL)
            end = find_end()
        return None

    def _claim(self, stream: str, end: Doc, state: str) -> None:
        """Take an abandoned batch's head seq, so its writer can never commit,
        then delete its tail and give the seqs back."""
        if state == FENCE:  # a claim whose claimer died: its tail is already gone
            self._messages.delete_one({"_id": end["_id"]})
            return
        seq = end["h"]
        fence = {"s": end["s"], "q": seq, "t": end["t"], "void": True, "b": uuid.uuid4().hex, "h": seq}
        try:
            self._messages.insert_one(fence)
        except mongo_errors.DuplicateKeyError:
            return  # committed or claimed meanwhile: look again
        self.discard(stream, end["b"], seq)
        self._messages.delete_one({"_id": fence["_id"]})

    def write(self, stream: str, docs: list[Doc], sizes: Sequence[int]) -> bool:
        """Store ``docs`` (numbered from the stream's end on) as one batch.
        False if it lost its head seq to another producer: nothing of it is
        then stored, and the caller numbers it again."""
        token = uuid.uuid4().hex
        head, tail = docs[0], docs[1:]
        head["b"] = token
        for doc in tail:
            doc.update(h=head["q"], b=token)
        staged = _tail(stream, token, head["q"])
        try:
            for chunk in chunked(tail, sizes[1:]):
                self._messages.insert_many(chunk, ordered=True)
            if self._messages.count_documents(staged) != len(tail):
                raise mongo_errors.DuplicateKeyError("the batch was claimed by another producer")
            self._messages.insert_one(head)
        except (mongo_errors.DuplicateKeyError, mongo_errors.BulkWriteError) as exc:
            self.discard(stream, token, head["q"])
            if isinstance(exc, mongo_errors.BulkWriteError) and any(
                e.get("code") != 11000 for e in exc.details.get("writeErrors", [])
            ):
                raise
            return False
        self.finalize(stream, token, head["q"])
        return True

    def finalize_upto(self, stream: str, top: int) -> None:
        """Finalize every committed batch at or below seq ``top`` whose writer
        died before removing its marks: deleting its head (trim, clear, expire)
        must not make its tail look uncommitted."""
        marked = self._messages.find({"s": stream, "q": {"$lte": top}, "h": {"$exists": True}},
                                     {"h": 1, "b": 1, "void": 1, "s": 1, "q": 1})
        done: set[tuple[Any, Any]] = set()
        for doc in marked:
            mark = (doc.get("h"), doc.get("b"))
            if mark not in done and not doc.get("void") and self.state(stream, doc) == COMMITTED:
                self.finalize(stream, doc["b"], doc["h"])
            done.add(mark)

    def finalize(self, stream: str, token: str, head: int) -> None:
        """Drop a committed batch's marks, so it reads like any other messages."""
        self._messages.update_many(_tail(stream, token, head), {"$unset": {"h": ""}})

    def discard(self, stream: str, token: str, head: int) -> None:
        """Delete an uncommitted batch's tail (never a committed head)."""
        self._messages.delete_many(_tail(stream, token, head))


def _tail(stream: str, token: str, head: int) -> Doc:
    """The query for a batch's tail: only the seqs after its head are scanned."""
    return {"s": stream, "q": {"$gt": head}, "b": token, "h": {"$exists": True}}
