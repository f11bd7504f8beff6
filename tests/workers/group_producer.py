"""A paced producer process for the group kill-and-join test (tests/test_group_kill.py).

    python tests/workers/group_producer.py URL STREAM PRODUCER --count N --rate R

Prints ``ready``, waits for ``go`` on stdin, then appends ``N`` events
:func:`event` ``(PRODUCER, i)`` to STREAM in small batches, paced at ``R``
events per second, so the producers are still appending while the test
kills and adds group members. Prints ``done N`` once all are stored.

Event ``i`` of every producer happens at ``ORIGIN + i / R`` (plus a
sub-millisecond offset per producer, so no two events share a time): when
the producers keep pace, events arrive almost in event-time order. When one
falls behind, its events may arrive late; that is allowed, since the test's
reference is a single consumer run on the same stored order.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from minibatch_rx import stream

DEVICE, TS, VALUE, TYPE = "dev", "t", "v", "type"  # payload fields besides the producer "p" and "i"
DEVICES = 40  # keys: enough that every one of the 12 partitions gets several
ORIGIN = 1_767_225_600.0  # 2026-01-01T00:00:00Z in epoch seconds: event times start here
BATCH = 8  # events per append call


def event(producer: int, i: int, rate: float) -> dict[str, Any]:
    """Event ``i`` of ``producer``: the same on every run (a seeded draw per event)."""
    rng = random.Random(producer * 1_000_003 + i)
    return {"p": producer, "i": i, DEVICE: f"d{rng.randrange(DEVICES):02d}",
            TS: ORIGIN + i / rate + producer * 0.0001, VALUE: rng.randrange(1000),
            TYPE: rng.choice("aab")}


def main() -> None:
    """Parse the command line, wait for ``go`` and produce at the given rate."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("producer", type=int)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="events per second")
    args = parser.parse_args()

    target = stream(args.stream, args.url)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(3)
    begin = time.monotonic()
    for first in range(0, args.count, BATCH):
        due = begin + first / args.rate
        ahead = due - time.monotonic()
        if ahead > 0:  # pacing the producer, not waiting for a result
            time.sleep(ahead)  # noqa: sleep-ok
        last = min(first + BATCH, args.count)
        target.extend(event(args.producer, i, args.rate) for i in range(first, last))
    print(f"done {args.count}", flush=True)


if __name__ == "__main__":
    main()
