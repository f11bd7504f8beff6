"""A three-stage complex-event-processing flow, each stage in its own process.

    readings ──fixed_time_window(1s)──▶ aggregates ──filter(max > threshold)──▶ alerts

    python examples/cep_flow.py                       # embedded SQLite default
    python examples/cep_flow.py --url mongodb://localhost/cep

Stage 1 (``produce``) appends sensor readings. Stage 2 (``aggregate``)
summarises each one-second window into count/mean/max. Stage 3 (``alert``)
raises an alert for every aggregate whose max crosses the threshold. Each
stage is a separate process that could run on another machine; they meet
only through the streams.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid
from typing import Any

from minibatch_rx import Message, Window, stream

THRESHOLD = 30.0


def produce(url: str | None, prefix: str, readings: int, pace: float) -> None:
    """Stage 1: sensor readings; every 25th one is a spike above the threshold."""
    out = stream(f"{prefix}.readings", url)
    for i in range(readings):
        temperature = 45.0 if i % 25 == 24 else 20.0 + (i % 5)
        out.append({"sensor": f"s-{i % 3}", "i": i, "temperature": temperature})
        time.sleep(pace)  # the sensors' pace


def aggregate(window: Window) -> dict[str, Any]:
    temps = [d["temperature"] for d in window.data]
    return {
        "start": window.start.isoformat() if window.start else None,
        "count": len(temps),
        "mean": round(sum(temps) / len(temps), 3),
        "max": max(temps),
        "first_seq": window.first_seq,
        "last_seq": window.last_seq,
    }


def run_aggregator(url: str | None, prefix: str) -> None:
    """Stage 2: per-second aggregates of the readings."""
    (stream(f"{prefix}.readings", url)
        .fixed_time_window("1s", grace="200ms")
        .map(aggregate)
        .sink(f"{prefix}.aggregates")
        .late(f"{prefix}.late")
        .run(consumer="aggregator"))


def to_alert(message: Message) -> dict[str, Any]:
    return {"level": "high", "max": message.data["max"], "window": message.data["start"]}


def run_alerter(url: str | None, prefix: str) -> None:
    """Stage 3: an alert for each aggregate that crosses the threshold."""
    (stream(f"{prefix}.aggregates", url)
        .filter(lambda m: m.data["max"] > THRESHOLD)
        .map(to_alert)
        .sink(f"{prefix}.alerts")
        .run(consumer="alerter"))


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", default=None, help="store URL (default: the embedded SQLite store)")
    parser.add_argument("--readings", type=int, default=200)
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between readings")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    prefix = f"cep-{uuid.uuid4().hex[:8]}"
    spikes = args.readings // 25

    ctx = multiprocessing.get_context("spawn")
    stages = [ctx.Process(target=run_aggregator, args=(args.url, prefix), daemon=True),
              ctx.Process(target=run_alerter, args=(args.url, prefix), daemon=True)]
    for process in stages:
        process.start()
    producer = ctx.Process(target=produce, args=(args.url, prefix, args.readings, args.pace))
    producer.start()
    producer.join(args.timeout)

    aggregates, late, alerts = (stream(f"{prefix}.{n}", args.url) for n in ("aggregates", "late", "alerts"))

    def counted() -> int:
        return sum(int(m.data["count"]) for m in aggregates.read()) + late.count()

    ok = wait_for(lambda: counted() == args.readings, args.timeout)
    expected_alerts = sum(1 for m in aggregates.read() if m.data["max"] > THRESHOLD)
    ok = wait_for(lambda: alerts.count() == expected_alerts, args.timeout) and ok
    for process in stages:
        process.terminate()
        process.join(10)

    print(f"readings: {args.readings}, spikes: {spikes}, aggregated: {counted() - late.count()}, "
          f"late: {late.count()}, aggregates: {aggregates.count()}, alerts: {alerts.count()}")
    for alert in alerts.read():
        print("ALERT", alert.data)
    for name in ("readings", "aggregates", "late", "alerts", "readings.dead", "aggregates.dead"):
        stream(f"{prefix}.{name}", args.url).delete()
    return 0 if ok and producer.exitcode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
