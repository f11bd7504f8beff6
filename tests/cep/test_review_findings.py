"""Reproducers of defects found reviewing ``minibatch_rx.cep`` (matching and the ``.match`` stage).

Each test states the behaviour the feature should have and fails on the code it
was written against; the report that goes with this file explains each one
(input, expected, actual, suspected cause).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pytest

from minibatch_rx import stream
from minibatch_rx.cep import AfterMatch, Match, Pattern, PatternError
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.store.memory import MemoryStore
from minibatch_rx.testing import VirtualTime


def is_(letter: str) -> Any:
    """A condition on a one-letter event."""
    return lambda e: e == letter


def kind(letter: str) -> Any:
    """A condition on a dict event's ``k``."""
    return lambda e: e["k"] == letter


def as_lists(matches: Sequence[Mapping[str, list[Any]]]) -> Counter[tuple[tuple[str, tuple[Any, ...]], ...]]:
    """Matches as a multiset of (step, events) tuples."""
    return Counter(tuple((step, tuple(events)) for step, events in m.items()) for m in matches)


A_THEN_B = Pattern.begin("a").where(kind("a")).followed_by("b").where(kind("b"))


# -- matching ----------------------------------------------------------------------------------


@pytest.mark.parametrize("negation", ["not_next", "not_followed_by"])
def test_a_negation_reached_from_the_start_does_not_stop_all_later_matches(negation: str) -> None:
    """``(x?) !y z``: from the start state an epsilon path (the group's optional
    first step skipped) reaches the negation. A ``y`` then kills the branch that
    skipped ``x`` at that ``y``, but the start state must survive it: the partial
    matches that begin later are unaffected (the start state "always has to remain")."""
    group = Pattern.begin("x").where(is_("x")).optional()
    negated = getattr(Pattern.begin(group), negation)("y").where(is_("y"))
    p = negated.followed_by("z").where(is_("z"))
    without_y = p.evaluate(list("xz")).matches
    assert as_lists(without_y) == as_lists([{"x": ["x"], "z": ["z"]}, {"z": ["z"]}])
    # a y before anything was taken must change nothing for the x z after it
    assert as_lists(p.evaluate(list("yxz")).matches) == as_lists(without_y)


def test_a_group_ending_in_not_followed_by_is_refused_or_honoured() -> None:
    """``a (x !y) b``: the absence of ``y`` after ``x`` inside the group must hold
    (or the pattern be refused when built, as a trailing ``not_followed_by`` without
    ``within`` is); it is silently dropped (Flink's FLINK-15980)."""
    group = Pattern.begin("x").where(is_("x")).not_followed_by("y").where(is_("y"))
    try:
        p = Pattern.begin("a").where(is_("a")).followed_by(group).followed_by("b").where(is_("b"))
        p.check()
    except InvalidArgumentError:
        return  # refused when built: fine
    assert p.evaluate(list("axb")).matches == [{"a": ["a"], "x": ["x"], "b": ["b"]}]
    assert p.evaluate(list("axyb")).matches == [], "the y between x and b must kill the match"


# -- the pipeline stage ------------------------------------------------------------------------


def test_strict_skip_without_its_step_fails_the_pipeline_as_evaluate_does() -> None:
    """``skip_to_first(step, strict=True)`` is documented to raise ``PatternError``
    (Flink's ``throwExceptionOnMiss`` fails the job). In a pipeline the error is
    caught as if a condition had failed: the record that completed the match is
    dead-lettered and the run goes on, with the run's queue of completed matches
    left half-updated (the failing match dropped, the others kept)."""
    p = (
        Pattern.begin("a", after_match=AfterMatch.skip_to_first("x", strict=True))
        .where(kind("a"))
        .followed_by("x").where(kind("x")).optional()
        .followed_by("b").where(kind("b"))
    )  # fmt: skip
    events = [{"k": k, "i": i} for i, k in enumerate("abab")]
    with pytest.raises(PatternError):
        p.evaluate(events)
    vt = VirtualTime()
    s = vt.stream("ev")
    for i, e in enumerate(events):
        vt.append_at(i + 1, s, e)
    with pytest.raises(PatternError):
        vt.run(s.match(p).map(lambda m: m.events), until=20, consumer="c")


def test_records_made_by_a_stage_before_match_need_not_be_json() -> None:
    """Stages before a window may produce any value (a window holds it in
    memory); before ``.match`` a record holding a ``datetime`` makes the first
    checkpoint fail (``TypeError: datetime is not JSON-compatible``)."""
    vt = VirtualTime()
    s = vt.stream("ev")
    vt.append_at(1, s, {"k": "a"})
    vt.append_at(5, s, {"k": "b"})  # the partial match {a} is checkpointed meanwhile
    pipeline = s.map(lambda m: {"k": m.data["k"], "stored": m.ts}).match(A_THEN_B).map(lambda m: m.events)
    out = vt.run(pipeline, until=10, consumer="c")
    assert [[e["k"] for e in events] for events in (o.value for o in out)] == [["a", "b"]]
    assert all(isinstance(e["stored"], datetime) for o in out for e in o.value)


def test_a_restart_hands_on_the_same_values_as_an_uninterrupted_run() -> None:
    """A record a stage made (here a tuple) is kept in the checkpoint as JSON: after
    a restart the partial match's events come back as lists, so the match differs
    from the one an uninterrupted run emits."""
    p = Pattern.begin("a").where(lambda e: e[0] == "a").followed_by("b").where(lambda e: e[0] == "b")

    def run(stop: bool) -> list[Any]:
        vt = VirtualTime()
        s = vt.stream("ev")
        vt.append_at(1, s, {"k": "a"})
        vt.append_at(5, s, {"k": "b"})
        got: list[Any] = []

        def pipeline() -> Any:
            return s.map(lambda m: (m.data["k"], 1)).match(p).map(lambda m: dict(m)).sink(got.append)

        if stop:
            vt.run(pipeline(), until=3, consumer="c")  # the partial match {a} is checkpointed
        vt.run(pipeline(), until=10, consumer="c")
        return got

    uninterrupted = run(stop=False)
    assert uninterrupted == [{"a": [("a", 1)], "b": [("b", 1)]}]
    assert run(stop=True) == uninterrupted


def test_a_pattern_changed_under_the_same_consumer_is_refused_or_starts_afresh() -> None:
    """A consumer restarted with ``a b c?`` on the state ``a{2} b c`` saved must not
    restore its partial matches into the other automaton (a match neither pattern
    can produce, no ``b``): refused (the README: run a changed pattern under a new
    consumer name), or its old state dropped. (Found when the checkpoint checked
    step names only and both patterns had the same repr.)"""
    before = (
        Pattern.begin("a")
        .where(kind("a"))
        .times(2)
        .followed_by("b")
        .where(kind("b"))
        .followed_by("c")
        .where(kind("c"))
    )
    after = (
        Pattern.begin("a")
        .where(kind("a"))
        .followed_by("b")
        .where(kind("b"))
        .followed_by("c")
        .where(kind("c"))
        .optional()
    )
    assert before.names == after.names
    vt = VirtualTime()
    s = vt.stream("ev")
    vt.append_at(1, s, {"k": "a", "i": 0})
    vt.append_at(2, s, {"k": "a", "i": 1})
    assert vt.run(s.match(before).map(lambda m: m), until=10, consumer="c") == []
    vt.append_at(11, s, {"k": "x", "i": 2})
    vt.append_at(12, s, {"k": "c", "i": 3})
    try:
        out = vt.run(s.match(after).map(lambda m: dict(m)), until=20, consumer="c")
    except InvalidArgumentError:
        return  # refused: fine
    found = [o.value for o in out]
    assert all("b" in m for m in found), f"{found}: matches of neither pattern"


def test_checkpoints_cost_is_linear_in_the_records_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every checkpoint holds the whole matching state, and one is written every
    ``TICK`` records (and with each match, timeout, late or bad record): reading N
    records that each leave a partial match open writes O(N**2) journal bytes
    (4,096 one-field records: 6 MB; 4x the records: 14x the bytes)."""

    def journal_bytes(n: int) -> int:
        vt = VirtualTime()
        s = vt.stream("ev")
        s.extend([{"u": i, "k": "a"} for i in range(n)])
        written = [0]
        store: MemoryStore = vt.store
        append = store.append

        def counting(name: str, payloads: Sequence[Mapping[str, Any]], keys: Any = None) -> list[int]:
            if name.startswith("_mb.windows"):
                written[0] += sum(len(json.dumps(p, default=dict)) for p in payloads)
            return append(name, payloads, keys)

        monkeypatch.setattr(store, "append", counting)
        vt.run(s.key_by("u").match(A_THEN_B).map(lambda m: m), until=1, consumer="c")
        return written[0]

    small, large = journal_bytes(1024), journal_bytes(4096)
    assert small > 0
    assert large < 6 * small, f"{small} bytes for 1,024 records, {large} for 4,096"


def test_a_matching_state_over_16_mb_checkpoints_into_mongodb(mongo_url: str) -> None:
    """The checkpoint is one journal document; past MongoDB's 16 MB document limit
    the commit fails with ``PayloadTooLargeError`` (here 1,200 open partial matches
    of 15 kB events), so the consumer cannot get past that point, restart after
    restart."""
    s = stream("big", url=mongo_url)
    s.extend([{"u": i, "k": "a", "pad": "x" * 15000} for i in range(1200)] + [{"u": 0, "k": "b", "pad": ""}])
    got: list[Match[Any]] = []
    s.key_by("u").match(A_THEN_B).sink(got.append).run(max_windows=1, duration=60, consumer="c")
    assert [m.key for m in got] == [0]
    assert s.position("c") == 1201
