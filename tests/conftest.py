"""Shared fixtures: one store fixture parametrized over every backend.

The MongoDB URL comes from ``MINIBATCH_TEST_MONGO_URL``; when it is unset the
session starts the SecantusDB test server itself (tests/mongo_server.py).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mongo_server import MongoTestServer

from minibatch_rx import store as store_module
from minibatch_rx.store import Store

BACKENDS = ["memory", "sqlite", "mongodb"]


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the user's configuration or default database."""
    for var in ("MINIBATCH_URL", "MINIBATCH_MONGO_URL", "MONGO_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MINIBATCH_HOME", str(tmp_path / "home"))
    yield
    store_module.close_all()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoTestServer | None]:
    """The session's own test server, or None when an external URL is given."""
    if os.environ.get("MINIBATCH_TEST_MONGO_URL"):
        yield None
        return
    server = MongoTestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mongo_url(mongo_server: MongoTestServer | None) -> str:
    """A MongoDB URL with a database of its own for this test."""
    base = os.environ.get("MINIBATCH_TEST_MONGO_URL") or (mongo_server.url if mongo_server else "")
    prefix, _, query = base.partition("?")
    host = prefix.split("://", 1)[1].split("/", 1)[0]
    scheme = prefix.split("://", 1)[0]
    db = f"mbtest_{uuid.uuid4().hex[:12]}"
    return f"{scheme}://{host}/{db}" + (f"?{query}" if query else "")


def make_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty store URL for ``backend``."""
    if backend == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if backend == "sqlite":
        return f"sqlite://{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("mongo_url"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend's name in turn."""
    return str(request.param)


@pytest.fixture(params=["memory", "sqlite"])
def fast_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL on the in-process backends (no server: quick)."""
    return make_url(str(request.param), tmp_path, request)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh store URL, once per backend."""
    return make_url(backend, tmp_path, request)


@pytest.fixture
def store(store_url: str) -> Store:
    """A fresh store, once per backend."""
    return store_module.open_store(store_url)
