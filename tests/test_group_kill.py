"""Kill and join in a consumer group by key partition: the group's output
equals a single consumer's, with no window or match twice.

Four producer processes (tests/workers/group_producer.py) append paced
events over 40 devices. Meanwhile a group of three member processes
(tests/workers/group_member.py) runs a keyed event-time pipeline into a
stream sink: per-device tumbling windows, or a per-device CEP pattern. Once
the group has output, one member is SIGKILLed while the producers are still
appending; the test waits until the other two hold all of its partitions
(once its lease expired), then adds a fourth member and waits until the
partitions are spread evenly again. After the producers finish, a sentinel
event far in the future closes every window and ends every partial match.

The ground truth is a single consumer run afterwards on the same stored
input (another consumer name, another sink): only the events move the
watermark (``idle=None``), so its output depends on the stored order alone,
even for events that arrived late because a producer fell behind. The
group's sink must hold exactly the reference's outputs, each once; the late
and timeout streams likewise. The times from the kill to the take-over and
from the new member's start to an even spread are printed (``-s``) and
recorded as test properties.

Runs on SQLite and on MongoDB (the session's test server, smaller volumes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import make_url
from workers import group_member, group_producer

from minibatch_rx import Stream, stream
from minibatch_rx.partitions import DEFAULT_PARTITIONS, holders, partition_name, state_name

WORKERS = Path(__file__).parent / "workers"
SOURCE, SINK, REFERENCE = "gkill.in", "gkill.out", "gkill.ref"
GROUP, REFERENCE_CONSUMER = "gkill", "gkill-reference"
LEASE_TIMEOUT = 3.0  # seconds: a member renews every second; a dead one's partitions move after 3 s
PRODUCERS = 4
# Per backend: events per producer, and their pace (events per second per producer):
# about 15 s of producing, which outlasts the kill, the take-over and the join.
VOLUME = {"sqlite": (2500, 160.0), "mongodb": (350, 32.0)}
SENTINEL_AFTER = 1_000_000.0  # seconds after ORIGIN: past every event, closes every window
END_TIMEOUT = 180.0  # seconds for the group and the reference to reach the sentinel


class Member:
    """A member process; a thread collects its stdout lines, stderr goes to a file."""

    def __init__(self, kind: str, url: str, name: str, logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.stderr"
        with self.log.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKERS / "group_member.py"), kind, url, SOURCE, SINK,
                 "--group", GROUP, "--member", name, "--lease-timeout", str(LEASE_TIMEOUT)],
                stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self.reader.start()

    def _read(self, out: IO[str] | None) -> None:
        assert out is not None
        for line in out:
            self.lines.append(line.strip())

    def held(self) -> list[int]:
        """The partitions it said it runs last (none before its first report)."""
        reports = [line for line in self.lines if line.startswith("holds ")]
        if not reports or reports[-1] == "holds -":
            return []
        return [int(p) for p in reports[-1].removeprefix("holds ").split(",")]

    def errors(self) -> str:
        return self.log.read_text()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float,
               alive: Iterable[Member | subprocess.Popen[str]]) -> float:
    """Poll ``predicate`` until true; the seconds it took. The pause between
    polls is a wait on a process that must stay alive; one that exits fails
    the test, as does ``timeout``."""
    processes = [(p.process, p.errors) if isinstance(p, Member) else (p, lambda: "") for p in alive]
    began = time.monotonic()
    while not predicate():
        elapsed = time.monotonic() - began
        assert elapsed < timeout, f"timed out after {timeout}s waiting for {what}"
        for process, errors in processes:
            assert process.poll() is None, \
                f"a worker exited with {process.returncode} while waiting for {what}: {errors()}"
        try:
            processes[0][0].wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
    return time.monotonic() - began


def partition_table(source: Stream) -> dict[int, str]:
    """Who holds each partition now (unexpired leases), read from the group's table."""
    result: dict[int, str] = source.store.update_state(
        SOURCE, state_name(GROUP), lambda doc, now: (doc, holders(doc, now)))
    return result


def evenly_held(table: dict[int, str], members: set[str]) -> bool:
    """Every partition held, by ``members`` only, each holding its even share."""
    counts = Counter(table.values())
    return (len(table) == DEFAULT_PARTITIONS and set(counts) == members
            and max(counts.values()) - min(counts.values()) <= 1)


def start_producers(url: str, count: int, rate: float) -> list[subprocess.Popen[str]]:
    """Start the producers and, once all are ready, let them go together."""
    producers = [subprocess.Popen(
        [sys.executable, str(WORKERS / "group_producer.py"), url, SOURCE, str(p),
         "--count", str(count), "--rate", str(rate)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in range(PRODUCERS)]
    for process in producers:
        assert process.stdout is not None and process.stdin is not None
        assert process.stdout.readline().strip() == "ready", process.communicate(timeout=10)[1]
    for process in producers:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    return producers


def reap(processes: Iterable[subprocess.Popen[str]]) -> None:
    """SIGKILL every process still running, and wait for all."""
    for process in processes:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


def identity(kind: str, out: dict[str, Any]) -> str:
    """What names one output: a window (key and start) or a match (key and its events)."""
    fields = ("key", "start") if kind == "tumbling" else ("key", "a", "b")
    return json.dumps([out[f] for f in fields])


def canonical(payloads: Iterable[dict[str, Any]]) -> list[str]:
    """Payloads as sorted JSON texts: a multiset that compares across runs."""
    return sorted(json.dumps(p, sort_keys=True) for p in payloads)


def payloads(url: str, name: str) -> list[dict[str, Any]]:
    return [m.data for m in stream(name, url).read()]


@dataclass
class GroupRun:
    """What the group phase measured."""

    victim_partitions: list[int]
    produced_at_kill: int
    takeover_s: float  # SIGKILL until the other members hold every partition
    produced_at_join: int
    join_s: float  # the new member's start until every member holds its even share
    sentinel: int
    clean_stops: dict[str, int | None]  # exit code of each surviving member after SIGTERM


def run_group(kind: str, url: str, logs: Path) -> GroupRun:
    """Produce, run the group, kill one member and add another; end with the sentinel."""
    count, rate = VOLUME["sqlite" if url.startswith("sqlite") else "mongodb"]
    source, sink = stream(SOURCE, url), stream(SINK, url)
    members: dict[str, Member] = {}
    producers: list[subprocess.Popen[str]] = []
    try:
        for name in ("m1", "m2", "m3"):
            members[name] = Member(kind, url, name, logs)
        wait_until(lambda: all(m.held() for m in members.values())
                   and evenly_held(partition_table(source), set(members)),
                   "three members holding four partitions each", 60, members.values())
        producers = start_producers(url, count, rate)
        alive: list[Member | subprocess.Popen[str]] = [*members.values(), *producers]
        wait_until(lambda: sink.count() > 0, "the group's first output", 60, alive)

        victim = members["m2"]
        victim_partitions = sorted(p for p, m in partition_table(source).items() if m == victim.name)
        assert victim_partitions == victim.held(), (victim_partitions, victim.lines)
        produced_at_kill = source.count()
        killed_at = time.monotonic()
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)
        survivors = [members["m1"], members["m3"]]
        alive = [*survivors, *producers]
        wait_until(lambda: evenly_held(partition_table(source), {"m1", "m3"}),
                   "the survivors taking over the killed member's partitions", 30, alive)
        takeover_s = time.monotonic() - killed_at

        members["m4"] = Member(kind, url, "m4", logs)
        alive = [*survivors, members["m4"], *producers]
        join_s = wait_until(
            lambda: evenly_held(partition_table(source), {"m1", "m3", "m4"})
            and all(len(members[m].held()) == DEFAULT_PARTITIONS // 3 for m in ("m1", "m3", "m4")),
            "the new member getting its share", 30, alive)
        produced_at_join = source.count()

        live = [*survivors, members["m4"]]
        wait_until(lambda: all(p.poll() is not None for p in producers), "the producers to finish",
                   END_TIMEOUT, live)
        for process in producers:
            out, err = process.communicate(timeout=10)
            assert process.returncode == 0 and out.strip() == f"done {count}", (process.returncode, out, err)
        sentinel = source.append({"p": -1, "i": 0, group_producer.DEVICE: "end",
                                  group_producer.TS: group_producer.ORIGIN + SENTINEL_AFTER,
                                  group_producer.VALUE: 0, group_producer.TYPE: "z"})
        consumers = [partition_name(GROUP, p) for p in range(DEFAULT_PARTITIONS)]
        wait_until(lambda: min(source.position(c) for c in consumers) >= done_at(kind, sentinel),
                   "every partition reaching the sentinel", END_TIMEOUT, live)

        clean_stops: dict[str, int | None] = {}
        for member in live:
            member.process.terminate()
        for member in live:
            try:
                clean_stops[member.name] = member.process.wait(30)
            except subprocess.TimeoutExpired:
                clean_stops[member.name] = None
    finally:
        reap([*(m.process for m in members.values()), *producers])
    return GroupRun(victim_partitions, produced_at_kill, takeover_s, produced_at_join, join_s,
                    sentinel, clean_stops)


def done_at(kind: str, sentinel: int) -> int:
    """The position showing that a consumer processed the sentinel. A pattern keeps
    no message held (its partial matches are in its checkpoint), so its position
    reaches the sentinel itself, and only then has the sentinel's watermark drained
    the last buffered events (a position one short may still hold matches back). A
    time window holds the window the sentinel opens, so the position stays one short."""
    return sentinel if kind == "pattern" else sentinel - 1


def run_reference(kind: str, url: str, sentinel: int) -> None:
    """The single consumer on the stored input, into its own sink."""
    source = stream(SOURCE, url)
    handle = group_member.pipeline(kind, url, SOURCE, REFERENCE).start(consumer=REFERENCE_CONSUMER)
    try:
        began, limit = time.monotonic(), END_TIMEOUT
        while source.position(REFERENCE_CONSUMER) < done_at(kind, sentinel):
            assert time.monotonic() - began < limit, "the reference consumer did not reach the sentinel"
            assert handle.error is None, handle.error
            handle.join(timeout=0.05)  # the pause: returns early only if the run ended
    finally:
        assert handle.stop(timeout=30), "the reference consumer did not stop"
    assert handle.error is None, handle.error


def compare(kind: str, url: str) -> list[str]:
    """Every way the group's streams differ from the reference's, as text."""
    problems: list[str] = []
    side_streams = [""] + ([".late"] if kind == "tumbling" else [".late", ".timeouts"])
    for suffix in side_streams:
        got, expected = payloads(url, SINK + suffix), payloads(url, REFERENCE + suffix)
        if suffix == "":
            twice = [i for i, n in Counter(identity(kind, p) for p in got).items() if n > 1]
            if twice:
                problems.append(f"{len(twice)} outputs stored more than once, e.g. {twice[:3]}")
        else:
            twice = [i for i, n in Counter(json.dumps(p, sort_keys=True) for p in got).items() if n > 1]
            if twice:
                problems.append(f"{SINK + suffix}: {len(twice)} records stored more than once, "
                                f"e.g. {twice[:3]}")
        g, e = canonical(got), canonical(expected)
        if g != e:
            missing, extra = Counter(e) - Counter(g), Counter(g) - Counter(e)
            problems.append(f"{SINK + suffix}: {len(got)} records, the reference {len(expected)}: "
                            f"{sum(missing.values())} missing, e.g. {list(missing)[:2]}; "
                            f"{sum(extra.values())} extra, e.g. {list(extra)[:2]}")
    dead = stream(f"{SOURCE}.dead", url).count()
    if dead:
        problems.append(f"{dead} records in the dead-letter stream")
    return problems


def check_reference(kind: str, url: str, produced: set[tuple[int, int]]) -> None:
    """The reference itself: every event in exactly one window or late (tumbling), or
    every match's events among the produced ones (pattern); and some output."""
    outputs = payloads(url, REFERENCE)
    assert outputs, "the reference consumer produced nothing"
    late = [(e["p"], e["i"]) for e in payloads(url, REFERENCE + ".late")]
    if kind == "tumbling":
        placed = Counter([(p, i) for out in outputs for p, i in out["ids"]] + late)
        assert set(placed) == produced and max(placed.values()) == 1, "the reference lost or doubled events"
    else:
        matched = {(p, i) for out in outputs for p, i in out["a"] + out["b"]}
        assert matched <= produced, "the reference matched events that were never produced"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tumbling", "pattern"])
@pytest.mark.parametrize("backend", ["sqlite", "mongodb"])
def test_a_group_with_a_killed_and_an_added_member_matches_a_single_consumer(
    backend: str, kind: str, tmp_path: Path, request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> None:
    assert (group_member.DEVICE, group_member.TS, group_member.VALUE, group_member.TYPE) == \
        (group_producer.DEVICE, group_producer.TS, group_producer.VALUE, group_producer.TYPE)
    url = make_url(backend, tmp_path, request)
    began = time.monotonic()
    run = run_group(kind, url, tmp_path)
    group_s = time.monotonic() - began
    run_reference(kind, url, run.sentinel)

    count, _rate = VOLUME[backend]
    events = [m for m in stream(SOURCE, url).read() if m.seq != run.sentinel]
    produced = {(m.data["p"], m.data["i"]) for m in events}
    assert len(events) == len(produced) == PRODUCERS * count, "the input is not the produced events"
    check_reference(kind, url, produced)
    problems = compare(kind, url)

    outputs, late = stream(REFERENCE, url).count(), stream(REFERENCE + ".late", url).count()
    print(f"\n{backend} {kind}: {len(events)} events, {outputs} outputs ({late} late events); "
          f"killed m2 holding partitions {run.victim_partitions} at {run.produced_at_kill} events stored; "
          f"take-over {run.takeover_s:.2f}s after the SIGKILL (lease {LEASE_TIMEOUT}s); the fourth member "
          f"got its share {run.join_s:.2f}s after its start ({run.produced_at_join} events stored then); "
          f"group phase {group_s:.1f}s, total {time.monotonic() - began:.1f}s; {len(problems)} failed checks")
    for problem in problems:
        print(f"  FAIL {problem}")
    if problems:
        for log in sorted(tmp_path.glob("*.stderr")):
            print(f"  {log.stem} stderr:\n{log.read_text()[-4000:]}")
    record_property("takeover_seconds", round(run.takeover_s, 3))
    record_property("join_seconds", round(run.join_s, 3))

    assert run.produced_at_kill < len(events), "the producers had finished before the kill"
    assert not problems, "; ".join(problems)
    assert run.clean_stops == {"m1": 0, "m3": 0, "m4": 0}, \
        f"members' exit codes after SIGTERM: {run.clean_stops}"
