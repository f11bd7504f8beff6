"""Interval parsing and argument validation shared by every window strategy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from minibatch_rx import (
    InvalidArgumentError,
    MinibatchError,
    count_window,
    fixed_time_window,
    relaxed_time_window,
    session_window,
    sliding_window,
)
from minibatch_rx.durations import positive_int, to_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (2.5, 2.5),
        ("5", 5.0),
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (".25s", 0.25),
        ("3.", 3.0),
        (" 10 s ", 10.0),
        (timedelta(minutes=1, milliseconds=250), 60.25),
    ],
)
def test_to_seconds_accepts_numbers_strings_and_timedeltas(value: Any, seconds: float) -> None:
    assert to_seconds(value) == seconds


def test_to_seconds_allows_zero_only_when_asked() -> None:
    assert to_seconds(0, "grace", allow_zero=True) == 0.0
    assert to_seconds("0ms", "grace", allow_zero=True) == 0.0
    with pytest.raises(InvalidArgumentError, match=r"^interval must be > 0, got 0$"):
        to_seconds(0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "window size must be > 0, got -1"),
        (-0.5, "window size must be > 0, got -0.5"),
        (timedelta(seconds=-1), "window size must be > 0, got datetime.timedelta(days=-1, seconds=86399)"),
        (float("nan"), "window size must be a finite number of seconds, got nan"),
        (float("inf"), "window size must be a finite number of seconds, got inf"),
        pytest.param("9" * 400, "window size must be a finite number of seconds, got '999", id="huge-str"),
        ("5 parsecs",
         "window size '5 parsecs' is not an interval; write e.g. '500ms', '5s', '1m', '2h' or '1d'"),
        ("-5s", "window size '-5s' is not an interval"),
        ("5S", "window size '5S' is not an interval"),
        ("", "window size '' is not an interval"),
        (True, "window size must be seconds, a timedelta or a string, got True"),
        (False, "window size must be seconds, a timedelta or a string, got False"),
        (None, "window size must be seconds, a timedelta or a string like '5s', got NoneType"),
        ([5], "window size must be seconds, a timedelta or a string like '5s', got list"),
        pytest.param(10**400, "window size is too large to be a number of seconds", id="huge-int"),
    ],
)
def test_to_seconds_rejects_bad_values_with_a_helpful_message(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        to_seconds(value, "window size")
    assert isinstance(info.value, InvalidArgumentError)
    assert isinstance(info.value, MinibatchError)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize("value", [1, 7, 10**6])
def test_positive_int_accepts_positive_ints(value: int) -> None:
    assert positive_int(value, "n") == value


@pytest.mark.parametrize("value", [0, -1, "abc", "3", True, False, 2.0, None])
def test_positive_int_rejects_everything_else(value: Any) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        positive_int(value, "batch size")
    assert str(info.value) == f"batch size must be an int > 0, got {value!r}"


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda v: count_window(v), "count_window size n"),
        (lambda v: count_window(2, timeout=v), "count_window timeout"),
        (lambda v: fixed_time_window(v), "fixed_time_window interval"),
        (lambda v: relaxed_time_window(v), "relaxed_time_window interval"),
        (lambda v: session_window(v), "session_window gap"),
        (lambda v: sliding_window(v, 1), "sliding_window size"),
        (lambda v: sliding_window(10, v, by="time"), "sliding_window step"),
    ],
)
@pytest.mark.parametrize("bad", [0, -1, "abc", "5 parsecs", True])
def test_every_strategy_names_the_bad_argument(make: Any, name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=rf"^{name} ") as info:
        make(bad)
    assert isinstance(info.value, InvalidArgumentError)
    assert repr(bad) in str(info.value) or type(bad).__name__ in str(info.value)
