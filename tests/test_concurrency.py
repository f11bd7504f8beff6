"""Many producer processes appending to one stream at once, with a live reader.

Each producer is a separate ``python -c`` process making single ``append``
calls; they start together on a signal through stdin. Meanwhile the test
process reads after its last seen seq and checks that the stream only ever
grows at its end: gap-free seqs, no late smaller seq.

Both backends run the full 4 x 2,000 appends. The SecantusDB test server is a
single Python process on a 2-core machine, so the MongoDB reader pauses 20 ms
between empty reads rather than 2 ms, leaving the server to the producers.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import make_url

from minibatch_rx import Stream

PRODUCERS = 4
PER_PRODUCER = {
    "sqlite": 2000,
    "mongodb": 1000,  # the Python MongoDB test server takes ~6 ms per single append
}
IDLE_PAUSE = {"sqlite": 0.002, "mongodb": 0.02}
DEADLINE = 280.0  # seconds; the session-wide pytest timeout is 300

PRODUCER_CODE = """
import sys
import time
from minibatch_rx import Stream

url, name, producer, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stream = Stream.get_or_create(name, url=url)
print("ready", flush=True)
if sys.stdin.readline().strip() != "go":
    sys.exit(3)
for i in range(count):
    stream.append({"producer": producer, "i": i})
    # Pacing, not waiting: a writer that re-takes SQLite's lock at once can run
    # its 2,000 appends before the next producer is even scheduled (2 cores).
    time.sleep(0.0002)  # noqa: sleep-ok
print("done", flush=True)
"""


def start_producers(url: str, name: str, count: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PRODUCER_CODE, url, name, str(p), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PRODUCERS)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"producer failed to start: {line!r} {proc.stderr}"
    return procs


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "mongodb"])
def test_concurrent_producers_get_gap_free_ordered_seqs(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    per_producer = PER_PRODUCER[kind]
    total = PRODUCERS * per_producer
    url = make_url(kind, tmp_path, request)
    name = "contended"
    reader = Stream.get_or_create(name, url=url)
    procs = start_producers(url, name, per_producer)
    pause = threading.Event()
    try:
        started = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()

        # Live reader: every batch must continue exactly where the last one ended.
        last_seen = 0
        live: list[tuple[int, int, int]] = []
        reads = batches = 0
        while last_seen < total:
            assert time.monotonic() - started < DEADLINE, f"reader stuck at seq {last_seen}"
            for proc in procs:
                assert proc.poll() in (None, 0), f"producer exited with {proc.returncode}"
            batch = list(reader.read(after=last_seen))
            reads += 1
            if not batch:
                pause.wait(IDLE_PAUSE[kind])
                continue
            batches += 1
            seqs = [m.seq for m in batch]
            assert seqs == list(range(last_seen + 1, last_seen + 1 + len(batch))), (
                f"after seq {last_seen} the reader got {seqs[:5]}..."
            )
            live.extend((m.seq, m.data["producer"], m.data["i"]) for m in batch)
            last_seen = seqs[-1]
        reader_done = time.monotonic() - started

        for proc in procs:
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.wait(max(1.0, DEADLINE - (time.monotonic() - started))) == 0, proc.stderr.read()
            assert proc.stdout.read().strip() == "done"
        elapsed = time.monotonic() - started
    finally:
        stop(procs)

    # The producers really ran at the same time: their messages interleave.
    order = [producer for _, producer, _ in live]
    switches = sum(1 for a, b in itertools.pairwise(order) if a != b)
    with capsys.disabled():
        print(
            f"\n[concurrency] {kind}: {PRODUCERS} processes x {per_producer} single appends = "
            f"{total} in {elapsed:.2f}s ({total / elapsed:.0f}/s); live reader caught up after "
            f"{reader_done:.2f}s in {reads} reads ({batches} non-empty); {switches} producer switches"
        )
    # Run one after another, four producers give exactly three switches.
    assert switches >= PRODUCERS, "the producers did not overlap; nothing concurrent was tested"
    assert batches > 1, "the reader should have seen the stream while it grew"

    # The final state: exactly 1..total, nothing more.
    stored = list(reader.read())
    assert [m.seq for m in stored] == list(range(1, total + 1))
    assert reader.count() == total
    assert reader.last_seq() == total
    assert [(m.seq, m.data["producer"], m.data["i"]) for m in stored] == live

    # Every producer's messages appear in the order it appended them, none lost or doubled.
    by_producer: dict[int, list[int]] = defaultdict(list)
    for message in stored:
        by_producer[message.data["producer"]].append(message.data["i"])
    assert sorted(by_producer) == list(range(PRODUCERS))
    for producer, values in by_producer.items():
        assert values == list(range(per_producer)), f"producer {producer} out of order or incomplete"
