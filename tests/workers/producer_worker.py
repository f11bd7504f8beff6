"""A producer process for the cross-process producer test.

    python tests/workers/producer_worker.py URL STREAM PROCESS --threads T --count N

Opens one buffered producer on STREAM and, once it reads ``go`` on stdin,
runs T threads that each append N messages ``{"p": PROCESS, "t": thread, "i": i}``
one at a time through it. Each thread then checks that its handles resolved to
strictly increasing seqs. Prints ``ready`` when set up and, after closing the
producer, ``done <messages>``; exits 1 with a message on stderr if a check failed.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading

from minibatch_rx import stream
from minibatch_rx.producer import AppendHandle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("process", type=int)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--linger", default="5ms")
    args = parser.parse_args()

    producer = stream(args.stream, args.url).producer(linger=args.linger, max_batch=1000)
    problems: list[str] = []

    def run(thread: int) -> None:
        handles: list[AppendHandle] = [
            producer.append({"p": args.process, "t": thread, "i": i}) for i in range(args.count)
        ]
        seqs = [handle.result(timeout=120) for handle in handles]
        if any(b <= a for a, b in itertools.pairwise(seqs)):
            problems.append(f"thread {thread}: seqs not increasing in append order")

    threads = [threading.Thread(target=run, args=(t,)) for t in range(args.threads)]
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit(3)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    producer.close(timeout=120)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"done {args.threads * args.count}", flush=True)


if __name__ == "__main__":
    main()
