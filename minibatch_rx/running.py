"""Running a pipeline: the operators around the user's stages, and the handle.

``guard`` keeps a stopped pipeline from taking more input and surfaces
errors from timer threads; ``commit`` acknowledges each window once its
stages are done; :class:`PipelineHandle` is what ``start()`` returns.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from minibatch_rx.calls import Fused, subscribe_to
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.metrics import Meter, Metrics, prometheus_collector
from minibatch_rx.resilience import OUTAGES, until_reachable
from minibatch_rx.stages import Ack, Envelope, Failure, Item, Stage

log = logging.getLogger(__name__)


def guard(active: Callable[[], bool] | None) -> Callable[[Observable[Any]], Observable[Any]]:
    """Pass values on while ``active()`` (always, if ``None``), and turn an
    exception raised downstream into ``on_error``.

    Windows emitted by a timer (a count window's timeout, a time window's
    end) are processed in the scheduler's thread; without this, a failure
    there (say, the dead-letter append) would be lost in that thread while
    the pipeline looked healthy.
    """

    def operator(source: Observable[Any]) -> Observable[Any]:
        def subscribe(observer: abc.ObserverBase[Any],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            stopped = [False]  # a plain flag: read for every value
            on_next_ = observer.on_next

            def on_next(value: Any) -> None:
                if stopped[0] or (active is not None and not active()):
                    return
                try:
                    on_next_(value)
                except Exception as exc:
                    on_error(exc)

            def on_error(error: Exception) -> None:
                if not stopped[0]:
                    stopped[0] = True
                    observer.on_error(error)

            return subscribe_to(source, on_next, on_error, observer.on_completed, scheduler)

        return Fused(subscribe)

    return operator


def only_items() -> Callable[[Observable[Envelope]], Observable[Any]]:
    def operator(source: Observable[Envelope]) -> Observable[Any]:
        def subscribe(observer: abc.ObserverBase[Any],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            def on_next(envelope: Envelope) -> None:
                if isinstance(envelope, Item):
                    observer.on_next(envelope.value)

            return subscribe_to(source, on_next, observer.on_error, observer.on_completed, scheduler)

        return Fused(subscribe)

    return operator


Acknowledge = Callable[[int, Any], None]
"""``acknowledge(seq, checkpoint)``: commit a position (with the window state to keep)."""


def commit(acknowledge: Acknowledge, outage_timeout: float,
           after_ack: Callable[[int | None], None] | None, interval: float = 0.0,
           handle: PipelineHandle | None = None) -> Stage:
    """Call ``acknowledge(seq)`` for the Acks, riding out a store outage of up
    to ``outage_timeout`` seconds (an Ack must not be skipped).

    With ``interval`` > 0, acknowledgements are coalesced: at most one store
    write per ``interval`` seconds, the latest seq winning; a pending one is
    written when the interval ends and when the pipeline stops. A crash may
    then redeliver up to ``interval`` seconds of windows (at-least-once).
    With a ``handle``, a stop that gave up on a stuck stage writes the pending
    position itself, and acks arriving after that are dropped.
    """

    def operator(flow: Observable[Envelope]) -> Observable[Envelope]:
        def subscribe(observer: abc.ObserverBase[Envelope],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            pending = _PendingAck(acknowledge, outage_timeout, interval)
            if handle is not None:
                handle._on_stop.append(pending.flush_on_stop)

            on_next_ = observer.on_next

            def on_next(envelope: Envelope) -> None:
                if type(envelope) is Ack:
                    if handle is not None and handle._abandoned:
                        return  # the stop gave up on this window: it is delivered again
                    seq = envelope.seq
                    if seq is not None:
                        pending.ack(seq, envelope.checkpoint)
                    if after_ack is not None and envelope.counts:
                        after_ack(seq)
                    elif handle is not None and seq is not None and seq > handle.position:
                        handle.position = seq  # a checkpoint-only window moves the position too
                on_next_(envelope)

            subscription = subscribe_to(flow, on_next, observer.on_error, observer.on_completed, scheduler)
            # Stop the flow first, then write what is still pending.
            return CompositeDisposable(subscription, Disposable(pending.flush_on_stop))

        return Fused(subscribe)

    return operator


COST_RATIO = 10.0  # a commit that took t seconds: the next one no sooner than COST_RATIO * t later
MAX_GAP = 1.0  # ... but at most this many seconds later (or the commit interval, if longer)


class _PendingAck:
    """The latest acknowledged seq not yet written, and when to write it.

    A deferred write is made by one flusher thread per pipeline, started at
    the first deferral and kept until the pipeline stops (a ``threading.Timer``
    per deferral would start a thread every ``interval``).

    A write that takes long (a large checkpoint: the state of many keys, or a
    pattern's partial matches) spaces the next ones out, to :data:`COST_RATIO`
    times its duration (at most :data:`MAX_GAP` seconds), so committing never
    takes more than about a tenth of the pipeline's time.
    """

    def __init__(self, acknowledge: Acknowledge, outage_timeout: float, interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.acknowledge, self.outage_timeout, self.interval = acknowledge, outage_timeout, interval
        self.clock = clock
        self.gap = interval  # the interval, or longer after a slow write
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.seq: int | None = None
        self.checkpoint: Any = None
        self.written_at = -math.inf
        self.due: float | None = None  # when the deferred write is due (monotonic)
        self.flusher: threading.Thread | None = None
        self.stopped = False

    def ack(self, seq: int, checkpoint: Any = None) -> None:
        with self.lock:
            self.seq = seq
            if checkpoint is not None:
                self.checkpoint = checkpoint
            if self.clock() - self.written_at >= self.gap:
                self.write()
            elif self.due is None:
                self.due = self.written_at + self.gap
                if self.flusher is None:
                    self.flusher = threading.Thread(target=self.flush_later, name="minibatch-commit",
                                                    daemon=True)
                    self.flusher.start()
                self.wake.notify()

    def write(self) -> None:
        self.due = None
        if self.seq is None:
            return
        seq, checkpoint = self.seq, self.checkpoint
        began = self.clock()
        until_reachable(lambda: self.acknowledge(seq, checkpoint), self.outage_timeout)
        self.seq = None
        self.written_at = self.clock()
        if self.interval > 0:
            took = self.written_at - began
            self.gap = min(max(self.interval, COST_RATIO * took), max(self.interval, MAX_GAP))

    def flush_on_stop(self) -> None:
        """Write the pending acknowledgement once, as the pipeline stops. If the
        store is unreachable now, the windows since the last write will be
        delivered again: logged, as at-least-once allows."""
        with self.lock:
            self.stopped = True
            self.due = None
            self.wake.notify()
            if self.seq is None:
                return
            seq, self.seq = self.seq, None
            try:
                self.acknowledge(seq, self.checkpoint)
            except OUTAGES as exc:
                log.warning("could not commit position %d on stop (%s); those windows will be "
                            "delivered again", seq, exc)

    def flush_later(self) -> None:
        """The flusher thread: write each deferred acknowledgement when it is due."""
        with self.lock:
            while not self.stopped:
                if self.due is None:
                    self.wake.wait()
                    continue
                delay = self.due - self.clock()
                if delay > 0:
                    self.wake.wait(delay)
                    continue
                try:
                    self.write()
                except Exception:  # reported; the next ack or the stop writes it again
                    self.due = None
                    log.exception("could not commit the consumer position; will retry")


class PipelineHandle:
    """A running pipeline: :meth:`stop` it, :meth:`join` it, read its counters.

    Attributes:
        consumer: the name its position is kept under (or the group's name).
        windows: windows processed so far; position: the last committed seq.
        dead_letters: windows sent to :attr:`dead_letter_stream` so far.
        stuck: after a :meth:`stop` that timed out, which stage was stuck.
        error: the error that stopped it, if any.
    """

    def __init__(self, max_windows: int | None, consumer: str = "default",
                 dead_letter_stream: str | None = None) -> None:
        if max_windows is not None and (isinstance(max_windows, bool) or not isinstance(max_windows, int)
                                        or max_windows <= 0):
            raise InvalidArgumentError(f"max_windows must be an int > 0, got {max_windows!r}")
        self.max_windows = max_windows
        self.consumer = consumer
        self.dead_letter_stream = dead_letter_stream
        self.windows = 0
        self.position = 0
        self.stuck: str | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._live = True  # False once stopping or done: read for every message, kept a plain flag
        self._disposed = threading.Event()
        self._stopping = False
        self._abandoned = False
        self._lock = threading.Lock()
        self._subscription: abc.DisposableBase | None = None
        self._stopper: threading.Thread | None = None
        self._failure: Failure | None = None
        self._on_stop: list[Callable[[], None]] = []
        self._finished = False
        self._claim: tuple[str, str, str] | None = None
        self._meter: Meter | None = None
        self._source: Any = None  # the Stream read (set when the flow is built)
        self.fence: Callable[[], bool] | None = None
        """If set and false when a position is to be committed, the commit is skipped
        and the run stops: a group's partition run whose lease may have run out (see
        :mod:`minibatch_rx.partition_group`)."""
        self._servers: list[Any] = []
        self._writer: threading.Thread | None = None  # writes the last position after a stop gave up

    @property
    def dead_letters(self) -> int:
        """How many windows this run sent to the dead-letter stream."""
        return self._failure.dead if self._failure is not None else 0

    def _subscribe(self, flow: Observable[Envelope]) -> None:
        subscription = flow.subscribe(on_error=self._on_error)
        with self._lock:
            if not (self._stopping or self._done.is_set()):
                self._subscription = subscription
                return
        subscription.dispose()  # finished while subscribing (synchronous catch-up)
        self._disposed.set()
        self._finish()

    def _on_ack(self, seq: int | None) -> None:
        self.windows += 1
        if seq is not None:
            self.position = seq
        # Stop only where a position is committed: windows closed together share
        # one (the step's last carries it), and stopping inside such a step would
        # hand its first windows to the next run again.
        if seq is not None and self.max_windows is not None and self.windows >= self.max_windows:
            self.stop(timeout=0)  # from inside the flow: never wait for ourselves

    def _on_error(self, error: Exception) -> None:
        self.error = error
        self._live = False
        self._done.set()

    def metrics(self) -> Metrics:
        """The run's figures so far: messages in, windows out, late, dead-lettered,
        retries, position, lag (head of the stream - position), watermark and
        time per stage (see :mod:`minibatch_rx.metrics`).

        >>> from minibatch_rx import stream
        >>> s = stream('doc-metrics', url='memory://doc-metrics')
        >>> _ = s.extend([{'n': n} for n in range(10)])
        >>> handle = s.count_window(5).map(len).run(consumer='m', max_windows=2)
        >>> m = handle.metrics()
        >>> (m.messages_in, m.windows_out, m.position, m.lag, m.stages['map'].count)
        (10, 2, 10, 0, 2)
        """
        meter, failure, source = self._meter, self._failure, self._source
        head: int | None = None
        if source is not None:
            try:
                head = source.store.last_seq(source.name)
            except OUTAGES:
                head = None
        return Metrics(
            stream=source.name if source is not None else "",
            consumer=self.consumer,
            messages_in=meter.read() if meter else 0,
            windows_out=self.windows,
            late=meter.late if meter else 0,
            dead_lettered=failure.dead if failure else 0,
            retries=failure.retries if failure else 0,
            position=self.position,
            head=head,
            lag=None if head is None else max(0, head - self.position),
            watermark=meter.watermark() if meter else None,
            stages=failure.times.snapshot() if failure else {},
        )

    def serve_metrics(self, port: int = 0, addr: str = "127.0.0.1") -> int:
        """Serve :meth:`metrics` in Prometheus' text format over HTTP at
        ``http://addr:port/metrics`` until the pipeline stops; returns the port
        (``port=0``: a free one). Needs ``pip install 'minibatch_rx[metrics]'``.
        """
        from minibatch_rx.connectors import require

        client = require("prometheus_client", "metrics", "serving metrics")
        registry = client.CollectorRegistry(auto_describe=False)
        registry.register(prometheus_collector(self.metrics))
        server, _thread = client.start_http_server(port, addr=addr, registry=registry)
        with self._lock:
            if not self._finished:
                self._servers.append(server)
                return int(server.server_port)
        server.shutdown()  # the pipeline had already stopped
        server.server_close()
        return int(server.server_port)

    def accepting_acks(self) -> bool:
        """False once a stop gave up on a stuck stage: its window, should it
        finish later, is not acknowledged (it is delivered again)."""
        return not self._abandoned

    @property
    def running(self) -> bool:
        """True until the pipeline is stopped, fails, or reaches ``max_windows``."""
        return self._live

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the pipeline is done; False if ``timeout`` passed first."""
        return self._done.wait(timeout)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking input, let the window in flight finish, write the last
        acknowledged position, then release :meth:`join`. Idempotent.

        Waits at most ``timeout`` seconds (``None``: as long as the window in
        flight takes). If a user function is still running then, the stop
        gives up on it: :attr:`stuck` names the stage and window, a warning is
        logged, that window stays unacknowledged (it is delivered again on the
        next run), and the thread running it is abandoned (Python cannot kill
        a thread; it is a daemon thread, so it does not keep the process
        alive). Returns False in that case, True on a clean stop.
        """
        with self._lock:
            self._stopping = True
            self._live = False
            if self._stopper is None:
                subscription, self._subscription = self._subscription, None
                self._stopper = threading.Thread(target=self._dispose, args=(subscription,),
                                                 name="minibatch-stop", daemon=True)
                self._stopper.start()
        inside = self._failure is not None and self._failure.activity.running_here()
        if self._stopper is threading.current_thread() or timeout == 0 or inside:
            # Called from a user function of this pipeline: the stop completes once
            # that function returns; waiting here would wait for ourselves.
            return self._disposed.is_set()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Keep a little of the bound for writing the last position if we give up.
        reserve = 0.0 if timeout is None else min(0.5, timeout / 4)
        if self._disposed.wait(None if timeout is None else timeout - reserve):
            return True
        self._abandoned = True
        if self._failure is not None:
            self.stuck = self._failure.activity.describe()
        log.warning("stopping pipeline %r: gave up after %.3g s; stuck in %s. That window is not "
                    "acknowledged and will be delivered again; its thread is abandoned.",
                    self.consumer, timeout, self.stuck or "the window operator")
        # The last position is written in a thread of its own: a store outage (or the
        # stuck flow holding the commit lock) must not stretch stop() past its bound.
        writer = self._writer = threading.Thread(target=self._flush_all, name="minibatch-stop-flush",
                                                 daemon=True)
        writer.start()
        writer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        self._finish()
        return False

    def quiet(self) -> bool:
        """True once a stopped run can do nothing more: its flow is disposed (a
        function it gave up on has returned) and its last position is written."""
        writer = self._writer
        return self._disposed.is_set() and (writer is None or not writer.is_alive())

    def wait_quiet(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`quiet` (at most ``timeout`` seconds); whether it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._disposed.wait(timeout):
            return False
        writer = self._writer
        if writer is not None:
            writer.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self.quiet()

    def _flush_all(self) -> None:
        for flush in self._on_stop:
            with contextlib.suppress(*OUTAGES):
                flush()

    def _dispose(self, subscription: abc.DisposableBase | None) -> None:
        try:
            if subscription is not None:
                subscription.dispose()
        except Exception as exc:  # reported, not lost in this thread
            log.exception("error while stopping pipeline %r", self.consumer)
            if self.error is None:
                self.error = exc
        finally:
            self._finish()
            self._disposed.set()

    def _finish(self) -> None:
        """Release :meth:`join` and the consumer name, once; report dead letters."""
        with self._lock:
            finished, self._finished = self._finished, True
        self._live = False
        self._done.set()
        if finished:
            return
        for server in self._servers:  # metrics endpoints end with the run
            server.shutdown()
            server.server_close()
        if self.dead_letters:
            log.warning("pipeline %r: %d window(s) sent to dead-letter stream %r",
                        self.consumer, self.dead_letters, self.dead_letter_stream)
        _release(self)


_running: dict[tuple[str, str, str], PipelineHandle] = {}
_running_lock = threading.Lock()


def claim(handle: PipelineHandle, store_url: str, stream: str) -> None:
    """Refuse a second running pipeline with the same consumer on the same stream in
    this process: both would process every message."""
    key = (store_url, stream, handle.consumer)
    with _running_lock:
        other = _running.get(key)
        if other is not None and other.running:
            raise InvalidArgumentError(
                f"consumer {handle.consumer!r} is already running on stream {stream!r} in this "
                "process; give each pipeline its own consumer name (run(consumer=...))"
            )
        _running[key] = handle
        handle._claim = key


def _release(handle: PipelineHandle) -> None:
    key = handle._claim
    if key is None:
        return
    with _running_lock:
        if _running.get(key) is handle:
            del _running[key]
