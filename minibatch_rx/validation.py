"""Checks applied to user input before anything reaches a store.

Payloads must be portable between every backend, so the accepted values are
the intersection of JSON and BSON: ``None``, ``bool``, 64-bit ``int``, finite
``float``, ``str``, and lists/tuples/dicts of those, with ``str`` keys.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from minibatch_rx.errors import InvalidPayloadError, InvalidStreamNameError

MAX_STREAM_NAME = 200
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
        _check_mapping(payload)
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


def _check_mapping(value: Mapping[Any, Any]) -> None:
    for key, item in value.items():
        if type(key) is not str and not isinstance(key, str):
            raise _Invalid(f"key {key!r} is a {type(key).__name__}; keys must be str")
        if key[:1] == "$" or "\x00" in key:
            raise _Invalid(f"key {key!r} may not start with '$' or contain NUL")
        kind = type(item)
        # The common cases, checked without a call.
        if kind is str or kind is bool or item is None:
            continue
        if kind is float and _finite(item):
            continue
        if kind is int and _INT64[0] <= item <= _INT64[1]:
            continue
        try:
            _check_value(item)
        except _Invalid as invalid:
            invalid.path.append(f"[{key!r}]")
            raise


def _check_value(value: object) -> None:
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
    if isinstance(value, Mapping):
        _check_mapping(value)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str or kind is bool or item is None or (kind is float and _finite(item)):
                continue
            try:
                _check_value(item)
            except _Invalid as invalid:
                invalid.path.append(f"[{index}]")
                raise
        return
    raise _Invalid(f"{type(value).__name__} is not JSON/BSON-compatible")


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=json_default)
