"""Append throughput of minibatch_rx streams, next to the raw driver limit.

For each store (memory, sqlite, mongodb) this measures, in messages per second:

* ``append``: one ``Stream.append(doc)`` call per message;
* ``extend``: ``Stream.extend(batch)`` with batches of 1,000 messages.

Beside each, on the same machine, in the same run and with the same documents,
it measures what the bare driver can do:

* sqlite: Python's ``sqlite3`` into a table of the same shape (``stream, seq,
  ts, data`` as JSON text, ``PRIMARY KEY (stream, seq) WITHOUT ROWID``) in a
  WAL database with the same ``synchronous`` setting: one autocommitted
  ``INSERT`` per message for singles, ``executemany`` inside one transaction
  per 1,000-row batch for batches. JSON encoding is part of the timed work;
* mongodb: pymongo ``insert_one`` per message and ``insert_many`` of 1,000
  documents, on the same server;
* memory has no raw baseline.

Ours and raw are timed in alternating rounds (after a warm-up each), so drift
of the machine hits both alike; a rate is total messages over total time.

MongoDB: ``MINIBATCH_TEST_MONGO_URL`` if set, else a SecantusDB test server
(``tests/mongo_server.py``) started and stopped by this script. Either way the
benchmark uses a database of its own and drops it afterwards.

Usage::

    python benchmarks/bench_append.py [--stores memory,sqlite,mongodb] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pymongo

from minibatch_rx.store import close_all
from minibatch_rx.streams import Stream

ROOT = Path(__file__).resolve().parent.parent
STORES = ("memory", "sqlite", "mongodb")
BATCH = 1000
ROUNDS = 3
STREAM = "bench"

Doc = dict[str, Any]
# A timed run: given the documents of one round, store them all.
Runner = Callable[[list[Doc]], None]


@dataclass(frozen=True)
class Sizes:
    """Messages per (store, mode), over all rounds, excluding warm-up."""

    single: int
    batched: int


SIZES: dict[str, Sizes] = {
    "memory": Sizes(single=100_000, batched=500_000),
    "sqlite": Sizes(single=5_000, batched=100_000),
    "mongodb": Sizes(single=1_000, batched=10_000),
}
QUICK_SIZES: dict[str, Sizes] = {
    "memory": Sizes(single=10_000, batched=50_000),
    "sqlite": Sizes(single=1_000, batched=10_000),
    "mongodb": Sizes(single=200, batched=3_000),
}


@dataclass
class Result:
    """One row of the report."""

    store: str
    mode: str
    messages: int
    seconds: float
    raw_messages: int | None = None
    raw_seconds: float | None = None
    round_rates: list[float] = field(default_factory=list)
    raw_round_rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def raw_rate(self) -> float | None:
        if self.raw_messages is None or not self.raw_seconds:
            return None
        return self.raw_messages / self.raw_seconds

    @property
    def ratio(self) -> float | None:
        raw = self.raw_rate
        return self.rate / raw if raw else None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(msgs_per_s=self.rate, raw_msgs_per_s=self.raw_rate, ratio=self.ratio)
        return data


# -- documents and timing ---------------------------------------------------------
def make_docs(count: int, start: int = 0) -> list[Doc]:
    """``count`` sensor readings, numbered from ``start``."""
    return [
        {"sensor": f"s-{i % 50}", "value": 20.0 + (i % 100) / 8, "i": i, "tags": ["a", "b"]}
        for i in range(start, start + count)
    ]


def chunks(items: Sequence[Doc], size: int) -> Iterator[list[Doc]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def split_rounds(docs: list[Doc], rounds: int, unit: int) -> list[list[Doc]]:
    """``docs`` cut into ``rounds`` contiguous parts, each a multiple of ``unit`` long
    where possible."""
    units = (len(docs) + unit - 1) // unit
    parts: list[list[Doc]] = []
    start_unit = 0
    for r in range(rounds):
        end_unit = units * (r + 1) // rounds
        part = docs[start_unit * unit : end_unit * unit]
        if part:
            parts.append(part)
        start_unit = end_unit
    return parts


def timed(run: Runner, docs: list[Doc]) -> float:
    start = time.perf_counter()
    run(docs)
    return time.perf_counter() - start


def measure(
    store: str,
    mode: str,
    docs: list[Doc],
    warmup: list[Doc],
    ours: Runner,
    raw: Runner | None,
    rounds: int,
    unit: int,
    prepare_raw: Callable[[list[Doc]], list[Doc]] = lambda d: d,
) -> Result:
    """Warm both up, then time ``ours`` and ``raw`` in alternating rounds.

    ``prepare_raw`` makes the raw runner's copy of a round's documents, outside
    the timed region (pymongo adds ``_id`` to the dicts it inserts).
    """
    ours(warmup)
    if raw is not None:
        raw(prepare_raw(warmup))
    result = Result(store, mode, 0, 0.0, 0 if raw else None, 0.0 if raw else None)
    for part in split_rounds(docs, rounds, unit):
        seconds = timed(ours, part)
        result.messages += len(part)
        result.seconds += seconds
        result.round_rates.append(len(part) / seconds)
        if raw is not None:
            raw_docs = prepare_raw(part)
            seconds = timed(raw, raw_docs)
            assert result.raw_messages is not None and result.raw_seconds is not None
            result.raw_messages += len(part)
            result.raw_seconds += seconds
            result.raw_round_rates.append(len(part) / seconds)
    return result


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(f"benchmark self-check failed: {message}")


def ours_runners(stream: Stream) -> tuple[Runner, Runner]:
    def single(docs: list[Doc]) -> None:
        append = stream.append
        for doc in docs:
            append(doc)

    def batched(docs: list[Doc]) -> None:
        for batch in chunks(docs, BATCH):
            stream.extend(batch)

    return single, batched


# -- memory ---------------------------------------------------------------------------
def bench_memory(sizes: Sizes, rounds: int) -> list[Result]:
    results = []
    for mode, count, unit in (("append", sizes.single, 1), ("extend", sizes.batched, BATCH)):
        stream = Stream.get_or_create(f"{STREAM}-{mode}", "memory://bench")
        single, batched = ours_runners(stream)
        run = single if mode == "append" else batched
        warmup = make_docs(min(count // 10, 2 * BATCH) or 1, start=-10 * BATCH)
        results.append(measure("memory", mode, make_docs(count), warmup, run, None, rounds, unit))
        check(stream.count() == count + len(warmup), f"memory {mode} stored {stream.count()}")
    close_all()
    return results


# -- sqlite ---------------------------------------------------------------------------
_RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS raw_messages (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID
"""
_RAW_INSERT = "INSERT INTO raw_messages (stream, seq, ts, data) VALUES (?, ?, ?, ?)"


def bench_sqlite(sizes: Sizes, rounds: int, synchronous: str, workdir: Path) -> list[Result]:
    url = f"sqlite://{workdir / 'ours.db'}?synchronous={synchronous}"
    raw_conn = sqlite3.connect(workdir / "raw.db", isolation_level=None)
    try:
        raw_conn.execute("PRAGMA journal_mode=WAL")
        raw_conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        raw_conn.execute(_RAW_SCHEMA)
        return _bench_sqlite(url, raw_conn, sizes, rounds)
    finally:
        raw_conn.close()
        close_all()


def _bench_sqlite(url: str, conn: sqlite3.Connection, sizes: Sizes, rounds: int) -> list[Result]:
    seq = 0

    def raw_single(docs: list[Doc]) -> None:
        nonlocal seq
        execute, dumps, now = conn.execute, json.dumps, time.time
        for doc in docs:
            seq += 1
            # Autocommit mode: each statement is its own committed transaction.
            execute(_RAW_INSERT, ("raw-append", seq, now(), dumps(doc, separators=(",", ":"))))

    def raw_batched(docs: list[Doc]) -> None:
        nonlocal seq
        for batch in chunks(docs, BATCH):
            ts = time.time()
            rows = [
                ("raw-extend", seq + i, ts, json.dumps(doc, separators=(",", ":")))
                for i, doc in enumerate(batch, 1)
            ]
            seq += len(rows)
            conn.execute("BEGIN")
            conn.executemany(_RAW_INSERT, rows)
            conn.execute("COMMIT")

    results = []
    for mode, count, unit, raw in (
        ("append", sizes.single, 1, raw_single),
        ("extend", sizes.batched, BATCH, raw_batched),
    ):
        stream = Stream.get_or_create(f"{STREAM}-{mode}", url)
        single, batched = ours_runners(stream)
        ours = single if mode == "append" else batched
        warmup = make_docs(min(count // 10, 2 * BATCH) or 1, start=-10 * BATCH)
        seq = 0
        results.append(measure("sqlite", mode, make_docs(count), warmup, ours, raw, rounds, unit))
        total = count + len(warmup)
        check(stream.count() == total, f"sqlite {mode} stored {stream.count()} of {total}")
        check(seq == total, f"raw sqlite {mode} stored {seq} of {total}")
    return results


# -- mongodb --------------------------------------------------------------------------
def bench_mongodb(sizes: Sizes, rounds: int, base_url: str) -> list[Result]:
    prefix, _, query = base_url.partition("?")
    scheme, rest = prefix.split("://", 1)
    host = rest.split("/", 1)[0]
    database = f"mbbench_{uuid.uuid4().hex[:12]}"
    url = f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")
    client: pymongo.MongoClient[Doc] = pymongo.MongoClient(url)
    try:
        return _bench_mongodb(url, client[database]["raw_messages"], sizes, rounds)
    finally:
        close_all()
        client.drop_database(database)
        client.close()


def _bench_mongodb(url: str, raw_collection: Any, sizes: Sizes, rounds: int) -> list[Result]:
    def raw_single(docs: list[Doc]) -> None:
        insert_one = raw_collection.insert_one
        for doc in docs:
            insert_one(doc)

    def raw_batched(docs: list[Doc]) -> None:
        for batch in chunks(docs, BATCH):
            raw_collection.insert_many(batch, ordered=True)

    def copies(docs: list[Doc]) -> list[Doc]:
        return [dict(doc) for doc in docs]

    results = []
    for mode, count, unit, raw in (
        ("append", sizes.single, 1, raw_single),
        ("extend", sizes.batched, BATCH, raw_batched),
    ):
        stream = Stream.get_or_create(f"{STREAM}-{mode}", url)
        single, batched = ours_runners(stream)
        ours = single if mode == "append" else batched
        warmup = make_docs(min(count // 10, BATCH) or 1, start=-10 * BATCH)
        before = raw_collection.count_documents({})
        results.append(measure("mongodb", mode, make_docs(count), warmup, ours, raw, rounds, unit, copies))
        total = count + len(warmup)
        check(stream.count() == total, f"mongodb {mode} stored {stream.count()} of {total}")
        stored = raw_collection.count_documents({}) - before
        check(stored == total, f"raw mongodb {mode} stored {stored} of {total}")
    return results


@contextmanager
def mongo_url() -> Iterator[tuple[str, str]]:
    """The MongoDB URL to use and a description; starts a test server if needed."""
    external = os.environ.get("MINIBATCH_TEST_MONGO_URL")
    if external:
        yield external, "MINIBATCH_TEST_MONGO_URL"
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from mongo_server import MongoTestServer

    server = MongoTestServer()
    try:
        server.start()
        yield server.url, "SecantusDB test server (tests/mongo_server.py)"
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


# -- report ---------------------------------------------------------------------------
def fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:,.0f}"


def render(results: list[Result]) -> str:
    header = ("store", "mode", "messages", "msgs/s", "raw msgs/s", "ours/raw")
    rows = [
        (
            r.store,
            "append (single)" if r.mode == "append" else f"extend ({BATCH:,})",
            f"{r.messages:,}",
            fmt_rate(r.rate),
            fmt_rate(r.raw_rate),
            "-" if r.ratio is None else f"{r.ratio:.2f}",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--stores",
        default=",".join(STORES),
        help="comma-separated subset of %(default)s",
    )
    parser.add_argument("--quick", action="store_true", help="about 10x fewer messages (smoke run)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as JSON")
    parser.add_argument(
        "--sqlite-synchronous",
        choices=("full", "normal"),
        default="full",
        help="PRAGMA synchronous for both sqlite runs (default: %(default)s, the store's default)",
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternating timed rounds (%(default)s)")
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = sorted(set(args.stores) - set(STORES))
    if unknown or not args.stores:
        parser.error(f"--stores: unknown {unknown}; choose from {','.join(STORES)}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    results: list[Result] = []
    environment: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "pymongo": pymongo.version,
        "sqlite_synchronous": args.sqlite_synchronous,
        "batch": BATCH,
        "rounds": args.rounds,
        "quick": args.quick,
    }
    started = time.perf_counter()
    try:
        with ExitStack() as stack:
            for name in args.stores:
                print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
                if name == "memory":
                    results += bench_memory(sizes[name], args.rounds)
                elif name == "sqlite":
                    workdir = Path(tempfile.mkdtemp(prefix="minibatch-bench-"))
                    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
                    results += bench_sqlite(sizes[name], args.rounds, args.sqlite_synchronous, workdir)
                else:
                    url, where = stack.enter_context(mongo_url())
                    environment["mongodb"] = where
                    results += bench_mongodb(sizes[name], args.rounds, url)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("benchmark failed", file=sys.stderr)
        return 1
    environment["seconds"] = round(time.perf_counter() - started, 1)

    print(
        f"Python {environment['python']}, SQLite {environment['sqlite']} "
        f"(synchronous={args.sqlite_synchronous}), pymongo {environment['pymongo']}"
        + (f", MongoDB: {environment['mongodb']}" if "mongodb" in environment else "")
    )
    print(render(results))
    print(f"total {environment['seconds']} s")
    if args.json:
        payload = {"environment": environment, "results": [r.as_json() for r in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
