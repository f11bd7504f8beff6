"""The machinery shared by every window strategy.

A strategy is a small state machine, a :class:`WindowCore`: it is told about
messages and about the clock, and answers with the windows to emit. It never
touches threads or schedulers. :class:`WindowOperator` drives a core as a
reactivex operator: it serialises messages and timer callbacks under one lock,
keeps exactly one timer armed at the core's next deadline (on the scheduler,
so virtual time works), and stamps each window with its ``ack`` seq.

**Same windows after a restart.** A core decides from two inputs: the
messages, in seq order, and the clock. Replaying the messages after a crash
reproduces every decision the messages made; the clock's decisions (a window
closed because the stream went quiet, a partial count window flushed on its
timeout) cannot be reproduced, so the operator writes each one to a
:class:`Journal` *before* acting on it, and a restarted operator applies them
again at the same point of the replay instead of consulting the clock. The
core's own state (which windows are already out) travels as the checkpoint of
the window whose ack is committed. While replaying, and while the reader is
behind the end of the stream, the clock decides nothing.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, SerialDisposable
from reactivex.scheduler import EventLoopScheduler, VirtualTimeScheduler
from reactivex.subject import Subject

from minibatch_rx.calls import Fused, subscribe_to
from minibatch_rx.message import Message
from minibatch_rx.window import Window, stamp

EPS = 1e-6  # clock values pass through datetime (microseconds); compare with slack
RECHECK = 0.05  # seconds between clock checks while the reader is behind
TICK_EVERY = 1.0  # with ticks: seconds between checkpoint-only windows once caught up


def to_datetime(seconds: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(seconds, UTC)


def scheduler_seconds(scheduler: abc.SchedulerBase) -> float:
    """The scheduler's clock as epoch seconds (virtual clocks start at 0)."""
    now = scheduler.now
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return now.timestamp()


class WindowCore(ABC):
    """The per-subscription state of one window strategy.

    Times are epoch seconds: ``now`` from the scheduler, message times from
    ``Message.ts``. Each method returns the windows to emit, in order.
    ``on_message`` must decide from the messages alone; everything the
    clock decides goes through ``on_timer``, so it can be journaled.
    """

    stream: str | None = None
    clocked: bool = False
    """True if ``on_timer`` can emit or close windows: its decisions are
    journaled so that a restart reproduces them."""
    timeless: bool = False
    """True if :meth:`deadline` is always ``None`` (say, a count window without
    timeout): the driver then never asks the clock whether it is due, nor arms a timer."""
    hands_over: bool = False
    """True if every window the core returns is a new object it keeps no
    reference to: the driver then stamps a step's ack and checkpoint on its last
    window before anyone sees it, instead of handing on a copy."""
    waits_for_catch_up: bool = True
    """True if the clock must not decide while a backlog is read: a backlog
    arrives faster than the clock, so time windows would misfile it as late and
    count windows would flush it in partial windows. Relaxed windows are cut by
    the clock meanwhile (they have no late messages), which keeps a replayed
    backlog from piling up in one window."""

    def start(self, now: float) -> list[Window]:
        """Called once at subscription."""
        return []

    @abstractmethod
    def on_message(self, message: Message, now: float) -> list[Window]:
        """A message arrived."""

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        """The clock reached (or passed) :meth:`deadline`. ``forced``: a clock
        decision journaled by an earlier run, replayed; apply it without
        re-checking the conditions that made it (they depended on arrival times)."""
        return []

    def deadline(self) -> float | None:
        """When :meth:`on_timer` must run next, or ``None`` for never."""
        return None

    def deadline_moved(self) -> bool:
        """Whether :meth:`deadline` may now be earlier than when it was last
        asked, though no window was emitted. The driver asks it after every
        message to skip re-arming its timer (a timer already armed earlier is
        kept anyway); the default, True, always re-arms."""
        return True

    def clock_due(self, now: float) -> bool:
        """Whether the clock, at ``now``, would close something; asked before
        each message, so what the clock closed while no timer ran (say, an
        empty window on an idle stream) is settled before the message is placed."""
        deadline = self.deadline()
        return deadline is not None and now >= deadline - EPS

    def on_complete(self, now: float) -> list[Window]:
        """The source completed: flush what should not be lost."""
        return []

    @abstractmethod
    def held_min_seq(self) -> int | None:
        """Lowest seq still held for a future window (``None`` if none)."""

    def late(self) -> list[Message]:
        """Messages found late since the last call (then forgotten)."""
        return []

    def watermark(self) -> float | None:
        """The strategy's watermark, Unix seconds (``None``: it keeps none)."""
        return None

    def rejected(self) -> list[tuple[Message, str]]:
        """Messages that could not be placed since the last call (a missing or
        malformed timestamp or key), each with the reason; then forgotten."""
        return []

    def side_output(self) -> list[Window]:
        """Windows for the operator's :attr:`WindowOperator.side` output since the
        last call (a pattern's timed-out partial matches); then forgotten."""
        return []

    def decision(self) -> Any:
        """What the last :meth:`on_timer` decided, as JSON, if ``at`` alone
        cannot say it (a watermark, the keys it flushed); journaled with it."""
        return None

    def replay_timer(self, at: float, detail: Any) -> list[Window]:
        """Apply a journaled clock decision (``detail`` is :meth:`decision`'s)."""
        return self.on_timer(at, forced=True)

    def spawn(self) -> WindowCore:
        """A fresh core of the same strategy, for another key (``key_by``)."""
        return copy.deepcopy(self)

    def snapshot(self) -> Any:
        """JSON-compatible state that replaying messages cannot rebuild (which
        windows are already out); ``None`` if there is none."""
        return None

    def before_tick(self) -> None:  # noqa: B027 - optional hook, most cores need nothing
        """A checkpoint-only window (see :attr:`WindowOperator.ticks`) is about to
        snapshot the core after a step that emitted nothing: a core whose
        snapshot assumes it is taken at an emitting step notes the point here."""

    def restore(self, state: Any) -> None:  # noqa: B027 - optional hook, nothing to restore by default
        """Continue from a :meth:`snapshot` taken by an earlier run."""


class Journal(Protocol):
    """Where an operator keeps its clock decisions (see the module docstring)."""

    def record_clock(self, event: int, after: int, at: float, detail: Any = None) -> None:
        """Durably note: at step ``event``, after seq ``after``, the clock read
        ``at`` and decided ``detail`` (see :meth:`WindowCore.decision`)."""
        ...


@dataclass(frozen=True)
class Resume:
    """What a restarted operator continues from."""

    state: Any = None
    """The core snapshot saved with the committed position."""
    clock: tuple[tuple[int, int, float, Any], ...] = ()
    """Clock decisions ``(event, after_seq, at, detail)`` made after that snapshot, in order."""
    next_event: int = 1
    position: int = 0
    """The seq the source resumes after."""
    included: int = 0
    """The last clock decision (event) the state includes."""


@dataclass(frozen=True, slots=True)
class MessageEnd:
    """Follows the records one message gave (stages before a window may make
    several, or none): only then is that message wholly handed to the window,
    and may its seq be acknowledged."""

    seq: int


class ReadProgress:
    """Whether the reader feeding an operator is behind the end of the stream.

    A backlog being replayed arrives faster than the clock; letting the clock
    close windows meanwhile would cut them differently from the first run.
    """

    def __init__(self) -> None:
        self.behind = False
        self.messages = 0
        """Messages read for the operator so far (its pipeline's ``messages_in``)."""


class WindowOperator:
    """A reactivex operator ``Observable[Message] -> Observable[Window]``.

    Call it on an observable (or pass it to ``pipe``). Its :attr:`late`
    observable carries messages that arrived after their window was emitted.
    Pipelines also give it a :class:`ReadProgress`, a :class:`Journal` and a
    :class:`Resume`, so a restarted consumer emits the same windows.
    """

    def __init__(
        self, make_core: Callable[[], WindowCore], scheduler: abc.SchedulerBase | None = None
    ) -> None:
        self._make_core = make_core
        self._scheduler = scheduler
        self.late: Subject[Message] = Subject()
        self.rejected: Subject[tuple[Message, str]] = Subject()
        """Messages the strategy could not place (bad timestamp or key), with the reason."""
        self.side: Subject[Window] = Subject()
        """Windows a strategy hands aside (a pattern's timeouts), before the windows of the same step."""
        self.progress: ReadProgress | None = None
        self.stream: str | None = None
        """The source stream's name, for windows emitted before any message (empty ones)."""
        self.journal: Journal | None = None
        self.resume: Callable[[], Resume] | None = None
        self.records = False
        """True if records come with :class:`MessageEnd` markers (stages before the window)."""
        self.guarded = False
        """Pipelines set it to let the operator do a guard's work on both sides
        (see :func:`minibatch_rx.running.guard`): no message is taken nor window
        handed on while :attr:`active` returns False, and an exception raised
        while handling a message or handing a window on ends the subscription
        with ``on_error``. One operator instead of three: two fewer hops per value."""
        self.active: Callable[[], bool] | None = None
        """With :attr:`guarded`: whether the pipeline still takes input (``None``: always)."""
        self.current: WindowCore | None = None
        """The core of the latest subscription (for metrics)."""
        self.ticks = 0
        """If > 0: after this many messages in a row that emitted nothing, emit a
        checkpoint-only window (tag ``"tick"``, dropped before the stages), so
        the position moves over messages the strategy leaves to others (a
        group's run of some key partitions)."""

    def watermark(self) -> float | None:
        """The watermark of the latest subscription's strategy, if it keeps one."""
        core = self.current
        return None if core is None else core.watermark()

    @property
    def make_core(self) -> Callable[[], WindowCore]:
        """The factory of this operator's strategy core (one per subscription)."""
        return self._make_core

    @property
    def scheduler(self) -> abc.SchedulerBase | None:
        """The scheduler given when the operator was made, if any."""
        return self._scheduler

    @property
    def clocked(self) -> bool:
        """True if the strategy's clock decisions need a journal to survive restarts."""
        return self._make_core().clocked

    def __call__(self, source: Observable[Message]) -> Observable[Window]:
        def subscribe(
            observer: abc.ObserverBase[Window], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            own: EventLoopScheduler | None = None
            scheduler = self._scheduler or scheduler_
            if scheduler is None:
                # One timer thread per subscription, whatever the input: reactivex's
                # default (TimeoutScheduler) starts an OS thread per timer.
                scheduler = own = EventLoopScheduler()
            resume = self.resume() if self.resume is not None else Resume()
            core = self.current = self._make_core()
            run = _Run(self, core, scheduler, observer, resume)
            subscription = run.subscribe(source, scheduler_)
            if own is None:
                return subscription
            return CompositeDisposable(subscription, own)

        return Fused(subscribe)


def acked(window: Window, ack: int | None, checkpoint: Any) -> Window:
    """A copy of ``window`` with ``ack`` and ``checkpoint`` (``dataclasses.replace``
    for a subclass of :class:`Window`; a plain one is rebuilt field by field,
    many times faster)."""
    if type(window) is not Window:
        return replace(window, ack=ack, checkpoint=checkpoint)
    return Window(window.messages, window.stream, window.start, window.end, ack, checkpoint,
                  window.key, window.tag)


class _Run:
    """One subscription of a :class:`WindowOperator`."""

    def __init__(self, operator: WindowOperator, core: WindowCore, scheduler: abc.SchedulerBase,
                 observer: abc.ObserverBase[Window], resume: Resume) -> None:
        self.operator, self.core, self.scheduler, self.observer = operator, core, scheduler, observer
        # Real-time schedulers read the wall clock; time.time() is that, without a datetime.
        self.clock: Callable[[], float] = (
            partial(scheduler_seconds, scheduler) if isinstance(scheduler, VirtualTimeScheduler)
            else time.time)
        self.lock = threading.RLock()
        self.timer = SerialDisposable()
        self.armed: float | None = None
        self.last_seen = resume.position
        self.complete = resume.position  # the last seq whose records have all arrived
        self.event = resume.next_event - 1
        self.included = resume.included  # the last clock decision applied to the core
        self.replay: deque[tuple[int, int, float, Any]] = deque(resume.clock)
        self.journal = operator.journal if core.clocked else None
        self.done = False
        self.guarded = operator.guarded
        self.active = operator.active if operator.guarded else None
        self.timeless = core.timeless
        self.hands_over = core.hands_over
        self.ticks = operator.ticks
        self.since = 0  # messages in a row that emitted nothing (with ticks)
        self.ticked_at = -math.inf
        # A core without late, rejected or side outputs has nothing to say after
        # a message that closed no window: the driver skips asking it.
        kind = type(core)
        self.quiet = (kind.late is WindowCore.late and kind.rejected is WindowCore.rejected
                      and kind.side_output is WindowCore.side_output)
        if operator.stream is not None:
            core.stream = operator.stream
        if resume.state is not None:
            core.restore(resume.state)

    def subscribe(self, source: Observable[Message], scheduler_: Any) -> abc.DisposableBase:
        with self.lock:
            self.step(self.core.start)
            self.apply_journaled(self.last_seen + 1)
        subscription = subscribe_to(source, self.on_next, self.on_error, self.on_completed, scheduler_)
        return CompositeDisposable(subscription, self.timer, reactivex.disposable.Disposable(self.stop))

    def stop(self) -> None:
        with self.lock:
            self.done = True

    def on_next(self, message: Message | MessageEnd) -> None:
        with self.lock:
            if self.done:
                return
            if type(message) is MessageEnd:
                self.complete = message.seq
                return
            assert isinstance(message, Message)
            active = self.active
            if active is not None and not active():
                return
            # Placing the message (this runs for every message): step(), inlined.
            core = self.core
            try:
                if self.replay:
                    self.apply_journaled(message.seq)
                now = self.clock()
                if not self.timeless and core.clock_due(now) and self.clock_may_decide():
                    self.clock_step(now)
                if message.seq > self.last_seen:
                    self.last_seen = message.seq
                try:
                    windows = core.on_message(message, now)
                except Exception as error:
                    self.on_error(error)
                    return
                if windows:
                    self.event += 1
                    self.since = 0
                    self.emit(windows)
                elif self.ticks and self.tick(now):
                    self.event += 1  # a step of its own: the journal keeps one checkpoint per event
                    core.before_tick()
                    self.emit([Window((), message.stream, tag="tick")])
                elif not self.quiet:
                    self.emit(windows)
                # emit()'s re-arming, for a step that emitted nothing and had nothing to say.
                elif not (self.timeless or self.done) and (self.armed is None or core.deadline_moved()):
                    self.arm()
            except Exception as error:
                if not self.guarded:
                    raise
                self.on_error(error)  # a guard's work: reported, not raised into the source

    def tick(self, now: float) -> bool:
        """With ticks: count a message that emitted nothing; True when a
        checkpoint-only window is due: after :attr:`WindowOperator.ticks` such
        messages, or once a :data:`TICK_EVERY` after the last while the reader
        has caught up (a quiet partition's lag then reads zero)."""
        self.since += 1
        if self.since < self.ticks and (now - self.ticked_at < TICK_EVERY or self.behind()):
            return False
        self.since = 0
        self.ticked_at = now
        return True

    def on_error(self, error: Exception) -> None:
        with self.lock:
            if not self.done:
                self.done = True
                self.timer.dispose()
                self.observer.on_error(error)

    def on_completed(self) -> None:
        with self.lock:
            if self.done or not self.step(self.core.on_complete):
                return
            self.done = True
            self.timer.dispose()
            self.observer.on_completed()

    def on_timer(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        with self.lock:
            self.armed = None
            if self.done:
                return
            if self.replay and not self.behind():
                # Caught up, yet journaled decisions remain: the messages they
                # followed are gone (trimmed); apply them now.
                self.apply_journaled(None)
            if self.clock_may_decide():
                self.clock_step(self.clock())
            else:
                self.arm(self.clock() + RECHECK)

    # -- the clock -------------------------------------------------------------
    def behind(self) -> bool:
        progress = self.operator.progress
        return progress is not None and progress.behind

    def clock_may_decide(self) -> bool:
        return not self.replay and not (self.core.waits_for_catch_up and self.behind())

    def clock_step(self, now: float) -> None:
        """Let the clock close windows, journaling the decision first if it changes anything."""
        if self.journal is None:
            self.step(self.core.on_timer, now)
            return
        before = self.core.snapshot()
        windows = self.call_core(self.core.on_timer, now)
        if windows is None:
            return
        if any(w.messages for w in windows) or self.core.snapshot() != before:
            self.event += 1
            try:
                self.journal.record_clock(self.event, self.last_seen, now, self.core.decision())
            except Exception as error:  # in a timer's thread: reported, not lost (its windows stay in)
                self.on_error(error)
                return
            self.included = self.event
        self.emit(windows)

    def apply_journaled(self, next_seq: int | None) -> None:
        """Replay the journaled clock decisions made before message ``next_seq``."""
        while self.replay and (next_seq is None or self.replay[0][1] < next_seq):
            event, _after, at, detail = self.replay.popleft()
            self.event = max(self.event, event)
            self.included = event
            windows = self.call_core(partial(self.core.replay_timer, detail=detail), at)
            if windows is None:
                return
            self.emit(windows)

    # -- emitting --------------------------------------------------------------
    def call_core(self, call: Callable[[float], list[Window]], now: float) -> list[Window] | None:
        """Run one core method at ``now``; ``None`` if it raised.

        A strategy may run user code (a ``WindowEmitter``); its exception ends
        the subscription with ``on_error`` instead of escaping into the
        producer, or into a timer thread where it would be lost.
        """
        try:
            return call(now)
        except Exception as error:
            self.on_error(error)
            return None

    def step(self, call: Callable[[float], list[Window]], now: float | None = None) -> bool:
        """Run one core method and emit its windows; False if it failed."""
        windows = self.call_core(call, self.clock() if now is None else now)
        if windows is None:
            return False
        if windows:
            self.event += 1
        self.emit(windows)
        return True

    def emit(self, windows: list[Window]) -> None:
        """Hand windows downstream (under the lock), then re-arm the timer.

        Windows closed in one step share one checkpoint, the core's state after
        the step, so only the last of them carries the step's ack: the earlier
        ones carry none. A crash in the middle of a step then
        replays the whole step, which emits the same windows again (same
        contents, same idempotency keys).
        """
        if not self.quiet:
            self.hand_aside()
        if windows:
            held = self.core.held_min_seq()
            # With records, a window may close before the rest of its message's
            # records arrived: that message is not acknowledged yet.
            top = self.complete if self.operator.records else self.last_seen
            ack = top if held is None else min(held - 1, top)
            checkpoint = None
            if self.journal is not None:
                checkpoint = {"event": self.event, "clock": self.included,
                              "state": self.core.snapshot()}
            last = windows[-1]
            if self.hands_over and type(last) is Window:
                stamp(last, ack, checkpoint)
            else:
                last = acked(last, ack, checkpoint)
            if self.guarded:
                self.hand_on_guarded(windows, last)
            else:
                for window in windows[:-1]:
                    self.observer.on_next(window)  # no ack: committed with the step's last window
                self.observer.on_next(last)
        if not (self.timeless or self.done) and (windows or self.armed is None or self.core.deadline_moved()):
            self.arm()

    def hand_aside(self) -> None:
        """Hand on the step's late, rejected and side outputs."""
        late = self.core.late()
        if late:
            for message in late:
                self.operator.late.on_next(message)
        rejected = self.core.rejected()
        if rejected:
            for bad in rejected:
                self.operator.rejected.on_next(bad)
        aside = self.core.side_output()
        if aside:
            for window in aside:
                self.operator.side.on_next(window)

    def hand_on_guarded(self, windows: list[Window], last: Window) -> None:
        """Hand windows on as a guard would: none once the pipeline is no longer
        active, and an exception raised downstream ends the subscription."""
        active, on_next = self.active, self.observer.on_next
        try:
            for window in windows[:-1]:
                if active is not None and not active():
                    return
                on_next(window)  # no ack: committed with the step's last window
            if active is None or active():
                on_next(last)
        except Exception as error:
            self.on_error(error)

    def arm(self, at: float | None = None) -> None:
        """Keep one timer at the core's next deadline. A deadline that moved
        later (say, a quiet period restarted by each message) keeps the
        earlier timer, which re-arms when it fires: replacing a timer per
        message would cost a scheduler call (or a thread) per message."""
        deadline = self.core.deadline() if at is None else at
        if deadline is None or (self.armed is not None and deadline >= self.armed - EPS):
            return
        self.armed = deadline
        self.timer.disposable = self.scheduler.schedule_absolute(to_datetime(deadline), self.on_timer)
