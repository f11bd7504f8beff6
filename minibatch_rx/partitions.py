"""Key partitions of a consumer group: which member runs which keys.

A keyed pipeline run by a group splits its key space into a fixed number
of partitions (:data:`DEFAULT_PARTITIONS` unless the group says otherwise):
a key's partition is a stable hash of the key, the same in every process
and on every host (:func:`partition_of`). Each partition is processed by
one member at a time, under the partition's own consumer position
(``<group>#<n>``), so its windows, keyed state and partial matches are
checkpointed and resumed exactly as a single consumer's.

**Leases.** The group's partition table is one small document per stream
and group, kept by the store (``update_state``: an atomic read-modify-write
on every backend). Each member calls :func:`sync` on it every third of the
lease timeout: the call renews the member's heartbeat and the partitions
it holds, frees the partitions of members whose heartbeat expired, and
hands the member its share. The decision is written here once, as a pure
function of the table and the store's clock; a backend only makes the
read-modify-write atomic.

**Shares.** With ``n`` live members sorted by name, member ``i`` should
hold ``P // n`` partitions, one more if ``i < P % n``. A member keeps the
partitions it holds (sticky: a rebalance moves only what it must), claims
free ones up to its share, lowest first, and is told which of its own to
give up when it holds more than its share. It gives one up only after
stopping that partition's run, which commits its position and checkpoint;
the next holder resumes from them. A member that dies stops renewing: its
partitions are free once its lease expires (the rebalance time is at most
the lease timeout plus a third of it).

>>> doc, mine = sync(None, now=100.0, member='a', partitions=4, ttl=30.0)
>>> sorted(mine.held), mine.release
([0, 1, 2, 3], ())
>>> doc, theirs = sync(doc, now=101.0, member='b', partitions=4, ttl=30.0)
>>> sorted(theirs.held)  # all four are still a's: b waits for a to give two up
[]
>>> doc, mine = sync(doc, now=102.0, member='a', partitions=4, ttl=30.0)
>>> mine.release  # a's share is now two
(2, 3)
>>> doc, mine = sync(doc, now=103.0, member='a', partitions=4, ttl=30.0, releasing=(2, 3))
>>> doc, theirs = sync(doc, now=104.0, member='b', partitions=4, ttl=30.0)
>>> sorted(mine.held), sorted(theirs.held)
([0, 1], [2, 3])
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.windows.keys import Key, key_text

DEFAULT_PARTITIONS = 12
"""Partitions of a keyed group when none is given: divisible by 1, 2, 3, 4 and 6
members, so those group sizes share the work evenly."""

MAX_PARTITIONS = 1024
"""The most partitions a group may have (each is a consumer position and a run)."""


def partition_name(group: str, partition: int) -> str:
    """The consumer name a partition's position and checkpoint are kept under.

    >>> partition_name('sensors', 3)
    'sensors#3'
    """
    return f"{group}#{partition}"


def is_partition_of(consumer: str, group: str) -> bool:
    """Whether ``consumer`` is one of ``group``'s partition positions (see :func:`partition_name`).

    >>> is_partition_of('sensors#3', 'sensors'), is_partition_of('sensors#x', 'sensors')
    (True, False)
    """
    return consumer.startswith(f"{group}#") and consumer[len(group) + 1:].isdigit()


def state_name(group: str) -> str:
    """The name of the group's partition table among the stream's state documents:
    under the group's name and a ``/``, which group names cannot hold, so forgetting
    group ``g`` (which removes ``g/...``) never touches the table of a group ``g:x``.

    >>> state_name('sensors')
    'sensors/partitions'
    """
    return f"{group}/partitions"


def _canonical(key: Key) -> Key:
    """Keys equal in Python (``1``, ``1.0``, ``True``) group together in a single
    consumer's windows, so they must land in the same partition."""
    if isinstance(key, tuple):
        return tuple(_canonical(part) for part in key)
    if isinstance(key, bool):
        return int(key)
    if isinstance(key, float) and key.is_integer():
        return int(key)
    return key


def partition_of(key: Key, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``: a CRC-32 of its text, so the
    same in every process and on every host (Python's ``hash`` of a str is not).

    >>> partition_of('kitchen', 12), partition_of(1, 12) == partition_of(1.0, 12) == partition_of(True, 12)
    (8, True)
    """
    return zlib.crc32(key_text(_canonical(key)).encode("utf-8")) % partitions


def check_partitions(partitions: object) -> int:
    """``partitions`` if it is an int in ``1..MAX_PARTITIONS``, else :class:`InvalidArgumentError`."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) \
            or not 1 <= partitions <= MAX_PARTITIONS:
        raise InvalidArgumentError(
            f"partitions must be an int from 1 to {MAX_PARTITIONS}, got {partitions!r}")
    return partitions


@dataclass(frozen=True)
class Assignment:
    """What one :func:`sync` told a member."""

    held: dict[int, int]
    """The partitions the member holds after the call, each with its epoch (how
    many times it was claimed: a new holder sees a higher one)."""
    release: tuple[int, ...]
    """Partitions it holds beyond its share: stop their runs, then pass them as
    ``releasing`` to the next call."""
    members: tuple[str, ...]
    """The live members, sorted."""
    partitions: int
    """The group's partition count."""


def _members(doc: dict[str, Any], now: float) -> dict[str, float]:
    return {m: float(expires) for m, expires in doc.get("members", {}).items() if float(expires) > now}


def share(members: tuple[str, ...], member: str, partitions: int) -> int:
    """How many partitions ``member`` (one of the sorted ``members``) should hold.

    >>> [share(('a', 'b', 'c'), m, 8) for m in 'abc']
    [3, 3, 2]
    """
    n = len(members)
    index = members.index(member)
    return partitions // n + (1 if index < partitions % n else 0)


def sync(doc: dict[str, Any] | None, now: float, member: str, partitions: int | None, ttl: float,
         releasing: Collection[int] = (), leaving: bool = False) -> tuple[dict[str, Any], Assignment]:
    """One member's turn on the group's partition table ``doc`` (``None``: a new
    group) at store time ``now``: renew, free what expired, take a share.

    ``partitions`` is the count this member was configured with: ``None`` takes
    the table's (or :data:`DEFAULT_PARTITIONS` for a new group); a count other
    than the table's is refused, since keys would then map to other partitions
    than the ones whose positions hold their state. ``leaving`` gives up every
    partition and the membership at once (a clean stop). Returns the new table
    and the member's :class:`Assignment`.
    """
    if doc is None:
        doc = {"partitions": partitions or DEFAULT_PARTITIONS, "members": {}, "owners": {}}
    count = int(doc["partitions"])
    if partitions is not None and partitions != count:
        raise InvalidArgumentError(
            f"this group has {count} partitions and this member was started with partitions={partitions}: "
            "run every member with the same count (forget the group to change it)")
    members = _members(doc, now)
    if leaving:
        members.pop(member, None)
    else:
        members[member] = now + ttl
    owners: dict[str, list[Any]] = {}
    for name, (owner, expires, epoch) in doc.get("owners", {}).items():
        free = (owner is None or float(expires) <= now or owner not in members
                or (owner == member and (leaving or int(name) in releasing)))
        owners[name] = [None, 0.0, int(epoch)] if free else [owner, float(expires), int(epoch)]
    live = tuple(sorted(members))
    held: dict[int, int] = {}
    release: tuple[int, ...] = ()
    if not leaving:
        mine = sorted(int(p) for p, entry in owners.items() if entry[0] == member)
        for p in mine:
            owners[str(p)][1] = now + ttl
            held[p] = owners[str(p)][2]
        wanted = share(live, member, count)
        if len(mine) > wanted:
            release = tuple(mine[wanted:])
        else:
            for p in range(count):
                if len(held) >= wanted:
                    break
                entry = owners.get(str(p))
                if entry is None or entry[0] is None:
                    epoch = (entry[2] if entry is not None else 0) + 1
                    owners[str(p)] = [member, now + ttl, epoch]
                    held[p] = epoch
    new = {"partitions": count, "members": members, "owners": owners}
    return new, Assignment(held, release, live, count)


def holders(doc: dict[str, Any] | None, now: float) -> dict[int, str]:
    """Who holds each partition at ``now`` (unexpired leases only)."""
    if doc is None:
        return {}
    return {int(p): owner for p, (owner, expires, _epoch) in doc.get("owners", {}).items()
            if owner is not None and float(expires) > now}


__all__ = ["DEFAULT_PARTITIONS", "MAX_PARTITIONS", "Assignment", "check_partitions", "holders",
           "is_partition_of", "partition_name", "partition_of", "share", "state_name", "sync"]
