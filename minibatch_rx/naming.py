"""Names a pipeline gets without being told: its consumer, its steps.

A consumer name keys a position in the store, so it must not change with
how a program is started (``python app.py`` names the module ``__main__``,
an import names it ``app``): names here come from qualified names and the
pipeline's shape only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from minibatch_rx.errors import InvalidArgumentError, InvalidStreamNameError
from minibatch_rx.validation import check_stream_name

MAX_CONSUMER_NAME = 150
JOURNAL_PREFIX = "_mb.windows."
STAGE_PREFIX = "_mb.stages."


def journal_name(stream: str, owner: str) -> str:
    """The window journal stream of ``owner`` (a consumer or group) reading ``stream``.

    >>> journal_name('readings', 'aggregator')
    '_mb.windows.aggregator.readings'
    """
    try:
        return check_stream_name(f"{JOURNAL_PREFIX}{owner}.{stream}")
    except InvalidStreamNameError:  # an owner name with characters streams may not use
        digest = hashlib.sha1(f"{owner}\0{stream}".encode()).hexdigest()[:20]
        return f"{JOURNAL_PREFIX}{digest}"


def stage_stream_name(stream: str, owner: str, hop: int, shape: Sequence[str]) -> str:
    """The stream carrying the values of ``owner``'s pipeline over ``stream``
    into its window number ``hop`` (from 1); ``shape``: the pipeline's steps
    before it, whose digest ends the name.

    >>> stage_stream_name('readings', 'floors', 1, ['count_window(2)', 'map:mean'])
    '_mb.stages.floors.1.readings.0cc4f850'
    """
    digest = hashlib.sha1("|".join(shape).encode()).hexdigest()[:8]
    try:
        return check_stream_name(f"{STAGE_PREFIX}{owner}.{hop}.{stream}.{digest}")
    except InvalidStreamNameError:  # an owner name with characters streams may not use
        digest = hashlib.sha1(f"{owner}\0{hop}\0{stream}\0{digest}".encode()).hexdigest()[:20]
        return f"{STAGE_PREFIX}{digest}"


def function_name(fn: object) -> str:
    """A stable name for a user function: its qualified name, never its module.

    >>> function_name(len), function_name(lambda w: w)
    ('len', '<lambda>')
    """
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def label(kind: str, *args: object) -> str:
    """A step's label, its arguments left out where they are defaults.

    >>> label('fixed_time_window', '5s', 0, False)
    'fixed_time_window(5s)'
    """
    shown = [str(a) for a in args if a is not None and a is not False and a != 0]
    return f"{kind}({','.join(shown)})"


def consumer_name(shape: Sequence[str]) -> str:
    """The default consumer name of a pipeline of these steps (shortened with a
    digest past :data:`MAX_CONSUMER_NAME` characters).

    >>> consumer_name(['count_window(2)', 'map:total', 'sink:means'])
    'count_window(2)|map:total|sink:means'
    """
    name = "|".join(shape) or "default"
    if len(name) > MAX_CONSUMER_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f"{name[:MAX_CONSUMER_NAME - 13]}~{digest}"
    return name


def check_consumer(consumer: object) -> None:
    """Refuse a consumer name that is not a non-empty ``str`` (``run(2)``
    would otherwise take 2 as a name)."""
    if consumer is not None and (not isinstance(consumer, str) or not consumer):
        raise InvalidArgumentError(
            f"consumer must be a non-empty str naming the position, got {consumer!r}"
            + (" (did you mean max_windows=...?)" if isinstance(consumer, int) else "")
        )
