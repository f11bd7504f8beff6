"""Window strategies as reactivex operators: ``Observable[Message] -> Observable[Window]``.

Each strategy lives in its own module and takes time from a reactivex
scheduler, so a ``TestScheduler`` drives it in virtual time. Each factory
returns a :class:`WindowOperator`, usable in ``observable.pipe(...)``; time
windows also expose a ``late`` observable of messages that missed their window.
"""

from minibatch_rx.windows._engine import Journal, ReadProgress, Resume, WindowCore, WindowOperator
from minibatch_rx.windows.count import count_window
from minibatch_rx.windows.fixed_time import fixed_time_window
from minibatch_rx.windows.relaxed_time import relaxed_time_window
from minibatch_rx.windows.session import session_window
from minibatch_rx.windows.sliding import sliding_window

__all__ = [
    "Journal",
    "ReadProgress",
    "Resume",
    "WindowCore",
    "WindowOperator",
    "count_window",
    "fixed_time_window",
    "relaxed_time_window",
    "session_window",
    "sliding_window",
]
