"""Checks applied to user input before anything reaches a store.

Payloads must be portable between every backend, so the accepted values are
the intersection of JSON and BSON: ``None``, ``bool``, 64-bit ``int``, finite
``float``, ``str``, and lists/tuples/dicts of those, with ``str`` keys.

Two limits keep every payload storable everywhere: at most :data:`MAX_DEPTH`
levels of nested dicts/lists (the payload itself is level 1), and no surrogate
code points (``'\\ud800'`` and the like) in keys or strings, since they are not
valid UTF-8 and MongoDB refuses them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from minibatch_rx.errors import InvalidPayloadError, InvalidStreamNameError

MAX_STREAM_NAME = 200
MAX_DEPTH = 64
"""Most levels of nested dicts/lists in a payload (the payload dict is level 1).
MongoDB stores at most 100; the library wraps a payload in a few levels of its
own (the message document, a dead letter's list of payloads), so 64 leaves room."""
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:\-]*")
_INT64 = (-(2**63), 2**63 - 1)
_SCALARS = (str, bool, type(None))
_finite = math.isfinite


def check_stream_name(name: object) -> str:
    """Return ``name`` if it is a legal stream name, else raise.

    Legal names are 1 to 200 characters of letters, digits, ``_``, ``.``,
    ``:`` and ``-``, not starting with ``.``, ``:`` or ``-``.

    >>> check_stream_name('sensor.readings')
    'sensor.readings'
    """
    if not isinstance(name, str):
        raise InvalidStreamNameError(
            f"stream name must be a str, got {type(name).__name__}: {name!r}"
        )
    if not name:
        raise InvalidStreamNameError("stream name must not be empty")
    if len(name) > MAX_STREAM_NAME:
        raise InvalidStreamNameError(
            f"stream name {name[:40]!r}... is {len(name)} characters; "
            f"the limit is {MAX_STREAM_NAME}"
        )
    if not _NAME.fullmatch(name):
        raise InvalidStreamNameError(
            f"stream name {name!r} is not allowed: use letters, digits, '_', '.', "
            "':' and '-', starting with a letter, digit or '_'"
        )
    return name


def check_payload(payload: object) -> dict[str, Any]:
    """Return ``payload`` if it is a dict of JSON/BSON-compatible values, else raise.

    The error names the key path and the offending type:

    >>> check_payload({'a': [1, 2.5, 'x', None]})
    {'a': [1, 2.5, 'x', None]}
    >>> check_payload({'a': {1, 2}})
    Traceback (most recent call last):
    ...
    minibatch_rx.errors.InvalidPayloadError: payload['a']: set is not JSON/BSON-compatible
    """
    if not isinstance(payload, Mapping):
        raise InvalidPayloadError(
            f"payload must be a dict, got {type(payload).__name__}"
        )
    try:
        _check_mapping(payload, 1)
    except _Invalid as invalid:
        path = "payload" + "".join(reversed(invalid.path))
        raise InvalidPayloadError(f"{path}: {invalid.problem}") from None
    return payload  # type: ignore[return-value]


def encode_json(payload: Mapping[str, Any]) -> str:
    """A checked payload as compact JSON (one shared encoder: no set-up per call)."""
    return _ENCODER.encode(payload)


def json_default(value: object) -> dict[str, Any]:
    """``json.dumps`` hook: encode any accepted ``Mapping`` (not only ``dict``) as an object.

    >>> import json, types
    >>> json.dumps({'a': types.MappingProxyType({'b': 1})}, default=json_default)
    '{"a": {"b": 1}}'
    """
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON-compatible")


class _Invalid(Exception):
    """Raised deep inside a payload; each level adds its key on the way out,
    so the path is only built for the error, never for valid data."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _check_mapping(value: Mapping[Any, Any], depth: int) -> None:
    for key, item in value.items():
        if type(key) is not str or key not in _GOOD_KEYS:
            _check_key(key)
        kind = type(item)
        # The common cases, checked without a call.
        if kind is str:
            if item.isascii() or _utf8(item):
                continue
        elif (kind is bool or item is None or (kind is float and _finite(item))
              or (kind is int and _INT64[0] <= item <= _INT64[1])):
            continue
        try:
            _check_value(item, depth + 1)
        except _Invalid as invalid:
            invalid.path.append(f"[{key!r}]")
            raise


def _check_value(value: object, depth: int) -> None:
    """Check one value found at nesting level ``depth``."""
    if isinstance(value, str):
        if not value.isascii() and not _utf8(value):
            raise _Invalid(f"str {_short(value)} {_SURROGATE}")
        return
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Invalid(f"int {value} does not fit in 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(f"float {value} is not finite")
        return
    if isinstance(value, (list, tuple)):
        if depth > MAX_DEPTH:
            raise _Invalid(_TOO_DEEP)
        for index, item in enumerate(value):
            kind = type(item)
            if ((kind is str and item.isascii()) or kind is bool or item is None
                    or (kind is float and _finite(item))):
                continue
            try:
                _check_value(item, depth + 1)
            except _Invalid as invalid:
                invalid.path.append(f"[{index}]")
                raise
        return
    if isinstance(value, Mapping):
        if depth > MAX_DEPTH:
            raise _Invalid(_TOO_DEEP)
        _check_mapping(value, depth)
        return
    raise _Invalid(f"{type(value).__name__} is not JSON/BSON-compatible")


_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels of dicts/lists (the limit, MAX_DEPTH)"
_GOOD_KEYS: set[str] = set()
"""Keys already found valid: most payloads reuse a few keys, and a set lookup
(the hash of a str is cached) is cheaper than checking a key again."""
_GOOD_KEYS_LIMIT = 4096


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise _Invalid(f"key {key!r} is a {type(key).__name__}; keys must be str")
    if key[:1] == "$" or "\x00" in key:
        raise _Invalid(f"key {key!r} may not start with '$' or contain NUL")
    if not key.isascii() and not _utf8(key):
        raise _Invalid(f"key {key!r} {_SURROGATE}")
    if type(key) is str and len(key) <= 64 and len(_GOOD_KEYS) < _GOOD_KEYS_LIMIT:
        _GOOD_KEYS.add(key)


_SURROGATE = "contains a lone surrogate (not valid UTF-8; MongoDB refuses it)"


def _utf8(text: str) -> bool:
    """False if ``text`` holds a surrogate code point (it cannot be UTF-8 encoded)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=json_default)
