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
