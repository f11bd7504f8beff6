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

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from minibatch_rx.errors import StoreBusyError, StoreUnavailableError
from minibatch_rx.store.base import Lease, Reader, Store, outage_backoff
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

    def observable(self) -> Observable[Window]:
        def subscribe(observer: abc.ObserverBase[Window],
                      scheduler: abc.SchedulerBase | None = None) -> abc.DisposableBase:
            stop = threading.Event()
            reader = self.store.reader(self.stream)
            thread = threading.Thread(target=self._run, args=(observer, stop, reader),
                                      name=f"minibatch-group-{self.group}", daemon=True)
            thread.start()

            def dispose() -> None:
                stop.set()
                reader.close()
                if threading.current_thread() is not thread:
                    thread.join(JOIN_TIMEOUT)

            return Disposable(dispose)

        return reactivex.create(subscribe)

    def _run(self, observer: abc.ObserverBase[Window], stop: threading.Event, reader: Reader) -> None:
        """Lease and emit windows until stopped; a store outage is waited out
        (logged, with back-off, a fresh reader each try), as single consumers do."""
        backoff = outage_backoff()
        try:
            while not stop.is_set():
                try:
                    self._serve(observer, stop, reader)
                    return
                except (StoreUnavailableError, StoreBusyError) as exc:
                    if stop.is_set():
                        return
                    log.warning("group %r reading %r: %s; retrying", self.group, self.stream, exc)
                    stop.wait(backoff.pause())
                    reader.close()
                    reader = self._reopen(stop)
        except Exception as exc:
            if not stop.is_set():
                observer.on_error(exc)
        finally:
            reader.close()

    def _reopen(self, stop: threading.Event) -> Reader:
        """A new reader, once the store answers again (or the feed is stopped)."""
        backoff = outage_backoff()
        while True:
            try:
                return self.store.reader(self.stream)
            except (StoreUnavailableError, StoreBusyError) as exc:
                if stop.is_set():
                    raise
                log.warning("group %r reopening %r: %s; retrying", self.group, self.stream, exc)
                stop.wait(backoff.pause())

    def _serve(self, observer: abc.ObserverBase[Window], stop: threading.Event, reader: Reader) -> None:
        waiting_since: float | None = None
        while not stop.is_set():
            partial = (self.timeout is not None and waiting_since is not None
                       and time.monotonic() - waiting_since >= self.timeout)
            lease = self.store.lease(self.stream, self.group, self.owner, self.size,
                                     self.lease_timeout, partial)
            if lease is not None:
                waiting_since = None
                self._emit(lease, reader, observer)
                continue
            if partial:
                waiting_since = None
            tail = self.store.last_seq(self.stream)
            if reader.read(tail, 1):
                continue
            if waiting_since is None:
                waiting_since = time.monotonic()
            slice_ = IDLE_WAIT if self.timeout is None else min(IDLE_WAIT, self.timeout)
            reader.wait(tail, slice_)

    def _emit(self, lease: Lease, reader: Reader, observer: abc.ObserverBase[Window]) -> None:
        if lease.taken_over:
            self.taken_over += 1
            log.warning("group %r: member %s took over expired lease %d..%d of %r",
                        self.group, self.owner, lease.start, lease.end, self.stream)
        messages = [m for m in reader.read(lease.start - 1, lease.end - lease.start + 1)
                    if m.seq <= lease.end]
        self.leases[lease.end] = lease
        observer.on_next(Window(tuple(messages), self.stream, ack=lease.end))
