"""Turning a store into a ReactiveX source: catch-up from a position, then live."""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from minibatch_rx.message import Message
from minibatch_rx.readhub import ReadHub
from minibatch_rx.resilience import ResilientReader
from minibatch_rx.store.base import Notifier, Reader, Store, Watchable, notifier
from minibatch_rx.windows import ReadProgress

WAIT_SLICE = 0.5  # seconds a reader blocks before re-checking for disposal
JOIN_TIMEOUT = 5.0
T = TypeVar("T")
log = logging.getLogger(__name__)


_hubs: weakref.WeakKeyDictionary[Store, ReadHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def _forget_hubs() -> None:
    """In a child made by ``fork``: the parent's hubs have no threads here; start afresh."""
    global _hubs_lock
    _hubs_lock = threading.Lock()
    _hubs.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hubs)


def hub_for(store: Store) -> ReadHub:
    """The process's one :class:`~minibatch_rx.readhub.ReadHub` for ``store``."""
    with _hubs_lock:
        hub = _hubs.get(store)
        if hub is None:
            hub = _hubs[store] = ReadHub(store, hand_on)
        return hub


def close_hub(store: Store) -> None:
    """End ``store``'s hub, if it has one (the store is being closed)."""
    with _hubs_lock:
        hub = _hubs.pop(store, None)
    if hub is not None:
        hub.close()


def store_source(
    store: Store,
    stream: str,
    start: int | None,
    consumer: str | None,
    scheduler: abc.SchedulerBase | None,
    batch_size: int,
    progress: ReadProgress | None = None,
) -> Observable[Message]:
    """An observable of ``stream``'s messages after ``start`` (or after the
    consumer's committed position), in seq order, never completing.
    ``progress.behind`` says, while messages are handed on, whether more were
    already stored behind them (a backlog is being replayed)."""
    progress = progress or ReadProgress()
    progress.behind = True  # until the first read has reached the end of the stream

    def subscribe(
        observer: abc.ObserverBase[Message], default: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        def first_position() -> int:
            if start is not None:
                return start
            return store.get_position(stream, consumer) if consumer else 0

        pushing = notifier(store)
        if pushing is not None:
            return _PushFeed(store, pushing, stream, observer, first_position, scheduler, batch_size,
                             progress).start()
        if isinstance(store, Watchable):
            stop = hub_for(store).subscribe(stream, observer, first_position, batch_size, progress)
            return Disposable(stop)
        return _PullFeed(store, stream, observer, first_position, batch_size, progress).start()

    return reactivex.create(subscribe)


def _read(reader: Reader, after: int, limit: int) -> list[Message]:
    return reader.read(after, limit)


def _wait(reader: Reader, after: int) -> bool:
    return reader.wait(after, WAIT_SLICE)


class _PushFeed:
    """For stores that call listeners inside ``append``: emission happens in
    the appender's thread, at the appender's (possibly virtual) time."""

    def __init__(self, store: Store, notifier: Notifier, stream: str, observer: abc.ObserverBase[Message],
                 first_position: Any, scheduler: abc.SchedulerBase | None, batch_size: int,
                 progress: ReadProgress) -> None:
        self.store, self.stream, self.observer, self.progress = store, stream, observer, progress
        self.notifier = notifier  # the store itself, as the notifier it also is
        self.first_position, self.scheduler, self.batch_size = first_position, scheduler, batch_size
        self.position = 0
        self.lock = threading.RLock()
        self.draining = False
        self.disposed = False
        self.caught_up = False  # the first reads replay what is stored: a backlog
        self.remove_listener: Any = None

    def start(self) -> abc.DisposableBase:
        def begin(*_: Any) -> None:
            try:
                self.position = self.first_position()
            except Exception as exc:  # store failure: report it to the subscriber
                self.observer.on_error(exc)
                return
            self.remove_listener = self.notifier.listen(self.stream, self.drain)
            self.drain()

        if self.scheduler is None:
            begin()
        else:
            self.scheduler.schedule(begin)
        return Disposable(self.dispose)

    def drain(self) -> None:
        with self.lock:
            if self.draining or self.disposed:
                return  # the running drain loop will pick the new messages up
            self.draining = True
            try:
                while not self.disposed:
                    batch = self.store.read(self.stream, self.position, self.batch_size)
                    if not batch:
                        self.progress.behind = False
                        self.caught_up = True
                        break
                    fresh, self.caught_up = self.caught_up, False
                    last = hand_on(self.observer, self.progress, batch, fresh, lambda: self.disposed)
                    if last is not None:
                        self.position = last
                    self.progress.behind = len(batch) == self.batch_size
            except Exception as exc:
                self.disposed = True
                self.observer.on_error(exc)
            finally:
                self.draining = False

    def dispose(self) -> None:
        self.disposed = True
        if self.remove_listener is not None:
            self.remove_listener()


def hand_on(observer: abc.ObserverBase[Message], progress: ReadProgress, batch: list[Message],
            fresh: bool, stopped: Callable[[], bool]) -> int | None:
    """Hand a batch on, saying whether a backlog is being read; returns the
    seq of the last message handed on (``None``: none, stopped first).

    The first message read after the reader had reached the end of the stream
    (``fresh``) is new: the clock may decide before it (say, that the stream's
    time moved on while it was quiet, making it late). Every other message of
    a batch, and everything read before the reader first reached the end (the
    replay after a restart), is read as a backlog: the clock waits."""
    last = None
    on_next = observer.on_next
    progress.messages += len(batch)
    if fresh and batch and not stopped():
        progress.behind = False
        on_next(batch[0])
        last = batch[0].seq
        batch = batch[1:]
    progress.behind = True
    for message in batch:  # the hot loop of every pipeline
        if stopped():
            break
        on_next(message)
        last = message.seq
    return last


class _PullFeed:
    """For stores without in-process push or a watch: a dedicated reader thread
    that blocks on the store's change signal between reads, riding out outages
    through a :class:`~minibatch_rx.resilience.ResilientReader`."""

    def __init__(self, store: Store, stream: str, observer: abc.ObserverBase[Message],
                 first_position: Any, batch_size: int, progress: ReadProgress) -> None:
        self.store, self.stream, self.observer, self.progress = store, stream, observer, progress
        self.first_position, self.batch_size = first_position, batch_size
        self.stop = threading.Event()
        self.reading: ResilientReader | None = None
        self.thread = threading.Thread(
            target=self.run, name=f"minibatch-reader-{stream}", daemon=True
        )

    def start(self) -> abc.DisposableBase:
        self.thread.start()
        return Disposable(self.dispose)

    def run(self) -> None:
        try:
            reading = self.reading = ResilientReader(self.store, self.stream, self.stop)
            position: int = reading.call(lambda _reader: self.first_position())
            caught_up = False  # the first reads replay what is stored: a backlog
            while not self.stop.is_set():
                batch = reading.call(partial(_read, after=position, limit=self.batch_size))
                if not batch:
                    self.progress.behind = False
                    caught_up = True
                    reading.call(partial(_wait, after=position))
                    continue
                last = hand_on(self.observer, self.progress, batch, caught_up, self.stop.is_set)
                caught_up = False
                if self.stop.is_set():
                    return
                if last is not None:
                    position = last
                # A short batch reached the end of the stream as it was then.
                self.progress.behind = len(batch) == self.batch_size
        except Exception as exc:
            if not self.stop.is_set():
                self.observer.on_error(exc)
        finally:
            if self.reading is not None:
                self.reading.close()

    def dispose(self) -> None:
        self.stop.set()
        if self.reading is not None:
            self.reading.close()
        if threading.current_thread() is not self.thread:
            self.thread.join(JOIN_TIMEOUT)
