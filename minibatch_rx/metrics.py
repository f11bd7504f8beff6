"""What a running pipeline reports: counters, lag, watermark, time per stage.

``handle.metrics()`` returns a :class:`Metrics` snapshot. With the
``metrics`` extra (``pip install 'minibatch_rx[metrics]'``, prometheus_client),
``handle.serve_metrics(port)`` serves the same figures to Prometheus, named by
its conventions in the ``minibatch_`` namespace:

=================================== ========= ==================================
name                                kind      what
=================================== ========= ==================================
``minibatch_messages_in_total``     counter   messages read from the source
``minibatch_windows_out_total``     counter   windows processed (acknowledged)
``minibatch_late_messages_total``   counter   messages that missed their window
``minibatch_dead_letters_total``    counter   windows sent to the dead-letter stream
``minibatch_retries_total``         counter   retried calls of user functions
``minibatch_lag_messages``          gauge     head of the stream - committed position
``minibatch_position``              gauge     committed position (seq)
``minibatch_watermark_seconds``     gauge     event/ingest-time watermark (time windows)
``minibatch_stage_seconds``         histogram time per returning call of a stage
=================================== ========= ==================================

Every series carries the labels ``stream`` and ``consumer``; the histogram
also ``stage`` (``map``, ``sink``, ...).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
"""Upper bounds of the stage-time histogram, seconds (plus +Inf)."""


class StageTimes:
    """Call counts, total time and a histogram of call times, per stage.

    >>> times = StageTimes()
    >>> times.observe('map', 0.002); times.observe('map', 0.02)
    >>> s = times.snapshot()['map']
    >>> (s.count, round(s.total, 3), s.buckets[0.005], s.buckets[0.05])
    (2, 0.022, 1, 2)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stages: dict[str, list[Any]] = {}  # stage -> [count, total, per-bucket counts]

    def observe(self, stage: str, seconds: float) -> None:
        """Record one call of ``stage`` that took ``seconds``."""
        with self._lock:
            entry = self._stages.get(stage)
            if entry is None:
                entry = self._stages[stage] = [0, 0.0, [0] * (len(BUCKETS) + 1)]
            entry[0] += 1
            entry[1] += seconds
            entry[2][bisect.bisect_left(BUCKETS, seconds)] += 1

    def snapshot(self) -> dict[str, StageTime]:
        """Each stage's figures; bucket counts are cumulative, as Prometheus wants."""
        with self._lock:
            copies = {k: (v[0], v[1], list(v[2])) for k, v in self._stages.items()}
        result = {}
        for stage, (count, total, counts) in copies.items():
            running, buckets = 0, {}
            for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                running += n
                buckets[bound] = running
            result[stage] = StageTime(count, total, buckets)
        return result


@dataclass(frozen=True)
class StageTime:
    """One stage's calls: how many, their total time, and the cumulative histogram."""

    count: int
    total: float
    buckets: dict[float, int]

    @property
    def mean(self) -> float:
        """Average seconds per call (0 before the first)."""
        return self.total / self.count if self.count else 0.0

    def merged(self, other: StageTime) -> StageTime:
        """The figures of both (two runs of one stage, as a group member's partitions)."""
        buckets = {bound: n + other.buckets.get(bound, 0) for bound, n in self.buckets.items()}
        return StageTime(self.count + other.count, self.total + other.total, buckets)


@dataclass(frozen=True)
class Metrics:
    """A snapshot of a running pipeline's figures (see the module's table).

    ``lag`` and ``head`` are ``None`` if the store could not be asked;
    ``watermark`` is ``None`` for strategies without one (count windows,
    patterns) and before the first message.
    """

    stream: str
    consumer: str
    messages_in: int
    windows_out: int
    late: int
    dead_lettered: int
    retries: int
    position: int
    head: int | None
    lag: int | None
    watermark: float | None
    stages: dict[str, StageTime] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain JSON values (stage times as count, total and mean)."""
        out = {k: v for k, v in vars(self).items() if k != "stages"}
        out["stages"] = {name: {"count": t.count, "total_seconds": t.total, "mean_seconds": t.mean}
                         for name, t in self.stages.items()}
        return out


class Meter:
    """The live counters of one pipeline run, written by its stages."""

    def __init__(self) -> None:
        self.late = 0
        self.stage_times = StageTimes()
        self.watermark: Callable[[], float | None] = lambda: None
        self.read: Callable[[], int] = lambda: 0


def prometheus_collector(snapshot: Callable[[], Metrics]) -> Any:
    """A prometheus_client collector reading ``snapshot()`` at each scrape."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    class Collector:
        def describe(self) -> list[Any]:
            return []  # the families are made per scrape

        def collect(self) -> Iterator[Any]:
            m = snapshot()
            labels = ["stream", "consumer"]
            values = [m.stream, m.consumer]
            for name, doc, value in (
                ("minibatch_messages_in", "Messages read from the source stream.", m.messages_in),
                ("minibatch_windows_out", "Windows processed and acknowledged.", m.windows_out),
                ("minibatch_late_messages", "Messages that arrived after their window closed.", m.late),
                ("minibatch_dead_letters", "Windows sent to the dead-letter stream.", m.dead_lettered),
                ("minibatch_retries", "Retried calls of user functions.", m.retries),
            ):
                counter = CounterMetricFamily(name, doc, labels=labels)
                counter.add_metric(values, value)
                yield counter
            for name, doc, gauge_value in (
                ("minibatch_lag_messages", "Head of the stream minus the committed position.", m.lag),
                ("minibatch_position", "The committed position (seq).", m.position),
                ("minibatch_watermark_seconds", "The window watermark, Unix seconds.", m.watermark),
            ):
                if gauge_value is None:
                    continue
                gauge = GaugeMetricFamily(name, doc, labels=labels)
                gauge.add_metric(values, gauge_value)
                yield gauge
            histogram = HistogramMetricFamily(
                "minibatch_stage_seconds", "Time per call of a stage's function.", labels=[*labels, "stage"])
            for stage, times in m.stages.items():
                buckets = [("+Inf" if bound == float("inf") else repr(bound), n)
                           for bound, n in times.buckets.items()]
                histogram.add_metric([*values, stage], buckets, times.total)
            yield histogram

    return Collector()
