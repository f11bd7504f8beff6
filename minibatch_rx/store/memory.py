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
from minibatch_rx.store.base import Listener

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass
class _Log:
    messages: list[Message] = field(default_factory=list)
    last_seq: int = 0
    registered: bool = False


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
        self._listeners: dict[str, list[Listener]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"

    def _log(self, stream: str) -> _Log:
        log = self._logs.get(stream)
        if log is None:
            log = self._logs[stream] = _Log()
        return log

    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]]) -> list[int]:
        copies = [json.loads(json.dumps(p)) for p in payloads]
        with self._cond:
            log = self._log(stream)
            log.registered = True
            ts = self.clock()
            first = log.last_seq + 1
            log.messages.extend(
                Message(stream, first + i, ts, data) for i, data in enumerate(copies)
            )
            log.last_seq += len(copies)
            self._cond.notify_all()
            listeners = list(self._listeners.get(stream, ()))
        for listener in listeners:
            listener()
        return list(range(first, first + len(copies)))

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

    def trim(self, stream: str, upto: int) -> int:
        with self._cond:
            log = self._logs.get(stream)
            if log is None:
                return 0
            cut = bisect_right(log.messages, upto, key=lambda m: m.seq)
            del log.messages[:cut]
            return cut

    def delete(self, stream: str) -> None:
        with self._cond:
            self._logs.pop(stream, None)
            for key in [k for k in self._positions if k[0] == stream]:
                del self._positions[key]

    def get_position(self, stream: str, consumer: str) -> int:
        with self._cond:
            return self._positions.get((stream, consumer), 0)

    def commit_position(self, stream: str, consumer: str, seq: int) -> None:
        with self._cond:
            key = (stream, consumer)
            self._positions[key] = max(seq, self._positions.get(key, 0))

    def reader(self, stream: str) -> _MemoryReader:
        return _MemoryReader(self, stream)

    def listen(self, stream: str, callback: Listener) -> Callable[[], None]:
        with self._cond:
            self._listeners.setdefault(stream, []).append(callback)

        def remove() -> None:
            with self._cond:
                callbacks = self._listeners.get(stream, [])
                if callback in callbacks:
                    callbacks.remove(callback)

        return remove

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
