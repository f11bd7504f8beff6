"""Building a pipeline's flow: from the store to the commits.

:class:`~minibatch_rx.pipeline.Pipeline` is the immutable description;
:func:`build` turns it into the reactivex flow a run subscribes to: the
source reader, the stages before the window (records), the window operator
with its journal, late and dead-letter outputs, the stages after it, and
the acknowledger that commits positions. A pipeline with several windows is
built as one flow per window, chained through stage streams (:func:`chained`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops
from reactivex.disposable import CompositeDisposable
from reactivex.scheduler import VirtualTimeScheduler

from minibatch_rx.cep.stage import PatternSpec, timeout_deliverer
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.group import GroupFeed
from minibatch_rx.journal import StreamJournal
from minibatch_rx.message import Message
from minibatch_rx.metrics import Meter
from minibatch_rx.naming import stage_stream_name
from minibatch_rx.records import StageTrim, as_records, dead_letter_rejected, storable, storing
from minibatch_rx.resilience import until_reachable
from minibatch_rx.running import PipelineHandle, commit, guard
from minibatch_rx.runtime import Acknowledger, MessageSource, StoreSource
from minibatch_rx.stages import Envelope, Failure, envelop, late_sink
from minibatch_rx.streams import Stream
from minibatch_rx.usage import Usage
from minibatch_rx.windows import ReadProgress
from minibatch_rx.windows._engine import Journal, WindowOperator, scheduler_seconds

if TYPE_CHECKING:
    from minibatch_rx.pipeline import Pipeline, SinkTarget

log = logging.getLogger(__name__)
EXPIRY_EVERY = 1.0  # seconds between age-based retention sweeps of a running pipeline
PARTITION_TICKS = 256  # a partition's run commits its way over other partitions' messages this often


def build(pipeline: Pipeline[Any, Any], consumer: str | None, group: GroupFeed | None,
          scheduler: abc.SchedulerBase | None,
          active: Callable[[], bool] | None = None, coalesce: bool = True,
          handle: PipelineHandle | None = None, reader: MessageSource | None = None,
          acks: Acknowledger | None = None) -> Observable[Envelope]:
    """The whole flow up to the commits. ``active()`` turning false stops
    new messages and windows from entering it at once, even while a
    synchronous catch-up is still emitting (``max_windows``, ``stop()``).
    ``reader`` and ``acks`` replace the stream and its consumer positions
    (see :mod:`minibatch_rx.runtime`)."""
    if reader is None:
        check_clock(pipeline.source, scheduler)
    if (reader is not None or acks is not None) and (pipeline.upstream is not None or group is not None):
        raise InvalidArgumentError(
            "source= and acknowledger= take a pipeline with one window, run by a single consumer: "
            "a pipeline with several windows reads its later windows from its stage streams, and a "
            "group shares its work through the store")
    if pipeline.upstream is not None:
        return chained(pipeline, consumer, scheduler, active, coalesce, handle)
    return own_flow(pipeline, pipeline.source, consumer, group, scheduler, active, coalesce, handle,
                    reader=reader, acks=acks)

def chained(pipeline: Pipeline[Any, Any], consumer: str | None, scheduler: abc.SchedulerBase | None,
             active: Callable[[], bool] | None, coalesce: bool,
             handle: PipelineHandle | None) -> Observable[Envelope]:
    """The flow of a pipeline after its first window: the previous
    pipeline feeding the stage stream, and this one reading it."""
    assert pipeline.upstream is not None
    source = pipeline.source
    owner = consumer or "default"
    # Named after the consumer and the pipeline's shape up to here: two pipelines
    # (or two shapes under one consumer name) never share a stage stream.
    stage = Stream(stage_stream_name(source.name, owner, pipeline.hop, pipeline.upstream.shape),
                   store=source.store)
    feeder = pipeline.upstream._stage("stage", lambda _f, _s, _o: storing).sink(stage)
    feeder._usage.ran = True
    upstream = feeder._flow(consumer, None, scheduler, active, coalesce)
    trim = StageTrim(stage, source, owner)
    reader = replace(pipeline, _usage=Usage(ran=True))
    own = own_flow(reader, stage, consumer, None, scheduler, active, coalesce, handle, trim)

    def subscribe(observer: abc.ObserverBase[Envelope],
                  scheduler_: abc.SchedulerBase | None = None) -> abc.DisposableBase:
        feeding = upstream.subscribe(on_error=observer.on_error, scheduler=scheduler_)
        return CompositeDisposable(own.subscribe(observer, scheduler=scheduler_), feeding)

    return reactivex.create(subscribe)

def own_flow(pipeline: Pipeline[Any, Any], source: Stream, consumer: str | None, group: GroupFeed | None,
              scheduler: abc.SchedulerBase | None, active: Callable[[], bool] | None, coalesce: bool,
              handle: PipelineHandle | None, trim: StageTrim | None = None,
              reader: MessageSource | None = None, acks: Acknowledger | None = None) -> Observable[Envelope]:
    """The flow of one window: reading ``source`` (the stream, or a stage stream;
    or ``reader``) to the commits (or ``acks``)."""
    owner = group.group if group is not None else (consumer or "default")
    home = pipeline.source  # dead letters and late messages go next to the pipeline's own stream
    failure = Failure(pipeline.retry_policy, Stream(f"{home.name}.dead", store=home.store), scheduler)
    meter = Meter()
    if handle is not None:
        handle._failure = failure
        handle._meter = meter
        handle._source = source
    journal: StreamJournal | None = None
    windowed: Observable[Any]
    if group is not None:
        windowed = group.observable(scheduler).pipe(guard(active))
    else:
        progress = ReadProgress()
        meter.read = lambda: progress.messages
        operator = None
        if pipeline.window_spec is not None:
            operator = pipeline.window_spec.operator(scheduler, key_by=pipeline.key_spec,
                                                     clock=pipeline.clock_spec)
        # A plain window operator guards its input and its output itself (two
        # fewer hops per message and per window); what runs between the source
        # and the window (a stage stream's unwrapping, stages) is guarded apart.
        fused = type(operator) is WindowOperator
        windowed = (reader or StoreSource(source)).observe(consumer, scheduler, pipeline.prefetch,
                                                             progress)
        if not fused or trim is not None or pipeline.pre_stages:
            windowed = windowed.pipe(guard(active))
        if trim is not None:
            windowed = windowed.pipe(ops.map(trim.unstored))
        if pipeline.pre_stages:
            windowed = windowed.pipe(as_records(tuple(make(failure, source, owner)
                                                      for make in pipeline.pre_stages)))
        if pipeline.window_spec is not None:
            assert operator is not None
            operator.progress, operator.stream = progress, source.name
            if pipeline.key_spec is not None and pipeline.key_spec.owns is not None:
                operator.ticks = PARTITION_TICKS  # a group's partition: move over the others' keys
            operator.records = bool(pipeline.pre_stages)
            operator.rejected.subscribe(dead_letter_rejected(failure, owner))
            if consumer is not None and operator.clocked and acks is None:
                journal = StreamJournal(source.store, source.name, consumer, pipeline.window_spec.label,
                                        pipeline.retry_policy.outage_timeout)
                operator.journal, operator.resume = journal, journal.load
                if handle is not None:
                    journal.fence = handle.fence
            elif operator.clocked and acks is not None:
                # Checkpoints go to the acknowledger with each commit; it keeps the
                # clock decisions too if it can (record_clock), and resumes if it can.
                keeps = callable(getattr(acks, "record_clock", None))
                operator.journal = cast(Journal, acks) if keeps else _UNKEPT
                resume = getattr(acks, "resume", None)
                if callable(resume):
                    operator.resume = resume
            operator.late.subscribe(counted(late_deliverer(pipeline, owner), meter))
            meter.watermark = operator.watermark
            if isinstance(pipeline.window_spec, PatternSpec):
                target = pipeline.window_spec.timeouts
                if target is None:  # (not `or`: an empty Stream is falsy)
                    target = f"{home.name}.timeouts"
                operator.side.subscribe(timeout_deliverer(partial(resolve, target, home), owner))
            if fused:
                operator.guarded, operator.active = True, active
                windowed = windowed.pipe(operator)
            else:
                windowed = windowed.pipe(operator, guard(active))
    flow = windowed.pipe(envelop, *(make(failure, source, owner) for make in pipeline.stages))
    # Coalescing needs a real clock, a single position and a handle that
    # flushes on stop: not in virtual time, not for groups (each lease is
    # completed on its own), not for plain Rx interop.
    plain = scheduler is not None or group is not None or not coalesce
    interval = 0.0 if plain else pipeline.commit_interval
    acknowledge = acks.commit if acks is not None else acknowledger(pipeline, source, consumer, group,
                                                                    scheduler, journal)
    if handle is not None and consumer is not None and acks is None and reader is None:
        # A restarted consumer starts where it was acknowledged (its lag is not the whole stream).
        handle.position = until_reachable(lambda: source.position(consumer),
                                          pipeline.retry_policy.outage_timeout)
    if trim is not None:
        acknowledge = then(acknowledge, trim.acknowledged)
    if handle is not None and handle.fence is not None:
        acknowledge = fenced(acknowledge, handle.fence, handle)
    return flow.pipe(commit(acknowledge,
                            pipeline.retry_policy.outage_timeout, pipeline.after_ack, interval, handle))

class _Unkept:
    """A journal that keeps no clock decisions (an acknowledger without ``record_clock``)."""

    def record_clock(self, event: int, after: int, at: float, detail: Any = None) -> None:
        """Not kept."""


_UNKEPT = _Unkept()


def counted(deliver: Callable[[Message], Any], meter: Meter) -> Callable[[Message], Any]:
    """``deliver``, counting each late message in ``meter``."""
    def count(message: Message) -> Any:
        meter.late += 1
        return deliver(message)

    return count


def late_deliverer(pipeline: Pipeline[Any, Any], owner: str) -> Callable[[Message], Any]:
    """Where late messages go; the default stream ``<name>.late`` is created
    only when a message is late."""
    resolved: list[Callable[[Message], Any]] = []

    def deliver(message: Message) -> Any:
        if not resolved:
            late = pipeline.late_target
            target = resolve(f"{pipeline.source.name}.late" if late is None else late, pipeline.source)
            to_stream = isinstance(target, Stream)
            resolved.append(late_sink(target, owner))
            if to_stream:  # a record a stage made may be no dict: stored as {'v': value}
                resolved[0] = storing_late(resolved[0])
        return resolved[0](message)

    return deliver

def acknowledger(pipeline: Pipeline[Any, Any], source: Stream, consumer: str | None, group: GroupFeed | None,
                  scheduler: abc.SchedulerBase | None,
                  journal: StreamJournal | None) -> Callable[[int, Any], None]:
    retention = pipeline.retention_policy
    clock: Callable[[], float] = time.monotonic
    if scheduler is not None:
        clock = partial(scheduler_seconds, scheduler)
    last_expiry = [-math.inf]
    # Register before the first ack, so retention never trims what this
    # consumer (or group) has not seen yet.
    name = group.group if group is not None else consumer
    if name is not None:
        until_reachable(lambda: source.commit(name, 0), pipeline.retry_policy.outage_timeout)

    def acknowledge(seq: int, checkpoint: Any) -> None:
        if group is not None:
            group.complete(seq)
        elif consumer is not None:
            if journal is not None and checkpoint is not None:
                journal.checkpoint(checkpoint, seq)  # first: the state must never lag the position
            source.commit(consumer, seq)
            if journal is not None:
                journal.prune()
        if retention.acknowledged_only:
            source.trim_acknowledged()
        if retention.max_age is not None and clock() - last_expiry[0] >= EXPIRY_EVERY:
            source.expire(retention.max_age)
            last_expiry[0] = clock()

    return acknowledge



def fenced(acknowledge: Callable[[int, Any], None], fence: Callable[[], bool],
           handle: PipelineHandle) -> Callable[[int, Any], None]:
    """``acknowledge``, skipped while ``fence()`` is false; the run then stops. (A group
    member paused past its lease must not commit a partition another member now runs:
    its position and checkpoint would mix with the new holder's.)"""
    def commit_if_held(seq: int, checkpoint: Any) -> None:
        if fence():
            acknowledge(seq, checkpoint)
            return
        log.warning("consumer %r: its lease may have run out; position %d not committed, and the "
                    "run stops (another member takes the partition over from its last commit)",
                    handle.consumer, seq)
        handle.stop(timeout=0)

    return commit_if_held


def then(acknowledge: Callable[[int, Any], None],
          after: Callable[[int], None]) -> Callable[[int, Any], None]:
    def both(seq: int, checkpoint: Any) -> None:
        acknowledge(seq, checkpoint)
        after(seq)

    return both


def storing_late(deliver: Callable[[Message], Any]) -> Callable[[Message], Any]:
    return lambda message: deliver(replace(message, data=storable(message.data)))


def check_clock(source: Stream, scheduler: abc.SchedulerBase | None) -> None:
    """In virtual time, the source's store must stamp messages with the scheduler's
    clock: a wall-clock stamp lies decades past the virtual clock, so a time window
    would wait for it forever and the pipeline would emit nothing."""
    if not isinstance(scheduler, VirtualTimeScheduler):
        return
    clock = getattr(source.store, "clock", None)
    if clock is None or clock() != scheduler.now:
        raise InvalidArgumentError(
            f"scheduler {type(scheduler).__name__} keeps virtual time, but stream {source.name!r} is "
            f"stamped by its store's own clock ({source.store!r}), so its time windows would never "
            "close: run virtual-time pipelines on minibatch_rx.testing.VirtualTime "
            "(vt.stream(name), then vt.run(pipeline, until=...))"
        )


def resolve(target: SinkTarget, source: Stream) -> Stream | Callable[[Any], Any]:
    if isinstance(target, str):
        return Stream.get_or_create(target, store=source.store)
    return target


