"""Smoke test of ``benchmarks/bench_session_keys.py`` at a tiny size: every run passes its
self-checks, and the checks themselves catch a wrong window, state left behind and growth."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from minibatch_rx import Message, Window

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_session_keys.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_session_keys", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_session_keys"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_run_passes_its_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load()
    out = tmp_path / "sessions.json"
    argv = ["--sizes", "1000,3000", "--dsl-sizes", "500,1000", "--open", "100", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    runs = [(r["mode"], r["keys"], r["all_open"]) for r in report["results"]]
    assert runs == [("operator", 1000, False), ("operator", 3000, False), ("operator", 3000, True),
                    ("dsl", 500, False), ("dsl", 1000, False)]
    for run in report["results"]:
        assert run["seconds"] > 0
        # Flowing: about --open keys at once (the sentinel's key besides); all open: every key.
        assert run["open_max"] == (run["keys"] if run["all_open"] else 100) or (
            run["mode"] == "dsl" and 0 < run["open_max"] <= 101)
        if run["mode"] == "operator":
            assert run["traced_peak_mib"] > 0
    checks = report["checks"]
    assert len(checks) >= 3 and all(check["passed"] for check in checks)
    assert any("all 3,000 keys open at once" in check["name"] for check in checks)
    assert "| operator, all open | 3,000 |" in capsys.readouterr().out


def window(key: str, start: datetime, gap: float = 1.0) -> Window:
    message = Message("sessions", 1, start, {"key": key})
    return Window((message,), "sessions", start, start + timedelta(seconds=gap), key=key)


def test_the_checker_wants_each_key_once_in_order_with_its_bounds() -> None:
    bench = load()
    first = datetime.fromtimestamp(bench.BASE, UTC)
    second = datetime.fromtimestamp(bench.event_time(1, False, 100), UTC)
    good = bench.Checker(2, False, 100)
    good.window(window("k0000000", first))
    good.window(window(bench.SENTINEL, first))  # the sentinel's session is not counted
    good.window(window("k0000001", second))
    good.verify()
    for wrong in (window("k0000001", second), window("k0000000", first, gap=2.0),
                  window("k0000000", first + timedelta(seconds=1))):
        checker = bench.Checker(2, False, 100)
        checker.window(wrong)
        with pytest.raises(bench.BenchError, match="window 0: expected key k0000000"):
            checker.verify()
    short = bench.Checker(2, False, 100)
    short.window(window("k0000000", first))
    with pytest.raises(bench.BenchError, match="1 of 2 sessions"):
        short.verify()


class _Core:
    """Stands in for the engine's core: its per-key table and remembered sessions."""

    def __init__(self, keys: list[str], recent: int, held: int | None) -> None:
        self.by_key: dict[str, Any] = dict.fromkeys(keys)
        self.recent = dict.fromkeys(range(recent))
        self.held = held

    def held_min_seq(self) -> int | None:
        return self.held


def test_state_left_behind_fails() -> None:
    bench = load()
    bench.check_emptied(_Core([bench.SENTINEL], 0, 11), 11)
    for core in (_Core(["k0000003"], 0, None), _Core([], 5, None), _Core([], 0, 4)):
        with pytest.raises(bench.BenchError, match="per-key state left"):
            bench.check_emptied(core, 11)


def test_memory_growing_with_keys_seen_fails() -> None:
    bench = load()

    def result(keys: int, traced: float, rss: float, all_open: bool = False) -> Any:
        return bench.Result("operator", keys, all_open, 100, 1.0, rss, traced)

    flat = [result(1000, 1.0, 1.0), result(1_000_000, 1.5, 20.0), result(1_000_000, 80.0, 90.0, True)]
    assert all(v.passed for v in bench.verdicts(flat))
    grows = [result(1000, 1.0, 1.0), result(1_000_000, 2.5, 40.0), result(1_000_000, 2.6, 40.0, True)]
    assert [v.passed for v in bench.verdicts(grows)] == [False, False, False]
