"""Fraud alerts: three failed logins in a row, then a success, within a minute.

    logins ──key_by(user).event_time(ts, 2s).match(fraud)──▶ alerts

    python examples/cep_fraud.py                  # embedded SQLite default
    python examples/cep_fraud.py --url mongodb://localhost/fraud

A login service writes one event per login attempt, stamped with the time it
happened (``ts``). The pattern, per user and on that time: three failed
attempts in a row, directly followed by a successful one, all within a minute
(someone guessed the password). The events reach the stream a little out of
order; event time puts them back in order. One arrives more than ``max_delay``
behind the others and goes to the late stream instead. After a match, the
search goes on after its last event (``AfterMatch.skip_past_last_event``), so
a burst of failures raises one alert.

A real consumer runs until stopped. This one stops once it has as many alerts
as :meth:`Pattern.evaluate` finds in the same logins (per user, as the pipeline
does), then prints them.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from minibatch_rx import stream
from minibatch_rx.cep import AfterMatch, Match, Pattern

START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)

# (user, seconds after 10:00, succeeded?) in the order the events reach the stream
ATTEMPTS = [
    ("alice", 0, False),
    ("bob", 5, False),
    ("alice", 10, False),
    ("alice", 20, False),
    ("alice", 31, True),  # reaches the stream before the failure at 30: event time reorders them
    ("alice", 30, False),
    ("bob", 40, False),
    ("carol", 45, False),
    ("carol", 50, False),
    ("carol", 55, True),  # only two failures before it: no alert
    ("bob", 70, False),
    ("bob", 75, True),  # three failures, but over 65 s: no alert
    ("carol", 80, False),
    ("carol", 85, False),
    ("carol", 88, False),
    ("carol", 90, False),
    ("carol", 95, True),
    ("alice", 60, False),  # 35 s behind the latest event: late
    ("dave", 120, False),
]


def failed(login: dict[str, Any]) -> bool:
    """A failed login attempt."""
    return login["ok"] is False


def succeeded(login: dict[str, Any]) -> bool:
    """A successful login."""
    return login["ok"] is True


FRAUD: Pattern[dict[str, Any]] = (
    Pattern.begin("failures", after_match=AfterMatch.skip_past_last_event())
    .where(failed)
    .times(3)
    .consecutive()
    .next("success")
    .where(succeeded)
    .within("1m")
)


def logins() -> list[dict[str, Any]]:
    """The login events, in the order they reach the stream."""
    return [
        {"user": user, "ts": (START + timedelta(seconds=second)).isoformat(), "ok": ok}
        for user, second, ok in ATTEMPTS
    ]


def clock(ts: Any) -> str:
    """An ISO-8601 time (or epoch seconds) as HH:MM:SS."""
    moment = datetime.fromtimestamp(ts, UTC) if isinstance(ts, (int, float)) else datetime.fromisoformat(ts)
    return moment.strftime("%H:%M:%S")


def alert(match: Match[dict[str, Any]]) -> dict[str, Any]:
    """What the alerts stream gets for one match."""
    return {
        "user": match.key,
        "failures": [clock(e["ts"]) for e in match["failures"]],
        "success": clock(match["success"][0]["ts"]),
    }


def offline(events: list[dict[str, Any]]) -> list[Match[dict[str, Any]]]:
    """The matches of FRAUD in a list of events, user by user, as the pipeline keys them."""
    found: list[Match[dict[str, Any]]] = []
    for user in sorted({e["user"] for e in events}):
        found += FRAUD.evaluate([e for e in events if e["user"] == user], time="ts").matches
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
    """Run the fraud pipeline over the logins and print its alerts."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--url", default=None, help="store URL (default: MINIBATCH_URL, else embedded SQLite)"
    )
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    prefix = f"fraud-{uuid.uuid4().hex[:8]}"  # a fresh set of streams for each run
    source, alerts, late, timeouts = (
        stream(f"{prefix}.{name}", args.url) for name in ("logins", "alerts", "logins.late", "timeouts")
    )

    handle = (
        source.key_by("user")
        .event_time("ts", max_delay="2s")
        .match(FRAUD, timeouts=f"{prefix}.timeouts")  # default: "<name>.timeouts"
        .map(alert)
        .sink(alerts)
        .start(consumer="fraud")
    )
    events = logins()
    source.extend(events)

    expected = len(offline(events))
    ok = wait_for(lambda: alerts.count() >= expected, args.timeout)
    ok = handle.stop(timeout=10) and handle.error is None and ok

    found = sorted((m.data for m in alerts.read()), key=lambda a: (a["failures"][0], a["user"]))
    print(f"logins: {len(events)}, alerts: {len(found)}, late: {late.count()}")
    for a in found:
        print(f"ALERT {a['user']}: failed at {', '.join(a['failures'])}, then logged in at {a['success']}")
    for message in late.read():
        print(f"LATE {message.data['user']} {clock(message.data['ts'])}")

    source.forget("fraud")  # drops its checkpoint too
    for s in (source, alerts, late, timeouts):
        s.delete()
    return 0 if ok and len(found) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
