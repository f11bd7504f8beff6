"""The immutable records that flow through minibatch_rx: :class:`Message`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a stream, as stored.

    Attributes:
        stream: name of the stream the message belongs to.
        seq: position in the stream, assigned by the store at append time.
            Strictly increasing per stream and never reused.
        ts: ingest time, timezone-aware UTC.
        data: the payload, a dict of JSON-compatible values.

    Example:
        >>> from datetime import datetime, timezone
        >>> m = Message('orders', 1, datetime(2026, 1, 1, tzinfo=timezone.utc), {'qty': 2})
        >>> m.data['qty']
        2
    """

    stream: str
    seq: int
    ts: datetime
    data: dict[str, Any]

    def __init__(self, stream: str, seq: int, ts: datetime, data: dict[str, Any]) -> None:
        # One message is made per stored message read: the slots are set through
        # their descriptors, as the frozen dataclass's own __init__ would do
        # through object.__setattr__, at about half the cost.
        _set_stream(self, stream)
        _set_seq(self, seq)
        _set_ts(self, ts)
        _set_data(self, data)


# The slot descriptors of the class ``dataclass(slots=True)`` made (it replaces the class).
_set_stream = Message.__dict__["stream"].__set__
_set_seq = Message.__dict__["seq"].__set__
_set_ts = Message.__dict__["ts"].__set__
_set_data = Message.__dict__["data"].__set__
