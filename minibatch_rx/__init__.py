"""minibatch_rx: Python stream processing for humans.

Durable named streams, mini-batch windows as ReactiveX operators, and
fluent multi-stage pipelines on SQLite (default), MongoDB or memory.

>>> from minibatch_rx import stream
>>> s = stream('doc-init', url='memory://doc')
>>> s.append({'hello': 'world'})
1
"""

from minibatch_rx.compat import (
    CountWindow,
    FixedTimeWindow,
    RelaxedTimeWindow,
    WindowEmitter,
    streaming,
)
from minibatch_rx.errors import (
    CompatibilityError,
    InvalidArgumentError,
    InvalidPayloadError,
    InvalidStreamNameError,
    InvalidURLError,
    LeaseExpiredError,
    MinibatchError,
    PayloadTooLargeError,
    ReadOnlyStoreError,
    StageTimeoutError,
    StoreAuthenticationError,
    StoreBusyError,
    StoreFullError,
    StoreOpenError,
    StoreUnavailableError,
)
from minibatch_rx.message import Message
from minibatch_rx.pipeline import Pipeline
from minibatch_rx.running import PipelineHandle
from minibatch_rx.store import open_store, resolve_url
from minibatch_rx.streams import ConsumerInfo, Stream, list_streams, stream
from minibatch_rx.usage import PipelineNeverRunWarning
from minibatch_rx.window import Window
from minibatch_rx.windows import (
    count_window,
    fixed_time_window,
    relaxed_time_window,
    session_window,
    sliding_window,
)

__version__ = "0.1.0"

__all__ = [
    "CompatibilityError",
    "ConsumerInfo",
    "CountWindow",
    "FixedTimeWindow",
    "InvalidArgumentError",
    "InvalidPayloadError",
    "InvalidStreamNameError",
    "InvalidURLError",
    "LeaseExpiredError",
    "Message",
    "MinibatchError",
    "PayloadTooLargeError",
    "Pipeline",
    "PipelineHandle",
    "PipelineNeverRunWarning",
    "ReadOnlyStoreError",
    "RelaxedTimeWindow",
    "StageTimeoutError",
    "StoreAuthenticationError",
    "StoreBusyError",
    "StoreFullError",
    "StoreOpenError",
    "StoreUnavailableError",
    "Stream",
    "Window",
    "WindowEmitter",
    "count_window",
    "fixed_time_window",
    "list_streams",
    "open_store",
    "relaxed_time_window",
    "resolve_url",
    "session_window",
    "sliding_window",
    "stream",
    "streaming",
]
