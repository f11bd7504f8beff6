"""The pattern builder: an immutable, fluent description of a sequence of steps.

A pattern is a chain of named steps. Each builder call returns a new
``Pattern``; a prefix can be shared by several patterns safely.

>>> p = (Pattern.begin('fail').where(lambda e: e['ok'] is False).times(3)
...      .followed_by('success').where(lambda e: e['ok'] is True)
...      .within('1m'))
>>> p.names
('fail', 'success')
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from minibatch_rx.durations import Interval, to_seconds
from minibatch_rx.errors import InvalidArgumentError

if TYPE_CHECKING:
    from minibatch_rx.cep.match import Context, Evaluation

T = TypeVar("T")

#: A condition on one event, or an iterative one on the event and the partial match so far.
Condition = Callable[[T], bool] | Callable[[T, "Context"], bool]
#: The internal form of every condition: ``(event, context) -> bool``.
Test = Callable[[Any, Any], bool]


class Contiguity(enum.Enum):
    """How a step relates to the events before it (Flink's consuming strategies)."""

    STRICT = "next"  # the very next event
    RELAXED = "followed_by"  # the first later matching event (skip till next)
    ANY = "followed_by_any"  # every later matching event (skip till any)
    NOT_NEXT = "not_next"
    NOT_FOLLOWED = "not_followed_by"


class AfterMatch:
    """After-match skip strategies: which other partial matches survive a match.

    >>> AfterMatch.skip_to_last('b')
    AfterMatch.skip_to_last('b')
    """

    __slots__ = ("kind", "step", "strict")

    def __init__(self, kind: str, step: str | None = None, strict: bool = False) -> None:
        self.kind = kind
        self.step = step
        self.strict = strict

    @classmethod
    def no_skip(cls) -> AfterMatch:
        """Keep every partial match (the default): each possible match is emitted."""
        return cls("no_skip")

    @classmethod
    def skip_to_next(cls) -> AfterMatch:
        """Drop the partial matches that started with the match's first event."""
        return cls("skip_to_next")

    @classmethod
    def skip_past_last_event(cls) -> AfterMatch:
        """Drop every partial match that started before the match's last event ended."""
        return cls("skip_past_last_event")

    @classmethod
    def skip_to_first(cls, step: str, *, strict: bool = False) -> AfterMatch:
        """Drop the partial matches that started before the first event of ``step``.

        ``strict=True`` (Flink's ``throwExceptionOnMiss``) raises when a match has no
        event for ``step``, or when skipping to it would restart at the match's first event.
        """
        return cls("skip_to_first", _check_name(step), strict)

    @classmethod
    def skip_to_last(cls, step: str, *, strict: bool = False) -> AfterMatch:
        """Drop the partial matches that started before the last event of ``step``."""
        return cls("skip_to_last", _check_name(step), strict)

    @property
    def skips(self) -> bool:
        """Whether matches may prune others (all strategies but ``no_skip``)."""
        return self.kind != "no_skip"

    def __repr__(self) -> str:
        args = "" if self.step is None else repr(self.step)
        if self.strict:
            args += ", strict=True"
        return f"AfterMatch.{self.kind}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AfterMatch):
            return NotImplemented
        return (self.kind, self.step, self.strict) == (other.kind, other.step, other.strict)

    def __hash__(self) -> int:
        return hash((self.kind, self.step, self.strict))


@dataclasses.dataclass(frozen=True)
class Step:
    """One named step of a pattern (internal; read through :attr:`Pattern.steps`)."""

    name: str
    contiguity: Contiguity
    test: Test | None = None  # None: every event passes
    until: Test | None = None
    kind: str = "single"  # single | times | looping
    low: int = 1
    high: int | None = 1  # None: unbounded (looping)
    optional: bool = False
    greedy: bool = False
    inner: Contiguity = Contiguity.RELAXED  # contiguity inside a loop
    quantified: bool = False
    iterative: bool = False
    group: tuple[Step, ...] | None = None  # a group step: the steps of its pattern

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the steps that take events: this one, or a group's own."""
        if self.group is None:
            return (self.name,)
        return tuple(name for step in self.group for name in step.names)

    @property
    def negated(self) -> bool:
        """Whether this is a ``not_next`` / ``not_followed_by`` step."""
        return self.contiguity in (Contiguity.NOT_NEXT, Contiguity.NOT_FOLLOWED)

    @property
    def looping(self) -> bool:
        """Whether the step takes a number of events (times, one_or_more, ...)."""
        return self.kind != "single"


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"a step name must be a non-empty str, got {name!r}")
    if ":" in name:
        raise InvalidArgumentError(f"step name {name!r} may not contain ':'")
    if name.startswith("$"):
        raise InvalidArgumentError(f"step name {name!r} may not start with '$' (reserved)")
    return name


def _arity_two(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes a second positional argument (an iterative condition)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature take the event alone
        return False
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return True
    return len(positional) >= 2 and positional[1].default is inspect.Parameter.empty


def as_test(fn: Callable[..., Any], what: str) -> tuple[Test, bool]:
    """The ``(event, ctx)`` form of a user condition and whether it is iterative."""
    if not callable(fn):
        raise InvalidArgumentError(f"{what} must be callable, got {type(fn).__name__}")
    if _arity_two(fn):
        return fn, True
    simple = fn

    def test(event: Any, ctx: Any) -> bool:
        return bool(simple(event))

    test.simple = simple  # type: ignore[attr-defined]
    return test, False


def _always(event: Any, ctx: Any) -> bool:
    """The condition of a step without ``where``: every event passes."""
    return True


def _not(test: Test) -> Test:
    def negated(event: Any, ctx: Any) -> bool:
        return not test(event, ctx)

    negated.negates = test  # type: ignore[attr-defined]  # the compiled edge evaluates ``test`` once
    return negated


def _and(first: Test, second: Test) -> Test:
    if first is _always:
        return second
    if second is _always:
        return first

    def both(event: Any, ctx: Any) -> bool:
        return bool(first(event, ctx)) and bool(second(event, ctx))

    return both


def _or(first: Test, second: Test) -> Test:
    def either(event: Any, ctx: Any) -> bool:
        return bool(first(event, ctx)) or bool(second(event, ctx))

    return either


class Pattern(Generic[T]):
    """A complex-event pattern: named steps, conditions, quantifiers and a time bound.

    Semantics follow Apache Flink's CEP library (contiguity, quantifiers, negation,
    greedy, until, after-match skip strategies and timeouts). Conditions and
    quantifiers apply to the step last added.

    >>> p = Pattern.begin('a').where(lambda e: e == 'a').followed_by('b').where(lambda e: e == 'b')
    >>> [dict(m) for m in p.evaluate(['a', 'c', 'b']).matches]
    [{'a': ['a'], 'b': ['b']}]
    """

    __slots__ = ("_after", "_compiled", "_steps", "_within")

    def __init__(self, steps: tuple[Step, ...], after_match: AfterMatch, within: float | None) -> None:
        self._steps = steps
        self._after = after_match
        self._within = within
        self._compiled: Any = None

    # -- construction -----------------------------------------------------------------

    @classmethod
    def begin(cls, name: str | Pattern[Any], after_match: AfterMatch | None = None) -> Pattern[Any]:
        """Start a pattern with the step ``name``, or with a group: a whole
        pattern taken as one step, which quantifiers can then repeat
        (``Pattern.begin(Pattern.begin('a').next('b')).times(2)``).

        ``after_match`` (default :meth:`AfterMatch.no_skip`) decides which partial
        matches survive a match.
        """
        if after_match is None:
            after_match = AfterMatch.no_skip()
        elif not isinstance(after_match, AfterMatch):
            raise InvalidArgumentError(
                f"after_match must be an AfterMatch (e.g. AfterMatch.skip_past_last_event()), "
                f"got {after_match!r}"
            )
        if isinstance(name, Pattern):
            if name._steps[-1].contiguity is Contiguity.NOT_FOLLOWED:
                raise InvalidArgumentError(
                    f"a group may not end with not_followed_by({name._steps[-1].name!r}): put the "
                    "negation after the group"
                )
            # Flink begins a group with strict contiguity (it only matters inside loops).
            return Pattern((_group_step(name, 0, Contiguity.STRICT),), after_match, name._within)
        return Pattern((Step(_check_name(name), Contiguity.RELAXED),), after_match, None)

    def _add(self, name: str | Pattern[Any], contiguity: Contiguity) -> Pattern[T]:
        last = self._steps[-1]
        if contiguity in (Contiguity.NOT_NEXT, Contiguity.NOT_FOLLOWED):
            if isinstance(name, Pattern):
                raise InvalidArgumentError(f"{contiguity.value}() takes a step name, not a group pattern")
            if last.optional:
                raise InvalidArgumentError(
                    f"{contiguity.value}({name!r}) may not follow the optional step {last.name!r}; "
                    "write two patterns, one with and one without the optional step"
                )
        within = self._within
        if isinstance(name, Pattern):
            step = _group_step(name, len(self._steps), contiguity)
            if name._steps[-1].contiguity is Contiguity.NOT_FOLLOWED:
                # Flink accepts it and ignores the negation (FLINK-15980).
                raise InvalidArgumentError(
                    f"a group may not end with not_followed_by({name._steps[-1].name!r}): put the "
                    "negation after the group"
                )
            if name._within is not None:
                within = name._within if within is None else min(within, name._within)
        else:
            step = Step(_check_name(name), contiguity)
        for new in step.names:
            if new in self.names:
                raise InvalidArgumentError(f"duplicate step name {new!r}: step names must be unique")
        return Pattern((*self._steps, step), self._after, within)

    def _replace(self, **changes: Any) -> Pattern[T]:
        last = dataclasses.replace(self._steps[-1], **changes)
        return Pattern((*self._steps[:-1], last), self._after, self._within)

    def next(self, name: str | Pattern[Any]) -> Pattern[T]:
        """Add a step (or a group pattern) whose event must come directly after the
        previous step's (strict)."""
        return self._add(name, Contiguity.STRICT)

    def followed_by(self, name: str | Pattern[Any]) -> Pattern[T]:
        """Add a step matched by the first later matching event (relaxed contiguity)."""
        return self._add(name, Contiguity.RELAXED)

    def followed_by_any(self, name: str | Pattern[Any]) -> Pattern[T]:
        """Add a step matched by every later matching event (each starts its own branch)."""
        return self._add(name, Contiguity.ANY)

    def not_next(self, name: str) -> Pattern[T]:
        """Add a negative step: a partial match dies if the next event matches it."""
        return self._add(name, Contiguity.NOT_NEXT)

    def not_followed_by(self, name: str) -> Pattern[T]:
        """Add a negative step: a partial match dies if a matching event comes before the
        following step. At the end of a pattern it needs :meth:`within`; the match is then
        emitted once the time has passed without such an event."""
        return self._add(name, Contiguity.NOT_FOLLOWED)

    # -- conditions ----------------------------------------------------------------

    def where(self, condition: Condition[T]) -> Pattern[T]:
        """AND ``condition`` into the last step's condition.

        ``condition(event)`` or, iterative, ``condition(event, ctx)`` where
        ``ctx.events(step)`` gives the events already accepted for ``step``.
        """
        test, iterative = as_test(condition, "where() condition")
        last = self._conditioned("where()")
        combined = test if last.test is None else _and(last.test, test)
        return self._replace(test=combined, iterative=last.iterative or iterative)

    def or_where(self, condition: Condition[T]) -> Pattern[T]:
        """OR ``condition`` into the last step's condition."""
        test, iterative = as_test(condition, "or_where() condition")
        last = self._conditioned("or_where()")
        combined = test if last.test is None else _or(last.test, test)
        return self._replace(test=combined, iterative=last.iterative or iterative)

    def _conditioned(self, what: str) -> Step:
        last = self._steps[-1]
        if last.group is not None:
            raise InvalidArgumentError(
                f"{what} does not apply to a group step: put conditions on the steps of its pattern"
            )
        return last

    def until(self, condition: Condition[T]) -> Pattern[T]:
        """Stop a looping step (one_or_more / times_or_more) at the first event meeting
        ``condition``; that event is not taken."""
        last = self._steps[-1]
        if last.kind != "looping":
            raise InvalidArgumentError(
                f"until() applies to looping steps (one_or_more, times_or_more); "
                f"step {last.name!r} is not one"
            )
        if last.until is not None:
            raise InvalidArgumentError(f"step {last.name!r} already has an until() condition")
        test, iterative = as_test(condition, "until() condition")
        return self._replace(until=test, iterative=last.iterative or iterative)

    # -- quantifiers ----------------------------------------------------------------

    def _quantify(self, what: str) -> Step:
        last = self._steps[-1]
        if last.negated:
            raise InvalidArgumentError(f"{what} does not apply to the negative step {last.name!r}")
        return last

    def _set_times(self, what: str, kind: str, low: int, high: int | None) -> Pattern[T]:
        last = self._quantify(what)
        if last.quantified:
            raise InvalidArgumentError(
                f"step {last.name!r} already has a quantifier; apply one of times, "
                "one_or_more, times_or_more per step"
            )
        optional = last.optional
        if low == 0:  # times(0, m): Flink makes the step optional and takes 1..m
            optional, low = True, 1
        return self._replace(kind=kind, low=low, high=high, quantified=True, optional=optional)

    def times(self, n: int, m: int | None = None) -> Pattern[T]:
        """The step takes exactly ``n`` events, or from ``n`` to ``m`` (``n`` may be 0)."""
        if m is None:
            _positive(n, "times(n)")
            return self._set_times("times()", "times", n, n)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgumentError(f"times(n, m) needs an int n >= 0, got {n!r}")
        _positive(m, "times(n, m): m")
        if m < n:
            raise InvalidArgumentError(f"times(n, m) needs m >= n, got n={n}, m={m}")
        return self._set_times("times()", "times", n, m)

    def one_or_more(self) -> Pattern[T]:
        """The step takes one or more events (a loop)."""
        return self._set_times("one_or_more()", "looping", 1, None)

    def times_or_more(self, n: int) -> Pattern[T]:
        """The step takes ``n`` or more events (a loop)."""
        _positive(n, "times_or_more(n)")
        return self._set_times("times_or_more()", "looping", n, None)

    def optional(self) -> Pattern[T]:
        """The step may take no event at all."""
        last = self._quantify("optional()")
        if last.optional:
            raise InvalidArgumentError(f"step {last.name!r} is already optional")
        if len(self._steps) > 1 and self._steps[-2].greedy:
            raise InvalidArgumentError(
                f"the optional step {last.name!r} may not follow the greedy step {self._steps[-2].name!r}"
            )
        return self._replace(optional=True)

    def greedy(self) -> Pattern[T]:
        """A looping step takes as many events as it can (other branches are not tried)."""
        last = self._quantify("greedy()")
        if not last.looping:
            raise InvalidArgumentError(
                f"greedy() applies to looping steps (times, one_or_more, ...); "
                f"{last.name!r} is a singleton step"
            )
        if last.inner is Contiguity.ANY:
            raise InvalidArgumentError(
                f"greedy() and allow_combinations() contradict each other (step {last.name!r})"
            )
        if last.group is not None:
            raise InvalidArgumentError("greedy() does not apply to a group step")
        return self._replace(greedy=True)

    def consecutive(self) -> Pattern[T]:
        """Inside a loop, each event must come directly after the previous one (strict)."""
        return self._inner(Contiguity.STRICT, "consecutive()")

    def allow_combinations(self) -> Pattern[T]:
        """Inside a loop, any later matching event may be taken (every combination)."""
        return self._inner(Contiguity.ANY, "allow_combinations()")

    def _inner(self, inner: Contiguity, what: str) -> Pattern[T]:
        last = self._quantify(what)
        if not last.looping:
            raise InvalidArgumentError(
                f"{what} applies to looping steps (times, one_or_more, ...); "
                f"{last.name!r} is a singleton step"
            )
        if last.inner is not Contiguity.RELAXED:
            raise InvalidArgumentError(
                f"step {last.name!r} already has consecutive() or allow_combinations(); "
                "apply one of them once"
            )
        if inner is Contiguity.ANY and last.greedy:
            raise InvalidArgumentError(
                f"greedy() and allow_combinations() contradict each other (step {last.name!r})"
            )
        return self._replace(inner=inner)

    def within(self, interval: Interval) -> Pattern[T]:
        """Bound the whole match in time: an event ``interval`` or more after the first
        event of a partial match is outside (half-open); the partial match times out.
        Given several times, the shortest holds."""
        seconds = to_seconds(interval, "within()")
        bound = seconds if self._within is None else min(self._within, seconds)
        return Pattern(self._steps, self._after, bound)

    # -- reading --------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the steps that take events, in order (a group's own steps
        in its place)."""
        return tuple(name for step in self._steps for name in step.names)

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps, in order."""
        return self._steps

    @property
    def after_match(self) -> AfterMatch:
        """The after-match skip strategy."""
        return self._after

    @property
    def window(self) -> float | None:
        """The ``within`` bound in seconds, or None."""
        return self._within

    def compiled(self) -> Any:
        """The automaton of this pattern, checked and built once (internal)."""
        if self._compiled is None:
            from minibatch_rx.cep.compiler import compile_pattern

            self._compiled = compile_pattern(self)
        return self._compiled

    def check(self) -> None:
        """Raise :class:`InvalidArgumentError` if the pattern cannot run."""
        self.compiled()

    def evaluate(
        self,
        events: Sequence[T],
        time: str | Callable[[T], float] | None = None,
        end: float | None = None,
    ) -> Evaluation[T]:
        """Run the pattern over a finite list of events; see :func:`minibatch_rx.cep.evaluate`."""
        from minibatch_rx.cep.match import evaluate

        return evaluate(self, events, time=time, end=end)

    def __repr__(self) -> str:
        parts = [f"Pattern.begin({_shown(self._steps[0])})"]
        parts += [f".{s.contiguity.value}({_shown(s)})" for s in self._steps[1:]]
        if self._within is not None:
            parts.append(f".within({self._within})")
        return "".join(parts)


def _shown(step: Step) -> str:
    shown = repr(step.name) if step.group is None else "(" + " ".join(_shown(s) for s in step.group) + ")"
    if step.kind == "looping":
        shown += "+" if step.low == 1 else f"{{{step.low},}}"
    elif step.kind == "times":
        shown += f"{{{step.low}}}" if step.low == step.high else f"{{{step.low},{step.high}}}"
    return shown + ("?" if step.optional else "")


def _group_step(pattern: Pattern[Any], index: int, contiguity: Contiguity) -> Step:
    """A group pattern as one step of another (Flink's GroupPattern)."""
    if not isinstance(pattern, Pattern):
        raise InvalidArgumentError(f"a group must be a Pattern, got {type(pattern).__name__}")
    return Step(f"$group{index}", contiguity, group=pattern.steps)


def _positive(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgumentError(f"{what} needs an int > 0, got {value!r}")
