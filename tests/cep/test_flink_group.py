"""Ports of Apache Flink's ``GroupITCase`` (group patterns: a whole pattern as one step).

Same input and same expected matches as each Flink case; see ``_flink`` for how
records and time map onto ``Pattern.evaluate``. Also here, because it needs groups:
``GreedyITCase.testGreedyZeroOrMoreBeforeGroupPattern``.

Comparison: Flink sorts the events inside each match before comparing
(``NFATestUtilities.comparePatterns``), and its expected lists are written in input
order. A group loop interleaves its inner steps (``a1 b1 a2 b2`` is ``middle1: [a1, a2]``
and ``middle2: [b1, b2]``), so ``_flink.assert_matches``' step-by-step flattening does
not give Flink's lists; here each match is flattened in time order (``ts``) instead,
and compared with Flink's expected lists as a multiset.

Every case is ported. Left out of them: the extra assertions of
``testGroupFollowedByOneOrMoreWithUntilCondition`` on the NFA's internal state after
the input (a single partial match left, at ``start``), which inspect internals the
API does not expose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cep._flink import Event, event, name_is, records, run
from minibatch_rx.cep import Evaluation, Pattern

Key = tuple[str, float, int]


def _key(e: Mapping[str, Any]) -> Key:
    """What Flink's ``Event.equals`` compares: name, price, id (not the timestamp)."""
    return (str(e["name"]), float(e["price"]), int(e["id"]))


def _chronological(match: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[Key, ...]:
    """All the events of a match, in time order, whatever step took them."""
    taken = [e for step in match for e in match[step]]
    return tuple(_key(e) for e in sorted(taken, key=lambda e: e["ts"]))


def _assert_matches(result: Evaluation[Event], expected: Sequence[Sequence[Event]]) -> None:
    """The matches, each flattened in time order, equal ``expected`` as a multiset."""
    got = sorted(_chronological(m) for m in result.matches)
    want = sorted(tuple(_key(e) for e in lst) for lst in expected)
    assert got == want


def _steps(match: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, list[Key]]:
    """A match as step name -> its events' keys (steps without events left out)."""
    return {step: [_key(e) for e in match[step]] for step in match if match[step]}


def _pair(first: str, second: str, *, strict: bool = False) -> Pattern[Event]:
    """The inner group ``middle1 -> middle2`` with conditions on the names ``first``, ``second``."""
    head = Pattern.begin("middle1").where(name_is(first))
    tail = head.next("middle2") if strict else head.followed_by("middle2")
    return tail.where(name_is(second))


def _start(name: str) -> Pattern[Event]:
    """``Pattern.begin("start")`` taking an event named ``name``."""
    return Pattern.begin("start").where(name_is(name))


def _then_end(pattern: Pattern[Event], name: str) -> Pattern[Event]:
    """``pattern`` followed by the step ``end`` taking an event named ``name``."""
    return pattern.followed_by("end").where(name_is(name))


def _c_ab_ab_d() -> tuple[list[Event], tuple[Event, ...]]:
    """c a1 b1 a2 b2 d at 1..6 (the input of several cases)."""
    c, a1, b1 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "b", 3.0)
    a2, b2, d = event(43, "a", 4.0), event(44, "b", 5.0), event(45, "d", 6.0)
    recs = records((c, 1), (a1, 2), (b1, 3), (a2, 4), (b2, 5), (d, 6))
    return recs, (c, a1, b1, a2, b2, d)


def _c_ab_ab_ab_d() -> tuple[list[Event], tuple[Event, ...]]:
    """c a1 b1 a2 b2 a3 b3 d at 1..8 (the input of the followedByAny cases)."""
    c, a1, b1 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "b", 3.0)
    a2, b2, a3 = event(43, "a", 4.0), event(44, "b", 5.0), event(45, "a", 4.0)
    b3, d = event(46, "b", 5.0), event(47, "d", 6.0)
    recs = records((c, 1), (a1, 2), (b1, 3), (a2, 4), (b2, 5), (a3, 6), (b3, 7), (d, 8))
    return recs, (c, a1, b1, a2, b2, a3, b3, d)


def test_group_followed_by_times() -> None:
    """Ports GroupITCase.testGroupFollowedByTimes."""
    recs, (c, a1, b1, a2, b2, d) = _c_ab_ab_d()
    # c (a b){2} d
    p = _then_end(_start("c").followed_by(_pair("a", "b")).times(2), "d")
    result = run(p, recs)
    _assert_matches(result, [[c, a1, b1, a2, b2, d]])
    # The events of a group are keyed by the group's inner step names.
    assert [_steps(m) for m in result.matches] == [
        {
            "start": [_key(c)],
            "middle1": [_key(a1), _key(a2)],
            "middle2": [_key(b1), _key(b2)],
            "end": [_key(d)],
        }
    ]


def test_group_followed_by_optional() -> None:
    """Ports GroupITCase.testGroupFollowedByOptional."""
    c, a1, a2 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "a", 2.0)
    b, d = event(43, "b", 3.0), event(44, "d", 4.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (b, 4), (d, 5))
    # c (a b)? d
    p = _then_end(_start("c").followed_by(_pair("a", "b")).optional(), "d")
    _assert_matches(run(p, recs), [[c, d], [c, a1, b, d]])


def test_followed_by_group_times_optional() -> None:
    """Ports GroupITCase.testFollowedByGroupTimesOptional."""
    c, a, d = event(40, "c", 1.0), event(41, "a", 2.0), event(45, "d", 3.0)
    recs = records((c, 1), (a, 2), (d, 3))
    # c (a b){2}? d
    p = _then_end(_start("c").followed_by(_pair("a", "b")).times(2).optional(), "d")
    _assert_matches(run(p, recs), [[c, d]])


def test_group_followed_by_one_or_more() -> None:
    """Ports GroupITCase.testGroupFollowedByOneOrMore."""
    recs, (c, a1, b1, a2, b2, d) = _c_ab_ab_d()
    # c (a b)+ d
    p = _then_end(_start("c").followed_by(_pair("a", "b")).one_or_more(), "d")
    _assert_matches(run(p, recs), [[c, a1, b1, d], [c, a1, b1, a2, b2, d]])


def test_group_followed_by_zero_or_more() -> None:
    """Ports GroupITCase.testGroupFollowedByZeroOrMore."""
    recs, (c, a1, b1, a2, b2, d) = _c_ab_ab_d()
    # c (a b)* d
    p = _then_end(_start("c").followed_by(_pair("a", "b")).one_or_more().optional(), "d")
    _assert_matches(run(p, recs), [[c, d], [c, a1, b1, d], [c, a1, b1, a2, b2, d]])


def test_group_followed_by_any_times_combinations() -> None:
    """Ports GroupITCase.testGroupFollowedByAnyTimesCombinations."""
    recs, (c, a1, b1, a2, b2, a3, b3, d) = _c_ab_ab_ab_d()
    # c any (a b){2} d, combinations allowed
    p = _then_end(_start("c").followed_by_any(_pair("a", "b")).times(2).allow_combinations(), "d")
    _assert_matches(
        run(p, recs),
        [[c, a1, b1, a2, b2, d], [c, a1, b1, a3, b3, d], [c, a2, b2, a3, b3, d]],
    )


def test_group_followed_by_any_times_optional() -> None:
    """Ports GroupITCase.testGroupFollowedByAnyTimesOptional."""
    recs, (c, a1, b1, a2, b2, a3, b3, d) = _c_ab_ab_ab_d()
    # c any (a b){2}? d
    p = _then_end(_start("c").followed_by_any(_pair("a", "b")).times(2).optional(), "d")
    _assert_matches(run(p, recs), [[c, d], [c, a1, b1, a2, b2, d], [c, a2, b2, a3, b3, d]])


def test_group_followed_by_any_one_or_more() -> None:
    """Ports GroupITCase.testGroupFollowedByAnyOneOrMore."""
    recs, (c, a1, b1, a2, b2, a3, b3, d) = _c_ab_ab_ab_d()
    # c any (a b){1,} d
    p = _then_end(_start("c").followed_by_any(_pair("a", "b")).one_or_more(), "d")
    _assert_matches(
        run(p, recs),
        [
            [c, a1, b1, d],
            [c, a2, b2, d],
            [c, a3, b3, d],
            [c, a1, b1, a2, b2, d],
            [c, a2, b2, a3, b3, d],
            [c, a1, b1, a2, b2, a3, b3, d],
        ],
    )


def test_group_next_zero_or_more() -> None:
    """Ports GroupITCase.testGroupNextZeroOrMore."""
    c, a1, b1 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "b", 3.0)
    a2, b2, a3 = event(43, "a", 3.0), event(44, "b", 3.0), event(45, "a", 4.0)
    b3, d = event(46, "b", 3.0), event(47, "d", 1.0)
    recs = records((c, 1), (a1, 3), (b1, 4), (a2, 5), (b2, 6), (a3, 7), (b3, 8), (d, 9))
    # c next (a b)* d, the loop consecutive
    p = _then_end(_start("c").next(_pair("a", "b")).one_or_more().optional().consecutive(), "d")
    _assert_matches(
        run(p, recs),
        [[c, d], [c, a1, b1, d], [c, a1, b1, a2, b2, d], [c, a1, b1, a2, b2, a3, b3, d]],
    )


def _c_ab_d_ab_e() -> tuple[list[Event], tuple[Event, ...]]:
    """c a1 b1 d a2 b2 e at 1..7 (the input of the two negation cases)."""
    c, a1, b1 = event(40, "c", 1.0), event(41, "a", 2.0), event(42, "b", 3.0)
    d, a2, b2 = event(43, "d", 3.0), event(44, "a", 4.0), event(45, "b", 5.0)
    e = event(46, "e", 6.0)
    recs = records((c, 1), (a1, 2), (b1, 3), (d, 4), (a2, 5), (b2, 6), (e, 7))
    return recs, (c, a1, b1, d, a2, b2, e)


def test_group_not_followed_by() -> None:
    """Ports GroupITCase.testGroupNotFollowedBy."""
    recs, (c, _a1, _b1, _d, a2, b2, e) = _c_ab_d_ab_e()
    # c any (a b) !-> d -> e
    group = _start("c").followed_by_any(_pair("a", "b"))
    p = _then_end(group.not_followed_by("notPattern").where(name_is("d")), "e")
    _assert_matches(run(p, recs), [[c, a2, b2, e]])


def test_group_not_next() -> None:
    """Ports GroupITCase.testGroupNotNext."""
    recs, (c, _a1, _b1, _d, a2, b2, e) = _c_ab_d_ab_e()
    # c any (a b) !next d -> e
    group = _start("c").followed_by_any(_pair("a", "b"))
    p = _then_end(group.not_next("notPattern").where(name_is("d")), "e")
    _assert_matches(run(p, recs), [[c, a2, b2, e]])


def _nested(*, times: bool, consecutive: bool = False) -> Pattern[Event]:
    """The group ``a (b c)*`` (``times=False``) or ``a (b c){3}`` (optionally consecutive)."""
    inner = Pattern.begin("middle2").where(name_is("b")).followed_by("middle3").where(name_is("c"))
    outer = Pattern.begin("middle1").where(name_is("a")).followed_by(inner)
    if not times:
        return outer.one_or_more().optional()
    outer = outer.times(3)
    return outer.consecutive() if consecutive else outer


def test_group_nest() -> None:
    """Ports GroupITCase.testGroupNest."""
    d, a1, b1 = event(40, "d", 1.0), event(41, "a", 2.0), event(42, "b", 3.0)
    c1, b2, c2 = event(43, "c", 4.0), event(44, "b", 5.0), event(45, "c", 4.0)
    e = event(46, "e", 6.0)
    recs = records((d, 1), (a1, 2), (b1, 3), (c1, 4), (b2, 5), (c2, 6), (e, 7))
    # d (a (b c)*)? e
    p = _then_end(_start("d").followed_by(_nested(times=False)).optional(), "e")
    _assert_matches(
        run(p, recs),
        [[d, e], [d, a1, e], [d, a1, b1, c1, e], [d, a1, b1, c1, b2, c2, e]],
    )


def _d_abcbcbc_abcbcbc_e(*, breaking: bool) -> tuple[list[Event], tuple[Event, ...]]:
    """d, a1 (b c) x3, a2 (b c) x3, e at 1..16; ``breaking`` puts an unrelated event after c4."""
    d, a1, b1 = event(40, "d", 1.0), event(41, "a", 2.0), event(42, "b", 3.0)
    c1, b2, c2 = event(43, "c", 4.0), event(44, "b", 5.0), event(45, "c", 4.0)
    b3, c3, a2 = event(46, "b", 5.0), event(47, "c", 4.0), event(48, "a", 2.0)
    b4, c4, b5 = event(49, "b", 3.0), event(50, "c", 4.0), event(51, "b", 5.0)
    c5, b6, c6 = event(52, "c", 4.0), event(53, "b", 5.0), event(54, "c", 4.0)
    e = event(55, "e", 6.0)
    head = [d, a1, b1, c1, b2, c2, b3, c3, a2, b4, c4]
    tail = [b5, c5, b6, c6, e]
    stream = head + ([event(0, "breaking", 99.0)] if breaking else []) + tail
    recs = records(*((ev, ts) for ts, ev in enumerate(stream, start=1)))
    return recs, (d, a1, b1, c1, b2, c2, b3, c3, a2, b4, c4, b5, c5, b6, c6, e)


def test_group_nest_times() -> None:
    """Ports GroupITCase.testGroupNestTimes."""
    recs, events = _d_abcbcbc_abcbcbc_e(breaking=False)
    d, a1, b1, c1, b2, c2, b3, c3, a2, b4, c4, b5, c5, b6, c6, e = events
    # d any (a (b c){3}){0, 2} e
    p = _then_end(_start("d").followed_by_any(_nested(times=True)).times(0, 2), "e")
    _assert_matches(
        run(p, recs),
        [
            [d, e],
            [d, a1, b1, c1, b2, c2, b3, c3, e],
            [d, a2, b4, c4, b5, c5, b6, c6, e],
            [d, a1, b1, c1, b2, c2, b3, c3, a2, b4, c4, b5, c5, b6, c6, e],
        ],
    )


def test_group_nest_times_consecutive() -> None:
    """Ports GroupITCase.testGroupNestTimesConsecutive."""
    recs, events = _d_abcbcbc_abcbcbc_e(breaking=True)
    d, a1, b1, c1, b2, c2, b3, c3 = events[:8]
    e = events[-1]
    # d any (a (b c){3} consecutive){0, 2} consecutive e
    group = _start("d").followed_by_any(_nested(times=True, consecutive=True))
    p = _then_end(group.times(0, 2).consecutive(), "e")
    _assert_matches(run(p, recs), [[d, e], [d, a1, b1, c1, b2, c2, b3, c3, e]])


def test_group_begin() -> None:
    """Ports GroupITCase.testGroupBegin."""
    a1, b1, a2 = event(41, "a", 2.0), event(42, "b", 3.0), event(43, "a", 4.0)
    b2, d = event(44, "b", 5.0), event(45, "d", 6.0)
    recs = records((a1, 1), (b1, 2), (a2, 3), (b2, 4), (d, 5))
    # (a b){1, 2} d
    p = _then_end(Pattern.begin(_pair("a", "b")).times(1, 2), "d")
    _assert_matches(run(p, recs), [[a1, b1, d], [a2, b2, d], [a1, b1, a2, b2, d]])


def test_group_followed_by_one_or_more_with_until_condition() -> None:
    """Ports GroupITCase.testGroupFollowedByOneOrMoreWithUntilCondition."""
    recs, (c, a1, b1, a2, b2, d) = _c_ab_ab_d()
    # c (a b)+ until d, then d
    p = _then_end(_start("c").followed_by(_pair("a", "b")).one_or_more().until(name_is("d")), "d")
    _assert_matches(run(p, recs), [[c, a1, b1, d], [c, a1, b1, a2, b2, d]])


def test_group_starts_with_optional_pattern() -> None:
    """Ports GroupITCase.testGroupStartsWithOptionalPattern."""
    a, c, d = event(40, "a", 1.0), event(41, "c", 2.0), event(42, "d", 3.0)
    recs = records((a, 1), (c, 2), (d, 3))
    # a next (b? next c) next d; Flink matches this since FLINK-30864 (an optional head inside a group)
    inner = Pattern.begin("middle1").where(name_is("b")).optional().next("middle2").where(name_is("c"))
    p = _start("a").next(inner).next("d").where(name_is("d"))
    _assert_matches(run(p, recs), [[a, c, d]])


def test_followed_by_optional_group_pattern() -> None:
    """Ports GroupITCase.testFollowedByOptionalGroupPattern."""
    a, d1, d2 = event(40, "a", 1.0), event(41, "d", 2.0), event(42, "d", 3.0)
    recs = records((a, 1), (d1, 2), (d2, 3))
    # a -> (b next c)? next d
    p = _start("a").followed_by(_pair("b", "c", strict=True)).optional().next("d").where(name_is("d"))
    _assert_matches(run(p, recs), [[a, d1]])


def test_greedy_zero_or_more_before_group_pattern() -> None:
    """Ports GreedyITCase.testGreedyZeroOrMoreBeforeGroupPattern."""
    # Flink gives all but f id 40 and price 1.0: events of the same name are equal (Event.equals).
    c, a1, a2, a3 = event(40, "c", 1.0), event(40, "a", 1.0), event(40, "a", 1.0), event(40, "a", 1.0)
    d1, e1, d2, e2 = event(40, "d", 1.0), event(40, "e", 1.0), event(40, "d", 1.0), event(40, "e", 1.0)
    f = event(44, "f", 3.0)
    dummy = event(43, "dummy", 2.0)
    recs = records((c, 1), (a1, 2), (a2, 3), (dummy, 4), (a3, 5), (d1, 6), (e1, 7), (d2, 8), (e2, 9), (f, 10))
    # c a* (greedy) (d e){2} f
    loop = _start("c").followed_by("middle").where(name_is("a")).one_or_more().optional().greedy()
    p = _then_end(loop.followed_by(_pair("d", "e")).times(2), "f")
    _assert_matches(run(p, recs), [[c, a1, a2, a3, d1, e1, d2, e2, f]])
