"""In-process store: for tests, virtual time and throwaway pipelines.

Every ``memory://NAME`` URL names one store per process, so two handles on
``memory://demo`` see the same streams. Payloads are copied through JSON at
append time, so the stored data behaves exactly as it would in SQLite and a
producer mutating its dict afterwards changes nothing.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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
from minibatch_rx.store.leases import Lease, advance, next_range
from minibatch_rx.validation import encode_json

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class _Log:
    messages: list[Message] = field(default_factory=list)
    last_seq: int = 0
    registered: bool = False
    keys: dict[str, int] = field(default_factory=dict)
    leases: dict[tuple[str, int], list[Any]] = field(default_factory=dict)


class MemoryStore:
    """A :class:`~minibatch_rx.store.base.Store` held in this process's memory.

    ``clock`` stamps ingest times; pass a scheduler's clock to run in virtual
    time (``minibatch_rx.testing`` does this for you).

    >>> store = MemoryStore()
    >>> store.append('s', [{'a': 1}, {'a': 2}])
    [1, 2]
    >>> [m.data for m in store.read('s', after=1)]
    [{'a': 2}]
    """

    push = True

    def __init__(self, url: str = "memory://", clock: Clock | None = None) -> None:
        self.url = url
        self.clock: Clock = clock or utc_now
        self._cond = threading.Condition()
        self._logs: dict[str, _Log] = {}
        self._positions: dict[tuple[str, str], int] = {}
        self._states: dict[tuple[str, str], str] = {}  # (stream, name) -> the document as JSON
        self._listeners = Listeners()

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"

    def _log(self, stream: str) -> _Log:
        log = self._logs.get(stream)
        if log is None:
            log = self._logs[stream] = _Log()
        return log

    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]],
               keys: Sequence[str | None] | None = None) -> list[int]:
        copies = [json.loads(encode_json(p)) for p in payloads]
        keys = [None] * len(copies) if keys is None else list(keys)
        with self._cond:
            log = self._log(stream)
            log.registered = True
            existing = {k: log.keys[k] for k in keys if k is not None and k in log.keys}
            fresh = fresh_indexes(keys, existing)
            ts = self.clock()
            first = log.last_seq + 1
            seqs = range(first, first + len(fresh))
            for seq, i in zip(seqs, fresh, strict=True):
                log.messages.append(Message(stream, seq, ts, copies[i]))
                key = keys[i]
                if key is not None:
                    log.keys[key] = seq
            log.last_seq += len(fresh)
            self._cond.notify_all()
        if fresh:
            self._listeners.notify(stream)
        return merge_seqs(keys, existing, fresh, seqs)

    def read(self, stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        with self._cond:
            messages = self._logs[stream].messages if stream in self._logs else []
            start = bisect_right(messages, after, key=lambda m: m.seq)
            end = len(messages) if limit is None else start + limit
            return messages[start:end]

    def count(self, stream: str) -> int:
        with self._cond:
            return len(self._logs[stream].messages) if stream in self._logs else 0

    def last_seq(self, stream: str) -> int:
        with self._cond:
            return self._logs[stream].last_seq if stream in self._logs else 0

    def ensure_stream(self, stream: str) -> None:
        with self._cond:
            self._log(stream).registered = True

    def streams(self) -> list[str]:
        with self._cond:
            return sorted(name for name, log in self._logs.items() if log.registered)

    def clear(self, stream: str) -> None:
        with self._cond:
            if stream in self._logs:
                self._logs[stream].messages = []
                self._logs[stream].keys = {}

    def trim(self, stream: str, upto: int) -> int:
        with self._cond:
            log = self._logs.get(stream)
            if log is None:
                return 0
            cut = bisect_right(log.messages, upto, key=lambda m: m.seq)
            del log.messages[:cut]
            log.keys = {k: seq for k, seq in log.keys.items() if seq > upto}
            return cut

    def delete(self, stream: str) -> None:
        with self._cond:
            self._logs.pop(stream, None)
            for key in [k for k in self._positions if k[0] == stream]:
                del self._positions[key]
            for state in [k for k in self._states if k[0] == stream]:
                del self._states[state]

    def get_position(self, stream: str, consumer: str) -> int:
        with self._cond:
            return self._positions.get((stream, consumer), 0)

    def commit_position(self, stream: str, consumer: str, seq: int) -> None:
        with self._cond:
            key = (stream, consumer)
            self._positions[key] = max(seq, self._positions.get(key, 0))

    def positions(self, stream: str) -> dict[str, int]:
        with self._cond:
            return {c: seq for (s, c), seq in self._positions.items() if s == stream}

    def remove_position(self, stream: str, consumer: str) -> bool:
        with self._cond:
            known = self._positions.pop((stream, consumer), None) is not None
            log = self._logs.get(stream)
            if log is not None:
                for key in [k for k in log.leases if k[0] == consumer]:
                    del log.leases[key]
            prefix = consumer + "/"
            for state in [k for k in self._states if k[0] == stream and k[1].startswith(prefix)]:
                del self._states[state]
            return known

    def expire(self, stream: str, max_age: float) -> int:
        before = self.clock().timestamp() - max_age
        with self._cond:
            log = self._logs.get(stream)
            if log is None:
                return 0
            kept = [m for m in log.messages if m.ts.timestamp() >= before]
            removed = len(log.messages) - len(kept)
            log.messages = kept
            alive = {m.seq for m in kept}
            log.keys = {k: seq for k, seq in log.keys.items() if seq in alive}
            return removed

    def lease(self, stream: str, group: str, owner: str, count: int, ttl: float,
              partial: bool) -> Lease | None:
        now = self.clock().timestamp()
        with self._cond:
            log = self._log(stream)
            mine = sorted((start, v) for (g, start), v in log.leases.items() if g == group)
            for start, entry in mine:  # entry: [end, owner, expires, done]
                if not entry[3] and entry[2] < now:
                    entry[1], entry[2] = owner, now + ttl
                    return Lease(start, entry[0], taken_over=True)
            claimed = max([self._positions.get((stream, group), 0)] + [v[0] for _, v in mine])
            lease = next_range(claimed, log.last_seq, count, partial)
            if lease is not None:
                log.leases[(group, lease.start)] = [lease.end, owner, now + ttl, False]
            return lease

    def complete(self, stream: str, group: str, start: int, owner: str) -> bool:
        with self._cond:
            log = self._log(stream)
            entry = log.leases.get((group, start))
            if entry is None or entry[1] != owner or entry[3]:
                return False
            entry[3] = True
            position = self._positions.get((stream, group), 0)
            finished = sorted(
                (s, v[0]) for (g, s), v in log.leases.items() if g == group and v[3] and s > position
            )
            advanced = advance(position, finished)
            if advanced > position:
                self._positions[(stream, group)] = advanced
                for key in [k for k, v in log.leases.items() if k[0] == group and v[3] and v[0] <= advanced]:
                    del log.leases[key]
            return True

    def update_state(self, stream: str, name: str, update: StateUpdate[R]) -> R:
        # Kept as JSON text: neither ``update`` nor the caller can change the stored document.
        with self._cond:
            text = self._states.get((stream, name))
            new, result = update(None if text is None else json.loads(text), self.clock().timestamp())
            if new is None:
                self._states.pop((stream, name), None)
            else:
                self._states[(stream, name)] = encode_state(stream, name, new)
            return result

    def reader(self, stream: str) -> _MemoryReader:
        return _MemoryReader(self, stream)

    def listen(self, stream: str, callback: Listener) -> Callable[[], None]:
        return self._listeners.add(stream, callback)

    def close(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _MemoryReader:
    def __init__(self, store: MemoryStore, stream: str) -> None:
        self._store = store
        self._stream = stream
        self._closed = False

    def read(self, after: int, limit: int | None = None) -> list[Message]:
        return self._store.read(self._stream, after, limit)

    def wait(self, after: int, timeout: float) -> bool:
        store = self._store
        with store._cond:
            return store._cond.wait_for(
                lambda: self._closed or store.last_seq(self._stream) > after, timeout
            ) and not self._closed

    def close(self) -> None:
        with self._store._cond:
            self._closed = True
            self._store._cond.notify_all()
