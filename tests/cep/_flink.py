"""Shared helpers for the ports of Apache Flink's CEP NFA tests (``test_flink_*.py``).

How a Flink case maps onto ``Pattern.evaluate``:

- Flink's ``Event(id, name, price)`` is a plain dict ``{"id", "name", "price"}``;
  :func:`event` builds one, :func:`records` stamps events with the record timestamp
  as a ``ts`` field (Flink's milliseconds read as seconds).
- Flink's ``NFATestHarness`` advances time to each record's timestamp before it
  processes the record and never past the last one, so :func:`run` evaluates with
  ``time="ts"`` and ``end=`` the last record's timestamp: no end-of-input flush
  that Flink would not do.
- Records without a timestamp in Flink (all at the same instant), and records whose
  timestamps go backwards in a case without ``within`` (Flink feeds them in list
  order regardless), go through :func:`run_in_list_order`: the list index is the
  time, which keeps Flink's processing order.
- Flink compares the matches as a multiset of flattened event lists
  (``NFATestUtilities.comparePatterns``); :func:`assert_matches` flattens each match
  in pattern order and compares the sorted lists. An event is identified, as Flink's
  ``Event.equals`` does, by its name, price and id (never by ``ts``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from minibatch_rx.cep import Evaluation, Pattern

__all__ = [
    "Event",
    "assert_matches",
    "event",
    "flat",
    "name_contains",
    "name_is",
    "price_is",
    "records",
    "run",
    "run_in_list_order",
]

Event = dict[str, Any]
"""A Flink ``Event`` as a payload dict (plus ``ts`` once stamped)."""

EventKey = tuple[str, float, int]


def event(id_: int, name: str, price: float) -> Event:
    """Flink's ``new Event(id, name, price)``."""
    return {"id": id_, "name": name, "price": float(price)}


def records(*stamped: tuple[Event, int]) -> list[Event]:
    """Flink's ``new StreamRecord<>(event, ts)`` list: copies of the events with ``ts`` set."""
    return [{**e, "ts": ts} for e, ts in stamped]


def name_is(name: str) -> Callable[[Event], bool]:
    """Condition ``value.getName().equals(name)``."""

    def condition(e: Event) -> bool:
        return bool(e["name"] == name)

    return condition


def name_contains(part: str) -> Callable[[Event], bool]:
    """Condition ``value.getName().contains(part)``."""

    def condition(e: Event) -> bool:
        return part in e["name"]

    return condition


def price_is(price: float) -> Callable[[Event], bool]:
    """Condition ``value.getPrice() == price``."""

    def condition(e: Event) -> bool:
        return bool(e["price"] == price)

    return condition


def run(pattern: Pattern[Event], stamped: Sequence[Event]) -> Evaluation[Event]:
    """Evaluate as Flink's harness feeds records: event time from ``ts``, no advance past the last."""
    return pattern.evaluate(list(stamped), time="ts", end=stamped[-1]["ts"])


def run_in_list_order(pattern: Pattern[Event], events: Sequence[Event]) -> Evaluation[Event]:
    """Evaluate in list order (the index is the time), stopping at the last event."""
    return pattern.evaluate(list(events), end=len(events) - 1)


def _key(e: Mapping[str, Any]) -> EventKey:
    return (str(e["name"]), float(e["price"]), int(e["id"]))


def flat(match: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[EventKey, ...]:
    """One match as the concatenation of its steps' events, in pattern order."""
    return tuple(_key(e) for step in match for e in match[step])


def assert_matches(result: Evaluation[Event], expected: Sequence[Sequence[Event]]) -> None:
    """The matches equal ``expected`` as a multiset of flattened event lists."""
    got = sorted(flat(m) for m in result.matches)
    want = sorted(tuple(_key(e) for e in lst) for lst in expected)
    assert got == want
