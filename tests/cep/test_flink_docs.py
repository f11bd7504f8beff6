"""Conformance scenarios from the examples of Apache Flink's CEP documentation
(``docs/content/docs/libs/cep.md``).

The documentation writes events as labels (``a``, ``b1``, ``C``, ``A4`` ...); an event
here is ``{"name": label}`` and its kind is the label's first letter, lower-cased. Time
is each event's position in the input, and it does not go past the last event. The
documentation lists each match's events, so a match is compared as its events in step
order, and the matches as a multiset.

Where the documentation leaves a step's contiguity open, the pattern is the one Flink's
own tests use for that example (``AfterMatchSkipITCase``'s "Example from docs" cases:
``b+`` is ``one_or_more().consecutive().greedy()`` followed by ``next``; the
``(a | b | c) (b | c) c+.greedy d`` steps are joined by ``followed_by``; ``a b+`` is
``a`` then ``next`` ``b`` ``one_or_more()``).

Not ported, because the documentation contradicts the behaviour Flink's NFA tests
establish for the very pattern it shows:

- "Contiguity within looping patterns", strict row: ``a`` followedByAny ``b+``
  consecutive, followedBy ``c`` on ``a b1 d1 b2 d2 b3 c`` is documented as ``{a b3 c}``
  alone, but a consecutive loop still ends after ``b1`` (and after ``b2``) and reaches
  ``c`` through the relaxed ``followedBy``, so Flink also yields ``{a b1 c}`` and
  ``{a b2 c}`` (compare NFAITCase.testStrictOneOrMore).
- ``allowCombinations()``, "with combinations enabled": ``c`` followedBy ``a+``
  allowCombinations followedBy ``b`` on ``C D A1 A2 A3 D A4 B`` is documented with 15
  matches, including ones without ``A1``; with ``followedBy`` only the first ``a`` after
  ``c`` can start the loop, and NFAITCase.testSkipTillAnyOneOrMore (the same scenario)
  expects exactly the 8 combinations that contain ``A1``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from minibatch_rx.cep import AfterMatch, Evaluation, Pattern
from minibatch_rx.errors import InvalidArgumentError

Event = dict[str, Any]


def kind(*kinds: str) -> Callable[[Event], bool]:
    """Condition: the event's kind (first letter of its label) is one of ``kinds``."""
    return lambda e: e["name"][0].lower() in kinds


def run(pattern: Pattern[Any], labels: str) -> Evaluation[Any]:
    """Run ``pattern`` over the space-separated event ``labels``."""
    events = [{"name": label} for label in labels.split()]
    return pattern.evaluate(events, end=len(events) - 1)


def labels(match: Mapping[str, Sequence[Mapping[str, Any]]]) -> tuple[str, ...]:
    """A match's event labels, step after step in pattern order."""
    return tuple(e["name"] for step in match for e in match[step])


def assert_matches(result: Evaluation[Any], *expected: str) -> None:
    """The matches are ``expected`` (each a space-separated label list), as a multiset."""
    assert sorted(labels(m) for m in result.matches) == sorted(tuple(match.split()) for match in expected)


# -- Combining patterns: contiguity --------------------------------------------------

_A_B_INPUT = "a c b1 b2"


def test_contiguity_strict() -> None:
    """cep.md, contiguity: `a` next `b` on a, c, b1, b2 gives no match."""
    p = Pattern.begin("a").where(kind("a")).next("b").where(kind("b"))
    assert_matches(run(p, _A_B_INPUT))


def test_contiguity_relaxed() -> None:
    """cep.md, contiguity: `a` followedBy `b` on a, c, b1, b2 gives {a b1}."""
    p = Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b"))
    assert_matches(run(p, _A_B_INPUT), "a b1")


def test_contiguity_non_deterministic_relaxed() -> None:
    """cep.md, contiguity: `a` followedByAny `b` on a, c, b1, b2 gives {a b1}, {a b2}."""
    p = Pattern.begin("a").where(kind("a")).followed_by_any("b").where(kind("b"))
    assert_matches(run(p, _A_B_INPUT), "a b1", "a b2")


# -- Contiguity within looping patterns ---------------------------------------------

_A_BS_C_INPUT = "a b1 d1 b2 d2 b3 c"


def _a_bs_c(loop: Callable[[Pattern[Any]], Pattern[Any]]) -> Pattern[Any]:
    bs = Pattern.begin("a").where(kind("a")).followed_by_any("b").where(kind("b")).one_or_more()
    return loop(bs).followed_by("c").where(kind("c"))


def test_looping_contiguity_relaxed() -> None:
    """cep.md, contiguity within looping patterns: `a b+ c`, relaxed inside the loop."""
    p = _a_bs_c(lambda bs: bs)
    assert_matches(
        run(p, _A_BS_C_INPUT),
        "a b1 c",
        "a b1 b2 c",
        "a b1 b2 b3 c",
        "a b2 c",
        "a b2 b3 c",
        "a b3 c",
    )


def test_looping_contiguity_non_deterministic_relaxed() -> None:
    """cep.md, contiguity within looping patterns: `a b+ c` with allowCombinations."""
    p = _a_bs_c(lambda bs: bs.allow_combinations())
    assert_matches(
        run(p, _A_BS_C_INPUT),
        "a b1 c",
        "a b1 b2 c",
        "a b1 b3 c",
        "a b1 b2 b3 c",
        "a b2 c",
        "a b2 b3 c",
        "a b3 c",
    )


# -- consecutive() / allowCombinations() examples -----------------------------------

_C_AS_B_INPUT = "C D A1 A2 A3 D A4 B"


def _c_as_b(loop: Callable[[Pattern[Any]], Pattern[Any]]) -> Pattern[Any]:
    middle = Pattern.begin("start").where(kind("c")).followed_by("middle").where(kind("a")).one_or_more()
    return loop(middle).followed_by("end1").where(kind("b"))


def test_consecutive_example() -> None:
    """cep.md, consecutive(): `c a+ b` on C D A1 A2 A3 D A4 B with consecutive applied."""
    p = _c_as_b(lambda middle: middle.consecutive())
    assert_matches(run(p, _C_AS_B_INPUT), "C A1 B", "C A1 A2 B", "C A1 A2 A3 B")


def test_consecutive_example_without_consecutive() -> None:
    """cep.md, consecutive() / allowCombinations(): `c a+ b` with the default relaxed loop."""
    p = _c_as_b(lambda middle: middle)
    assert_matches(run(p, _C_AS_B_INPUT), "C A1 B", "C A1 A2 B", "C A1 A2 A3 B", "C A1 A2 A3 A4 B")


# -- Stop condition ------------------------------------------------------------------


def test_until_example() -> None:
    """cep.md, stop condition: `(a+ until b)` on a1 c a2 b a3 gives {a1 a2} {a1} {a2} {a3}."""
    p = Pattern.begin("a").where(kind("a")).one_or_more().until(kind("b"))
    assert_matches(run(p, "a1 c a2 b a3"), "a1 a2", "a1", "a2", "a3")


# -- After match skip strategy: `b+ c` on b1 b2 b3 c ----------------------------------


def _bs_c(after_match: AfterMatch) -> Evaluation[Any]:
    p = (
        Pattern.begin("b", after_match=after_match)
        .where(kind("b"))
        .one_or_more()
        .consecutive()
        .greedy()
        .next("c")
        .where(kind("c"))
    )
    return run(p, "b1 b2 b3 c")


def test_skip_table_no_skip() -> None:
    """cep.md, after match skip table for `b+ c` on b1 b2 b3 c: NO_SKIP."""
    assert_matches(_bs_c(AfterMatch.no_skip()), "b1 b2 b3 c", "b2 b3 c", "b3 c")


def test_skip_table_skip_to_next() -> None:
    """cep.md, after match skip table for `b+ c` on b1 b2 b3 c: SKIP_TO_NEXT."""
    assert_matches(_bs_c(AfterMatch.skip_to_next()), "b1 b2 b3 c", "b2 b3 c", "b3 c")


def test_skip_table_skip_past_last_event() -> None:
    """cep.md, after match skip table for `b+ c` on b1 b2 b3 c: SKIP_PAST_LAST_EVENT."""
    assert_matches(_bs_c(AfterMatch.skip_past_last_event()), "b1 b2 b3 c")


def test_skip_table_skip_to_first() -> None:
    """cep.md, after match skip table for `b+ c` on b1 b2 b3 c: SKIP_TO_FIRST[b]."""
    assert_matches(_bs_c(AfterMatch.skip_to_first("b")), "b1 b2 b3 c", "b2 b3 c", "b3 c")


def test_skip_table_skip_to_last() -> None:
    """cep.md, after match skip table for `b+ c` on b1 b2 b3 c: SKIP_TO_LAST[b]."""
    assert_matches(_bs_c(AfterMatch.skip_to_last("b")), "b1 b2 b3 c", "b3 c")


# -- `(a | b | c) (b | c) c+.greedy d` on a b c1 c2 c3 d -----------------------------


def _abc_bc_cs_d(after_match: AfterMatch) -> Evaluation[Any]:
    p = (
        Pattern.begin("abc", after_match=after_match)
        .where(kind("a", "b", "c"))
        .followed_by("bc")
        .where(kind("b", "c"))
        .followed_by("cs")
        .where(kind("c"))
        .one_or_more()
        .greedy()
        .followed_by("d")
        .where(kind("d"))
    )
    return run(p, "a b c1 c2 c3 d")


def test_greedy_table_no_skip() -> None:
    """cep.md, `(a | b | c) (b | c) c+.greedy d` on a b c1 c2 c3 d: NO_SKIP."""
    assert_matches(_abc_bc_cs_d(AfterMatch.no_skip()), "a b c1 c2 c3 d", "b c1 c2 c3 d", "c1 c2 c3 d")


def test_greedy_table_skip_to_first() -> None:
    """cep.md, `(a | b | c) (b | c) c+.greedy d` on a b c1 c2 c3 d: SKIP_TO_FIRST[c*]."""
    assert_matches(_abc_bc_cs_d(AfterMatch.skip_to_first("cs")), "a b c1 c2 c3 d", "c1 c2 c3 d")


# -- `a b+` on a b1 b2 b3 ---------------------------------------------------------------


def _a_bs(after_match: AfterMatch) -> Evaluation[Any]:
    p = Pattern.begin("a", after_match=after_match).where(kind("a")).next("b").where(kind("b")).one_or_more()
    return run(p, "a b1 b2 b3")


def test_quantifier_at_end_no_skip() -> None:
    """cep.md, `a b+` on a b1 b2 b3: NO_SKIP."""
    assert_matches(_a_bs(AfterMatch.no_skip()), "a b1", "a b1 b2", "a b1 b2 b3")


def test_quantifier_at_end_skip_to_next() -> None:
    """cep.md, `a b+` on a b1 b2 b3: SKIP_TO_NEXT."""
    assert_matches(_a_bs(AfterMatch.skip_to_next()), "a b1")


# -- Rules the documentation states for pattern construction ------------------------


def _build_and_run(build: Callable[[], Pattern[Any]]) -> None:
    build().evaluate([{"name": "a"}, {"name": "b"}])


def test_step_names_must_be_unique() -> None:
    """cep.md: each pattern must have a unique name."""
    with pytest.raises(InvalidArgumentError):
        _build_and_run(lambda: Pattern.begin("x").where(kind("a")).followed_by("x").where(kind("b")))


def test_step_names_cannot_contain_colon() -> None:
    """cep.md: pattern names cannot contain the character ':'."""
    with pytest.raises(InvalidArgumentError):
        _build_and_run(lambda: Pattern.begin("a:b").where(kind("a")))


def test_not_followed_by_at_end_needs_within() -> None:
    """cep.md: a pattern sequence cannot end with notFollowedBy() without within()."""
    with pytest.raises(InvalidArgumentError):
        _build_and_run(lambda: Pattern.begin("a").where(kind("a")).not_followed_by("b").where(kind("b")))


def test_not_step_cannot_follow_optional_step() -> None:
    """cep.md: a NOT pattern cannot be preceded by an optional one."""
    with pytest.raises(InvalidArgumentError):
        _build_and_run(
            lambda: (
                Pattern.begin("a")
                .where(kind("a"))
                .followed_by("b")
                .where(kind("b"))
                .optional()
                .not_next("c")
                .where(kind("c"))
                .followed_by("d")
                .where(kind("d"))
            )
        )


def test_greedy_applies_to_quantifiers_only() -> None:
    """cep.md: greedy() is only applicable to quantifiers (not to a singleton step)."""
    with pytest.raises(InvalidArgumentError):
        _build_and_run(lambda: Pattern.begin("a").where(kind("a")).greedy())


def test_until_applies_to_looping_steps_only() -> None:
    """cep.md: until() is applicable only in conjunction with oneOrMore()."""
    with pytest.raises(InvalidArgumentError):
        _build_and_run(
            lambda: Pattern.begin("a").where(kind("a")).until(kind("b")).followed_by("b").where(kind("b"))
        )
