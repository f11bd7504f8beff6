"""Ports of Apache Flink's ``AfterMatchSkipITCase`` (after-match skip strategies).

Same input and same expected matches as each Flink case; see ``_flink`` for how
records, time and the comparison map onto ``Pattern.evaluate``. Flink's records
here carry no timestamp (all at the same instant), so they are evaluated in list
order. Where Flink hands the strategy to the test harness instead of
``Pattern.begin``, it is passed to ``Pattern.begin`` (the same thing).

Not ported:

- ``testSkipToFirstElementOfMatch``, ``testSkipToFirstNonExistentPosition`` and
  ``testSkipToLastNonExistentPosition``: they check the exception of
  ``throwExceptionOnMiss()``, which the API has no counterpart for (their
  ``...WithoutException`` twins are ported).
- ``testSharedBufferIsProperlyCleared``: checks Flink's shared-buffer internals.
"""

from __future__ import annotations

from cep._flink import Event, assert_matches, event, name_contains, name_is, run_in_list_order
from minibatch_rx.cep import AfterMatch, Context, Evaluation, Pattern


def test_no_skip() -> None:
    """Ports AfterMatchSkipITCase.testNoSkip."""
    a1, a2, a3, a4, a5, a6 = (event(i, "a", 0.0) for i in range(1, 7))
    pattern = Pattern.begin("start", after_match=AfterMatch.no_skip()).where(name_is("a")).times(3)
    result = run_in_list_order(pattern, [a1, a2, a3, a4, a5, a6])
    assert_matches(result, [[a1, a2, a3], [a2, a3, a4], [a3, a4, a5], [a4, a5, a6]])


# Flink's TwoVariablesFollowedByAny.
_TV_A1, _TV_B1 = event(1, "a", 0.0), event(2, "b", 0.0)
_TV_A2, _TV_B2 = event(4, "a", 0.0), event(5, "b", 0.0)


def _two_variables_followed_by_any(after_match: AfterMatch) -> Evaluation[Event]:
    pattern = (
        Pattern.begin("start", after_match=after_match)
        .where(name_is("a"))
        .followed_by_any("end")
        .where(name_is("b"))
    )
    return run_in_list_order(pattern, [_TV_A1, _TV_B1, _TV_A2, _TV_B2])


def test_no_skip_with_followed_by_any() -> None:
    """Ports AfterMatchSkipITCase.testNoSkipWithFollowedByAny."""
    result = _two_variables_followed_by_any(AfterMatch.no_skip())
    assert_matches(result, [[_TV_A1, _TV_B1], [_TV_A1, _TV_B2], [_TV_A2, _TV_B2]])


def test_skip_to_next_with_followed_by_any() -> None:
    """Ports AfterMatchSkipITCase.testSkipToNextWithFollowedByAny."""
    result = _two_variables_followed_by_any(AfterMatch.skip_to_next())
    assert_matches(result, [[_TV_A1, _TV_B1], [_TV_A2, _TV_B2]])


# Flink's QuantifierAtEndOfPattern.
_QE_A1, _QE_B1 = event(1, "a", 0.0), event(2, "b", 0.0)
_QE_B2, _QE_B3 = event(4, "b", 0.0), event(5, "b", 0.0)


def _quantifier_at_end_of_pattern(after_match: AfterMatch) -> Evaluation[Event]:
    pattern = (
        Pattern.begin("start", after_match=after_match)
        .where(name_is("a"))
        .next("end")
        .where(name_is("b"))
        .one_or_more()
    )
    return run_in_list_order(pattern, [_QE_A1, _QE_B1, _QE_B2, _QE_B3])


def test_no_skip_with_quantifier_at_the_end() -> None:
    """Ports AfterMatchSkipITCase.testNoSkipWithQuantifierAtTheEnd."""
    result = _quantifier_at_end_of_pattern(AfterMatch.no_skip())
    assert_matches(
        result,
        [[_QE_A1, _QE_B1, _QE_B2, _QE_B3], [_QE_A1, _QE_B1, _QE_B2], [_QE_A1, _QE_B1]],
    )


def test_skip_to_next_with_quantifier_at_the_end() -> None:
    """Ports AfterMatchSkipITCase.testSkipToNextWithQuantifierAtTheEnd."""
    result = _quantifier_at_end_of_pattern(AfterMatch.skip_to_next())
    assert_matches(result, [[_QE_A1, _QE_B1]])


def test_skip_past_last() -> None:
    """Ports AfterMatchSkipITCase.testSkipPastLast."""
    a1, a2, a3, a4, a5, a6 = (event(i, "a", 0.0) for i in range(1, 7))
    pattern = (
        Pattern.begin("start", after_match=AfterMatch.skip_past_last_event()).where(name_is("a")).times(3)
    )
    result = run_in_list_order(pattern, [a1, a2, a3, a4, a5, a6])
    assert_matches(result, [[a1, a2, a3], [a4, a5, a6]])


def test_skip_to_first() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirst."""
    ab1, ab2, ab3, ab4, ab5, ab6 = (event(i, "ab", 0.0) for i in range(1, 7))
    pattern = (
        Pattern.begin("start", after_match=AfterMatch.skip_to_first("end"))
        .where(name_contains("a"))
        .times(2)
        .next("end")
        .where(name_contains("b"))
        .times(2)
    )
    result = run_in_list_order(pattern, [ab1, ab2, ab3, ab4, ab5, ab6])
    assert_matches(result, [[ab1, ab2, ab3, ab4], [ab3, ab4, ab5, ab6]])


def test_skip_to_last() -> None:
    """Ports AfterMatchSkipITCase.testSkipToLast."""
    ab1, ab2, ab3, ab4, ab5, ab6, ab7 = (event(i, "ab", 0.0) for i in range(1, 8))
    pattern = (
        Pattern.begin("start", after_match=AfterMatch.skip_to_last("end"))
        .where(name_contains("a"))
        .times(2)
        .next("end")
        .where(name_contains("b"))
        .times(2)
    )
    result = run_in_list_order(pattern, [ab1, ab2, ab3, ab4, ab5, ab6, ab7])
    assert_matches(result, [[ab1, ab2, ab3, ab4], [ab4, ab5, ab6, ab7]])


def test_skip_past_last2() -> None:
    """Ports AfterMatchSkipITCase.testSkipPastLast2."""
    a1, a2 = event(1, "a1", 0.0), event(2, "a2", 0.0)
    b1, b2 = event(3, "b1", 0.0), event(4, "b2", 0.0)
    c1, c2 = event(5, "c1", 0.0), event(6, "c2", 0.0)
    d1, d2 = event(7, "d1", 0.0), event(7, "d2", 0.0)
    pattern = (
        Pattern.begin("a", after_match=AfterMatch.skip_past_last_event())
        .where(name_contains("a"))
        .followed_by_any("b")
        .where(name_contains("b"))
        .followed_by_any("c")
        .where(name_contains("c"))
        .followed_by("d")
        .where(name_contains("d"))
    )
    result = run_in_list_order(pattern, [a1, a2, b1, b2, c1, c2, d1, d2])
    assert_matches(result, [[a1, b1, c1, d1]])


def test_skip_past_last3() -> None:
    """Ports AfterMatchSkipITCase.testSkipPastLast3."""
    a1, c = event(1, "a1", 0.0), event(2, "c", 0.0)
    a2, b2 = event(3, "a2", 0.0), event(4, "b2", 0.0)
    pattern = (
        Pattern.begin("a", after_match=AfterMatch.skip_past_last_event())
        .where(name_contains("a"))
        .next("b")
        .where(name_contains("b"))
    )
    result = run_in_list_order(pattern, [a1, c, a2, b2])
    assert_matches(result, [[a2, b2]])


def test_skip_to_first_with_optional_match() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstWithOptionalMatch."""
    ab1, c1 = event(1, "ab1", 0.0), event(2, "c1", 0.0)
    ab2, c2 = event(3, "ab2", 0.0), event(4, "c2", 0.0)
    pattern = (
        Pattern.begin("x", after_match=AfterMatch.skip_to_first("b"))
        .where(name_contains("x"))
        .one_or_more()
        .optional()
        .next("b")
        .where(name_contains("b"))
        .next("c")
        .where(name_contains("c"))
    )
    result = run_in_list_order(pattern, [ab1, c1, ab2, c2])
    assert_matches(result, [[ab1, c1], [ab2, c2]])


def test_skip_to_first_at_start_position() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstAtStartPosition."""
    ab1, c1 = event(1, "ab1", 0.0), event(2, "c1", 0.0)
    ab2, c2 = event(3, "ab2", 0.0), event(4, "c2", 0.0)
    pattern = (
        Pattern.begin("b", after_match=AfterMatch.skip_to_first("b"))
        .where(name_contains("b"))
        .next("c")
        .where(name_contains("c"))
    )
    result = run_in_list_order(pattern, [ab1, c1, ab2, c2])
    assert_matches(result, [[ab1, c1], [ab2, c2]])


def _one_or_more_input() -> tuple[list[Event], dict[str, Event]]:
    named = {
        "a1": event(1, "a1", 0.0),
        "b1": event(2, "b1", 0.0),
        "a2": event(3, "a2", 0.0),
        "b2": event(4, "b2", 0.0),
        "b3": event(5, "b3", 0.0),
        "a3": event(3, "a3", 0.0),
        "b4": event(4, "b4", 0.0),
    }
    return list(named.values()), named


def test_skip_to_first_with_one_or_more() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstWithOneOrMore."""
    events, e = _one_or_more_input()
    pattern = (
        Pattern.begin("a", after_match=AfterMatch.skip_to_first("b"))
        .where(name_contains("a"))
        .next("b")
        .where(name_contains("b"))
        .one_or_more()
        .consecutive()
    )
    result = run_in_list_order(pattern, events)
    assert_matches(result, [[e["a1"], e["b1"]], [e["a2"], e["b2"]], [e["a3"], e["b4"]]])


# Flink's MissedSkipTo.
_MS_A, _MS_C = event(1, "a", 0.0), event(4, "c", 0.0)


def _missed_skip_to(after_match: AfterMatch) -> Evaluation[Event]:
    pattern = (
        Pattern.begin("a", after_match=after_match)
        .where(name_contains("a"))
        .next("b")
        .where(name_contains("b"))
        .one_or_more()
        .optional()
        .consecutive()
        .next("c")
        .where(name_contains("c"))
    )
    return run_in_list_order(pattern, [_MS_A, _MS_C])


def test_skip_to_first_non_existent_position_without_exception() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstNonExistentPositionWithoutException."""
    assert_matches(_missed_skip_to(AfterMatch.skip_to_first("b")), [[_MS_A, _MS_C]])


def test_skip_to_last_non_existent_position_without_exception() -> None:
    """Ports AfterMatchSkipITCase.testSkipToLastNonExistentPositionWithoutException."""
    # Flink's case passes skipToFirst("b") here as well; ported as it is.
    assert_matches(_missed_skip_to(AfterMatch.skip_to_first("b")), [[_MS_A, _MS_C]])


def test_skip_to_last_with_one_or_more() -> None:
    """Ports AfterMatchSkipITCase.testSkipToLastWithOneOrMore."""
    events, e = _one_or_more_input()
    pattern = (
        Pattern.begin("a", after_match=AfterMatch.skip_to_last("b"))
        .where(name_contains("a"))
        .next("b")
        .where(name_contains("b"))
        .one_or_more()
        .consecutive()
    )
    result = run_in_list_order(pattern, events)
    assert_matches(result, [[e["a1"], e["b1"]], [e["a2"], e["b2"]], [e["a3"], e["b4"]]])


# The four "example from docs" cases: a+ (consecutive, greedy) then b, on a1 a2 a3 b1.
_DOC_A1, _DOC_A2, _DOC_A3 = event(1, "a1", 0.0), event(2, "a2", 0.0), event(3, "a3", 0.0)
_DOC_B1 = event(4, "b1", 0.0)


def _docs_example(after_match: AfterMatch) -> Evaluation[Event]:
    pattern = (
        Pattern.begin("a", after_match=after_match)
        .where(name_contains("a"))
        .one_or_more()
        .consecutive()
        .greedy()
        .next("b")
        .where(name_contains("b"))
    )
    return run_in_list_order(pattern, [_DOC_A1, _DOC_A2, _DOC_A3, _DOC_B1])


def test_skip_past_last_with_one_or_more_at_beginning() -> None:
    """Ports AfterMatchSkipITCase.testSkipPastLastWithOneOrMoreAtBeginning."""
    result = _docs_example(AfterMatch.skip_past_last_event())
    assert_matches(result, [[_DOC_A1, _DOC_A2, _DOC_A3, _DOC_B1]])


def test_skip_to_last_with_one_or_more_at_beginning() -> None:
    """Ports AfterMatchSkipITCase.testSkipToLastWithOneOrMoreAtBeginning."""
    result = _docs_example(AfterMatch.skip_to_last("a"))
    assert_matches(result, [[_DOC_A1, _DOC_A2, _DOC_A3, _DOC_B1], [_DOC_A3, _DOC_B1]])


def test_skip_to_first_with_one_or_more_at_beginning() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstWithOneOrMoreAtBeginning."""
    result = _docs_example(AfterMatch.skip_to_first("a"))
    assert_matches(
        result,
        [[_DOC_A1, _DOC_A2, _DOC_A3, _DOC_B1], [_DOC_A2, _DOC_A3, _DOC_B1], [_DOC_A3, _DOC_B1]],
    )


def test_no_skip_with_one_or_more_at_beginning() -> None:
    """Ports AfterMatchSkipITCase.testNoSkipWithOneOrMoreAtBeginning."""
    result = _docs_example(AfterMatch.no_skip())
    assert_matches(
        result,
        [[_DOC_A1, _DOC_A2, _DOC_A3, _DOC_B1], [_DOC_A2, _DOC_A3, _DOC_B1], [_DOC_A3, _DOC_B1]],
    )


def test_skip_to_first_discarding() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstDiscarding."""
    a, b = event(1, "a", 0.0), event(2, "b", 0.0)
    c1, c2, c3 = event(3, "c1", 0.0), event(4, "c2", 0.0), event(5, "c3", 0.0)
    d = event(6, "d", 0.0)

    def a_or_c(e: Event) -> bool:
        return "a" in e["name"] or "c" in e["name"]

    def b_or_c(e: Event) -> bool:
        return "b" in e["name"] or "c" in e["name"]

    pattern = (
        Pattern.begin("a or c", after_match=AfterMatch.skip_to_first("c*"))
        .where(a_or_c)
        .followed_by("b or c")
        .where(b_or_c)
        .followed_by("c*")
        .where(name_contains("c"))
        .one_or_more()
        .greedy()
        .followed_by("d")
        .where(name_contains("d"))
    )
    result = run_in_list_order(pattern, [a, b, c1, c2, c3, d])
    assert_matches(result, [[a, b, c1, c2, c3, d], [c1, c2, c3, d]])


def test_skip_before_other_already_completed() -> None:
    """Ports AfterMatchSkipITCase.testSkipBeforeOtherAlreadyCompleted."""
    a1, c1 = event(1, "a1", 0.0), event(2, "c1", 0.0)
    a2, c2 = event(3, "a2", 1.0), event(4, "c2", 0.0)
    b1, b2 = event(5, "b1", 1.0), event(6, "b2", 0.0)

    def b_priced_as_a(e: Event, ctx: Context) -> bool:
        return "b" in e["name"] and ctx.events("a")[0]["price"] == e["price"]

    pattern = (
        Pattern.begin("a", after_match=AfterMatch.skip_to_first("c"))
        .where(name_contains("a"))
        .followed_by("c")
        .where(name_contains("c"))
        .followed_by("b")
        .where(b_priced_as_a)
    )
    result = run_in_list_order(pattern, [a1, c1, a2, c2, b1, b2])
    assert_matches(result, [[a1, c1, b2], [a2, c2, b1]])
