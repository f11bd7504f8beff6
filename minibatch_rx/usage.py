"""Catching a pipeline that is built and never run.

Every fluent call returns a new :class:`~minibatch_rx.pipeline.Pipeline`;
the ones a call was made on are steps. A pipeline that is neither a step nor
run, when garbage-collected, was almost always meant to be run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


class PipelineNeverRunWarning(UserWarning):
    """A pipeline was built and garbage-collected without ever running:
    almost always a missing ``.run()``."""


@dataclass
class Usage:
    """What became of one pipeline value."""

    derived: bool = False
    """A fluent call was made on it: it is a step of a longer pipeline."""
    ran: bool = False
    """``run()``, ``start()`` or ``to_observable()`` was called on it."""


def fluent(method: F) -> F:
    """Mark the pipeline a fluent call is made on as a step (even if the call
    then refuses its arguments): only the last pipeline of a chain is run.
    The method's signature (and its generic types) is kept."""

    def call(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        self._usage.derived = True
        return method(self, *args, **kwargs)

    functools.update_wrapper(call, method)
    return cast(F, call)
