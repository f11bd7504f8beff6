"""Seq-range leases of count-window consumer groups: the decision, written once.

Each backend keeps its leases in its own tables and claims one inside its own
atomic read-modify-write (a transaction on SQLite, an insert on a unique index
on MongoDB, a lock in memory); what a new lease covers, and how far the
group's position moves once leases finish, is decided here for all of them.
(Key-partition leases are :mod:`minibatch_rx.partitions`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lease:
    """A range of seqs ``[start, end]`` claimed by one member of a consumer group."""

    start: int
    end: int
    taken_over: bool = False
    """True if the range was taken from a member whose lease expired."""


def advance(position: int, finished: Sequence[tuple[int, int]]) -> int:
    """The group position after ``finished`` leases (``(start, end)`` sorted by
    start): it moves over every lease that continues it without a gap."""
    for start, end in finished:
        if start != position + 1:
            break
        position = end
    return position


def next_range(claimed: int, last_seq: int, count: int, partial: bool) -> Lease | None:
    """The lease rule every backend applies inside its own atomic read-modify-write:
    a new lease covers the ``count`` seqs after ``claimed`` (the highest seq already
    leased or acknowledged by the group), up to the end of the stream; fewer only if
    ``partial``. ``None`` when there is nothing to claim. (An expired, unfinished lease
    is taken over before any new one: see :meth:`Store.lease`.)

    >>> next_range(10, 25, 10, partial=False)
    Lease(start=11, end=20, taken_over=False)
    >>> next_range(20, 25, 10, partial=False) is None, next_range(20, 25, 10, partial=True)
    (True, Lease(start=21, end=25, taken_over=False))
    >>> next_range(25, 25, 10, partial=True) is None
    True
    """
    start = claimed + 1
    end = min(start + count - 1, last_seq)
    if end < start or (end - start + 1 < count and not partial):
        return None
    return Lease(start, end)


__all__ = ["Lease", "advance", "next_range"]
