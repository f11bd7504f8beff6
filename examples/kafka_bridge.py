"""Kafka in and out: produce orders with KafkaSink, bridge the topic into a
stream with KafkaBridge, and total each window of 5 orders.

    python tests/kafka_server.py                       # a test broker (prints its address), or your own
    python examples/kafka_bridge.py --bootstrap 127.0.0.1:9092

Needs ``pip install 'minibatch_rx[kafka]'``. The stream lives on the default
store (SQLite at ~/.minibatch_rx/streams.db; set MINIBATCH_URL for another).
Run it again: the bridge resumes from its committed offsets, so only the new
orders are bridged, each once.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from minibatch_rx import Window, stream
from minibatch_rx.connectors.kafka import KafkaBridge, KafkaSink

ORDERS = 5


def total(window: Window) -> int:
    """The quantity ordered in one window."""
    return sum(int(order["qty"]) for order in window.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka brokers, host:port")
    parser.add_argument("--topic", default="minibatch-example-orders")
    args = parser.parse_args()

    # 1. Produce: flush() returns once the broker confirmed every message.
    run = uuid.uuid4().hex[:8]
    sink = KafkaSink(args.bootstrap, args.topic, key=lambda order: str(order["customer"]))
    orders: list[dict[str, Any]] = [
        {"order": f"{run}-{i}", "customer": f"c{i % 2}", "qty": i + 1} for i in range(ORDERS)]
    sink.write(orders, [order["order"] for order in orders])
    sink.flush()
    sink.close()
    print(f"produced {ORDERS} orders", flush=True)

    # 2. Bridge: from the group's committed offsets to the end of what was produced.
    orders_stream = stream("kafka.example.orders")
    before = orders_stream.count()
    # A short session: a rerun soon after is not kept waiting for this run's place in the group.
    bridge = KafkaBridge(args.bootstrap, args.topic, orders_stream, group_id="minibatch-example",
                         config={"session.timeout.ms": 6000})
    deadline = time.monotonic() + 60
    bridge.run(until=lambda: orders_stream.count() >= before + ORDERS or time.monotonic() > deadline)
    print(f"bridged {orders_stream.count() - before} new messages, the stream holds {orders_stream.count()}")
    for message in orders_stream.read(after=orders_stream.last_seq() - ORDERS):
        kafka = message.data["_kafka"]
        print(f"  seq {message.seq}: {message.data['order']} qty {message.data['qty']} "
              f"from {kafka['topic']}/{kafka['partition']}/{kafka['offset']} key {kafka['key']}")

    # 3. Process: one window of 5 orders per run, resumed from the consumer's position.
    totals: list[int] = []
    orders_stream.count_window(ORDERS).map(total).sink(totals.append).run(max_windows=1)
    print(f"total quantity: {totals[0]}")


if __name__ == "__main__":
    main()
