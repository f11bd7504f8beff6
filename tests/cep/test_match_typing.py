"""Matches are typed: ``.match(pattern)`` gives ``Pipeline[Match[D]]``, D being what
the pattern sees (a stream's payloads, or what a stage before it made)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import mypy_errors  # tests/ is on the path (conftest.py)

pytestmark = pytest.mark.timeout(300)

SNIPPET = """
from typing import Any, assert_type

from minibatch_rx import Message, Pipeline, stream
from minibatch_rx.cep import Match, Pattern


def reading(m: Message) -> tuple[str, float]:
    return (str(m.data["room"]), float(m.data["t"]))


def alert(m: Match[dict[str, Any]]) -> str:
    return f"{m.key}: {len(m.events)}"


hot = Pattern.begin("hot").where(lambda e: e["t"] > 30).times(3)
s = stream("typing", "memory://typing")
assert_type(s.match(hot), Pipeline[Match[dict[str, Any]]])
assert_type(s.key_by("room").match(hot).map(alert), Pipeline[str])
assert_type(s.map(reading).match(hot), Pipeline[Match[tuple[str, float]]])
assert_type(s.match(hot).map(lambda m: m.start), Pipeline[float | None])
wrong = s.map(reading).match(hot).map(alert)  # matches of tuples: alert cannot take them (line 22)
"""


def test_matches_are_typed_for_mypy_strict(tmp_path: Path) -> None:
    errors, output = mypy_errors(SNIPPET, tmp_path)
    assert len(errors) == 1, output
    assert errors[0].startswith("snippet.py:22:") and "Callable[[Match[dict[str, Any]]], str]" in errors[0], (
        output
    )
