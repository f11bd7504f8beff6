"""Consumer groups: members in any process share a stream's windows through leases.

Each member loops: lease the next ``size`` unclaimed seqs from the store (or
take over a lease whose holder stopped renewing it), read those messages,
emit them as one window, and mark the lease complete once the pipeline has
processed the window. The group's position then moves over every completed
lease without a gap, so a message is acknowledged only when it, and every
message before it, has been handled by some member.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable, SerialDisposable
from reactivex.scheduler import VirtualTimeScheduler

from minibatch_rx.message import Message
from minibatch_rx.resilience import OUTAGES, ResilientReader, outage_backoff, retry_later
from minibatch_rx.store.base import Reader, Store, notifier
from minibatch_rx.store.leases import Lease
from minibatch_rx.window import Window

log = logging.getLogger(__name__)

IDLE_WAIT = 0.25  # seconds an idle member blocks before looking for expired leases
JOIN_TIMEOUT = 5.0


def member_id() -> str:
    """A name for this group member, unique across hosts and processes."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class GroupFeed:
    """The windows one group member leases, as an observable.

    ``size`` messages per window; with ``timeout``, a partial window is
    leased once unclaimed messages have waited that long. A lease not
    completed within ``lease_timeout`` seconds is taken over by another member.
    """

    def __init__(self, store: Store, stream: str, group: str, size: int, timeout: float | None,
                 lease_timeout: float, owner: str | None = None) -> None:
        self.store, self.stream, self.group = store, stream, group
        self.size, self.timeout, self.lease_timeout = size, timeout, lease_timeout
        self.owner = owner or member_id()
        self.leases: dict[int, Lease] = {}  # by end seq (the window's ack)
        self.taken_over = 0
        self.lost = 0

    def complete(self, ack: int) -> None:
        """Mark the lease behind the window acknowledged as ``ack`` complete."""
        lease = self.leases.pop(ack, None)
        if lease is None:
            return
        if not self.store.complete(self.stream, self.group, lease.start, self.owner):
            self.lost += 1
            log.warning("group %r: lease %d..%d of %r expired before it was completed; "
                        "another member processed it too (raise lease_timeout)",
                        self.group, lease.start, lease.end, self.stream)

    def observable(self, scheduler: abc.SchedulerBase | None = None) -> Observable[Window]:
        """The member's windows. On a virtual-time ``scheduler`` (a ``TestScheduler``)
        the member leases, waits for work and for a partial window's timeout, and
        backs off from a store outage, all on the scheduler's clock (see
        :class:`_VirtualMember`); otherwise in a thread of its own, which rides out
        outages as single consumers do (:class:`~minibatch_rx.resilience.ResilientReader`)."""
        def subscribe(observer: abc.ObserverBase[Window],
                      scheduler_: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            if isinstance(scheduler, VirtualTimeScheduler):
                return _VirtualMember(self, scheduler, observer).start()
            stop = threading.Event()
            readers: list[ResilientReader] = []
            thread = threading.Thread(target=self._run, args=(observer, stop, readers),
                                      name=f"minibatch-group-{self.group}", daemon=True)
            thread.start()

            def dispose() -> None:
                stop.set()
                for reading in readers:
                    reading.close()
                if threading.current_thread() is not thread:
                    thread.join(JOIN_TIMEOUT)

            return Disposable(dispose)

        return reactivex.create(subscribe)

    def _run(self, observer: abc.ObserverBase[Window], stop: threading.Event,
             readers: list[ResilientReader]) -> None:
        """Lease and emit windows until stopped; every store call rides out an outage."""
        reading: ResilientReader | None = None
        try:
            reading = ResilientReader(self.store, self.stream, stop, f"group {self.group!r} reading")
            readers.append(reading)
            self._serve(observer, stop, reading)
        except Exception as exc:
            if not stop.is_set():
                observer.on_error(exc)
        finally:
            if reading is not None:
                reading.close()

    def _serve(self, observer: abc.ObserverBase[Window], stop: threading.Event,
               reading: ResilientReader) -> None:
        waiting = _Waiting(self.timeout)
        while not stop.is_set():
            cut = waiting.due(time.monotonic())
            lease = reading.call(partial(self._lease, cut=cut))
            if lease is not None:
                waiting.leased(lease)
                messages = reading.call(partial(self._messages, lease))
                self._emit(lease, messages, observer)
                continue
            tail = reading.call(self._head)
            waiting.nothing(cut, tail, time.monotonic())
            if reading.call(partial(_read_one, after=tail)):
                continue
            reading.call(partial(_wait, after=tail, timeout=waiting.pause(time.monotonic())))

    def _lease(self, _reader: Reader, cut: bool) -> Lease | None:
        return self.store.lease(self.stream, self.group, self.owner, self.size, self.lease_timeout, cut)

    def _head(self, _reader: Reader) -> int:
        return self.store.last_seq(self.stream)

    def _messages(self, lease: Lease, source: Reader | Store) -> list[Message]:
        """The leased messages, read with a reader or from the store."""
        count = lease.end - lease.start + 1
        found = source.read(lease.start - 1, count) if isinstance(source, Reader) \
            else source.read(self.stream, lease.start - 1, count)
        return [m for m in found if m.seq <= lease.end]

    def _emit(self, lease: Lease, messages: list[Message], observer: abc.ObserverBase[Window]) -> None:
        if lease.taken_over:
            self.taken_over += 1
            log.warning("group %r: member %s took over expired lease %d..%d of %r",
                        self.group, self.owner, lease.start, lease.end, self.stream)
        self.leases[lease.end] = lease
        observer.on_next(Window(tuple(messages), self.stream, ack=lease.end))


def _read_one(reader: Reader, after: int) -> list[Message]:
    return reader.read(after, 1)


def _wait(reader: Reader, after: int, timeout: float) -> bool:
    return reader.wait(after, timeout)


class _Waiting:
    """When a member's partial window is due: ``timeout`` seconds after it first
    found unclaimed messages it could not lease as a full window.

    A member cannot see which seqs the group claimed; it takes a stream head
    above everything it saw (or leased) as messages beginning to wait, and a
    partial lease that finds nothing as nothing waiting.
    """

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.since: float | None = None
        self.seen = 0  # the highest seq seen at the head, or leased

    def due(self, now: float) -> bool:
        """Whether the next lease may be partial."""
        return self.timeout is not None and self.since is not None and now - self.since >= self.timeout - 1e-9

    def leased(self, lease: Lease) -> None:
        """A window was leased: what waited is taken."""
        self.since = None
        self.seen = max(self.seen, lease.end)

    def nothing(self, partial: bool, head: int, now: float) -> None:
        """No lease was granted; ``head`` is the stream's last seq."""
        if partial:
            self.since = None  # even a partial lease found nothing: nothing waits
        if head > self.seen:
            self.seen = head
            if self.since is None:
                self.since = now

    def pause(self, now: float) -> float:
        """How long to wait for an append before looking again."""
        if self.timeout is None or self.since is None:
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, self.since + self.timeout - now))


class _VirtualMember:
    """A group member driven by a virtual-time scheduler: each turn is a scheduled
    action, so a ``TestScheduler`` decides when leases expire, when a partial
    window's ``timeout`` is up and when an outage is tried again.

    A turn leases and emits windows while there is work; then it waits for an
    append (through the store's synchronous notifier, which virtual-time stores
    have) or for the partial window's timeout, whichever comes first. An expired
    lease of another member is found at the latest :data:`IDLE_WAIT` virtual
    seconds after it expired.
    """

    def __init__(self, feed: GroupFeed, scheduler: VirtualTimeScheduler,
                 observer: abc.ObserverBase[Window]) -> None:
        self.feed, self.scheduler, self.observer = feed, scheduler, observer
        self.stopped = False
        self.waiting = _Waiting(feed.timeout)
        self.backoff = outage_backoff()
        self.timer = SerialDisposable()
        self.remove_listener: Callable[[], None] | None = None

    def start(self) -> abc.DisposableBase:
        pushing = notifier(self.feed.store)
        if pushing is not None:
            self.remove_listener = pushing.listen(self.feed.stream, self.wake)
        self.timer.disposable = self.scheduler.schedule(self.turn)
        return Disposable(self.stop)

    def stop(self) -> None:
        self.stopped = True
        self.timer.dispose()
        if self.remove_listener is not None:
            self.remove_listener()

    def wake(self) -> None:
        if not self.stopped:
            self.timer.disposable = self.scheduler.schedule(self.turn)

    def now(self) -> float:
        return float(self.scheduler.clock)

    def turn(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        """Lease one window (then let the other members have a turn), or wait."""
        feed, waiting = self.feed, self.waiting
        if self.stopped:
            return
        try:
            partial = waiting.due(self.now())
            lease = feed.store.lease(feed.stream, feed.group, feed.owner, feed.size, feed.lease_timeout,
                                     partial)
            if lease is not None:
                waiting.leased(lease)
                feed._emit(lease, feed._messages(lease, feed.store), self.observer)
                if not self.stopped:  # queued behind the turns due now: members take turns
                    self.timer.disposable = self.scheduler.schedule(self.turn)
                return
            waiting.nothing(partial, feed.store.last_seq(feed.stream), self.now())
            self.backoff.reset()
        except OUTAGES as exc:  # waited out on the scheduler's clock
            log.warning("group %r reading %r: %s; retrying", feed.group, feed.stream, exc)
            self.timer.disposable = retry_later(self.scheduler, self.turn, self.backoff)
            return
        except Exception as exc:
            self.stopped = True
            self.observer.on_error(exc)
            return
        if not self.stopped:
            self.timer.disposable = self.scheduler.schedule_relative(waiting.pause(self.now()), self.turn)
