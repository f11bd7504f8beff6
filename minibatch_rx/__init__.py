"""minibatch_rx: Python stream processing for humans.

Durable named streams, mini-batch windows as ReactiveX operators, and
fluent multi-stage pipelines on SQLite (default), MongoDB or memory.

>>> from minibatch_rx import stream
>>> s = stream('doc-init', url='memory://doc')
>>> s.append({'hello': 'world'})
1
"""

from minibatch_rx.errors import (
    InvalidArgumentError,
    InvalidPayloadError,
    InvalidStreamNameError,
    InvalidURLError,
    MinibatchError,
    StoreBusyError,
    StoreUnavailableError,
)
from minibatch_rx.message import Message
from minibatch_rx.store import open_store, resolve_url
from minibatch_rx.stream import Stream, list_streams, stream

__version__ = "0.1.0"

__all__ = [
    "InvalidArgumentError",
    "InvalidPayloadError",
    "InvalidStreamNameError",
    "InvalidURLError",
    "Message",
    "MinibatchError",
    "StoreBusyError",
    "StoreUnavailableError",
    "Stream",
    "list_streams",
    "open_store",
    "resolve_url",
    "stream",
]
