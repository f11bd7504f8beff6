"""Single appends through the buffered producer, against ``append`` and ``extend``.

One thread stores messages in one SQLite stream (WAL, ``synchronous=full``,
the store's default), one message per call where the mode allows it:

* ``producer``: ``producer.append(doc)`` per message through
  ``stream.producer(linger='5ms', max_batch=1000)``, then ``flush()``: the time
  runs until every message is durable;
* ``append``: ``stream.append(doc)`` per message (one transaction each);
* ``extend``: ``stream.extend(batch)`` with batches of 1,000 (the batching
  limit, done by the caller);
* ``producer, 4 threads``: as ``producer``, with 4 threads sharing one producer.

The modes run in alternating rounds after a warm-up each, in the same run and
the same database file, with the documents of ``bench_append.py``; a rate is
total messages over total time. Self-checks: every message is stored, and the
producer's handles resolve to consecutive seqs in append order. The target of
issue 12 (point 5) is >= 100,000 msg/s for ``producer``.

Usage::

    python benchmarks/bench_producer.py [--quick] [--rounds N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_append import chunks, make_docs  # noqa: E402
from minibatch_rx.store import close_all  # noqa: E402
from minibatch_rx.streams import Stream  # noqa: E402

TARGET = 100_000.0  # msg/s, one thread through the producer on SQLite
LINGER = "5ms"
MAX_BATCH = 1000
THREADS = 4
ROUNDS = 3
SIZES = {"producer": 300_000, "append": 6_000, "extend": 300_000, f"producer, {THREADS} threads": 200_000}
QUICK_SIZES = {"producer": 30_000, "append": 600, "extend": 30_000, f"producer, {THREADS} threads": 20_000}
Doc = dict[str, Any]


@dataclass
class Result:
    """One mode's totals over the timed rounds."""

    mode: str
    messages: int = 0
    seconds: float = 0.0
    round_rates: list[float] = field(default_factory=list)
    batches: int | None = None  # producer modes: batches written in the timed rounds

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["msgs_per_s"] = self.rate
        return data


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark self-check failed: {message}")


class Modes:
    """The timed runners, each storing one round's documents in its own stream."""

    def __init__(self, url: str) -> None:
        self.streams = {name: Stream.get_or_create(f"bench-{i}", url) for i, name in enumerate(SIZES)}
        self.producers = {
            name: self.streams[name].producer(linger=LINGER, max_batch=MAX_BATCH)
            for name in SIZES
            if name.startswith("producer")
        }

    def runner(self, mode: str) -> Callable[[list[Doc]], None]:
        return {
            "producer": self.producer,
            "append": self.append,
            "extend": self.extend,
            f"producer, {THREADS} threads": self.threaded,
        }[mode]

    def producer(self, docs: list[Doc]) -> None:
        producer = self.producers["producer"]
        append = producer.append
        first = append(docs[0])
        for doc in docs[1:-1]:
            append(doc)
        last = append(docs[-1])
        producer.flush()
        check(last.result(0) - first.result(0) == len(docs) - 1, "producer seqs are not consecutive")

    def append(self, docs: list[Doc]) -> None:
        append = self.streams["append"].append
        for doc in docs:
            append(doc)

    def extend(self, docs: list[Doc]) -> None:
        extend = self.streams["extend"].extend
        for batch in chunks(docs, MAX_BATCH):
            extend(batch)

    def threaded(self, docs: list[Doc]) -> None:
        producer = self.producers[f"producer, {THREADS} threads"]
        parts = [docs[t::THREADS] for t in range(THREADS)]
        seqs: list[list[int]] = [[] for _ in range(THREADS)]

        def run(t: int) -> None:
            handles = [producer.append(doc) for doc in parts[t]]
            producer.flush()
            seqs[t] = [h.result(0) for h in handles]

        threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for t in range(THREADS):
            check(seqs[t] == sorted(seqs[t]) and len(seqs[t]) == len(parts[t]), f"thread {t} out of order")

    def close(self) -> None:
        for producer in self.producers.values():
            producer.close()


def run(sizes: dict[str, int], rounds: int, workdir: Path) -> list[Result]:
    """Time every mode in ``sizes`` over ``rounds`` alternating rounds."""
    url = f"sqlite://{workdir / 'producer.db'}"
    modes = Modes(url)
    results = {mode: Result(mode) for mode in sizes}
    try:
        docs = {mode: make_docs(count) for mode, count in sizes.items()}
        for mode, count in sizes.items():  # warm-up
            modes.runner(mode)(make_docs(max(1, min(count // 10, 2 * MAX_BATCH)), start=-10 * MAX_BATCH))
        warm = {mode: modes.streams[mode].count() for mode in sizes}
        warm_batches = {mode: producer.batches for mode, producer in modes.producers.items()}
        for r in range(rounds):
            for mode in sizes:
                part = docs[mode][len(docs[mode]) * r // rounds : len(docs[mode]) * (r + 1) // rounds]
                started = time.perf_counter()
                modes.runner(mode)(part)
                seconds = time.perf_counter() - started
                result = results[mode]
                result.messages += len(part)
                result.seconds += seconds
                result.round_rates.append(len(part) / seconds)
        for mode, result in results.items():
            stored = modes.streams[mode].count() - warm[mode]
            check(stored == result.messages, f"{mode} stored {stored} of {result.messages}")
            if mode in modes.producers:
                result.batches = modes.producers[mode].batches - warm_batches[mode]
    finally:
        modes.close()
        close_all()
    return list(results.values())


def render(results: list[Result]) -> str:
    by_mode = {r.mode: r for r in results}
    ours = by_mode.get("producer")
    header = ("mode", "messages", "msgs/s", "per batch", "producer / this")
    rows = []
    for r in results:
        per_batch = f"{r.messages / r.batches:,.0f}" if r.batches else "-"
        ratio = f"{ours.rate / r.rate:.2f}" if ours and r.rate and r is not ours else "-"
        rows.append((r.mode, f"{r.messages:,}", f"{r.rate:,.0f}", per_batch, ratio))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    text = [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]
    if ours is not None:
        verdict = "PASS" if ours.rate >= TARGET else "FAIL"
        text.append(
            f"\ntarget: producer >= {TARGET:,.0f} msg/s from one thread: {ours.rate:,.0f} ({verdict})"
        )
    return "\n".join(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10x fewer messages (smoke run)")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating timed rounds (%(default)s)")
    parser.add_argument("--messages", type=int, help="messages per mode (append: 1/50 of it)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    sizes = dict(QUICK_SIZES if args.quick else SIZES)
    if args.messages:
        sizes = {mode: max(args.rounds, args.messages // (50 if mode == "append" else 1)) for mode in sizes}
    with tempfile.TemporaryDirectory(prefix="bench_producer_") as workdir:
        results = run(sizes, args.rounds, Path(workdir))
    print(
        f"SQLite (synchronous=full), one thread unless stated; linger={LINGER}, max_batch={MAX_BATCH}; "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    print(render(results))
    if args.json:
        producer = next((r for r in results if r.mode == "producer"), None)
        report = {
            "target_msgs_per_s": TARGET,
            "passed": producer is not None and producer.rate >= TARGET,
            "rounds": args.rounds,
            "results": [r.as_json() for r in results],
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
