"""A consumer never reads more than its prefetch from the store at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from minibatch_rx import InvalidArgumentError, stream
from minibatch_rx.store.sqlite import SqliteStore


def test_reads_are_bounded_by_prefetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = stream("bp.in", f"sqlite://{tmp_path / 'bp.db'}")
    s.extend({"i": i} for i in range(100))
    sizes: list[int] = []
    original = SqliteStore.read

    def spy(self: SqliteStore, name: str, after: int = 0, limit: int | None = None) -> list:  # type: ignore[type-arg]
        result = original(self, name, after, limit)
        if name == "bp.in":
            sizes.append(len(result))
            assert limit == 7
        return result

    monkeypatch.setattr(SqliteStore, "read", spy)
    handle = s.count_window(10).with_prefetch(7).map(len).sink(lambda n: None).run(
        consumer="bp", max_windows=10)
    assert handle.position == 100
    assert max(sizes) == 7
    assert sum(sizes) >= 100


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_prefetch_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="prefetch"):
        stream("bp.bad", "memory://bp").count_window(2).with_prefetch(bad)  # type: ignore[arg-type]
