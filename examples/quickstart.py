"""Quickstart: a producer and a consumer in two processes, on the embedded store.

    python examples/quickstart.py             # both, the producer in a child process
    python examples/quickstart.py produce     # or run each side in its own terminal
    python examples/quickstart.py consume

With no configuration the streams live in SQLite at ~/.minibatch_rx/streams.db
(set MINIBATCH_URL to use another store, e.g. mongodb://localhost/mydb).
"""

from __future__ import annotations

import multiprocessing
import sys
import time

from minibatch_rx import Window, stream

STREAM = "quickstart.readings"
MESSAGES = 20
WINDOW = 5


def produce() -> None:
    """Append readings, one at a time, the way a sensor would."""
    readings = stream(STREAM)
    for i in range(MESSAGES):
        readings.append({"sensor": "s-1", "i": i, "temperature": 20 + i % 7})
        time.sleep(0.01)  # a sensor's pace; not needed for correctness
    print(f"producer: appended {MESSAGES} readings", flush=True)


def summarise(window: Window) -> dict[str, object]:
    temps = [d["temperature"] for d in window.data]
    return {"seqs": f"{window.first_seq}..{window.last_seq}", "mean": sum(temps) / len(temps)}


def consume() -> None:
    """Print the mean temperature of every window of 5 readings."""
    handle = (
        stream(STREAM)
        .count_window(WINDOW)
        .map(summarise)
        .sink(lambda summary: print("consumer:", summary, flush=True))
        .run(consumer="quickstart", max_windows=MESSAGES // WINDOW)
    )
    print(f"consumer: processed {handle.windows} windows, position {handle.position}", flush=True)


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else "both"
    if role == "produce":
        produce()
    elif role == "consume":
        consume()
    else:
        producer = multiprocessing.get_context("spawn").Process(target=produce)
        producer.start()
        consume()
        producer.join(60)
        sys.exit(producer.exitcode or 0)


if __name__ == "__main__":
    main()
