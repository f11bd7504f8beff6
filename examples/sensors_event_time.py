"""Per-sensor means on event time, then alerts: two pipelines chained by a stream.

    readings ──key_by(sensor).event_time(ts, 2s).fixed_time_window(5s)──▶ means ──filter(mean > 30)──▶ alerts

    python examples/sensors_event_time.py                 # embedded SQLite default
    python examples/sensors_event_time.py --url mongodb://localhost/sensors

Three sensors report a temperature every second, each stamped by the device
(``ts``: ISO-8601 text, naive ISO-8601 meaning UTC, or epoch seconds). A
gateway forwards them in batches, out of order: most readings are delayed by
up to 1.2 s; one by 2.5 s, so it arrives after readings from past the end of
its window, but within ``max_delay``: all of them still land in the window of
the second they were measured. Two were held up for 7 s and go to the late
stream. One device had not set its clock: its reading goes to the dead-letter
stream with the reason. The means pipeline keys windows by sensor; the alerts
pipeline reads the means stream. Both run in this process, as they could in
two others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any

from minibatch_rx import Message, PipelineHandle, Stream, Window, stream

START = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
SENSORS = ("s-1", "s-2", "s-3")
SECONDS = 20
THRESHOLD = 30.0
SLOW = ("s-3", 9)  # a reading 2.5 s in transit: after its window's end, within max_delay
HELD_UP = {("s-3", 4), ("s-1", 12)}  # readings stuck in transit for 7 s: late
NO_CLOCK = ("s-2", 7)  # a device that had not set its clock yet


def temperature(sensor: str, second: int) -> float:
    """What ``sensor`` measures at ``second``; s-2 overheats after 10 s."""
    if sensor == "s-2" and second >= 10:
        return 35.0 + (second % 3) * 0.5
    return 20.0 + SENSORS.index(sensor) + (second % 4) * 0.25


def device_stamp(sensor: str, second: int) -> str | float:
    """The timestamp ``sensor`` puts on a reading: each device writes its own format."""
    if (sensor, second) == NO_CLOCK:
        return "clock not set"
    moment = START + timedelta(seconds=second)
    if sensor == "s-1":
        return moment.isoformat().replace("+00:00", "Z")  # ISO-8601 in UTC
    if sensor == "s-2":
        return moment.replace(tzinfo=None).isoformat()  # naive ISO-8601: read as UTC
    return moment.timestamp()  # epoch seconds


def transit_delay(sensor: str, second: int) -> float:
    """Seconds a reading spends on its way to the gateway."""
    if (sensor, second) in HELD_UP:
        return 7.0
    if (sensor, second) == SLOW:
        return 2.5
    return 0.4 * ((3 * second + 2 * SENSORS.index(sensor)) % 4)


def gateway_batches() -> list[list[dict[str, Any]]]:
    """The readings as the gateway forwards them: one batch per second of
    arrival, each in arrival order (not in the order they were measured)."""
    arrivals = sorted(
        (second + transit_delay(sensor, second), sensor, second)
        for second in range(SECONDS) for sensor in SENSORS
    )
    return [
        [{"sensor": sensor, "ts": device_stamp(sensor, second), "temperature": temperature(sensor, second)}
         for _, sensor, second in batch]
        for _, batch in groupby(arrivals, key=lambda arrival: int(arrival[0]))
    ]


def produce(readings: Stream, pace: float) -> int:
    """Append the gateway's batches; returns how many readings were sent."""
    sent = 0
    for batch in gateway_batches():
        readings.extend(batch)
        sent += len(batch)
        time.sleep(pace)  # the gateway's pace; not needed for correctness
    return sent


def mean(window: Window) -> dict[str, Any]:
    """One sensor's mean temperature over one window of event time."""
    temps = [d["temperature"] for d in window.data]
    assert window.start is not None and window.end is not None
    return {"sensor": window.key, "start": window.start.isoformat(), "end": window.end.isoformat(),
            "count": len(temps), "mean": round(sum(temps) / len(temps), 3)}


def to_alert(message: Message) -> dict[str, Any]:
    return {"level": "high", "sensor": message.data["sensor"], "start": message.data["start"],
            "mean": message.data["mean"]}


def start_means(prefix: str, url: str | None) -> PipelineHandle:
    """Pipeline 1: each sensor's mean per 5 s of event time."""
    return (stream(f"{prefix}.readings", url)
            .key_by("sensor")
            .event_time("ts", max_delay="2s")
            .fixed_time_window("5s")
            .map(mean)
            .sink(f"{prefix}.means")
            .start(consumer="means"))


def start_alerts(prefix: str, url: str | None) -> PipelineHandle:
    """Pipeline 2: an alert for every mean above the threshold."""
    return (stream(f"{prefix}.means", url)
            .filter(lambda m: m.data["mean"] > THRESHOLD)
            .map(to_alert)
            .sink(f"{prefix}.alerts")
            .start(consumer="alerts"))


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--url", default=None, help="store URL (default: the embedded SQLite store)")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds between the gateway's batches")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    prefix = f"sensors-{uuid.uuid4().hex[:8]}"  # a fresh set of streams for each run
    names = ("readings", "means", "alerts", "readings.late", "readings.dead")
    readings, means, alerts, late, dead = (stream(f"{prefix}.{name}", args.url) for name in names)

    handles = [start_means(prefix, args.url), start_alerts(prefix, args.url)]
    sent = produce(readings, args.pace)

    # Every reading ends up in a mean, in the late stream or in the dead-letter stream; the
    # last windows close once the stream has been quiet for a second (event_time's idle).
    def accounted() -> int:
        return sum(int(m.data["count"]) for m in means.read()) + late.count() + dead.count()

    ok = wait_for(lambda: accounted() == sent, args.timeout)
    expected_alerts = sum(1 for m in means.read() if m.data["mean"] > THRESHOLD)
    ok = wait_for(lambda: alerts.count() == expected_alerts, args.timeout) and ok
    for handle in handles:
        handle.stop(timeout=10)
        ok = ok and handle.error is None

    windowed = accounted() - late.count() - dead.count()
    print(f"readings: {sent}, windowed: {windowed}, late: {late.count()}, dead: {dead.count()}, "
          f"means: {means.count()}, alerts: {alerts.count()}")
    for name, source in (("mean", means), ("ALERT", alerts)):
        for message in source.read():
            print(name, json.dumps(message.data, sort_keys=True))
    for message in late.read():
        print("LATE", json.dumps(message.data, sort_keys=True))
    for message in dead.read():
        print("DEAD", message.data["error"])

    readings.forget("means")  # drops its window journal too
    for s in (readings, means, alerts, late, dead):
        s.delete()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
