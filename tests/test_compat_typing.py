"""``@streaming`` is typed: under ``mypy --strict`` a typed window function
type-checks, and a function that cannot take a Window is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import mypy_errors

pytestmark = pytest.mark.timeout(300)

SNIPPET = '''
from minibatch_rx import PipelineHandle, Window, streaming


@streaming("s", size=2, keep=True, url="memory://typing", max_windows=1)
def total(window: Window) -> int:
    return sum(d["v"] for d in window.data)


def show(window: Window) -> None:
    print(window.data)


handle: PipelineHandle = total
direct: PipelineHandle = streaming("s", show, interval=1.5, blocking=False)
later = streaming("s", emitter=None, relaxed=False, interval="2s")
again: PipelineHandle = later(show)


@streaming("s", size=2)
def wrong(window: int) -> None:  # not a window function: reported on the decorator line
    print(window)
'''


def test_streaming_is_typed_for_mypy_strict(tmp_path: Path) -> None:
    errors, output = mypy_errors(SNIPPET, tmp_path)
    # The library's own files are checked by the project's mypy run; here, the snippet.
    # Exactly one error: the function taking an int; nothing "untyped".
    assert len(errors) == 1, output
    assert errors[0].startswith("snippet.py:20:") and "Window" in errors[0], output
