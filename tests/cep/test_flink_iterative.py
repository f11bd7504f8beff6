"""Conformance scenarios ported from Apache Flink's ``IterativeConditionsITCase`` (flink-cep).

Iterative conditions look at the events a partial match already accepted: Flink's
``ctx.getEventsForPattern(name)`` is ``ctx.events(name)`` here. Same events, timestamps
(Flink's milliseconds read as seconds), patterns and expected matches as the Flink
cases; time is not advanced past the last event (``end=<last timestamp>``), as in
Flink's harness. An event is a dict with Flink's ``Event`` fields ``id``, ``name``,
``price`` plus ``ts``; events compare as Flink's ``Event.equals`` (id, name, price).
Flink compares only the events of each match (``compareMaps``), so we compare each
match's events, in step order, as a multiset.

Flink's ``SubEvent`` is an event with a ``volume`` field; ``subtype(SubEvent.class)`` is
the condition ``"volume" in e`` ANDed with the step's other conditions (Flink's
``SubtypeCondition``).

Every case of the Flink class is ported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from minibatch_rx.cep import Context, Evaluation, Pattern

Event = dict[str, Any]
Key = tuple[str, float, int]


def ev(id_: int, name: str, price: float, **extra: Any) -> Event:
    """A Flink ``Event(id, name, price)``; ``volume=...`` makes it a ``SubEvent``."""
    return {"id": id_, "name": name, "price": price, **extra}


def key(e: Mapping[str, Any]) -> Key:
    """What Flink's ``Event.equals`` compares (the timestamp is not part of it)."""
    return (e["name"], e["price"], e["id"])


def flat(match: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[Key, ...]:
    """A match's events, step after step in pattern order."""
    return tuple(key(e) for step in match for e in match[step])


def feed(pattern: Pattern[Any], stream: Sequence[tuple[Event, float]]) -> Evaluation[Any]:
    """Run ``pattern`` over ``(event, timestamp)`` records, as Flink's NFATestHarness does."""
    records = [{**e, "ts": ts} for e, ts in stream]
    return pattern.evaluate(records, time="ts", end=stream[-1][1])


def assert_matches(result: Evaluation[Any], expected: Sequence[Sequence[Event]]) -> None:
    """The matches' event lists equal ``expected`` as a multiset (Flink's compareMaps)."""
    actual = sorted(flat(m) for m in result.matches)
    wanted = sorted(tuple(key(e) for e in match) for match in expected)
    assert actual == wanted


def named(name: str) -> Callable[[Event], bool]:
    """Condition: the event's name is ``name``."""
    return lambda e: bool(e["name"] == name)


def is_sub(e: Event) -> bool:
    """Flink's ``subtype(SubEvent.class)``."""
    return "volume" in e


def price_sum(ctx: Context, step: str) -> float:
    """The summed price of the events the partial match accepted for ``step``."""
    return float(sum(e["price"] for e in ctx.events(step)))


S1 = ev(40, "start", 1.0)
S2 = ev(40, "start", 2.0)
S3 = ev(40, "start", 3.0)
S4 = ev(40, "start", 4.0)
M1 = ev(41, "foo1", 1.0, volume=10.0)
M2 = ev(42, "foo2", 2.0, volume=10.0)
M3 = ev(43, "foo3", 3.0, volume=10.0)
M4 = ev(43, "foo4", 1.0, volume=10.0)
NEXT_ONE = ev(44, "next-one", 1.0)
END = ev(46, "end", 1.0)


def middle_under_five(value: Event, ctx: Context) -> bool:
    """Flink's MySubeventIterCondition: a "foo" event while the middle prices stay < 5."""
    if not value["name"].startswith("foo"):
        return False
    return bool(price_sum(ctx, "middle") + value["price"] < 5.0)


def start_under_five(value: Event, ctx: Context) -> bool:
    """Flink's MyEventIterCondition: a "start" event while the start prices stay < 5."""
    if value["name"] != "start":
        return False
    return bool(price_sum(ctx, "start") + value["price"] < 5.0)


def end_after_two(value: Event, ctx: Context) -> bool:
    """An "end" event once the start prices reach 2."""
    return bool(value["name"] == "end") and price_sum(ctx, "start") >= 2.0


def _branching(combinations: bool) -> Evaluation[Any]:
    middle = (
        Pattern.begin("start")
        .where(named("start"))
        .followed_by("middle")
        .where(is_sub)
        .where(middle_under_five)
        .one_or_more()
    )
    if combinations:
        middle = middle.allow_combinations()
    p = middle.followed_by("end").where(named("end"))
    stream = [
        (S1, 1),
        (M1, 2),
        (M2, 3),
        (S2, 4),
        (M3, 5),
        (M4, 5),
        (NEXT_ONE, 6),
        (END, 8),
    ]
    return feed(p, stream)


def test_iterative_with_branching_pattern_eager() -> None:
    """Ports IterativeConditionsITCase.testIterativeWithBranchingPatternEager."""
    assert_matches(
        _branching(False),
        [
            [S1, M1, M2, M4, END],
            [S1, M1, M2, END],
            [S1, M1, END],
            [S2, M3, M4, END],
            [S2, M3, END],
        ],
    )


def test_iterative_with_branching_pattern_combinations() -> None:
    """Ports IterativeConditionsITCase.testIterativeWithBranchingPatternCombinations."""
    assert_matches(
        _branching(True),
        [
            [S1, M1, M2, M4, END],
            [S1, M1, M2, END],
            [S1, M1, M3, END],
            [S2, M3, M4, END],
            [S1, M1, M4, END],
            [S1, M1, END],
            [S2, M3, END],
        ],
    )


def _looping_starting(combinations: bool) -> Evaluation[Any]:
    start = Pattern.begin("start").where(start_under_five).one_or_more()
    if combinations:
        start = start.allow_combinations()
    p = start.optional().followed_by("end").where(named("end"))
    return feed(p, [(S1, 1), (S2, 2), (S3, 3), (END, 4)])


def test_iterative_with_looping_starting_eager() -> None:
    """Ports IterativeConditionsITCase.testIterativeWithLoopingStartingEager."""
    assert_matches(
        _looping_starting(False),
        [[S1, S2, END], [S1, END], [S2, END], [S3, END], [END]],
    )


def test_iterative_with_looping_starting_combination() -> None:
    """Ports IterativeConditionsITCase.testIterativeWithLoopingStartingCombination."""
    assert_matches(
        _looping_starting(True),
        [[S1, S2, END], [S1, S3, END], [S1, END], [S2, END], [S3, END], [END]],
    )


def test_iterative_with_prev_pattern_dependency() -> None:
    """Ports IterativeConditionsITCase.testIterativeWithPrevPatternDependency."""
    p = Pattern.begin("start").where(named("start")).one_or_more().followed_by("end").where(end_after_two)
    result = feed(p, [(S1, 1), (S2, 2), (END, 4)])
    assert_matches(result, [[S1, S2, END], [S2, END]])


def test_iterative_with_abac_pattern() -> None:
    """Ports IterativeConditionsITCase.testIterativeWithABACPattern."""

    def middle2(value: Event, ctx: Context) -> bool:
        if value["name"] != "start":
            return False
        return bool(price_sum(ctx, "middle2") + value["price"] <= 5.0)

    p = (
        Pattern.begin("start")
        .where(named("start"))
        .followed_by_any("middle1")
        .where(is_sub)
        .where(lambda e: e["name"].startswith("foo"))
        .followed_by("middle2")
        .where(middle2)
        .one_or_more()
        .followed_by("end")
        .where(named("end"))
    )
    stream = [
        (S1, 1),
        (M1, 2),
        (S2, 2),
        (S3, 2),
        (M2, 2),
        (S4, 2),
        (M3, 2),
        (M4, 2),
        (END, 4),
    ]
    assert_matches(
        feed(p, stream),
        [
            [S1, M1, S2, S3, END],
            [S1, M1, S2, END],
            [S1, M2, S4, END],
            [S2, M2, S4, END],
            [S3, M2, S4, END],
        ],
    )


def test_iterative_with_prev_pattern_dependency_after_branching() -> None:
    """Ports IterativeConditionsITCase.testIterativeWithPrevPatternDependencyAfterBranching."""
    p = (
        Pattern.begin("start")
        .where(named("start"))
        .one_or_more()
        .followed_by_any("middle1")
        .where(is_sub)
        .where(lambda e: e["name"].startswith("foo"))
        .followed_by_any("end")
        .where(end_after_two)
    )
    stream = [(S1, 1), (S2, 2), (M1, 4), (S3, 5), (M2, 6), (END, 7)]
    assert_matches(
        feed(p, stream),
        [
            [S1, S2, M1, END],
            [S2, M1, END],
            [S1, S2, M2, END],
            [S1, S2, S3, M2, END],
            [S2, S3, M2, END],
            [S2, M2, END],
            [S3, M2, END],
        ],
    )
