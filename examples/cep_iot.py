"""Fire alarms: a temperature rising three times in a row, then smoke, within 10 seconds.

    readings ──key_by(device).event_time(ts, 2s).match(fire)──▶ alarms
                                                        └─ timeouts ─▶ readings.timeouts

    python examples/cep_iot.py                    # embedded SQLite default
    python examples/cep_iot.py --url mongodb://localhost/iot

Four devices send temperature readings and smoke events, stamped with the
time they were measured (``ts``, epoch seconds). The pattern, per device: a
reading, then three readings each hotter than the one before (an iterative
condition: it compares a reading with the last one the partial match took,
``ctx.events(...)``), then smoke, all within 10 s. A partial match that runs
out of time goes to the timeouts stream; the example prints those that had
seen the three rises (hot, but no smoke).

A real consumer runs until stopped. This one stops once it has as many alarms
and such timeouts as :meth:`Pattern.evaluate` finds in the same readings (per
device, up to the watermark the last reading gives), then prints them.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from minibatch_rx import Stream, stream
from minibatch_rx.cep import AfterMatch, Context, Match, Pattern

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
MAX_DELAY = 2.0

# (device, seconds after 12:00, degrees Celsius or None for smoke), in arrival order
READINGS: list[tuple[str, float, float | None]] = [
    ("kitchen", 0, 20.0),
    ("server-room", 0, 30.0),
    ("hall", 0, 18.0),
    ("server-room", 1, 31.0),
    ("kitchen", 2, 21.5),
    ("server-room", 2, 30.5),  # a dip: the rise starts again from here
    ("server-room", 3, 31.0),
    ("kitchen", 4, 23.0),
    ("server-room", 4, 32.0),
    ("server-room", 5, 33.0),
    ("hall", 5, 18.0),
    ("kitchen", 6, 26.5),
    ("server-room", 7, None),
    ("kitchen", 9, None),  # reaches the stream before the reading of 8 s: event time reorders them
    ("kitchen", 8, 27.0),
    ("garage", 10, 40.0),
    ("hall", 10, 18.5),
    ("garage", 12, 41.0),
    ("garage", 14, 42.0),
    ("hall", 15, 18.5),
    ("garage", 16, 43.0),
    ("garage", 18, 43.0),
    ("hall", 20, 18.0),
    ("garage", 21, None),  # 11 s after the rise began: too late
    ("hall", 25, None),  # smoke without a rise (a toaster): no alarm
    ("hall", 30, 18.0),
]


def is_temperature(reading: Mapping[str, Any]) -> bool:
    """A temperature reading."""
    return bool(reading["kind"] == "temperature")


def is_smoke(reading: Mapping[str, Any]) -> bool:
    """A smoke event."""
    return bool(reading["kind"] == "smoke")


def hotter(reading: Mapping[str, Any], ctx: Context) -> bool:
    """Hotter than the last reading this partial match took (a rise, or the first one)."""
    previous = (ctx.events("rise") or ctx.events("first"))[-1]
    return bool(reading["celsius"] > previous["celsius"])


FIRE: Pattern[dict[str, Any]] = (
    Pattern.begin("first", after_match=AfterMatch.skip_past_last_event())
    .where(is_temperature)
    .next("rise")
    .where(is_temperature)
    .where(hotter)
    .times(3)
    .consecutive()
    .followed_by("smoke")
    .where(is_smoke)
    .within("10s")
)


def readings() -> list[dict[str, Any]]:
    """The readings, in the order they reach the stream."""
    out: list[dict[str, Any]] = []
    for device, second, celsius in READINGS:
        reading: dict[str, Any] = {"device": device, "ts": START + second}
        if celsius is None:
            reading["kind"] = "smoke"
        else:
            reading.update(kind="temperature", celsius=celsius)
        out.append(reading)
    return out


def clock(seconds: float) -> str:
    """Epoch seconds as HH:MM:SS."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


def alarm(match: Match[dict[str, Any]]) -> dict[str, Any]:
    """What the alarms stream gets for one match."""
    temperatures = [r["celsius"] for r in match["first"] + match["rise"]]
    return {
        "device": match.key,
        "from": match["first"][0]["ts"],
        "celsius": temperatures,
        "smoke": match["smoke"][0]["ts"],
    }


def three_rises(steps: Mapping[str, list[Any]]) -> bool:
    """Whether a partial match had taken its three rises (it waited for smoke)."""
    return len(steps.get("rise", [])) == 3


def offline(events: list[dict[str, Any]]) -> tuple[int, int]:
    """How many matches of FIRE, and timeouts with three rises, the readings hold,
    device by device, once the watermark reaches what the last reading gives."""
    end = max(e["ts"] for e in events) - MAX_DELAY
    matches = timeouts = 0
    for device in sorted({e["device"] for e in events}):
        result = FIRE.evaluate([e for e in events if e["device"] == device], time="ts", end=end)
        matches += len(result.matches)
        timeouts += sum(1 for m in result.timeouts if three_rises(m))
    return matches, timeouts


def hot_without_smoke(timeouts: Stream) -> list[dict[str, Any]]:
    """The timed-out partial matches that had seen three rises."""
    return [m.data for m in timeouts.read() if three_rises(m.data["steps"])]


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def main(argv: list[str] | None = None) -> int:
    """Run the fire-alarm pipeline over the readings and print its alarms and timeouts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--url", default=None, help="store URL (default: MINIBATCH_URL, else embedded SQLite)"
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    prefix = f"iot-{uuid.uuid4().hex[:8]}"  # a fresh set of streams for each run
    source, alarms, timeouts = (
        stream(f"{prefix}.{name}", args.url) for name in ("readings", "alarms", "readings.timeouts")
    )

    handle = (
        source.key_by("device")
        .event_time("ts", max_delay=MAX_DELAY)
        .match(FIRE)  # timeouts go to the stream "<name>.timeouts" by default
        .map(alarm)
        .sink(alarms)
        .start(consumer="fire")
    )
    events = readings()
    source.extend(events)

    expected = offline(events)
    ok = wait_for(
        lambda: alarms.count() >= expected[0] and len(hot_without_smoke(timeouts)) >= expected[1],
        args.timeout,
    )
    ok = handle.stop(timeout=10) and handle.error is None and ok

    found = sorted((m.data for m in alarms.read()), key=lambda a: (a["from"], a["device"]))
    hot = sorted(hot_without_smoke(timeouts), key=lambda t: (t["start"], t["key"]))
    print(f"readings: {len(events)}, alarms: {len(found)}, hot without smoke: {len(hot)}")
    for a in found:
        rise = " -> ".join(f"{c:.1f}" for c in a["celsius"])
        print(f"ALARM {a['device']}: {rise} C from {clock(a['from'])}, smoke at {clock(a['smoke'])}")
    for t in hot:
        rise = " -> ".join(f"{r['celsius']:.1f}" for r in t["steps"]["first"] + t["steps"]["rise"])
        print(
            f"TIMEOUT {t['key']}: {rise} C from {clock(t['start'])}, no smoke by {clock(t['timed_out_at'])}"
        )

    source.forget("fire")  # drops its checkpoint too
    for s in (source, alarms, timeouts):
        s.delete()
    return 0 if ok and (len(found), len(hot)) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
