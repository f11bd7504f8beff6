"""Waiting on a condition in tests: a bounded poll, never a sleep standing for a result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Return once ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    tick = threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        tick.wait(0.01)
