"""Ports of Apache Flink's ``NotPatternITCase`` (``not_next`` / ``not_followed_by``).

Same input and same expected matches as each Flink case; see ``_flink`` for how
records, time and the comparison map onto ``Pattern.evaluate``.

Not ported:

- ``testNotFollowedByWithinPreviousAndCurrentAtEnd``: ``within(..., WithinType.PREVIOUS_AND_CURRENT)``
  is out of scope (its ``FIRST_AND_LAST`` twin is ported).
"""

from __future__ import annotations

from cep._flink import Event, assert_matches, event, name_is, records, run, run_in_list_order
from minibatch_rx.cep import AfterMatch, Pattern

# Flink's NotFollowByData: events shared by the one-or-more / zero-or-more cases.
A_1 = event(40, "a", 1.0)
B_1 = event(41, "b", 2.0)
B_2 = event(42, "b", 3.0)
B_3 = event(42, "b", 4.0)
C_1 = event(43, "c", 5.0)
B_4 = event(42, "b", 6.0)
B_5 = event(42, "b", 7.0)
B_6 = event(42, "b", 8.0)
D_1 = event(43, "d", 9.0)


def _numbered(*events: Event) -> list[Event]:
    """Flink's ``i++`` timestamps: the events at 0, 1, 2, ..."""
    return records(*((e, i) for i, e in enumerate(events)))


def test_not_next() -> None:
    """Ports NotPatternITCase.testNotNext."""
    a1, c1, b1 = event(40, "a", 1.0), event(41, "c", 2.0), event(42, "b", 3.0)
    c2, d = event(43, "c", 4.0), event(43, "d", 4.0)
    recs = records((a1, 1), (c1, 2), (b1, 3), (c2, 4), (d, 5))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_next("notPattern")
        .where(name_is("b"))
        .followed_by_any("middle")
        .where(name_is("c"))
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [[a1, c1, d], [a1, c2, d]])


def test_not_next_no_matches() -> None:
    """Ports NotPatternITCase.testNotNextNoMatches."""
    a1, b1, c1 = event(40, "a", 1.0), event(42, "b", 3.0), event(41, "c", 2.0)
    c2, d = event(43, "c", 4.0), event(43, "d", 4.0)
    recs = records((a1, 1), (b1, 2), (c1, 3), (c2, 4), (d, 5))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_next("notPattern")
        .where(name_is("b"))
        .followed_by("middle")
        .where(name_is("c"))
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [])


def test_not_next_no_matches_at_the_end() -> None:
    """Ports NotPatternITCase.testNotNextNoMatchesAtTheEnd."""
    a1, c1, c2 = event(40, "a", 1.0), event(41, "c", 2.0), event(43, "c", 4.0)
    d, b1 = event(43, "d", 4.0), event(42, "b", 3.0)
    recs = records((a1, 1), (c1, 2), (c2, 3), (d, 4), (b1, 5))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .followed_by_any("middle")
        .where(name_is("c"))
        .followed_by_any("end")
        .where(name_is("d"))
        .not_next("notPattern")
        .where(name_is("b"))
    )
    assert_matches(run(pattern, recs), [])


def test_not_followed_by() -> None:
    """Ports NotPatternITCase.testNotFollowedBy."""
    a1, c1, b1 = event(40, "a", 1.0), event(41, "c", 2.0), event(42, "b", 3.0)
    c2, d = event(43, "c", 4.0), event(43, "d", 4.0)
    recs = records((a1, 1), (c1, 2), (b1, 3), (c2, 4), (d, 5))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_followed_by("notPattern")
        .where(name_is("b"))
        .followed_by_any("middle")
        .where(name_is("c"))
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [[a1, c1, d]])


def test_not_followed_by_before_optional() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeOptional."""
    a1, c1, b1 = event(40, "a", 1.0), event(41, "c", 2.0), event(42, "b", 3.0)
    c2, d = event(43, "c", 4.0), event(43, "d", 4.0)
    recs = records((a1, 1), (c1, 2), (b1, 3), (c2, 4), (d, 5))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_followed_by("notPattern")
        .where(name_is("b"))
        .followed_by_any("middle")
        .where(name_is("c"))
        .optional()
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [[a1, c1, d]])


def test_times_with_not_followed_by() -> None:
    """Ports NotPatternITCase.testTimesWithNotFollowedBy."""
    a1, b1, c = event(40, "a", 1.0), event(41, "b", 2.0), event(42, "c", 3.0)
    b2, d = event(43, "b", 4.0), event(43, "d", 4.0)
    recs = records((a1, 1), (b1, 2), (c, 3), (b2, 4), (d, 5))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .followed_by_any("middle")
        .where(name_is("b"))
        .times(2)
        .not_followed_by("notPattern")
        .where(name_is("c"))
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [])


def test_ignore_state_of_times_with_not_followed_by() -> None:
    """Ports NotPatternITCase.testIgnoreStateOfTimesWithNotFollowedBy."""
    a1, e, c1 = event(40, "a", 1.0), event(41, "e", 2.0), event(42, "c", 3.0)
    b1, c2 = event(43, "b", 4.0), event(44, "c", 5.0)
    d1, d2 = event(45, "d", 6.0), event(46, "d", 7.0)
    # Flink's timestamps 1, 2, 1, 3, 2, 4, 5 go backwards and the harness feeds the
    # records in list order anyway (no within): keep the list order.
    events = [a1, d1, e, b1, c1, c2, d2]
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_followed_by("notPattern")
        .where(name_is("b"))
        .followed_by_any("middle")
        .where(name_is("c"))
        .times(2)
        .optional()
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run_in_list_order(pattern, events), [[a1, d1]])


def test_times_with_not_followed_by_after() -> None:
    """Ports NotPatternITCase.testTimesWithNotFollowedByAfter."""
    a1, e, c1 = event(40, "a", 1.0), event(41, "e", 2.0), event(42, "c", 3.0)
    b1, b2 = event(43, "b", 4.0), event(44, "b", 5.0)
    d1, d2 = event(46, "d", 7.0), event(47, "d", 8.0)
    # Flink's timestamps 1, 2, 1, 3, 3, 2, 5 go backwards and the harness feeds the
    # records in list order anyway (no within): keep the list order.
    events = [a1, d1, e, b1, b2, c1, d2]
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .followed_by_any("middle")
        .where(name_is("b"))
        .times(2)
        .not_followed_by("notPattern")
        .where(name_is("c"))
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run_in_list_order(pattern, events), [])


def test_not_followed_by_before_optional_at_the_end() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeOptionalAtTheEnd."""
    a1, c1, b1, c2 = event(40, "a", 1.0), event(41, "c", 2.0), event(42, "b", 3.0), event(43, "c", 4.0)
    recs = records((a1, 1), (c1, 2), (b1, 3), (c2, 4))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_followed_by("notPattern")
        .where(name_is("b"))
        .followed_by_any("end")
        .where(name_is("c"))
        .optional()
    )
    assert_matches(run(pattern, recs), [[a1, c1], [a1]])


def test_not_followed_by_before_optional_times() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeOptionalTimes."""
    a1, c1, b1 = event(40, "a", 1.0), event(41, "c", 2.0), event(42, "b", 3.0)
    c2, d = event(43, "c", 4.0), event(43, "d", 4.0)
    recs = records((a1, 1), (c1, 2), (b1, 3), (c2, 4), (d, 5))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_followed_by("notPattern")
        .where(name_is("b"))
        .followed_by_any("middle")
        .where(name_is("c"))
        .times(2)
        .optional()
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [[a1, c1, c2, d]])


def test_not_followed_by_with_branching_at_start() -> None:
    """Ports NotPatternITCase.testNotFollowedByWithBranchingAtStart."""
    a1, b1, c1 = event(40, "a", 1.0), event(42, "b", 3.0), event(41, "c", 2.0)
    a2, c2, d = event(41, "a", 4.0), event(43, "c", 5.0), event(43, "d", 6.0)
    recs = records((a1, 1), (b1, 2), (c1, 3), (a2, 4), (c2, 5), (d, 6))
    pattern = (
        Pattern.begin("start")
        .where(name_is("a"))
        .not_followed_by("notPattern")
        .where(name_is("b"))
        .followed_by("middle")
        .where(name_is("c"))
        .followed_by("end")
        .where(name_is("d"))
    )
    assert_matches(run(pattern, recs), [[a2, c2, d]])


def _not_next_after_one_or_more(all_matches: bool) -> Pattern[Event]:
    start = Pattern.begin("a").where(name_is("a"))
    loop = start.followed_by_any("b*") if all_matches else start.followed_by("b*")
    return (
        loop.where(name_is("b"))
        .one_or_more()
        .not_next("not c")
        .where(name_is("c"))
        .followed_by("d")
        .where(name_is("d"))
    )


_NOT_NEXT_AFTER_ONE_OR_MORE_INPUT = (A_1, B_1, C_1, B_2, D_1)


def test_not_next_after_one_or_more_skip_till_next() -> None:
    """Ports NotPatternITCase.testNotNextAfterOneOrMoreSkipTillNext."""
    result = run(_not_next_after_one_or_more(False), _numbered(*_NOT_NEXT_AFTER_ONE_OR_MORE_INPUT))
    assert_matches(result, [])


def test_not_next_after_one_or_more_skip_till_any() -> None:
    """Ports NotPatternITCase.testNotNextAfterOneOrMoreSkipTillAny."""
    result = run(_not_next_after_one_or_more(True), _numbered(*_NOT_NEXT_AFTER_ONE_OR_MORE_INPUT))
    assert_matches(result, [[A_1, B_2, D_1]])


def _not_followed_by_after_one_or_more(eager: bool, all_matches: bool) -> Pattern[Event]:
    start = Pattern.begin("a").where(name_is("a"))
    loop = (start.followed_by_any("b*") if all_matches else start.followed_by("b*")).where(name_is("b"))
    loop = loop.one_or_more() if eager else loop.one_or_more().allow_combinations()
    return loop.not_followed_by("not c").where(name_is("c")).followed_by("d").where(name_is("d"))


_AFTER_ONE_OR_MORE_INPUT = (A_1, B_1, B_2, B_3, C_1, B_4, B_5, B_6, D_1)


def test_not_followed_by_next_after_one_or_more_eager() -> None:
    """Ports NotPatternITCase.testNotFollowedByNextAfterOneOrMoreEager."""
    result = run(_not_followed_by_after_one_or_more(True, False), _numbered(*_AFTER_ONE_OR_MORE_INPUT))
    assert_matches(result, [])


def test_not_followed_by_any_after_one_or_more_eager() -> None:
    """Ports NotPatternITCase.testNotFollowedByAnyAfterOneOrMoreEager."""
    result = run(_not_followed_by_after_one_or_more(True, True), _numbered(*_AFTER_ONE_OR_MORE_INPUT))
    assert_matches(
        result,
        [
            [A_1, B_4, B_5, B_6, D_1],
            [A_1, B_4, B_5, D_1],
            [A_1, B_4, D_1],
            [A_1, B_5, B_6, D_1],
            [A_1, B_5, D_1],
            [A_1, B_6, D_1],
        ],
    )


def test_not_followed_by_next_after_one_or_more_combinations() -> None:
    """Ports NotPatternITCase.testNotFollowedByNextAfterOneOrMoreCombinations."""
    result = run(_not_followed_by_after_one_or_more(False, False), _numbered(*_AFTER_ONE_OR_MORE_INPUT))
    assert_matches(result, [])


def test_not_followed_by_any_after_one_or_more_combinations() -> None:
    """Ports NotPatternITCase.testNotFollowedByAnyAfterOneOrMoreCombinations."""
    result = run(_not_followed_by_after_one_or_more(False, True), _numbered(*_AFTER_ONE_OR_MORE_INPUT))
    assert_matches(
        result,
        [
            [A_1, B_4, B_5, B_6, D_1],
            [A_1, B_4, B_5, D_1],
            [A_1, B_4, B_6, D_1],
            [A_1, B_4, D_1],
            [A_1, B_5, B_6, D_1],
            [A_1, B_5, D_1],
            [A_1, B_6, D_1],
        ],
    )


def _not_followed_by_before_loop(eager: bool, all_matches: bool, optional: bool) -> Pattern[Event]:
    start = Pattern.begin("a").where(name_is("a")).not_followed_by("not c").where(name_is("c"))
    loop = (start.followed_by_any("b*") if all_matches else start.followed_by("b*")).where(name_is("b"))
    loop = loop.one_or_more()
    if optional:
        loop = loop.optional()
    if not eager:
        loop = loop.allow_combinations()
    return loop.followed_by("d").where(name_is("d"))


_BEFORE_LOOP_INPUT = (A_1, B_1, C_1, B_4, B_5, B_6, D_1)

_BEFORE_LOOP_EAGER = [
    [A_1, B_1, B_4, B_5, B_6, D_1],
    [A_1, B_1, B_4, B_5, D_1],
    [A_1, B_1, B_4, D_1],
    [A_1, B_1, D_1],
]

_BEFORE_LOOP_COMBINATIONS = [
    [A_1, B_1, B_4, B_5, B_6, D_1],
    [A_1, B_1, B_4, B_6, D_1],
    [A_1, B_1, B_4, B_5, D_1],
    [A_1, B_1, B_4, D_1],
    [A_1, B_1, B_5, B_6, D_1],
    [A_1, B_1, B_5, D_1],
    [A_1, B_1, B_6, D_1],
    [A_1, B_1, D_1],
]


def test_not_followed_by_any_before_one_or_more_eager() -> None:
    """Ports NotPatternITCase.testNotFollowedByAnyBeforeOneOrMoreEager."""
    pattern = _not_followed_by_before_loop(eager=True, all_matches=True, optional=False)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_EAGER)


def test_not_followed_by_any_before_one_or_more_combinations() -> None:
    """Ports NotPatternITCase.testNotFollowedByAnyBeforeOneOrMoreCombinations."""
    pattern = _not_followed_by_before_loop(eager=False, all_matches=True, optional=False)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_COMBINATIONS)


def test_not_followed_by_before_one_or_more_eager() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeOneOrMoreEager."""
    pattern = _not_followed_by_before_loop(eager=True, all_matches=False, optional=False)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_EAGER)


def test_not_followed_by_before_one_or_more_combinations() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeOneOrMoreCombinations."""
    pattern = _not_followed_by_before_loop(eager=False, all_matches=False, optional=False)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_COMBINATIONS)


def test_not_followed_by_before_zero_or_more_eager_skip_till_next() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeZeroOrMoreEagerSkipTillNext."""
    pattern = _not_followed_by_before_loop(eager=True, all_matches=False, optional=True)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_EAGER)


def test_not_followed_by_before_zero_or_more_combinations_skip_till_next() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeZeroOrMoreCombinationsSkipTillNext."""
    pattern = _not_followed_by_before_loop(eager=False, all_matches=False, optional=True)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_COMBINATIONS)


def test_not_followed_by_before_zero_or_more_eager_skip_till_any() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeZeroOrMoreEagerSkipTillAny."""
    pattern = _not_followed_by_before_loop(eager=True, all_matches=True, optional=True)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_EAGER)


def test_not_followed_by_before_zero_or_more_combinations_skip_till_any() -> None:
    """Ports NotPatternITCase.testNotFollowedByBeforeZeroOrMoreCombinationsSkipTillAny."""
    pattern = _not_followed_by_before_loop(eager=False, all_matches=True, optional=True)
    assert_matches(run(pattern, _numbered(*_BEFORE_LOOP_INPUT)), _BEFORE_LOOP_COMBINATIONS)


def test_not_followed_by_within_first_and_last_at_end() -> None:
    """Ports NotPatternITCase.testNotFollowedByWithinFirstAndLastAtEnd."""
    a1, b1, a2 = event(40, "a", 1.0), event(41, "b", 2.0), event(42, "a", 3.0)
    c, b2 = event(43, "c", 4.0), event(44, "b", 5.0)
    a3, b3 = event(45, "a", 7.0), event(46, "b", 8.0)
    recs = records((a1, 1), (b1, 2), (a2, 4), (c, 5), (b2, 10), (a3, 11), (b3, 13))
    pattern = Pattern.begin("a").where(name_is("a")).not_followed_by("b").where(name_is("b")).within(3)
    # a2's window closes at 7; the match is emitted when time reaches b2's 10.
    assert_matches(run(pattern, recs), [[a2]])


def test_not_follow_by_before_times_within() -> None:
    """Ports NotPatternITCase.testNotFollowByBeforeTimesWithin."""
    a1, b1, a2 = event(40, "a", 1.0), event(41, "b", 2.0), event(42, "a", 3.0)
    c1, c2 = event(43, "c", 4.0), event(44, "c", 5.0)
    a3, c3, c4 = event(45, "a", 7.0), event(46, "c", 8.0), event(47, "c", 8.0)
    recs = records((a1, 1), (b1, 2), (a2, 10), (c1, 11), (c2, 12), (a3, 20), (c3, 21), (c4, 24))
    pattern = (
        Pattern.begin("a")
        .where(name_is("a"))
        .not_followed_by("b")
        .where(name_is("b"))
        .followed_by("c")
        .where(name_is("c"))
        .times(0, 2)
        .within(3)
    )
    assert_matches(run(pattern, recs), [[a1], [a2], [a2, c1], [a2, c1, c2], [a3], [a3, c3]])


def test_not_followed_by_within_at_end_after_match() -> None:
    """Ports NotPatternITCase.testNotFollowedByWithinAtEndAfterMatch."""
    a1, a2, a3 = event(40, "a", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    c1, c2 = event(43, "c", 4.0), event(44, "c", 5.0)
    recs = records((a1, 1), (a2, 2), (a3, 3), (c1, 4), (c2, 10))
    pattern = (
        Pattern.begin("a", after_match=AfterMatch.skip_past_last_event())
        .where(name_is("a"))
        .one_or_more()
        .allow_combinations()
        .followed_by("c")
        .where(name_is("c"))
        .not_followed_by("b")
        .where(name_is("b"))
        .within(5)
    )
    assert_matches(run(pattern, recs), [[a1, a2, a3, c1]])
