"""Assigners: which time windows a record's time belongs to.

Times are whole microseconds (the resolution of ``datetime``): with float
seconds, ``floor(0.6 / 0.1) == 5`` would file a record at exactly 0.6 in the
wrong window.

* :class:`Grid`: windows ``[origin + j*step, origin + j*step + size)``,
  half-open; tumbling when ``step == size``, hopping (sliding) when smaller.
  A record belongs to every window covering it (none, in a gap between
  hopping windows whose step exceeds their size).
* :class:`Gaps`: sessions. A record opens ``[t, t + gap)``; windows of one
  key that overlap merge into one session, which ends ``gap`` after its
  latest record. Windows that only touch (a record exactly ``gap`` after the
  last one) do not merge.

>>> g = Grid(size=10_000_000, step=5_000_000)
>>> list(g.indexes(12_000_000)), g.bounds(2)
([1, 2], (10000000, 20000000))
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Grid:
    """Fixed windows on a grid of ``step`` microseconds, each ``size`` long."""

    size: int
    step: int
    origin: int = 0

    @property
    def overlapping(self) -> bool:
        """True if a record can belong to several windows."""
        return self.step < self.size

    def indexes(self, t: int) -> range:
        """The windows covering time ``t``."""
        return range((t - self.size - self.origin) // self.step + 1, (t - self.origin) // self.step + 1)

    def first_after(self, t: int) -> int:
        """The first window that ends after ``t``."""
        return (t - self.size - self.origin) // self.step + 1

    def bounds(self, index: int) -> tuple[int, int]:
        """``(start, end)`` of window ``index``."""
        start = self.origin + index * self.step
        return start, start + self.size


@dataclass(frozen=True)
class Gaps:
    """Session windows closed by ``gap`` microseconds of silence (per key)."""

    gap: int


Assigner = Grid | Gaps

__all__ = ["Assigner", "Gaps", "Grid"]
