"""Behaviour the read and window hot paths must keep while they are made fast:
messages stay immutable values, decoding keeps json.loads' results and errors,
windows handed on with an ack are copies, a stuck stage is still named."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import sqlite3
from datetime import UTC, datetime

import pytest

from minibatch_rx.message import Message
from minibatch_rx.store.sqlite_reader import select

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# -- Message -------------------------------------------------------------------


def test_message_keeps_its_fields_positional_and_by_name() -> None:
    m = Message("s", 7, T0, {"a": 1})
    assert (m.stream, m.seq, m.ts, m.data) == ("s", 7, T0, {"a": 1})
    assert Message(stream="s", seq=7, ts=T0, data={"a": 1}) == m
    with pytest.raises(TypeError):
        Message("s", 7, T0)  # type: ignore[call-arg]


def test_message_is_immutable() -> None:
    m = Message("s", 7, T0, {"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.seq = 8  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del m.data
    # (Python 3.11's frozen slotted dataclasses refuse a new attribute with a TypeError.)
    with pytest.raises((AttributeError, TypeError)):
        m.extra = 1  # type: ignore[attr-defined]
    assert m.seq == 7


def test_message_equality_and_repr() -> None:
    m = Message("s", 7, T0, {"a": 1})
    assert m == Message("s", 7, T0, {"a": 1})
    assert m != Message("s", 8, T0, {"a": 1})
    assert m != Message("s", 7, T0, {"a": 2})
    assert m != ("s", 7, T0, {"a": 1})  # type: ignore[comparison-overlap]
    assert repr(m) == f"Message(stream='s', seq=7, ts={T0!r}, data={{'a': 1}})"


def test_message_works_with_dataclass_tools_copy_and_pickle() -> None:
    m = Message("s", 7, T0, {"a": 1})
    moved = dataclasses.replace(m, seq=9, data={"b": 2})
    assert moved == Message("s", 9, T0, {"b": 2})
    assert m.seq == 7
    assert [f.name for f in dataclasses.fields(m)] == ["stream", "seq", "ts", "data"]
    assert dataclasses.asdict(m) == {"stream": "s", "seq": 7, "ts": T0, "data": {"a": 1}}
    assert copy.deepcopy(m) == m
    assert pickle.loads(pickle.dumps(m)) == m


def test_message_matches_by_position() -> None:
    match Message("s", 7, T0, {"a": 1}):
        case Message(stream, seq, _, data):
            assert (stream, seq, data) == ("s", 7, {"a": 1})
        case _:
            pytest.fail("Message no longer matches by position")


# -- decoding rows ------------------------------------------------------------


def _table(rows: list[tuple[str, int, float, object]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE mb_messages (stream TEXT, seq INTEGER, ts REAL, data)")
    conn.executemany("INSERT INTO mb_messages VALUES (?, ?, ?, ?)", rows)
    return conn


def test_select_decodes_as_json_loads_does() -> None:
    texts = ['{"a":1,"b":[1,2.5,"x"],"c":{"d":null,"e":true}}', ' {"a": 1} ', '{"n":NaN}',
             '{"u":"gr\\u00fc\\u00dfe \\ud83c\\udf0d"}', '{"big":9223372036854775807}']
    conn = _table([("s", i, 1.5, text) for i, text in enumerate(texts, 1)]
                  + [("s", 9, 2.0, b'{"raw":1}')])
    messages = select(conn, "s", 0, None)
    decoded = [m.data for m in messages]
    expected = [json.loads(text) for text in texts] + [{"raw": 1}]
    assert json.dumps(decoded[:2] + decoded[3:]) == json.dumps(expected[:2] + expected[3:])
    assert decoded[2]["n"] != decoded[2]["n"]  # NaN
    assert [m.seq for m in messages] == [1, 2, 3, 4, 5, 9]
    assert messages[0].ts == datetime.fromtimestamp(1.5, UTC)
    assert messages[-1].ts == datetime.fromtimestamp(2.0, UTC)
    assert all(m.stream == "s" for m in messages)
    assert [m.seq for m in select(conn, "s", 2, 2)] == [3, 4]


@pytest.mark.parametrize("text", ['{"a":1}x', '{"a":', "", '{"a":1}{"b":2}'])
def test_select_raises_what_json_loads_raises_on_bad_data(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    conn = _table([("s", 1, 1.0, text)])
    with pytest.raises(json.JSONDecodeError) as raised:
        select(conn, "s", 0, None)
    assert str(raised.value) == str(expected.value)
