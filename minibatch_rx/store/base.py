"""The contract every storage backend fulfils.

The rest of the package talks to storage only through :class:`Store` and
:class:`Reader`; nothing outside ``minibatch_rx.store`` knows which backend it
is using.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from minibatch_rx.message import Message

Listener = Callable[[], None]


@runtime_checkable
class Reader(Protocol):
    """A live cursor on one stream, owned by a single consumer thread.

    ``read`` fetches stored messages; ``wait`` blocks until messages after a
    given seq may exist (or the timeout passes, or the reader is closed).
    Closing a reader releases every resource it holds.
    """

    def read(self, after: int, limit: int | None = None) -> list[Message]:
        """Messages with ``seq > after`` in seq order, at most ``limit``."""
        ...

    def wait(self, after: int, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for a message with ``seq > after``.

        Returns ``True`` when new messages may be available; spurious wake-ups
        are allowed, missed ones are not.
        """
        ...

    def close(self) -> None:
        """Release the reader's resources; a blocked ``wait`` returns at once."""
        ...


@runtime_checkable
class Store(Protocol):
    """A durable log of messages per stream, plus consumer positions.

    Guarantees every backend gives:

    * ``append`` assigns each payload a ``seq`` one above the last ever
      assigned in that stream (gap-free, never reused, even after ``clear``);
    * once a reader has seen ``seq = n``, no message with a smaller seq can
      appear later;
    * an append returns only after the store holds the messages.
    """

    url: str
    """The store's URL with any password redacted."""

    push: bool
    """True if ``listen`` callbacks run synchronously inside ``append``."""

    def append(self, stream: str, payloads: Sequence[Mapping[str, Any]]) -> list[int]:
        """Store the payloads, in order, as one atomic batch; return their seqs."""
        ...

    def read(self, stream: str, after: int = 0, limit: int | None = None) -> list[Message]:
        """Messages with ``seq > after`` in seq order, at most ``limit``."""
        ...

    def count(self, stream: str) -> int:
        """Number of messages currently held for the stream."""
        ...

    def last_seq(self, stream: str) -> int:
        """Highest seq ever assigned in the stream (0 if none)."""
        ...

    def ensure_stream(self, stream: str) -> None:
        """Register the stream so that :meth:`streams` lists it."""
        ...

    def streams(self) -> list[str]:
        """Names of the registered streams, sorted."""
        ...

    def clear(self, stream: str) -> None:
        """Remove the stream's messages; seqs continue where they were."""
        ...

    def delete(self, stream: str) -> None:
        """Remove the stream, its messages and its consumer positions."""
        ...

    def trim(self, stream: str, upto: int) -> int:
        """Remove the stream's messages with ``seq <= upto``; return how many."""
        ...

    def get_position(self, stream: str, consumer: str) -> int:
        """Last seq acknowledged by ``consumer`` (0 if it never committed)."""
        ...

    def commit_position(self, stream: str, consumer: str, seq: int) -> None:
        """Record that ``consumer`` has processed every message up to ``seq``.

        Positions never move backwards: committing a smaller seq is a no-op.
        """
        ...

    def reader(self, stream: str) -> Reader:
        """A live cursor for one consumer thread."""
        ...

    def listen(self, stream: str, callback: Listener) -> Callable[[], None]:
        """Call ``callback`` after each append to ``stream`` made through this
        store object; returns a function that removes the listener."""
        ...

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...


class Backoff:
    """Adaptive polling delay: short right after activity, longer when idle.

    Used by backends without cross-process notification. The delay doubles
    from ``start`` up to ``limit`` and resets on activity.
    """

    def __init__(self, start: float = 0.0005, limit: float = 0.02) -> None:
        self.start = start
        self.limit = limit
        self.delay = start

    def reset(self) -> None:
        """Go back to the shortest delay (after new data was seen)."""
        self.delay = self.start

    def next(self, deadline: float) -> float:
        """The next delay, never past ``deadline`` (a ``time.monotonic`` value)."""
        delay = min(self.delay, max(0.0, deadline - time.monotonic()))
        self.delay = min(self.delay * 2, self.limit)
        return delay
