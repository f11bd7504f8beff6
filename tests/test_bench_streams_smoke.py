"""Smoke test of ``benchmarks/bench_streams.py`` at its tiny sizes: every part runs in its
processes, the report is well formed, and the self-checks ran (every message of every part
was counted delivered once and in order); the checks themselves catch a lost, repeated or
foreign window, a gap in a raw read and a pipeline reading the wrong payloads."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_streams.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_streams", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_streams"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_part_runs_checks_its_messages_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load()
    sizes = bench.TINY
    out = tmp_path / "streams.json"
    assert bench.main(["--tiny", "--json", str(out), "--plot", str(tmp_path / "streams.png")]) == 0
    data = json.loads(out.read_text())
    report, targets = data["report"], data["targets"]
    redis = bench.redis_missing() is None
    assert report["sizes"] == "tiny"
    # 1. every pipeline count ran, each run delivered every message (counted by the consumers)
    assert [m["pipelines"] for m in report["many"]] == list(sizes.pipelines)
    assert all(len(m["rates"]) == sizes.many_repeats and min(m["rates"]) > 0 for m in report["many"])
    total_latency = sizes.latency_warmup + sizes.latency_samples
    assert report["checked"] == {
        "many pipelines": sizes.many_messages * len(sizes.pipelines) * sizes.many_repeats,
        "idle pipelines": sum(sizes.pipelines) * bench.WINDOW,
        "latency": total_latency * (4 if redis else 2),
        "read path": sizes.backlog * sizes.read_rounds,
        "per window": sizes.window_messages * len(sizes.windows) * sizes.window_repeats,
        "producer": sum(sizes.producer.values()),
    }
    ours_idle = [i for i in report["idle"] if i["who"] == bench.OURS]
    assert [i["pipelines"] for i in ours_idle] == list(sizes.pipelines)
    assert all(
        i["seconds"] >= sizes.idle_seconds * 0.9 and i["cpu_seconds"] >= 0 and i["threads"] >= 1
        for i in ours_idle
    )
    # 2. latency: ours, and the Redis peers when redis-server and the client are here (else a note)
    names = [lat["implementation"] for lat in report["latency"]]
    ours = [bench.OURS, bench.OURS_NORMAL]
    assert names == ([*ours, bench.REDIS_PLAIN, bench.REDIS_DURABLE] if redis else ours)
    assert all(len(lat["latencies"]) == sizes.latency_samples for lat in report["latency"])
    assert all(0 < v < 5 for lat in report["latency"] for v in lat["latencies"])
    assert (len(report["idle"]) == len(sizes.pipelines) + 1) == redis
    assert bool(report["skipped"]) != redis
    assert report["peer"].startswith("redis-server ") == redis
    # 3.-5.
    assert len(report["read"]["raw"]) == len(report["read"]["ours"]) == sizes.read_rounds
    assert [w["window"] for w in report["windows"]] == list(sizes.windows)
    assert {r["mode"] for r in report["producer"]} == set(sizes.producer)
    assert len(targets) == 11 and all(isinstance(t["passed"], bool) for t in targets)
    captured = capsys.readouterr()
    text = captured.out
    assert "| count_window(1) | 3,000 |" in text and "Targets:" in text
    assert text.count("| PASS |") + text.count("| FAIL |") == 11
    assert "Messages checked delivered once and in order: many pipelines 8,000" in text
    if has_matplotlib():  # the bench extra draws the plot
        assert (tmp_path / "streams.png").stat().st_size > 10_000
    else:  # without it, the benchmark says so and writes none
        assert not (tmp_path / "streams.png").exists()
        assert "matplotlib is not installed" in captured.err


def window(first: int, last: int, stream: int, k: int) -> Any:
    data = [{"s": stream, "k": k + j} for j in range(last - first + 1)]
    return SimpleNamespace(first_seq=first, last_seq=last, data=data)


def test_the_tally_catches_lost_repeated_and_foreign_windows() -> None:
    bench = load()
    tally = bench.Tally(2, expected=300)
    assert tally.see(window(1, 100, 2, 0), 1.0) == ""
    assert tally.see(window(101, 200, 2, 100), 2.0) == "" and (tally.messages, tally.t_last) == (200, 2.0)
    assert "lost, repeated or reordered" in tally.see(window(101, 200, 2, 100), 3.0)  # delivered again
    assert "lost, repeated or reordered" in tally.see(window(202, 300, 2, 201), 3.0)  # a seq skipped
    assert "expected from 200" in tally.see(window(201, 300, 2, 150), 3.0)  # seqs right, payloads not
    assert "a payload of stream s1" in tally.see(window(201, 300, 1, 200), 3.0)
    assert tally.see(window(201, 300, 2, 200), 4.0) == ""
    assert "more than the 300 appended" in tally.see(window(301, 400, 2, 300), 5.0)


def test_the_read_checks_catch_a_gap_and_wrong_payloads(tmp_path: Path) -> None:
    import sqlite3

    from minibatch_rx import Stream
    from minibatch_rx.store import close_all

    bench = load()
    path = tmp_path / "read.db"
    url = f"sqlite://{path}"
    good = Stream.get_or_create("good", url)
    good.extend([{"i": i} for i in range(300)])
    shifted = Stream.get_or_create("shifted", url)
    shifted.extend([{"i": i + 1} for i in range(300)])  # one payload off from its seq
    conn = sqlite3.connect(path)
    try:
        assert bench.raw_read(conn, "good", 300) > 0
        assert bench.pipeline_read(url, "good", 300, "smoke") > 0
        with pytest.raises(bench.BenchError, match="raw read 300 of 301"):
            bench.raw_read(conn, "good", 301)
        with pytest.raises(bench.BenchError, match="raw read at 0"):
            bench.raw_read(conn, "shifted", 300)
        with pytest.raises(bench.BenchError, match="3 windows out of order or incomplete"):
            bench.pipeline_read(url, "shifted", 300, "smoke")
    finally:
        conn.close()
        close_all()


def test_without_redis_server_the_peers_are_skipped_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load()
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    assert "redis-server is not on the PATH" in bench.redis_missing()


def has_matplotlib() -> bool:
    """Whether the bench extra's plotting library imports here."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True
