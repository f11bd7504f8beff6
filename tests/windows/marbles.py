"""Marble helpers for the virtual-time window tests: the public ones from
:mod:`minibatch_rx.testing`, under the names these tests use, plus two local ones."""

from __future__ import annotations

from typing import Any

from minibatch_rx import Stream, Window
from minibatch_rx.testing import (
    VirtualTime,
    arrive,
    emitted,
    late_log,
    next_values,
    notifications,
    on_completed,
    on_error,
    on_next,
    seqs_and_bounds,
)
from minibatch_rx.testing import message as msg

__all__ = [
    "append_stamped",
    "arrive",
    "emitted",
    "late_log",
    "msg",
    "next_values",
    "notifications",
    "on_completed",
    "on_error",
    "on_next",
    "seqs_and_bounds",
    "values",
]


def append_stamped(vt: VirtualTime, at: float, stream: Stream, ts: float, payload: dict[str, Any]) -> None:
    """At virtual time ``at``, append ``payload`` stamped ``ts`` (a lagging producer)."""
    vt.append_at(at, stream, payload, stamp=ts)


def values(window: Window) -> list[Any]:
    """The ``v`` of each payload in ``window``."""
    return [d["v"] for d in window.data]
