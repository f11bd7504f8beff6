"""A consumer process for the crash, group and outage tests.

    python tests/workers/consumer.py URL SOURCE SINK [--group G] [--size N] [--work SECONDS]

Windows of SOURCE go to SINK, one output message per input message, each
recording its source seq; the stream sink is idempotent (keyed on the source
seq range), so redelivered windows never duplicate output. Runs until killed.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from minibatch_rx import Window, stream


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("source")
    parser.add_argument("sink")
    parser.add_argument("--group", default=None)
    parser.add_argument("--consumer", default="crash-test")
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--work", type=float, default=0.0, help="CPU seconds burnt per window")
    parser.add_argument("--lease-timeout", type=float, default=10.0,
                        help="seconds (long enough that a loaded machine does not expire healthy leases)")
    parser.add_argument("--timeout", type=float, default=None, help="flush partial windows after this")
    parser.add_argument("--plain", action="store_true", help="non-idempotent sink: duplicates would show")
    args = parser.parse_args()
    pid = os.getpid()

    def process(window: Window) -> list[dict[str, Any]]:
        deadline = time.process_time() + args.work
        while time.process_time() < deadline:  # CPU-bound work, not a sleep
            pass
        return [{"src": m.seq, "producer": m.data.get("producer"), "i": m.data.get("i"), "pid": pid}
                for m in window.messages]

    pipeline = (stream(args.source, args.url).count_window(args.size, args.timeout).map(process)
                .sink(args.sink, idempotent=not args.plain))
    print("ready", flush=True)
    if args.group:
        pipeline.run(group=args.group, lease_timeout=args.lease_timeout)
    else:
        pipeline.run(consumer=args.consumer)


if __name__ == "__main__":
    main()
