"""Resolving and redacting store URLs, and what a SQLite URL names."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from urllib.parse import parse_qs

from minibatch_rx.errors import InvalidURLError, StoreOpenError

BACKENDS: dict[str, str] = {
    "memory": "minibatch_rx.store.memory:MemoryStore",
    "sqlite": "minibatch_rx.store.sqlite:SqliteStore",
    "mongodb": "minibatch_rx.store.mongodb:MongoStore",
    "mongodb+srv": "minibatch_rx.store.mongodb:MongoStore",
}
"""The one registry of store backends: URL scheme -> ``module:class``, imported when
a store of that scheme is first opened (see :func:`register_backend`)."""


def register_backend(scheme: str, target: str) -> None:
    """Let ``scheme://...`` URLs open a store of class ``target`` (``"module:Class"``,
    a class taking the URL and implementing :class:`~minibatch_rx.store.base.Store`).

    >>> register_backend('memory', 'minibatch_rx.store.memory:MemoryStore')  # as built in
    """
    if not scheme or "://" in scheme or ":" not in target:
        raise InvalidURLError(f"a backend is registered as register_backend('scheme', 'module:Class'), "
                              f"got {scheme!r}, {target!r}")
    BACKENDS[scheme.lower()] = target


def schemes() -> tuple[str, ...]:
    """The URL schemes a store can be opened with."""
    return tuple(BACKENDS)
ENV_VARS = ("MINIBATCH_URL", "MINIBATCH_MONGO_URL", "MONGO_URL")
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/]*):(?P<password>[^@/]*)@")


def default_path() -> Path:
    """Where the embedded SQLite store lives when nothing is configured.

    ``$MINIBATCH_HOME/streams.db`` if ``MINIBATCH_HOME`` is set, else
    ``~/.minibatch_rx/streams.db``.
    """
    home = os.environ.get("MINIBATCH_HOME")
    base = Path(home) if home else Path.home() / ".minibatch_rx"
    return base / "streams.db"


def resolve_url(url: str | None = None) -> str:
    """The store URL to use: ``url``, else ``MINIBATCH_URL``, else
    ``MINIBATCH_MONGO_URL`` or ``MONGO_URL``, else the embedded SQLite default.

    >>> resolve_url('memory://')
    'memory://'
    """
    if url is None:
        url = next((os.environ[v] for v in ENV_VARS if os.environ.get(v)), None)
    if url is None:
        return f"sqlite://{default_path()}"
    scheme_of(url)
    return url


def scheme_of(url: str) -> str:
    """The URL's scheme, or :class:`InvalidURLError` if it is not supported."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURLError(
            f"store URL {redact(str(url))!r} is not a URL; expected one of "
            + ", ".join(f"{s}://..." for s in BACKENDS)
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in BACKENDS:
        raise InvalidURLError(
            f"unknown store URL scheme {scheme!r} in {redact(url)!r}; supported: "
            + ", ".join(f"{s}://" for s in BACKENDS)
        )
    return scheme


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``.

    >>> redact('mongodb://bob:secret@db:27017/app')
    'mongodb://bob:***@db:27017/app'
    """
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", url)


SQLITE_OPTIONS = ("timeout", "synchronous", "mode")


def parse_sqlite_url(url: str) -> tuple[Path, dict[str, str]]:
    """Split ``sqlite://PATH?opts`` into the file path and its options:
    ``timeout`` (seconds to wait for the write lock), ``synchronous``
    (``full`` or ``normal``) and ``mode=ro`` (open read-only).

    >>> parse_sqlite_url('sqlite:///data/x.db?mode=ro')
    (PosixPath('/data/x.db'), {'mode': 'ro'})
    """
    rest = url.split("://", 1)[1]
    path, _, query = rest.partition("?")
    if not path:
        raise InvalidURLError(f"sqlite URL {url!r} names no file; use sqlite:///path/to/file.db")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - set(SQLITE_OPTIONS)
    if unknown:
        raise InvalidURLError(f"unknown sqlite URL option(s) {sorted(unknown)} in {url!r}")
    if options.get("synchronous", "full").lower() not in ("full", "normal"):
        raise InvalidURLError(f"sqlite synchronous must be 'full' or 'normal' in {url!r}")
    if options.get("mode", "ro") != "ro":
        raise InvalidURLError(f"sqlite mode must be 'ro' (read-only) in {url!r}")
    try:
        timeout = float(options.get("timeout", 10))
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout >= 0):
        raise InvalidURLError(f"sqlite timeout must be a number of seconds >= 0 in {url!r}")
    return Path(path), options


def prepare_sqlite_file(path: Path, read_only: bool) -> None:
    """Check that ``path`` can be a database file, before SQLite sees it.

    A directory, or a missing file opened read-only, raises
    :class:`StoreOpenError`. The file's own folder is created if its parent
    exists; deeper missing folders are not created (a typo in a path should
    not silently build a directory tree).
    """
    if path.is_dir():
        raise StoreOpenError(f"SQLite database {path} is a directory, not a file")
    if read_only:
        if not path.exists():
            raise StoreOpenError(f"SQLite database {path} does not exist (opened read-only)")
        return
    folder = path.parent
    if folder.is_dir():
        return
    if folder.exists():
        raise StoreOpenError(f"cannot create SQLite database {path}: {folder} is not a folder")
    if not folder.parent.is_dir():
        raise StoreOpenError(
            f"cannot create SQLite database {path}: folder {folder.parent} does not exist "
            f"(only the file's own folder, {folder.name!r}, is created)"
        )
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise StoreOpenError(f"cannot create folder {folder} for SQLite database {path}: {exc}") from None
