"""The CEP examples are real programs: run each as a user would, in a fresh process,
and check every line it prints against the matches its input holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minibatch_rx import list_streams

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

EXPECTED = {
    # alice: four failures (10:00:00..10:00:30, the last arriving after her success), then a
    # success: the three right before it. carol: two failures then a success (too few), later
    # four then a success. bob: three failures and a success over 70 s (outside the minute).
    # alice's failure of 10:01:00 arrives after events of 10:01:35 and more: late.
    "cep_fraud.py": [
        "logins: 19, alerts: 2, late: 1",
        "ALERT alice: failed at 10:00:10, 10:00:20, 10:00:30, then logged in at 10:00:31",
        "ALERT carol: failed at 10:01:25, 10:01:28, 10:01:30, then logged in at 10:01:35",
        "LATE alice 10:01:00",
    ],
    # kitchen rises three times, smoke 9 s after its first reading (arriving before the reading
    # of 8 s); server-room's rise starts again after a dip; garage rises but its smoke comes 11 s
    # after the first reading: a timeout; hall's smoke follows no rise.
    "cep_iot.py": [
        "readings: 26, alarms: 2, hot without smoke: 1",
        "ALARM kitchen: 20.0 -> 21.5 -> 23.0 -> 26.5 C from 12:00:00, smoke at 12:00:09",
        "ALARM server-room: 30.5 -> 31.0 -> 32.0 -> 33.0 C from 12:00:02, smoke at 12:00:07",
        "TIMEOUT garage: 40.0 -> 41.0 -> 42.0 -> 43.0 C from 12:00:10, no smoke by 12:00:20",
    ],
    # o-1, o-4 (at 14:59), o-6 and o-8 are paid in time; o-3 is paid after 16 minutes; o-2 and
    # o-5 never are; o-7's 15 minutes have not passed when the events stop (watermark 09:59:00).
    "cep_absence.py": [
        "events: 13, unpaid after 15 minutes: 3, still open: o-7",
        "UNPAID o-2: placed at 09:02:00, not paid by 09:17:00",
        "UNPAID o-3: placed at 09:10:00, not paid by 09:25:00",
        "UNPAID o-5: placed at 09:40:00, not paid by 09:55:00",
    ],
}


def run_example(args: list[str], env: dict[str, str], timeout: float = 120) -> list[str]:
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=EXAMPLES.parent,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout.splitlines()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("MINIBATCH_", "MONGO_URL"))}
    variables["MINIBATCH_HOME"] = str(tmp_path / "home")
    return variables


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_cep_example_on_the_embedded_default(example: str, env: dict[str, str], tmp_path: Path) -> None:
    assert run_example([f"examples/{example}"], env) == EXPECTED[example]
    database = tmp_path / "home" / "streams.db"
    assert database.exists()
    assert list_streams(f"sqlite://{database}") == []  # the example deletes its streams


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_cep_example_honours_minibatch_url(example: str, env: dict[str, str], tmp_path: Path) -> None:
    env["MINIBATCH_URL"] = f"sqlite://{tmp_path / 'elsewhere.db'}"
    assert run_example([f"examples/{example}"], env) == EXPECTED[example]
    assert (tmp_path / "elsewhere.db").exists()
    assert not (tmp_path / "home" / "streams.db").exists()


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_cep_example_on_mongodb(example: str, env: dict[str, str], mongo_url: str) -> None:
    assert run_example([f"examples/{example}", "--url", mongo_url], env) == EXPECTED[example]
    assert list_streams(mongo_url) == []
