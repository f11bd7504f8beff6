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

**States in parts.** A large state (a pattern's partial matches, per key) is a
:class:`PartedState`: a small base plus parts. A checkpoint then writes only
the parts changed since the last one written (``part`` records, with the
checkpoint record in the same batch); every so often, or once the parts
written since exceed twice the live ones, all of them (a *full* checkpoint).
Loading applies, in journal order, the parts from the newest full checkpoint
up to the newest checkpoint. So each commit writes what changed, and each
record holds one part (a key's state), never the whole state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from minibatch_rx.errors import LeaseExpiredError
from minibatch_rx.naming import journal_name
from minibatch_rx.resilience import until_reachable
from minibatch_rx.store.base import Store
from minibatch_rx.windows import Resume

log = logging.getLogger(__name__)


FULL_EVERY = 64  # checkpoints between two full ones (at most)


@runtime_checkable
class PartedState(Protocol):
    """A state saved as a base and parts, of which a checkpoint writes the changed ones."""

    def base(self) -> Any:
        """The JSON state besides the parts."""
        ...

    def tokens(self) -> Mapping[str, Any]:
        """Part id -> a value equal (``==``) to the previous token iff the part is unchanged."""
        ...

    def render(self, part: str) -> Any:
        """The JSON form of one part."""
        ...


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
        self.parts_written: dict[str, Any] | None = None  # tokens of the parts last written
        self.full_from = 0  # journal seq of the newest full checkpoint's first record (parted states)
        self.since_full = 0  # part records written since
        self.fence: Callable[[], bool] | None = None  # see record_clock

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
        full_from, parted, checkpoint_seq = 0, False, 0
        for record in records:  # in journal order: the last checkpoint written wins
            if record.data["kind"] == "checkpoint":
                state, included = record.data["state"], int(record.data["clock"])
                saved_at = int(record.data.get("position", 0))
                self.checkpoint_seq = checkpoint_seq = record.seq
                parted = bool(record.data.get("parted"))
                if record.data.get("full"):  # its batch begins with its own parts
                    event = int(record.data["event"])
                    full_from = min((r.seq for r in records if r.data["kind"] == "part"
                                     and int(r.data["event"]) == event), default=record.seq)
        if parted:
            parts: dict[str, Any] = {}
            for record in records:
                if record.data["kind"] == "part" and full_from <= record.seq < checkpoint_seq:
                    if record.data["value"] is None:
                        parts.pop(record.data["id"], None)
                    else:
                        parts[record.data["id"]] = record.data["value"]
            state = {"base": state, "parts": parts}
            self.full_from = full_from
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
        """Note a clock decision before anything it produced leaves the operator.

        With a :attr:`fence` that is false (a group's partition run whose lease may
        have run out), raises :class:`~minibatch_rx.errors.LeaseExpiredError` instead:
        the decision must not reach the journal, nor its windows a sink."""
        if self.fence is not None and not self.fence():
            raise LeaseExpiredError(f"consumer {self.owner!r} of {self.stream!r}: its lease may have run "
                                    "out; the clock decision is not taken")
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
        record = {"kind": "checkpoint", "event": event, "clock": int(checkpoint["clock"]),
                  "state": checkpoint["state"], "position": position, "strategy": self.strategy}
        state = checkpoint["state"]
        if isinstance(state, PartedState):
            self.checkpoint_seq = self._parted(record, state, event)
        else:
            self.checkpoint_seq = self._append(record)
        self.written_event = event
        self.included = int(checkpoint["clock"])

    def _parted(self, record: dict[str, Any], state: PartedState, event: int) -> int:
        """Write the changed parts and the checkpoint in one batch; its journal seq."""
        tokens = dict(state.tokens())
        last = self.parts_written
        full = last is None or self.since_full >= max(FULL_EVERY, 2 * len(tokens))
        if full or last is None:
            changed, gone = list(tokens), []
        else:
            changed = [part for part, token in tokens.items() if part not in last or last[part] != token]
            gone = [part for part in last if part not in tokens]
        strategy = self.strategy
        batch: list[dict[str, Any]] = [
            {"kind": "part", "id": part, "value": state.render(part), "event": event, "strategy": strategy}
            for part in changed
        ]
        batch += [{"kind": "part", "id": part, "value": None, "event": event, "strategy": strategy}
                  for part in gone]
        record.update(state=state.base(), parted=True, full=full)
        batch.append(record)
        seqs: list[int] = until_reachable(lambda: self.store.append(self.name, batch), self.outage_timeout)
        if full:
            self.full_from, self.since_full = seqs[0], 0
        else:
            self.since_full += len(batch) - 1
        self.parts_written = tokens
        return seqs[-1]

    def prune(self) -> None:
        """Drop the records the newest checkpoint (now committed) made obsolete:
        older checkpoints, and the clock decisions it includes. A clock decision
        it does not include (one for a window still in flight) is kept, and so
        is everything written after it."""
        upto = self.checkpoint_seq - 1
        if self.parts_written is not None or self.full_from:
            upto = min(upto, self.full_from - 1)  # the parts since the full checkpoint are the state
        newer = [seq for event, seq in self.clock_seqs if event > self.included]
        if newer:
            upto = min(upto, min(newer) - 1)
        self.clock_seqs = [(event, seq) for event, seq in self.clock_seqs if seq > upto]
        if upto > self.trimmed:
            until_reachable(lambda: self.store.trim(self.name, upto), self.outage_timeout)
            self.trimmed = upto
