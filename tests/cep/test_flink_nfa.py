"""Conformance scenarios ported from Apache Flink's ``NFAITCase`` (flink-cep).

Each test feeds the same events, at the same timestamps (Flink's milliseconds read as
seconds), into the same pattern as the Flink case and expects the same matches. Like
Flink's harness, time advances to each event's timestamp before the event is processed
and not beyond the last one (``end=<last timestamp>``). An event is a dict with Flink's
``Event`` fields ``id``, ``name`` and ``price`` plus ``ts``; events compare as Flink's
``Event.equals`` does (id, name, price; not the timestamp). Where Flink compares only the
events of each match, we compare each match's events in step order as a multiset.

Flink's ``SubEvent`` is an event carrying a ``volume`` field; ``subtype(SubEvent.class)``
becomes the condition ``"volume" in e``, ANDed with the step's other conditions (what
Flink's ``SubtypeCondition`` does).

Not ported:

- ``testSimplePatternWithTimeWindowNFAWithinPreviousAndCurrent``,
  ``testSimplePatternWithTimeoutHandlingWithinPreviousAndCurrent``,
  ``testPendingStateMatchesWithinPreviousAndCurrent``: ``WithinType.PREVIOUS_AND_CURRENT``.
- ``testTimesClearingBufferWithinFirstAndLast`` / ``...WithinPreviousAndCurrent``,
  ``testOptionalClearingBufferWithinFirstAndLast`` / ``...WithinPreviousAndCurrent``,
  ``testAtLeastOneClearingBufferWithinFirstAndLast`` / ``...WithPreviousAndCurrent``,
  ``testZeroOrMoreClearingBufferWithinFirstAndLast`` / ``...WithinPreviousAndCurrent``:
  they assert on the NFA's internal partial-match queue (count and state names) after
  pruning, not on matches.
- ``testSharedBufferClearing``, ``testLoopClearingWithinFirstAndLast`` /
  ``...WithinPreviousAndCurrent``: shared-buffer internals (a mocked accessor, buffer size).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from minibatch_rx.cep import Evaluation, Pattern

Event = dict[str, Any]
Key = tuple[str, float, int]


def ev(id_: int, name: str, price: float, **extra: Any) -> Event:
    """A Flink ``Event(id, name, price)``; ``volume=...`` makes it a ``SubEvent``."""
    return {"id": id_, "name": name, "price": price, **extra}


def key(e: Mapping[str, Any]) -> Key:
    """What Flink's ``Event.equals`` compares (the timestamp is not part of it)."""
    return (e["name"], e["price"], e["id"])


def flat(match: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[Key, ...]:
    """A match's events, step after step in pattern order (Flink's ``feedNFA`` list)."""
    return tuple(key(e) for step in match for e in match[step])


def steps(match: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[tuple[str, tuple[Key, ...]], ...]:
    """A match as its step -> events mapping (steps without events left out)."""
    return tuple((step, tuple(key(e) for e in match[step])) for step in match if match[step])


def feed(pattern: Pattern[Any], stream: Sequence[tuple[Event, float]]) -> Evaluation[Any]:
    """Run ``pattern`` over ``(event, timestamp)`` records, as Flink's NFATestHarness does."""
    records = [{**e, "ts": ts} for e, ts in stream]
    return pattern.evaluate(records, time="ts", end=stream[-1][1])


def assert_matches(result: Evaluation[Any], expected: Sequence[Sequence[Event]]) -> None:
    """The matches' event lists equal ``expected`` as a multiset (Flink's comparePatterns)."""
    actual = sorted(flat(m) for m in result.matches)
    wanted = sorted(tuple(key(e) for e in match) for match in expected)
    assert actual == wanted


def named(name: str) -> Callable[[Event], bool]:
    """Condition: the event's name is ``name``."""
    return lambda e: bool(e["name"] == name)


def is_sub(e: Event) -> bool:
    """Flink's ``subtype(SubEvent.class)``."""
    return "volume" in e


# Flink's NFAITCase.ConsecutiveData
C = ev(40, "c", 1.0)
A1 = ev(41, "a", 2.0)
A2 = ev(42, "a", 3.0)
A3 = ev(43, "a", 4.0)
A4 = ev(43, "a", 5.0)
B = ev(44, "b", 5.0)
F = ev(23, "f", 1.0)


def test_no_condition_nfa() -> None:
    """Ports NFAITCase.testNoConditionNFA."""
    a, b, c, d, e = (ev(40 + i, n, 1.0 + i) for i, n in enumerate("abcde"))
    p = Pattern.begin("start").followed_by("end")
    result = feed(p, [(a, 1), (b, 2), (c, 3), (d, 4), (e, 5)])
    assert_matches(result, [[a, b], [b, c], [c, d], [d, e]])


def test_no_condition_looping_nfa() -> None:
    """Ports NFAITCase.testNoConditionLoopingNFA."""
    a, b, c, d, e = (ev(40 + i, n, 1.0 + i) for i, n in enumerate("abcde"))
    p = Pattern.begin("start").followed_by("end").one_or_more()
    result = feed(p, [(a, 1), (b, 2), (c, 3), (d, 4), (e, 5)])
    assert_matches(
        result,
        [
            [a, b, c, d, e],
            [a, b, c, d],
            [a, b, c],
            [a, b],
            [b, c, d, e],
            [b, c, d],
            [b, c],
            [c, d, e],
            [c, d],
            [d, e],
        ],
    )


def test_any_with_no_condition_nfa() -> None:
    """Ports NFAITCase.testAnyWithNoConditionNFA."""
    a, b, c, d, e = (ev(40 + i, n, 1.0 + i) for i, n in enumerate("abcde"))
    p = Pattern.begin("start").followed_by_any("end")
    result = feed(p, [(a, 1), (b, 2), (c, 3), (d, 4), (e, 5)])
    assert_matches(
        result,
        [[a, b], [a, c], [a, d], [a, e], [b, c], [b, d], [b, e], [c, d], [c, e], [d, e]],
    )


def test_simple_pattern_nfa() -> None:
    """Ports NFAITCase.testSimplePatternNFA."""
    start = ev(41, "start", 1.0)
    middle = ev(42, "foo", 1.0, volume=10.0)
    end = ev(43, "end", 1.0)
    p = (
        Pattern.begin("start")
        .where(named("start"))
        .followed_by("middle")
        .where(is_sub)
        .where(lambda e: e["volume"] > 5.0)
        .followed_by("end")
        .where(named("end"))
    )
    stream = [
        (start, 1),
        (ev(43, "foobar", 1.0), 2),
        (ev(41, "barfoo", 1.0, volume=5.0), 3),
        (middle, 3),
        (ev(43, "start", 1.0), 4),
        (end, 5),
    ]
    assert_matches(feed(p, stream), [[start, middle, end]])


def _a_next_b() -> Pattern[Any]:
    return Pattern.begin("middle").where(named("a")).next("end").where(named("b"))


def test_strict_continuity_with_results() -> None:
    """Ports NFAITCase.testStrictContinuityWithResults."""
    a = ev(41, "a", 2.0)
    b = ev(42, "b", 4.0)
    assert_matches(feed(_a_next_b(), [(a, 3), (b, 5)]), [[a, b]])


def test_strict_continuity_no_results() -> None:
    """Ports NFAITCase.testStrictContinuityNoResults."""
    stream = [(ev(41, "a", 2.0), 3), (ev(42, "c", 3.0), 4), (ev(43, "b", 4.0), 5)]
    assert_matches(feed(_a_next_b(), stream), [])


_TIMEOUT_STREAM = [
    (ev(1, "start", 1.0), 1),
    (ev(2, "start", 1.0), 2),
    (ev(3, "middle", 1.0), 3),
    (ev(4, "foobar", 1.0), 4),
    (ev(5, "end", 1.0), 11),
    (ev(6, "end", 1.0), 13),
]


def test_simple_pattern_with_time_window_nfa_within_first_and_last() -> None:
    """Ports NFAITCase.testSimplePatternWithTimeWindowNFAWithinFirstAndLast."""
    p = (
        Pattern.begin("start")
        .where(named("start"))
        .followed_by("middle")
        .where(named("middle"))
        .followed_by("end")
        .where(named("end"))
        .within(10)
    )
    expected = [ev(2, "start", 1.0), ev(3, "middle", 1.0), ev(5, "end", 1.0)]
    assert_matches(feed(p, _TIMEOUT_STREAM), [expected])


def test_simple_pattern_with_timeout_handling_within_first_and_last() -> None:
    """Ports NFAITCase.testSimplePatternWithTimeoutHandlingWithinFirstAndLast."""
    p = (
        Pattern.begin("start")
        .where(named("start"))
        .followed_by_any("middle")
        .where(named("middle"))
        .followed_by_any("end")
        .where(named("end"))
        .within(10)
    )
    result = feed(p, _TIMEOUT_STREAM)
    start1, start2 = ev(1, "start", 1.0), ev(2, "start", 1.0)
    middle = ev(3, "middle", 1.0)
    assert len(result.matches) == 1
    assert steps(result.matches[0]) == (
        ("start", (key(start2),)),
        ("middle", (key(middle),)),
        ("end", (key(ev(5, "end", 1.0)),)),
    )
    # Flink reports each timed-out partial match with its timeout timestamp
    expected_timeouts = [
        ((("start", (key(start1),)), ("middle", (key(middle),))), 11.0),
        ((("start", (key(start2),)), ("middle", (key(middle),))), 12.0),
        ((("start", (key(start1),)),), 11.0),
        ((("start", (key(start2),)),), 12.0),
    ]
    actual = sorted((steps(m), m.timed_out_at) for m in result.timeouts)
    assert actual == sorted(expected_timeouts)


def test_pending_state_matches_within_first_and_last() -> None:
    """Ports NFAITCase.testPendingStateMatchesWithinFirstAndLast."""
    p = (
        Pattern.begin("start")
        .where(named("start"))
        .not_followed_by("middle")
        .where(named("middle"))
        .within(5)
    )
    stream = [
        (ev(1, "start", 1.0), 1),
        (ev(2, "middle", 1.0), 4),
        (ev(3, "start", 1.0), 5),
        (ev(4, "start", 1.0), 11),
        (ev(5, "middle", 1.0), 18),
    ]
    result = feed(p, stream)
    assert sorted(steps(m) for m in result.matches) == [
        (("start", (key(ev(3, "start", 1.0)),)),),
        (("start", (key(ev(4, "start", 1.0)),)),),
    ]


# events of testBranchingPattern, testBranchingPatternSkipTillNext and
# testBranchingPatternMixedFollowedBy
_BR_START = ev(40, "start", 1.0)
_BR_M1 = ev(41, "foo1", 1.0, volume=10.0)
_BR_M2 = ev(42, "foo2", 1.0, volume=10.0)
_BR_M3 = ev(43, "foo3", 1.0, volume=10.0)
_BR_N1 = ev(44, "next-one", 1.0, volume=2.0)
_BR_N2 = ev(45, "next-one", 1.0, volume=2.0)
_BR_END = ev(46, "end", 1.0)
_BR_STREAM = [
    (_BR_START, 1),
    (_BR_M1, 3),
    (_BR_M2, 4),
    (_BR_M3, 5),
    (_BR_N1, 6),
    (_BR_N2, 7),
    (_BR_END, 8),
]


def _branching(first: str, second: str, third: str) -> Pattern[Any]:
    """start, middle-first (SubEvent, volume > 5), middle-second (SubEvent named
    next-one), end; ``first``/``second``/``third`` name the contiguity methods."""
    p = Pattern.begin("start").where(named("start"))
    p = getattr(p, first)("middle-first").where(is_sub).where(lambda e: e["volume"] > 5.0)
    p = getattr(p, second)("middle-second").where(is_sub).where(named("next-one"))
    result: Pattern[Any] = getattr(p, third)("end").where(named("end"))
    return result


def test_branching_pattern() -> None:
    """Ports NFAITCase.testBranchingPattern."""
    p = _branching("followed_by_any", "followed_by_any", "followed_by_any")
    assert_matches(
        feed(p, _BR_STREAM),
        [
            [_BR_START, _BR_M1, _BR_N1, _BR_END],
            [_BR_START, _BR_M2, _BR_N1, _BR_END],
            [_BR_START, _BR_M3, _BR_N1, _BR_END],
            [_BR_START, _BR_M1, _BR_N2, _BR_END],
            [_BR_START, _BR_M2, _BR_N2, _BR_END],
            [_BR_START, _BR_M3, _BR_N2, _BR_END],
        ],
    )


def test_complex_branching_after_zero_or_more() -> None:
    """Ports NFAITCase.testComplexBranchingAfterZeroOrMore."""
    s = ev(40, "c", 1.0)
    m1, m2, m3 = ev(41, "a", 2.0), ev(42, "a", 3.0), ev(43, "a", 4.0)
    e1, e2, e3, e4 = ev(44, "b", 5.0), ev(45, "d", 6.0), ev(46, "d", 7.0), ev(47, "e", 8.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .one_or_more()
        .allow_combinations()
        .optional()
        .followed_by_any("end1")
        .where(named("b"))
        .followed_by_any("end2")
        .where(named("d"))
        .followed_by_any("end3")
        .where(named("e"))
    )
    stream = [(s, 1), (m1, 3), (m2, 4), (m3, 5), (e1, 6), (e2, 7), (e3, 8), (e4, 9)]
    expected = []
    for d in (e2, e3):
        expected += [
            [s, m1, m2, m3, e1, d, e4],
            [s, m1, m2, e1, d, e4],
            [s, m1, m3, e1, d, e4],
            [s, m2, m3, e1, d, e4],
            [s, m1, e1, d, e4],
            [s, m2, e1, d, e4],
            [s, m3, e1, d, e4],
            [s, e1, d, e4],
        ]
    assert_matches(feed(p, stream), expected)


def test_zero_or_more() -> None:
    """Ports NFAITCase.testZeroOrMore."""
    s, m1, m2, e = ev(40, "c", 1.0), ev(41, "a", 2.0), ev(42, "a", 3.0), ev(44, "b", 5.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .one_or_more()
        .allow_combinations()
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    result = feed(p, [(s, 1), (m1, 3), (m2, 4), (e, 6)])
    assert_matches(result, [[s, m1, m2, e], [s, m1, e], [s, m2, e], [s, e]])


def test_eager_zero_or_more() -> None:
    """Ports NFAITCase.testEagerZeroOrMore."""
    s, m1, m2, m3 = ev(40, "c", 1.0), ev(41, "a", 2.0), ev(42, "a", 3.0), ev(43, "a", 4.0)
    e = ev(44, "b", 5.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by("middle")
        .where(named("a"))
        .one_or_more()
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(s, 1), (m1, 3), (m2, 4), (ev(50, "d", 6.0), 5), (m3, 6), (e, 7)]
    assert_matches(feed(p, stream), [[s, m1, m2, m3, e], [s, m1, m2, e], [s, m1, e], [s, e]])


def test_begin_with_zero_or_more() -> None:
    """Ports NFAITCase.testBeginWithZeroOrMore."""
    # middleEvent2 and middleEvent3 are equal events in Flink's test (same id, name, price)
    m1, m2, m3 = ev(40, "a", 2.0), ev(41, "a", 3.0), ev(41, "a", 3.0)
    end = ev(42, "b", 4.0)
    p = (
        Pattern.begin("middle")
        .where(named("a"))
        .one_or_more()
        .optional()
        .followed_by("end")
        .where(named("b"))
    )
    result = feed(p, [(m1, 3), (m2, 4), (m3, 5), (end, 6)])
    assert_matches(
        result,
        [
            [m1, m2, m3, end],
            [m1, m2, end],
            [m2, m3, end],
            [m1, end],
            [m2, end],
            [m3, end],
            [end],
        ],
    )


def test_zero_or_more_after_zero_or_more() -> None:
    """Ports NFAITCase.testZeroOrMoreAfterZeroOrMore."""
    s, m1 = ev(40, "c", 1.0), ev(41, "a", 2.0)
    m2, m3, end = ev(42, "d", 3.0), ev(43, "d", 4.0), ev(44, "e", 4.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle-first")
        .where(named("a"))
        .one_or_more()
        .allow_combinations()
        .optional()
        .followed_by("middle-second")
        .where(named("d"))
        .one_or_more()
        .allow_combinations()
        .optional()
        .followed_by("end")
        .where(named("e"))
    )
    result = feed(p, [(s, 1), (m1, 3), (m2, 4), (m3, 5), (end, 6)])
    assert_matches(
        result,
        [
            [s, m1, m2, m3, end],
            [s, m1, m2, end],
            [s, m2, m3, end],
            [s, m2, end],
            [s, m1, end],
            [s, end],
        ],
    )


def test_zero_or_more_after_branching() -> None:
    """Ports NFAITCase.testZeroOrMoreAfterBranching."""
    s, m1, m2 = ev(40, "c", 1.0), ev(41, "a", 2.0), ev(42, "a", 3.0)
    merging, k1, k2 = ev(42, "f", 3.0), ev(43, "d", 4.0), ev(44, "d", 4.0)
    end = ev(45, "e", 4.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("branching")
        .where(named("a"))
        .followed_by_any("merging")
        .where(named("f"))
        .followed_by_any("kleene")
        .where(named("d"))
        .one_or_more()
        .allow_combinations()
        .optional()
        .followed_by("end")
        .where(named("e"))
    )
    stream = [(s, 1), (m1, 3), (m2, 4), (merging, 5), (k1, 6), (k2, 7), (end, 8)]
    expected = []
    for m in (m1, m2):
        expected += [
            [s, m, merging, end],
            [s, m, merging, k1, end],
            [s, m, merging, k2, end],
            [s, m, merging, k1, k2, end],
        ]
    assert_matches(feed(p, stream), expected)


def test_strict_continuity_no_results_after_zero_or_more() -> None:
    """Ports NFAITCase.testStrictContinuityNoResultsAfterZeroOrMore."""
    p = (
        Pattern.begin("start")
        .where(named("d"))
        .followed_by("middle")
        .where(named("a"))
        .one_or_more()
        .optional()
        .next("end")
        .where(named("b"))
    )
    stream = [
        (ev(40, "d", 2.0), 1),
        (ev(41, "a", 2.0), 2),
        (ev(42, "a", 2.0), 3),
        (ev(43, "c", 3.0), 4),
        (ev(44, "b", 4.0), 5),
    ]
    assert_matches(feed(p, stream), [])


def test_strict_continuity_results_after_zero_or_more() -> None:
    """Ports NFAITCase.testStrictContinuityResultsAfterZeroOrMore."""
    s, m1, m2, end = ev(40, "d", 2.0), ev(41, "a", 2.0), ev(42, "a", 2.0), ev(43, "b", 4.0)
    p = (
        Pattern.begin("start")
        .where(named("d"))
        .followed_by_any("middle")
        .where(named("a"))
        .one_or_more()
        .optional()
        .allow_combinations()
        .next("end")
        .where(named("b"))
    )
    result = feed(p, [(s, 1), (m1, 2), (m2, 3), (end, 5)])
    assert_matches(result, [[s, m1, m2, end], [s, m2, end]])


def test_at_least_one() -> None:
    """Ports NFAITCase.testAtLeastOne."""
    s, m1, m2, e = ev(40, "c", 1.0), ev(41, "a", 2.0), ev(42, "a", 3.0), ev(44, "b", 5.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .one_or_more()
        .allow_combinations()
        .followed_by_any("end1")
        .where(named("b"))
    )
    result = feed(p, [(s, 1), (m1, 3), (m2, 4), (e, 6)])
    assert_matches(result, [[s, m1, m2, e], [s, m1, e], [s, m2, e]])


def test_begin_with_at_least_one() -> None:
    """Ports NFAITCase.testBeginWithAtLeastOne."""
    s1, s2, s3 = ev(41, "a", 2.0), ev(42, "a", 3.0), ev(42, "a", 4.0)
    e = ev(44, "b", 5.0)
    p = (
        Pattern.begin("start")
        .where(named("a"))
        .one_or_more()
        .allow_combinations()
        .followed_by("end")
        .where(named("b"))
    )
    result = feed(p, [(s1, 3), (s2, 4), (s3, 5), (e, 6)])
    assert_matches(
        result,
        [
            [s1, s2, s3, e],
            [s1, s2, e],
            [s1, s3, e],
            [s2, s3, e],
            [s1, e],
            [s2, e],
            [s3, e],
        ],
    )


def test_next_zero_or_more() -> None:
    """Ports NFAITCase.testNextZeroOrMore."""
    start, end = ev(40, "start", 1.0), ev(46, "end", 1.0)
    m1, m2, m3 = ev(40, "middle", 2.0), ev(40, "middle", 3.0), ev(40, "middle", 4.0)
    p = (
        Pattern.begin("start")
        .where(named("start"))
        .next("middle")
        .where(named("middle"))
        .one_or_more()
        .optional()
        .consecutive()
        .followed_by("end")
        .where(named("end"))
    )
    stream = [(start, 1), (ev(1, "event", 1.0), 2), (m1, 3), (m2, 4), (m3, 5), (end, 6)]
    assert_matches(feed(p, stream), [[start, end]])


def test_at_least_one_eager() -> None:
    """Ports NFAITCase.testAtLeastOneEager."""
    s, m1, m2, m3 = ev(40, "c", 1.0), ev(41, "a", 2.0), ev(42, "a", 3.0), ev(43, "a", 4.0)
    e = ev(44, "b", 5.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .one_or_more()
        .followed_by_any("end1")
        .where(named("b"))
    )
    result = feed(p, [(s, 1), (m1, 3), (m2, 4), (m3, 5), (e, 6)])
    assert_matches(
        result,
        [
            [s, m1, m2, m3, e],
            [s, m1, m2, e],
            [s, m2, m3, e],
            [s, m3, e],
            [s, m2, e],
            [s, m1, e],
        ],
    )


def test_optional() -> None:
    """Ports NFAITCase.testOptional."""
    s, m, e = ev(40, "c", 1.0), ev(43, "a", 4.0), ev(44, "b", 5.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by("middle")
        .where(named("a"))
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(feed(p, [(s, 1), (m, 5), (e, 6)]), [[s, m, e], [s, e]])


def test_times() -> None:
    """Ports NFAITCase.testTimes."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .next("middle")
        .where(named("a"))
        .times(2)
        .allow_combinations()
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(C, 1), (A1, 2), (A2, 3), (A3, 4), (B, 6)]
    assert_matches(feed(p, stream), [[C, A1, A2, B], [C, A1, A3, B]])


def test_start_with_times() -> None:
    """Ports NFAITCase.testStartWithTimes."""
    p = Pattern.begin("middle").where(named("a")).times(2).consecutive().followed_by("end1").where(named("b"))
    stream = [(A1, 2), (A2, 3), (A3, 4), (B, 6)]
    assert_matches(feed(p, stream), [[A1, A2, B], [A2, A3, B]])


def test_times_non_strict_with_next() -> None:
    """Ports NFAITCase.testTimesNonStrictWithNext."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .next("middle")
        .where(named("a"))
        .times(2)
        .allow_combinations()
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(C, 1), (A1, 2), (F, 3), (A2, 4), (F, 5), (A3, 6), (B, 7)]
    assert_matches(feed(p, stream), [[C, A1, A2, B], [C, A1, A3, B]])


def test_times_not_strict_with_followed_by_eager() -> None:
    """Ports NFAITCase.testTimesNotStrictWithFollowedByEager."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by("middle")
        .where(named("a"))
        .times(2)
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(C, 1), (A1, 2), (A2, 4), (A3, 6), (B, 7)]
    assert_matches(feed(p, stream), [[C, A1, A2, B]])


def test_times_not_strict_with_followed_by_not_eager() -> None:
    """Ports NFAITCase.testTimesNotStrictWithFollowedByNotEager."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .times(2)
        .allow_combinations()
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(C, 1), (A1, 2), (A2, 4), (A3, 6), (B, 7)]
    assert_matches(feed(p, stream), [[C, A1, A2, B], [C, A2, A3, B], [C, A1, A3, B]])


def test_times_strict_with_next_and_consecutive() -> None:
    """Ports NFAITCase.testTimesStrictWithNextAndConsecutive."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .next("middle")
        .where(named("a"))
        .times(2)
        .consecutive()
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(C, 1), (A1, 2), (F, 3), (A2, 4), (A3, 6), (B, 7)]
    assert_matches(feed(p, stream), [])


def test_start_with_optional() -> None:
    """Ports NFAITCase.testStartWithOptional."""
    p = Pattern.begin("start").where(named("c")).optional().followed_by("end1").where(named("b"))
    assert_matches(feed(p, [(C, 1), (B, 6)]), [[C, B], [B]])


def test_end_with_zero_or_more() -> None:
    """Ports NFAITCase.testEndWithZeroOrMore."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by("middle")
        .where(named("a"))
        .one_or_more()
        .optional()
    )
    stream = [(C, 1), (A1, 3), (A2, 4), (A3, 5)]
    assert_matches(feed(p, stream), [[C, A1, A2, A3], [C, A1, A2], [C, A1], [C]])


def test_start_and_end_with_zero_or_more() -> None:
    """Ports NFAITCase.testStartAndEndWithZeroOrMore."""
    p = Pattern.begin("start").where(named("a")).one_or_more().optional()
    stream = [
        (C, 1),
        (A1, 3),
        (A2, 4),
        (A3, 5),
        (ev(44, "d", 5.0), 6),
        (ev(45, "d", 5.0), 6),
        (ev(46, "d", 5.0), 6),
    ]
    assert_matches(feed(p, stream), [[A1, A2, A3], [A1, A2], [A1], [A2, A3], [A2], [A3]])


def test_end_with_optional() -> None:
    """Ports NFAITCase.testEndWithOptional."""
    p = Pattern.begin("start").where(named("c")).followed_by("middle").where(named("a")).optional()
    assert_matches(feed(p, [(C, 1), (A1, 3)]), [[C, A1], [C]])


def test_end_with_one_or_more() -> None:
    """Ports NFAITCase.testEndWithOneOrMore."""
    p = Pattern.begin("start").where(named("c")).followed_by("middle").where(named("a")).one_or_more()
    stream = [(C, 1), (A1, 3), (A2, 4), (A3, 5)]
    assert_matches(feed(p, stream), [[C, A1, A2, A3], [C, A1, A2], [C, A1]])


# the input of testTimesNonStrictOptional2/3, testTimesStrictOptional,
# testOneOrMoreStrictOptional, testTimesStrict and testTimesNonStrict
_GAPPED = [(C, 1), (F, 2), (A1, 3), (F, 4), (A2, 5), (A3, 6), (B, 7)]


def test_times_non_strict_optional1() -> None:
    """Ports NFAITCase.testTimesNonStrictOptional1."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by("middle")
        .where(named("a"))
        .times(3)
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(feed(p, [(C, 1), (F, 2), (B, 7)]), [[C, B]])


def test_times_non_strict_optional2() -> None:
    """Ports NFAITCase.testTimesNonStrictOptional2."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .times(2)
        .allow_combinations()
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(feed(p, _GAPPED), [[C, A1, A2, B], [C, A1, A3, B], [C, A2, A3, B], [C, B]])


def test_times_non_strict_optional3() -> None:
    """Ports NFAITCase.testTimesNonStrictOptional3."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .times(2)
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(feed(p, _GAPPED), [[C, A1, A2, B], [C, A2, A3, B], [C, B]])


def test_times_strict_optional() -> None:
    """Ports NFAITCase.testTimesStrictOptional."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .times(2)
        .consecutive()
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(feed(p, _GAPPED), [[C, A2, A3, B], [C, B]])


def test_one_or_more_strict_optional() -> None:
    """Ports NFAITCase.testOneOrMoreStrictOptional."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .one_or_more()
        .consecutive()
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(
        feed(p, _GAPPED),
        [[C, A2, A3, B], [C, A1, B], [C, A2, B], [C, A3, B], [C, B]],
    )


def test_times_strict_optional1() -> None:
    """Ports NFAITCase.testTimesStrictOptional1."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .next("middle")
        .where(named("a"))
        .times(2)
        .consecutive()
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(C, 1), (A1, 3), (A2, 5), (A3, 6), (B, 7)]
    assert_matches(feed(p, stream), [[C, A1, A2, B], [C, B]])


def test_optional_times_non_strict_with_next() -> None:
    """Ports NFAITCase.testOptionalTimesNonStrictWithNext."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .next("middle")
        .where(named("a"))
        .times(2)
        .allow_combinations()
        .optional()
        .followed_by("end1")
        .where(named("b"))
    )
    stream = [(C, 1), (A1, 2), (F, 3), (A2, 4), (F, 5), (A3, 6), (B, 7)]
    assert_matches(feed(p, stream), [[C, A1, A2, B], [C, A1, A3, B], [C, B]])


# the input of Flink's testOneOrMore / testZeroOrMore helpers
_D = ev(50, "d", 6.0)
_LOOP_STREAM = [(C, 1), (_D, 2), (A1, 3), (A2, 4), (A3, 4), (_D, 5), (A4, 6), (B, 7)]


def _loop(inner: str, optional: bool) -> Evaluation[Any]:
    """c, a+ (``inner``: strict / next / any; optional or not), b (followed_by)."""
    p = Pattern.begin("start").where(named("c")).followed_by("middle").where(named("a")).one_or_more()
    if optional:
        p = p.optional()
    if inner == "strict":
        p = p.consecutive()
    elif inner == "any":
        p = p.allow_combinations()
    return feed(p.followed_by("end1").where(named("b")), _LOOP_STREAM)


def test_strict_one_or_more() -> None:
    """Ports NFAITCase.testStrictOneOrMore."""
    assert_matches(_loop("strict", False), [[C, A1, A2, A3, B], [C, A1, A2, B], [C, A1, B]])


def test_skip_till_next_one_or_more() -> None:
    """Ports NFAITCase.testSkipTillNextOneOrMore."""
    assert_matches(
        _loop("next", False),
        [[C, A1, A2, A3, A4, B], [C, A1, A2, A3, B], [C, A1, A2, B], [C, A1, B]],
    )


def test_skip_till_any_one_or_more() -> None:
    """Ports NFAITCase.testSkipTillAnyOneOrMore."""
    assert_matches(
        _loop("any", False),
        [
            [C, A1, A2, A3, A4, B],
            [C, A1, A3, A4, B],
            [C, A1, A2, A3, B],
            [C, A1, A2, A4, B],
            [C, A1, A2, B],
            [C, A1, A3, B],
            [C, A1, A4, B],
            [C, A1, B],
        ],
    )


def test_strict_eager_zero_or_more() -> None:
    """Ports NFAITCase.testStrictEagerZeroOrMore."""
    assert_matches(_loop("strict", True), [[C, A1, A2, A3, B], [C, A1, A2, B], [C, A1, B], [C, B]])


def test_skip_till_any_zero_or_more() -> None:
    """Ports NFAITCase.testSkipTillAnyZeroOrMore."""
    assert_matches(
        _loop("any", True),
        [
            [C, A1, A2, A3, A4, B],
            [C, A1, A2, A4, B],
            [C, A1, A3, A4, B],
            [C, A1, A4, B],
            [C, A1, A2, A3, B],
            [C, A1, A2, B],
            [C, A1, A3, B],
            [C, A1, B],
            [C, B],
        ],
    )


def test_skip_till_next_zero_or_more() -> None:
    """Ports NFAITCase.testSkipTillNextZeroOrMore."""
    assert_matches(
        _loop("next", True),
        [[C, A1, A2, A3, A4, B], [C, A1, A2, A3, B], [C, A1, A2, B], [C, A1, B], [C, B]],
    )


def test_times_strict() -> None:
    """Ports NFAITCase.testTimesStrict."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .times(2)
        .consecutive()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(feed(p, _GAPPED), [[C, A2, A3, B]])


def test_times_non_strict() -> None:
    """Ports NFAITCase.testTimesNonStrict."""
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by_any("middle")
        .where(named("a"))
        .times(2)
        .allow_combinations()
        .followed_by("end1")
        .where(named("b"))
    )
    assert_matches(feed(p, _GAPPED), [[C, A1, A2, B], [C, A1, A3, B], [C, A2, A3, B]])


_START_STRICT_STREAM = [(C, 1), (A1, 3), (C, 4), (A2, 5), (A3, 6)]


def test_start_with_zero_or_more_strict() -> None:
    """Ports NFAITCase.testStartWithZeroOrMoreStrict."""
    p = Pattern.begin("start").where(named("a")).one_or_more().optional().consecutive()
    assert_matches(feed(p, _START_STRICT_STREAM), [[A1], [A2, A3], [A2], [A3]])


def test_start_with_one_or_more_strict() -> None:
    """Ports NFAITCase.testStartWithOneOrMoreStrict."""
    p = Pattern.begin("start").where(named("a")).one_or_more().consecutive()
    assert_matches(feed(p, _START_STRICT_STREAM), [[A1], [A2, A3], [A2], [A3]])


def test_branching_pattern_skip_till_next() -> None:
    """Ports NFAITCase.testBranchingPatternSkipTillNext."""
    p = _branching("followed_by", "followed_by", "followed_by_any")
    assert_matches(feed(p, _BR_STREAM), [[_BR_START, _BR_M1, _BR_N1, _BR_END]])


def test_branching_pattern_mixed_followed_by() -> None:
    """Ports NFAITCase.testBranchingPatternMixedFollowedBy."""
    p = _branching("followed_by_any", "followed_by", "followed_by_any")
    assert_matches(
        feed(p, _BR_STREAM),
        [
            [_BR_START, _BR_M1, _BR_N1, _BR_END],
            [_BR_START, _BR_M2, _BR_N1, _BR_END],
            [_BR_START, _BR_M3, _BR_N1, _BR_END],
        ],
    )


def test_multiple_takes_version_collision() -> None:
    """Ports NFAITCase.testMultipleTakesVersionCollision."""
    s = ev(40, "c", 1.0)
    m1, m2, m3, m4, m5 = (ev(41, "a", price) for price in (2.0, 3.0, 4.0, 5.0, 6.0))
    end = ev(44, "b", 5.0)
    p = (
        Pattern.begin("start")
        .where(named("c"))
        .followed_by("middle1")
        .where(named("a"))
        .one_or_more()
        .allow_combinations()
        .followed_by("middle2")
        .where(named("a"))
        .one_or_more()
        .allow_combinations()
        .followed_by("end")
        .where(named("b"))
    )
    stream = [(s, 1), (m1, 3), (m2, 4), (m3, 5), (m4, 6), (m5, 7), (end, 10)]
    assert_matches(
        feed(p, stream),
        [
            [s, m1, m2, m3, m4, m5, end],
            [s, m1, m2, m3, m4, m5, end],
            [s, m1, m2, m3, m4, m5, end],
            [s, m1, m2, m3, m4, m5, end],
            [s, m1, m2, m3, m4, end],
            [s, m1, m2, m4, m5, end],
            [s, m1, m2, m3, m4, end],
            [s, m1, m2, m3, m5, end],
            [s, m1, m3, m4, m5, end],
            [s, m1, m3, m4, m5, end],
            [s, m1, m2, m3, m4, end],
            [s, m1, m2, m3, m5, end],
            [s, m1, m2, m4, m5, end],
            [s, m1, m2, m3, end],
            [s, m1, m3, m4, end],
            [s, m1, m4, m5, end],
            [s, m1, m2, m3, end],
            [s, m1, m2, m4, end],
            [s, m1, m2, m5, end],
            [s, m1, m2, end],
        ],
    )


def test_nfa_result_ordering() -> None:
    """Ports NFAITCase.testNFAResultOrdering."""
    s1, s2, s3, s4 = (ev(41, f"a-{i}", 1.0 + i) for i in range(1, 5))
    e1, e2, e3 = (ev(41, f"b-{i}", 5.0 + i) for i in range(1, 4))
    p = (
        Pattern.begin("start")
        .where(lambda e: e["name"].startswith("a-"))
        .times(4)
        .allow_combinations()
        .followed_by_any("middle")
        .where(lambda e: e["name"].startswith("b-"))
        .times(3)
        .consecutive()
    )
    stream = [(s1, 1), (s2, 3), (s3, 4), (s4, 5), (e1, 6), (e2, 7), (e3, 10)]
    result = feed(p, stream)
    assert len(result.matches) == 1
    match = result.matches[0]
    assert [key(e) for e in match["start"]] == [key(e) for e in (s1, s2, s3, s4)]
    assert [key(e) for e in match["middle"]] == [key(e) for e in (e1, e2, e3)]


def test_nfa_result_key_ordering() -> None:
    """Ports NFAITCase.testNFAResultKeyOrdering."""
    names = ["a", "b", "aa", "bb", "ab"]
    p = Pattern.begin("a").where(named("a"))
    for name in names[1:]:
        p = p.next(name).where(named(name))
    timestamps = [1, 3, 4, 5, 6]
    stream = [(ev(41, name, 2.0 + i), timestamps[i]) for i, name in enumerate(names)]
    result = feed(p, stream)
    assert len(result.matches) == 1
    assert list(result.matches[0]) == names
