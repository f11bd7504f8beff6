"""A keyed event-time consumer process for the keyed crash test (tests/test_crash_keyed.py).

    python tests/workers/keyed_consumer.py URL SOURCE SINK --consumer NAME [--work CPU_SECONDS]

Runs ``stream(SOURCE).key_by(KEY).event_time(TS, max_delay=MAX_DELAY,
idle=IDLE).fixed_time_window(SIZE).map(summary).sink(SINK)`` under the
consumer name ``NAME`` until killed. A second, callable sink burns ``--work``
CPU seconds per window after its output is stored and before its position is
committed, so a kill often lands in the middle of a closing step (one step
closes the windows of every key at one grid boundary). Each window becomes
one output message ``{"key", "start" (epoch seconds), "seqs" (source seqs, in
window order), "sum" (of the values)}``; late events go to ``SINK.late``.
The test imports the parameters, so both sides agree on them.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from minibatch_rx import Window, stream

KEY, TS, VALUE = "k", "ts", "v"  # payload fields: the key, the event time (epoch seconds), a value
SIZE = 1.0  # seconds of event time per window
MAX_DELAY = 0.5  # seconds: events may be at most this much older than the newest seen
IDLE = 30.0  # seconds: longer than any test run, so only the events move the watermark


def late_stream(sink: str) -> str:
    """Where a run into ``sink`` sends late events: a stream of its own, so
    the test tells which run found an event late."""
    return f"{sink}.late"


def summary(window: Window) -> dict[str, Any]:
    """One output message for ``window``."""
    assert window.start is not None  # a time window always has its bounds
    return {"key": window.key, "start": window.start.timestamp(),
            "seqs": [m.seq for m in window.messages],
            "sum": sum(m.data[VALUE] for m in window.messages)}


def main() -> None:
    """Parse the command line, print ``ready`` and run the pipeline until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("source")
    parser.add_argument("sink")
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--work", type=float, default=0.0,
                        help="CPU seconds burnt per window after its output is stored, before its ack")
    args = parser.parse_args()

    def work(_value: dict[str, Any]) -> None:
        deadline = time.process_time() + args.work
        while time.process_time() < deadline:  # CPU-bound work, not a sleep
            pass

    pipeline = (stream(args.source, args.url).key_by(KEY).event_time(TS, max_delay=MAX_DELAY, idle=IDLE)
                .fixed_time_window(SIZE).late(late_stream(args.sink))
                .map(summary).sink(args.sink).sink(work))
    print("ready", flush=True)
    pipeline.run(consumer=args.consumer)


if __name__ == "__main__":
    main()
