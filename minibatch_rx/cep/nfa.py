"""Running a pattern's automaton, with the semantics of Apache Flink's CEP NFA.

A *run* holds the partial matches of one key (Flink's computation states) and
advances them event by event (:meth:`Run.process`) and as time passes
(:meth:`Run.advance`: timeouts, and trailing absences that held). Each partial
match keeps its own path of taken events as a shared linked list, so extracting
a match is a walk back along it (Flink keeps one shared buffer with Dewey
versions for this; the paths are the same). Completed matches wait for earlier
partial matches when a skip strategy may prune them, as in Flink. The automaton
comes from :mod:`minibatch_rx.cep.compiler`.
"""

from __future__ import annotations

import math
from typing import Any

from minibatch_rx.cep.compiler import (
    FINAL,
    IGNORE,
    PENDING,
    PROCEED,
    START,
    STOP,
    Automaton,
    State,
)
from minibatch_rx.cep.pattern import _always
from minibatch_rx.errors import MinibatchError

_INF = math.inf

#: A path of taken events, last first: (step name, event id, time, event, rest of the
#: path, reference) or None; the reference is the caller's (a pipeline's message).
Path = tuple[str, int, float, Any, "Path", Any] | None


class PatternError(MinibatchError, RuntimeError):
    """A pattern failed while matching (a ``strict`` skip strategy found no step to skip to)."""


class Partial:
    """A partial match (Flink's computation state)."""

    __slots__ = ("path", "prev_ts", "skip_unless", "start_id", "start_ts", "state")

    def __init__(
        self, state: State, path: Path, start_ts: float, start_id: int | None, prev_ts: float
    ) -> None:
        self.state = state
        self.skip_unless = state.skip_unless  # (read for every event: kept at hand)
        self.path = path
        self.start_ts = start_ts
        self.start_id = start_id
        self.prev_ts = prev_ts

    @property
    def order(self) -> float:
        """Flink's order of partial matches: by first event (the start state last)."""
        return _INF if self.start_id is None else self.start_id


class Context:
    """What an iterative condition sees: the partial match it would extend.

    >>> # Pattern.begin('a').one_or_more().where(lambda e, ctx: e > sum(ctx.events('a')))
    """

    __slots__ = ("_path", "time")

    def __init__(self, path: Path, time: float) -> None:
        self._path = path
        #: The time of the event being tested.
        self.time = time

    def events(self, step: str) -> list[Any]:
        """The events already accepted for ``step`` in this partial match, in order."""
        found = []
        node = self._path
        while node is not None:
            if node[0] == step:
                found.append(node[3])
            node = node[4]
        found.reverse()
        return found


def path_events(path: Path) -> list[tuple[str, int, float, Any, Any, Any]]:
    """The nodes of a path, first event first."""
    out = []
    node = path
    while node is not None:
        out.append(node)
        node = node[4]
    out.reverse()
    return out


# Shared empty results (the commonest ones): read them, never change them.
_NONE: list[Partial] = []
_NOTHING: tuple[list[Partial], list[Partial]] = (_NONE, _NONE)


class Run:
    """The partial matches of one key, advanced event by event."""

    __slots__ = ("_auto", "_skips", "_window", "completed", "due", "partials")

    def __init__(self, auto: Automaton) -> None:
        self._auto = auto
        self._skips = auto.after.skips
        self._window = auto.window
        self.partials: list[Partial] = [Partial(auto.start, None, -_INF, None, -_INF)]
        self.completed: list[Partial] = []  # matches waiting for earlier partial matches
        self.due = _INF
        """No partial match runs out before this time (a lower bound; ``within`` only)."""

    @property
    def active(self) -> int:
        """The number of partial matches (the start state not counted)."""
        return len(self.partials) - 1

    @property
    def idle(self) -> bool:
        """Whether nothing is under way: only the start state, no match waiting."""
        return len(self.partials) == 1 and not self.completed

    def feed(
        self, event: Any, ts: float, eid: int, ref: Any = None
    ) -> tuple[list[Partial], list[Partial], list[Partial]]:
        """:meth:`advance` to ``ts``, then :meth:`process` the event, in one call:
        (the matches time gave, the partial matches that timed out, the matches the
        event completed); lists not to be changed."""
        if ts >= self.due or self.completed:
            matched, lapsed = self.advance(ts)
        else:
            matched = lapsed = _NONE
        return matched, lapsed, self.process(event, ts, eid, ref)

    def process(self, event: Any, ts: float, eid: int, ref: Any = None) -> list[Partial]:
        """Feed one event (at time ``ts``, id ``eid`` increasing; ``ref`` is kept with
        it in paths); the matches it completes (a list not to be changed)."""
        partials = self.partials
        fresh: list[Partial] | None = None  # made at the first partial match the event changes
        found: list[Partial] = []
        for i, partial in enumerate(partials):
            skip_unless = partial.skip_unless
            if skip_unless is not None:
                # The commonest state: take on a condition, else skip the event and stay.
                if not skip_unless(event):
                    if fresh is not None:
                        fresh.append(partial)  # skipped: the partial match unchanged
                    continue
                if fresh is None:
                    fresh = partials[:i]
                state = partial.state
                target = state.take_target
                assert target is not None
                path: Path = (state.step, eid, ts, event, partial.path, ref)
                starting = state.kind == START
                start_ts, start_id = (ts, eid) if starting else (partial.start_ts, partial.start_id)
                taken = Partial(target, path, start_ts, start_id, ts)
                (found if target.kind == FINAL else fresh).append(taken)
                if target.finishes:
                    final = self._final_after(target, event, partial.path, ts)
                    if final is not None:
                        found.append(Partial(final, path, start_ts, start_id, ts))
                if starting:
                    fresh.append(partial)
                continue
            if fresh is None:
                fresh = partials[:i]
            mark = len(fresh)
            stopped = False
            for nxt in self._next(partial, event, ts, eid, ref):
                kind = nxt.state.kind
                if kind == FINAL:
                    found.append(nxt)
                elif kind == STOP:
                    stopped = True
                else:
                    fresh.append(nxt)
            if stopped:  # a negation killed this branch: none of what it became survives...
                del fresh[mark:]
                if partial.state.kind == START:
                    # ...but the start state, which must stay for later matches to begin (Flink
                    # drops it too, and its key never matches again: a pattern whose first
                    # step may be skipped straight into a negation).
                    fresh.append(partial)
        if fresh is None:
            return _NONE  # no partial match wanted it: nothing changes (the commonest case)
        if self._skips:
            out: list[Partial] = []
            self._emit(found, fresh, out)
        else:
            out = sorted(found, key=_order) if len(found) > 1 else found
        self.partials = fresh
        if self.due == _INF and len(fresh) > 1:
            # Partial matches started since only begin later: the bound holds, unless there was none.
            self._set_due()
        return out

    def advance(self, ts: float) -> tuple[list[Partial], list[Partial]]:
        """Move time to ``ts``: partial matches whose first event is ``within`` or more
        before it time out; trailing absences that held become matches.
        Returns (matches, timed-out partial matches), lists not to be changed."""
        window = self._window
        if window is None or (ts < self.due and not self.completed):
            return _NOTHING  # nothing can run out yet
        timeouts: list[Partial] = []
        pending: list[Partial] = []
        keep: list[Partial] = []
        for partial in self.partials:
            if partial.state.kind != START and ts - partial.start_ts >= window:
                if partial.state.kind == PENDING:
                    pending.append(partial)
                else:
                    timeouts.append(partial)
            else:
                keep.append(partial)
        out: list[Partial] = []
        if pending or self.completed:
            self._emit(pending, keep, out)
        self.partials = keep
        self._set_due()
        return out, timeouts

    def restored(self) -> None:
        """Set :attr:`partials` and :attr:`completed` from a checkpoint: recompute what they imply."""
        self._set_due()

    def _set_due(self) -> None:
        window = self._window
        if window is not None:
            first = min((p.start_ts for p in self.partials if p.state.kind != START), default=_INF)
            self.due = first + window

    # -- internals ---------------------------------------------------------------

    def _next(self, partial: Partial, event: Any, ts: float, eid: int, ref: Any) -> list[Partial]:
        """What ``partial`` becomes on ``event``: follow the edges whose conditions
        hold (proceeding on the same event through PROCEED edges), in Flink's order."""
        ctx: Context | None = None
        out: list[Partial] = []
        stack = [partial.state]
        starting = partial.state.kind == START
        last_fn: Any = None  # the condition evaluated last, and its result
        last = False
        while stack:
            state = stack.pop()
            for edge in state.edges:
                fn = edge.fn
                action = edge.action
                if fn is not None:
                    if starting and action == IGNORE:
                        continue  # a partial match never starts with a skipped event
                    if fn is last_fn:
                        result = last
                    else:
                        if edge.simple:
                            result = bool(fn(event))
                        else:
                            if ctx is None:
                                ctx = Context(partial.path, ts)
                            result = bool(fn(event, ctx))
                        last_fn, last = fn, result
                    if result is edge.neg:
                        continue
                if action == PROCEED:
                    stack.append(edge.target)
                elif action == IGNORE:
                    if edge.target is partial.state:
                        out.append(partial)  # skipped and staying: the very same partial match
                    elif not starting:
                        out.append(
                            Partial(
                                edge.target, partial.path, partial.start_ts, partial.start_id, partial.prev_ts
                            )
                        )
                else:
                    path: Path = (edge.source.step, eid, ts, event, partial.path, ref)
                    start_id: int | None
                    if starting:
                        start_ts, start_id = ts, eid
                    else:
                        start_ts, start_id = partial.start_ts, partial.start_id
                    target = edge.target
                    out.append(Partial(target, path, start_ts, start_id, ts))
                    if target.finishes:
                        final = self._final_after(target, event, partial.path, ts)
                        if final is not None:
                            out.append(Partial(final, path, start_ts, start_id, ts))
        if starting:
            out.append(partial)
        return out

    @staticmethod
    def _final_after(state: State, event: Any, path: Path, ts: float) -> State | None:
        """The final state reachable from ``state`` by proceeding on ``event``, if any."""
        ctx: Context | None = None
        stack = [state]
        while stack:
            current = stack.pop()
            for edge in current.edges:
                if edge.action != PROCEED:
                    continue
                if edge.test is not _always:
                    if ctx is None:
                        ctx = Context(path, ts)
                    if not edge.test(event, ctx):
                        continue
                if edge.target.kind == FINAL:
                    return edge.target
                stack.append(edge.target)
        return None

    def _emit(self, found: list[Partial], partials: list[Partial], out: list[Partial]) -> None:
        """Emit completed matches in order of their first event, each once no partial
        match started earlier; each emitted match prunes by the skip strategy."""
        completed = self.completed
        if found:
            completed.extend(found)
            completed.sort(key=_order)
        while completed:
            earliest = completed[0]
            first_partial = min(p.order for p in partials) if partials else _INF
            if earliest.order > first_partial:
                break
            completed.pop(0)
            prune = self._pruning_id(earliest.path)
            if prune is not None:
                strict_before = self._auto.after.kind in ("skip_to_first", "skip_to_last")
                partials[:] = [p for p in partials if not _pruned(p, prune, strict_before)]
                completed[:] = [p for p in completed if not _pruned(p, prune, strict_before)]
            out.append(earliest)

    def _pruning_id(self, path: Path) -> int | None:
        after = self._auto.after
        kind = after.kind
        if kind == "no_skip":
            return None
        taken = path_events(path)
        ids = [t[1] for t in taken]
        if kind == "skip_to_next":
            return min(ids)
        if kind == "skip_past_last_event":
            return max(ids)
        of_step = [t[1] for t in taken if t[0] == after.step]
        if not of_step:
            if after.strict:
                raise PatternError(f"{after!r}: the match has no event for step {after.step!r} to skip to")
            return None
        prune = of_step[0] if kind == "skip_to_first" else of_step[-1]
        if after.strict and prune == min(ids):
            raise PatternError(f"{after!r}: cannot skip to the first event of a match")
        return prune


def _order(partial: Partial) -> float:
    return partial.order


def _pruned(partial: Partial, prune: int, strict_before: bool) -> bool:
    start = partial.start_id
    if start is None:
        return False
    return start < prune if strict_before else start <= prune
