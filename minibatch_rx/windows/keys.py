"""``key_by``: which partition a record belongs to.

A key is read from each record's value (the payload, or what a previous
stage produced) by a field name or a function. Keys must be plain values,
``str``, ``int``, ``float``, ``bool`` or ``None``, or a tuple (or list) of
them, so they can name a window in sink idempotency keys and journals (an
``IntEnum`` or another subclass becomes its plain value). A
record whose key is missing or of another type is dead-lettered with the
reason; the stream flows on.

>>> KeyBy('room').key_of({'room': 'kitchen', 't': 21.5})
'kitchen'
>>> KeyBy(lambda v: (v['floor'], v['room'])).key_of({'floor': 1, 'room': 'hall'})
(1, 'hall')
>>> KeyBy('room').key_of({'room': {'id': 1}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
minibatch_rx.windows.clocks.BadRecordError: key {'id': 1} is a dict; keys must be str, int, ...
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minibatch_rx.message import Message
from minibatch_rx.naming import function_name, label
from minibatch_rx.windows.clocks import BadRecordError, field_reader

Key = Any
"""A window key: ``str``, ``int``, ``float``, ``bool``, ``None`` or a tuple of them."""

NO_KEY = ("minibatch_rx.no-key",)
"""What :meth:`KeyBy.rejects_here` asks a partition filter about a record whose key
cannot be read (a key no record can have: a tuple holding this text)."""

# The plain value of a subclass' instance, whatever its own __str__ or __int__ says.
_PLAIN: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (str, str.__str__), (int, int.__int__), (float, float.__float__))


def normalise_key(key: Any) -> Key:
    """``key`` if it is a valid key (a list becomes a tuple), else :class:`BadRecordError`."""
    kind = type(key)
    if kind is str or kind is int or key is None or kind is bool:
        return key
    if kind is float:
        if math.isfinite(key):
            return key
        raise BadRecordError(f"key {key!r} is not a finite number")
    if isinstance(key, (tuple, list)):
        return tuple(normalise_key(part) for part in key)
    for kind_of, plain in _PLAIN:  # a subclass (an IntEnum, a str Enum, numpy.float64): its plain value
        if isinstance(key, kind_of):
            return normalise_key(plain(key))
    raise BadRecordError(f"key {key!r} is a {kind.__name__}; keys must be str, int, float, bool, "
                         "None or a tuple of them")


def key_text(key: Key) -> str:
    """A key as text for idempotency keys: stable, and distinct for distinct keys.

    >>> key_text('a'), key_text(1), key_text('1'), key_text((1, 'a'))
    ("'a'", '1', "'1'", "(1, 'a')")
    """
    return repr(key)


def key_to_json(key: Key) -> Any:
    """A key as a JSON value (tuples become lists)."""
    return list(map(key_to_json, key)) if isinstance(key, tuple) else key


def key_from_json(value: Any) -> Key:
    """The key :func:`key_to_json` wrote."""
    return tuple(map(key_from_json, value)) if isinstance(value, list) else value


@dataclass(frozen=True)
class KeyBy:
    """Partition records by ``source``: a field name of the value, or a
    function of it. Every window strategy then runs once per key."""

    source: str | Callable[[Any], Any]
    owns: Callable[[Key], bool] | None = field(default=None, repr=False, compare=False)
    """In a group run by key partition, true for the keys of the partitions this
    run holds (see :meth:`owning`); ``None``: every key."""
    read: Callable[[Any], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read", field_reader(self.source, "key_by"))

    @property
    def label(self) -> str:
        return label("key_by", self.source if isinstance(self.source, str) else function_name(self.source))

    def owning(self, owns: Callable[[Key], bool]) -> KeyBy:
        """The same key, for a run that windows only the keys ``owns`` accepts.

        The other keys' records still move the run's clock (an event-time
        watermark is the stream's, not the partition's), so its windows close
        exactly when a single consumer's would; they are windowed by the run
        holding their partition."""
        return KeyBy(self.source, owns)

    def rejects_here(self, value: Any) -> bool:
        """For a record that cannot be windowed (no valid key or time): whether
        this run reports it. With :attr:`owns`, only the run holding its key's
        partition does, or the one holding :data:`NO_KEY`'s for a record whose key
        cannot be read, so a group dead-letters it once, as a single consumer."""
        owns = self.owns
        if owns is None:
            return True
        try:
            key = self.key_of(value)
        except BadRecordError:
            key = NO_KEY
        return owns(key)

    def key_of(self, value: Any) -> Key:
        """The key of a record's value; :class:`BadRecordError` if it has none."""
        key = self.read(value)
        if type(key) is str:  # the common case, without the checks
            return key
        return normalise_key(key)


class KeyedProgress:
    """What a per-key core keeps besides its windows (count windows and
    :class:`~minibatch_rx.windows.keyed.KeyedCore`).

    The position is the lowest seq any key holds, so a key's windows are often
    emitted past it, and a replay after a restart feeds them again. ``done``
    keeps, per key, the last seq already emitted while it is above the
    position, in the order of its updates (nearly the order of their seqs), so
    a replayed record at or below it is skipped, not windowed anew.
    """

    def __init__(self, key_by: KeyBy) -> None:
        self.key_by = key_by
        self.done: dict[Key, int] = {}
        self.seen = 0
        self.bad: list[tuple[Message, str]] = []

    def key_of(self, message: Message) -> tuple[bool, Key]:
        """``(True, key)`` for a record to window; ``(False, None)`` for one
        without a valid key (kept for the dead-letter stream) or a replayed
        member of a window emitted before a restart."""
        if message.seq > self.seen:
            self.seen = message.seq
        try:
            key = self.key_by.key_of(message.data)
        except BadRecordError as error:
            if self.key_by.owns is None or self.key_by.owns(NO_KEY):
                self.bad.append((message, str(error)))
            return False, None
        if self.done and message.seq <= self.done.get(key, 0):
            return False, None
        owns = self.key_by.owns
        if owns is not None and not owns(key):
            return False, None  # another partition's key: its holder windows it
        return True, key

    def emitted(self, key: Key, seq: int) -> None:
        """``key``'s windows are emitted up to ``seq``."""
        done = self.done
        seq = max(seq, done.pop(key, 0))
        done[key] = seq

    def rejected(self) -> list[tuple[Message, str]]:
        """The records found without a valid key since the last call."""
        bad, self.bad = self.bad, []
        return bad

    def snapshot(self, held: int | None) -> Any:
        """The "emitted up to" seqs still above the position (``held - 1``, or
        the highest seq seen when nothing is held); those at or below it,
        oldest first, are dropped, since a replay never reaches them. Copied at
        C speed: a snapshot is taken at every emitting step, few are written."""
        acked = self.seen if held is None else held - 1
        done = self.done
        while done:
            key = next(iter(done))
            if done[key] > acked:
                break
            del done[key]
        return {"done": list(done.items())} if done else None

    def restore(self, state: Any) -> None:
        """Continue from what :meth:`snapshot` saved."""
        self.done = {key_from_json(key): int(seq) for key, seq in state.get("done", [])}
        # Seen by this run: none yet. (The previous run's highest would let a snapshot
        # taken during the replay drop "emitted up to" marks the replay has not reached,
        # and the records under them would be windowed again.)
        self.seen = 0


__all__ = ["NO_KEY", "Key", "KeyBy", "KeyedProgress", "key_from_json", "key_text", "key_to_json",
           "normalise_key"]
