"""Test pipelines in virtual time, in a few lines, with no sleeps.

:class:`VirtualTime` bundles a reactivex ``TestScheduler`` with a memory
store whose ingest clock is that scheduler. Schedule appends at virtual
times, run a pipeline, and assert what came out and when. Times are seconds.

>>> from minibatch_rx.testing import VirtualTime
>>> vt = VirtualTime()
>>> s = vt.stream('readings')
>>> for t, v in [(1, 10), (2, 20), (12, 30)]:
...     vt.append_at(t, s, {'v': v})
>>> out = vt.run(s.fixed_time_window(10).map(lambda w: [d['v'] for d in w.data]), until=30)
>>> out
[Emission(time=10.0, value=[10, 20]), Emission(time=20.0, value=[30])]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reactivex.testing import TestScheduler

from minibatch_rx.pipeline import Pipeline
from minibatch_rx.store.memory import MemoryStore
from minibatch_rx.stream import Stream

_ids = itertools.count(1)


@dataclass(frozen=True)
class Emission:
    """A value a pipeline produced, and the virtual time (seconds) it appeared."""

    time: float
    value: Any


class VirtualTime:
    """A virtual clock plus an isolated in-memory store that uses it."""

    def __init__(self) -> None:
        self.scheduler = TestScheduler()
        self.store = MemoryStore(f"memory://virtual-{next(_ids)}", clock=lambda: self.scheduler.now)

    @property
    def now(self) -> float:
        """The virtual clock, in seconds."""
        return float(self.scheduler.clock)

    def stream(self, name: str) -> Stream:
        """A stream on this virtual store."""
        return Stream.get_or_create(name, store=self.store)

    def append_at(self, time: float, stream: Stream, payload: Mapping[str, Any]) -> None:
        """Append ``payload`` to ``stream`` when the virtual clock reaches ``time``."""
        def append(*_: Any) -> None:
            stream.append(payload)

        self.scheduler.schedule_absolute(float(time), append)

    def advance_to(self, time: float) -> None:
        """Run everything scheduled up to ``time``."""
        self.scheduler.advance_to(float(time))

    def run(self, pipeline: Pipeline, until: float, consumer: str | None = "default") -> list[Emission]:
        """Run ``pipeline`` from the current virtual time to ``until``; return
        what it emitted (after its last stage), each with its time. A pipeline
        error is raised here."""
        emissions: list[Emission] = []
        errors: list[Exception] = []
        observable = pipeline.to_observable(consumer, scheduler=self.scheduler)
        subscription = observable.subscribe(
            lambda value: emissions.append(Emission(self.now, value)),
            errors.append,
            scheduler=self.scheduler,
        )
        try:
            self.advance_to(until)
        finally:
            subscription.dispose()
        if errors:
            raise errors[0]
        return emissions


def seconds(moment: datetime | None) -> float | None:
    """A window bound as virtual seconds (``None`` stays ``None``)."""
    return None if moment is None else moment.timestamp()
