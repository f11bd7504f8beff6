"""Helpers shared by the pipeline tests (acknowledgement/resumption, failures)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from minibatch_rx import Stream, stream
from minibatch_rx.store import Store


def values(s: Stream) -> list[dict[str, Any]]:
    """The payloads of every message in ``s``, in order."""
    return [m.data for m in s.read()]


def seeded(url: str, n: int) -> Stream:
    """Stream ``in`` at ``url`` holding ``{"v": 1}`` .. ``{"v": n}``."""
    s = stream("in", url)
    s.extend([{"v": i} for i in range(1, n + 1)])
    return s


def seeded_values(url: str, values: list[int], name: str = "test") -> Stream:
    """Stream ``name`` at ``url`` holding ``{"value": v}`` for each of ``values``."""
    s = Stream.get_or_create(name, url=url)
    s.extend([{"value": v} for v in values])
    return s


@contextmanager
def failing_dead_letters(store: Store) -> Iterator[Store]:
    """While open, every append of ``store`` to a ``*.dead`` stream raises ``OSError``."""
    real_append = store.append

    def append(
        stream: str, payloads: Sequence[Mapping[str, Any]], keys: Sequence[str | None] | None = None
    ) -> list[int]:
        if stream.endswith(".dead"):
            raise OSError("dead-letter store is full")
        return real_append(stream, payloads, keys)

    store.append = append  # type: ignore[method-assign]
    try:
        yield store
    finally:
        store.append = real_append  # type: ignore[method-assign]


def mypy_errors(snippet: str, folder: Path) -> tuple[list[str], str]:
    """The ``mypy --strict`` errors of ``snippet`` (a user's file importing the
    package from this checkout), and mypy's whole output for the failure message."""
    (folder / "snippet.py").write_text(snippet)
    env = {**os.environ, "MYPYPATH": str(Path(__file__).resolve().parent.parent)}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(folder / "cache"),
         "--config-file", "", "snippet.py"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=240,
    )
    return [line for line in result.stdout.splitlines() if line.startswith("snippet.py:")], result.stdout
