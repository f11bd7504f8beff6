"""One pipeline description run against another source and acknowledger
(issue 13, point 1): the runtime takes both through small protocols."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from minibatch_rx import InvalidArgumentError, Window, stream
from minibatch_rx.message import Message
from minibatch_rx.runtime import Acknowledger, MessageSource, MessagesSource, StoreSource

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder:
    def __init__(self) -> None:
        self.commits: list[tuple[int, Any]] = []

    def commit(self, seq: int, checkpoint: Any) -> None:
        self.commits.append((seq, checkpoint))


def messages(name: str, payloads: list[dict[str, Any]]) -> list[Message]:
    return [Message(name, seq, T0, p) for seq, p in enumerate(payloads, 1)]


def sums(window: Window) -> int:
    return sum(d["n"] for d in window.data)


def test_the_same_description_runs_on_the_store_and_on_given_messages() -> None:
    payloads = [{"n": n} for n in range(1, 9)]
    s = stream("rt", "memory://rt-same")
    s.extend(payloads)
    description = s.count_window(4).map(sums)
    from_store: list[int] = []
    description.sink(from_store.append).run(consumer="a", max_windows=2)
    given: list[int] = []
    recorder = Recorder()
    description.sink(given.append).run(consumer="b", max_windows=2,
                                       source=MessagesSource(messages("rt", payloads)),
                                       acknowledger=recorder)
    assert given == from_store == [10, 26]
    assert [seq for seq, _ in recorder.commits] == [4, 8]
    assert s.position("a") == 8
    assert s.position("b") == 0  # the store's positions were not the acknowledger


def test_checkpoints_reach_the_acknowledger_for_stateful_windows() -> None:
    payloads = [{"k": k, "n": n} for n, k in enumerate("abab", 1)]
    recorder = Recorder()
    got: list[tuple[str, int]] = []
    (stream("rt", "memory://rt-keyed").key_by("k").count_window(2)
     .map(lambda w: (w.key, sums(w))).sink(got.append)
     .run(consumer="c", max_windows=2, source=MessagesSource(messages("rt", payloads)),
          acknowledger=recorder))
    assert sorted(got) == [("a", 4), ("b", 6)]
    assert recorder.commits and recorder.commits[-1][1] is not None  # the keyed state to keep


def test_messages_source_skips_what_was_acknowledged_and_checks_order() -> None:
    msgs = messages("rt", [{"n": n} for n in range(1, 7)])
    assert [m.seq for m in MessagesSource(msgs, after=4).messages] == [5, 6]
    with pytest.raises(ValueError, match="increasing seq order"):
        MessagesSource([msgs[1], msgs[0]])


def test_protocols_are_checked_and_the_defaults_implement_them() -> None:
    s = stream("rt", "memory://rt-proto")
    assert isinstance(StoreSource(s), MessageSource)
    assert isinstance(MessagesSource([]), MessageSource)
    assert isinstance(Recorder(), Acknowledger)
    pipeline = s.count_window(1).map(len)
    with pytest.raises(InvalidArgumentError, match="observe"):
        pipeline.start(source=[1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="commit"):
        pipeline.start(acknowledger=print)  # type: ignore[arg-type]


def test_several_windows_and_groups_refuse_another_source() -> None:
    s = stream("rt", "memory://rt-refuse")
    chained = s.count_window(2).map(len).count_window(2)
    with pytest.raises(InvalidArgumentError, match="one window"):
        chained.start(consumer="c", source=MessagesSource([]))
    with pytest.raises(InvalidArgumentError, match="one window"):
        s.count_window(2).start(group="g", acknowledger=Recorder())

