"""Details of the pattern stage that users rely on without seeing them: the
position keeps up with a pattern that rarely matches, checkpoint-only windows
are not counted as windows, and equal matches get distinct idempotency keys."""

from __future__ import annotations

from typing import Any

import pytest

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


def test_a_chained_snapshot_holds_the_same_state_as_a_full_one() -> None:
    """Snapshots record the keys touched since the previous one; built into a
    checkpoint, a chain (keys created, changed and forgotten) equals a full copy."""
    import json
    import random
    from datetime import UTC, datetime

    from minibatch_rx.cep.stage import PatternSpec
    from minibatch_rx.message import Message
    from minibatch_rx.windows.clocks import EventTime
    from minibatch_rx.windows.keys import KeyBy

    pattern = (
        Pattern.begin("a").where(lambda e: e["n"] == "a")
        .followed_by("b").where(lambda e: e["n"] == "b")
        .within(3)
    )  # fmt: skip
    op = PatternSpec(pattern).operator(None, key_by=KeyBy("k"), clock=EventTime("t", max_delay=0.5))
    core: Any = op.make_core()
    core.start(0.0)
    rng = random.Random(7)
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    chained = []
    for seq in range(1, 400):
        data = {"k": rng.randrange(12), "n": rng.choice("abx"), "t": seq * 0.1}
        core.on_message(Message("s", seq, stamp, data), 0.0)
        if seq % 7 == 0:
            chained.append(core.snapshot())
    last = chained[-1]
    assert last._depth > 0  # built on earlier snapshots, not a full copy
    core.captured = None  # the next snapshot is a full copy of the same state
    full = core.snapshot()
    assert json.dumps(dict(last), sort_keys=True) == json.dumps(dict(full), sort_keys=True)
    assert last == full


def test_a_structurally_changed_pattern_under_the_same_name_and_consumer_is_refused() -> None:
    """``consecutive()`` changes the automaton but not the pattern's label: the
    checkpoint's shape tells, and the restart refuses with a clear error instead
    of restoring partial matches into other states."""
    import pytest

    from minibatch_rx.errors import InvalidArgumentError

    def pattern(strict: bool) -> Pattern[Any]:
        loop = Pattern.begin("a").where(lambda e: e["n"] == "a").one_or_more()
        loop = loop.consecutive() if strict else loop
        return loop.followed_by("b").where(lambda e: e["n"] == "b")

    assert repr(pattern(True)) == repr(pattern(False))
    vt = VirtualTime()
    s = vt.stream("changed")
    vt.append_at(1, s, {"n": "a"})
    vt.append_at(2, s, {"n": "a"})
    assert vt.run(s.match(pattern(False)).map(lambda m: m), until=10, consumer="c") == []
    vt.append_at(11, s, {"n": "b"})
    with pytest.raises(InvalidArgumentError, match="another pattern"):
        vt.run(s.match(pattern(True)).map(lambda m: m), until=20, consumer="c")


def test_values_a_stage_made_are_saved_as_they_are_or_dead_lettered() -> None:
    """A stage before match may make tuples, sets, datetimes, bytes, decimals...:
    a checkpoint keeps them as they are. A value it cannot keep sends its record
    to the dead-letter stream with the reason, before anything is matched."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from minibatch_rx.cep.checkpoint import Unsavable, decode_value, encode_value

    value = {
        "t": (1, "a", [2.5, None]),
        "s": {1, 2},
        "f": frozenset({"x"}),
        "m": {1: "one", ("k", 2): b"\x00\xff"},
        "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "naive": datetime(2026, 1, 2),
        "day": date(2026, 1, 2),
        "price": Decimal("12.30"),
        "plain": {"a": [1, {"b": True}]},
    }
    again = decode_value(encode_value(value))
    assert again == value
    assert type(again["t"]) is tuple and type(again["f"]) is frozenset
    assert again["at"].tzinfo is not None and again["naive"].tzinfo is None
    assert str(again["price"]) == "12.30"
    import json

    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value  # through JSON text
    with pytest.raises(Unsavable, match="type object"):
        encode_value({"x": object()})

    vt = VirtualTime()
    s = vt.stream("made")
    vt.append_at(1, s, {"n": "a", "odd": False})
    vt.append_at(2, s, {"n": "b", "odd": True})
    vt.append_at(3, s, {"n": "a", "odd": False})
    vt.append_at(4, s, {"n": "b", "odd": False})

    def shape(m: Any) -> dict[str, Any]:
        return {"n": m.data["n"], "tag": object() if m.data["odd"] else ("ok", m.seq)}

    out = vt.run(
        s.map(shape).match(NEVER).map(lambda m: [e["tag"] for e in m.events]), until=10, consumer="c"
    )
    assert [e.value for e in out] == [[("ok", 3), ("ok", 4)]]
    dead = [m.data for m in vt.stream("made.dead").read()]
    assert len(dead) == 1 and "cannot be saved in the pattern's checkpoint" in str(dead[0])
