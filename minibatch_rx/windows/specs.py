"""Window strategies as values: what a window is, defined once.

A spec is frozen and validated when it is made, so a bad size or interval
fails where the pipeline is written, not when it runs. It knows its label
(part of the default consumer name), whether consumer groups can share it,
and how to build its reactivex operator for one run. Each strategy's spec
lives in the strategy's own module (``Count`` in ``count.py``...); the
operator factories (``count_window(...)``) are thin wrappers around them.

>>> from minibatch_rx.windows import Count, Tumbling
>>> Count(2).label
'count_window(2)'
>>> Tumbling('5s', grace=1).label
'fixed_time_window(5s,1)'
>>> Count(0)
Traceback (most recent call last):
...
minibatch_rx.errors.InvalidArgumentError: count_window size n must be an int > 0, got 0
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from reactivex import abc

from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.naming import function_name
from minibatch_rx.windows._engine import WindowOperator
from minibatch_rx.windows.clocks import ClockSpec, IngestTime
from minibatch_rx.windows.keyed import KeyedCore
from minibatch_rx.windows.keys import KeyBy

OperatorFactory = Callable[[abc.SchedulerBase | None], WindowOperator]


class WindowSpec(ABC):
    """A window strategy as a value; see :class:`Count`, :class:`Tumbling`,
    :class:`Sliding`, :class:`Session`, :class:`Relaxed` and :class:`Custom`."""

    groupable: ClassVar[bool] = False
    """True if members of a consumer group can share this strategy's windows."""
    timed: ClassVar[bool] = False
    """True if the windows are cut on record time, so ``event_time`` applies."""

    @property
    def ranks_records(self) -> bool:
        """True if the strategy tells apart the several records of one message
        (a ``flat_map`` before it) when a restart replays them: time windows do."""
        return self.timed

    @property
    @abstractmethod
    def label(self) -> str:
        """How the strategy reads in a pipeline's shape, e.g. ``count_window(2)``."""

    def check(self, key_by: KeyBy | None, clock: ClockSpec | None) -> None:
        """Refuse a key or clock this strategy cannot use (when the pipeline is built)."""
        if clock is not None and not isinstance(clock, IngestTime) and not self.timed:
            raise InvalidArgumentError(
                f"event_time applies to time windows (fixed_time_window, sliding_window(by='time'), "
                f"session_window), not to {self.label}")

    @abstractmethod
    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        """A fresh reactivex operator for one run: per key of ``key_by`` if
        given, on ``clock`` (time windows; ingest time by default)."""


@dataclass(frozen=True)
class Custom(WindowSpec):
    """Any window operator: ``make(scheduler)`` builds one per run (a
    ``WindowEmitter``'s ``.operator``, or a factory of your own)."""

    make: OperatorFactory

    def __post_init__(self) -> None:
        if not callable(self.make):
            raise InvalidArgumentError(f"a custom window needs an operator factory, got {self.make!r}")

    @property
    def label(self) -> str:
        owner = getattr(self.make, "__self__", None)
        if owner is not None and not isinstance(owner, type):
            # A bound method (a WindowEmitter's .operator): name its object's class, not
            # the class defining the method, or two emitters would share a consumer name.
            return f"window:{type(owner).__qualname__}.{getattr(self.make, '__name__', 'operator')}"
        return f"window:{function_name(self.make)}"

    def check(self, key_by: KeyBy | None, clock: ClockSpec | None) -> None:
        """Build one operator now, so a factory that makes none, or a strategy
        that cannot run per key, fails where the pipeline is written."""
        super().check(key_by, clock)
        operator = self.make(None)
        if not isinstance(operator, WindowOperator):
            raise InvalidArgumentError(
                f"a custom window factory must return a WindowOperator (a WindowEmitter's .operator, "
                f"or count_window(...) and the like), got {type(operator).__name__} from {self.label}")
        if key_by is not None:
            operator.make_core().spawn()

    def operator(self, scheduler: abc.SchedulerBase | None = None, *, key_by: KeyBy | None = None,
                 clock: ClockSpec | None = None) -> WindowOperator:
        self.check(key_by, clock)
        operator = self.make(scheduler)
        return operator if key_by is None else per_key(operator, key_by)


def per_key(operator: WindowOperator, key_by: KeyBy) -> WindowOperator:
    """``operator``'s strategy run once per key."""
    make = operator.make_core
    make().spawn()  # a strategy that cannot be copied per key fails now, not at its first record
    keyed = WindowOperator(lambda: KeyedCore(make(), key_by), operator.scheduler)
    keyed.late = operator.late  # late messages reach whoever subscribed to the original
    return keyed
