"""Parsing of intervals: seconds, ``timedelta`` or strings like ``'500ms'``."""

from __future__ import annotations

import math
import re
from datetime import timedelta

from minibatch_rx.errors import InvalidArgumentError

Interval = float | int | timedelta | str
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TEXT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*")


def to_seconds(value: Interval, name: str = "interval", *, allow_zero: bool = False) -> float:
    """``value`` in seconds; raises :class:`InvalidArgumentError` if invalid.

    >>> to_seconds('500ms'), to_seconds('1m'), to_seconds(timedelta(seconds=2)), to_seconds(3)
    (0.5, 60.0, 2.0, 3.0)
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be seconds, a timedelta or a string, got {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range: an error of ours, not an OverflowError
            raise InvalidArgumentError(f"{name} is too large to be a number of seconds") from None
    elif isinstance(value, str):
        match = _TEXT.fullmatch(value)
        if not match:
            raise InvalidArgumentError(
                f"{name} {value!r} is not an interval; write e.g. '500ms', '5s', '1m', '2h' or '1d'"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise InvalidArgumentError(
            f"{name} must be seconds, a timedelta or a string like '5s', got {type(value).__name__}"
        )
    if not math.isfinite(seconds):
        raise InvalidArgumentError(f"{name} must be a finite number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(f"{name} must be {bound}, got {value!r}")
    return seconds


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an int > 0, else :class:`InvalidArgumentError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidArgumentError(f"{name} must be an int > 0, got {value!r}")
    return value
