"""Smoke test of ``benchmarks/bench_cep.py`` at a tiny size: every row runs, reports sane
numbers, and the hand-written machine, the engine, the stage and the pipelines find the
same matches; the cross-check itself catches a machine or a pattern that differs."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from minibatch_rx import Stream
from minibatch_rx.cep import Pattern
from minibatch_rx.store.memory import MemoryStore

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_cep.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_cep", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_cep"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_row_runs_and_reports_sane_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load()
    out = tmp_path / "cep.json"
    argv = [
        "--events",
        "6000",
        "--pipeline-events",
        "3000",
        "--memory-sizes",
        "2000,6000",
        "--rounds",
        "1",
        "--timeout",
        "60",
        "--json",
        str(out),
    ]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert set(rows) == {
        bench.HAND,
        bench.INLINED,
        bench.ENGINE,
        bench.STAGE,
        bench.PIPE_MEMORY,
        bench.PIPE_SQLITE,
    }
    for name, row in rows.items():
        assert row["events"] == (3000 if name in (bench.PIPE_MEMORY, bench.PIPE_SQLITE) else 6000)
        assert len(row["rates"]) == 1 and row["eps"] == row["rates"][0] > 0
    # The workload has both outcomes, in a plausible proportion (about one event in ten matches).
    assert 200 < report["matches"] < 1500 and 200 < report["timeouts"] < 3000
    few, most = report["memory"]
    assert (few["events"], most["events"]) == (2000, 6000)
    assert all(m["peak_mib"] > 0 and 0 < m["partials_max"] < 2000 and m["matches"] > 0 for m in (few, most))
    assert most["matches"] == report["matches"] and most["timeouts"] == report["timeouts"]
    targets = {t["name"]: t for t in report["targets"]}
    assert len(targets) == 7 and all(isinstance(t["passed"], bool) for t in targets.values())
    assert f"{bench.ENGINE}, 6,000 events" in targets
    text = capsys.readouterr().out
    assert "| stage: PatternCore | 6,000 |" in text and "/ hand-written HandRun" in text
    assert "traced peak MiB" in text and ">= 150,000 events/s" in text


def events_at(bench: ModuleType, rows: list[tuple[str, str, float]]) -> Any:
    """A workload of ``(key, type, seconds after BASE)`` in arrival (and time) order, then the sentinel."""
    payloads = [
        {"key": key, "type": kind, "ts": bench.BASE + t, "i": i} for i, (key, kind, t) in enumerate(rows)
    ]
    return bench.Workload([*payloads, bench.sentinel(len(payloads))])


def test_no_skip_relaxed_contiguity_and_the_half_open_within() -> None:
    bench = load()
    tick, within = bench.TICK, bench.WITHIN
    w = events_at(
        bench,
        [
            ("x", "a", 0.0),
            ("x", "a", 1.0),
            ("x", "b", 2.0),
            ("x", "b", 3.0),
            ("x", "c", 4.0),  # 0-4
            ("y", "a", 10.0),
            ("y", "b", 11.0),
            ("y", "c", 10.0 + within),  # 5-7: c at exactly within
            ("z", "a", 20.0),
            ("z", "b", 21.0),
            ("z", "c", 20.0 + within - tick),  # 8-10: just inside
            ("q", "a", 30.0),
            ("q", "other", 31.0),  # 11-12: never completes
        ],
    )
    outcomes = bench.cross_check(w)  # every in-process row agrees ...
    hand = outcomes[bench.HAND]
    # ... on these: both a of x share the first b and the c; the second b is taken by no one.
    assert sorted(hand.match_ids) == [(0, 2, 4), (1, 2, 4), (8, 9, 10)]
    assert sorted(hand.timeout_ids) == [(5, 6), (11,)]
    for name in (bench.INLINED, bench.ENGINE, bench.STAGE):
        assert outcomes[name].counts() == (3, 2)


def test_the_cross_check_catches_a_machine_or_pattern_that_differs() -> None:
    bench = load()
    w = events_at(bench, [("y", "a", 0.0), ("y", "b", 1.0), ("y", "c", bench.WITHIN)])
    bench.cross_check(w)
    closed = functools.partial(
        bench.hand_written, within=bench.WITHIN + bench.TICK
    )  # within as a closed bound
    with pytest.raises(bench.BenchError, match="differ in matches"):
        bench.cross_check(w, hand=closed)
    two_b = events_at(bench, [("x", "a", 0.0), ("x", "b", 1.0), ("x", "b", 2.0), ("x", "c", 3.0)])
    any_b = (
        Pattern.begin("a")
        .where(lambda e: e["type"] == "a")
        .followed_by_any("b")
        .where(lambda e: e["type"] == "b")
        .followed_by("c")
        .where(lambda e: e["type"] == "c")
        .within(bench.WITHIN)
    )
    with pytest.raises(bench.BenchError, match="differ in matches: 2 vs 1"):
        bench.cross_check(two_b, any_b)


def test_a_pipeline_run_must_find_the_hand_written_matches() -> None:
    bench = load()
    source = Stream(bench.STREAM, store=MemoryStore("memory://test-bench-cep"))
    bench.fill(source, 3000)
    expected = bench.hand_written(bench.build(3000).ordered, keep=True)
    found = bench.pipeline(source, bench.pattern(), expected, 30.0, "memory")()
    assert found.counts() == expected.counts() and expected.matches > 0
    other = bench.hand_written(bench.build(3000).ordered, keep=True, within=bench.WITHIN / 2)
    with pytest.raises(bench.BenchError, match="differ in matches"):
        bench.pipeline(source, bench.pattern(), other, 30.0, "memory")()


def test_the_stage_rejects_state_left_behind() -> None:
    bench = load()
    w = events_at(bench, [("x", "a", 0.0)])
    without_sentinel = w.messages[:-1]  # nothing moves the watermark past the a
    with pytest.raises(bench.BenchError, match="state left at the end"):
        bench.stage(without_sentinel, bench.pattern())


def test_the_profile_shows_shares_of_the_nfa() -> None:
    text = load().profile(2000, "engine", top=5)
    assert "by own time" in text and "nfa.py" in text and "%" in text
