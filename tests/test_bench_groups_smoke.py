"""Smoke test of ``benchmarks/bench_groups.py``'s keyed-time mode at a tiny size: the runs
(1 and 2 members, and a member SIGKILLed mid-run) pass their own correctness checks, and
those checks catch a missing, duplicated or wrong window."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from minibatch_rx import Stream
from minibatch_rx.partitions import partition_of
from minibatch_rx.store.memory import MemoryStore

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_groups.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_groups", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_groups"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_keyed_time_runs_pass_their_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load()
    out = tmp_path / "groups.json"
    argv = ["--pipeline", "keyed-time", "--members", "1,2", "--keys", "12", "--messages", "480",
            "--work", "0.005", "--lease-timeout", "3", "--settle", "0.2", "--calibrate", "0",
            "--rebalance", "--rebalance-lease", "2", "--timeout", "60", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())
    env = report["environment"]
    assert (env["keyed_windows_per_key"], env["keyed_windows"], env["keyed_messages"]) == (2, 24, 481)
    rows = report["results"]
    assert [(r["pipeline"], r["members"]) for r in rows] == [("keyed-time", 1), ("keyed-time", 2)]
    for row in rows:
        (run,) = row["runs"]
        assert row["windows"] == 24 and row["elapsed_s"] > 0
        by_pid = run["windows_by_pid"]
        assert len(by_pid) == row["members"] and sum(by_pid.values()) == 24 and min(by_pid.values()) > 0
        assert run["taken_over"] == 0  # no partition moved in a healthy run
    rebalance = report["rebalance"]
    assert rebalance["moved"] == 6 and rebalance["partitions"] == 12  # the killed member's share
    assert 0 < rebalance["rebalance_seconds"] <= rebalance["complete_seconds"]
    assert sum(rebalance["windows_by_pid"].values()) == 24
    text = capsys.readouterr().out
    assert "fixed_time_window(20)" in text and "the survivor held all 12" in text


def test_keys_are_balanced_over_the_partitions() -> None:
    bench = load()
    keys = bench.balanced_keys(48, 12)
    assert len(set(keys)) == 48
    assert set(Counter(partition_of(k, 12) for k in keys).values()) == {4}
    with pytest.raises(RuntimeError, match="do not divide evenly"):
        bench.balanced_keys(40, 12)


def sunk(bench: ModuleType, keyed: Any, outputs: list[dict[str, Any]]) -> tuple[Stream, Stream]:
    store = MemoryStore(f"memory://test-bench-groups-{id(outputs)}")
    source, sink = Stream("in", store=store), Stream("out", store=store)
    source.extend(keyed.docs)
    if outputs:
        sink.extend(outputs)
    return source, sink


def expected_outputs(keyed: Any, pid: int) -> list[dict[str, Any]]:
    return [{"key": key, "start": start, "n": 20, "first": first, "last": last, "pid": pid}
            for (key, start), (first, last) in keyed.expected.items()]


def test_the_keyed_check_wants_each_window_once_with_its_events() -> None:
    bench = load()
    keyed = bench.keyed_input(480, 12, 12)
    good = expected_outputs(keyed, 7)
    source, sink = sunk(bench, keyed, good)
    assert bench.verify_keyed(source, sink, keyed, [7], "g") == ({7: 24}, 0)
    with pytest.raises(RuntimeError, match="processed no window"):
        bench.verify_keyed(source, sink, keyed, [7, 8], "g")
    for bad, reason in ((good[1:], "missing"), (good + good[:1], "more than once"),
                        ([{**good[0], "last": good[0]["last"] - 1}, *good[1:]], "holds 20 events"),
                        ([*good, {**good[0], "start": 0.0}], "unexpected"),
                        ([{**good[0], "pid": 9}, *good[1:]], "not a member")):
        source, sink = sunk(bench, keyed, bad)
        with pytest.raises(RuntimeError, match=reason):
            bench.verify_keyed(source, sink, keyed, [7], "g")


def test_the_input_closes_every_window_and_holds_whole_windows() -> None:
    bench = load()
    keyed = bench.keyed_input(480, 12, 12)
    assert keyed.messages == 481 and keyed.windows == 24
    closer = keyed.docs[-1]
    assert closer["k"] == bench.CLOSER_KEY and closer["t"] >= max(s for _, s in keyed.expected) + 2 * 20
    for (key, start), (first, last) in keyed.expected.items():
        events = [d for d in keyed.docs[first - 1:last] if d["k"] == key]
        assert len(events) == 20 and all(start <= d["t"] < start + 20 for d in events)
