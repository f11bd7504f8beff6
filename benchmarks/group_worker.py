"""A member of a keyed event-time consumer group, for ``bench_groups.py --pipeline keyed-time``.

    python benchmarks/group_worker.py URL SOURCE SINK --group G --member NAME
        [--window SECONDS] [--work CPU_SECONDS] [--lease-timeout SECONDS] [--partitions N]

Runs, until killed::

    stream(SOURCE, url).key_by('k').event_time('t', idle=None).fixed_time_window(W)
        .map(process).sink(SINK).run(group=G, member=NAME, lease_timeout=..., partitions=...)

``process`` burns ``--work`` CPU seconds per window (a ``time.thread_time()``
spin, not a sleep: a member runs each of its partitions in threads of its own,
and the process's CPU clock, ``time.process_time()``, would count the CPU of
the others too, cutting a window's work short whenever two partitions' windows
are processed at once) and returns one output per window: its key, start (epoch
seconds), message count, first and last source seq, and this process's pid.
The stream sink is idempotent, so a window processed again after a partition
moved is stored once. Prints ``ready`` once the pipeline is built, before it
joins the group.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from minibatch_rx import Window, stream

KEY, TIME = "k", "t"  # payload fields: the key and the event time (epoch seconds)


def main() -> None:
    """Parse the command line, print ``ready`` and run the member until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("source")
    parser.add_argument("sink")
    parser.add_argument("--group", required=True)
    parser.add_argument("--member", required=True)
    parser.add_argument("--window", type=float, default=20.0, help="seconds of event time per window")
    parser.add_argument("--work", type=float, default=0.0, help="CPU seconds burnt per window")
    parser.add_argument("--lease-timeout", type=float, default=10.0)
    parser.add_argument("--partitions", type=int, default=None)
    args = parser.parse_args()
    pid = os.getpid()

    def process(window: Window[Any]) -> dict[str, Any]:
        deadline = time.thread_time() + args.work
        while time.thread_time() < deadline:  # CPU-bound work of this thread, not a sleep
            pass
        assert window.start is not None  # a time window has its bounds
        return {"key": window.key, "start": window.start.timestamp(), "n": len(window.messages),
                "first": window.messages[0].seq, "last": window.messages[-1].seq, "pid": pid}

    pipeline = (stream(args.source, args.url).key_by(KEY).event_time(TIME, idle=None)
                .fixed_time_window(args.window).map(process).sink(args.sink))
    print("ready", flush=True)
    pipeline.run(group=args.group, member=args.member, lease_timeout=args.lease_timeout,
                 partitions=args.partitions)


if __name__ == "__main__":
    main()
