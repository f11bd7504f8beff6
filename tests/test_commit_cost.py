"""Committing large checkpoints: a slow commit spaces the next ones out."""

from __future__ import annotations

from typing import Any

import pytest

from minibatch_rx import running


def test_a_slow_commit_spaces_out_the_next() -> None:
    now = [100.0]
    written: list[int] = []

    def acknowledge(seq: int, checkpoint: Any) -> None:
        written.append(seq)
        now[0] += 0.05  # a commit taking 50 ms (a large checkpoint)

    pending = running._PendingAck(acknowledge, outage_timeout=1.0, interval=0.05, clock=lambda: now[0])
    pending.stopped = True  # no flusher thread: deferred writes stay pending, visibly
    pending.ack(1)
    assert written == [1]
    assert pending.gap == pytest.approx(running.COST_RATIO * 0.05)
    now[0] += 0.1  # past the interval, within ten times the commit's duration
    pending.flusher = object()  # type: ignore[assignment]  # (as if started)
    pending.ack(2)
    assert written == [1] and pending.due == pytest.approx(100.05 + 0.5)
    now[0] += 0.5
    pending.ack(3)
    assert written == [1, 3]


def test_quick_commits_keep_the_interval() -> None:
    now = [0.0]
    written: list[int] = []
    pending = running._PendingAck(
        lambda seq, _c: written.append(seq), outage_timeout=1.0, interval=0.05, clock=lambda: now[0]
    )
    pending.ack(1)
    now[0] += 0.06
    pending.ack(2)
    assert written == [1, 2] and pending.gap == 0.05
