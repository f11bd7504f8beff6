"""Smoke test of ``benchmarks/bench_windows.py`` at a tiny size: every row runs and passes its self-check."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_windows.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_windows", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_windows"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_engine_runs_and_checks_its_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load()
    out = tmp_path / "windows.json"
    assert bench.main(["--events", "2000", "--rounds", "1", "--timeout", "30", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    measured = [name for name, row in rows.items() if row["eps"] is not None]
    assert {"raw reactivex buffer_with_count(100)", "ours, DSL: fixed_time_window",
            "ours, DSL: sliding_window by time", "ours, DSL: count_window(100)",
            "ours, operator: fixed_time_window", bench.KEYED} <= set(measured)
    assert all(rows[name]["eps"] > 0 and rows[name]["runs"] == 1 for name in measured)
    if importlib.util.find_spec("bytewax") is not None:  # the optional bench extra
        assert rows["bytewax"]["eps"] is not None
    else:
        assert "not installed" in rows["bytewax"]["note"]
    threads = report["threads"]
    assert threads["messages"] == 2000 and threads["windows"] >= 1
    assert threads["max_during"] >= threads["before"] >= 1
    targets = {t["name"]: t for t in report["targets"]}
    assert set(targets) == {bench.KEYED, bench.FIXED_DSL, bench.SLIDING_DSL}
    assert all(t["ratio"] is None or t["ratio"] > 0 for t in targets.values())
    table = capsys.readouterr().out
    assert "| ours, DSL: fixed_time_window |" in table and "/ raw reactivex" in table
    assert ">= 0.5x raw reactivex: " in table and ">= 1.0x bytewax: " in table


def test_the_keyed_row_checks_every_key_and_window(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load()
    w = bench.build(2000)
    run = bench.keyed_dsl(w, 30)
    run()  # passes on the true sums
    slot = next(iter(w.keyed))
    monkeypatch.setitem(w.keyed, slot, w.keyed[slot] + 1)
    with pytest.raises(bench.BenchError, match="sums differ"):
        run()


def test_the_profile_names_the_window_engine() -> None:
    text = load().profile_keyed(2000, 30, top=5)
    assert "by own time" in text and "_timed.py" in text


def test_a_wrong_sum_fails_the_self_check() -> None:
    bench = load()
    tally = bench.Tally(3)
    tally.add((2, 5))
    tally.add((1, 0))  # the sentinel's window: ignored
    tally.add((1, 4))
    assert tally.done.is_set()
    tally.check("ok", 3, 9)
    with pytest.raises(bench.BenchError, match="expected 3 summing to 10"):
        tally.check("wrong", 3, 10)
