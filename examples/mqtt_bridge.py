"""MQTT in and out: a bridge stores sensor readings from MQTT topics in a
stream, a sink publishes them (QoS 1, flush waits for the broker's acks).

Needs a broker (mosquitto, for one) and ``pip install 'minibatch_rx[mqtt]'``::

    python examples/mqtt_bridge.py --broker 127.0.0.1:1883 --count 20
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

from minibatch_rx import stream
from minibatch_rx.connectors.mqtt import MqttBridge, MqttSink


def main() -> None:
    """Bridge ``sensors/+`` into a stream, publish readings, print the means."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", default="127.0.0.1:1883", help="host:port of an MQTT broker")
    parser.add_argument("--count", type=int, default=20, help="readings to publish")
    parser.add_argument("--url", default=None, help="store URL (default: the embedded SQLite store)")
    args = parser.parse_args()

    readings = stream("mqtt_example.readings", url=args.url)
    run = uuid.uuid4().hex[:8]  # this run's readings, apart from earlier runs'
    # A fixed client id keeps a persistent session: readings published while the
    # bridge is down are waiting for it. "id" makes each append idempotent.
    bridge = MqttBridge(args.broker, "mqtt_example/sensors/+", readings,
                        client_id="mqtt_example-bridge", id_field="id").start()

    sink = MqttSink(args.broker, lambda r: f"mqtt_example/sensors/{r['sensor']}")
    values = [{"id": f"{run}-{n}", "sensor": f"s{n % 2}", "temperature": 20 + n / 10}
              for n in range(args.count)]
    sink.write(values, [str(v["id"]) for v in values])
    sink.flush()  # the broker has every reading now
    sink.close()

    def mine() -> list[dict[str, Any]]:
        return [m.data for m in readings.read() if str(m.data.get("id", "")).startswith(run)]

    deadline = time.monotonic() + 30
    while len(mine()) < args.count and time.monotonic() < deadline:
        time.sleep(0.05)  # noqa: sleep-ok
    bridge.stop()

    got = mine()
    sensors = sorted({r["sensor"] for r in got})
    means = {s: round(statistics.mean(r["temperature"] for r in got if r["sensor"] == s), 3) for s in sensors}
    print(f"bridged {len(got)} readings; mean temperature per sensor: {means}")


if __name__ == "__main__":
    main()
