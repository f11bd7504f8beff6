"""The MQTT connector's throughput beside raw paho-mqtt, in the same run, on a
private mosquitto (``/usr/sbin/mosquitto`` on a free loopback port).

* ``bridge -> SQLite`` / ``bridge -> memory``: ``MqttBridge`` stores N JSON
  messages the broker queued for its persistent session (QoS 1, manual
  PUBACKs after each durable batch); timed from ``start()`` until the stream
  holds all N.
* ``raw subscriber``: a paho client with the same session settings receives
  the same N queued messages and decodes each payload (``json.loads``),
  PUBACKs automatic; timed from connecting until all N arrived.
* ``MqttSink``: ``write()`` of N values in windows of 1,000, ``flush()``
  after each (every PUBACK awaited), QoS 1 with the key as a user property.
* ``raw publish``: paho ``publish()`` of the same N payloads at QoS 1, then
  waiting for every PUBACK.

Modes alternate over the rounds; a rate is total messages over total time.
Self-checks: each consumer got every message once, in order.

Usage::

    python benchmarks/bench_connectors_mqtt.py [--quick] [--messages N] [--rounds R] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from minibatch_rx import stream  # noqa: E402
from minibatch_rx.connectors.mqtt import MqttBridge, MqttSink  # noqa: E402
from tests.test_connector_mqtt import MosquittoBroker, running_broker, wait_until  # noqa: E402

WINDOW = 1000
RAW_PUB, SINK = "raw publish (QoS 1)", "MqttSink (QoS 1, flush per 1,000)"
RAW_SUB, BRIDGE_SQLITE, BRIDGE_MEMORY = "raw subscriber", "bridge -> SQLite", "bridge -> memory"


def payloads(n: int) -> list[str]:
    """N small JSON objects, about 90 bytes each."""
    return [json.dumps({"seq": i, "sensor": f"s{i % 16}", "temperature": 20 + i % 100 / 10,
                        "ts": "2026-11-30T12:00:00Z"}) for i in range(n)]


def raw_client(broker: MosquittoBroker, client_id: str = "", session: bool = False,
               manual_ack: bool = False) -> paho.Client:
    """A connected paho v5 client (with a persistent session if ``session``)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=MQTTProtocolVersion.MQTTv5, manual_ack=manual_ack)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    if session:
        props.SessionExpiryInterval, props.ReceiveMaximum = 3600, 1000
    client.connect("127.0.0.1", broker.port, clean_start=not session, properties=props)
    return client


def publish_all(broker: MosquittoBroker, topic: str, messages: list[str]) -> float:
    """Raw paho: publish at QoS 1 and wait for every PUBACK; the seconds it took."""
    acked = threading.Semaphore(0)
    client = raw_client(broker)
    client.on_publish = lambda *args: acked.release()
    client.loop_start()
    started = time.perf_counter()
    for payload in messages:
        client.publish(topic, payload, qos=1)
    for _ in messages:
        assert acked.acquire(timeout=60), "a PUBACK never came"
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def sink_all(broker: MosquittoBroker, topic: str, messages: list[str]) -> float:
    """MqttSink: windows of WINDOW values, flush after each; the seconds it took."""
    values = [json.loads(m) for m in messages]
    sink = MqttSink(broker.address, topic)
    assert wait_until(sink._client.is_connected, 10)
    started = time.perf_counter()
    for start in range(0, len(values), WINDOW):
        window = values[start:start + WINDOW]
        sink.write(window, [f"w|{start + i}" for i in range(len(window))])
        sink.flush()
    elapsed = time.perf_counter() - started
    assert sink.published == len(values)
    sink.close()
    return elapsed


def subscribe_sessions(broker: MosquittoBroker, topic: str, client_ids: list[str]) -> None:
    """Create each persistent session with its subscription, then go away."""
    for client_id in client_ids:
        client = raw_client(broker, client_id, session=True)
        done = threading.Event()
        client.on_subscribe = lambda *args, done=done: done.set()
        client.loop_start()
        client.subscribe(topic, qos=1)
        assert done.wait(10)
        client.disconnect()
        client.loop_stop()


def raw_receive(broker: MosquittoBroker, client_id: str, topic: str, n: int) -> float:
    """Raw paho: receive the N queued messages (json.loads each); the seconds it took."""
    got: list[int] = []
    finished = threading.Event()

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        got.append(json.loads(message.payload)["seq"])
        if len(got) == n:
            finished.set()

    started = time.perf_counter()
    client = raw_client(broker, client_id, session=True)
    client.on_message = on_message
    client.loop_start()
    assert finished.wait(120), f"raw subscriber got {len(got)} of {n}"
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    assert got == list(range(n))
    return elapsed


def bridge_receive(broker: MosquittoBroker, client_id: str, topic: str, n: int, url: str) -> float:
    """MqttBridge: store the N queued messages in a fresh stream; the seconds it took."""
    target = stream(f"bench.mqtt.{uuid.uuid4().hex[:8]}", url=url)
    started = time.perf_counter()
    bridge = MqttBridge(broker.address, topic, target, client_id=client_id).start()
    assert wait_until(lambda: target.count() >= n, 120, poll=0.005), f"bridge stored {target.count()} of {n}"
    elapsed = time.perf_counter() - started
    assert bridge.stop()
    assert [m.data["seq"] for m in target.read()] == list(range(n)) and bridge.duplicates == 0
    target.delete()
    return elapsed


def run(messages: int, rounds: int) -> dict[str, float]:
    """Rates (msg/s) of every mode, alternating over ``rounds``."""
    data = payloads(messages)
    totals: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., float], *args: Any) -> None:
        totals[name] = totals.get(name, 0.0) + fn(*args)

    with running_broker() as broker, tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite://{tmp}/bench.db"
        for r in range(rounds):
            topic = f"bench/{r}"
            ids = {mode: f"bench-{mode}-{r}" for mode in ("raw", "sqlite", "memory")}
            subscribe_sessions(broker, topic, list(ids.values()))
            timed(RAW_PUB, publish_all, broker, topic, data)
            timed(SINK, sink_all, broker, f"sink/{r}", data)
            timed(RAW_SUB, raw_receive, broker, ids["raw"], topic, messages)
            timed(BRIDGE_SQLITE, bridge_receive, broker, ids["sqlite"], topic, messages, sqlite_url)
            timed(BRIDGE_MEMORY, bridge_receive, broker, ids["memory"], topic, messages,
                  f"memory://{uuid.uuid4().hex}")
    return {name: messages * rounds / seconds for name, seconds in totals.items()}


def main() -> None:
    """Run and print the table (and write JSON if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 1 round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    messages, rounds = (2000, 1) if args.quick else (args.messages, args.rounds)
    rates = run(messages, rounds)
    print(f"{messages:,} messages x {rounds} rounds, mosquitto on loopback")
    print(f"{'mode':<36}{'msg/s':>12}")
    for name, rate in rates.items():
        print(f"{name:<36}{rate:>12,.0f}")
    print(f"bridge -> SQLite / raw subscriber: {rates[BRIDGE_SQLITE] / rates[RAW_SUB]:.2f}x; "
          f"bridge -> memory / raw subscriber: {rates[BRIDGE_MEMORY] / rates[RAW_SUB]:.2f}x; "
          f"MqttSink / raw publish: {rates[SINK] / rates[RAW_PUB]:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"messages": messages, "rounds": rounds, "rates": rates}, indent=2))


if __name__ == "__main__":
    main()
