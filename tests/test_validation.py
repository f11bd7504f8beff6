"""Payload and stream-name validation: bad input is rejected before anything is stored."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest

from minibatch_rx import InvalidPayloadError, InvalidStreamNameError, MinibatchError, Stream, list_streams
from minibatch_rx.validation import MAX_DEPTH, MAX_STREAM_NAME, check_payload, check_stream_name


def nested(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """A payload ``levels`` deep: dicts and lists alternating (the payload is level 1)."""
    value: Any = leaf
    for level in range(levels, 0, -1):
        value = {"d": value} if level % 2 else [value]
    return value  # type: ignore[no-any-return]


def cyclic() -> dict[str, Any]:
    payload: dict[str, Any] = {"a": []}
    payload["a"].append(payload)
    return payload

BAD_PAYLOADS: list[tuple[str, Any, str]] = [
    # (id, payload, text the error message must contain)
    ("list", [1, 2], "payload must be a dict, got list"),
    ("str", "text", "payload must be a dict, got str"),
    ("none", None, "payload must be a dict, got NoneType"),
    ("int-key", {1: "x"}, "key 1 is a int"),
    ("tuple-key", {("a",): 1}, "keys must be str"),
    ("nested-int-key", {"a": {2: "x"}}, "payload['a']: key 2"),
    ("set", {"a": {1, 2}}, "payload['a']: set is not"),
    ("frozenset", {"a": frozenset()}, "payload['a']: frozenset is not"),
    ("bytes", {"a": b"raw"}, "payload['a']: bytes is not"),
    ("bytearray", {"a": bytearray(b"raw")}, "payload['a']: bytearray is not"),
    ("datetime", {"when": datetime(2026, 1, 1, tzinfo=UTC)}, "payload['when']: datetime is not"),
    ("decimal", {"a": Decimal("1.5")}, "payload['a']: Decimal is not"),
    ("object", {"a": object()}, "payload['a']: object is not"),
    ("nested-list", {"a": [1, {2}]}, "payload['a'][1]: set is not"),
    ("nested-first", {"a": [{3}]}, "payload['a'][0]: set is not"),
    ("deep", {"a": {"b": [0, [1, {"c": b"x"}]]}}, "payload['a']['b'][1][1]['c']: bytes is not"),
    ("nan", {"x": math.nan}, "payload['x']: float nan is not finite"),
    ("inf", {"x": math.inf}, "payload['x']: float inf is not finite"),
    ("-inf", {"x": [-math.inf]}, "payload['x'][0]: float -inf is not finite"),
    ("int-too-big", {"n": 2**63}, f"payload['n']: int {2**63} does not fit in 64 bits"),
    ("int-too-small", {"n": -(2**63) - 1}, "does not fit in 64 bits"),
    ("dollar-key", {"$set": 1}, "payload: key '$set' may not start with '$'"),
    ("nested-dollar-key", {"a": {"$gt": 1}}, "payload['a']: key '$gt' may not start with '$'"),
    ("nul-key", {"a\x00b": 1}, "contain NUL"),
    ("deep-500", nested(500), f"nested deeper than {MAX_DEPTH} levels"),
    ("deep-limit+1", nested(MAX_DEPTH + 1), "payload['d'][0]['d'][0]"),
    ("cycle", cyclic(), "payload['a'][0]['a'][0]['a'][0]['a'][0]['a'][0]['a'][0]['a'][0]['a'][0]"),
    ("surrogate-value", {"s": "ok\ud800"}, "payload['s']: str 'ok\\ud800' contains a lone surrogate"),
    ("surrogate-key", {"a": {"k\udfff": 1}}, "payload['a']: key 'k\\udfff' contains a lone surrogate"),
    ("surrogate-in-list", {"a": ["é", "\udc80"]}, "payload['a'][1]: str '\\udc80' contains a lone surrogate"),
    ("surrogate-pair-as-two", {"a": "\ud83d\ude00"}, "payload['a']: str"),
]


@pytest.mark.parametrize(
    ("payload", "message"),
    [pytest.param(p, m, id=i) for i, p, m in BAD_PAYLOADS],
)
def test_bad_payload_is_rejected_with_a_precise_message(payload: Any, message: str) -> None:
    with pytest.raises(InvalidPayloadError) as info:
        check_payload(payload)
    assert message in str(info.value)
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, MinibatchError)


GOOD_PAYLOADS: list[dict[str, Any]] = [
    {},
    {"a": None, "b": True, "c": False, "d": 0, "e": -1.5, "f": "", "g": "ünï"},
    {"big": 2**63 - 1, "small": -(2**63)},
    {"list": [1, [2, [3]]], "tuple": (1, 2), "nested": {"a": {"b": {"c": []}}}},
    {"price$": 1, "a.b": 2, "": 3},  # '$' only matters at the start of a key
    {"ünï": "ç😀", "list": ["日本", {"ключ": "значение"}]},  # non-ASCII without surrogates
    nested(MAX_DEPTH),  # exactly at the depth limit
]


@pytest.mark.parametrize("payload", GOOD_PAYLOADS)
def test_good_payload_passes_unchanged(payload: dict[str, Any]) -> None:
    assert check_payload(payload) is payload


def test_mapping_that_is_not_a_dict_is_accepted(store_url: str) -> None:
    s = Stream.get_or_create("mapping", url=store_url)
    assert s.append(MappingProxyType({"a": 1, "inner": MappingProxyType({"b": [2]})})) == 1
    assert [m.data for m in s.read()] == [{"a": 1, "inner": {"b": [2]}}]


@pytest.mark.parametrize(
    "payload",
    [pytest.param(p, id=i) for i, p, _ in BAD_PAYLOADS],
)
def test_bad_payload_stores_nothing_through_append(store_url: str, payload: Any) -> None:
    s = Stream.get_or_create("guarded", url=store_url)
    s.append({"ok": 1})
    with pytest.raises(InvalidPayloadError):
        s.append(payload)
    assert s.count() == 1
    assert s.last_seq() == 1
    assert s.append({"ok": 2}) == 2  # no seq was used up


@pytest.mark.parametrize("bad_index", [0, 2, 4])
def test_extend_with_one_bad_payload_stores_none(store_url: str, bad_index: int) -> None:
    s = Stream.get_or_create("guarded", url=store_url)
    s.append({"ok": 0})
    batch: list[Any] = [{"ok": n} for n in range(1, 6)]
    batch[bad_index] = {"ok": {"nested": {1, 2}}}
    with pytest.raises(InvalidPayloadError, match=r"payload\['ok'\]\['nested'\]: set"):
        s.extend(batch)
    assert s.count() == 1
    assert s.last_seq() == 1
    assert [m.data for m in s.read()] == [{"ok": 0}]
    assert s.extend([{"ok": 1}]) == [2]


def test_rejected_payload_does_not_register_a_new_stream(store_url: str) -> None:
    s = Stream("fresh", url=store_url)
    with pytest.raises(InvalidPayloadError):
        s.append({"bad": {1}})
    with pytest.raises(InvalidPayloadError):
        s.extend([{"good": 1}, {"bad": b""}])
    assert list_streams(store_url) == []


# -- stream names ---------------------------------------------------------------

BAD_NAMES: list[Any] = [
    "",
    None,
    42,
    "a b",
    "../x",
    "a/b",
    "x" * (MAX_STREAM_NAME + 1),
    ".hidden",
    "-dash",
    ":colon",
    "tab\t",
    "new\nline",
    "ünïcode",
    "$cmd",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_stream_names_are_rejected(name: Any, store_url: str) -> None:
    with pytest.raises(InvalidStreamNameError) as info:
        check_stream_name(name)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, MinibatchError)
    with pytest.raises(InvalidStreamNameError):
        Stream(name, url=store_url)
    with pytest.raises(InvalidStreamNameError):
        Stream.get_or_create(name, url=store_url)
    assert list_streams(store_url) == []


def test_too_long_name_message_names_the_limit() -> None:
    with pytest.raises(InvalidStreamNameError, match=f"{MAX_STREAM_NAME + 1} characters; the limit is 200"):
        check_stream_name("x" * (MAX_STREAM_NAME + 1))


GOOD_NAMES = ["a", "sensor.readings", "a-b:c_d", "_private", "0day", "x" * MAX_STREAM_NAME, "A.b-C:d_9"]


@pytest.mark.parametrize("name", GOOD_NAMES, ids=lambda n: n[:20])
def test_legal_stream_names_work_on_every_backend(name: str, store_url: str) -> None:
    assert check_stream_name(name) == name
    s = Stream.get_or_create(name, url=store_url)
    assert s.name == name
    assert s.append({"n": 1}) == 1
    s.commit("c", 1)
    assert [(m.stream, m.seq) for m in s.read()] == [(name, 1)]
    assert s.position("c") == 1
    assert list_streams(store_url) == [name]


def test_depth_limit_counts_every_dict_and_list_level() -> None:
    """The payload is level 1; a 500-deep payload raises our error, not RecursionError."""
    check_payload(nested(MAX_DEPTH))
    for levels in (MAX_DEPTH + 1, 500, 5000):
        with pytest.raises(InvalidPayloadError, match=f"deeper than {MAX_DEPTH} levels") as info:
            check_payload(nested(levels))
        path = str(info.value).split(":", 1)[0]
        # the path leads to the first container beyond the limit
        assert path.count("[") == MAX_DEPTH


def test_deep_or_surrogate_payload_is_refused_by_every_store(store_url: str) -> None:
    s = Stream.get_or_create("deep", url=store_url)
    s.append(nested(MAX_DEPTH, leaf="ünï"))
    for bad in (nested(500), {"text": "x\ud800"}, {"\ud800": 1}):
        with pytest.raises(InvalidPayloadError):
            s.extend([{"fine": 1}, bad])
    assert s.count() == 1
    assert [m.data for m in s.read()] == [nested(MAX_DEPTH, leaf="ünï")]
