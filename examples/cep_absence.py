"""Unpaid orders: an order not followed by its payment within 15 minutes.

    orders ──key_by(order).event_time(ts, 30s).match(unpaid)──▶ unpaid

    python examples/cep_absence.py                # embedded SQLite default
    python examples/cep_absence.py --url mongodb://localhost/shop

A shop writes an event when an order is placed and one when it is paid, each
stamped with the time it happened (``ts``). The pattern, per order: ``placed``,
then no ``paid`` within 15 minutes (``not_followed_by`` at the end of a pattern,
bounded by ``within``). Such a match is an absence: it is emitted when the 15
minutes have passed, that is when the watermark (the latest event time minus
``max_delay``, shared by every key) passes the deadline. Here later events of
other orders move the watermark, so the example takes an hour of shop time and
a second of yours. An order whose 15 minutes have not run out when the events
stop is still open: its alert would come once the watermark passes its deadline
(after ``idle``, the watermark also advances with the clock on a quiet stream,
so a real consumer reports it 15 minutes later).

A real consumer runs until stopped. This one stops once it has as many alerts
as :meth:`Pattern.evaluate` finds in the same events (per order, up to the
watermark the last event gives), then prints them.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from minibatch_rx import stream
from minibatch_rx.cep import Match, Pattern

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MAX_DELAY = 30.0

# (order, what happened, minutes:seconds after 09:00), in the order the events reach the stream
EVENTS = [
    ("o-1", "placed", "00:00"),
    ("o-2", "placed", "02:00"),
    ("o-1", "paid", "05:00"),  # paid after 5 minutes
    ("o-3", "placed", "10:00"),
    ("o-4", "placed", "20:00"),  # o-2's 15 minutes passed at 17:00; this event moves the watermark past them
    ("o-3", "paid", "26:00"),  # 16 minutes after the order: too late, o-3 was reported at 25:00
    ("o-4", "paid", "34:59"),  # just in time
    ("o-5", "placed", "40:00"),
    ("o-6", "placed", "52:00"),
    ("o-6", "paid", "53:00"),
    ("o-7", "placed", "56:00"),  # still open at the end: due at 71:00
    ("o-8", "placed", "58:00"),
    ("o-8", "paid", "59:30"),
]


def placed(event: Mapping[str, Any]) -> bool:
    """An order placed."""
    return bool(event["type"] == "placed")


def paid(event: Mapping[str, Any]) -> bool:
    """An order paid."""
    return bool(event["type"] == "paid")


UNPAID: Pattern[dict[str, Any]] = (
    Pattern.begin("placed").where(placed).not_followed_by("paid").where(paid).within("15m")
)


def order_events() -> list[dict[str, Any]]:
    """The shop's events, in the order they reach the stream."""
    out = []
    for order, kind, at in EVENTS:
        minutes, seconds = map(int, at.split(":"))
        moment = START + timedelta(minutes=minutes, seconds=seconds)
        out.append({"order": order, "type": kind, "ts": moment.isoformat().replace("+00:00", "Z")})
    return out


def clock(ts: str | float) -> str:
    """ISO-8601 text or epoch seconds as HH:MM:SS."""
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).strftime("%H:%M:%S")
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def unpaid(match: Match[dict[str, Any]]) -> dict[str, Any]:
    """What the unpaid stream gets for one absence: the order and its deadline."""
    assert match.start is not None and UNPAID.window is not None
    return {"order": match.key, "placed": match["placed"][0]["ts"], "due": match.start + UNPAID.window}


def offline(events: list[dict[str, Any]]) -> int:
    """How many absences UNPAID finds in the events, order by order, once the
    watermark reaches what the last event gives."""
    end = max(datetime.fromisoformat(e["ts"]).timestamp() for e in events) - MAX_DELAY
    found = 0
    for order in sorted({e["order"] for e in events}):
        found += len(UNPAID.evaluate([e for e in events if e["order"] == order], time="ts", end=end).matches)
    return found


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def main(argv: list[str] | None = None) -> int:
    """Run the unpaid-order pipeline over the shop's events and print its alerts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--url", default=None, help="store URL (default: MINIBATCH_URL, else embedded SQLite)"
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    prefix = f"shop-{uuid.uuid4().hex[:8]}"  # a fresh set of streams for each run
    orders, alerts = (stream(f"{prefix}.{name}", args.url) for name in ("orders", "unpaid"))

    handle = (
        orders.key_by("order")
        .event_time("ts", max_delay=MAX_DELAY)
        .match(UNPAID)
        .map(unpaid)
        .sink(alerts)
        .start(consumer="unpaid")
    )
    events = order_events()
    orders.extend(events)

    expected = offline(events)
    ok = wait_for(lambda: alerts.count() >= expected, args.timeout)
    ok = handle.stop(timeout=10) and handle.error is None and ok

    found = sorted((m.data for m in alerts.read()), key=lambda a: (a["due"], a["order"]))
    open_orders = sorted(
        {e["order"] for e in events if placed(e)}
        - {e["order"] for e in events if paid(e)}
        - {a["order"] for a in found}
    )
    print(
        f"events: {len(events)}, unpaid after 15 minutes: {len(found)}, still open: {', '.join(open_orders)}"
    )
    for a in found:
        print(f"UNPAID {a['order']}: placed at {clock(a['placed'])}, not paid by {clock(a['due'])}")

    orders.forget("unpaid")  # drops its checkpoint too
    for s in (orders, alerts, stream(f"{prefix}.orders.timeouts", args.url)):
        s.delete()
    return 0 if ok and len(found) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
