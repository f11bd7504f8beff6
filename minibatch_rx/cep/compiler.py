"""Compiling a pattern into its automaton, as Apache Flink's NFACompiler does.

A pattern compiles back to front into states joined by edges of three kinds:
TAKE (the event joins the match), IGNORE (the event is skipped, the state is
kept) and PROCEED (an epsilon move, tried on the same event). Negative steps
become STOP states (reaching one kills the branch), a trailing
``not_followed_by`` a PENDING state that turns into a match when the ``within``
time passes. Greedy loops put "and the loop cannot take it" on the edges of the
state after the loop. :mod:`minibatch_rx.cep.nfa` runs the automaton.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from minibatch_rx.cep.pattern import Contiguity, Step, Test, _always, _and, _not
from minibatch_rx.errors import InvalidArgumentError

if TYPE_CHECKING:
    from minibatch_rx.cep.nfa import Run
    from minibatch_rx.cep.pattern import Pattern

TAKE, IGNORE, PROCEED = 0, 1, 2
START, NORMAL, FINAL, STOP, PENDING = 0, 1, 2, 3, 4


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
        from minibatch_rx.cep.nfa import Run

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
