"""The partition leases of keyed groups on every backend: ``partitions.sync``
applied through each store's ``update_state`` (the decision is written once; a
backend only makes the read-modify-write atomic). Runs on memory, SQLite and
the MongoDB test server."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from minibatch_rx import partitions
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.partitions import Assignment, partition_name, state_name
from minibatch_rx.store import Store, open_store
from minibatch_rx.streams import Stream

JOIN_TIMEOUT = 120.0  # seconds: bound on the threads of these tests
TTL = 3600.0  # long enough that no lease expires during a test (expiry is tested with a negative one)


def sync(store: Store, member: str, count: int | None = 6, ttl: float = TTL, releasing: tuple[int, ...] = (),
         leaving: bool = False) -> Assignment:
    result: Assignment = store.update_state(
        "s", state_name("g"),
        lambda doc, now: partitions.sync(doc, now, member, count, ttl, releasing, leaving))
    return result


def holders(store: Store) -> dict[int, str]:
    found: dict[int, str] = store.update_state(
        "s", state_name("g"), lambda doc, now: (doc, partitions.holders(doc, now)))
    return found


def settle(store: Store, members: list[str], count: int = 6) -> dict[str, Assignment]:
    """Each member syncs until nobody has anything left to release or claim."""
    last: dict[str, Assignment] = {}
    for _ in range(4):
        for member in members:
            got = sync(store, member, count)
            if got.release:
                got = sync(store, member, count, releasing=got.release)
            last[member] = got
    return last


def test_members_syncing_through_the_store_share_every_partition_once(store_url: str) -> None:
    store = open_store(store_url)
    final = settle(store, ["a", "b", "c"])
    held = [set(final[m].held) for m in ("a", "b", "c")]
    assert [len(h) for h in held] == [2, 2, 2]
    assert set().union(*held) == set(range(6)) and sum(len(h) for h in held) == 6
    assert holders(store) == {p: m for m in ("a", "b", "c") for p in final[m].held}


def test_concurrent_members_never_hold_a_partition_twice(store_url: str) -> None:
    """Four threads, each a member syncing in a loop through its own store object:
    at every moment the table gives each partition one holder, and in the end each
    member holds its share."""
    members = ["m0", "m1", "m2", "m3"]
    errors: list[BaseException] = []
    seen_overlap: list[dict[str, Any]] = []

    def run(member: str) -> None:
        store = open_store(store_url)
        try:
            releasing: tuple[int, ...] = ()
            for _ in range(25):
                got = sync(store, member, count=12, releasing=releasing)
                releasing = got.release
                table = holders(store)
                mine = {p for p, owner in table.items() if owner == member}
                if not set(got.held) <= mine | set(releasing):
                    seen_overlap.append({"member": member, "held": got.held, "table": table})
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive()
    assert errors == []
    assert seen_overlap == []
    store = open_store(store_url)
    final = settle(store, members, count=12)
    assert sorted(len(a.held) for a in final.values()) == [3, 3, 3, 3]
    assert sorted(p for a in final.values() for p in a.held) == list(range(12))


def test_an_expired_member_loses_its_partitions_to_the_others(store_url: str) -> None:
    store = open_store(store_url)
    sync(store, "gone", ttl=-1.0)  # its lease is over as soon as it is written
    got = sync(store, "alive")
    assert sorted(got.held) == list(range(6))
    assert got.members == ("alive",)


def test_a_leaving_member_frees_its_partitions_at_once(store_url: str) -> None:
    store = open_store(store_url)
    settle(store, ["a", "b"])
    sync(store, "a", leaving=True)
    assert set(holders(store).values()) == {"b"}
    assert sorted(sync(store, "b").held) == list(range(6))


def test_the_partition_count_is_fixed_for_the_groups_life(store_url: str) -> None:
    store = open_store(store_url)
    sync(store, "a", count=6)
    with pytest.raises(InvalidArgumentError, match="this group has 6 partitions"):
        sync(store, "b", count=8)
    assert sync(store, "b", count=None).partitions == 6  # None: the table's count


def test_forgetting_the_group_forgets_its_table_and_partition_positions(store_url: str) -> None:
    store = open_store(store_url)
    stream = Stream.get_or_create("s", store=store)
    settle(store, ["a"])
    for p in range(6):
        stream.commit(partition_name("g", p), p + 1)
    stream.commit("other", 3)
    assert stream.forget("g")
    assert stream.positions() == {"other": 3}
    assert holders(store) == {}
    assert store.update_state("s", state_name("g"), lambda doc, now: (doc, doc)) is None
