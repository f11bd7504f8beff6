"""Store URLs: which one is used, which are refused, and that passwords never leak."""

from __future__ import annotations

import logging
import sqlite3
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo.collection import Collection

from minibatch_rx import (
    InvalidURLError,
    MinibatchError,
    StoreUnavailableError,
    Stream,
    list_streams,
    open_store,
    resolve_url,
)
from minibatch_rx import store as store_module
from minibatch_rx.store import MemoryStore, default_path, redact
from minibatch_rx.store.sqlite import SqliteStore

SECRET = "s3cret"
CLOSED_PORT_URL = f"mongodb://bob:{SECRET}@127.0.0.1:1/db?serverSelectionTimeoutMS=300"
REDACTED_CLOSED_PORT_URL = "mongodb://bob:***@127.0.0.1:1/db?serverSelectionTimeoutMS=300"


# -- resolve_url ------------------------------------------------------------------


def test_default_is_sqlite_under_minibatch_home(tmp_path: Path) -> None:
    # conftest points MINIBATCH_HOME at tmp_path/home and removes the URL variables.
    expected = tmp_path / "home" / "streams.db"
    assert default_path() == expected
    assert resolve_url() == f"sqlite://{expected}"
    assert not expected.exists()
    s = Stream.get_or_create("defaulted")
    assert isinstance(s.store, SqliteStore)
    assert s.append({"n": 1}) == 1
    assert expected.exists()
    assert list_streams() == ["defaulted"]


def test_default_without_minibatch_home_is_in_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MINIBATCH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_path() == tmp_path / "user" / ".minibatch_rx" / "streams.db"
    assert resolve_url() == f"sqlite://{tmp_path / 'user' / '.minibatch_rx' / 'streams.db'}"


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = f"sqlite://{tmp_path / 'home' / 'streams.db'}"
    assert resolve_url() == default

    monkeypatch.setenv("MONGO_URL", "mongodb://mongo-url/db")
    assert resolve_url() == "mongodb://mongo-url/db"

    monkeypatch.setenv("MINIBATCH_MONGO_URL", "mongodb://minibatch-mongo-url/db")
    assert resolve_url() == "mongodb://minibatch-mongo-url/db"

    monkeypatch.setenv("MINIBATCH_URL", "memory://from-env")
    assert resolve_url() == "memory://from-env"

    assert resolve_url("memory://explicit") == "memory://explicit"

    monkeypatch.delenv("MINIBATCH_MONGO_URL")
    assert resolve_url() == "memory://from-env"
    monkeypatch.delenv("MINIBATCH_URL")
    assert resolve_url() == "mongodb://mongo-url/db"
    monkeypatch.delenv("MONGO_URL")
    assert resolve_url() == default


def test_empty_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIBATCH_URL", "")
    monkeypatch.setenv("MINIBATCH_MONGO_URL", "")
    monkeypatch.setenv("MONGO_URL", "memory://last-resort")
    assert resolve_url() == "memory://last-resort"


def test_environment_url_is_used_by_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIBATCH_URL", "memory://env-store")
    s = Stream.get_or_create("from-env")
    assert isinstance(s.store, MemoryStore)
    assert s.store is open_store("memory://env-store")
    assert list_streams("memory://env-store") == ["from-env"]


def test_invalid_environment_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIBATCH_URL", "redis://cache")
    with pytest.raises(InvalidURLError, match="redis"):
        resolve_url()
    with pytest.raises(InvalidURLError):
        Stream.get_or_create("x")


# -- refused URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://x", "http://example.com/db", "postgres://u@h/db",
        "not a url", "streams.db", "", "sqlite:/x.db",
    ],
)
def test_unknown_or_malformed_url_is_refused_before_anything_is_created(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    attempts: list[Callable[[], object]] = [
        lambda: open_store(url),
        lambda: Stream.get_or_create("x", url=url),
        lambda: resolve_url(url),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidURLError) as info:
            attempt()
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, MinibatchError)
    assert store_module._stores == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "home").exists()


def test_non_string_url_is_refused() -> None:
    with pytest.raises(InvalidURLError):
        open_store(42)  # type: ignore[arg-type]


def test_scheme_is_case_insensitive() -> None:
    assert isinstance(open_store("MEMORY://upper"), MemoryStore)


@pytest.mark.parametrize(
    "query",
    ["?foo=1", "?timeout=abc", "?timeout=-1", "?timeout=inf", "?synchronous=off", "?synchronous=extra"],
)
def test_sqlite_bad_options_are_refused(query: str, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'sub' / 'x.db'}{query}"
    with pytest.raises(InvalidURLError):
        open_store(url)
    with pytest.raises(InvalidURLError):
        SqliteStore(url)
    assert not (tmp_path / "sub").exists()  # refused before creating anything
    assert store_module._stores == {}


def test_sqlite_url_without_a_path_is_refused() -> None:
    with pytest.raises(InvalidURLError, match="names no file"):
        open_store("sqlite://")
    with pytest.raises(InvalidURLError, match="names no file"):
        open_store("sqlite://?timeout=1")


def test_sqlite_options_are_applied(tmp_path: Path) -> None:
    normal = SqliteStore(f"sqlite://{tmp_path / 'n.db'}?synchronous=normal&timeout=0.5")
    full = SqliteStore(f"sqlite://{tmp_path / 'f.db'}?synchronous=FULL")
    try:
        conns = [normal.connect(), full.connect()]
        try:
            # PRAGMA synchronous: 1 = NORMAL, 2 = FULL
            assert [c.execute("PRAGMA synchronous").fetchone()[0] for c in conns] == [1, 2]
        finally:
            for conn in conns:
                conn.close()
        assert normal.append("s", [{"n": 1}]) == [1]
    finally:
        normal.close()
        full.close()


def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Stream.get_or_create("rel", url="sqlite://data/rel.db").append({"n": 1})
    assert (tmp_path / "data" / "rel.db").exists()
    conn = sqlite3.connect(tmp_path / "data" / "rel.db")
    try:
        assert conn.execute("SELECT count(*) FROM mb_messages").fetchone()[0] == 1
    finally:
        conn.close()


# -- credentials ------------------------------------------------------------------


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, f"password leaked in: {text[:300]}"


def test_unreachable_mongodb_fails_fast_without_leaking_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # pymongo logs topology and selection events at DEBUG
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        Stream.get_or_create("orders", url=CLOSED_PORT_URL)
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"took {elapsed:.1f}s"

    error = info.value
    assert isinstance(error, ConnectionError)
    assert isinstance(error, MinibatchError)
    assert REDACTED_CLOSED_PORT_URL in str(error)
    assert_no_secret(str(error), repr(error), "".join(traceback.format_exception(error)))
    assert_no_secret(caplog.text, *(record.getMessage() for record in caplog.records))
    assert caplog.records, "pymongo DEBUG logging was expected to be captured"
    # The failed store is not cached: the next attempt fails the same way.
    with pytest.raises(StoreUnavailableError):
        open_store(CLOSED_PORT_URL)


def test_store_and_stream_repr_redact_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Skip the index creation at open, so a store exists although the server does not.
    created: list[Any] = []
    monkeypatch.setattr(Collection, "create_index", lambda self, *a, **k: created.append(a))
    store = open_store(CLOSED_PORT_URL)
    assert created, "the store should have tried to create its indexes"
    s = Stream("orders", store=store)
    assert store.url == REDACTED_CLOSED_PORT_URL
    assert REDACTED_CLOSED_PORT_URL in repr(store)
    assert repr(s) == f"Stream('orders', url={REDACTED_CLOSED_PORT_URL!r})"

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        s.count()
    assert time.monotonic() - started < 10
    with pytest.raises(StoreUnavailableError) as append_info:
        s.append({"n": 1})
    assert_no_secret(
        repr(store), str(store), repr(s), str(info.value), str(append_info.value), caplog.text
    )


def test_unknown_scheme_error_redacts_the_password() -> None:
    with pytest.raises(InvalidURLError) as info:
        open_store(f"redis://bob:{SECRET}@cache:6379/0")
    assert "redis://bob:***@cache:6379/0" in str(info.value)
    assert_no_secret(str(info.value))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mongodb://bob:secret@db:27017/app", "mongodb://bob:***@db:27017/app"),
        ("mongodb+srv://bob:p%40ss@cluster.example.net/app?tls=true",
         "mongodb+srv://bob:***@cluster.example.net/app?tls=true"),
        ("mongodb://bob:secret@h1:1,h2:2/app?replicaSet=rs", "mongodb://bob:***@h1:1,h2:2/app?replicaSet=rs"),
        ("mongodb://:secret@db/app", "mongodb://:***@db/app"),
        ("mongodb://bob:@db/app", "mongodb://bob:***@db/app"),
        ("mongodb://bob@db/app", "mongodb://bob@db/app"),
        ("mongodb://db:27017/app", "mongodb://db:27017/app"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ("memory://name", "memory://name"),
    ],
)
def test_redact(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert redact(redact(url)) == expected  # idempotent


# -- one store per URL ----------------------------------------------------------


def test_open_store_returns_the_same_object_per_url(tmp_path: Path) -> None:
    sqlite_url = f"sqlite://{tmp_path / 'same.db'}"
    assert open_store(sqlite_url) is open_store(sqlite_url)
    assert open_store("memory://a") is open_store("memory://a")
    assert open_store("memory://a") is not open_store("memory://b")
    assert open_store(sqlite_url) is not open_store(f"sqlite://{tmp_path / 'other.db'}")
    # No URL means the resolved default: the same object as naming it.
    assert open_store() is open_store(resolve_url())
    assert Stream("x", url=sqlite_url).store is Stream("y", url=sqlite_url).store


def test_open_store_after_close_all_returns_a_new_object(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'again.db'}"
    first = open_store(url)
    store_module.close_all()
    second = open_store(url)
    assert second is not first
    assert open_store(url) is second


def test_open_mongodb_store_is_shared(mongo_url: str) -> None:
    first = open_store(mongo_url)
    assert open_store(mongo_url) is first
    assert Stream.get_or_create("m", url=mongo_url).store is first


@pytest.mark.parametrize("url", ["mongodb://", "mongodb://bob:s3cret@host:notaport/db"])
def test_malformed_mongodb_url_is_an_invalid_url(url: str) -> None:
    from minibatch_rx import InvalidURLError
    from minibatch_rx.store import open_store

    with pytest.raises(InvalidURLError, match="malformed MongoDB URL") as failure:
        open_store(url)
    assert "s3cret" not in str(failure.value)


def test_a_backend_registered_once_opens_by_its_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    from minibatch_rx.store import url as url_module

    monkeypatch.setattr(url_module, "BACKENDS", dict(url_module.BACKENDS))
    monkeypatch.setattr(store_module, "BACKENDS", url_module.BACKENDS)
    with pytest.raises(InvalidURLError, match="unknown store URL scheme 'scratch'"):
        store_module.open_store("scratch://one")
    store_module.register_backend("scratch", "minibatch_rx.store.memory:MemoryStore")
    opened = store_module.open_store("scratch://one")
    assert isinstance(opened, MemoryStore) and opened is store_module.open_store("scratch://one")
    with pytest.raises(InvalidURLError, match="register_backend"):
        store_module.register_backend("bad://", "no-colon")
