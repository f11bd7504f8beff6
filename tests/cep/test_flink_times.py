"""Ports of Apache Flink's ``TimesRangeITCase`` and ``TimesOrMoreITCase``.

Same input and same expected matches as each Flink case; see ``_flink`` for how
records, time and the comparison map onto ``Pattern.evaluate``. ``times(0, n)``
is ported as it is (Flink reads it as an optional ``times(1, n)``).

Not ported:

- The second parameterization of both Flink classes, ``times(from, to, window)`` /
  ``timesOrMore(n, window)`` with a 3 ms window between a loop's consecutive events:
  a per-quantifier window has no counterpart in the API. Every case is ported with
  Flink's first parameterization (no window), whose expected matches are the full
  lists of the Flink source.
"""

from __future__ import annotations

from cep._flink import Event, assert_matches, event, name_is, records, run
from minibatch_rx.cep import Pattern

# Flink's ConsecutiveData (same values in both classes).
START = event(40, "c", 1.0)
MIDDLE_1 = event(41, "a", 2.0)
MIDDLE_2 = event(42, "a", 3.0)
MIDDLE_3 = event(43, "a", 4.0)
END = event(44, "b", 5.0)


def _f() -> Event:
    """Flink's filler ``new Event(23, "f", 1.0)``."""
    return event(23, "f", 1.0)


def _with_fillers() -> list[Event]:
    """c f a1 f a2 a3 b at 1..7 (the input of most cases)."""
    return records((START, 1), (_f(), 2), (MIDDLE_1, 3), (_f(), 4), (MIDDLE_2, 5), (MIDDLE_3, 6), (END, 7))


def _c_then(contiguity: str) -> Pattern[Event]:
    """``start`` (c) followed, with the given contiguity, by the ``middle`` (a) step."""
    start = Pattern.begin("start").where(name_is("c"))
    if contiguity == "next":
        step = start.next("middle")
    elif contiguity == "followed_by":
        step = start.followed_by("middle")
    else:
        step = start.followed_by_any("middle")
    return step.where(name_is("a"))


def _then_b(loop: Pattern[Event]) -> Pattern[Event]:
    return loop.followed_by("end1").where(name_is("b"))


# ---------------------------------------------------------------- TimesRangeITCase


def test_times_range() -> None:
    """Ports TimesRangeITCase.testTimesRange."""
    c, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    m3, end1 = event(43, "a", 4.0), event(44, "b", 5.0)
    recs = records((c, 1), (m1, 2), (m2, 3), (m3, 4), (end1, 6))
    pattern = _then_b(_c_then("next").times(1, 3).allow_combinations())
    assert_matches(
        run(pattern, recs), [[c, m1, m2, m3, end1], [c, m1, m2, end1], [c, m1, m3, end1], [c, m1, end1]]
    )


def test_times_range_from_zero() -> None:
    """Ports TimesRangeITCase.testTimesRangeFromZero."""
    c, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    m3, end1 = event(43, "a", 4.0), event(44, "b", 5.0)
    recs = records((c, 1), (m1, 2), (m2, 3), (m3, 4), (end1, 6))
    pattern = _then_b(_c_then("next").times(0, 2).allow_combinations())
    assert_matches(run(pattern, recs), [[c, m1, m2, end1], [c, m1, m3, end1], [c, m1, end1], [c, end1]])


def test_times_range_non_strict() -> None:
    """Ports TimesRangeITCase.testTimesRangeNonStrict."""
    pattern = _then_b(_c_then("followed_by_any").times(1, 3).allow_combinations())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_1, MIDDLE_3, END],
            [START, MIDDLE_1, END],
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_2, END],
            [START, MIDDLE_3, END],
        ],
    )


def test_times_range_strict() -> None:
    """Ports TimesRangeITCase.testTimesRangeStrict."""
    pattern = _then_b(_c_then("followed_by_any").times(0, 3).consecutive())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, END],
            [START, MIDDLE_2, END],
            [START, MIDDLE_3, END],
            [START, END],
        ],
    )


def test_times_range_strict_optional() -> None:
    """Ports TimesRangeITCase.testTimesRangeStrictOptional."""
    pattern = _then_b(_c_then("followed_by_any").times(1, 3).consecutive().optional())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, END],
            [START, MIDDLE_2, END],
            [START, MIDDLE_3, END],
            [START, END],
        ],
    )


def test_times_range_strict_optional1() -> None:
    """Ports TimesRangeITCase.testTimesRangeStrictOptional1."""
    recs = records((START, 1), (MIDDLE_1, 3), (MIDDLE_2, 5), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("next").times(1, 3).consecutive().optional())
    assert_matches(
        run(pattern, recs),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_1, END],
            [START, END],
        ],
    )


def test_times_range_non_strict_optional1() -> None:
    """Ports TimesRangeITCase.testTimesRangeNonStrictOptional1."""
    recs = records((START, 1), (_f(), 2), (END, 7))
    pattern = _then_b(_c_then("followed_by").times(1, 3).optional())
    assert_matches(run(pattern, recs), [[START, END]])


def test_times_range_non_strict_optional2() -> None:
    """Ports TimesRangeITCase.testTimesRangeNonStrictOptional2."""
    pattern = _then_b(_c_then("followed_by_any").times(2, 3).allow_combinations().optional())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, END],
            [START, MIDDLE_1, MIDDLE_3, END],
        ],
    )


def test_times_range_non_strict_optional3() -> None:
    """Ports TimesRangeITCase.testTimesRangeNonStrictOptional3."""
    pattern = _then_b(_c_then("followed_by_any").times(2, 3).optional())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, END],
        ],
    )


def test_times_range_non_strict_with_next() -> None:
    """Ports TimesRangeITCase.testTimesRangeNonStrictWithNext."""
    recs = records((START, 1), (MIDDLE_1, 2), (_f(), 3), (MIDDLE_2, 4), (_f(), 5), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("next").times(2, 3).allow_combinations())
    assert_matches(
        run(pattern, recs),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_1, MIDDLE_3, END],
        ],
    )


def test_times_range_not_strict_with_followed_by() -> None:
    """Ports TimesRangeITCase.testTimesRangeNotStrictWithFollowedBy."""
    recs = records((START, 1), (MIDDLE_1, 2), (MIDDLE_2, 4), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("followed_by").times(2, 3))
    assert_matches(
        run(pattern, recs),
        [[START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END], [START, MIDDLE_1, MIDDLE_2, END]],
    )


def test_times_range_not_strict_with_followed_by_any() -> None:
    """Ports TimesRangeITCase.testTimesRangeNotStrictWithFollowedByAny."""
    recs = records((START, 1), (MIDDLE_1, 2), (MIDDLE_2, 4), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("followed_by_any").times(2, 3).allow_combinations())
    assert_matches(
        run(pattern, recs),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_3, END],
        ],
    )


# --------------------------------------------------------------- TimesOrMoreITCase


def test_times_or_more() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMore."""
    c, m1, m2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 3.0)
    m3, end1 = event(43, "a", 4.0), event(44, "b", 5.0)
    recs = records((c, 1), (m1, 2), (m2, 3), (m3, 4), (end1, 6))
    pattern = _then_b(_c_then("followed_by").times_or_more(2).allow_combinations())
    assert_matches(run(pattern, recs), [[c, m1, m2, m3, end1], [c, m1, m2, end1], [c, m1, m3, end1]])


def test_times_or_more_non_strict() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreNonStrict."""
    pattern = _then_b(_c_then("followed_by_any").times_or_more(2).allow_combinations())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_1, MIDDLE_3, END],
            [START, MIDDLE_2, MIDDLE_3, END],
        ],
    )


def test_times_or_more_strict() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreStrict."""
    # Flink's case uses times(2) here, not timesOrMore(2).
    pattern = _then_b(_c_then("followed_by_any").times(2).consecutive())
    assert_matches(run(pattern, _with_fillers()), [[START, MIDDLE_2, MIDDLE_3, END]])


def test_times_or_more_strict_optional() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreStrictOptional."""
    pattern = _then_b(_c_then("followed_by_any").times_or_more(2).consecutive().optional())
    assert_matches(run(pattern, _with_fillers()), [[START, MIDDLE_2, MIDDLE_3, END], [START, END]])


def test_times_or_more_strict_optional2() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreStrictOptional2."""
    recs = records((START, 1), (MIDDLE_1, 3), (MIDDLE_2, 5), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("next").times_or_more(2).consecutive().optional())
    assert_matches(
        run(pattern, recs),
        [[START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END], [START, MIDDLE_1, MIDDLE_2, END], [START, END]],
    )


def test_times_or_more_non_strict_optional() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreNonStrictOptional."""
    recs = records((START, 1), (_f(), 2), (END, 7))
    pattern = _then_b(_c_then("followed_by").times_or_more(2).optional())
    assert_matches(run(pattern, recs), [[START, END]])


def test_times_or_more_non_strict_optional2() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreNonStrictOptional2."""
    pattern = _then_b(_c_then("followed_by_any").times_or_more(2).allow_combinations().optional())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, END],
            [START, MIDDLE_1, MIDDLE_3, END],
        ],
    )


def test_times_or_more_non_strict_optional3() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreNonStrictOptional3."""
    pattern = _then_b(_c_then("followed_by_any").times_or_more(2).optional())
    assert_matches(
        run(pattern, _with_fillers()),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, END],
        ],
    )


def test_times_or_more_non_strict_with_next() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreNonStrictWithNext."""
    recs = records((START, 1), (MIDDLE_1, 2), (_f(), 3), (MIDDLE_2, 4), (_f(), 5), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("next").times_or_more(2).allow_combinations())
    assert_matches(
        run(pattern, recs),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_1, MIDDLE_3, END],
        ],
    )


def test_times_or_more_not_strict_with_followed_by() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreNotStrictWithFollowedBy."""
    recs = records((START, 1), (MIDDLE_1, 2), (MIDDLE_2, 4), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("followed_by").times_or_more(2))
    assert_matches(
        run(pattern, recs),
        [[START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END], [START, MIDDLE_1, MIDDLE_2, END]],
    )


def test_times_or_more_not_strict_with_followed_by_any() -> None:
    """Ports TimesOrMoreITCase.testTimesOrMoreNotStrictWithFollowedByAny."""
    recs = records((START, 1), (MIDDLE_1, 2), (MIDDLE_2, 4), (MIDDLE_3, 6), (END, 7))
    pattern = _then_b(_c_then("followed_by_any").times_or_more(2).allow_combinations())
    assert_matches(
        run(pattern, recs),
        [
            [START, MIDDLE_1, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_2, END],
            [START, MIDDLE_2, MIDDLE_3, END],
            [START, MIDDLE_1, MIDDLE_3, END],
        ],
    )
