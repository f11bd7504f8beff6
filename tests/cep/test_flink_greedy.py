"""Ports of Apache Flink's ``GreedyITCase`` (``greedy()`` loops).

Same input and same expected matches as each Flink case (current Flink, where a
greedy loop may end the pattern); see ``_flink`` for how records, time and the
comparison map onto ``Pattern.evaluate``.

``testGreedyZeroOrMoreBeforeGroupPattern`` (a group pattern) is ported with the
other group cases, in ``test_flink_group.py``.
"""

from __future__ import annotations

from cep._flink import Event, assert_matches, event, name_is, records, run
from minibatch_rx.cep import Pattern


def _price_above_3(e: Event) -> bool:
    """Flink's until condition here: ``value.getPrice() > 3.0``."""
    return bool(e["price"] > 3.0)


def _c_loop_d(*, optional: bool, until: bool = False) -> Pattern[Event]:
    """``c a* d`` (``optional``) or ``c a+ d``, the loop greedy, optionally with the until."""
    loop = Pattern.begin("start").where(name_is("c")).followed_by("middle").where(name_is("a")).one_or_more()
    if optional:
        loop = loop.optional()
    loop = loop.greedy()
    if until:
        loop = loop.until(_price_above_3)
    return loop.followed_by("end").where(name_is("d"))


def test_greedy_zero_or_more() -> None:
    """Ports GreedyITCase.testGreedyZeroOrMore."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0)
    a3, d = event(43, "a", 2.0), event(44, "d", 3.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (a3, 4), (d, 5))
    assert_matches(run(_c_loop_d(optional=True), recs), [[c, a1, a2, a3, d]])


def test_greedy_zero_or_more_in_between() -> None:
    """Ports GreedyITCase.testGreedyZeroOrMoreInBetween."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0)
    a3, d = event(43, "a", 2.0), event(44, "d", 3.0)
    dummy = event(1, "dummy", 1111)
    recs = records((c, 1), (dummy, 2), (a1, 3), (dummy, 4), (a2, 5), (dummy, 6), (a3, 7), (d, 8))
    assert_matches(run(_c_loop_d(optional=True), recs), [[c, a1, a2, a3, d]])


def test_greedy_zero_or_more_with_dummy_events_after_quantifier() -> None:
    """Ports GreedyITCase.testGreedyZeroOrMoreWithDummyEventsAfterQuantifier."""
    c, a1, a2, d = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0), event(44, "d", 3.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (event(43, "dummy", 2.0), 4), (d, 5))
    assert_matches(run(_c_loop_d(optional=True), recs), [[c, a1, a2, d]])


def test_greedy_zero_or_more_with_dummy_events_before_quantifier() -> None:
    """Ports GreedyITCase.testGreedyZeroOrMoreWithDummyEventsBeforeQuantifier."""
    c, d = event(40, "c", 1.0), event(44, "d", 3.0)
    recs = records((c, 1), (event(43, "dummy", 2.0), 2), (d, 5))
    assert_matches(run(_c_loop_d(optional=True), recs), [[c, d]])


def test_greedy_until_zero_or_more_with_dummy_events_after_quantifier() -> None:
    """Ports GreedyITCase.testGreedyUntilZeroOrMoreWithDummyEventsAfterQuantifier."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    a3, d = event(43, "a", 3.0), event(45, "d", 3.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (a3, 4), (event(44, "a", 4.0), 5), (d, 6))
    assert_matches(run(_c_loop_d(optional=True, until=True), recs), [[c, a1, a2, a3, d]])


def test_greedy_until_with_dummy_events_before_quantifier() -> None:
    """Ports GreedyITCase.testGreedyUntilWithDummyEventsBeforeQuantifier."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    a3, d = event(43, "a", 3.0), event(45, "d", 3.0)
    recs = records((c, 1), (event(44, "a", 4.0), 2), (a1, 3), (a2, 4), (a3, 5), (d, 6))
    assert_matches(run(_c_loop_d(optional=True, until=True), recs), [[c, d]])


def test_greedy_one_or_more() -> None:
    """Ports GreedyITCase.testGreedyOneOrMore."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0)
    a3, d = event(43, "a", 2.0), event(44, "d", 3.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (a3, 4), (d, 5))
    assert_matches(run(_c_loop_d(optional=False), recs), [[c, a1, a2, a3, d]])


def test_greedy_one_or_more_in_between() -> None:
    """Ports GreedyITCase.testGreedyOneOrMoreInBetween."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0)
    a3, d = event(43, "a", 2.0), event(44, "d", 3.0)
    dummy = event(1, "dummy", 1111)
    recs = records((c, 1), (dummy, 2), (a1, 3), (dummy, 4), (a2, 5), (dummy, 6), (a3, 7), (d, 8))
    assert_matches(run(_c_loop_d(optional=False), recs), [[c, a1, a2, a3, d]])


def test_greedy_one_or_more_with_dummy_events_after_quantifier() -> None:
    """Ports GreedyITCase.testGreedyOneOrMoreWithDummyEventsAfterQuantifier."""
    c, a1, a2, d = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0), event(44, "d", 3.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (event(43, "dummy", 2.0), 4), (d, 5))
    assert_matches(run(_c_loop_d(optional=False), recs), [[c, a1, a2, d]])


def test_greedy_one_or_more_with_dummy_events_before_quantifier() -> None:
    """Ports GreedyITCase.testGreedyOneOrMoreWithDummyEventsBeforeQuantifier."""
    c, d = event(40, "c", 1.0), event(44, "d", 3.0)
    recs = records((c, 1), (event(43, "dummy", 2.0), 2), (d, 5))
    assert_matches(run(_c_loop_d(optional=False), recs), [])


def test_greedy_until_one_or_more_with_dummy_events_after_quantifier() -> None:
    """Ports GreedyITCase.testGreedyUntilOneOrMoreWithDummyEventsAfterQuantifier."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    a3, d = event(43, "a", 3.0), event(45, "d", 3.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (a3, 4), (event(44, "a", 4.0), 5), (d, 6))
    assert_matches(run(_c_loop_d(optional=False, until=True), recs), [[c, a1, a2, a3, d]])


def test_greedy_until_one_or_more_with_dummy_events_before_quantifier() -> None:
    """Ports GreedyITCase.testGreedyUntilOneOrMoreWithDummyEventsBeforeQuantifier."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    a3, d = event(43, "a", 3.0), event(45, "d", 3.0)
    recs = records((c, 1), (event(44, "a", 4.0), 2), (a1, 3), (a2, 4), (a3, 5), (d, 6))
    assert_matches(run(_c_loop_d(optional=False, until=True), recs), [])


def _c_then_greedy_a_at_end(*, consecutive: bool) -> Pattern[Event]:
    """``c a*`` with the greedy loop ending the pattern."""
    loop = Pattern.begin("start").where(name_is("c")).followed_by("end").where(name_is("a")).one_or_more()
    loop = loop.optional()
    if consecutive:
        loop = loop.consecutive()
    return loop.greedy()


def test_end_with_zero_or_more_greedy() -> None:
    """Ports GreedyITCase.testEndWithZeroOrMoreGreedy."""
    c, a1, a2, a3 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0), event(43, "a", 2.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (event(44, "dummy", 2.0), 4), (a3, 5))
    result = run(_c_then_greedy_a_at_end(consecutive=False), recs)
    assert_matches(result, [[c], [c, a1], [c, a1, a2], [c, a1, a2, a3]])


def test_end_with_zero_or_more_consecutive_greedy() -> None:
    """Ports GreedyITCase.testEndWithZeroOrMoreConsecutiveGreedy."""
    c, a1, a2, a3 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0), event(43, "a", 2.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (event(44, "dummy", 2.0), 4), (a3, 5))
    result = run(_c_then_greedy_a_at_end(consecutive=True), recs)
    assert_matches(result, [[c], [c, a1], [c, a1, a2]])


def test_end_with_greedy_times_range() -> None:
    """Ports GreedyITCase.testEndWithGreedyTimesRange."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0)
    a3, a4 = event(43, "a", 2.0), event(44, "a", 2.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (a3, 4), (a4, 5), (event(44, "dummy", 2.0), 6))
    pattern = (
        Pattern.begin("start").where(name_is("c")).followed_by("end").where(name_is("a")).times(2, 5).greedy()
    )
    assert_matches(run(pattern, recs), [[c, a1, a2], [c, a1, a2, a3], [c, a1, a2, a3, a4]])


def test_greedy_times_range() -> None:
    """Ports GreedyITCase.testGreedyTimesRange."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0)
    a3, a4, d = event(43, "a", 2.0), event(44, "a", 2.0), event(45, "d", 2.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (a3, 4), (a4, 5), (d, 6))
    pattern = (
        Pattern.begin("start")
        .where(name_is("c"))
        .followed_by("middle")
        .where(name_is("a"))
        .times(2, 5)
        .greedy()
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [[c, a1, a2, a3, a4, d]])
