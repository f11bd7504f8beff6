"""Matches, and evaluating a pattern over a finite list of events."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from minibatch_rx.cep.nfa import Context, Partial, path_events
from minibatch_rx.cep.pattern import Pattern
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.windows.clocks import BadRecordError, event_seconds, field_reader

T = TypeVar("T")

__all__ = ["Context", "Evaluation", "Match", "evaluate"]


class Match(dict[str, list[T]], Generic[T]):
    """A match: step name -> the events it took, in pattern order.

    A ``Match`` is a dict (so it compares equal to one and stores as JSON), with
    the key it was found under, the event-time span it covers (``start``: its
    first event's time, ``end``: its last event's), and for a timed-out partial
    match the time it ran out (``timed_out_at``). Steps that took no event
    (optional ones) are absent.

    >>> m = Match({'a': [1], 'b': [2, 3]}, key='k', start=0.0, end=2.0)
    >>> m == {'a': [1], 'b': [2, 3]}, m.key, m.events
    (True, 'k', [1, 2, 3])
    """

    __slots__ = ("end", "key", "start", "timed_out_at")

    def __init__(
        self,
        steps: dict[str, list[T]],
        *,
        key: Any = None,
        start: float | None = None,
        end: float | None = None,
        timed_out_at: float | None = None,
    ) -> None:
        super().__init__(steps)
        self.key = key
        self.start = start
        self.end = end
        self.timed_out_at = timed_out_at

    @property
    def events(self) -> list[T]:
        """All the events of the match, in pattern order."""
        return [event for taken in self.values() for event in taken]

    def as_payload(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{'key', 'start', 'end', 'steps'}`` (and ``timed_out_at``)."""
        payload: dict[str, Any] = {
            "key": self.key,
            "start": self.start,
            "end": self.end,
            "steps": dict(self),
        }
        if self.timed_out_at is not None:
            payload["timed_out_at"] = self.timed_out_at
        return payload

    def __repr__(self) -> str:
        extra = f", key={self.key!r}" if self.key is not None else ""
        if self.timed_out_at is not None:
            extra += f", timed_out_at={self.timed_out_at!r}"
        return f"Match({dict.__repr__(self)}{extra})"

    def __reduce__(self) -> Any:
        return (
            _rebuild,
            (dict(self), self.key, self.start, self.end, self.timed_out_at),
        )


def _rebuild(steps: dict[str, Any], key: Any, start: Any, end: Any, timed_out_at: Any) -> Match[Any]:
    return Match(steps, key=key, start=start, end=end, timed_out_at=timed_out_at)


def to_match(
    names: tuple[str, ...],
    partial: Partial,
    key: Any = None,
    timed_out_at: float | None = None,
    value: Callable[[Any], Any] | None = None,
) -> Match[Any]:
    """The :class:`Match` of a completed (or timed-out) partial match."""
    taken = path_events(partial.path)
    by_step: dict[str, list[Any]] = {}
    for step, _, _, event, _, _ in taken:
        by_step.setdefault(step, []).append(event if value is None else value(event))
    ordered = {name: by_step[name] for name in names if name in by_step}
    start = taken[0][2] if taken else None
    end = taken[-1][2] if taken else None
    return Match(ordered, key=key, start=start, end=end, timed_out_at=timed_out_at)


class Evaluation(Generic[T]):
    """The result of :func:`evaluate`: ``matches`` and ``timeouts``, lists of :class:`Match`."""

    __slots__ = ("matches", "timeouts")

    def __init__(self, matches: list[Match[T]], timeouts: list[Match[T]]) -> None:
        self.matches = matches
        self.timeouts = timeouts

    def __repr__(self) -> str:
        return f"Evaluation(matches={self.matches!r}, timeouts={self.timeouts!r})"


def evaluate(
    pattern: Pattern[T],
    events: Sequence[T],
    *,
    time: str | Callable[[T], Any] | None = None,
    end: float | None = None,
) -> Evaluation[T]:
    """Run ``pattern`` over ``events`` and return its matches and timeouts.

    ``time`` reads an event's time: a field name or a callable giving epoch seconds,
    ISO-8601 text or a datetime; by default an event's index in the list is its time
    (0, 1, 2, ...). Events are matched in time order (equal times keep list order),
    as a pipeline in event time does once the watermark passes them. After the last
    event time moves to ``end`` (default: past everything), so absences that held
    become matches and partial matches with ``within`` time out.

    >>> paid = lambda e, ctx: e['type'] == 'payment' and e['id'] == ctx.events('order')[0]['id']
    >>> p = (Pattern.begin('order').where(lambda e: e['type'] == 'order')
    ...      .not_followed_by('paid').where(paid)
    ...      .within(900))
    >>> r = p.evaluate([{'type': 'order', 'id': 1, 't': 0}, {'type': 'order', 'id': 2, 't': 10},
    ...                 {'type': 'payment', 'id': 2, 't': 20}], time='t')
    >>> [m['order'][0]['id'] for m in r.matches]
    [1]
    """
    if isinstance(events, (str, bytes)) or not isinstance(events, Sequence):
        raise InvalidArgumentError(f"evaluate() needs a list of events, got {type(events).__name__}")
    auto = pattern.compiled()
    if end is not None and (isinstance(end, bool) or not isinstance(end, (int, float)) or math.isnan(end)):
        raise InvalidArgumentError(f"end must be a number of seconds or None, got {end!r}")
    read = None if time is None else field_reader(time, "time")
    timed: list[tuple[float, int, T]] = []
    for index, event in enumerate(events):
        if read is None:
            t = float(index)
        else:
            try:
                t = event_seconds(read(event))
            except BadRecordError as exc:
                raise InvalidArgumentError(f"event {index}: {exc}") from None
        timed.append((t, index, event))
    timed.sort(key=lambda item: (item[0], item[1]))
    run = auto.run()
    names = auto.names
    matches: list[Match[T]] = []
    timeouts: list[Match[T]] = []
    window = auto.window

    def advance(to: float) -> None:
        done, lapsed = run.advance(to)
        matches.extend(to_match(names, p) for p in done)
        for p in lapsed:
            timeouts.append(to_match(names, p, timed_out_at=p.start_ts + (window or 0.0)))

    for eid, (t, _, event) in enumerate(timed):
        advance(t)
        matches.extend(to_match(names, p) for p in run.process(event, t, eid))
    advance(math.inf if end is None else float(end))
    return Evaluation(matches, timeouts)
