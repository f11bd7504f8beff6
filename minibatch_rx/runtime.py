"""What a pipeline run reads from and how it acknowledges: two small protocols.

A :class:`~minibatch_rx.pipeline.Pipeline` is an immutable description;
running it (``start``, ``run``, ``to_observable``) builds a flow that reads a
:class:`MessageSource` and hands each committed position to an
:class:`Acknowledger`. By default both are the pipeline's stream in its
store (:class:`StoreSource`, and consumer positions with the window journal).
Pass others to run the same description elsewhere: a test feeding a list of
messages and recording the acknowledgements, a connector reading straight
from a broker and committing offsets there, a tool replaying a file.

>>> from minibatch_rx import stream
>>> from minibatch_rx.message import Message
>>> acks = []
>>> class Record:
...     def commit(self, seq, checkpoint):
...         acks.append(seq)
>>> msgs = [Message('orders', n, None, {'qty': n}) for n in range(1, 7)]
>>> orders = stream('orders', url='memory://doc-runtime')
>>> p = orders.count_window(3).map(lambda w: sum(d['qty'] for d in w.data))
>>> out = []
>>> h = p.sink(out.append).run(consumer='c', max_windows=2,
...                            source=MessagesSource(msgs), acknowledger=Record())
>>> out, acks
([6, 15], [3, 6])
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise
from typing import Any, Protocol, runtime_checkable

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops

from minibatch_rx.message import Message
from minibatch_rx.source import store_source
from minibatch_rx.streams import Stream
from minibatch_rx.windows import ReadProgress


@runtime_checkable
class MessageSource(Protocol):
    """Where a run reads messages from, in seq order."""

    def observe(self, consumer: str | None, scheduler: abc.SchedulerBase | None, batch_size: int,
                progress: ReadProgress) -> Observable[Message]:
        """The messages after ``consumer``'s position (all, without one).

        ``batch_size`` bounds how many are read ahead; ``progress.behind``
        should say, while messages are handed on, whether more were already
        waiting behind them (a backlog: time windows then wait for the
        replay), and ``progress.messages`` counts what was read.
        """
        ...


@runtime_checkable
class Acknowledger(Protocol):
    """Where a run commits its progress."""

    def commit(self, seq: int, checkpoint: Any) -> None:
        """Every message up to ``seq`` is processed and its results delivered.

        ``checkpoint`` is the window state to restore with that position
        (``None`` for stateless strategies): the default acknowledger keeps
        it in the window journal; another one may keep it or not. To
        restore it, an acknowledger also offers ``resume()`` returning a
        :class:`~minibatch_rx.windows.Resume`, and, for time windows to be
        cut the same way after a restart, ``record_clock(event, after, at,
        detail)`` keeping the clock's decisions (see
        :class:`~minibatch_rx.windows._engine.Journal`). Without them a run
        starts its windows afresh.
        """
        ...


class StoreSource:
    """The default source: a stream of a store, from the consumer's position."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def observe(self, consumer: str | None, scheduler: abc.SchedulerBase | None, batch_size: int,
                progress: ReadProgress) -> Observable[Message]:
        """The stream's messages after ``consumer``'s committed position, live."""
        return store_source(self.stream.store, self.stream.name, None, consumer, scheduler, batch_size,
                            progress)


class MessagesSource:
    """Given messages, handed on in order, then nothing more (the run goes on
    until stopped, like a run on a quiet stream).

    Messages must have increasing seqs; those at or below ``after`` are skipped.
    """

    def __init__(self, messages: Iterable[Message], after: int = 0) -> None:
        self.messages = [m for m in messages if m.seq > after]
        seqs = [m.seq for m in self.messages]
        if any(b <= a for a, b in pairwise(seqs)):
            raise ValueError("MessagesSource needs messages in increasing seq order")

    def observe(self, consumer: str | None, scheduler: abc.SchedulerBase | None, batch_size: int,
                progress: ReadProgress) -> Observable[Message]:
        """The messages, in the subscriber's thread; a run stopped part-way reads no further."""
        total = len(self.messages)

        def read(pair: tuple[int, Message]) -> Message:
            index, message = pair
            progress.behind = index + 1 < total
            progress.messages += 1
            return message

        # Never completing: a run on given messages ends as one on a quiet stream does.
        return reactivex.concat(
            reactivex.from_iterable(enumerate(self.messages)).pipe(ops.map(read)), reactivex.never())
