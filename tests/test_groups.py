"""Consumer groups across processes: shared windows, exactly-once per group,
per-producer order, and take-over of a dead member's leases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import make_url

from minibatch_rx import Stream, stream

WORKER = Path(__file__).parent / "workers" / "consumer.py"
PRODUCER = """
import sys
import time
from minibatch_rx import stream
url, name, producer, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = stream(name, url)
for i in range(count):
    s.append({"producer": producer, "i": i})
    # Pacing, not waiting: a burst faster than a lease round lets one member take every window.
    time.sleep(0.0002)  # noqa: sleep-ok
"""
PER_PRODUCER = {"sqlite": 2000, "mongodb": 250}


def start_member(url: str, group: str, sink: str, *extra: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), url, "groups.in", sink, "--group", group, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def wait_for_count(target: Stream, expected: int, members: list[subprocess.Popen[str]],
                   timeout: float) -> None:
    """Wait until ``target`` holds ``expected`` messages; the pause between
    checks is a bounded wait on the first member's exit."""
    deadline = time.monotonic() + timeout
    while target.count() < expected:
        assert time.monotonic() < deadline, f"{target.name}: {target.count()} of {expected} after {timeout}s"
        for member in members:
            assert member.poll() is None, f"member died: {member.stderr.read()}"  # type: ignore[union-attr]
        try:
            members[0].wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue


def stop_all(processes: Sequence[subprocess.Popen[Any]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_two_groups_of_two_get_every_message_exactly_once_in_producer_order(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(backend, tmp_path, request)
    per_producer = PER_PRODUCER[backend]
    total = 4 * per_producer
    stream("groups.in", url)
    members = [start_member(url, group, f"groups.out.{group}", "--size", "10", "--plain")
               for group in ("a", "b") for _ in range(2)]
    command = [sys.executable, "-c", PRODUCER, url, "groups.in"]
    producers = [subprocess.Popen([*command, str(p), str(per_producer)]) for p in range(4)]
    try:
        for process in producers:
            assert process.wait(240) == 0
        outputs = {g: stream(f"groups.out.{g}", url) for g in ("a", "b")}
        for out in outputs.values():
            wait_for_count(out, total, members, 240)
    finally:
        stop_all([*members, *producers])

    for group, out in outputs.items():
        rows = [m.data for m in out.read()]
        sources = [r["src"] for r in rows]
        assert len(sources) == total, f"group {group}: {len(sources)} deliveries for {total} messages"
        assert sorted(sources) == list(range(1, total + 1)), f"group {group}: lost or duplicated"
        by_member: dict[int, list[dict[str, int]]] = defaultdict(list)
        for row in rows:
            by_member[row["pid"]].append(row)
        assert len(by_member) == 2, f"group {group}: windows were not shared by both members"
        for pid, delivered in by_member.items():
            per_producer_i: dict[int, list[int]] = defaultdict(list)
            for row in delivered:
                per_producer_i[row["producer"]].append(row["i"])
            for producer, seen in per_producer_i.items():
                assert seen == sorted(seen), f"member {pid} got producer {producer} out of order"


@pytest.mark.slow
def test_a_dead_members_lease_is_taken_over(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'groups.db'}"
    source = stream("groups.in", url)
    source.extend({"producer": 0, "i": i} for i in range(2000))
    sink = stream("groups.out", url)
    # The slow member spends most of its time inside a window, so the kill
    # lands while it holds a lease.
    slow = start_member(url, "g", "groups.out", "--size", "20", "--work", "0.3", "--lease-timeout", "1")
    survivor = start_member(url, "g", "groups.out", "--size", "20", "--work", "0.01", "--lease-timeout", "1")
    try:
        wait_for_count(sink, 200, [slow, survivor], 60)
        # Both must have worked before the kill (on a loaded machine the slow one
        # may not have finished a window by the time the survivor has 200).
        deadline = time.monotonic() + 60
        while slow.pid not in {m.data["pid"] for m in sink.read()}:
            assert time.monotonic() < deadline, "the slow member never finished a window"
            assert slow.poll() is None, f"member died: {slow.stderr.read()}"  # type: ignore[union-attr]
            try:
                slow.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait(10)
        wait_for_count(sink, 2000, [survivor], 120)
    finally:
        stop_all([slow, survivor])
    assert survivor.stderr is not None
    assert "took over expired lease" in survivor.stderr.read()
    sources = [m.data["src"] for m in sink.read()]
    assert sorted(sources) == list(range(1, 2001)), "lost or duplicated across the take-over"
    assert source.position("g") == 2000
    assert {m.data["pid"] for m in sink.read()} == {slow.pid, survivor.pid}
