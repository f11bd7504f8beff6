"""A member of a consumer group run by key partition (see :mod:`minibatch_rx.partitions`).

The member keeps its partition leases (a :func:`~minibatch_rx.partitions.sync`
every third of the lease timeout) and runs the group's pipeline once per
partition it holds: a normal single-consumer run under the partition's own
consumer name, whose window or pattern stage takes only that partition's
keys (the others still move its clock). Taking a partition starts its run,
which resumes from the partition's position and checkpoint, rebuilding the
open windows and partial matches of its keys; giving one up stops its run
first (committing position and checkpoint), then releases the lease.

Each partition's run ends up on one member at a time: a member starts a
run only for a partition it has just been granted, and a partition is
granted only once its previous holder released it or stopped renewing its
lease. A member paused past its lease (a long GC pause, a frozen VM) may
still finish the window in flight after another member took over: its
sink writes carry the same idempotency keys as the new holder's (the
partition's consumer name, the seq range and the rank), so the stream sink
stores them once.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from reactivex import abc
from reactivex.scheduler import EventLoopScheduler, VirtualTimeScheduler

from minibatch_rx.errors import LeaseExpiredError
from minibatch_rx.metrics import Metrics, StageTime
from minibatch_rx.partitions import Assignment, partition_name, partition_of, state_name, sync
from minibatch_rx.resilience import OUTAGES
from minibatch_rx.running import PipelineHandle
from minibatch_rx.windows._engine import scheduler_seconds
from minibatch_rx.windows.keys import NO_KEY, Key

if TYPE_CHECKING:
    from minibatch_rx.pipeline import Pipeline

log = logging.getLogger(__name__)

def owner_of(partition: int, partitions: int) -> Callable[[Key], bool]:
    """The key filter of a run holding ``partition`` (keys are few and repeat: cached)."""

    @functools.lru_cache(maxsize=1 << 16)
    def owns(key: Key) -> bool:
        if key is NO_KEY:
            return partition == 0  # records without a readable key: dead-lettered by partition 0's run
        return partition_of(key, partitions) == partition

    return owns


class _PartitionRun(PipelineHandle):
    """The handle of one partition's run: its acks count in the member's handle too."""

    def __init__(self, member: GroupMemberHandle, consumer: str, dead: str) -> None:
        super().__init__(None, consumer, dead)
        self.member = member
        self.fence = member.lease_held

    def _on_ack(self, seq: int | None) -> None:
        super()._on_ack(seq)
        self.member._on_partition_ack(seq)


class GroupMemberHandle(PipelineHandle):
    """What ``pipeline.start(group=...)`` returns for a group run by key partition.

    Besides :class:`~minibatch_rx.running.PipelineHandle`'s ``stop``, ``join``,
    ``windows`` (over all partitions) and ``metrics()``: :attr:`partitions`,
    the partitions this member holds now; :attr:`rebalances`, how often its
    holding changed; :attr:`member`, its name in the group.
    """

    def __init__(self, pipeline: Pipeline[Any, Any], group: str, member: str, partitions: int | None,
                 lease_timeout: float, scheduler: abc.SchedulerBase | None,
                 max_windows: int | None) -> None:
        super().__init__(max_windows, group, f"{pipeline.source.name}.dead")
        self.pipeline, self.group, self.member = pipeline, group, member
        self.configured = partitions
        self.count: int | None = partitions
        self.ttl = lease_timeout
        self.period = lease_timeout / 3
        self.scheduler = scheduler
        self.own: EventLoopScheduler | None = None
        self.runs: dict[int, _PartitionRun] = {}
        self.finished_runs: list[Metrics] = []
        self.releasing: set[int] = set()  # to release at the next renewal
        self.draining: dict[int, _PartitionRun] = {}  # stopped, not yet quiet
        self.handing_over: set[int] = set()  # to release once their runs are quiet
        self.registered = False  # every partition's position registered (see _register)
        self.rebalances = 0
        self.windows_lock = threading.Lock()
        self.step_lock = threading.Lock()
        self.timer: abc.DisposableBase | None = None
        self.stopper: threading.Thread | None = None
        self.valid_until = -math.inf  # by clock(): the member's leases last at least until then

    # -- the public view -----------------------------------------------------
    @property
    def partitions(self) -> list[int]:
        """The partitions this member runs now, sorted."""
        return sorted(self.runs)

    def metrics(self) -> Metrics:
        """The member's figures, summed over its partitions' runs (past and present);
        ``position`` is the lowest position among the partitions it holds."""
        parts = [run.metrics() for run in list(self.runs.values())] + list(self.finished_runs)
        current = parts[:len(self.runs)]
        stages: dict[str, StageTime] = {}
        for m in parts:
            for name, summary in m.stages.items():
                stages[name] = summary if name not in stages else stages[name].merged(summary)
        head = max((m.head for m in current if m.head is not None), default=None)
        position = min((m.position for m in current), default=self.position)
        marks = [m.watermark for m in current if m.watermark is not None]
        return Metrics(
            stream=self.pipeline.source.name, consumer=self.group,
            messages_in=sum(m.messages_in for m in parts), windows_out=self.windows,
            late=sum(m.late for m in parts), dead_lettered=sum(m.dead_lettered for m in parts),
            retries=sum(m.retries for m in parts), position=position, head=head,
            lag=None if head is None else max(0, head - position),
            watermark=min(marks) if marks else None, stages=stages)

    @property
    def dead_letters(self) -> int:
        """Windows sent to the dead-letter stream by this member's runs."""
        return sum(run.dead_letters for run in list(self.runs.values())) + \
            sum(m.dead_lettered for m in self.finished_runs)

    # -- running -------------------------------------------------------------
    def clock(self) -> float:
        """Seconds on the member's clock: the scheduler's in virtual time, else monotonic
        (which a paused process does not stop)."""
        if isinstance(self.scheduler, VirtualTimeScheduler):
            return scheduler_seconds(self.scheduler)
        return time.monotonic()

    def lease_held(self) -> bool:
        """Whether the member's partition leases are surely still its own: less than
        ``lease_timeout`` has passed since the renewal that last granted them began
        (the store counts its expiry from a later instant). A run commits only then."""
        return self.clock() < self.valid_until

    def begin(self) -> None:
        """Take a first share (in the caller's thread: a misconfiguration raises
        here) and keep the leases from then on."""
        self.step()
        if self.scheduler is None:
            self.scheduler = self.own = EventLoopScheduler()
        self.timer = self.scheduler.schedule_relative(self.period, self._tick)

    def _tick(self, scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        if not self._live:
            return
        try:
            self.step()
        except Exception as exc:  # not a store outage (those are waited out in step)
            log.exception("group %r member %s: partition leases failed", self.group, self.member)
            self._fail(exc)
            return
        if self._live:
            self.timer = scheduler.schedule_relative(self.period, self._tick)

    def _update(self, releasing: tuple[int, ...] = (), leaving: bool = False) -> Assignment:
        store, stream = self.pipeline.source.store, self.pipeline.source.name
        return store.update_state(
            stream, state_name(self.group),
            lambda doc, now: sync(doc, now, self.member, self.configured, self.ttl, releasing, leaving))

    def step(self) -> None:
        """One turn: renew, stop what was lost or is to be given up, start what was granted.

        A run being stopped is *draining* until it is quiet (disposed, its last
        position written): only then is its partition released or started again, so
        two runs of one partition never overlap (their journal writes would mix). A
        run stuck in user code keeps its partition, renewed, until it returns.
        """
        with self.step_lock:
            changed = False
            while self._live:
                self._collect_drained()
                releasing = tuple(sorted(self.releasing))
                began = self.clock()
                try:
                    granted = self._update(releasing)
                except OUTAGES as exc:
                    # The runs wait out the outage themselves; if it outlasts the lease,
                    # the next turn finds which partitions went to other members.
                    log.warning("group %r member %s: cannot renew partition leases (%s); retrying",
                                self.group, self.member, exc)
                    return
                self.releasing -= set(releasing)
                self.valid_until = began + self.ttl
                self.count = granted.partitions
                # Stopped by their fence (or failed): drain, then start afresh if still held.
                self._drain([p for p, run in self.runs.items() if not run.running])
                lost = [p for p in self.runs if p not in granted.held]
                for p in lost:
                    log.warning("group %r member %s: partition %d went to another member "
                                "(its lease expired)", self.group, self.member, p)
                self._drain(lost)
                self.handing_over &= set(granted.held)
                give_up = [p for p in granted.release if p not in self.handing_over]
                if give_up:  # over its share: stop those runs, hand them over once quiet
                    self._drain(give_up)
                    self.handing_over |= set(give_up)
                    changed = True
                    if self._collect_drained():
                        continue  # release them now, not a period later
                busy = set(self.runs) | set(self.draining) | self.handing_over
                new = sorted(set(granted.held) - busy)
                if new and not self.registered:
                    self._register(granted.partitions)
                for p in new:
                    self._start_run(p, granted.partitions)
                if changed or lost or new:
                    self.rebalances += 1
                    log.info("group %r member %s holds partitions %s of %d (members: %s)", self.group,
                             self.member, sorted(self.runs), granted.partitions, ", ".join(granted.members))
                return

    def _register(self, partitions: int) -> None:
        """Register every partition's position before any run starts: a run trimming
        acknowledged messages (``trim_processed``) takes the lowest position over the
        registered consumers, and a partition not yet started must count (at 0, or where
        it is: a position never moves back)."""
        source = self.pipeline.source
        for p in range(partitions):
            source.commit(partition_name(self.group, p), 0)
        self.registered = True

    def _drain(self, partitions: list[int]) -> None:
        """Stop these partitions' runs; they drain until quiet (see :meth:`step`). All
        begin stopping at once and share one wait of a third of the lease, so the
        member's renewals keep their pace however many runs it stops."""
        runs = {p: run for p in partitions if (run := self.runs.pop(p, None)) is not None}
        _stop_together(list(runs.values()), time.monotonic() + self.ttl / 3)
        for p, run in runs.items():
            if _failed(run):
                self._fail(run.error)  # type: ignore[arg-type]
            self.draining[p] = run

    def _collect_drained(self) -> bool:
        """Forget the runs that are quiet now; those handed over are released at the
        next renewal. True if one to hand over was."""
        released = False
        for p, run in list(self.draining.items()):
            if not run.quiet():
                continue
            del self.draining[p]
            self.finished_runs.append(run.metrics())
            if p in self.handing_over:
                self.handing_over.discard(p)
                self.releasing.add(p)
                released = True
        return released

    def _start_run(self, partition: int, partitions: int) -> None:
        pipeline = self.pipeline
        if pipeline.key_spec is not None:
            pipeline = replace(pipeline, key_spec=pipeline.key_spec.owning(owner_of(partition, partitions)))
        pipeline._usage.ran = True
        run = _PartitionRun(self, partition_name(self.group, partition), self.dead_letter_stream or "")
        self.runs[partition] = run
        pipeline._launch(run, run.consumer, self.scheduler if self.own is None else None)
        if _failed(run):
            self._fail(run.error)  # type: ignore[arg-type]

    def _on_partition_ack(self, seq: int | None) -> None:
        with self.windows_lock:
            self.windows += 1
            # Only where a position is committed: windows closed together share one (the
            # step's last carries it), and stopping inside a step would deliver its
            # first windows again, as a single consumer's run avoids too.
            reached = seq is not None and self.max_windows is not None and self.windows >= self.max_windows
        if reached:
            self._stop_soon()

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._stop_soon()

    def _stop_soon(self) -> None:
        """Stop the member from another thread (once): this one may be a partition's
        run, which the stop waits for."""
        with self._lock:
            if self._stopping or self.stopper is not None:
                return
            self.stopper = threading.Thread(target=self.stop, name="minibatch-group-stop", daemon=True)
        self.stopper.start()

    # -- PipelineHandle ------------------------------------------------------
    def join(self, timeout: float | None = None) -> bool:
        """Wait until the member stopped (or failed); False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            for run in list(self.runs.values()):
                if _failed(run):
                    self._fail(run.error)  # type: ignore[arg-type]
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._done.wait(0.05 if left is None else min(0.05, left))
        return True

    def stop(self, timeout: float | None = None) -> bool:
        """Stop every partition's run (each commits its position), then leave the
        group: its partitions are free for the other members at once."""
        with self._lock:
            stopping, self._stopping = self._stopping, True
            self._live = False
        if stopping:  # another thread stops it: wait for that (outside the lock it needs)
            return self._done.wait(timeout)
        if self.timer is not None:
            self.timer.dispose()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.step_lock:
            self.draining.update(self.runs)
            self.runs.clear()
            clean = _stop_together(list(self.draining.values()), deadline)
            for run in self.draining.values():
                if self.error is None and _failed(run):
                    self.error = run.error
            for p, run in list(self.draining.items()):
                if not run.wait_quiet(_left(deadline)):
                    clean = False
                    log.warning("group %r member %s: partition %d's run is still stopping; the member "
                                "leaves the group without it, so its partition moves when the lease "
                                "expires", self.group, self.member, p)
                    continue
                del self.draining[p]
                self.finished_runs.append(run.metrics())
            try:
                if self.draining:  # keep those leases (they expire); give up the others now
                    self._update(releasing=tuple(p for p in range(self.count or 0) if p not in self.draining))
                else:
                    self._update(leaving=True)
            except OUTAGES as exc:
                log.warning("group %r member %s: could not leave the group (%s); its partitions "
                            "move once its leases expire", self.group, self.member, exc)
        if self.own is not None:
            self.own.dispose()
        self._finish()
        self._disposed.set()
        return clean


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (a ``time.monotonic`` reading; ``None``: no bound)."""
    return None if deadline is None else max(0.001, deadline - time.monotonic())


def _stop_together(runs: list[PipelineHandle], deadline: float | None) -> bool:
    """Ask every run to stop at once, then wait for them sharing the time left until
    ``deadline``; True if each stopped cleanly."""
    for run in runs:
        run.stop(timeout=0)
    clean = True
    for run in runs:
        clean = run.stop(_left(deadline)) and clean
    return clean


def _failed(run: PipelineHandle) -> bool:
    """Whether ``run`` stopped on an error of its own (one stopped by its lease
    running out is started again if the member keeps the partition)."""
    return run.error is not None and not isinstance(run.error, LeaseExpiredError)


def start_member(pipeline: Pipeline[Any, Any], group: str, member: str, partitions: int | None,
                 lease_timeout: float, scheduler: abc.SchedulerBase | None,
                 max_windows: int | None) -> GroupMemberHandle:
    """Join ``group`` and run ``pipeline`` on the partitions this member is granted."""
    handle = GroupMemberHandle(pipeline, group, member, partitions, lease_timeout, scheduler, max_windows)
    handle.begin()
    return handle
