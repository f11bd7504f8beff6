"""One reader per store per process: every subscription shares a watch and a few threads.

A process running many pipelines on one store used to give each its own
reader thread and connection, each polling the store; 100 pipelines meant
100 threads polling while idle. Here a :class:`ReadHub` per store object
serves every subscription (pipelines and ``observe()``):

* one :class:`~minibatch_rx.store.base.ChangeWatch` waits for appends to any
  watched stream (a doorbell and a change counter on SQLite, one change
  stream on MongoDB) and says which streams changed;
* only the subscriptions (*feeds*) of those streams, and only those behind
  the new head, are scheduled;
* a small pool of threads (``workers``, default :data:`WORKERS`) reads and
  hands messages on. The pool is leader/followers: an idle thread waits on
  the watch and, when it reports changes, runs the first ready feed itself
  while another idle thread takes over the watch, so a wake-up costs no
  hand-off between threads.

Threads are started as work needs them, up to ``workers``; one idle for
:data:`IDLE_EXIT` seconds ends, so an idle process keeps one reader thread per
store however many pipelines it runs, and none once the last subscription
is disposed. A feed is run by one thread at a time, reads
in batches and yields its thread after :data:`FAIR_BATCHES` batches, so a
large backlog on one stream does not starve the others. A pipeline whose
function blocks holds one pool thread meanwhile; if it is abandoned on
``stop`` (a stuck function), the pool may start one more thread in its place.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from reactivex import abc

from minibatch_rx.errors import StoreUnavailableError
from minibatch_rx.message import Message
from minibatch_rx.resilience import OUTAGES, outage_backoff
from minibatch_rx.store.base import ChangeWatch, Store, Watchable
from minibatch_rx.windows import ReadProgress

log = logging.getLogger(__name__)

WORKERS = 4
"""Threads a hub runs at most (pipelines' functions run in them)."""
FAIR_BATCHES = 8
"""Batches a feed reads before it lets other ready feeds have the thread."""
MAX_POLL = 1.0  # the longest single wait on the watch, seconds
IDLE_EXIT = 2.0
"""Seconds a pool thread waits for work before it ends (the watching thread stays)."""
JOIN_TIMEOUT = 5.0

_IDLE, _QUEUED, _RUNNING = 0, 1, 2

HandOn = Callable[[abc.ObserverBase[Message], ReadProgress, list[Message], bool, Callable[[], bool]],
                  "int | None"]


class _Feed:
    """One subscription: a stream, a position and an observer."""

    def __init__(self, stream: str, observer: abc.ObserverBase[Message],
                 first_position: Callable[[], int], batch_size: int, progress: ReadProgress) -> None:
        self.stream, self.observer, self.progress = stream, observer, progress
        self.first_position, self.batch_size = first_position, batch_size
        self.position: int | None = None  # None until the first position is known
        self.caught_up = False  # the first reads replay what is stored: a backlog
        self.state = _QUEUED
        self.again = False  # new data was reported while it ran
        self.stopped = False
        self.retry_at: float | None = None  # set while the store is unreachable
        self.backoff = outage_backoff()
        self.thread: int | None = None  # the pool thread running it
        self.idle = threading.Event()
        self.counted = False  # counted in the hub's busy feeds
        self.abandoned = False  # disposed while stuck in user code; its thread was replaced

    def is_stopped(self) -> bool:
        return self.stopped


class ReadHub:
    """Serves every subscription to one store's streams in this process."""

    def __init__(self, store: Store, hand_on: HandOn, workers: int | None = None) -> None:
        if not isinstance(store, Watchable):
            raise TypeError(f"{store!r} cannot watch its streams")
        self.store = store
        self.hand_on = hand_on
        self.workers = WORKERS if workers is None else workers
        self.lock = threading.Condition()
        self.feeds: dict[str, list[_Feed]] = {}
        self.ready: deque[_Feed] = deque()
        self.threads = 0  # running pool threads
        self.subscribed = 0  # feeds not disposed
        self.busy = 0  # feeds being run by a thread
        self.idle_threads = 0
        self.lost = 0  # threads abandoned by a stuck function
        self.leading = False
        self.leading_thread: int | None = None
        self.watch: ChangeWatch | None = None
        self.watch_backoff = outage_backoff()
        self.closed = False

    # -- subscriptions -----------------------------------------------------
    def subscribe(self, stream: str, observer: abc.ObserverBase[Message],
                  first_position: Callable[[], int], batch_size: int,
                  progress: ReadProgress) -> Callable[[], None]:
        """Start feeding ``observer``; returns the function that stops it."""
        feed = _Feed(stream, observer, first_position, batch_size, progress)
        with self.lock:
            if self.closed:
                raise StoreUnavailableError(f"{self.store!r} is closed")
            self.feeds.setdefault(stream, []).append(feed)
            self.subscribed += 1
            self.ready.append(feed)
            self._staff()
        self.poke()
        return lambda: self._dispose(feed)

    def _forget(self, feed: _Feed) -> None:
        """Under the lock: the feed is stopped and no longer scheduled."""
        feed.stopped = True
        feeds = self.feeds.get(feed.stream, [])
        if feed in feeds:
            feeds.remove(feed)
            self.subscribed -= 1
            if not feeds:
                del self.feeds[feed.stream]

    def _dispose(self, feed: _Feed) -> None:
        with self.lock:
            if feed.stopped:
                return
            self._forget(feed)
            running_elsewhere = feed.state == _RUNNING and feed.thread != threading.get_ident()
            if feed.counted:  # no longer one the pool serves, even while it runs
                feed.counted = False
                self.busy -= 1
            if feed.state != _RUNNING:
                feed.idle.set()
            self.lock.notify_all()
        self.poke()
        if running_elsewhere and not feed.idle.wait(JOIN_TIMEOUT):
            # Its thread is stuck in user code: let the pool start another.
            with self.lock:
                if feed.state == _RUNNING:
                    feed.abandoned = True
                    self.lost += 1
                    self._staff()

    def poke(self) -> None:
        """Wake the thread waiting on the watch (an append in this process, a change of feeds)."""
        watch = self.watch
        if watch is not None:
            watch.wake()

    def close(self) -> None:
        """The store is closing: end the hub's threads and tell every subscriber
        (``on_error`` with :class:`~minibatch_rx.errors.StoreUnavailableError`)."""
        with self.lock:
            self.closed = True
            feeds = [feed for fs in self.feeds.values() for feed in fs]
            for feed in feeds:
                self._forget(feed)
            self.ready.clear()
            self.lock.notify_all()
        self.poke()
        error = StoreUnavailableError(f"{self.store!r} was closed while being read")
        for feed in feeds:
            feed.observer.on_error(error)

    # -- the pool ----------------------------------------------------------
    def _staff(self, free: int = 0) -> None:
        """Under the lock: start threads while work waits and none is free
        (``free``: the calling thread is about to take a ready feed itself)."""
        waiting = len(self.ready) - self.idle_threads - free
        wanted = min(self.workers + self.lost, self.threads + max(0, waiting))
        # (A leader ending its turn with nothing ready leads again: no one else is needed.)
        unwatched = not self.leading and self.idle_threads == 0 and (free == 0 or bool(self.ready))
        if unwatched and self.subscribed - self.busy - free > 0:
            # Every thread is busy (a long function, a stuck one): without one
            # more, appends to the other streams would wait for them.
            wanted = min(self.workers + self.lost, max(wanted, self.threads + 1))
        if self.threads == 0 and self.feeds:
            wanted = max(wanted, 1)
        while self.threads < wanted:
            self.threads += 1
            threading.Thread(target=self._work, name="minibatch-reader", daemon=True).start()
        if self.ready and self.idle_threads:
            self.lock.notify(len(self.ready))

    def _work(self) -> None:
        me = threading.get_ident()
        try:
            while True:
                feed = self._next(me)
                if feed is None:
                    return
                if feed is _LEAD:
                    self._lead()
                    continue
                self._run(feed)
        finally:
            with self.lock:
                self.threads -= 1
                if self.leading_thread == me:
                    self.leading = False
                    self.leading_thread = None
                if self.feeds and not self.closed:
                    self._staff()  # a subscription may have come as this thread ended
                self.lock.notify_all()
                if self.threads == 0 and self.watch is not None and (self.closed or not self.feeds):
                    watch, self.watch = self.watch, None
                    watch.close()

    def _next(self, me: int) -> Any:
        """The next ready feed, ``_LEAD`` to wait on the watch, or ``None``
        when the thread should end (no subscriptions left, or too many threads)."""
        with self.lock:
            while True:
                if self.closed:
                    return None
                if self.ready:
                    feed = self.ready.popleft()
                    if feed.stopped:
                        feed.idle.set()
                        continue
                    feed.state = _RUNNING
                    feed.counted = True
                    self.busy += 1
                    feed.thread = me
                    feed.idle.clear()
                    return feed
                if not self.feeds or self.threads > self.workers + self.lost:
                    return None
                if not self.leading:
                    self.leading = True
                    self.leading_thread = me
                    return _LEAD
                self.idle_threads += 1
                try:
                    woken = self.lock.wait(IDLE_EXIT)
                finally:
                    self.idle_threads -= 1
                if not woken and not self.ready and self.threads > 1:
                    return None  # idle for a while: the pool shrinks back to its watcher

    def _lead(self) -> None:
        """Wait on the watch once and schedule the feeds it reports."""
        try:
            with self.lock:
                streams = list(self.feeds)
                timeout = self._timeout()
            changes = self._poll(streams, timeout)
            now = time.monotonic()
            with self.lock:
                # Streams first subscribed while the watch waited: the wait may have
                # used up the change that concerns them, so they are read once anyway.
                for stream in self.feeds.keys() - set(streams):
                    changes.setdefault(stream, None)
                for stream, head in changes.items():
                    for feed in self.feeds.get(stream, ()):
                        if head is None or feed.position is None or head > feed.position:
                            self._schedule(feed)
                for feeds in self.feeds.values():
                    for feed in feeds:
                        if feed.retry_at is not None and feed.retry_at <= now:
                            feed.retry_at = None
                            self._schedule(feed)
        finally:
            with self.lock:
                self.leading = False
                self.leading_thread = None
                self._staff(free=1)
                if self.ready:  # this thread runs a feed: another idle one takes the watch over
                    self.lock.notify()

    def _timeout(self) -> float:
        """Under the lock: how long the watch may wait (until a feed's retry)."""
        retries = [f.retry_at for fs in self.feeds.values() for f in fs if f.retry_at is not None]
        if not retries:
            return MAX_POLL
        return max(0.0, min(MAX_POLL, min(retries) - time.monotonic()))

    def _poll(self, streams: list[str], timeout: float) -> dict[str, int | None]:
        """One wait on the watch, opening it (again) as needed; a failure
        reports every stream as changed once the watch is back."""
        try:
            if self.watch is None:
                self.watch = self.store.watch()
                return {s: None for s in streams}  # a new watch: check everything once
            changes = dict(self.watch.poll(streams, timeout))
            self.watch_backoff.reset()
            return changes
        except Exception as exc:
            # An outage is waited out; any other failure is logged, and the
            # reads that follow the new watch meet it and report it to their
            # subscribers.
            if isinstance(exc, OUTAGES):
                log.warning("watching %r: %s; retrying", self.store, exc)
            else:
                log.error("watching %r failed: %r; reopening the watch", self.store, exc)
            watch, self.watch = self.watch, None
            if watch is not None:
                try:
                    watch.close()
                except Exception as closing:  # the watch is dropped either way
                    log.debug("closing a failed watch: %r", closing)
            pause = threading.Event()
            pause.wait(self.watch_backoff.pause())
            return {}

    def _schedule(self, feed: _Feed) -> None:
        """Under the lock: make ``feed`` run (again)."""
        if feed.stopped:
            return
        if feed.state == _RUNNING:
            feed.again = True
        elif feed.state == _IDLE and feed.retry_at is None:
            feed.state = _QUEUED
            self.ready.append(feed)

    # -- running one feed --------------------------------------------------
    def _run(self, feed: _Feed) -> None:
        more = False
        try:
            more = self._drain(feed)
        except OUTAGES as exc:
            if not feed.stopped:
                log.warning("reading %r: %s; retrying", feed.stream, exc)
                feed.retry_at = time.monotonic() + feed.backoff.pause()
        except Exception as exc:
            stopped = feed.stopped
            self._dispose_quietly(feed)
            if not stopped:
                feed.observer.on_error(exc)
        finally:
            with self.lock:
                feed.thread = None
                if feed.counted:
                    feed.counted = False
                    self.busy -= 1
                if feed.abandoned:
                    feed.abandoned = False
                    self.lost -= 1
                if feed.stopped:
                    feed.state = _IDLE
                    feed.idle.set()
                elif (more or feed.again) and feed.retry_at is None:
                    feed.state = _QUEUED
                    self.ready.append(feed)
                else:
                    feed.state = _IDLE
                    feed.idle.set()
                feed.again = False
                if feed.retry_at is not None:
                    self.poke()  # the watch's wait must end by the retry time

    def _dispose_quietly(self, feed: _Feed) -> None:
        with self.lock:
            self._forget(feed)

    def _drain(self, feed: _Feed) -> bool:
        """Read and hand on up to :data:`FAIR_BATCHES` batches; True if more
        may be stored (the feed stopped on its budget, not at the end)."""
        if feed.position is None:
            feed.position = feed.first_position()
        store, progress = self.store, feed.progress
        for _ in range(FAIR_BATCHES):
            if feed.stopped:
                return False
            with self.lock:
                feed.again = False
            batch = store.read(feed.stream, feed.position, feed.batch_size)
            feed.backoff.reset()  # the store answered (the back-off grows only while it does not)
            if not batch:
                progress.behind = False
                feed.caught_up = True
                return False
            fresh, feed.caught_up = feed.caught_up, False
            last = self.hand_on(feed.observer, progress, batch, fresh, feed.is_stopped)
            if last is not None:
                feed.position = last
            if len(batch) < feed.batch_size:
                # A short batch reached the end of the stream as it was then.
                progress.behind = False
                feed.caught_up = True
                return False
            progress.behind = True
        return True


_LEAD = object()
