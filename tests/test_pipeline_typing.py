"""Values flowing through a pipeline are typed: ``Pipeline[T]``, ``Window[T]``.

A snippet is checked with ``mypy --strict``: ``assert_type`` pins what each
fluent call gives, and a function that cannot take the values flowing at
its stage is reported on its line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import mypy_errors

pytestmark = pytest.mark.timeout(300)

SNIPPET = '''
from typing import Any, assert_type

from minibatch_rx import Message, Pipeline, Window, stream


def parse(m: Message) -> dict[str, float]:
    return {"room": 1.0, "t": float(m.data["t"])}


def mean(w: Window[dict[str, float]]) -> float:
    return sum(d["t"] for d in w.data) / len(w)


s = stream("typing", "memory://typing")
assert_type(s.count_window(2), Pipeline[Window[dict[str, Any]]])
assert_type(s.map(parse), Pipeline[dict[str, float]])
windows = s.map(parse).key_by("room").fixed_time_window("1m")
assert_type(windows, Pipeline[Window[dict[str, float]]])
means = windows.map(mean)
assert_type(means, Pipeline[float])
assert_type(means.filter(lambda v: v > 0).sink(print), Pipeline[float])
assert_type(s.filter(lambda m: m.seq > 1).count_window(3), Pipeline[Window[dict[str, Any]]])
assert_type(means.count_window(2).map(lambda w: w.data), Pipeline[list[float]])
wrong = windows.map(len).map(mean)  # len gives int: mean cannot take it (line 25)
'''


def test_pipeline_values_are_typed_for_mypy_strict(tmp_path: Path) -> None:
    errors, output = mypy_errors(SNIPPET, tmp_path)
    assert len(errors) == 1, output
    assert errors[0].startswith("snippet.py:25:") and "Callable[[int], float]" in errors[0], output
