"""Window strategies as reactivex operators: ``Observable[Message] -> Observable[Window]``.

Each strategy lives in its own module and takes time from a reactivex
scheduler, so a ``TestScheduler`` drives it in virtual time. Each factory
returns a :class:`WindowOperator`, usable in ``observable.pipe(...)``; time
windows also expose a ``late`` observable of messages that missed their window.
"""

from minibatch_rx.windows._engine import Journal, ReadProgress, Resume, WindowCore, WindowOperator
from minibatch_rx.windows.count import Count, count_window
from minibatch_rx.windows.fixed_time import Tumbling, fixed_time_window
from minibatch_rx.windows.relaxed_time import Relaxed, relaxed_time_window
from minibatch_rx.windows.session import Session, session_window
from minibatch_rx.windows.sliding import Sliding, sliding_window
from minibatch_rx.windows.specs import Custom, WindowSpec

__all__ = [
    "Count",
    "Custom",
    "Journal",
    "ReadProgress",
    "Relaxed",
    "Resume",
    "Session",
    "Sliding",
    "Tumbling",
    "WindowCore",
    "WindowOperator",
    "WindowSpec",
    "count_window",
    "fixed_time_window",
    "relaxed_time_window",
    "session_window",
    "sliding_window",
]
