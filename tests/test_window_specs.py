"""Window strategies as values, and the one DSL surface shared by Stream and Pipeline
(issue 10, point 1)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest
from reactivex.abc import SchedulerBase

import minibatch_rx
from minibatch_rx import InvalidArgumentError, Pipeline, Stream, stream
from minibatch_rx.dsl import WindowDSL
from minibatch_rx.windows import (
    Count,
    Custom,
    Relaxed,
    Session,
    Sliding,
    Tumbling,
    WindowOperator,
    WindowSpec,
)

PACKAGE = Path(minibatch_rx.__file__).parent


def test_specs_are_frozen_validated_values_with_labels() -> None:
    assert Count(2) == Count(2) and Count(2) != Count(3)
    assert hash(Tumbling("5s")) == hash(Tumbling("5s"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Count(2).n = 3  # type: ignore[misc]
    assert [s.label for s in (Count(2, "1s"), Tumbling(10, grace=2), Sliding(3, 1),
                               Sliding("10s", "5s", by="time"), Session("30s"), Relaxed(5, True))] == [
        "count_window(2,1s)", "fixed_time_window(10,2)", "sliding_window(3,1)",
        "sliding_window(10s,5s,time)", "session_window(30s)", "relaxed_time_window(5,True)"]
    def tumbling_5s(scheduler: SchedulerBase | None = None) -> WindowOperator:
        return Tumbling(5).operator(scheduler)

    assert Custom(tumbling_5s).label.endswith("tumbling_5s")


@pytest.mark.parametrize("make", [
    lambda: Count(0), lambda: Count(2, timeout=-1), lambda: Tumbling("soon"), lambda: Tumbling(5, grace=-1),
    lambda: Sliding(3, 0), lambda: Sliding("10s", "5s", by="rows"),  # type: ignore[arg-type]
    lambda: Session(0), lambda: Relaxed(-2), lambda: Custom(42),  # type: ignore[arg-type]
])
def test_a_bad_spec_is_refused_where_it_is_written(make: object) -> None:
    assert callable(make)
    with pytest.raises(InvalidArgumentError):
        make()


def test_only_count_windows_share_windows_in_a_group_other_unkeyed_windows_run_as_one_partition() -> None:
    assert [s.groupable for s in (Count(2), Tumbling(5), Sliding(3, 1), Session(1), Relaxed(1))] == [
        True, False, False, False, False]
    src = stream("in", "memory://specs-group")
    with pytest.raises(InvalidArgumentError, match="runs as one partition"):
        src.fixed_time_window(5).map(len).run(group="g", duration=0.01, partitions=2)


def test_stream_and_pipeline_share_one_definition_of_each_window_method() -> None:
    for name in ("count_window", "fixed_time_window", "relaxed_time_window", "sliding_window",
                 "session_window"):
        assert getattr(Stream, name) is getattr(WindowDSL, name) is getattr(Pipeline, name)
    src = stream("in", "memory://specs-dsl")
    src.extend([{"v": v} for v in range(4)])
    via_method = src.count_window(2).map(len)
    via_spec = src.window(Count(2)).map(len)
    assert via_method.window_spec == via_spec.window_spec == Count(2)
    assert via_method.default_consumer == via_spec.default_consumer == "count_window(2)|map:len"
    via_method.to_observable()  # built only to compare: mark it used
    got: list[int] = []
    via_spec.sink(got.append).run(max_windows=2)
    assert got == [2, 2]


def test_stream_module_does_not_import_the_pipeline_and_no_module_is_shadowed() -> None:
    tree = ast.parse((PACKAGE / "streams.py").read_text())
    type_only = [node for node in ast.walk(tree) if isinstance(node, ast.If)
                 and ast.unparse(node.test) == "TYPE_CHECKING"]
    hidden = {id(inner) for block in type_only for inner in ast.walk(block)}
    runtime = [node for node in ast.walk(tree) if id(node) not in hidden]
    imported = {node.module for node in runtime if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in runtime if isinstance(node, ast.Import) for alias in node.names}
    assert not any(name and "pipeline" in name for name in imported), imported
    assert callable(minibatch_rx.stream)
    assert importlib.import_module("minibatch_rx.streams").Stream is Stream
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    shadowed = [name for name in dir(minibatch_rx) if name in modules
                and not isinstance(getattr(minibatch_rx, name), type(minibatch_rx))]
    assert shadowed == []


def test_a_spec_is_a_window_spec_and_builds_a_fresh_operator_per_run() -> None:
    spec = Tumbling(5)
    assert isinstance(spec, WindowSpec)
    assert spec.operator() is not spec.operator()
