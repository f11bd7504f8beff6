"""A windowing consumer process for the window crash test (tests/test_crash_windows.py).

    python tests/workers/window_consumer.py URL SOURCE SINK --strategy NAME [--work CPU_SECONDS]

Runs ``stream(SOURCE).<window>(...).map(to_output).sink(SINK)`` under the
fixed consumer name :data:`CONSUMER` until killed; a second, callable sink
burns ``--work`` CPU seconds per window, so a kill often lands after a
window's output is stored and before its position is committed. Each window becomes one
output message ``{"start": epoch seconds or None, "end": ..., "seqs": [source
seqs]}``; late messages go to the default late stream ``SOURCE + '.late'``.
The strategies and their parameters are in :data:`STRATEGIES`, which the test
imports, so both sides agree on sizes, steps and gaps.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from minibatch_rx import Pipeline, Stream, Window, stream

CONSUMER = "window-crash"

SIZE = 0.2  # seconds: fixed windows, the step of sliding-by-time windows, relaxed windows
SLIDE_SIZE = 0.4  # seconds: sliding-by-time window size (each message is in two windows)
SLIDE_COUNT = (5, 2)  # sliding by count: size n, step k
GAP = 0.15  # seconds: session gap
COUNT = (7, 0.3)  # count window: n, timeout in seconds

STRATEGIES: dict[str, Callable[[Stream], Pipeline]] = {
    "fixed": lambda p: p.fixed_time_window(SIZE),
    "sliding_time": lambda p: p.sliding_window(SLIDE_SIZE, SIZE, by="time"),
    "sliding_count": lambda p: p.sliding_window(*SLIDE_COUNT),
    "session": lambda p: p.session_window(GAP),
    "relaxed": lambda p: p.relaxed_time_window(SIZE),
    "count": lambda p: p.count_window(COUNT[0], timeout=COUNT[1]),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_seconds(moment: datetime | None) -> float | None:
    """``moment`` as epoch seconds, exact to the microsecond (``None`` stays ``None``)."""
    if moment is None:
        return None
    return ((moment - _EPOCH) // timedelta(microseconds=1)) / 1_000_000


def main() -> None:
    """Parse the command line, print ``ready`` and run the pipeline until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("source")
    parser.add_argument("sink")
    parser.add_argument("--strategy", required=True, choices=sorted(STRATEGIES))
    parser.add_argument("--work", type=float, default=0.0,
                        help="CPU seconds burnt per window after its output is stored, before its ack")
    parser.add_argument("--slow", type=float, default=0.0,
                        help="CPU seconds burnt instead of --work by one window in eight (by first seq), "
                             "long enough for the clock to close windows while messages wait unread")
    args = parser.parse_args()

    def work(value: dict[str, Any]) -> None:
        seqs = value["seqs"]
        seconds = args.slow if seqs and seqs[0] % 8 == 0 and args.slow else args.work
        deadline = time.process_time() + seconds
        while time.process_time() < deadline:  # CPU-bound work, not a sleep
            pass

    def to_output(window: Window) -> dict[str, Any]:
        return {"start": epoch_seconds(window.start), "end": epoch_seconds(window.end),
                "seqs": [m.seq for m in window.messages]}

    windowed = STRATEGIES[args.strategy](stream(args.source, args.url))
    pipeline = windowed.map(to_output).sink(args.sink).sink(work)
    print("ready", flush=True)
    pipeline.run(consumer=CONSUMER)


if __name__ == "__main__":
    main()
