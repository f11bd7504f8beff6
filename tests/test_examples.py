"""The examples are real programs: run them as a user would, in fresh processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
