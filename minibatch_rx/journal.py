"""The window journal: what a consumer's window operator decided, kept durably.

A restarted pipeline must cut exactly the windows the crashed one cut (see
``minibatch_rx.windows._engine``). Two kinds of records go into a small
stream of the same store, one per consumer and source stream:

* ``clock``: the clock closed something (``event``, ``after`` seq, ``at``),
  written before any window or late message that decision produced;
* ``checkpoint``: the operator's state after the step that emitted the
  window being committed, the last clock decision that state includes
  (``clock``) and the position it goes with, written just before the
  consumer position. A run stopped between the two leaves the newer state:
  loading it commits its position first (its window was already sunk).

On restart the newest checkpoint is restored and the clock records it does
not include are replayed at their seqs. Records the newest checkpoint made
obsolete are trimmed as positions are committed, so the journal stays a few
records long; a clock record for a window still in flight is never trimmed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from minibatch_rx.naming import journal_name
from minibatch_rx.stages import until_reachable
from minibatch_rx.store.base import Store
from minibatch_rx.windows import Resume

log = logging.getLogger(__name__)


class StreamJournal:
    """A :class:`~minibatch_rx.windows.Journal` in a stream of the source's store."""

    def __init__(self, store: Store, stream: str, owner: str, strategy: str,
                 outage_timeout: float) -> None:
        self.store, self.stream, self.owner, self.strategy = store, stream, owner, strategy
        self.name = journal_name(stream, owner)
        self.outage_timeout = outage_timeout
        self.checkpoint_seq = 0  # journal seq of the newest checkpoint written
        self.included = 0  # the last clock decision that checkpoint includes
        self.clock_seqs: list[tuple[int, int]] = []  # (event, journal seq) of the clock records
        self.trimmed = 0
        self.written_event: int | None = None

    def _append(self, record: Mapping[str, Any]) -> int:
        seqs: list[int] = until_reachable(lambda: self.store.append(self.name, [record]),
                                          self.outage_timeout)
        return seqs[0]

    def load(self) -> Resume:
        """What the operator resumes from: the newest checkpoint, the clock
        decisions it does not include, and the consumer's position."""
        records = until_reachable(lambda: self.store.read(self.name, 0), self.outage_timeout)
        position = until_reachable(lambda: self.store.get_position(self.stream, self.owner),
                                   self.outage_timeout)
        top = max((int(r.data["event"]) for r in records), default=0)
        if any(r.data.get("strategy") != self.strategy for r in records):
            # The pipeline's window changed under the same consumer name: what the old
            # one decided means nothing to the new one. Start afresh (it replays from
            # the committed position like a first run).
            log.warning("consumer %r of stream %r now uses %s; the window decisions its earlier "
                        "runs saved for another strategy are discarded", self.owner, self.stream,
                        self.strategy)
            last = records[-1].seq
            until_reachable(lambda: self.store.trim(self.name, last), self.outage_timeout)
            records = []
        state, included, saved_at = None, 0, 0
        for record in records:  # in journal order: the last checkpoint written wins
            if record.data["kind"] == "checkpoint":
                state, included = record.data["state"], int(record.data["clock"])
                saved_at = int(record.data.get("position", 0))
                self.checkpoint_seq = record.seq
        if saved_at > position:
            # Stopped between the checkpoint and its position: the state belongs
            # to the later position (its window was sunk before either was
            # written), so that position is committed now, as it would have been.
            until_reachable(lambda: self.store.commit_position(self.stream, self.owner, saved_at),
                            self.outage_timeout)
            position = saved_at
        self.clock_seqs = sorted((int(r.data["event"]), r.seq) for r in records
                                 if r.data["kind"] == "clock")
        clock = sorted((int(d["event"]), int(d["after"]), float(d["at"]), d.get("detail"))
                       for d in (r.data for r in records)
                       if d["kind"] == "clock" and int(d["event"]) > included)
        return Resume(state, tuple(clock), top + 1, position, included)

    def record_clock(self, event: int, after: int, at: float, detail: Any = None) -> None:
        """Note a clock decision before anything it produced leaves the operator."""
        record = {"kind": "clock", "event": event, "after": after, "at": at, "strategy": self.strategy}
        if detail is not None:
            record["detail"] = detail
        seq = self._append(record)
        self.clock_seqs.append((event, seq))

    def checkpoint(self, checkpoint: Mapping[str, Any], position: int) -> None:
        """Save the operator state that goes with ``position``, about to be committed."""
        event = int(checkpoint["event"])
        if event == self.written_event:
            return
        self.checkpoint_seq = self._append(
            {"kind": "checkpoint", "event": event, "clock": int(checkpoint["clock"]),
             "state": checkpoint["state"], "position": position, "strategy": self.strategy})
        self.written_event = event
        self.included = int(checkpoint["clock"])

    def prune(self) -> None:
        """Drop the records the newest checkpoint (now committed) made obsolete:
        older checkpoints, and the clock decisions it includes. A clock decision
        it does not include (one for a window still in flight) is kept, and so
        is everything written after it."""
        upto = self.checkpoint_seq - 1
        newer = [seq for event, seq in self.clock_seqs if event > self.included]
        if newer:
            upto = min(upto, min(newer) - 1)
        self.clock_seqs = [(event, seq) for event, seq in self.clock_seqs if seq > upto]
        if upto > self.trimmed:
            until_reachable(lambda: self.store.trim(self.name, upto), self.outage_timeout)
            self.trimmed = upto
