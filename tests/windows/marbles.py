"""Marble helpers shared by the virtual-time window tests: messages, ``on_next``
notifications at a virtual time, and the emitted windows as plain tuples."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.mockobserver import MockObserver

from minibatch_rx import Message, Stream, Window
from minibatch_rx.testing import VirtualTime, seconds

on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed


def msg(seq: int, ts: float, data: dict[str, Any] | None = None) -> Message:
    """Message ``seq`` of stream ``s`` stamped ``ts``, with payload ``data`` (default: ``{"n": seq}``)."""
    return Message("s", seq, datetime.fromtimestamp(ts, UTC), {"n": seq} if data is None else data)


def arrive(time: float, seq: int, ts: float | None = None) -> Any:
    """``on_next`` at virtual ``time`` of message ``seq`` stamped ``ts`` (default: ``time``)."""
    return on_next(time, msg(seq, time if ts is None else ts))


def notifications(
    observer: MockObserver[Window], describe: Callable[[Window], tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Each notification as ``(time, *describe(window))``, ``(time, 'completed')``
    or ``(time, 'error', exception)``."""
    out: list[tuple[Any, ...]] = []
    for record in observer.messages:
        note = record.value
        if note.kind == "N":
            out.append((record.time, *describe(note.value)))
        elif note.kind == "C":
            out.append((record.time, "completed"))
        else:
            out.append((record.time, "error", note.exception))
    return out


def seqs_and_bounds(w: Window) -> tuple[Any, ...]:
    """A window as ``(seqs, start, end, ack)``, its bounds in seconds (``None`` when it has none)."""
    return [m.seq for m in w.messages], seconds(w.start), seconds(w.end), w.ack


def emitted(observer: MockObserver[Window]) -> list[tuple[Any, ...]]:
    """Each notification as ``(time, seqs, start, end, ack)`` or ``(time, 'completed')``."""
    return notifications(observer, seqs_and_bounds)


def late_log(scheduler: TestScheduler, op: Any) -> list[tuple[float, int]]:
    """``(time, seq)`` of each message the operator reports late."""
    log: list[tuple[float, int]] = []
    op.late.subscribe(lambda m: log.append((scheduler.clock, m.seq)))
    return log


def append_stamped(vt: VirtualTime, at: float, stream: Stream, ts: float, payload: dict[str, Any]) -> None:
    """At virtual time ``at``, append ``payload`` stamped ``ts``: a producer whose
    clock lags behind (the store stamps messages with the writer's clock)."""

    def action(*_: Any) -> None:
        clock = vt.store.clock
        vt.store.clock = lambda: datetime.fromtimestamp(ts, UTC)
        try:
            stream.append(payload)
        finally:
            vt.store.clock = clock

    vt.scheduler.schedule_absolute(float(at), action)


def values(window: Window) -> list[Any]:
    """The ``v`` of each payload in ``window``."""
    return [d["v"] for d in window.data]
