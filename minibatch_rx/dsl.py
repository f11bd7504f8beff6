"""The window methods of the fluent DSL, written once for ``Stream`` and ``Pipeline``.

``stream('in').count_window(2)`` and ``pipeline.count_window(2)`` are the same
method: each builds a window spec (:mod:`minibatch_rx.windows`) and hands it
to :meth:`WindowDSL.window`. A ``Stream`` starts a new pipeline there; the
pipeline module registers how (:func:`set_root`), so ``stream.py`` needs no
import of the pipeline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Literal

from typing_extensions import TypeVar

from minibatch_rx.durations import Interval
from minibatch_rx.windows import Count, Relaxed, Session, Sliding, Tumbling, WindowSpec

if TYPE_CHECKING:
    from minibatch_rx.cep.match import Match
    from minibatch_rx.cep.pattern import Pattern
    from minibatch_rx.message import Message
    from minibatch_rx.pipeline import Pipeline
    from minibatch_rx.streams import Stream
    from minibatch_rx.window import Window

D = TypeVar("D", default=Any)
"""What the windows hold: the payloads, or the values the stages before them produced."""

_root: list[Callable[[Stream], Pipeline[Message, dict[str, Any]]]] = []


def set_root(make: Callable[[Stream], Pipeline[Message, dict[str, Any]]]) -> None:
    """Register how a stream starts a pipeline (called by ``minibatch_rx.pipeline``)."""
    _root[:] = [make]


def root(stream: Stream) -> Pipeline[Message, dict[str, Any]]:
    """An empty pipeline reading ``stream``."""
    return _root[0](stream)


class WindowDSL(ABC, Generic[D]):
    """The named window strategies; each is ``self.window(<spec>)``. ``D`` is
    what the windows hold (``Window[D]``): a stream's payloads, or the values
    of the stages before the window."""

    @abstractmethod
    def window(self, spec: Any) -> Pipeline[Window[D]]:
        """Window the stream with ``spec`` (a :class:`~minibatch_rx.windows.WindowSpec`,
        or an operator factory such as a ``WindowEmitter``'s ``.operator``)."""

    def count_window(self, n: int, timeout: Interval | None = None) -> Pipeline[Window[D]]:
        """Windows of ``n`` messages; see :func:`minibatch_rx.windows.count_window`."""
        return self.window(Count(n, timeout))

    def fixed_time_window(self, interval: Interval, grace: Interval = 0,
                          emit_empty: bool = False) -> Pipeline[Window[D]]:
        """Tumbling time windows; see :func:`minibatch_rx.windows.fixed_time_window`."""
        return self.window(Tumbling(interval, grace, emit_empty))

    def relaxed_time_window(self, interval: Interval, emit_empty: bool = False) -> Pipeline[Window[D]]:
        """Everything since the last window, every ``interval``; see
        :func:`minibatch_rx.windows.relaxed_time_window`."""
        return self.window(Relaxed(interval, emit_empty))

    def sliding_window(self, size: int | Interval, step: int | Interval,
                       by: Literal["count", "time"] = "count", grace: Interval = 0) -> Pipeline[Window[D]]:
        """Overlapping windows; see :func:`minibatch_rx.windows.sliding_window`."""
        return self.window(Sliding(size, step, by, grace))

    def session_window(self, gap: Interval) -> Pipeline[Window[D]]:
        """Sessions split by silence; see :func:`minibatch_rx.windows.session_window`."""
        return self.window(Session(gap))

    def match(self, pattern: Pattern[Any], timeouts: Any = None) -> Pipeline[Match[D]]:
        """Find ``pattern`` (a :class:`minibatch_rx.cep.Pattern`) per key, on the clock
        of ``event_time`` (else ingest time); each match goes on as a
        :class:`~minibatch_rx.cep.Match` (step name -> events, with ``key``,
        ``start`` and ``end``). Partial matches that run out of ``within`` go to
        ``timeouts`` (a stream, stream name or callable; default: the stream
        ``<name>.timeouts``, created at the first one)::

            fraud = (Pattern.begin('fail').where(lambda e: not e['ok']).times(3)
                     .followed_by('success').where(lambda e: e['ok']).within('1m'))
            (stream('logins').key_by('user').event_time('ts', max_delay='2s')
                .match(fraud).map(alert).sink('alerts'))
        """
        from minibatch_rx.cep.stage import PatternSpec, drop_ticks, timeout_target, to_match
        from minibatch_rx.stages import item_stage

        spec = PatternSpec(pattern, timeout_target(timeouts))
        windowed = self.window(spec)
        return windowed._stage(
            "as_match", lambda failure, _s, _o: item_stage("match", to_match, failure, drop_ticks))


__all__ = ["WindowDSL", "WindowSpec", "root", "set_root"]
