"""Storage backends and how a URL picks one.

``open_store(url)`` returns one shared store object per URL in this process:

* ``memory://NAME``: in-process (tests, virtual time);
* ``sqlite:///path/file.db``: the embedded default;
* ``mongodb://...`` / ``mongodb+srv://...``: MongoDB through pymongo.

With no URL the environment decides (see :func:`resolve_url`).
"""

from __future__ import annotations

import importlib
import threading

from minibatch_rx.store.base import (
    Backoff,
    ChangeWatch,
    Leases,
    Log,
    Notifier,
    Positions,
    Reader,
    Store,
    Watchable,
    notifier,
)
from minibatch_rx.store.memory import MemoryStore
from minibatch_rx.store.url import BACKENDS, default_path, redact, register_backend, resolve_url, scheme_of

__all__ = [
    "Backoff",
    "ChangeWatch",
    "Leases",
    "Log",
    "MemoryStore",
    "Notifier",
    "Positions",
    "Reader",
    "Store",
    "Watchable",
    "close_all",
    "default_path",
    "notifier",
    "open_store",
    "redact",
    "register_backend",
    "resolve_url",
]

_stores: dict[str, Store] = {}
_lock = threading.Lock()


def open_store(url: str | None = None) -> Store:
    """The store for ``url`` (resolved as :func:`resolve_url` does), shared per process.

    >>> open_store('memory://doc') is open_store('memory://doc')
    True
    """
    resolved = resolve_url(url)
    with _lock:
        store = _stores.get(resolved)
        if store is None:
            store = _stores[resolved] = _create(resolved)
        return store


def _create(url: str) -> Store:
    module, _, name = BACKENDS[scheme_of(url)].partition(":")
    store: Store = getattr(importlib.import_module(module), name)(url)
    return store


def close_all() -> None:
    """Close every store opened by :func:`open_store` (memory stores are dropped)."""
    from minibatch_rx.source import close_hub  # (the reading side imports this package)

    with _lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        close_hub(store)  # its subscribers are told, its threads end
        store.close()
