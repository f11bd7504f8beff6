"""The ``minibatch`` command, run as a user runs it: the installed console
script (and ``python -m minibatch_rx``) in a subprocess, on a temporary store."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crash_harness import wait_until

from minibatch_rx import partitions, stream
from minibatch_rx.store import close_all

ROOT = Path(__file__).resolve().parent.parent
MINIBATCH = shutil.which("minibatch", path=str(Path(sys.executable).parent)) or "minibatch"
WAIT = 30.0  # bound on every wait for a subprocess's output


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/streams.db"


@pytest.fixture
def env(tmp_path: Path, url: str) -> dict[str, str]:
    """The user's environment without minibatch settings, the test store as MINIBATCH_URL."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("MINIBATCH_", "MONGO_URL"))}
    variables["MINIBATCH_HOME"] = str(tmp_path / "home")
    variables["MINIBATCH_URL"] = url
    return variables


def cli(env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MINIBATCH, *args], input=stdin, capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def jsonl(*payloads: dict[str, Any]) -> str:
    return "".join(json.dumps(p) + "\n" for p in payloads)


class Lines:
    """A running command whose output lines are collected by reader threads."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=env, cwd=cwd)
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                        for pipe, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(pipe: Any, lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Any) -> None:
        assert wait_until(predicate, WAIT, [self.process]), f"timed out\n{self.out}\n{self.err}"

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(WAIT)
        for reader in self.readers:
            reader.join(WAIT)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT)


@pytest.fixture
def running() -> Iterator[list[Lines]]:
    started: list[Lines] = []
    yield started
    for lines in started:
        lines.kill()


# -- streams, tail, append ---------------------------------------------------------------------

def test_append_then_streams_and_tail(env: dict[str, str], url: str) -> None:
    out = ok(cli(env, "append", "orders", stdin=jsonl({"n": 1}, {"n": 2}) + "\n" + jsonl({"n": 3})))
    assert out == "appended 3 message(s) to 'orders' (seqs 1..3)\n"
    stream("audit", url).commit("billing", 1)
    listing = json.loads(ok(cli(env, "streams", "--json")))
    rows = {row["name"]: row for row in listing["streams"]}
    assert rows["orders"]["messages"] == 3 and rows["orders"]["head"] == 3
    assert rows["orders"]["consumers"] == 0 and rows["orders"]["oldest_age_s"] >= 0
    assert rows["audit"]["messages"] == 0 and rows["audit"]["oldest_ts"] is None
    assert rows["audit"]["consumers"] == 1
    text = ok(cli(env, "streams")).splitlines()
    assert text[0].split() == ["STREAM", "MESSAGES", "HEAD", "OLDEST", "CONSUMERS"]
    assert text[2].split()[:3] == ["orders", "3", "3"]

    tail = json.loads(ok(cli(env, "tail", "orders", "-n", "2", "--json")))
    assert [(m["seq"], m["data"]) for m in tail] == [(2, {"n": 2}), (3, {"n": 3})]
    lines = ok(cli(env, "tail", "orders")).splitlines()
    assert [line.split("  ")[0] for line in lines] == ["1", "2", "3"]
    assert lines[0].endswith('{"n":1}')
    assert json.loads(ok(cli(env, "tail", "orders", "-n", "0", "--json"))) == []


def test_a_bad_line_refuses_its_whole_batch(env: dict[str, str], url: str) -> None:
    good = jsonl({"n": 1}, {"n": 2}, {"n": 3})
    bad = "[1, 2]\n" + '{"x": NaN}\n' + jsonl({"n": 6})
    result = cli(env, "append", "orders", "--batch-size", "4", "--json", stdin=good + bad + jsonl({"n": 7}))
    assert result.returncode == 1
    assert "line 4: a JSON object is needed, got an array" in result.stderr
    assert "line 5" not in result.stderr  # its batch was never read
    assert "nothing stored from lines 1-4" in result.stderr
    report = json.loads(result.stdout)
    assert report["stored"] == 0 and [e["line"] for e in report["errors"]] == [4]
    assert stream("orders", url).count() == 0

    result = cli(env, "append", "orders", "--batch-size", "3", stdin=good + bad + jsonl({"n": 7}))
    assert result.returncode == 1
    assert re.findall(r"^line (\d+): ", result.stderr, flags=re.M) == ["4", "5"]
    assert "line 5: NaN is not a JSON number" in result.stderr
    assert "nothing stored from lines 4-6" in result.stderr and "3 message(s)" in result.stderr
    assert [m.data["n"] for m in stream("orders", url).read()] == [1, 2, 3]


def test_append_with_a_key_field_stores_each_object_once(env: dict[str, str], url: str) -> None:
    lines = jsonl({"id": "a", "v": 1}, {"id": 7, "v": 2})
    ok(cli(env, "append", "orders", "--key", "id", stdin=lines))
    ok(cli(env, "append", "orders", "--key", "id", stdin=lines))
    assert [m.data["v"] for m in stream("orders", url).read()] == [1, 2]
    result = cli(env, "append", "orders", "--key", "id", stdin=jsonl({"v": 3}))
    assert result.returncode == 1 and "line 1: --key field 'id'" in result.stderr


def test_append_stores_a_slow_pipe_as_it_comes(env: dict[str, str], url: str, running: list[Lines]) -> None:
    process = subprocess.Popen([MINIBATCH, "append", "live", "--linger", "0.05"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdin is not None
    process.stdin.write(jsonl({"n": 1}))
    process.stdin.flush()
    # Far fewer lines than a batch: stored once the linger passed, while stdin stays open.
    live = stream("live", url)
    assert wait_until(lambda: live.count() == 1, WAIT, [process])
    process.stdin.write(jsonl({"n": 2}))
    process.stdin.close()
    assert process.wait(WAIT) == 0
    assert [m.data["n"] for m in live.read()] == [1, 2]


def test_tail_follows_until_a_signal(env: dict[str, str], url: str, running: list[Lines]) -> None:
    events = stream("events", url)
    events.extend([{"n": 1}, {"n": 2}])
    for sig, as_json in ((signal.SIGINT, False), (signal.SIGTERM, True)):
        json_flag = ["--json"] if as_json else []
        follower = Lines([MINIBATCH, "tail", "events", "-f", "-n", "1", *json_flag], env)
        running.append(follower)
        follower.wait_for(lambda f=follower: len(f.out) == 1)
        head = events.append({"n": 3 if not as_json else 4})
        follower.wait_for(lambda f=follower: len(f.out) == 2)
        assert follower.stop(sig) == 0, follower.err
        if as_json:
            documents = [json.loads(line) for line in follower.out]
            assert [(d["seq"], d["data"]) for d in documents] == [(head - 1, {"n": 3}), (head, {"n": 4})]
        else:
            assert [line.split("  ")[0] for line in follower.out] == ["2", "3"]
            assert follower.out[1].endswith('{"n":3}')
        assert follower.err == []


# -- consumers, trim, forget, dead --------------------------------------------------------------

def test_consumers_trim_and_forget(env: dict[str, str], url: str) -> None:
    orders = stream("orders", url)
    orders.extend([{"n": i} for i in range(1, 6)])
    orders.commit("billing", 4)
    orders.commit("audit", 2)
    report = json.loads(ok(cli(env, "consumers", "orders", "--json")))
    assert report["head"] == 5
    assert [(c["name"], c["position"], c["lag"]) for c in report["consumers"]] == [
        ("audit", 2, 3), ("billing", 4, 1)]
    assert all(c["acked_ts"] is not None for c in report["consumers"])

    assert json.loads(ok(cli(env, "trim", "orders", "--acknowledged", "--json"))) == {
        "stream": "orders", "removed": 2, "messages": 3}
    missing = cli(env, "forget", "orders", "nobody")
    assert missing.returncode == 1 and "consumer 'nobody' is not registered" in missing.stderr
    assert "'audit', 'billing'" in missing.stderr
    assert "it was at position 2" in ok(cli(env, "forget", "orders", "audit"))
    assert orders.positions() == {"billing": 4}
    assert "removed 2 message(s)" in ok(cli(env, "trim", "orders", "--acknowledged"))
    assert "removed 1 message(s) up to seq 5" in ok(cli(env, "trim", "orders", "--upto", "5"))
    assert orders.count() == 0
    orders.append({"n": 6})
    assert json.loads(ok(cli(env, "trim", "orders", "--older-than", "1h", "--json")))["removed"] == 0
    ok(cli(env, "forget", "orders", "billing"))
    empty = cli(env, "trim", "orders", "--acknowledged")
    assert empty.returncode == 1 and "no registered consumer" in empty.stderr


def test_dead_letters_listed_and_replayed_once(env: dict[str, str], url: str) -> None:
    jobs = stream("jobs", url)
    jobs.extend([{"v": 1}, {"v": 0}, {"v": 2}, {"v": 0}])
    handle = (jobs.count_window(1).map(lambda w: 10 // w.data[0]["v"]).sink(lambda value: None)
              .with_retries(0).run(consumer="divide", max_windows=4))
    assert handle.dead_letters == 2
    listing = json.loads(ok(cli(env, "dead", "jobs", "--json")))
    letters = listing["dead_letters"]
    assert listing["dead_letter_stream"] == "jobs.dead"
    assert [(d["data"]["first_seq"], d["data"]["data"]) for d in letters] == [
        (2, [{"v": 0}]), (4, [{"v": 0}])]
    assert all(d["data"]["error"].startswith("ZeroDivisionError") for d in letters)
    text = ok(cli(env, "dead", "jobs")).splitlines()
    assert text[0].split()[:3] == ["SEQ", "AGE", "STAGE"] and len(text) == 3
    assert "ZeroDivisionError" in text[1]

    first = json.loads(ok(cli(env, "dead", "jobs", "--replay", "--json")))
    assert (first["appended"], first["already_replayed"]) == (2, 0)
    again = json.loads(ok(cli(env, "dead", "jobs", "--replay", "--json")))
    assert (again["appended"], again["already_replayed"]) == (0, 2)
    assert [m.data for m in jobs.read(after=4)] == [{"v": 0}, {"v": 0}]
    only = json.loads(ok(cli(env, "dead", "jobs", "--seq", str(letters[1]["seq"]), "--json")))
    assert [d["seq"] for d in only["dead_letters"]] == [letters[1]["seq"]]
    clean = stream("clean", url)
    clean.append({"v": 1})
    assert "no dead letters for 'clean'" in ok(cli(env, "dead", "clean"))


# -- errors and exit codes ----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "code", "message"), [
    (["tail", "ordres"], 1, "unknown stream 'ordres' in sqlite://"),
    (["tail", "ordres"], 1, "did you mean 'orders'?"),
    (["consumers", "nope"], 1, "unknown stream 'nope'"),
    (["dead", "nope"], 1, "unknown stream 'nope'"),
    (["tail", "bad name"], 2, "stream name 'bad name' is not allowed"),
    (["streams", "--url", "redis://localhost"], 2, "unknown store URL scheme 'redis'"),
    (["tail", "orders", "-n", "-1"], 2, "argument -n/--lines: must be >= 0"),
    (["trim", "orders"], 2, "one of the arguments --upto --acknowledged --older-than is required"),
    (["trim", "orders", "--older-than", "soon"], 2, "is not an interval"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["run", "no_colon"], 2, "'no_colon' is not MODULE:ATTRIBUTE"),
    (["run", "no_such_module_here:pipeline"], 2, "no module named 'no_such_module_here'"),
    (["run", "missing/file.py:pipeline"], 2, "cannot load 'missing/file.py': no file"),
    (["run", "jobs.py:nothing"], 2, "'jobs.py' has no attribute 'nothing'"),
    (["run", "jobs.py:NUMBER"], 2, "jobs.py:NUMBER is an int, not a Pipeline"),
    (["run", "jobs.py:source"], 2, "jobs.py:source is a Stream, not a Pipeline"),
    (["run", "jobs.py:needs_args"], 2, "jobs.py:needs_args cannot be called without arguments"),
    (["run", "jobs.py:not_a_factory"], 2, "jobs.py:not_a_factory() returned a str, not a Pipeline"),
    (["run", "jobs.py:build", "--metrics-port", "70000"], 2, "--metrics-port: must be a TCP port 0..65535"),
    (["run", "jobs.py:build", "--consumer", "a", "--group", "b"], 2, "not allowed with argument"),
    (["run", "broken.py:build"], 1, "RuntimeError: broken at import"),
])
def test_errors_name_the_problem(env: dict[str, str], url: str, tmp_path: Path, args: list[str],
                                 code: int, message: str) -> None:
    stream("orders", url).append({"n": 1})
    (tmp_path / "jobs.py").write_text(JOBS)
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken at import')\n")
    result = cli(env, *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_a_missing_sqlite_file_is_not_created_by_reading(env: dict[str, str], tmp_path: Path) -> None:
    result = cli(env, "streams", "--url", f"sqlite://{tmp_path}/typo.db")
    assert result.returncode == 1 and "the SQLite file" in result.stderr and "does not exist" in result.stderr
    assert not (tmp_path / "typo.db").exists()


def test_python_dash_m_is_the_same_command(env: dict[str, str], url: str) -> None:
    stream("orders", url).append({"n": 1})
    result = subprocess.run([sys.executable, "-m", "minibatch_rx", "streams", "--json"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert [s["name"] for s in json.loads(result.stdout)["streams"]] == ["orders"]
    usage = subprocess.run([sys.executable, "-m", "minibatch_rx"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert usage.returncode == 2 and "usage: minibatch" in usage.stderr


def test_url_option_on_mongodb(env: dict[str, str], mongo_url: str) -> None:
    ok(cli(env, "append", "orders", "--url", mongo_url, stdin=jsonl({"n": 1}, {"n": 2})))
    listing = json.loads(ok(cli(env, "--url", mongo_url, "streams", "--json")))
    assert [(s["name"], s["messages"], s["head"]) for s in listing["streams"]] == [("orders", 2, 2)]
    tail = json.loads(ok(cli(env, "tail", "orders", "--url", mongo_url, "--json")))
    assert [m["data"]["n"] for m in tail] == [1, 2]


# -- run ----------------------------------------------------------------------------------------

JOBS = '''
import os
from minibatch_rx import partitions, stream

NUMBER = 3
source = stream("orders")


def record(window):
    """Not idempotent on purpose: a window processed twice shows up twice in the log."""
    with open(os.environ["JOBS_LOG"], "a") as log:
        log.write(" ".join(str(m.seq) for m in window.messages) + "\\n")
    return {"seqs": [m.seq for m in window.messages]}


def build():
    return stream("jobs").count_window(2, timeout="100ms").map(record).sink("jobs.done")


def needs_args(x):
    return build()


def not_a_factory():
    return "pipeline"
'''


def logged(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(seq) for line in path.read_text().splitlines() for seq in line.split()]


def start_run(env: dict[str, str], tmp_path: Path, *args: str) -> Lines:
    return Lines([MINIBATCH, "run", "jobs.py:build", "--consumer", "worker", "--progress-interval", "0.2",
                  *args], env, cwd=tmp_path)


def test_run_stops_on_sigterm_with_its_position_committed_and_resumes(
        env: dict[str, str], url: str, tmp_path: Path, running: list[Lines]) -> None:
    (tmp_path / "jobs.py").write_text(JOBS)
    env["JOBS_LOG"] = str(tmp_path / "processed.log")
    jobs = stream("jobs", url)
    jobs.extend([{"n": i} for i in range(5)])

    first = start_run(env, tmp_path)
    running.append(first)
    first.wait_for(lambda: logged(tmp_path / "processed.log") == [1, 2, 3, 4, 5])
    close_all()  # the test reads the file afresh, as another process would
    first.wait_for(lambda: any("position 5 / head 5" in line for line in first.err))
    assert first.stop(signal.SIGTERM) == 0, first.err
    assert "from position 0 (head 5)" in first.err[0]
    assert first.out[-1] == ("stopped: consumer 'worker' on stream 'jobs' at committed position 5 (head 5); "
                             "3 windows, 0 dead letter(s) this run")
    assert stream("jobs", url).position("worker") == 5

    stream("jobs", url).extend([{"n": i} for i in range(5, 8)])
    second = start_run(env, tmp_path, "--json")
    running.append(second)
    second.wait_for(lambda: logged(tmp_path / "processed.log")[5:] == [6, 7, 8])
    assert second.stop(signal.SIGINT) == 0, second.err
    started = json.loads(second.err[0])
    assert (started["event"], started["position"], started["head"]) == ("started", 5, 8)
    stopped = json.loads(second.out[-1])
    assert (stopped["event"], stopped["position"], stopped["clean"]) == ("stopped", 8, True)
    assert logged(tmp_path / "processed.log") == [1, 2, 3, 4, 5, 6, 7, 8]  # nothing processed twice
    assert stream("jobs", url).position("worker") == 8
    assert [m.data["seqs"] for m in stream("jobs.done", url).read()] == [[1, 2], [3, 4], [5], [6, 7], [8]]


def test_run_shows_one_updating_line_on_a_terminal(env: dict[str, str], url: str, tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(JOBS)
    env["JOBS_LOG"] = str(tmp_path / "processed.log")
    stream("jobs", url).extend([{"n": i} for i in range(4)])
    terminal, side = pty.openpty()
    process = subprocess.Popen([MINIBATCH, "run", "jobs.py:build", "--consumer", "tty"],
                               stdout=subprocess.PIPE, stderr=side, text=True, env=env, cwd=tmp_path)
    os.close(side)
    screen = bytearray()

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO once the process closed its end
            while chunk := os.read(terminal, 4096):
                screen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: b"position 4 / head 4 (100%)" in screen, WAIT, [process]), bytes(screen)
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    reader.join(WAIT)
    os.close(terminal)
    updates = bytes(screen).split(b"\r\x1b[K")
    assert any(update.startswith(b"position 4 / head 4 (100%)") and b"\n" not in update for update in updates)
    assert process.stdout is not None and "committed position 4 (head 4)" in process.stdout.read()


def test_run_reports_a_failing_pipeline(env: dict[str, str], url: str, tmp_path: Path,
                                        running: list[Lines]) -> None:
    (tmp_path / "jobs.py").write_text(JOBS)
    stream("jobs", url).append({"n": 1})
    env.pop("JOBS_LOG", None)  # record() fails: KeyError is retried, then dead-lettered
    worker = start_run(env, tmp_path, "--json")
    running.append(worker)
    worker.wait_for(lambda: stream("jobs.dead", url).count() == 1)
    close_all()
    worker.wait_for(lambda: any('"dead_letters": 1' in line for line in worker.err))
    assert worker.stop() == 0
    assert json.loads(worker.out[-1])["dead_letters"] == 1
    assert "dead-letter" in " ".join(worker.err)


def test_run_serves_metrics_on_the_port_it_prints(env: dict[str, str], url: str, tmp_path: Path,
                                                 running: list[Lines]) -> None:
    pytest.importorskip("prometheus_client", reason="the metrics extra is not installed")
    (tmp_path / "jobs.py").write_text(JOBS)
    env["JOBS_LOG"] = str(tmp_path / "processed.log")
    stream("jobs", url).extend([{"n": i} for i in range(6)])
    worker = start_run(env, tmp_path, "--metrics-port", "0", "--json")
    running.append(worker)
    worker.wait_for(lambda: any('"event": "metrics"' in line for line in worker.err))
    served = next(json.loads(line) for line in worker.err if '"event": "metrics"' in line)
    assert served["url"] == f"http://127.0.0.1:{served['port']}/metrics" and served["port"] > 0
    worker.wait_for(lambda: logged(tmp_path / "processed.log") == [1, 2, 3, 4, 5, 6])
    series = 'minibatch_windows_out_total{consumer="worker",stream="jobs"}'

    def windows_out() -> float | None:
        with urllib.request.urlopen(served["url"], timeout=10) as response:
            text = response.read().decode()
        values = [float(line.rpartition(" ")[2]) for line in text.splitlines()
                  if line.startswith(series + " ")]
        return values[0] if values else None

    worker.wait_for(lambda: windows_out() == 3.0)  # 6 messages in windows of 2
    assert worker.stop(signal.SIGTERM) == 0, worker.err
    assert json.loads(worker.out[-1])["windows"] == 3
    with pytest.raises(OSError):  # the endpoint ends with the run
        urllib.request.urlopen(served["url"], timeout=5)


def test_the_example_runs_under_minibatch_run(env: dict[str, str], url: str, running: list[Lines]) -> None:
    ok(cli(env, "append", "cli.orders", stdin=jsonl({"item": "tea", "qty": 2, "price": 3.5},
                                                    {"item": "jam", "price": 4})))
    spec = "examples/cli_pipeline.py:pipeline"
    worker = Lines([MINIBATCH, "run", spec, "--consumer", "totals"], env, cwd=ROOT)
    running.append(worker)
    totals = stream("cli.order_totals", url)
    worker.wait_for(lambda: totals.count() == 1)
    assert worker.stop(signal.SIGINT) == 0, worker.err
    assert [m.data for m in totals.read()] == [{"orders": 2, "seqs": [1, 2], "amount": 11.0}]
    assert "committed position 2 (head 2)" in worker.out[-1]


# -- the README's console blocks ----------------------------------------------------------------

README_SECTION = ROOT.joinpath("README.md").read_text().split("## Operating", 1)[1].split("\n## ", 1)[0]
CONSOLE = re.findall(r"^```console\n(.*?)^```", README_SECTION, flags=re.S | re.M)
ISO = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(\+00:00|[+-]\d\d:\d\d)")
AGE = re.compile(r"\b\d+[smhd]\b")


def normal(line: str) -> str:
    return " ".join(AGE.sub("<age>", ISO.sub("<ts>", line.removeprefix("^C"))).split())


def commands(block: str) -> Iterator[tuple[str, list[str]]]:
    command: str | None = None
    shown: list[str] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            if command is not None:
                yield command, shown
            command, shown = line[2:], []
        else:
            shown.append(line)
    if command is not None:
        yield command, shown


def test_readme_commands_work_as_written(env: dict[str, str], tmp_path: Path, running: list[Lines]) -> None:
    assert len(CONSOLE) >= 2
    env = dict(env)
    demo = str(tmp_path / "minibatch-demo.db")
    for block in CONSOLE:
        for command, shown in commands(block.replace("/tmp/minibatch-demo.db", demo)):
            if command.startswith("export "):
                name, _, value = command.removeprefix("export ").partition("=")
                env[name] = value
                continue
            if command.startswith("minibatch run "):
                worker = Lines(["bash", "-c", f"exec {command}"], env, cwd=ROOT)
                running.append(worker)
                totals = stream("cli.order_totals", env["MINIBATCH_URL"])
                worker.wait_for(lambda t=totals: t.count() == 1)
                worker.stop(signal.SIGINT)
                result = subprocess.CompletedProcess(command, worker.process.returncode,
                                                     "\n".join(worker.out), "\n".join(worker.err))
            else:
                result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env,
                                        cwd=ROOT, timeout=60)
            failing = any(": error: " in line for line in shown)
            assert result.returncode == (1 if failing else 0), f"{command}\n{result.stderr}"
            got = {normal(line) for line in (result.stdout + "\n" + result.stderr).splitlines()}
            for line in shown:
                assert normal(line) in got, (
                    f"{command}: README shows {line!r}, got\n{result.stdout}{result.stderr}")


KEYED = '''
from minibatch_rx import partitions, stream


def build():
    return (stream("readings").key_by("sensor").count_window(2)
            .map(lambda w: {"sensor": w.key, "seqs": [m.seq for m in w.messages]}).sink("readings.pairs"))
'''


def test_run_joins_a_keyed_group_by_partition_and_leaves_it_on_sigterm(
        env: dict[str, str], url: str, tmp_path: Path, running: list[Lines]) -> None:
    (tmp_path / "keyed.py").write_text(KEYED)
    readings = stream("readings", url)
    readings.extend([{"sensor": f"s{i % 4}"} for i in range(16)])
    args = [MINIBATCH, "run", "keyed.py:build", "--group", "pairs", "--partitions", "3",
            "--lease-timeout", "6", "--progress-interval", "0.2"]
    first = Lines([*args, "--member", "m1"], env, cwd=tmp_path)
    running.append(first)
    pairs = stream("readings.pairs", url)
    first.wait_for(lambda: len(list(pairs.read())) == 8)
    pairs = stream("readings.pairs", url)
    second = Lines([*args, "--member", "m2"], env, cwd=tmp_path)  # joins: m1 hands it a share
    running.append(second)

    def holders() -> set[str]:
        close_all()  # read the file afresh, as another process would
        table = stream("readings", url).store.update_state(
            "readings", partitions.state_name("pairs"), lambda doc, now: (doc, partitions.holders(doc, now)))
        return set(table.values())

    second.wait_for(lambda: holders() == {"m1", "m2"})
    readings = stream("readings", url)
    readings.extend([{"sensor": f"s{i % 4}"} for i in range(16)])
    first.wait_for(lambda: len(list(stream("readings.pairs", url).read())) == 16)
    assert first.stop(signal.SIGTERM) == 0, first.err
    assert second.stop(signal.SIGTERM) == 0, second.err
    assert "group 'pairs'" in first.err[0]
    assert first.out[-1].startswith("stopped: group 'pairs' on stream 'readings' at committed position ")
    close_all()
    rows = [m.data for m in stream("readings.pairs", url).read()]
    expected = {f"s{k}": [[s, s + 4] for s in range(k + 1, 33, 8)] for k in range(4)}
    by_sensor: dict[str, list[list[int]]] = {}
    for row in rows:
        by_sensor.setdefault(row["sensor"], []).append(row["seqs"])
    assert {k: sorted(v) for k, v in by_sensor.items()} == expected  # each pair once, none twice
    listing = json.loads(ok(cli(env, "consumers", "readings", "--json")))
    names = sorted(row["name"] for row in listing["consumers"])
    assert names == ["pairs#0", "pairs#1", "pairs#2"]
    assert ok(cli(env, "forget", "readings", "pairs"))
    assert json.loads(ok(cli(env, "consumers", "readings", "--json")))["consumers"] == []
    assert cli(env, "run", "keyed.py:build", "--partitions", "3", cwd=tmp_path).returncode == 2
