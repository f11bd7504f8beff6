"""The MongoDB collection connector's throughput against pymongo's raw calls, same run.

Starts the project's MongoDB-wire test server (tests/mongo_server.py, a
single-node replica set), and measures, alternating ours and raw over the
rounds after a warm-up:

* into a stream: N inserts (``insert_many`` in batches of 1,000) followed by
  a raw change stream (``watch`` + ``try_next`` until N events) against
  ``CollectionBridge`` into a SQLite stream (the clock stops when the stream
  holds N changes); both clocks start after the change stream is open and
  include the inserts, as the bridge can only go as fast as they come;
* out of a stream: ``CollectionSink.write`` + ``flush`` per 1,000 values (an
  ordered bulk of upserts, as a pipeline flushes per window) against a raw
  ``insert_many`` of the same documents.

Self-checks: the stream holds N changes with N distinct resume tokens; the
sink's and raw collections hold N documents.

Usage::

    python benchmarks/bench_connectors_mongodb.py [--messages N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT,):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import pymongo  # noqa: E402

from minibatch_rx import store as store_module  # noqa: E402
from minibatch_rx import stream  # noqa: E402
from minibatch_rx.connectors.mongodb import CollectionBridge, CollectionSink  # noqa: E402
from tests.mongo_server import MongoTestServer  # noqa: E402

BATCH = 1000


def check(condition: bool, message: str) -> None:
    """Fail the benchmark (not just the figure) when a self-check fails."""
    if not condition:
        raise SystemExit(f"self-check failed: {message}")


def docs(n: int) -> list[dict[str, Any]]:
    return [{"i": i, "name": "x" * 20, "v": i * 0.5} for i in range(n)]


def insert(collection: Any, n: int) -> None:
    for k in range(0, n, BATCH):
        collection.insert_many(docs(n)[k:k + BATCH])


def raw_in(db: Any, n: int) -> float:
    """Seconds for N inserts read back through a raw change stream."""
    collection = db[f"raw_{uuid.uuid4().hex[:8]}"]
    with collection.watch(max_await_time_ms=100) as changes:
        started = time.perf_counter()
        insert(collection, n)
        seen = 0
        while seen < n:
            if changes.try_next() is not None:
                seen += 1
        return time.perf_counter() - started


def ours_in(url: str, db: Any, n: int, workdir: Path) -> float:
    """Seconds for N inserts bridged into a SQLite stream."""
    name = f"ours_{uuid.uuid4().hex[:8]}"
    target = stream(name, f"sqlite://{workdir / (name + '.db')}")
    bridge = CollectionBridge(url, name, target, batch=BATCH).start()
    try:
        started = time.perf_counter()
        insert(db[name], n)
        while target.store.count(target.name) < n:
            bridge._stop.wait(0.001)
        elapsed = time.perf_counter() - started
    finally:
        bridge.stop()
    tokens = {m.data["token"]["_data"] for m in target.read()}
    check(len(tokens) == n, f"bridge stored {len(tokens)} distinct changes of {n}")
    store_module.close_all()
    return elapsed


def raw_out(db: Any, n: int) -> float:
    collection = db[f"rawout_{uuid.uuid4().hex[:8]}"]
    values = docs(n)
    started = time.perf_counter()
    for k in range(0, n, BATCH):
        collection.insert_many([dict(v) for v in values[k:k + BATCH]])
    elapsed = time.perf_counter() - started
    check(collection.count_documents({}) == n, "raw insert_many lost documents")
    return elapsed


def ours_out(url: str, db: Any, n: int) -> float:
    name = f"sinkout_{uuid.uuid4().hex[:8]}"
    sink = CollectionSink(url, name)
    values = docs(n)
    started = time.perf_counter()
    for k in range(0, n, BATCH):
        chunk = values[k:k + BATCH]
        sink.write(chunk, [f"c|s:{k + j}-{k + j}|0" for j in range(len(chunk))])
        sink.flush()
    elapsed = time.perf_counter() - started
    sink.close()
    check(db[name].count_documents({}) == n, "CollectionSink lost documents")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.messages
    server = MongoTestServer().start()
    url = f"mongodb://127.0.0.1:{server.port}/bench_connectors"
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    db = client.get_default_database()
    times: dict[str, list[float]] = {"raw in": [], "ours in": [], "raw out": [], "ours out": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            raw_in(db, min(n, 1000))  # warm-up
            ours_in(url, db, min(n, 1000), workdir)
            for _ in range(args.rounds):
                times["raw in"].append(raw_in(db, n))
                times["ours in"].append(ours_in(url, db, n, workdir))
                times["raw out"].append(raw_out(db, n))
                times["ours out"].append(ours_out(url, db, n))
    finally:
        client.close()
        server.stop()
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    print(f"MongoDB connector, {n:,} messages, median of {args.rounds} rounds (SecantusDB test server)\n")
    print("| direction | raw pymongo msg/s | minibatch_rx msg/s | ours / raw |")
    print("|---|---|---|---|")
    print(f"| collection -> stream (change stream vs CollectionBridge into SQLite) | {rate['raw in']:,.0f} "
          f"| {rate['ours in']:,.0f} | {rate['ours in'] / rate['raw in']:.2f}x |")
    print(f"| stream -> collection (insert_many vs CollectionSink upserts) | {rate['raw out']:,.0f} "
          f"| {rate['ours out']:,.0f} | {rate['ours out'] / rate['raw out']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
