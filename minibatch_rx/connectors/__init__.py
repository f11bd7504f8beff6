"""Connectors: bridges that bring outside data into streams, and sinks that
send a pipeline's values out. Each lives in its own module and needs its
optional extra:

* :mod:`minibatch_rx.connectors.kafka` — ``pip install 'minibatch_rx[kafka]'``
* :mod:`minibatch_rx.connectors.mqtt` — ``pip install 'minibatch_rx[mqtt]'``
* :mod:`minibatch_rx.connectors.mongodb` — MongoDB collections (pymongo, a core dependency)

Importing a connector whose extra is missing raises :class:`MissingExtraError`
naming the ``pip install`` to run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from minibatch_rx.errors import MinibatchError

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(MinibatchError, ImportError):
    """A connector's optional dependency is not installed."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` for the connector ``what``, or say which extra installs it.

    >>> require('json', 'none', 'a doctest').__name__
    'json'
    >>> try:
    ...     require('no_such_module_here', 'kafka', 'the Kafka connector')
    ... except MissingExtraError as exc:
    ...     print(exc)
    the Kafka connector needs no_such_module_here: pip install 'minibatch_rx[kafka]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{what} needs {module}: pip install 'minibatch_rx[{extra}]'"
        ) from exc
