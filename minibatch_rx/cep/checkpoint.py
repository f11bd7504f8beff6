"""A pattern stage's checkpoints: its state per key, and how it is written and read.

:class:`Snapshot` is taken at every step of a :class:`~minibatch_rx.cep.stage.PatternCore`
that emits, and written only for the checkpoints committed. It keeps references
to the (immutable) partial matches and buffered records of each key (only the
keys touched since the previous snapshot, on top of it), and is written as a
:class:`~minibatch_rx.journal.PartedState`: a small base, and one part per key,
of which a commit writes those changed since the last one written. Record
values JSON would change are saved tagged, so a restart hands on the same values.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from minibatch_rx.cep.nfa import Partial, Path, Run
from minibatch_rx.windows.keys import Key, key_from_json, key_to_json

if TYPE_CHECKING:
    from minibatch_rx.cep.stage import PatternCore

CHAIN = 64
"""Snapshots kept as the keys changed since the previous one before a full copy."""


def saved_partial(states: list[Any], nodes: list[Path], saved: list[Any]) -> Partial:
    index, node, start_ts, start_id, prev_ts = saved
    return Partial(
        states[index],
        None if node < 0 else nodes[node],
        saved_time(start_ts),
        None if start_id is None else int(start_id),
        saved_time(prev_ts),
    )


def saved_time(value: Any) -> float:
    """A time a checkpoint wrote (``None`` for minus infinity)."""
    return -math.inf if value is None else float(value)


class Snapshot(Mapping[str, Any]):
    """A core's state, taken at every step that emits and written only for the
    checkpoints committed. It keeps references to the (immutable) partial matches
    and buffered records of each key, and is written as a
    :class:`~minibatch_rx.journal.PartedState`: a small base, and one part per
    key, of which a checkpoint writes those changed since the last one written.
    As a mapping it is what a restore reads: ``{'base': ..., 'parts': {id: ...}}``."""

    __slots__ = ("_base", "_core", "_delta", "_depth", "_keys", "_parent", "_parts")
    _depth: int

    def __init__(self, core: PatternCore) -> None:
        self._core = core
        # The keys' states, as the keys touched since the previous snapshot on top of it
        # (most steps touch one key of thousands), or in full every CHAIN snapshots.
        parent = core.captured
        self._keys: dict[Key, tuple[Any, ...]] | None = None
        self._delta: dict[Key, tuple[Any, ...] | None] | None = None
        self._parent: Snapshot | None = None
        if parent is None or parent._depth >= CHAIN:
            self._keys = {}
            for key in core.keys.keys() | core.buffered.keys():
                token = core.key_token(key)
                if token is not IDLE:
                    self._keys[key] = token
            self._depth = 0
        else:
            self._delta = {}
            for key in core.touched:
                token = core.key_token(key)
                self._delta[key] = None if token is IDLE else token
            self._parent = parent
            self._depth = parent._depth + 1
        core.touched.clear()
        core.captured = self
        self._parts: tuple[Any, ...] = (
            core.wm,
            core.eid,
            (core.last_seq, core.rank),
            core.clock.max_time,
            core.clock.last_arrival,
            core.stream,
            core.since,  # (not saved: a flush of the position changes it, so it is journaled)
        )
        self._base: dict[str, Any] | None = None

    def _all_keys(self) -> dict[Key, tuple[Any, ...]]:
        if self._keys is None:
            assert self._parent is not None and self._delta is not None
            keys = dict(self._parent._all_keys())
            for key, state in self._delta.items():
                if state is None:
                    keys.pop(key, None)
                else:
                    keys[key] = state
            self._keys, self._parent = keys, None
        return self._keys

    # -- PartedState ---------------------------------------------------------------
    def base(self) -> dict[str, Any]:
        if self._base is None:
            wm, eid, done, max_time, arrival, stream, _ = self._parts
            self._base = {
                "shape": self._core.auto.shape,
                "pattern": list(self._core.order),
                "stream": stream,
                "wm": _finite(wm),
                "eid": eid,
                "done": list(done),
                "clock": {"max": _finite(max_time), "arrival": _finite(arrival)},
            }
        return self._base

    def tokens(self) -> dict[str, Any]:
        return {_part_id(key): token for key, token in self._all_keys().items()}

    def render(self, part: str) -> dict[str, Any]:
        key = key_from_json(json.loads(part))
        partials, completed, buffered = self._all_keys()[key]
        index = self._core.state_index
        events: dict[int, list[Any]] = {}
        numbered: dict[int, int] = {}
        nodes: list[list[Any]] = []

        def number(node: Path) -> int:
            if node is None:
                return -1
            found = numbered.get(id(node))
            if found is not None:
                return found
            parent = number(node[4])
            message, rank = node[5]
            if node[1] not in events:
                events[node[1]] = [
                    node[1],
                    message.seq,
                    rank,
                    message.ts.timestamp(),
                    encode_value(message.data),
                ]
            numbered[id(node)] = len(nodes)
            nodes.append([node[0], node[1], node[2], parent])
            return len(nodes) - 1

        def save(p: Partial) -> list[Any]:
            return [index[id(p.state)], number(p.path), _finite(p.start_ts), p.start_id, _finite(p.prev_ts)]

        saved = [save(p) for p in partials]
        done = [save(p) for p in completed]
        return {
            "key": key_to_json(key),
            "nodes": nodes,
            "events": list(events.values()),
            "partials": saved,
            "completed": done,
            "buffer": [
                [t, seq, rank, m.ts.timestamp(), encode_value(m.data)] for t, seq, rank, _, m, _ in buffered
            ],
        }

    # -- equality and the mapping a restore reads ----------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Snapshot):
            if self._parts != other._parts:
                return False
            # Taken one after the other, with no key touched in between (a clock step
            # that changed nothing): equal without comparing the keys.
            if (other._parent is self and not other._delta) or (self._parent is other and not self._delta):
                return True
            return self._all_keys() == other._all_keys()
        if isinstance(other, Mapping):
            return dict(self) == dict(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]

    def _mapping(self) -> dict[str, Any]:
        return {"base": self.base(), "parts": {part: self.render(part) for part in self.tokens()}}

    def __getitem__(self, key: str) -> Any:
        return self._mapping()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(("base", "parts"))

    def __len__(self) -> int:
        return 2


IDLE: tuple[Any, ...] = ([], (), ())  # the token of a key with nothing: it is not saved


def _part_id(key: Key) -> str:
    return json.dumps(key_to_json(key), separators=(",", ":"))


def _json_native(value: Any) -> bool:
    """Whether ``value`` comes back from JSON as it is (dicts with str keys, lists,
    str, int, float, bool, None)."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _json_native(v) for k, v in value.items())
    if kind is list:
        return all(_json_native(v) for v in value)
    return kind in (str, int, float, bool) or value is None


class Unsavable(ValueError):
    """A record value the checkpoint cannot hold (see :func:`encode_value`)."""


def encode_value(value: Any) -> Any:
    """A record's value for a checkpoint, as JSON that :func:`decode_value` turns
    back into the very same value: as it is when JSON keeps it unchanged (a
    stream's payload), else tagged (``[1, ...]``): what a stage before the match
    may make besides JSON (tuples, sets, dicts with other keys, datetimes, dates,
    bytes, decimals). Anything else raises :class:`Unsavable` (values are never saved
    in a form that could run code when read back)."""
    if _json_native(value):
        return [0, value]
    return [1, _tagged(value)]


def _tagged(value: Any) -> Any:
    kind = type(value)
    if kind in (str, int, float, bool) or value is None:
        return value
    if kind is list:
        return [_tagged(v) for v in value]
    if kind is dict:
        if all(type(k) is str for k in value):
            return {"d": {k: _tagged(v) for k, v in value.items()}}
        return {"m": [[_tagged(k), _tagged(v)] for k, v in value.items()]}
    if kind is tuple:
        return {"t": [_tagged(v) for v in value]}
    if kind in (set, frozenset):
        return {"s" if kind is set else "f": [_tagged(v) for v in value]}
    if kind is datetime:
        return {"dt": value.isoformat()}
    if kind is date:
        return {"da": value.isoformat()}
    if kind is bytes:
        return {"b": base64.b64encode(value).decode("ascii")}
    if kind is Decimal:
        return {"dec": str(value)}
    raise Unsavable(
        f"a value of type {kind.__name__} cannot be saved in the pattern's checkpoint; make the "
        "stage before match produce JSON-like values (dicts, lists, str, numbers, bool, None), "
        "tuples, sets, datetimes, dates, bytes or decimals"
    )


def _untagged(saved: Any) -> Any:
    if isinstance(saved, list):
        return [_untagged(v) for v in saved]
    if not isinstance(saved, dict):
        return saved
    ((tag, body),) = saved.items()
    if tag == "d":
        return {k: _untagged(v) for k, v in body.items()}
    if tag == "m":
        return {_untagged(k): _untagged(v) for k, v in body}
    if tag == "t":
        return tuple(_untagged(v) for v in body)
    if tag in ("s", "f"):
        items = (_untagged(v) for v in body)
        return set(items) if tag == "s" else frozenset(items)
    if tag == "dt":
        return datetime.fromisoformat(body)
    if tag == "da":
        return date.fromisoformat(body)
    if tag == "b":
        return base64.b64decode(body)
    return Decimal(body)


def decode_value(saved: Any) -> Any:
    """The value :func:`encode_value` saved."""
    kind, value = saved
    return value if kind == 0 else _untagged(value)


def completed_of(run: Run) -> tuple[Partial, ...]:
    return tuple(run.completed) if run.completed else ()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
