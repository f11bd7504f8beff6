"""The examples are real programs: run them as a user would, in fresh processes."""

from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env,
        cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("MINIBATCH_", "MONGO_URL"))}
    variables["MINIBATCH_HOME"] = str(tmp_path / "home")
    return variables


def test_quickstart_on_the_embedded_default(env: dict[str, str], tmp_path: Path) -> None:
    out = run_example(["examples/quickstart.py"], env)
    assert out.count("consumer: {'seqs'") == 4
    assert "processed 4 windows, position 20" in out
    assert (tmp_path / "home" / "streams.db").exists()
    # A second run continues where the consumer left off.
    again = run_example(["examples/quickstart.py"], env)
    assert "'seqs': '21..25'" in again
    assert "position 40" in again


def check_cep_output(out: str, readings: int) -> None:
    summary = {k: int(v) for k, v in (part.split(": ") for part in out.splitlines()[0].split(", "))}
    assert summary["readings"] == readings
    assert summary["aggregated"] + summary["late"] == readings
    alerts = [line for line in out.splitlines() if line.startswith("ALERT")]
    assert len(alerts) == summary["alerts"] >= 1
    assert all("'max': 45.0" in line for line in alerts)


def test_three_stage_cep_flow_on_sqlite(env: dict[str, str]) -> None:
    check_cep_output(run_example(["examples/cep_flow.py", "--readings", "150"], env), 150)


def test_three_stage_cep_flow_on_mongodb(env: dict[str, str], mongo_url: str) -> None:
    args = ["examples/cep_flow.py", "--readings", "60", "--pace", "0.02", "--url", mongo_url]
    check_cep_output(run_example(args, env), 60)


def device_seconds(ts: object) -> float | None:
    """A device timestamp as epoch seconds (naive ISO-8601 is UTC), or None if it is none."""
    if isinstance(ts, (int, float)):
        return float(ts)
    try:
        moment = datetime.fromisoformat(str(ts))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def event_time_means(readings: list[dict[str, Any]], size: float, max_delay: float) -> tuple[
        dict[tuple[str, float], tuple[int, float]], list[dict[str, Any]], list[dict[str, Any]], int]:
    """Tumbling event-time windows per sensor, the plain way: in arrival order, a
    reading is late when its window ends at or before the highest time seen so far
    minus ``max_delay``. Returns {(sensor, start): (count, mean)}, the late and the
    timestamp-less readings, and how many windowed readings came out of order."""
    windows: dict[tuple[str, float], list[float]] = {}
    late: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []
    highest, out_of_order = -math.inf, 0
    for reading in readings:
        t = device_seconds(reading["ts"])
        if t is None:
            dead.append(reading)
            continue
        start = t - t % size
        if start + size <= highest - max_delay:
            late.append(reading)
        else:
            out_of_order += t < highest
            windows.setdefault((reading["sensor"], start), []).append(reading["temperature"])
        highest = max(highest, t)
    means = {key: (len(temps), round(sum(temps) / len(temps), 3)) for key, temps in windows.items()}
    return means, late, dead, out_of_order


def printed(out: str, tag: str) -> list[dict[str, Any]]:
    return [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith(tag + " ")]


def check_sensor_output(out: str) -> None:
    """Every mean, late reading, dead letter and alert the example printed is the one
    the plain computation gives for its readings."""
    example = runpy.run_path(str(EXAMPLES / "sensors_event_time.py"))  # its data, not its main()
    readings = [reading for batch in example["gateway_batches"]() for reading in batch]
    means, late, dead, out_of_order = event_time_means(readings, size=5.0, max_delay=2.0)
    assert late and len(dead) == 1 and out_of_order > 0, "the scenario exercises every path"

    got = {(m["sensor"], datetime.fromisoformat(m["start"]).timestamp()): (m["count"], m["mean"])
           for m in printed(out, "mean")}
    assert got == means
    assert printed(out, "LATE") == late
    assert [line for line in out.splitlines() if line.startswith("DEAD")] == [
        f"DEAD BadRecordError: timestamp {dead[0]['ts']!r} is not ISO-8601 text, epoch seconds or a datetime"]
    alerts = {(a["sensor"], datetime.fromisoformat(a["start"]).timestamp()): a["mean"]
              for a in printed(out, "ALERT")}
    threshold = example["THRESHOLD"]
    assert alerts == {key: mean for key, (_, mean) in means.items() if mean > threshold}
    assert len(alerts) >= 1
    assert out.splitlines()[0] == (
        f"readings: {len(readings)}, windowed: {len(readings) - len(late) - len(dead)}, late: {len(late)}, "
        f"dead: {len(dead)}, means: {len(means)}, alerts: {len(alerts)}")


def test_per_sensor_event_time_flow_on_the_embedded_default(env: dict[str, str], tmp_path: Path) -> None:
    check_sensor_output(run_example(["examples/sensors_event_time.py"], env))
    assert (tmp_path / "home" / "streams.db").exists()


def test_per_sensor_event_time_flow_on_mongodb(env: dict[str, str], mongo_url: str) -> None:
    check_sensor_output(run_example(["examples/sensors_event_time.py", "--url", mongo_url], env))
