"""Details of the pattern stage that users rely on without seeing them: the
position keeps up with a pattern that rarely matches, checkpoint-only windows
are not counted as windows, and equal matches get distinct idempotency keys."""

from __future__ import annotations

from typing import Any

from minibatch_rx.cep import Pattern
from minibatch_rx.cep.stage import FLUSH, TICK
from minibatch_rx.testing import VirtualTime

NEVER = Pattern.begin("a").where(lambda e: e["n"] == "a").next("b").where(lambda e: e["n"] == "b")


def test_records_that_give_no_match_are_committed_after_a_second() -> None:
    vt = VirtualTime()
    s = vt.stream("quiet")
    for t in range(1, 6):
        vt.append_at(t, s, {"n": "x"})
    out = vt.run(s.match(NEVER).map(lambda m: m), until=5.5, consumer="c")
    assert out == []
    assert s.position("c") < 5  # the last records are not committed yet
    vt.run(s.match(NEVER).map(lambda m: m), until=5 + FLUSH + 0.5, consumer="c")
    assert s.position("c") == 5


def test_every_tick_records_commit_the_position_while_no_match_comes() -> None:
    vt = VirtualTime()
    s = vt.stream("busy")
    s.extend([{"n": "x"} for _ in range(TICK + 10)])
    vt.run(s.match(NEVER).map(lambda m: m), until=0.5, consumer="c")
    assert s.position("c") == TICK


def test_checkpoint_only_windows_do_not_count_as_windows() -> None:
    """run(max_windows=1) stops after the first match, not after a checkpoint."""
    from minibatch_rx import stream

    source = stream("counted", url="memory://counted")
    source.extend([{"n": "x"} for _ in range(TICK + 5)] + [{"n": "a"}, {"n": "b"}] + [{"n": "x"}] * 3)
    got: list[Any] = []
    handle = source.match(NEVER).map(lambda m: m.events).sink(got.append).run(max_windows=1, duration=30)
    assert got == [[{"n": "a"}, {"n": "b"}]]
    assert handle.windows == 1
