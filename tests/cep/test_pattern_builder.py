"""The pattern builder: every malformed pattern is refused when built (or at its
first use), with an error naming the problem; patterns are immutable values.

Also ports the three AfterMatchSkipITCase cases that expect an exception from
``throwExceptionOnMiss()`` (ours: ``strict=True``, raising ``PatternError``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from minibatch_rx.cep import AfterMatch, Context, Match, Pattern, PatternError
from minibatch_rx.errors import InvalidArgumentError


def is_(name: str) -> Callable[[Any], bool]:
    return lambda e: bool(e["name"] == name)


def contains(text: str) -> Callable[[Any], bool]:
    return lambda e: text in e["name"]


def ev(name: str, id_: int = 0) -> dict[str, Any]:
    return {"name": name, "id": id_}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Pattern.begin("a").followed_by("a"), "duplicate step name 'a'"),
        (lambda: Pattern.begin("a").next("b").not_next("a"), "duplicate step name 'a'"),
        (lambda: Pattern.begin("a:b"), "may not contain ':'"),
        (lambda: Pattern.begin("a").followed_by("x:1"), "may not contain ':'"),
        (lambda: Pattern.begin(""), "non-empty str"),
        (lambda: Pattern.begin(3), "non-empty str"),  # type: ignore[arg-type]
        (lambda: Pattern.begin("$end"), "reserved"),
        (lambda: Pattern.begin("a").times(2).times(3), "already has a quantifier"),
        (lambda: Pattern.begin("a").one_or_more().times(2), "already has a quantifier"),
        (lambda: Pattern.begin("a").times(2).times_or_more(3), "already has a quantifier"),
        (lambda: Pattern.begin("a").optional().optional(), "already optional"),
        (lambda: Pattern.begin("a").greedy(), "singleton"),
        (lambda: Pattern.begin("a").consecutive(), "singleton"),
        (lambda: Pattern.begin("a").allow_combinations(), "singleton"),
        (lambda: Pattern.begin("a").one_or_more().consecutive().allow_combinations(), "already has"),
        (lambda: Pattern.begin("a").one_or_more().allow_combinations().greedy(), "contradict"),
        (lambda: Pattern.begin("a").one_or_more().greedy().allow_combinations(), "contradict"),
        (lambda: Pattern.begin("a").until(is_("x")), "looping steps"),
        (lambda: Pattern.begin("a").times(3).until(is_("x")), "looping steps"),
        (lambda: Pattern.begin("a").one_or_more().until(is_("x")).until(is_("y")), "already has an until"),
        (lambda: Pattern.begin("a").optional().not_followed_by("b"), "may not follow the optional step"),
        (lambda: Pattern.begin("a").optional().not_next("b"), "may not follow the optional step"),
        (lambda: Pattern.begin("a").not_next("b").times(2), "negative step"),
        (lambda: Pattern.begin("a").not_followed_by("b").optional(), "negative step"),
        (lambda: Pattern.begin("a").not_next("b").one_or_more(), "negative step"),
        (lambda: Pattern.begin("a").one_or_more().greedy().followed_by("b").optional(), "greedy step"),
        (lambda: Pattern.begin("a").times(0), "int > 0"),
        (lambda: Pattern.begin("a").times(-1, 2), "n >= 0"),
        (lambda: Pattern.begin("a").times(3, 2), "m >= n"),
        (lambda: Pattern.begin("a").times(0, 0), "m needs an int > 0"),
        (lambda: Pattern.begin("a").times(True), "int > 0"),
        (lambda: Pattern.begin("a").times_or_more(0), "int > 0"),
        (lambda: Pattern.begin("a").where(42), "callable"),  # type: ignore[arg-type]
        (lambda: Pattern.begin("a").within(0), "must be > 0"),
        (lambda: Pattern.begin("a").within("ten seconds"), "not an interval"),
        (lambda: Pattern.begin("a", after_match="skip"), "AfterMatch"),  # type: ignore[arg-type]
        (lambda: AfterMatch.skip_to_first("b:c"), "may not contain ':'"),
    ],
)
def test_malformed_patterns_are_refused_when_built(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        build()


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (Pattern.begin("a").not_followed_by("b"), "unless it has within"),
        (Pattern.begin("a").followed_by("c").not_followed_by("b"), "unless it has within"),
        (Pattern.begin("a", after_match=AfterMatch.skip_to_first("x")).next("b"), "not in the pattern"),
        (Pattern.begin("a", after_match=AfterMatch.skip_to_last("x")), "not in the pattern"),
    ],
)
def test_unrunnable_patterns_are_refused_at_first_use(pattern: Pattern[Any], message: str) -> None:
    """Whole-pattern rules are checked when the pattern is first used (check(),
    evaluate() or a pipeline's match()), before any event is looked at."""
    with pytest.raises(InvalidArgumentError, match=message):
        pattern.check()
    with pytest.raises(InvalidArgumentError, match=message):
        pattern.evaluate([ev("a")])


def test_a_trailing_absence_with_within_is_accepted() -> None:
    pattern = Pattern.begin("a").where(is_("a")).not_followed_by("b").where(is_("b")).within(5)
    pattern.check()
    assert pattern.window == 5.0


def test_patterns_are_immutable_and_prefixes_can_be_shared() -> None:
    base = Pattern.begin("a").where(is_("a"))
    strict = base.next("b").where(is_("b"))
    relaxed = base.followed_by("b").where(is_("b"))
    events = [ev("a"), ev("c"), ev("b")]
    assert strict.evaluate(events).matches == []
    assert relaxed.evaluate(events).matches == [{"a": [ev("a")], "b": [ev("b")]}]
    assert base.names == ("a",)
    assert base.evaluate(events).matches == [{"a": [ev("a")]}]
    # Adding a condition to a shared prefix does not change the patterns built from it.
    narrowed = base.where(lambda e: e["id"] == 1)
    assert narrowed.evaluate(events).matches == []
    assert relaxed.evaluate(events).matches == [{"a": [ev("a")], "b": [ev("b")]}]


def test_within_takes_the_shortest_of_several_and_any_interval_form() -> None:
    pattern = Pattern.begin("a").within("1m").followed_by("b").within(timedelta(seconds=30)).within(45)
    assert pattern.window == 30.0
    assert Pattern.begin("a").within("500ms").window == 0.5


def test_where_ands_and_or_where_ors_in_the_order_written() -> None:
    """Flink folds conditions left to right: ((c1 AND c2) OR c3)."""
    pattern = (
        Pattern.begin("x")
        .where(lambda e: e["id"] > 0)
        .where(lambda e: e["id"] < 10)
        .or_where(lambda e: e["id"] == 100)
    )
    events = [{"name": "x", "id": i} for i in (0, 5, 10, 100)]
    found = [m["x"][0]["id"] for m in pattern.evaluate(events).matches]
    assert found == [5, 100]


def test_iterative_conditions_are_told_by_their_signature() -> None:
    """A condition with two positional parameters gets the context; one with a
    default for the second is a simple condition (the default is kept)."""
    seen: list[list[Any]] = []

    def rising(event: dict[str, Any], ctx: Context) -> bool:
        before = ctx.events("up")
        seen.append([e["v"] for e in before])
        return not before or event["v"] > before[-1]["v"]

    def simple(event: dict[str, Any], scale: int = 1) -> bool:
        return bool(event["v"] * scale > 0)

    pattern = Pattern.begin("up").where(simple).where(rising).times(3).consecutive()
    events = [{"v": v} for v in (1, 2, 3)]
    assert [m["up"] for m in pattern.evaluate(events).matches] == [events]
    assert [] in seen and [1, 2] in seen


def test_evaluate_refuses_bad_input_with_a_clear_error() -> None:
    pattern = Pattern.begin("a").where(is_("a"))
    with pytest.raises(InvalidArgumentError, match="list of events"):
        pattern.evaluate("abc")
    with pytest.raises(InvalidArgumentError, match="event 1"):
        pattern.evaluate([{"name": "a", "t": 1}, {"name": "a"}], time="t")
    with pytest.raises(InvalidArgumentError, match="event 0"):
        pattern.evaluate([{"name": "a", "t": "yesterday"}], time="t")
    with pytest.raises(InvalidArgumentError, match="end must be"):
        pattern.evaluate([ev("a")], end=float("nan"))


def test_evaluate_reads_iso_text_datetimes_and_callables_as_time() -> None:
    pattern = Pattern.begin("a").where(is_("a")).followed_by("b").where(is_("b")).within(10)
    iso = [{"name": "a", "at": "2026-01-01T00:00:00Z"}, {"name": "b", "at": "2026-01-01T00:00:09Z"}]
    assert len(pattern.evaluate(iso, time="at").matches) == 1
    late = [{"name": "a", "at": "2026-01-01T00:00:00Z"}, {"name": "b", "at": "2026-01-01T00:00:10Z"}]
    result = pattern.evaluate(late, time="at")
    assert result.matches == []  # half-open: exactly `within` after the first event is outside
    assert result.timeouts == [{"a": [late[0]]}]
    assert result.timeouts[0].timed_out_at == result.timeouts[0].start + 10  # type: ignore[operator]
    by_fn = pattern.evaluate([{"name": "a", "s": 3}, {"name": "b", "s": 4}], time=lambda e: e["s"] * 2)
    assert by_fn.matches[0].start == 6.0 and by_fn.matches[0].end == 8.0


def test_evaluate_orders_events_by_time_keeping_list_order_for_ties() -> None:
    pattern = Pattern.begin("a").where(contains("a")).next("b").where(contains("b"))
    events = [{"name": "b1", "t": 2}, {"name": "a1", "t": 1}, {"name": "a2", "t": 2}, {"name": "b2", "t": 2}]
    found = [m.events for m in pattern.evaluate(events, time="t").matches]
    assert found == [[events[1], events[0]], [events[2], events[3]]]


def test_match_is_a_dict_with_its_key_and_span() -> None:
    match = Match({"a": [1], "b": [2, 3]}, key=("u", 1), start=1.0, end=5.0)
    assert match == {"a": [1], "b": [2, 3]}
    assert match.events == [1, 2, 3]
    assert match.as_payload() == {"key": ("u", 1), "start": 1.0, "end": 5.0, "steps": {"a": [1], "b": [2, 3]}}
    import pickle

    again = pickle.loads(pickle.dumps(match))
    assert again == match and again.key == ("u", 1) and again.end == 5.0


def test_after_match_values() -> None:
    assert AfterMatch.skip_to_first("b") == AfterMatch.skip_to_first("b")
    assert AfterMatch.skip_to_first("b") != AfterMatch.skip_to_last("b")
    assert repr(AfterMatch.skip_to_last("b", strict=True)) == "AfterMatch.skip_to_last('b', strict=True)"
    assert not AfterMatch.no_skip().skips and AfterMatch.skip_past_last_event().skips


# -- AfterMatchSkipITCase's exception cases (throwExceptionOnMiss -> strict=True) ------


def _missed_skip_to(after_match: AfterMatch) -> Any:
    a, c = {"id": 1, "name": "a"}, {"id": 4, "name": "c"}
    pattern = (
        Pattern.begin("a", after_match=after_match)
        .where(contains("a"))
        .next("b")
        .where(contains("b"))
        .one_or_more()
        .optional()
        .consecutive()
        .next("c")
        .where(contains("c"))
    )
    return pattern.evaluate([a, c], end=1)


def test_skip_to_first_element_of_match() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstElementOfMatch."""
    pattern = Pattern.begin("a", after_match=AfterMatch.skip_to_first("a", strict=True)).where(contains("a"))
    with pytest.raises(PatternError, match="first event of a match"):
        pattern.evaluate([{"id": 1, "name": "a1"}], end=0)


def test_skip_to_first_non_existent_position() -> None:
    """Ports AfterMatchSkipITCase.testSkipToFirstNonExistentPosition."""
    with pytest.raises(PatternError, match="no event for step 'b'"):
        _missed_skip_to(AfterMatch.skip_to_first("b", strict=True))


def test_skip_to_last_non_existent_position() -> None:
    """Ports AfterMatchSkipITCase.testSkipToLastNonExistentPosition."""
    with pytest.raises(PatternError, match="no event for step 'b'"):
        _missed_skip_to(AfterMatch.skip_to_last("b", strict=True))


def test_without_strict_a_missing_skip_step_skips_nothing() -> None:
    assert [m.events for m in _missed_skip_to(AfterMatch.skip_to_last("b")).matches] == [
        [{"id": 1, "name": "a"}, {"id": 4, "name": "c"}]
    ]
