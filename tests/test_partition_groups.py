"""Consumer groups by key partition, in virtual time.

A keyed pipeline started with ``group=`` splits its keys into partitions that
the members lease through a table in the store (:mod:`minibatch_rx.partitions`,
:mod:`minibatch_rx.partition_group`). Everything here runs on a reactivex
``TestScheduler`` (:class:`~minibatch_rx.testing.VirtualTime`): lease renewals,
expiries and the windows' clocks all move with ``vt.advance_to``.

* every window strategy and a keyed pattern give, in a group whose members
  change mid-run, exactly what a single consumer gives on the same input;
* rebalancing: shares, a joining member, a clean stop, a dead member;
* positions: one per partition, moving over other partitions' keys;
* the pure decision function :func:`~minibatch_rx.partitions.sync`;
* bad arguments, metrics, ``max_windows`` and dead letters.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import pytest
from waiting import wait_for

from minibatch_rx import Pipeline, Stream, stream
from minibatch_rx.cep import Match, Pattern
from minibatch_rx.compat import WindowEmitter
from minibatch_rx.errors import InvalidArgumentError, InvalidStreamNameError, StoreUnavailableError
from minibatch_rx.message import Message
from minibatch_rx.partition_group import GroupMemberHandle
from minibatch_rx.partitions import (
    DEFAULT_PARTITIONS,
    Assignment,
    holders,
    partition_name,
    partition_of,
    share,
    state_name,
    sync,
)
from minibatch_rx.running import PipelineHandle
from minibatch_rx.runtime import StoreSource
from minibatch_rx.testing import VirtualTime
from minibatch_rx.window import Window
from minibatch_rx.windows.keys import key_text

IN, OUT, GROUP = "in", "out", "g"
TTL = 9.0
"""The lease timeout of every group here; members sync every third of it."""
PERIOD = TTL / 3
KEYS = [f"k{i}" for i in range(8)]
CLOSER = {"dev": "zz", "t": 10_000.0, "kind": "C", "v": -1}
"""A far-future event: its event time closes every window still open."""
Build = Callable[[Stream, Stream], Pipeline[Any, Any]]


# -- helpers ----------------------------------------------------------------------------------------

def feed(vt: VirtualTime, s: Stream, seed: int = 11, steps: int = 240) -> int:
    """Readings of KEYS every half second (each key at random, so sessions have gaps),
    then the far-future closer; returns how many messages were scheduled."""
    rng = random.Random(seed)
    n = 0
    for step in range(steps):
        at = 0.5 + step * 0.5
        for key in KEYS:
            if rng.random() < 0.4:
                n += 1
                vt.append_at(at, s, {"dev": key, "t": at, "kind": rng.choice("AB"), "v": n})
    vt.append_at(steps * 0.5 + 5, s, CLOSER)
    return n + 1


def described(w: Window[Any]) -> dict[str, Any]:
    """A window as a JSON-able value distinct from every other window."""
    return {"key": w.key, "vs": [d["v"] for d in w.data], "start": str(w.start), "end": str(w.end),
            "tag": w.tag}


def matched(m: Match[Any]) -> dict[str, Any]:
    """A match as a JSON-able value."""
    return {"key": m.key, "steps": {step: [e["v"] for e in events] for step, events in m.items()}}


def contents(vt: VirtualTime, name: str) -> list[str]:
    """Stream ``name``'s payloads as sorted JSON ([] if it was never created)."""
    if name not in vt.store.streams():
        return []
    return sorted(json.dumps(m.data, sort_keys=True) for m in vt.stream(name).read())


def side_streams(vt: VirtualTime) -> dict[str, list[str]]:
    """Everything the pipeline wrote besides its sink: late records, timeouts, dead letters."""
    return {name: contents(vt, name) for name in (f"{IN}.late", f"{IN}.timeouts", f"{IN}.dead")}


def table(vt: VirtualTime, group: str = GROUP) -> dict[str, Any] | None:
    """The group's partition table as stored (read without changing it)."""
    doc, _now = vt.store.update_state(IN, state_name(group), lambda d, now: (d, (d, now)))
    return cast("dict[str, Any] | None", doc)


def held(vt: VirtualTime, group: str = GROUP) -> dict[int, str]:
    """Who holds each partition now, according to the table."""
    return holders(table(vt, group), vt.now)


def member(handle: PipelineHandle) -> GroupMemberHandle:
    assert isinstance(handle, GroupMemberHandle), handle
    return handle


def join(vt: VirtualTime, pipeline: Pipeline[Any, Any], name: str, partitions: int = 6,
         max_windows: int | None = None) -> GroupMemberHandle:
    """Start ``pipeline`` as member ``name`` of GROUP."""
    return member(pipeline.start(group=GROUP, member=name, scheduler=vt.scheduler, lease_timeout=TTL,
                                 partitions=partitions, max_windows=max_windows))


def die(handle: GroupMemberHandle) -> None:
    """The member stops renewing and running, without leaving the group (a crash
    after its last commit): its leases stay in the table until they expire."""
    assert handle.timer is not None
    handle.timer.dispose()
    for run in list(handle.runs.values()):
        run.stop()


def assert_partitioned(handles: Iterable[GroupMemberHandle], partitions: int) -> None:
    """The live members' partitions are disjoint and cover all ``partitions``."""
    taken = [p for h in handles for p in h.partitions]
    assert sorted(taken) == list(range(partitions)), taken


# -- 1. every strategy in a group equals a single consumer ------------------------------------------

class EveryThird(WindowEmitter):
    """A custom strategy: a window of the three oldest pending messages, once there are three."""

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        return len(self.buffer) >= 3, ()

    def query(self, *args: Any) -> Iterable[Message]:
        return self.buffer[:3]


A_THEN_B = (Pattern.begin("a").where(lambda e: e["kind"] == "A")
            .followed_by("b").where(lambda e: e["kind"] == "B").within(10))


def windowed(window: Callable[[Pipeline[Any, Any]], Pipeline[Any, Any]], event: bool) -> Build:
    def build(s: Stream, out: Stream) -> Pipeline[Any, Any]:
        keyed = s.key_by("dev")
        clocked = keyed.event_time("t", idle=None) if event else keyed
        return window(clocked).map(described).sink(out)

    return build


def pattern(s: Stream, out: Stream) -> Pipeline[Any, Any]:
    return s.key_by("dev").event_time("t", idle=None).match(A_THEN_B).map(matched).sink(out)


STRATEGIES: dict[str, Build] = {
    "count": windowed(lambda p: p.count_window(4), event=False),
    "tumbling": windowed(lambda p: p.fixed_time_window(10), event=False),
    "sliding": windowed(lambda p: p.sliding_window(20, 10, by="time"), event=False),
    "custom": windowed(lambda p: p.window(EveryThird(IN).operator), event=False),
    "tumbling-event": windowed(lambda p: p.fixed_time_window(10), event=True),
    "sliding-event": windowed(lambda p: p.sliding_window(20, 10, by="time"), event=True),
    "session-event": windowed(lambda p: p.session_window(2), event=True),
}
"""Strategies whose output a group reproduces exactly, whatever its membership changes."""
RELAXED = windowed(lambda p: p.relaxed_time_window(10), event=False)
SESSION = windowed(lambda p: p.session_window(2), event=False)
END = 200.0  # well after the last message (125): ingest-time windows close on the scheduler clock


def single_run(build: Build) -> tuple[list[str], dict[str, list[str]]]:
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    feed(vt, s)
    handle = build(s, out).start(consumer="solo", scheduler=vt.scheduler)
    vt.advance_to(END)
    assert handle.stop()
    assert handle.error is None
    return contents(vt, OUT), side_streams(vt)


def group_run(build: Build, members: int, partitions: int = 6) -> tuple[list[str], dict[str, list[str]]]:
    """``members`` members from the start; the first dies at 40; a new one joins at 70."""
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    feed(vt, s)
    handles = [join(vt, build(s, out), f"m{i}", partitions) for i in range(members)]
    vt.advance_to(40)
    dead = handles.pop(0)
    lost = dead.partitions
    assert lost  # the scenario moves partitions
    die(dead)
    vt.advance_to(70)
    assert_partitioned(handles, partitions)  # the dead member's leases expired and were taken
    handles.append(join(vt, build(s, out), "z-late", partitions))
    vt.advance_to(END)
    assert handles[-1].partitions, "the member that joined got no partition"
    assert_partitioned(handles, partitions)
    for h in handles:
        assert h.stop()
        assert h.error is None
    return contents(vt, OUT), side_streams(vt)


@pytest.mark.parametrize("members", [2, 3])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_a_group_with_a_death_and_a_join_gives_what_a_single_consumer_gives(strategy: str,
                                                                            members: int) -> None:
    assert_same_as_alone(STRATEGIES[strategy], members)


def assert_same_as_alone(build: Build, members: int) -> None:
    alone, alone_sides = single_run(build)
    together, sides = group_run(build, members)
    assert len(alone) > 20  # the input makes windows (or matches) of every key
    assert len(set(alone)) == len(alone)  # ... each distinct, so a duplicate shows
    assert len(set(together)) == len(together), [x for x, n in Counter(together).items() if n > 1][:3]
    assert together == alone
    assert sides == alone_sides


def windowed_values(payloads: list[str]) -> Counter[tuple[str, int]]:
    """(key, v) of every message in the windows ``payloads`` describe, with its count."""
    return Counter((w["key"], v) for w in map(json.loads, payloads) for v in w["vs"])


def every_message(vt_feed: Callable[[VirtualTime, Stream], int]) -> Counter[tuple[str, int]]:
    vt = VirtualTime()
    s = vt.stream(IN)
    vt_feed(vt, s)
    vt.advance_to(END)
    return Counter((m.data["dev"], m.data["v"]) for m in s.read())


@pytest.mark.parametrize("members", [2, 3])
def test_relaxed_windows_in_a_group_take_every_message_once(members: int) -> None:
    """A relaxed window's cut is the scheduler clock's: after a move the new holder
    cuts the windows not cut yet (as after a restart), so only the messages are compared."""
    together, sides = group_run(RELAXED, members)
    assert windowed_values(together) == every_message(feed)
    assert sides == {name: [] for name in sides}


@pytest.mark.parametrize("members", [2, 3])
def test_ingest_time_sessions_in_a_group_take_every_message_once(members: int) -> None:
    """Was a bug: after a partition moves, messages of an open ingest-time session went to
    ``in.late`` (a single consumer, restarted at the same times, has none late)."""
    together, sides = group_run(SESSION, members)
    assert sides[f"{IN}.late"] == []
    assert windowed_values(together) == every_message(feed)


def test_an_ingest_time_session_keeps_its_messages_when_a_joiner_takes_its_partition() -> None:
    """Was a bug. Member a alone from 0; b joins at 49, a hands partitions 3-5 over at 51,
    b takes them at 52. k3 (partition 3) has readings every 0.5-1.5 s from 31 to 50, so a
    single consumer (stopped at 51, restarted at 52) makes one session [35, 52); the group
    cuts [35, 45.5) and [49.5, 52), and k3's readings at 44.5..49 (seqs 279..307) go to
    ``in.late``, with k1's at 47.5 and 48 (k1 is in partition 3 too)."""
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    feed(vt, s)
    a = join(vt, SESSION(s, out), "a")
    vt.advance_to(49)
    b = join(vt, SESSION(s, out), "b")
    vt.advance_to(END)
    assert b.partitions == [3, 4, 5]
    a.stop()
    b.stop()
    # A single consumer stopped when a hands the partition over and restarted when b takes it.
    alone = VirtualTime()
    s2, out2 = alone.stream(IN), alone.stream(OUT)
    feed(alone, s2)
    first = SESSION(s2, out2).start(consumer="solo", scheduler=alone.scheduler)
    alone.advance_to(51)
    first.stop()
    alone.advance_to(52)
    second = SESSION(s2, out2).start(consumer="solo", scheduler=alone.scheduler)
    alone.advance_to(END)
    second.stop()
    assert side_streams(alone) == {name: [] for name in side_streams(alone)}
    assert side_streams(vt) == side_streams(alone)
    assert contents(vt, OUT) == contents(alone, OUT)


@pytest.mark.parametrize("members", [2, 3])
def test_an_event_time_pattern_in_a_group_gives_what_a_single_consumer_gives(members: int) -> None:
    """Was a bug: partial matches open when their partition moved were lost (see the minimal case below)."""
    assert_same_as_alone(pattern, members)


def test_an_event_time_pattern_keeps_a_partial_match_when_its_partition_moves() -> None:
    """Was a bug. Two members start at 0: m0 takes all six partitions, hands 3-5 to m1 at 3.
    k7 (partition 5) starts a match with A at t = 2 (alongside k5's A at the same event
    time) and completes it with B at 4.5, after the move: a single consumer finds
    {a: [1], b: [3]}; the group finds nothing."""
    rows = [(2.0, "k5", "A"), (2.0, "k7", "A"), (3.0, "k6", "A"), (4.5, "k7", "B")]
    assert partition_of("k7", 6) == partition_of("k5", 6) == 5

    def run(members: int) -> list[str]:
        vt = VirtualTime()
        s, out = vt.stream(IN), vt.stream(OUT)
        for v, (t, key, kind) in enumerate(rows):
            vt.append_at(t, s, {"dev": key, "t": t, "kind": kind, "v": v})
        vt.append_at(30, s, CLOSER)
        handles: list[PipelineHandle] = [join(vt, pattern(s, out), f"m{i}") for i in range(members)] \
            if members else [pattern(s, out).start(consumer="solo", scheduler=vt.scheduler)]
        vt.advance_to(60)
        for h in handles:
            h.stop()
        return contents(vt, OUT)

    alone = run(0)
    assert [json.loads(x) for x in alone] == [{"key": "k7", "steps": {"a": [1], "b": [3]}}]
    assert run(1) == alone  # one member: no partition moves
    assert run(2) == alone


# -- 2. rebalancing ---------------------------------------------------------------------------------

def idle_pipeline(vt: VirtualTime) -> Pipeline[Any, Any]:
    return vt.stream(IN).key_by("dev").count_window(2).map(described).sink(OUT)


@pytest.mark.parametrize(("members", "partitions"), [(2, 6), (3, 7), (4, 6), (5, 12)])
def test_members_started_together_settle_on_their_shares(members: int, partitions: int) -> None:
    vt = VirtualTime()
    handles = [join(vt, idle_pipeline(vt), f"m{i}", partitions) for i in range(members)]
    vt.advance_to(2 * PERIOD + 0.01)  # the first grabbed everything; it gives up the rest at its next sync
    sizes = [len(h.partitions) for h in handles]  # members sorted by name: the first ones get the remainder
    assert sizes == [partitions // members + (1 if i < partitions % members else 0) for i in range(members)]
    assert_partitioned(handles, partitions)
    assert held(vt) == {p: h.member for h in handles for p in h.partitions}
    for h in handles:
        h.stop()


def test_a_joining_member_gets_its_share_within_two_sync_periods() -> None:
    vt = VirtualTime()
    a, b = join(vt, idle_pipeline(vt), "a"), join(vt, idle_pipeline(vt), "b")
    vt.advance_to(30.5)
    before = {a.member: set(a.partitions), b.member: set(b.partitions)}
    assert [len(x) for x in before.values()] == [3, 3]
    c = join(vt, idle_pipeline(vt), "c")
    assert c.partitions == []  # nothing is free yet: a and b hold their leases
    vt.advance_to(30.5 + 2 * PERIOD + 0.01)
    assert [len(h.partitions) for h in (a, b, c)] == [2, 2, 2]
    assert_partitioned([a, b, c], 6)
    # Sticky: a and b kept two of their own each, only c's share moved.
    assert set(a.partitions) <= before["a"] and set(b.partitions) <= before["b"]
    assert (a.rebalances, b.rebalances, c.rebalances) == (3, 2, 1)  # a: alone, then a+b, then a+b+c
    for h in (a, b, c):
        h.stop()


def test_a_clean_stop_frees_its_partitions_at_once() -> None:
    vt = VirtualTime()
    a, b = join(vt, idle_pipeline(vt), "a"), join(vt, idle_pipeline(vt), "b")
    vt.advance_to(20.5)
    mine = b.partitions
    assert len(mine) == 3
    assert b.stop()
    assert b.partitions == []
    doc = table(vt)
    assert doc is not None and "b" not in doc["members"]
    assert set(held(vt).values()) == {"a"}  # b's leases are gone from the table, not waiting to expire
    assert all(p not in held(vt) for p in mine)
    vt.advance_to(20.5 + PERIOD + 0.01)  # a takes them at its next sync
    assert a.partitions == list(range(6))
    assert a.rebalances == 3  # alone, shared with b, alone again


def test_a_dead_members_partitions_move_only_after_its_lease_expires() -> None:
    vt = VirtualTime()
    a, b = join(vt, idle_pipeline(vt), "a"), join(vt, idle_pipeline(vt), "b")
    vt.advance_to(31)
    theirs = a.partitions
    doc = table(vt)
    assert doc is not None
    expires = float(doc["members"]["a"])  # its last renewal + TTL
    assert 31 < expires <= 31 + TTL
    die(a)
    vt.advance_to(expires - 0.01)
    assert b.partitions == sorted(set(range(6)) - set(theirs))  # not before the lease runs out
    assert {p: held(vt)[p] for p in theirs} == {p: "a" for p in theirs}
    vt.advance_to(expires + PERIOD + 0.01)
    assert b.partitions == list(range(6))
    assert set(held(vt).values()) == {"b"}
    b.stop()


def test_an_unkeyed_time_window_in_a_group_runs_as_one_partition_on_a_hot_standby() -> None:
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    feed(vt, s)
    a = join_one(vt, s.fixed_time_window(10).map(described).sink(out), "a")
    b = join_one(vt, s.fixed_time_window(10).map(described).sink(out), "b")
    vt.advance_to(50)
    assert (a.partitions, b.partitions) == ([0], [])
    die(a)
    vt.advance_to(50 + TTL + PERIOD + 0.01)
    assert b.partitions == [0]
    vt.advance_to(END)
    b.stop()
    assert s.positions().keys() == {partition_name(GROUP, 0)}
    grouped = contents(vt, OUT)
    vt2 = VirtualTime()
    s2, out2 = vt2.stream(IN), vt2.stream(OUT)
    feed(vt2, s2)
    solo = s2.fixed_time_window(10).map(described).sink(out2).start(consumer="solo", scheduler=vt2.scheduler)
    vt2.advance_to(END)
    solo.stop()
    assert grouped == contents(vt2, OUT)
    assert len(grouped) > 10


def join_one(vt: VirtualTime, pipeline: Pipeline[Any, Any], name: str) -> GroupMemberHandle:
    return member(pipeline.start(group=GROUP, member=name, scheduler=vt.scheduler, lease_timeout=TTL))


# -- 3. positions -----------------------------------------------------------------------------------

def test_each_partition_has_its_own_position_and_the_lowest_one_bounds_trimming() -> None:
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    for i in range(1000):  # one key only: the other partitions hold no key at all
        vt.append_at(1 + i * 0.1, s, {"dev": "a", "t": 1 + i * 0.1, "v": i})
    vt.append_at(150, s, CLOSER)
    owner = partition_of("a", 6)
    h = join(vt, s.key_by("dev").event_time("t", idle=None).fixed_time_window(1000)
             .map(described).sink(out), "m")
    vt.advance_to(120)
    positions = s.positions()
    assert positions.keys() == {partition_name(GROUP, p) for p in range(6)}
    assert positions[partition_name(GROUP, owner)] == 0  # its window [0, 1000) is open
    for p in set(range(6)) - {owner}:
        assert positions[partition_name(GROUP, p)] >= 1000 - 256, (p, positions)
    assert s.trim_acknowledged() == 0  # the lowest partition holds everything back
    assert s.count() == 1000
    vt.advance_to(160)  # the closer's event time closes the window in the owner's partition
    assert [json.loads(x)["key"] for x in contents(vt, OUT)] == ["a"]
    positions = s.positions()
    assert positions[partition_name(GROUP, owner)] >= 1000
    lowest = min(positions.values())
    assert lowest >= 1000 - 256
    assert s.trim_acknowledged() == lowest  # seqs 1..lowest go
    assert s.count() == 1001 - lowest
    h.stop()


# -- 4. the decision function -----------------------------------------------------------------------

def settle(doc: dict[str, Any] | None, names: Iterable[str], now: float, partitions: int | None,
           ttl: float = 30.0) -> tuple[dict[str, Any], dict[str, set[int]]]:
    """Every member syncs, round after round (giving up what it is told), until nothing changes."""
    names = list(names)
    pending: dict[str, tuple[int, ...]] = {n: () for n in names}
    holding: dict[str, set[int]] = {}
    assert doc is not None or names
    for _ in range(10):
        before = {n: set(h) for n, h in holding.items()}
        for name in names:
            doc, got = sync(doc, now, name, partitions, ttl, releasing=pending[name])
            pending[name] = got.release
            holding[name] = set(got.held) - set(got.release)
        if holding == before and not any(pending.values()):
            assert doc is not None
            return doc, holding
    raise AssertionError(f"no stable assignment after 10 rounds: {holding}")


@pytest.mark.parametrize("partitions", [1, 5, 12, 13])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_sync_gives_each_member_its_share(partitions: int, n: int) -> None:
    names = [f"m{i}" for i in range(n)]
    doc, holding = settle(None, reversed(names), 100.0, partitions)
    expected = [partitions // n + (1 if i < partitions % n else 0) for i in range(n)]
    assert [len(holding[name]) for name in names] == expected
    taken = [p for name in names for p in holding[name]]
    assert sorted(taken) == list(range(partitions))  # disjoint and covering
    assert holders(doc, 100.0) == {p: name for name in names for p in holding[name]}
    assert [share(tuple(names), name, partitions) for name in names] == expected


def test_sync_is_sticky_a_rebalance_moves_only_what_it_must() -> None:
    doc, three = settle(None, ["a", "b", "c"], 10.0, 12)
    doc, four = settle(doc, ["a", "b", "c", "d"], 11.0, 12)
    assert all(four[m] <= three[m] for m in "abc")  # each kept what it keeps, lost only its surplus
    assert len(four["d"]) == 3 and sum(len(three[m] - four[m]) for m in "abc") == 3
    doc, _ = sync(doc, 12.0, "b", 12, 30.0, leaving=True)
    doc, three_again = settle(doc, ["a", "c", "d"], 13.0, 12)
    assert all(three_again[m] >= four[m] for m in "acd")  # nobody gave up anything
    assert set().union(*(three_again[m] - four[m] for m in "acd")) == four["b"]


def test_sync_frees_an_expired_lease_and_only_then() -> None:
    doc, first = sync(None, 0.0, "a", 4, 10.0)
    assert sorted(first.held) == [0, 1, 2, 3] and first.members == ("a",)
    doc, waiting = sync(doc, 9.9, "b", 4, 10.0)
    assert waiting.held == {} and waiting.members == ("a", "b")
    doc, taken = sync(doc, 10.0, "b", 4, 10.0)  # a's lease (0 + 10) ran out at 10
    assert sorted(taken.held) == [0, 1, 2, 3] and taken.members == ("b",)
    assert all(epoch == 2 for epoch in taken.held.values())  # claimed a second time
    assert holders(doc, 10.0) == dict.fromkeys(range(4), "b")
    doc, back = sync(doc, 11.0, "a", 4, 10.0)  # a comes back: a new member, nothing free
    assert back.held == {} and back.members == ("a", "b")


def test_sync_release_then_releasing_hands_the_surplus_over() -> None:
    doc, _ = sync(None, 0.0, "a", 6, 30.0)
    doc, b = sync(doc, 1.0, "b", 6, 30.0)
    assert b.held == {}
    doc, a = sync(doc, 2.0, "a", 6, 30.0)
    assert a.release == (3, 4, 5) and sorted(a.held) == list(range(6))  # still its own until released
    assert holders(doc, 2.0) == dict.fromkeys(range(6), "a")
    doc, a = sync(doc, 3.0, "a", 6, 30.0, releasing=a.release)
    assert sorted(a.held) == [0, 1, 2] and a.release == ()
    assert holders(doc, 3.0) == dict.fromkeys(range(3), "a")
    doc, b = sync(doc, 4.0, "b", 6, 30.0)
    assert sorted(b.held) == [3, 4, 5]


def test_sync_leaving_gives_up_everything_at_once() -> None:
    doc, _ = sync(None, 0.0, "a", 3, 30.0)
    doc, gone = sync(doc, 1.0, "a", 3, 30.0, leaving=True)
    assert gone.held == {} and gone.members == ()
    assert doc["members"] == {} and holders(doc, 1.0) == {}
    doc, b = sync(doc, 1.5, "b", 3, 30.0)
    assert sorted(b.held) == [0, 1, 2]


def test_sync_refuses_another_partition_count_and_defaults_to_the_tables() -> None:
    doc, _ = sync(None, 0.0, "a", 4, 30.0)
    with pytest.raises(InvalidArgumentError, match=r"this group has 4 partitions.*partitions=5"):
        sync(doc, 1.0, "b", 5, 30.0)
    doc, b = sync(doc, 1.0, "b", None, 30.0)  # no count given: the table's
    assert b.partitions == 4
    fresh, c = sync(None, 0.0, "c", None, 30.0)
    assert c.partitions == DEFAULT_PARTITIONS == fresh["partitions"] == 12


def test_partition_of_is_a_stable_crc32_of_the_keys_text() -> None:
    fixed = {("kitchen", 12): 8, ("k0", 12): 2, ("a", 6): 2, (7, 12): 6, ((1, "x"), 12): 3,
             (None, 12): 9, ("kitchen", 1024): 304}
    assert {args: partition_of(*args) for args in fixed} == fixed
    for key in ("kitchen", "k0", 7, (1, "x"), None, 2.5):
        assert partition_of(key, 97) == zlib.crc32(key_text(key).encode("utf-8")) % 97
    assert {partition_of(k, 1) for k in ("a", 1, None)} == {0}


@pytest.mark.parametrize("partitions", [2, 7, 12, 1024])
def test_keys_equal_in_python_share_a_partition(partitions: int) -> None:
    assert len({partition_of(k, partitions) for k in (1, 1.0, True)}) == 1
    assert len({partition_of(k, partitions) for k in (0, 0.0, False)}) == 1
    assert len({partition_of(k, partitions) for k in ((1, "x"), (1.0, "x"), (True, "x"))}) == 1


# -- 5. bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, True, 2000, "3", 2.0])
def test_a_bad_partition_count_is_refused_before_anything_is_stored(bad: object) -> None:
    vt = VirtualTime()
    s = vt.stream(IN)
    pipeline = s.key_by("dev").count_window(2)
    with pytest.raises(InvalidArgumentError, match=r"partitions must be an int from 1 to 1024, got " +
                       re.escape(repr(bad))):
        pipeline.start(group=GROUP, member="a", partitions=bad, scheduler=vt.scheduler)  # type: ignore[arg-type]
    assert table(vt) is None
    assert held(vt) == {} and s.positions() == {}


class Committer:
    """An acknowledger (commit(seq, checkpoint)) that keeps nothing."""

    def commit(self, seq: int, checkpoint: Any = None) -> None:
        """Forget the position."""


BadStart = tuple[Callable[[], object], type[Exception], str]


def bad_starts(vt: VirtualTime) -> dict[str, BadStart]:
    """Each wrong group start: what raises it, and the error (type, text) it must raise."""
    s = vt.stream(IN)
    sched = vt.scheduler

    def keyed() -> Pipeline[Any, Any]:
        return s.key_by("dev").count_window(2)

    bad_arg, bad_name = InvalidArgumentError, InvalidStreamNameError
    return {
        "unkeyed-time-window-2-partitions": (
            lambda: s.fixed_time_window(5).start(group=GROUP, partitions=2, scheduler=sched),
            bad_arg, "runs as one partition"),
        "unkeyed-count-window-2-partitions": (
            lambda: s.count_window(5).start(group=GROUP, partitions=2, scheduler=sched),
            bad_arg, "runs as one partition"),
        "member-with-space": (lambda: keyed().start(group=GROUP, member="a b", scheduler=sched),
                              bad_name, "'a b' is not allowed"),
        "member-empty": (lambda: keyed().start(group=GROUP, member="", scheduler=sched),
                         bad_name, "must not be empty"),
        "member-not-str": (lambda: keyed().start(group=GROUP, member=3, scheduler=sched),  # type: ignore[arg-type]
                           bad_name, "must be a str, got int"),
        "group-bad-name": (lambda: keyed().start(group="-g", scheduler=sched),
                           bad_name, "'-g' is not allowed"),
        "source": (lambda: keyed().start(group=GROUP, source=StoreSource(s), scheduler=sched),
                   bad_arg, "source= and acknowledger= take a pipeline run by a single consumer"),
        "acknowledger": (lambda: keyed().start(group=GROUP, acknowledger=Committer(), scheduler=sched),
                         bad_arg, "source= and acknowledger= take a pipeline run by a single consumer"),
        "chained": (lambda: s.key_by("dev").count_window(2).map(len).fixed_time_window(5).start(
            group=GROUP, scheduler=sched), bad_arg, "one window or pattern"),
        "max-windows-0": (lambda: keyed().start(group=GROUP, max_windows=0, scheduler=sched),
                          bad_arg, "max_windows must be an int > 0"),
    }


BAD_STARTS = ["unkeyed-time-window-2-partitions", "unkeyed-count-window-2-partitions", "member-with-space",
              "member-empty", "member-not-str", "group-bad-name", "source", "acknowledger", "chained",
              "max-windows-0"]


@pytest.mark.parametrize("case", BAD_STARTS)
def test_a_bad_group_start_is_refused_before_anything_is_stored(case: str) -> None:
    vt = VirtualTime()
    cases = bad_starts(vt)
    assert sorted(cases) == sorted(BAD_STARTS)
    start, error, message = cases[case]
    with pytest.raises(error, match=re.escape(message)):
        start()
    assert table(vt) is None and table(vt, "-g") is None
    assert vt.stream(IN).positions() == {}


# -- 6. metrics -------------------------------------------------------------------------------------

def test_a_members_metrics_sum_its_partitions() -> None:
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    total = feed(vt, s)
    build = STRATEGIES["tumbling-event"]
    a, b = join(vt, build(s, out), "a"), join(vt, build(s, out), "b")
    vt.advance_to(2 * PERIOD + 0.01)  # settled before the first window closes (at t = 10)
    assert len(a.partitions) == len(b.partitions) == 3
    early = len(list(s.read()))  # what a's three released runs read before handing them over
    vt.advance_to(END)
    windows = [json.loads(x) for x in contents(vt, OUT)]
    for h in (a, b):
        mine = [w for w in windows if partition_of(w["key"], 6) in h.partitions]
        assert h.windows == len(mine) > 0  # windows of all its partitions, no checkpoint-only tick
        m = h.metrics()
        assert m.windows_out == h.windows
        assert m.stages["map"].count == len(mine)
        assert m.consumer == GROUP
    # Each partition's run reads every message after its position: b's three runs from
    # where a left them (at most `early` in), a's own three from the start, plus a's
    # three released runs until the handover.
    assert 3 * (total - early) <= b.metrics().messages_in <= 3 * total
    assert 3 * total < a.metrics().messages_in <= 3 * total + 3 * early
    assert a.windows + b.windows == len(windows)
    a.stop()
    b.stop()


def test_a_members_position_and_lag_follow_its_partitions_committed_positions() -> None:
    """Was a bug: a partition whose position moves only through checkpoint-only acks (it
    holds no key here: partition 1 of 6 has none of k0..k7, zz) keeps ``position`` 0 in
    its run's handle, so the member reports position 0 and a lag of the whole stream
    although every partition's committed position is at the head (771)."""
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    total = feed(vt, s)
    assert 1 not in {partition_of(k, 6) for k in [*KEYS, "zz"]}
    h = join(vt, STRATEGIES["tumbling-event"](s, out), "a")
    vt.advance_to(END)
    committed = s.positions()
    assert min(committed.values()) >= total - 1  # every partition is (nearly) at the head
    m = h.metrics()
    assert m.position == min(committed.values())
    assert m.lag is not None and m.lag <= 1
    h.stop()


def test_max_windows_stops_the_member_and_it_leaves_the_group() -> None:
    """Was a bug: join() never returned. Every acknowledged window past max_windows starts a
    thread calling stop(); the second one waits for the first (``_done.wait``) while
    holding ``self._lock``, which the first needs in ``_finish()``: a deadlock."""
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    feed(vt, s)
    h = join(vt, STRATEGIES["tumbling"](s, out), "a", max_windows=5)
    vt.advance_to(60)
    wait_for(lambda: not h.running, "the member to stop after max_windows")
    assert h.join(2), "join() did not return: the member's stop() is stuck"
    assert h.windows >= 5 and h.error is None
    assert h.partitions == [] and held(vt) == {}
    doc = table(vt)
    assert doc is not None and doc["members"] == {}


# -- 7. dead letters --------------------------------------------------------------------------------

def failing(w: Window[Any]) -> dict[str, Any]:
    if w.key == "k3" and w.data[0]["v"] % 2 == 0:
        raise ValueError(f"no even windows of {w.key}")
    return described(w)


def dead_lettering(s: Stream, out: Stream) -> Pipeline[Any, Any]:
    return (s.key_by("dev").event_time("t", idle=None).fixed_time_window(10)
            .map(failing).with_retries(0).sink(out))


def test_a_failing_function_in_one_partition_is_dead_lettered_and_the_others_go_on() -> None:
    alone, alone_sides = single_run(dead_lettering)
    together, sides = group_run(dead_lettering, 2)
    assert alone_sides[f"{IN}.dead"]  # the function did fail
    assert sides == alone_sides  # each failed window once, as a single consumer sends it
    assert together == alone  # every other window came out
    assert {json.loads(x)["key"] for x in together} >= set(KEYS)


def test_a_record_without_a_key_is_dead_lettered_once_in_a_group_as_by_a_single_consumer() -> None:
    """Known bug (see the report): every partition's run rejects the record, so
    the dead-letter stream gets one copy per partition."""

    def build(s: Stream, out: Stream) -> Pipeline[Any, Any]:
        return s.key_by("dev").event_time("t", idle=None).fixed_time_window(5).map(described).sink(out)

    def run(group: bool) -> tuple[list[str], list[str], int]:
        vt = VirtualTime()
        s, out = vt.stream(IN), vt.stream(OUT)
        for i in range(20):
            vt.append_at(1 + i, s, {"dev": KEYS[i % 3], "t": 1 + i, "v": i})
        vt.append_at(5.5, s, {"t": 5.5, "v": 100})  # no key
        vt.append_at(6.5, s, {"dev": "k1", "t": "not a time", "v": 101})
        vt.append_at(30, s, CLOSER)
        handle = join(vt, build(s, out), "a", 4) if group else build(s, out).start(
            consumer="solo", scheduler=vt.scheduler)
        vt.advance_to(50)
        handle.stop()
        return contents(vt, OUT), contents(vt, f"{IN}.dead"), handle.dead_letters

    alone, alone_dead, alone_count = run(False)
    together, dead, count = run(True)
    assert together == alone and len(alone_dead) == alone_count == 2
    assert (dead, count) == (alone_dead, alone_count)


def test_assignment_is_what_the_table_says() -> None:
    """(The Assignment a member gets and the stored table agree.)"""
    doc, got = sync(None, 5.0, "a", 3, 30.0)
    assert isinstance(got, Assignment)
    assert {p: "a" for p in got.held} == holders(doc, 5.0)
    assert holders(doc, 35.0) == {}  # expired at 5 + 30


# -- 8. a member paused past its lease commits nothing ----------------------------------------------

def test_a_member_that_cannot_renew_stops_committing_once_its_lease_may_have_run_out() -> None:
    """Member a cannot reach the partition table (its renewals fail) but its runs go
    on reading: once lease_timeout has passed since its last renewal began, its runs
    commit nothing more and stop, and b takes the partitions over from a's last
    commits. The output equals a single consumer's, each window once."""
    build = STRATEGIES["tumbling-event"]
    vt = VirtualTime()
    s, out = vt.stream(IN), vt.stream(OUT)
    feed(vt, s)
    a = join(vt, build(s, out), "a")
    vt.advance_to(20)
    assert sorted(a.partitions) == list(range(6))

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreUnavailableError("partition table unreachable (test)")

    a._update = unreachable  # type: ignore[method-assign]
    last_renewal = 18.0  # renewals every TTL / 3 = 3 s: the last good one was at 18
    at_failure = s.positions()
    vt.advance_to(last_renewal + TTL - 0.5)
    assert all(run.running for run in a.runs.values())  # still within its lease: it works on
    assert sum(s.positions().values()) > sum(at_failure.values())  # and commits
    vt.advance_to(last_renewal + TTL + 2)
    assert not any(run.running for run in a.runs.values())  # the fence stopped every run
    frozen = s.positions()
    vt.advance_to(last_renewal + TTL + 2.9)
    assert s.positions() == frozen  # nothing committed after it
    b = join(vt, build(s, out), "b")
    vt.advance_to(END)
    assert sorted(b.partitions) == list(range(6))
    b.stop()
    a.stop()
    alone, _ = single_run(build)
    assert contents(vt, OUT) == alone


# -- 9. review findings --------------------------------------------------------------------------

def test_trim_processed_never_deletes_what_a_partition_not_started_yet_needs() -> None:
    """Every partition's position is registered before the first run starts, so a
    run trimming acknowledged messages counts the partitions not yet running (a
    memory-store run works through its backlog inside start(), before the next
    partition's run existed: messages of later partitions were deleted unread)."""
    s = stream("trim.group", "memory://trim-group")
    s.extend({"dev": f"k{i % 60}", "v": i} for i in range(3000))
    seen: list[int] = []
    lock = threading.Lock()

    def record(value: int) -> None:
        with lock:
            seen.append(value)

    pipeline = s.key_by("dev").count_window(1).map(lambda w: w.data[0]["v"]).sink(record)
    handle = member(pipeline.trim_processed().start(group=GROUP, member="a", partitions=12, lease_timeout=30))
    try:
        def done_or_lost() -> bool:
            with lock:
                windowed = set(seen)
            return len(windowed) >= 3000 or len(windowed | {m.data["v"] for m in s.read()}) < 3000

        wait_for(done_or_lost, "every message windowed, or one deleted unread", 60)
    finally:
        handle.stop()
    assert sorted(seen) == list(range(3000))  # none deleted before its partition windowed it
    assert s.count() < 3000  # trimmed as the partitions acknowledged


def test_forgetting_a_group_leaves_the_table_of_a_group_whose_name_extends_it() -> None:
    vt = VirtualTime()
    s = vt.stream(IN)
    other = member(idle_pipeline(vt).start(group="g:x", member="b", scheduler=vt.scheduler,
                                           lease_timeout=TTL, partitions=6))
    s.commit("g", 3)
    assert s.forget("g")
    assert table(vt, "g:x") is not None
    assert sorted(held(vt, "g:x")) == list(range(6))
    other.stop()


def test_max_windows_stops_a_member_between_steps_so_a_restart_delivers_nothing_twice() -> None:
    """Eight keys' windows close in one step; with max_windows=2 the member stops
    after the step (as a single consumer does), so the next run goes on after it."""
    vt = VirtualTime()
    s = vt.stream(IN)
    for i in range(40):
        vt.append_at(1 + i * 0.1, s, {"dev": f"k{i % 8}", "t": 1 + i * 0.1, "v": i})
    vt.append_at(20, s, {"dev": "k0", "t": 20.0, "v": 99})
    got: list[dict[str, Any]] = []

    def pipeline() -> Pipeline[Any, Any]:
        windows = s.key_by("dev").event_time("t", idle=None).fixed_time_window(10)
        return windows.map(described).sink(got.append)

    first = member(pipeline().start(group=GROUP, member="a", scheduler=vt.scheduler, lease_timeout=TTL,
                                    partitions=1, max_windows=2))
    vt.advance_to(30)
    assert first.join(10)
    assert len(got) == 8  # the whole step
    second = member(pipeline().start(group=GROUP, member="b", scheduler=vt.scheduler, lease_timeout=TTL,
                                     partitions=1))
    vt.advance_to(60)
    second.stop()
    assert len(got) == 8 and len({w["key"] for w in got}) == 8  # none again


@pytest.mark.parametrize("lease", [0.0005, 0.5])
def test_a_lease_too_short_to_renew_is_refused(lease: float) -> None:
    vt = VirtualTime()
    with pytest.raises(InvalidArgumentError, match="lease_timeout must be at least 1 s"):
        idle_pipeline(vt).start(group=GROUP, scheduler=vt.scheduler, lease_timeout=lease)
    assert table(vt) is None


def test_a_members_stop_keeps_to_its_timeout_however_many_partitions_are_stuck(tmp_path: Path) -> None:
    """Every run is asked to stop at once, and the timeout is shared, not given to
    each run in turn."""
    release = threading.Event()
    s = stream("stuck.in", f"sqlite://{tmp_path}/stuck.db")
    s.extend({"dev": f"k{i}", "v": i} for i in range(8))

    def stuck(_value: Any) -> None:
        release.wait(30)

    handle = member(s.key_by("dev").count_window(1).sink(stuck).start(group=GROUP, partitions=4,
                                                                      lease_timeout=30))
    try:
        began = time.monotonic()
        assert not handle.stop(timeout=1.0)  # not clean: the functions are still running
        assert time.monotonic() - began < 2.5
    finally:
        release.set()


def test_a_member_past_its_lease_takes_no_clock_decision_and_emits_nothing() -> None:
    """An ingest-time relaxed window is cut by the clock, and each cut is journaled
    before its window goes out. A member whose lease may have run out refuses the cut
    (LeaseExpiredError stops the run, not the member): no window of it reaches the
    sink after that, and the new holder windows every message once."""
    vt = VirtualTime()
    s = vt.stream(IN)
    for i in range(50):  # until 25: the cuts after the lease ran out are the clock's alone
        vt.append_at(0.5 + i * 0.5, s, {"dev": KEYS[i % len(KEYS)], "v": i})
    got: list[tuple[str, float, list[int]]] = []

    def build(name: str) -> Pipeline[Any, Any]:
        return (s.key_by("dev").relaxed_time_window(10)
                .map(lambda w: (name, vt.now, [d["v"] for d in w.data])).sink(got.append))

    a = join(vt, build("a"), "a")
    vt.advance_to(19)

    def unreachable(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreUnavailableError("partition table unreachable (test)")

    a._update = unreachable  # type: ignore[method-assign]
    expiry = 18.0 + TTL  # the last good renewal began at 18
    vt.advance_to(expiry + 5)
    assert a.running and a.error is None  # the member lives on (a run that had to decide stopped)
    b = join(vt, build("b"), "b")
    vt.advance_to(END)
    b.stop()
    a.stop()
    assert max(t for name, t, _ in got if name == "a") < expiry
    assert any(name == "b" for name, _, _ in got)  # the windows a did not cut, b did
    assert Counter(v for _, _, values in got for v in values) == Counter(range(50))
