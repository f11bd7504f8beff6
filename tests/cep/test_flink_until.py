"""Ports of Apache Flink's ``UntilConditionITCase`` (``until`` on loops).

Same input and same expected matches as each Flink case; see ``_flink`` for how
records, time and the comparison map onto ``Pattern.evaluate``. Flink's until
condition (and the ``end`` step's condition) is ``value.getPrice() == 5.0``.

Every case is ported. Left out of them: Flink's extra assertions on the NFA's
internal state after the input (``nfaState.getPartialMatches()`` holding a single
partial match at ``start``), which inspect internals the API does not expose.
"""

from __future__ import annotations

from cep._flink import Event, assert_matches, event, name_is, price_is, records, run
from minibatch_rx.cep import Context, Pattern

UNTIL = price_is(5.0)


def _c_then_middle(*, any_: bool = False) -> Pattern[Event]:
    start = Pattern.begin("start").where(name_is("c"))
    return (start.followed_by_any("middle") if any_ else start.followed_by("middle")).where(name_is("a"))


def _then_end(loop: Pattern[Event]) -> Pattern[Event]:
    return loop.followed_by("end").where(UNTIL)


def _input_with_middle3() -> tuple[list[Event], tuple[Event, ...]]:
    """c a(2) a(3) a(4) a(5, breaking) a(6, ignored) at 1, 3, 4, 5, 6, 7."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    m3, breaking, ignored = event(43, "a", 4.0), event(44, "a", 5.0), event(45, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (m3, 5), (breaking, 6), (ignored, 7))
    return recs, (start, m1, m2, m3, breaking)


def test_until_condition_followed_by_one_or_more() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByOneOrMore."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    breaking, ignored = event(44, "a", 5.0), event(45, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (breaking, 6), (ignored, 7))
    pattern = _then_end(_c_then_middle().one_or_more().until(UNTIL))
    assert_matches(run(pattern, recs), [[start, m1, m2, breaking], [start, m1, breaking]])


def test_until_condition_followed_by_one_or_more_combinations() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByOneOrMoreCombinations."""
    recs, (start, m1, m2, m3, breaking) = _input_with_middle3()
    pattern = _then_end(_c_then_middle().one_or_more().allow_combinations().until(UNTIL))
    assert_matches(
        run(pattern, recs),
        [
            [start, m1, m2, m3, breaking],
            [start, m1, m2, breaking],
            [start, m1, m3, breaking],
            [start, m1, breaking],
        ],
    )


def test_until_condition_followed_by_one_or_more_consecutive() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByOneOrMoreConsecutive."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    breaking, ignored = event(45, "a", 5.0), event(46, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (breaking, 7), (ignored, 8))
    pattern = _then_end(_c_then_middle().one_or_more().consecutive().until(UNTIL))
    assert_matches(run(pattern, recs), [[start, m1, m2, breaking], [start, m1, breaking]])


def test_until_condition_followed_by_one_or_more_consecutive2() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByOneOrMoreConsecutive2."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "b", 3.0)
    m3, breaking, ignored = event(43, "a", 4.0), event(45, "a", 5.0), event(46, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (m3, 5), (breaking, 7), (ignored, 8))
    pattern = _then_end(_c_then_middle().one_or_more().consecutive().until(UNTIL))
    assert_matches(run(pattern, recs), [[start, m1, breaking]])


def test_until_condition_followed_by_zero_or_more() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByZeroOrMore."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    breaking, ignored = event(44, "a", 5.0), event(45, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (breaking, 6), (ignored, 7))
    pattern = _then_end(_c_then_middle().one_or_more().optional().until(UNTIL))
    assert_matches(run(pattern, recs), [[start, m1, m2, breaking], [start, m1, breaking], [start, breaking]])


def test_until_condition_followed_by_zero_or_more_combinations() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByZeroOrMoreCombinations."""
    recs, (start, m1, m2, m3, breaking) = _input_with_middle3()
    pattern = _then_end(_c_then_middle().one_or_more().optional().allow_combinations().until(UNTIL))
    assert_matches(
        run(pattern, recs),
        [
            [start, m1, m2, m3, breaking],
            [start, m1, m2, breaking],
            [start, m1, m3, breaking],
            [start, m1, breaking],
            [start, breaking],
        ],
    )


def test_until_condition_followed_by_zero_or_more_consecutive() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByZeroOrMoreConsecutive."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    breaking, ignored = event(45, "a", 5.0), event(46, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (breaking, 7), (ignored, 8))
    pattern = _then_end(_c_then_middle().one_or_more().optional().consecutive().until(UNTIL))
    assert_matches(run(pattern, recs), [[start, m1, m2, breaking], [start, m1, breaking], [start, breaking]])


def _any_input() -> tuple[list[Event], tuple[Event, ...]]:
    """c a(2) a(3) a(5, breaking) a(6) at 1, 3, 4, 6, 7."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    breaking, m3 = event(44, "a", 5.0), event(45, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (breaking, 6), (m3, 7))
    return recs, (start, m1, m2, m3)


def test_until_condition_followed_by_any_one_or_more() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByAnyOneOrMore."""
    recs, (start, m1, m2, m3) = _any_input()
    pattern = _c_then_middle(any_=True).one_or_more().until(UNTIL)
    assert_matches(run(pattern, recs), [[start, m1, m2], [start, m1], [start, m2], [start, m3]])


def test_until_condition_followed_by_any_zero_or_more() -> None:
    """Ports UntilConditionITCase.testUntilConditionFollowedByAnyZeroOrMore."""
    recs, (start, m1, m2, m3) = _any_input()
    pattern = _c_then_middle(any_=True).one_or_more().optional().until(UNTIL)
    assert_matches(run(pattern, recs), [[start, m1, m2], [start, m1], [start, m2], [start, m3], [start]])


def _input_with_d() -> tuple[list[Event], tuple[Event, ...]]:
    """c a(2) a(3) d(1) a(5) a(6) at 1, 3, 4, 5, 6, 7."""
    start, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    m3, breaking, ignored = event(40, "d", 1.0), event(44, "a", 5.0), event(45, "a", 6.0)
    recs = records((start, 1), (m1, 3), (m2, 4), (m3, 5), (breaking, 6), (ignored, 7))
    return recs, (start, m1, m2, m3)


def test_until_condition_with_empty_where() -> None:
    """Ports UntilConditionITCase.testUntilConditionWithEmptyWhere."""
    recs, (start, m1, m2, m3) = _input_with_d()
    # No where() on "middle": it accepts every event.
    pattern = Pattern.begin("start").where(name_is("c")).followed_by("middle").one_or_more().until(UNTIL)
    assert_matches(run(pattern, recs), [[start, m1, m2, m3], [start, m1, m2], [start, m1]])


def _middle_prices_sum_to_6(e: Event, ctx: Context) -> bool:
    """Flink's iterative until: the prices of the events taken for ``middle`` sum to 6.0."""
    return bool(sum(m["price"] for m in ctx.events("middle")) == 6.0)


def test_iterative_until_condition_one_or_more() -> None:
    """Ports UntilConditionITCase.testIterativeUntilConditionOneOrMore."""
    recs, (start, m1, m2, m3) = _input_with_d()
    pattern = (
        Pattern.begin("start")
        .where(name_is("c"))
        .followed_by("middle")
        .one_or_more()
        .until(_middle_prices_sum_to_6)
    )
    assert_matches(run(pattern, recs), [[start, m1, m2, m3], [start, m1, m2], [start, m1]])


def test_iterative_until_condition_zero_or_more() -> None:
    """Ports UntilConditionITCase.testIterativeUntilConditionZeroOrMore."""
    recs, (start, m1, m2, m3) = _input_with_d()
    pattern = (
        Pattern.begin("start")
        .where(name_is("c"))
        .followed_by("middle")
        .one_or_more()
        .optional()
        .until(_middle_prices_sum_to_6)
    )
    assert_matches(run(pattern, recs), [[start, m1, m2, m3], [start, m1, m2], [start, m1], [start]])
