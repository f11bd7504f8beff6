"""Window crash test: SIGKILL a windowing consumer again and again while
messages arrive live; every window strategy's output must be exactly-once.

Per strategy, producer threads in this process append messages at a steady
rate with random pauses (so time windows and sessions also close by the clock,
not only by later data). A worker process (tests/workers/window_consumer.py)
runs ``stream -> <window> -> map -> sink`` and is killed with SIGKILL at
random points, at least ten times, each after the sink made progress; then a
last worker runs until every source message is in a window or in the late
stream. The outputs are then checked against the source: nothing lost, no
window emitted twice or in part, no message both late and windowed, no late
message twice, and each strategy's own rule (time bounds, consecutive seqs,
session gaps). All failed checks of a strategy are reported together.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import make_url
from workers.window_consumer import COUNT, GAP, SLIDE_COUNT

from minibatch_rx import Stream, stream

WORKER = Path(__file__).parent / "workers" / "window_consumer.py"
SOURCE, SINK = "wcrash.in", "wcrash.out"
LATE = SOURCE + ".late"
KILLS = 10
US = 1_000_000
GAP_US = round(GAP * US)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Profile:
    """How hard one backend is driven: producer threads, pause between a
    thread's appends (seconds, uniform range), CPU work per window (after its
    output is stored, before its ack) and for one window in eight (a slow
    one: the clock closes windows meanwhile, so messages waiting unread turn
    late), the poll interval of the waits, and whether a stalled writer
    holds the SQLite write lock now and then."""

    producers: int
    every: tuple[float, float]
    work: float
    slow: float
    poll: float
    stall: bool = False


PROFILES = {"sqlite": Profile(2, (0.01, 0.03), 0.08, 0.5, 0.05, stall=True),
            "mongodb": Profile(1, (0.03, 0.06), 0.08, 0.5, 0.1)}
CASES = [*((s, "sqlite") for s in
           ("fixed", "sliding_time", "sliding_count", "session", "relaxed", "count")),
         ("fixed", "mongodb"), ("session", "mongodb")]


class Producer:
    """Appends ``{"i": unique id, "p": thread}`` live from several threads.

    All threads follow one schedule of bursts and pauses (0.5-1 s of
    silence, longer than every window, gap and quiet period), so pauses are
    common to the stream. Threads racing for the store give some messages an
    ingest ``ts`` older than a message stored before them: the live source of
    late messages. On SQLite a stalled writer makes such races common: it
    holds the write lock for 20-80 ms now and then, as another process's long
    transaction would, so appends stamped meanwhile commit in any order.
    """

    def __init__(self, source: Stream, profile: Profile, seed: int, database: str | None) -> None:
        self.source, self.profile = source, profile
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        rng = random.Random(seed)
        self.bursts: list[tuple[float, float]] = []  # (start, end) offsets from the start
        t = 0.0
        while t < 600:
            length = rng.uniform(0.3, 1.2)
            self.bursts.append((t, t + length))
            t += length + rng.uniform(0.5, 1.0)
        self.threads = [threading.Thread(target=self.run, args=(n, seed + n), daemon=True)
                        for n in range(profile.producers)]
        if database is not None:
            self.threads.append(threading.Thread(target=self.stall, args=(database, seed), daemon=True))
        self.errors: list[BaseException] = []
        self.started = time.monotonic()

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def append_one(self, thread: int) -> None:
        with self.lock:
            i = next(self.ids)
        self.source.append({"i": i, "p": thread})

    def run(self, thread: int, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for begin, end in self.bursts:
                if self.stopped.wait(max(0.0, self.started + begin - time.monotonic())):
                    return
                while time.monotonic() < self.started + end:
                    self.append_one(thread)
                    if self.stopped.wait(rng.uniform(*self.profile.every)):
                        return
        except BaseException as exc:  # reported by stop(), not lost in the thread
            self.errors.append(exc)

    def stall(self, database: str, seed: int) -> None:
        rng = random.Random(-seed)
        try:
            with contextlib.closing(sqlite3.connect(database, timeout=30, isolation_level=None)) as conn:
                while not self.stopped.wait(rng.uniform(0.1, 0.4)):
                    conn.execute("BEGIN IMMEDIATE")
                    self.stopped.wait(rng.uniform(0.02, 0.08))
                    conn.execute("COMMIT")
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self, aligned: Callable[[int], bool]) -> int:
        """Stop the threads, then top the stream up until ``aligned(count)``; the count."""
        self.stopped.set()
        for thread in self.threads:
            thread.join(30)
        assert not self.errors, self.errors
        while not aligned(self.source.count()):
            self.append_one(-1)
        return self.source.count()


def start_worker(url: str, strategy: str, profile: Profile) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), url, SOURCE, SINK, "--strategy", strategy,
         "--work", str(profile.work), "--slow", str(profile.slow)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
    return process


def wait_until(predicate: Callable[[], bool], timeout: float, process: subprocess.Popen[str],
               poll: float) -> bool:
    """Poll ``predicate`` until true or ``timeout``; the pause is the worker's own exit wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        try:
            process.wait(timeout=poll)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"worker exited with {process.returncode}: {process.stderr.read()}")  # type: ignore[union-attr]
    return False


def micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass
class Outcome:
    """What the flow left behind, read back from the store."""

    ts: dict[int, int]  # source seq -> ingest ts in microseconds
    windows: list[tuple[int | None, int | None, list[int]]]  # (start_us, end_us, seqs), sink order
    emitted_us: list[int]  # ingest ts of each output message
    late: list[int]  # source seqs, in late-stream order

    @classmethod
    def read(cls, url: str) -> Outcome:
        messages = list(stream(SOURCE, url).read())
        by_i = {m.data["i"]: m.seq for m in messages}
        windows, emitted = [], []
        for out in stream(SINK, url).read():
            start, end = out.data["start"], out.data["end"]
            windows.append((None if start is None else round(start * US),
                            None if end is None else round(end * US), list(out.data["seqs"])))
            emitted.append(micros(out.ts))
        late = [by_i[m.data["i"]] for m in stream(LATE, url).read()]
        return cls({m.seq: micros(m.ts) for m in messages}, windows, emitted, late)


def accounted(url: str, total: int) -> bool:
    """Every source seq 1..total is in some window or in the late stream."""
    seen = {s for out in stream(SINK, url).read() for s in out.data["seqs"]}
    if len(seen) < total:
        late = {m.data["i"] for m in stream(LATE, url).read()}
        seen.update(s.seq for s in stream(SOURCE, url).read() if s.data["i"] in late)
    return seen >= set(range(1, total + 1))


def check(strategy: str, o: Outcome, total: int) -> tuple[list[str], int]:
    """The failed checks of ``strategy``'s outcome, and how many windows closed by the clock."""
    problems: list[str] = []

    def expect(ok: bool, text: str) -> None:
        if not ok:
            problems.append(text)

    seqs = set(range(1, total + 1))
    windowed = Counter(s for _, _, ws in o.windows for s in ws)
    late = set(o.late)
    lost = seqs - set(windowed) - late
    expect(not lost, f"lost {len(lost)} messages, e.g. seqs {sorted(lost)[:8]}")
    twice_late = [s for s, n in Counter(o.late).items() if n > 1]
    expect(not twice_late, f"{len(twice_late)} messages twice in the late stream, e.g. {twice_late[:8]}")
    if strategy in ("fixed", "session", "relaxed", "count"):
        twice = [s for s, n in windowed.items() if n > 1]
        expect(not twice, f"{len(twice)} source seqs in two outputs, e.g. {sorted(twice)[:8]}")
    if strategy in ("fixed", "session", "relaxed", "count", "sliding_count"):
        both = late & set(windowed)
        expect(not both, f"{len(both)} messages both late and windowed, e.g. {sorted(both)[:8]}")
    if strategy in ("relaxed", "count", "sliding_count"):
        expect(not late, f"{len(late)} messages late, though this strategy is never late")
    if strategy in ("fixed", "sliding_time"):
        check_time_grid(strategy, o, late, expect)
    elif strategy == "sliding_count":
        n, k = SLIDE_COUNT
        got = Counter(tuple(ws) for _, _, ws in o.windows)
        wanted = {tuple(range(a, a + n)) for a in range(1, total - n + 2, k)}
        dupes = [w for w, c in got.items() if c > 1]
        expect(not dupes, f"{len(dupes)} windows emitted twice, e.g. {dupes[:3]}")
        wrong = sorted(set(got) - wanted)
        expect(not wrong, f"{len(wrong)} outputs are not windows [1+j*{k}, +{n}), e.g. {wrong[:3]}")
        missing = sorted(wanted - set(got))
        expect(not missing, f"{len(missing)} windows missing, e.g. {missing[:3]}")
    elif strategy == "session":
        check_sessions(o, late, expect)
    elif strategy == "count":
        dupes = [w for w, c in Counter(tuple(ws) for _, _, ws in o.windows).items() if c > 1]
        expect(not dupes, f"{len(dupes)} windows emitted twice, e.g. {dupes[:3]}")
        bad = [ws for _, _, ws in o.windows
               if not 0 < len(ws) <= COUNT[0] or ws != list(range(ws[0], ws[0] + len(ws)))]
        expect(not bad, f"{len(bad)} outputs are not 1..{COUNT[0]} consecutive seqs, e.g. {bad[:3]}")
    return problems, closed_by_clock(strategy, o)


def check_time_grid(strategy: str, o: Outcome, late: set[int],
                    expect: Callable[[bool, str], None]) -> None:
    """Fixed and sliding-by-time windows: one output per start, each exactly
    its [start, end) of ingest ts, late messages aside."""
    starts = Counter(start for start, _, _ in o.windows if start is not None)
    dupes = sorted(s for s, n in starts.items() if n > 1)
    expect(not dupes, f"{len(dupes)} window starts emitted twice, e.g. {[d / US for d in dupes[:4]]}")
    partial, extra = [], []
    for start, end, ws in o.windows:
        assert start is not None and end is not None
        inside = {s for s, t in o.ts.items() if start <= t < end}
        if not (inside - late) <= set(ws):
            partial.append((start / US, len(ws), len(inside - late)))
        if not set(ws) <= inside or (strategy == "fixed" and set(ws) & late):
            extra.append((start / US, sorted(set(ws) - inside)[:5]))
    expect(not partial, f"{len(partial)} windows miss on-time messages of their [start, end) "
                        f"(start, held, expected), e.g. {partial[:3]}")
    expect(not extra, f"{len(extra)} windows hold messages outside [start, end) or late ones, "
                      f"e.g. {extra[:3]}")
    if strategy == "sliding_time":
        # Late for one window, on time in a later one: absent from a prefix of
        # the windows covering it (those already out), present in the rest.
        unordered = []
        for s in late:
            covering = sorted((start, s in ws) for start, end, ws in o.windows
                              if start is not None and end is not None and start <= o.ts[s] < end)
            flags = [held for _, held in covering]
            if flags != sorted(flags):
                unordered.append(s)
        expect(not unordered, f"{len(unordered)} late messages in an earlier window but not a later "
                              f"one, e.g. {unordered[:8]}")


def check_sessions(o: Outcome, late: set[int], expect: Callable[[bool, str], None]) -> None:
    """Sessions: no two overlap; inside one, ts steps are < gap; between two, >= gap."""
    sessions = sorted((start, end, sorted(o.ts[s] for s in ws)) for start, end, ws in o.windows
                      if start is not None and end is not None)
    overlaps = [(a[0] / US, b[0] / US) for a, b in itertools.pairwise(sessions) if b[0] < a[1]]
    expect(not overlaps, f"{len(overlaps)} pairs of sessions overlap, e.g. {overlaps[:3]}")
    wide = [start / US for start, _, ts in sessions
            if any(b - a >= GAP_US for a, b in itertools.pairwise(ts))]
    expect(not wide, f"{len(wide)} sessions hold a silence >= gap, e.g. starting {wide[:3]}")
    late_ts = [o.ts[s] for s in late]
    close = [(a[0] / US, b[0] / US) for a, b in itertools.pairwise(sessions)
             if b[2][0] - a[2][-1] < GAP_US and not any(a[2][0] <= t <= b[2][-1] for t in late_ts)]
    expect(not close, f"{len(close)} consecutive sessions less than gap apart, e.g. {close[:3]}")
    bounds = [start / US for start, end, ts in sessions
              if abs(start - ts[0]) > 2 or abs(end - ts[-1] - GAP_US) > 2]
    expect(not bounds, f"{len(bounds)} sessions whose [start, end) is not [first ts, last ts + gap), "
                       f"e.g. {bounds[:3]}")


def closed_by_clock(strategy: str, o: Outcome) -> int:
    """Windows stored before the next source message was ingested: closed by
    the clock, since no later message existed to close them (for count
    windows, only partial ones: a full one closes by its last message)."""
    total = max(o.ts, default=0)
    later = [0] * (total + 2)  # later[s]: lowest ts of seqs > s
    later[total] = later[total + 1] = 1 << 62
    for s in range(total - 1, -1, -1):
        later[s] = min(later[s + 1], o.ts[s + 1])
    return sum(1 for (_, _, ws), at in zip(o.windows, o.emitted_us, strict=True)
               if ws and max(ws) < total and at < later[max(ws)]
               and not (strategy == "count" and len(ws) == COUNT[0]))


def aligned(strategy: str) -> Callable[[int], bool]:
    """Which totals leave no trailing partial window that can never be emitted."""
    if strategy == "sliding_count":
        n, k = SLIDE_COUNT
        return lambda count: count >= n and (count - n) % k == 0
    return lambda count: count > 0


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "backend"), CASES, ids=[f"{s}-{b}" for s, b in CASES])
def test_sigkilled_window_consumer_emits_each_window_once(
    strategy: str, backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = make_url(backend, tmp_path, request)
    profile = PROFILES[backend]
    source, sink = stream(SOURCE, url), stream(SINK, url)
    rng = random.Random(f"{strategy}-{backend}")
    database = url.removeprefix("sqlite://") if profile.stall else None
    producer = Producer(source, profile, rng.randrange(1 << 30), database)
    producer.start()
    kills, progress = 0, [0]
    try:
        while kills < KILLS:
            worker = start_worker(url, strategy, profile)
            assert wait_until(lambda: sink.count() > progress[-1], 60, worker, profile.poll), "no progress"
            # Half the kills soon after an output (often before its ack is
            # committed), half later, when the worker may have lived through a pause.
            delay = rng.uniform(0.0, 0.05) if rng.random() < 0.5 else rng.uniform(0.3, 1.5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=delay)
            assert worker.returncode is None, f"worker died by itself: {worker.stderr.read()}"  # type: ignore[union-attr]
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            kills += 1
            progress.append(sink.count())
        produced_at_last_kill = source.count()
        # The last worker also starts on a live stream; the producer stops once
        # it made progress and (for strategies with a clock) a window was seen
        # to close by the clock alone.
        worker = start_worker(url, strategy, profile)
        wait_until(lambda: sink.count() > progress[-1] + 2 and source.count() > produced_at_last_kill
                   and (strategy == "sliding_count" or closed_by_clock(strategy, Outcome.read(url)) > 0),
                   60, worker, profile.poll)
    finally:
        total = producer.stop(aligned(strategy))
    try:
        finished = wait_until(lambda: accounted(url, total), 60, worker, profile.poll)
    finally:
        worker.kill()
        worker.wait(10)
    assert produced_at_last_kill < total, "the producer had stopped before the last kill"
    outcome = Outcome.read(url)
    assert sorted(outcome.ts) == list(range(1, total + 1))
    problems, by_clock = check(strategy, outcome, total)
    print(f"\n{strategy}/{backend}: {kills} SIGKILLs, {total} messages, {len(outcome.windows)} windows "
          f"({by_clock} closed by the clock), {len(outcome.late)} late; outputs after each kill "
          f"{progress[1:]}; {len(problems)} failed checks")
    for problem in problems:
        print(f"  FAIL {strategy}/{backend}: {problem}")
    assert kills >= KILLS
    assert progress[-1] < len(outcome.windows), "the flow had finished before the last kill"
    if strategy != "sliding_count":
        assert by_clock > 0, "no window closed by the clock: the producer's pauses did not show"
    assert not problems, f"{strategy}/{backend}: " + "; ".join(problems)
    assert finished, "not every source message reached a window or the late stream after the last restart"
