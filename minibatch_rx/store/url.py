"""Resolving and redacting store URLs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from minibatch_rx.errors import InvalidURLError

SCHEMES = ("memory", "sqlite", "mongodb", "mongodb+srv")
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
            + ", ".join(f"{s}://..." for s in SCHEMES)
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise InvalidURLError(
            f"unknown store URL scheme {scheme!r} in {redact(url)!r}; supported: "
            + ", ".join(f"{s}://" for s in SCHEMES)
        )
    return scheme


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``.

    >>> redact('mongodb://bob:secret@db:27017/app')
    'mongodb://bob:***@db:27017/app'
    """
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", url)
