"""The automaton behind a pattern, with the semantics of Apache Flink's CEP NFA.

A pattern compiles (back to front, as Flink's compiler does) into states joined
by edges of three kinds: TAKE (the event joins the match), IGNORE (the event is
skipped, the state is kept) and PROCEED (an epsilon move, tried on the same
event). A *run* holds the partial matches of one key. Each partial match keeps
its own path of taken events as a shared linked list, so extracting a match is a
walk back along it (Flink keeps one shared buffer with Dewey versions for this;
the paths are the same).

Negative steps become STOP states (reaching one kills the branch), a trailing
``not_followed_by`` a PENDING state that turns into a match when the ``within``
time passes. Greedy loops put "and the loop cannot take it" on the edges of the
state after the loop.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from minibatch_rx.cep.pattern import Contiguity, Step, Test
from minibatch_rx.errors import InvalidArgumentError, MinibatchError

if TYPE_CHECKING:
    from minibatch_rx.cep.pattern import Pattern

TAKE, IGNORE, PROCEED = 0, 1, 2
START, NORMAL, FINAL, STOP, PENDING = 0, 1, 2, 3, 4
_INF = math.inf

#: A path of taken events, last first: (step name, event id, time, event, rest of the
#: path, reference) or None; the reference is the caller's (a pipeline's message).
Path = tuple[str, int, float, Any, "Path", Any] | None


class PatternError(MinibatchError, RuntimeError):
    """A pattern failed while matching (a ``strict`` skip strategy found no step to skip to)."""


def _always(event: Any, ctx: Any) -> bool:
    return True


def _not(test: Test) -> Test:
    def negated(event: Any, ctx: Any) -> bool:
        return not test(event, ctx)

    negated.negates = test  # type: ignore[attr-defined]
    return negated


def _and(first: Test, second: Test) -> Test:
    if first is _always:
        return second
    if second is _always:
        return first

    def both(event: Any, ctx: Any) -> bool:
        return bool(first(event, ctx)) and bool(second(event, ctx))

    return both


class Edge:
    """A transition: ``action`` from ``source`` to ``target`` when ``test`` holds.

    For speed the test is also kept unwrapped: ``fn`` (``None``: always true),
    called as ``fn(event)`` if ``simple`` else ``fn(event, ctx)``, its result
    negated if ``neg`` (relaxed contiguity's IGNORE edge is "not the TAKE
    test": the run evaluates the user's condition once for both)."""

    __slots__ = ("action", "fn", "neg", "simple", "source", "target", "test")

    def __init__(self, action: int, source: State, target: State, test: Test) -> None:
        self.action = action
        self.source = source
        self.target = target
        self.set(test)

    def set(self, test: Test) -> None:
        self.test = test
        self.neg = False
        self.simple = False
        self.fn: Callable[..., Any] | None = None
        if test is _always:
            return
        inner = getattr(test, "negates", None)
        if inner is not None:
            self.neg = True
        else:
            inner = test
        simple = getattr(inner, "simple", None)
        if simple is not None:
            self.fn, self.simple = simple, True
        else:
            self.fn = inner


class State:
    """A state of the automaton, named after the step it belongs to."""

    __slots__ = ("edges", "finishes", "kind", "skip_unless", "step", "take_target")

    def __init__(self, step: str, kind: int) -> None:
        self.step = step
        self.kind = kind
        self.edges: list[Edge] = []
        self.finishes = False
        """Whether PROCEED edges can lead from here to the final state (then taking an
        event into this state may complete a match at once)."""
        self.take_target: State | None = None  # with skip_unless: where an event meeting it goes
        self.skip_unless: Callable[[Any], Any] | None = None
        """For the commonest state (take on a simple condition, else skip the event
        and stay): the condition; an event failing it leaves a partial match as it is."""

    def settle(self) -> None:
        """Note :attr:`skip_unless` and :attr:`finishes` once the edges are final."""
        seen: set[int] = set()
        stack: list[State] = [self]
        while stack and not self.finishes:
            state = stack.pop()
            for edge in state.edges:
                if edge.action == PROCEED and id(edge.target) not in seen:
                    seen.add(id(edge.target))
                    if edge.target.kind == FINAL:
                        self.finishes = True
                    stack.append(edge.target)
        edges = self.edges
        if (
            self.kind in (START, NORMAL)
            and len(edges) == 2
            and edges[0].action == TAKE
            and edges[1].action == IGNORE
            and edges[1].target is self
            and edges[0].simple
            and edges[1].simple
            and edges[0].fn is edges[1].fn
            and not edges[0].neg
            and edges[1].neg
        ):
            self.skip_unless = edges[0].fn
            self.take_target = edges[0].target

    def add(self, action: int, target: State, test: Test) -> None:
        self.edges.append(Edge(action, self, target, test))

    def __repr__(self) -> str:
        return f"State({self.step!r}, {('START', 'NORMAL', 'FINAL', 'STOP', 'PENDING')[self.kind]})"


class _Compiler:
    """Builds the states of a pattern from its last step to its first.

    It walks one sequence of steps at a time (the pattern, or the steps of a
    group step, see :meth:`group_states`), keeping Flink's compiler context:
    the step being converted (``steps[i]``), the one after it (``following``)
    and the group being converted, if any.
    """

    def __init__(self, steps: tuple[Step, ...], window: float | None) -> None:
        self.steps = steps
        self.i = len(steps) - 1
        self.following: Step | None = None
        self.group: Step | None = None
        self.first_of_loop: dict[int, bool] = {}  # id(group step) -> its head starts a loop pass
        self.window = window
        self.states: list[State] = []
        self.stops: dict[str, State] = {}
        self.originals: dict[int, State] = {}  # id(state) -> its un-greedy copy (until)

    @property
    def cur(self) -> Step:
        return self.steps[self.i]

    def new(self, step: str, kind: int) -> State:
        state = State(step, kind)
        self.states.append(state)
        return state

    def compile(self) -> State:
        sink = self.middle(self.new("$end", FINAL))
        start = self.convert(sink)
        start.kind = START
        return start

    def middle(self, sink: State) -> State:
        """Convert the steps of the current sequence but its first, last first."""
        while self.i > 0:
            cur = self.cur
            if cur.contiguity is Contiguity.NOT_FOLLOWED:
                if self.window is not None and sink.kind == FINAL:
                    pending = self.new(cur.name, PENDING)
                    test = self.take(cur)
                    pending.add(PROCEED, self.stop(test, cur.name), test)
                    pending.add(IGNORE, pending, _not(test))
                    sink = pending
                # else: a not_followed_by in the middle becomes stop edges of later states
            elif cur.contiguity is Contiguity.NOT_NEXT:
                notnext = self.new(cur.name, NORMAL)
                test = self.take(cur)
                stop = self.stop(test, cur.name)
                if sink.kind == FINAL:  # an ignore, so that reaching the end waits for one event
                    notnext.add(IGNORE, sink, _not(test))
                else:
                    notnext.add(PROCEED, sink, _not(test))
                notnext.add(PROCEED, stop, test)
                sink = notnext
            else:
                sink = self.convert(sink)
            self.following = cur
            self.i -= 1
        return sink

    # -- the context: groups ------------------------------------------------------

    def head_of_group(self) -> bool:
        return self.group is not None and self.i == 0

    def group_first_of_loop(self) -> bool:
        return self.first_of_loop.get(id(self.group), True)

    def set_first_of_loop(self, value: bool) -> None:
        if self.cur.group is not None:
            self.first_of_loop[id(self.cur)] = value

    def head_of_optional_group(self) -> bool:
        """The first step of an optional group, on the group's first pass."""
        return (
            self.head_of_group()
            and self.group_first_of_loop()
            and self.group is not None
            and self.group.optional
        )

    def with_group_until(self, test: Test | None, take: bool) -> Test | None:
        until = self.group.until if self.group is not None else None
        return with_until(test, until, take=take)

    def take(self, step: Step) -> Test:
        test = self.with_group_until(step.test if step.test is not None else _always, True)
        assert test is not None
        return test

    def true(self) -> Test:
        test = self.with_group_until(_always, True)
        assert test is not None
        return test

    def ignore(self, step: Step) -> Test | None:
        contiguity = step.contiguity
        if self.head_of_group():
            assert self.group is not None
            contiguity = self.group.contiguity if self.group_first_of_loop() else self.group.inner
        return self.with_group_until(ignore_test(contiguity, step), False)

    def inner_ignore(self, step: Step) -> Test | None:
        contiguity = step.inner
        if self.head_of_group():
            assert self.group is not None
            contiguity = self.group.inner
        return self.with_group_until(ignore_test(contiguity, step), False)

    # -- not_followed_by bookkeeping --------------------------------------------

    def current_nots(self) -> list[tuple[Test, str]]:
        """The not_followed_by steps reachable backwards through optional steps."""
        nots: list[tuple[Test, str]] = []
        j = self.i
        while j > 0 and (
            self.steps[j - 1].optional or self.steps[j - 1].contiguity is Contiguity.NOT_FOLLOWED
        ):
            j -= 1
            if self.steps[j].contiguity is Contiguity.NOT_FOLLOWED:
                nots.append((self.take(self.steps[j]), self.steps[j].name))
        return nots

    def stop(self, test: Test, name: str) -> State:
        state = self.stops.get(name)
        if state is None:
            state = self.stops[name] = self.new(name, STOP)
            state.add(TAKE, state, test)
        return state

    def add_stops(self, state: State) -> None:
        for test, name in self.current_nots():
            state.add(PROCEED, self.stop(test, name), test)

    def add_stop_to_loop(self, state: State) -> None:
        following = self.following
        if following is not None and following.contiguity is Contiguity.NOT_FOLLOWED:
            test = self.take(following)
            state.add(PROCEED, self.stop(test, following.name), test)

    def without_nots(self, sink: State) -> State:
        """A copy of ``sink`` whose stop edges of earlier not_followed_by steps are
        dropped: taking an event in an optional step ends those negations."""
        nots = self.current_nots()
        if not nots or not self.cur.optional:
            return sink
        names = {name for _, name in nots}
        copy = self.new(sink.step, sink.kind)
        for edge in sink.edges:
            if edge.action == PROCEED:
                target = edge.target
                if target.kind == STOP:
                    if target.step in names:
                        continue
                else:
                    target = self.without_nots(target)
                copy.add(PROCEED, target, edge.test)
            else:
                copy.add(edge.action, copy if edge.target is sink else edge.target, edge.test)
        return copy

    def copy(self, state: State) -> State:
        twin = self.new(state.step, state.kind)
        for edge in state.edges:
            twin.add(edge.action, twin if edge.target is state else edge.target, edge.test)
        return twin

    # -- steps -------------------------------------------------------------------

    def convert(self, sink: State) -> State:
        cur = self.cur
        if cur.kind == "looping":
            self.set_first_of_loop(False)
            looping = self.looping(self.without_nots(sink))
            self.set_first_of_loop(True)
            first = self.times(looping, sink, cur.low, cur.low)
        elif cur.kind == "times":
            assert cur.high is not None
            first = self.times(sink, sink, cur.low, cur.high)
        else:
            first = self.singleton(sink, sink, self.take(cur), self.ignore(cur), cur.optional)
        self.add_stops(first)
        return first

    def times(self, sink: State, proceed: State, low: int, high: int) -> State:
        cur = self.cur
        self.set_first_of_loop(False)
        until = cur.until
        inner_ignore = with_until(self.inner_ignore(cur), until, take=False)
        take = with_until(self.take(cur), until, take=True)
        assert take is not None
        if cur.greedy and low != high:
            if until is not None:
                self.originals[id(sink)] = self.copy(sink)
            self.make_greedy(sink, take)
        last = sink
        for _ in range(low, high):
            last = self.singleton(last, proceed, take, inner_ignore, True)
            self.add_stop_to_loop(last)
        for _ in range(low - 1):
            last = self.singleton(last, None, take, inner_ignore, False)
            self.add_stop_to_loop(last)
        self.set_first_of_loop(True)
        return self.singleton(last, proceed, take, self.ignore(cur), cur.optional)

    def singleton(
        self, sink: State, proceed: State | None, take: Test, ignore: Test | None, optional: bool
    ) -> State:
        cur = self.cur
        if cur.group is not None:
            return self.group_states(cur, sink, proceed, optional)
        state = self.new(cur.name, NORMAL)
        target = self.without_nots(sink)
        state.add(TAKE, target, take)
        # (An optional group's own way around it is added by group_states; an optional
        # first step of a group skips to the group's next step: FLINK-30864.)
        if optional and proceed is not None:
            go = self.true()
            if cur.greedy and cur.until is not None:
                until = cur.until
                state.add(PROCEED, self.originals.get(id(proceed), proceed), _and(go, until))
                state.add(PROCEED, proceed, _and(go, _not(until)))
            else:
                state.add(PROCEED, proceed, go)
        if ignore is not None:
            if optional or self.head_of_optional_group():
                waiting = self.new(cur.name, NORMAL)
                waiting.add(TAKE, target, take)
                waiting.add(IGNORE, waiting, ignore)
                self.add_stops(waiting)
            else:
                waiting = state
            state.add(IGNORE, waiting, ignore)
        return state

    def looping(self, sink: State) -> State:
        cur = self.cur
        if cur.group is not None:
            return self.looping_group(cur, sink)
        until = cur.until
        ignore = with_until(self.inner_ignore(cur), until, take=False)
        take = with_until(self.take(cur), until, take=True)
        assert take is not None
        go = self.true()
        state = self.new(cur.name, NORMAL)
        if cur.greedy:
            if until is not None:
                twin = self.copy(sink)
                state.add(PROCEED, twin, _and(go, until))
                self.originals[id(sink)] = twin
                state.add(PROCEED, sink, _and(go, _not(until)))
            else:
                state.add(PROCEED, sink, go)
            self.make_greedy(sink, self.take(cur))
        else:
            state.add(PROCEED, sink, go)
        state.add(TAKE, state, take)
        self.add_stop_to_loop(state)
        if ignore is not None:
            waiting = self.new(cur.name, NORMAL)
            waiting.add(TAKE, state, take)
            waiting.add(IGNORE, waiting, ignore)
            state.add(IGNORE, waiting, ignore)
            self.add_stop_to_loop(waiting)
        return state

    def _enter(self, group: Step) -> tuple[Any, ...]:
        saved = (self.steps, self.i, self.following, self.group)
        assert group.group is not None
        self.group, self.steps, self.i = group, group.group, len(group.group) - 1
        return saved

    def _leave(self, saved: tuple[Any, ...]) -> None:
        self.steps, self.i, self.following, self.group = saved

    def group_states(self, group: Step, sink: State, proceed: State | None, optional: bool) -> State:
        """The states of a group step's own steps, leading to ``sink``."""
        go = self.true()
        saved = self._enter(group)
        last = self.convert(self.middle(sink))
        if optional and proceed is not None:
            last.add(PROCEED, proceed, go)
        self._leave(saved)
        return last

    def looping_group(self, group: Step, sink: State) -> State:
        """A group step as a loop: its last step leads back to its first."""
        go = self.true()
        saved = self._enter(group)
        again = self.new(group.name, NORMAL)
        last = self.convert(self.middle(again))
        last.add(PROCEED, sink, go)
        again.add(PROCEED, last, go)
        self._leave(saved)
        return last

    @staticmethod
    def make_greedy(state: State, take: Test) -> None:
        """The edges of the state after a greedy loop apply only when the loop cannot take."""
        refuse = _not(take)
        for edge in state.edges:
            edge.set(_and(edge.test, refuse))


def ignore_test(contiguity: Contiguity, step: Step) -> Test | None:
    if contiguity is Contiguity.STRICT:
        return None
    if contiguity is Contiguity.ANY:
        return _always
    return _not(step.test if step.test is not None else _always)


def with_until(test: Test | None, until: Test | None, *, take: bool) -> Test | None:
    if until is None:
        return test
    if test is not None:
        return _and(_not(until), test)
    return _not(until) if take else None


class Automaton:
    """A compiled pattern: its start state, ``within`` bound and skip strategy."""

    __slots__ = ("after", "names", "shape", "start", "states", "window")

    def __init__(self, pattern: Pattern[Any]) -> None:
        steps = pattern.steps
        last = steps[-1]
        if last.contiguity is Contiguity.NOT_FOLLOWED and pattern.window is None:
            raise InvalidArgumentError(
                f"a pattern may not end with not_followed_by({last.name!r}) unless it has "
                "within(): the absence is only known once the time has passed"
            )
        after = pattern.after_match
        if after.step is not None and after.step not in pattern.names:
            raise InvalidArgumentError(
                f"{after!r} names the step {after.step!r}, which is not in the pattern "
                f"(steps: {', '.join(pattern.names)})"
            )
        compiler = _Compiler(steps, pattern.window)
        self.start = compiler.compile()
        self.states = compiler.states
        for state in self.states:
            state.settle()
        self.shape = _shape(self.states, pattern)
        self.window = pattern.window
        self.after = after
        self.names = pattern.names

    def run(self) -> Run:
        """A fresh matcher (the state of one key)."""
        return Run(self)


def _shape(states: list[State], pattern: Pattern[Any]) -> str:
    """A digest of the automaton's structure (states, edges, step names, ``within``,
    skip strategy; conditions are code, and are not in it): a checkpoint tells by it
    whether it was written for the same automaton."""
    index = {id(state): i for i, state in enumerate(states)}
    text = repr(
        (
            [
                (s.step, s.kind, [(e.action, index[id(e.target)], e.neg, e.fn is None) for e in s.edges])
                for s in states
            ],
            pattern.window,
            repr(pattern.after_match),
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def compile_pattern(pattern: Pattern[Any]) -> Automaton:
    """Check ``pattern`` and build its automaton."""
    return Automaton(pattern)


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

    def lowest_id(self) -> int | None:
        """The lowest event id any partial or waiting match holds."""
        lowest: int | None = None
        for group in (self.partials, self.completed):
            for partial in group:
                node = partial.path
                while node is not None:
                    if lowest is None or node[1] < lowest:
                        lowest = node[1]
                    node = node[4]
        return lowest

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


Reader = Callable[[Any], float]
