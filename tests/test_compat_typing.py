"""``@streaming`` is typed: under ``mypy --strict`` a typed window function
type-checks, and a function that cannot take a Window is reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent

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
    (tmp_path / "snippet.py").write_text(SNIPPET)
    env = {**os.environ, "MYPYPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
         "--config-file", "", "snippet.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    # The library's own files are checked by the project's mypy run; here, the snippet.
    errors = [line for line in result.stdout.splitlines() if line.startswith("snippet.py:")]
    # Exactly one error: the function taking an int; nothing "untyped".
    assert len(errors) == 1, result.stdout
    assert errors[0].startswith("snippet.py:20:") and "Window" in errors[0], result.stdout
