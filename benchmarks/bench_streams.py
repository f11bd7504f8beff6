"""Many streams per process, cross-process latency beside Redis Streams, and the read path (issue 12).

Every figure is measured in one run beside its peer or limit, on SQLite files in a
temporary directory (WAL, ``synchronous=full``: the store's default):

1. **Many pipelines in one process**: a consumer process starts P pipelines (1, 10,
   100), ``stream(f"s{i}", url=url).count_window(100).sink(fn).start(consumer="c")``;
   a producer process appends N messages round-robin over the P streams with
   ``Stream.extend`` (batches of 1,000). End-to-end msg/s from the producer's first
   append to the last window of any stream (median of the repeats, the counts
   alternating). Target: 100 pipelines >= 0.8x one.
   **Idle cost**: P pipelines started on empty streams; over ~5 s without data, the
   consumer process's CPU time / wall time (% of one core) and
   ``threading.active_count()``. Then each stream gets one window of messages and
   every pipeline must deliver it (an idle pipeline must be a live one). Peer: one
   Redis client process blocked in a single ``XREAD BLOCK`` on P streams (and the
   redis-server's own CPU over the same time).
2. **Cross-process latency**: ``run_all.py``'s section 3 children: a producer process
   appends ``{"i", "t": time.time()}`` one at a time on an absolute schedule; a
   consumer process runs ``count_window(1).sink(fn)`` and ``fn`` records
   ``time.time() - t``; p50/p99 after a warm-up. Peers, same pacing: Redis Streams,
   ``XADD`` in the producer, ``XREADGROUP ... BLOCK 0 COUNT 1`` then ``XACK`` in the
   consumer, redis-server started here on a free loopback port, once with
   ``--save "" --appendonly no`` and once with ``--appendonly yes --appendfsync
   always`` (durable, like ours).
3. **Read path**: a stream pre-filled with N messages; the raw limit (``SELECT seq, ts,
   data FROM mb_messages WHERE stream=? AND seq>? ORDER BY seq LIMIT 1000`` and
   ``json.loads`` per row, on the same file) against
   ``count_window(100).map(fn).run(consumer=..., max_windows=N // 100)``; rounds
   alternate after an untimed one of each, median. Target: ours >= 0.7x raw.
4. **Per-window cost**: ``run_all.py``'s end-to-end children (producer and consumer
   processes, ``extend`` in batches of 1,000) with count windows of 1, 100 and 1,000.
   Targets: ``count_window(1)`` >= 0.6x ``count_window(1000)``; ``count_window(100)``
   >= 200,000 msg/s.
5. **Buffered producer**: ``bench_producer.py``'s run (one thread, single appends
   through ``stream.producer(...)``), in a child process. Target >= 100,000 msg/s.

Self-checks (a failure raises, so a broken library cannot give a good number): every
consumer checks each message arrives once and in order (seq and payload), the
committed positions, and the counts; the Redis consumers check their order too.
Without ``redis-server`` on the PATH or the ``redis`` client, the Redis peers are
skipped with a note and the rest runs.

Usage::

    python benchmarks/bench_streams.py [--quick] [--json OUT] [--plot OUT.png]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import bench_producer  # noqa: E402
from benchmarks import run_all as ra  # noqa: E402

SCRIPT = Path(__file__).resolve()
OURS = ra.OURS
WINDOW = 100  # count window of the many-pipelines runs
CONSUMER = "c"
OURS_NORMAL = f"{ra.OURS}, synchronous=normal"
"""Ours with SQLite's synchronous=normal: no flush per commit (safe from process crashes)."""
REDIS_PLAIN = "Redis Streams, no persistence"
REDIS_DURABLE = "Redis Streams, AOF fsync always"
REDIS_CLIENT = "Redis client, one XREAD BLOCK"
TARGET_MANY = 0.8  # most pipelines / one pipeline, end-to-end msg/s
TARGET_IDLE_CPU = 2.0  # % of a core with the most pipelines idle
TARGET_P50 = 0.5  # ms
TARGET_P99 = 2.0  # ms
TARGET_READ = 0.7  # pipeline / raw read
TARGET_WINDOW_1 = 0.6  # count_window(1) / count_window(1000)
TARGET_E2E_100 = 200_000.0  # msg/s, count_window(100)
Doc = dict[str, Any]


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run."""

    name: str
    pipelines: tuple[int, ...] = (1, 10, 100)
    many_messages: int = 200_000  # a multiple of max(pipelines) * batch
    batch: int = 1000
    many_repeats: int = 3
    idle_seconds: float = 5.0
    settle: float = 3.0  # seconds between the last start() and the idle measurement (> IDLE_EXIT)
    latency_warmup: int = 100
    latency_samples: int = 1000
    pace: float = 0.005  # section 3's: durable appends (ours, Redis with AOF) keep it on this machine
    backlog: int = 200_000
    read_rounds: int = 3
    windows: tuple[int, ...] = (1, 100, 1000)
    window_messages: int = 200_000
    window_repeats: int = 3
    producer: dict[str, int] = field(default_factory=lambda: dict(bench_producer.SIZES))
    producer_rounds: int = 3


FULL = Sizes("full")
QUICK = Sizes(
    "quick",
    many_messages=100_000,
    many_repeats=1,
    idle_seconds=2.0,
    settle=2.5,
    latency_warmup=30,
    latency_samples=300,
    backlog=50_000,
    read_rounds=2,
    window_messages=50_000,
    window_repeats=1,
    producer=dict(bench_producer.QUICK_SIZES),
    producer_rounds=1,
)
TINY = Sizes(  # the smoke test's: every part runs, in seconds
    "tiny",
    pipelines=(1, 4),
    many_messages=4_000,
    batch=100,
    many_repeats=1,
    idle_seconds=0.3,
    settle=0.2,
    latency_warmup=5,
    latency_samples=40,
    pace=0.005,
    backlog=3_000,
    read_rounds=1,
    window_messages=3_000,
    window_repeats=1,
    producer={"producer": 3_000, "append": 100, "extend": 3_000, "producer, 4 threads": 2_000},
    producer_rounds=1,
)


class BenchError(RuntimeError):
    """A self-check failed: the numbers of this run are not to be trusted."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`BenchError` with ``message`` unless ``condition``."""
    if not condition:
        raise BenchError(f"benchmark self-check failed: {message}")


def emit(report: Doc) -> None:
    """Print a child's JSON report (its last stdout line)."""
    print(json.dumps(report), flush=True)


# -- results ----------------------------------------------------------------------------
@dataclass
class Many:
    """End-to-end runs of one pipeline count."""

    pipelines: int
    messages: int
    rates: list[float] = field(default_factory=list)  # msg/s, one per repeat
    threads: list[int] = field(default_factory=list)  # consumer's active_count() while running

    @property
    def rate(self) -> float:
        """Messages per second (the median over the runs or rounds)."""
        return statistics.median(self.rates)


@dataclass
class Idle:
    """CPU and threads of one idle consumer process."""

    who: str
    pipelines: int  # pipelines (or streams blocked on)
    seconds: float  # wall time measured
    cpu_seconds: float  # process time over it
    threads_before: int  # before the pipelines started
    threads: int  # while idle
    server_cpu_seconds: float | None = None  # redis-server over the same time

    @property
    def cpu_percent(self) -> float:
        """CPU time over wall time, in % of one core."""
        return 100 * self.cpu_seconds / self.seconds

    @property
    def server_percent(self) -> float | None:
        """The redis-server's CPU over the same time, in % of one core."""
        return None if self.server_cpu_seconds is None else 100 * self.server_cpu_seconds / self.seconds


@dataclass
class ReadPath:
    """Seconds per round of the raw read and of the pipeline over the same backlog."""

    messages: int
    raw: list[float] = field(default_factory=list)
    ours: list[float] = field(default_factory=list)

    def rate(self, times: list[float]) -> float:
        """Messages per second (the median over the runs or rounds)."""
        return self.messages / statistics.median(times)

    @property
    def ratio(self) -> float:
        """Ours over raw, in msg/s."""
        return self.rate(self.ours) / self.rate(self.raw)


@dataclass
class WindowRun:
    """End-to-end runs of one count window size."""

    window: int
    messages: int
    rates: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Messages per second (the median over the runs or rounds)."""
        return statistics.median(self.rates)


@dataclass
class Report:
    """Everything one run measured; ``checked`` counts the messages each part verified."""

    sizes: str
    many: list[Many] = field(default_factory=list)
    idle: list[Idle] = field(default_factory=list)
    latency: list[ra.Latency] = field(default_factory=list)
    read: ReadPath | None = None
    windows: list[WindowRun] = field(default_factory=list)
    producer: list[Doc] = field(default_factory=list)  # bench_producer's results, as JSON
    skipped: list[str] = field(default_factory=list)
    peer: str = ""  # the Redis versions, when the peers ran
    checked: dict[str, int] = field(default_factory=dict)

    def find_many(self, pipelines: int) -> Many | None:
        """The runs with ``pipelines`` pipelines."""
        return next((m for m in self.many if m.pipelines == pipelines), None)

    def find_window(self, window: int) -> WindowRun | None:
        """The runs with ``count_window(window)``."""
        return next((w for w in self.windows if w.window == window), None)

    def find_latency(self, implementation: str) -> ra.Latency | None:
        """The latency row of ``implementation``."""
        return next((lat for lat in self.latency if lat.implementation == implementation), None)

    def count(self, part: str, messages: int) -> None:
        """Record ``messages`` more checked by ``part``."""
        self.checked[part] = self.checked.get(part, 0) + messages


# -- children ---------------------------------------------------------------------------
class Tally:
    """One stream's windows in a consumer: checks each message comes once, in order."""

    def __init__(self, index: int, expected: int) -> None:
        self.index = index
        self.expected = expected
        self.messages = 0
        self.last_seq = 0
        self.t_last = 0.0

    def see(self, window: Any, now: float) -> str:
        """Account for ``window``; the problem found, or ""."""
        first, last, data = window.first_seq, window.last_seq, window.data
        where = f"stream s{self.index}, window {first}..{last}"
        if first != self.last_seq + 1 or len(data) != last - first + 1:
            return f"{where}: after seq {self.last_seq}, {len(data)} messages (lost, repeated or reordered)"
        if data[0]["k"] != self.messages or data[-1]["k"] != self.messages + len(data) - 1:
            return f"{where}: payloads {data[0]['k']}..{data[-1]['k']}, expected from {self.messages}"
        if data[0]["s"] != self.index:
            return f"{where}: a payload of stream s{data[0]['s']}"
        self.messages += len(data)
        self.last_seq = last
        self.t_last = now
        if self.messages > self.expected:
            return f"{where}: {self.messages} messages, more than the {self.expected} appended"
        return ""


class Pipelines:
    """``count`` pipelines ``stream(f"s{i}").count_window(window).sink(fn).start(consumer="c")``
    whose functions tally their windows; ``done`` is set once each saw ``expected``."""

    def __init__(self, url: str, count: int, window: int, expected: int) -> None:
        from minibatch_rx import stream

        self.tallies = [Tally(i, expected) for i in range(count)]
        self.problems: list[str] = []
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._left = count
        self.sources = [stream(f"s{i}", url=url) for i in range(count)]
        self.handles = [
            source.count_window(window).sink(self._consumer(tally)).start(consumer=CONSUMER)
            for source, tally in zip(self.sources, self.tallies, strict=True)
        ]

    def _consumer(self, tally: Tally) -> Callable[[Any], None]:
        def consume(window: Any) -> None:
            problem = tally.see(window, time.time())
            if problem or tally.messages == tally.expected:
                with self._lock:
                    if problem:
                        self.problems.append(problem)
                    else:
                        self._left -= 1
                    if problem or not self._left:
                        self.done.set()

        return consume

    def wait(self, timeout: float) -> None:
        """Wait until every pipeline saw its messages; raise on a problem or a timeout."""
        finished = self.done.wait(timeout)
        check(not self.problems, "; ".join(self.problems[:5]))
        check(finished, f"{self._left} of {len(self.tallies)} pipelines incomplete after {timeout:g} s")

    def stop(self) -> None:
        """Stop every pipeline; check each stopped cleanly and committed its last seq."""
        clean = [handle.stop(timeout=10) for handle in self.handles]
        for i, (handle, tally) in enumerate(zip(self.handles, self.tallies, strict=True)):
            check(clean[i] and handle.error is None, f"s{i}: stop {clean[i]}, error {handle.error!r}")
            committed = self.sources[i].position(CONSUMER)
            check(committed == tally.last_seq, f"s{i}: committed {committed}, last seq {tally.last_seq}")
        check(not self.problems, "; ".join(self.problems[:5]))


def child_many_producer(params: Doc) -> None:
    """Append ``n`` messages round-robin over ``pipelines`` streams, ``Stream.extend``
    batches of ``batch`` (built before the clock starts)."""
    from minibatch_rx.store import close_all
    from minibatch_rx.streams import Stream

    count, n, batch = params["pipelines"], params["n"], params["batch"]
    targets = [Stream.get_or_create(f"s{i}", params["url"]) for i in range(count)]
    made = [0] * count
    batches: list[tuple[Stream, list[Doc]]] = []
    for b in range(n // batch):
        s = b % count
        batches.append((targets[s], [{"s": s, "k": made[s] + j, "v": j * 0.5} for j in range(batch)]))
        made[s] += batch
    started = time.time()
    for target, docs in batches:
        target.extend(docs)
    finished = time.time()
    close_all()
    emit({"t_first": started, "t_done": finished})


def child_many_consumer(params: Doc) -> None:
    """The pipelines of one count, until every stream delivered its share."""
    from minibatch_rx.store import close_all

    count, n = params["pipelines"], params["n"]
    pipes = Pipelines(params["url"], count, params["window"], n // count)
    threads = threading.active_count()
    print("ready", flush=True)
    pipes.wait(params["timeout"])
    t_last = max(t.t_last for t in pipes.tallies)
    pipes.stop()
    close_all()
    emit({"t_last": t_last, "threads": threads, "checked": sum(t.messages for t in pipes.tallies)})


def child_idle(params: Doc) -> None:
    """Start the pipelines on empty streams, measure CPU and threads while idle, then
    check every pipeline delivers one window appended afterwards."""
    from minibatch_rx.store import close_all

    count, window = params["pipelines"], params["window"]
    before = threading.active_count()
    pipes = Pipelines(params["url"], count, window, window)
    time.sleep(params["settle"])
    threads = threading.active_count()
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(params["seconds"])
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    threads = threading.active_count()  # at the end: the pool has settled to what idling needs
    for i, source in enumerate(pipes.sources):
        source.extend([{"s": i, "k": k} for k in range(window)])
    pipes.wait(params["timeout"])
    pipes.stop()
    close_all()
    emit({"seconds": wall, "cpu": cpu, "before": before, "threads": threads, "checked": count * window})


def child_redis_idle(params: Doc) -> None:
    """One Redis client blocked in a single ``XREAD BLOCK`` on ``pipelines`` streams."""
    import redis

    client = redis.Redis.from_url(params["url"], socket_timeout=None)  # 8.x: 5 s by default
    client.ping()
    before = threading.active_count()
    print("ready", flush=True)
    cpu, wall = time.process_time(), time.monotonic()
    got = client.xread(
        {f"s{i}": "$" for i in range(params["pipelines"])}, block=int(params["seconds"] * 1000)
    )
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    check(not got, f"XREAD on empty streams returned {got!r}")
    client.close()
    emit({"seconds": wall, "cpu": cpu, "before": before, "threads": threading.active_count()})


def child_redis_producer(params: Doc) -> None:
    """``XADD`` one ``{"i", "t"}`` message every ``pace`` seconds (run_all's schedule)."""
    import redis

    client = redis.Redis.from_url(params["url"], socket_timeout=None)  # 8.x: 5 s by default
    client.ping()

    def append(doc: Doc) -> None:
        client.xadd(params["stream"], {"d": json.dumps(doc)})

    emit(ra.paced_appends(append, params["pace"], params["warmup"] + params["samples"]))
    client.close()


def child_redis_consumer(params: Doc) -> None:
    """``XREADGROUP ... BLOCK 0 COUNT 1`` then ``XACK``, recording ``time.time() - t``."""
    import redis

    client = redis.Redis.from_url(params["url"], socket_timeout=None)  # 8.x: 5 s by default
    name, group = params["stream"], "bench"
    client.xgroup_create(name, group, id="0", mkstream=True)
    latencies: list[float] = []
    order: list[int] = []
    total = params["warmup"] + params["samples"]
    print("ready", flush=True)
    while len(order) < total:
        reply: Any = client.xreadgroup(group, "c1", {name: ">"}, count=1, block=0)
        now = time.time()
        for _, entries in reply:
            for entry, fields in entries:
                doc = json.loads(fields[b"d"])
                latencies.append(now - doc["t"])
                order.append(doc["i"])
                client.xack(name, group, entry)
    summary: Any = client.xpending(name, group)
    pending = summary["pending"]
    client.close()
    emit({"latencies": latencies, "order": order, "pending": pending})


def child_read_path(params: Doc) -> None:
    """Fill a stream with ``n`` messages, then time the raw read and the pipeline, alternating."""
    from minibatch_rx.store import close_all
    from minibatch_rx.streams import Stream

    path, n = params["path"], params["n"]
    url = f"sqlite://{path}"
    source = Stream.get_or_create("r", url)
    for start in range(0, n, 1000):
        source.extend([{"i": i, "name": "x" * 20, "v": i * 0.5} for i in range(start, min(n, start + 1000))])
    conn = sqlite3.connect(path)
    raw, ours = [], []
    for r in range(params["rounds"] + 1):  # round 0: warm-up, not counted
        raw.append(raw_read(conn, "r", n))
        ours.append(pipeline_read(url, "r", n, f"read{r}"))
    conn.close()
    close_all()
    emit({"raw": raw[1:], "ours": ours[1:], "checked": n * params["rounds"]})


READ_SQL = "SELECT seq, ts, data FROM mb_messages WHERE stream = ? AND seq > ? ORDER BY seq LIMIT 1000"


def raw_read(conn: sqlite3.Connection, name: str, n: int) -> float:
    """Seconds to read the stream in pages of 1,000 with ``json.loads`` per row (checked)."""
    started = time.perf_counter()
    after = count = 0
    while True:
        rows = conn.execute(READ_SQL, (name, after)).fetchall()
        if not rows:
            break
        docs = [json.loads(row[2]) for row in rows]
        check(docs[0]["i"] == count and docs[-1]["i"] == count + len(docs) - 1, f"raw read at {after}")
        count += len(docs)
        after = rows[-1][0]
    seconds = time.perf_counter() - started
    check(count == n, f"raw read {count} of {n} messages")
    return seconds


def pipeline_read(url: str, name: str, n: int, consumer: str) -> float:
    """Seconds for ``count_window(100).map(fn).run(...)`` over the stream; ``fn`` checks
    each window follows the last (seq and payload) and returns its length."""
    from minibatch_rx import stream

    state = {"next": 1, "bad": 0}

    def size(window: Any) -> int:
        first, last, data = window.first_seq, window.last_seq, window.data
        if first != state["next"] or len(data) != last - first + 1 or data[0]["i"] != first - 1:
            state["bad"] += 1
        state["next"] = last + 1
        return len(data)

    source = stream(name, url=url)
    started = time.perf_counter()
    handle = source.count_window(WINDOW).map(size).run(consumer=consumer, max_windows=n // WINDOW)
    seconds = time.perf_counter() - started
    check(state["bad"] == 0, f"{state['bad']} windows out of order or incomplete")
    check(
        handle.windows == n // WINDOW and handle.position == n,
        f"{handle.windows} windows to {handle.position}",
    )
    check(state["next"] == n + 1, f"the windows ended at seq {state['next'] - 1}, not {n}")
    return seconds


def child_producer_bench(params: Doc) -> None:
    """``bench_producer.run`` at the given sizes."""
    with tempfile.TemporaryDirectory(prefix="bench-streams-producer-") as workdir:
        results = bench_producer.run(params["sizes"], params["rounds"], Path(workdir))
    emit({"results": [r.as_json() for r in results]})


CHILDREN: dict[str, Callable[[Doc], None]] = {
    "many-producer": child_many_producer,
    "many-consumer": child_many_consumer,
    "idle": child_idle,
    "redis-idle": child_redis_idle,
    "redis-producer": child_redis_producer,
    "redis-consumer": child_redis_consumer,
    "read-path": child_read_path,
    "producer-bench": child_producer_bench,
}


# -- redis-server, started and stopped here ----------------------------------------------
def redis_missing() -> str | None:
    """Why the Redis peers cannot run here, or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not on the PATH: the Redis peers were skipped"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the Python client `redis` is not installed (pip install -e '.[bench]'): Redis peers skipped"
    return None


def redis_versions() -> str:
    """The redis-server and redis-py versions, as the tables name them."""
    import redis

    exe = shutil.which("redis-server")
    line = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=30).stdout
    server = next((part.split("=", 1)[1] for part in line.split() if part.startswith("v=")), line.strip())
    return f"redis-server {server}, redis-py {redis.__version__}"


def free_port() -> int:
    """A loopback TCP port free at the time of the call."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class RedisServer:
    """A redis-server this script started."""

    url: str
    pid: int


@contextlib.contextmanager
def redis_server(durable: bool, workdir: Path) -> Iterator[RedisServer]:
    """A redis-server on a free loopback port with its data in ``workdir``: no persistence
    (``--save "" --appendonly no``) or every write fsynced (``--appendonly yes
    --appendfsync always``); stopped (its process only) at the end."""
    import redis

    exe = shutil.which("redis-server")
    check(exe is not None, "redis-server is not on the PATH")
    port = free_port()
    data = workdir / f"redis-{port}"
    data.mkdir()
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    log = data / "redis.log"
    command = [str(exe), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--save", ""]
    process = subprocess.Popen(
        [*command, *persistence, "--daemonize", "no", "--logfile", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise BenchError(f"redis-server exited with {process.returncode}: {log_text(log)}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise BenchError(f"redis-server did not answer on port {port}: {log_text(log)}") from None
                time.sleep(0.05)
        config = client.config_get("appendonly") | client.config_get("appendfsync")
        wanted = {"appendonly": "yes", "appendfsync": "always"} if durable else {"appendonly": "no"}
        check(all(config.get(k) == v for k, v in wanted.items()), f"redis-server config {config}")
        client.close()
        yield RedisServer(f"redis://127.0.0.1:{port}/0", process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def log_text(path: Path) -> str:
    """The end of a redis-server log, for an error message."""
    return path.read_text()[-2000:] if path.exists() else "(no log)"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (from /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the parent ---------------------------------------------------------------------------
def child_report(mode: str, params: Doc) -> Doc:
    """Run one child to its end and return its report (it is killed on any error)."""
    child = ra.Child(mode, params, SCRIPT)
    try:
        return child.result(ra.CHILD_TIMEOUT)
    finally:
        child.kill()


def measure_many(report: Report, sizes: Sizes, workdir: Path) -> None:
    """Section 1: end-to-end msg/s with each pipeline count, the counts alternating."""
    n = sizes.many_messages
    for count in sizes.pipelines:
        check(n % (count * sizes.batch) == 0, f"{n} messages do not split into {count} streams' batches")
        check(n // count % WINDOW == 0, f"{n // count} messages per stream are not whole windows")
    runs = {count: Many(count, n) for count in sizes.pipelines}
    for _ in range(sizes.many_repeats):
        for count in sizes.pipelines:
            params: Doc = {"pipelines": count, "n": n, "batch": sizes.batch, "window": WINDOW}
            with ra.fresh_store("sqlite", workdir, None, f"many{count}") as url:
                params |= {"url": url, "timeout": ra.CHILD_TIMEOUT}
                consumed, produced = ra.run_pair(("many-consumer", params), ("many-producer", params), SCRIPT)
            check(consumed["checked"] == n, f"{count} pipelines: {consumed['checked']} of {n} messages")
            report.count("many pipelines", consumed["checked"])
            runs[count].rates.append(n / (consumed["t_last"] - produced["t_first"]))
            runs[count].threads.append(consumed["threads"])
    report.many = list(runs.values())


def measure_idle(report: Report, sizes: Sizes, workdir: Path, redis_ok: bool) -> None:
    """Section 1, idle: CPU and threads of a consumer process with each pipeline count
    started and no data; then one Redis client blocked on the most streams."""
    for count in sizes.pipelines:
        params = {"pipelines": count, "window": WINDOW, "seconds": sizes.idle_seconds, "settle": sizes.settle}
        with ra.fresh_store("sqlite", workdir, None, f"idle{count}") as url:
            out = child_report("idle", params | {"url": url, "timeout": ra.CHILD_TIMEOUT})
        check(out["checked"] == count * WINDOW, f"idle {count}: {out['checked']} messages checked")
        report.count("idle pipelines", out["checked"])
        report.idle.append(Idle(OURS, count, out["seconds"], out["cpu"], out["before"], out["threads"]))
    if not redis_ok:
        return
    count = max(sizes.pipelines)
    with redis_server(False, workdir) as server:
        child = ra.Child(
            "redis-idle", {"url": server.url, "pipelines": count, "seconds": sizes.idle_seconds}, SCRIPT
        )
        try:
            child.wait_for("ready", ra.READY_TIMEOUT)
            server_cpu, wall = cpu_seconds(server.pid), time.monotonic()
            out = child.result(ra.CHILD_TIMEOUT)
            server_after, wall = cpu_seconds(server.pid), time.monotonic() - wall
        finally:
            child.kill()
    idle = Idle(REDIS_CLIENT, count, out["seconds"], out["cpu"], out["before"], out["threads"])
    if server_cpu is not None and server_after is not None:
        idle.server_cpu_seconds = (server_after - server_cpu) * out["seconds"] / wall  # over the same span
    report.idle.append(idle)


def measure_latency(report: Report, sizes: Sizes, workdir: Path, redis_ok: bool) -> None:
    """Section 2: ours (run_all's latency children), then Redis plain and durable, same pace."""
    total = sizes.latency_warmup + sizes.latency_samples
    with ra.fresh_store("sqlite", workdir, None, "latency") as url:
        ours = ra.measure_latency(
            "sqlite", OURS, url, sizes.latency_warmup, sizes.latency_samples, sizes.pace
        )  # checks every message arrived once, in order
    report.latency.append(ours)
    report.count("latency", total)
    with ra.fresh_store("sqlite", workdir, None, "latency-normal") as url:
        normal = replace(ra.measure_latency(
            "sqlite", OURS, f"{url}?synchronous=normal", sizes.latency_warmup,
            sizes.latency_samples, sizes.pace,
        ), implementation=OURS_NORMAL)
    report.latency.append(normal)
    report.count("latency", total)
    if not redis_ok:
        return
    for durable, label in ((False, REDIS_PLAIN), (True, REDIS_DURABLE)):
        with redis_server(durable, workdir) as server:
            params = {
                "url": server.url,
                "stream": "latency",
                "warmup": sizes.latency_warmup,
                "samples": sizes.latency_samples,
                "pace": sizes.pace,
            }
            consumed, produced = ra.run_pair(("redis-consumer", params), ("redis-producer", params), SCRIPT)
        check(consumed["order"] == list(range(total)), f"{label}: messages lost, repeated or out of order")
        check(consumed["pending"] == 0, f"{label}: {consumed['pending']} messages not acknowledged")
        report.count("latency", total)
        report.latency.append(
            ra.Latency(
                "redis",
                label,
                sizes.pace,
                latencies=consumed["latencies"][sizes.latency_warmup :],
                append_seconds=produced["append_seconds"][sizes.latency_warmup :],
                late_sends=produced["late"],
            )
        )


def measure_read_path(report: Report, sizes: Sizes, workdir: Path) -> None:
    """Section 3: the raw read against the pipeline on the same backlog (one child)."""
    check(sizes.backlog % WINDOW == 0, f"a backlog of {sizes.backlog} is not whole windows")
    with ra.fresh_store("sqlite", workdir, None, "read") as url:
        path = url.removeprefix("sqlite://")
        out = child_report("read-path", {"path": path, "n": sizes.backlog, "rounds": sizes.read_rounds})
    check(out["checked"] == sizes.backlog * sizes.read_rounds, f"read path checked {out['checked']}")
    report.count("read path", out["checked"])
    report.read = ReadPath(sizes.backlog, out["raw"], out["ours"])


def measure_windows(report: Report, sizes: Sizes, workdir: Path) -> None:
    """Section 4: run_all's end-to-end children with each count window, alternating."""
    n = sizes.window_messages
    runs = {w: WindowRun(w, n) for w in sizes.windows}
    for _ in range(sizes.window_repeats):
        for window in sizes.windows:
            check(n % window == 0, f"{n} messages are not whole windows of {window}")
            with ra.fresh_store("sqlite", workdir, None, f"window{window}") as url:
                result = ra.measure_throughput("sqlite", OURS, url, n, window=window)  # checks order, count
            report.count("per window", n)
            runs[window].rates.append(result.rate)
    report.windows = list(runs.values())


def measure_producer(report: Report, sizes: Sizes) -> None:
    """Section 5: bench_producer.py's run, in a child process."""
    out = child_report("producer-bench", {"sizes": sizes.producer, "rounds": sizes.producer_rounds})
    report.producer = out["results"]  # bench_producer checks every message is stored
    report.count("producer", sum(r["messages"] for r in report.producer))


def run_benchmark(sizes: Sizes) -> Report:
    """Every part at ``sizes``; raises if a self-check fails."""
    report = Report(sizes.name)
    missing = redis_missing()
    if missing:
        report.skipped.append(missing)
    else:
        report.peer = redis_versions()
    workdir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    started = time.perf_counter()

    def step(name: str) -> None:
        print(f"   streams: {name} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    try:
        step("many pipelines")
        measure_many(report, sizes, workdir)
        step("idle pipelines")
        measure_idle(report, sizes, workdir, missing is None)
        step("latency")
        measure_latency(report, sizes, workdir, missing is None)
        step("read path")
        measure_read_path(report, sizes, workdir)
        step("per-window cost")
        measure_windows(report, sizes, workdir)
        step("buffered producer")
        measure_producer(report, sizes)
        step("done")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


# -- targets and tables ---------------------------------------------------------------------
@dataclass
class Target:
    """One target of issue 12 beside what the run measured."""

    name: str
    wanted: str
    measured: str
    passed: bool | None  # None: not measured


def producer_rate(report: Report) -> float | None:
    """The buffered producer's msg/s (one thread), if it ran."""
    row = next((r for r in report.producer if r["mode"] == "producer"), None)
    return None if row is None else float(row["msgs_per_s"])


def targets(report: Report) -> list[Target]:
    """The targets of issue 12, points 1 to 5."""
    out: list[Target] = []
    counts = [m.pipelines for m in report.many]
    one = report.find_many(min(counts)) if counts else None
    most = report.find_many(max(counts)) if counts else None
    if one is not None and most is not None:
        ratio = most.rate / one.rate
        out.append(
            Target(
                f"{most.pipelines} pipelines in one process / {one.pipelines}, end to end",
                f">= {TARGET_MANY:g}x",
                f"{ratio:.2f}x ({most.rate:,.0f} vs {one.rate:,.0f} msg/s)",
                ratio >= TARGET_MANY,
            )
        )
    idle = [i for i in report.idle if i.who == OURS]
    if idle:
        top = max(idle, key=lambda i: i.pipelines)
        peer = next((i for i in report.idle if i.who == REDIS_CLIENT), None)
        out.append(
            Target(
                f"Idle CPU of the consumer process, {top.pipelines} pipelines",
                f"<= {TARGET_IDLE_CPU:g}% of a core",
                f"{top.cpu_percent:.2f}%" + (f" (Redis client: {peer.cpu_percent:.2f}%)" if peer else ""),
                top.cpu_percent <= TARGET_IDLE_CPU,
            )
        )
        out.append(
            Target(
                f"Threads with {' / '.join(str(i.pipelines) for i in idle)} pipelines idle (after settling)",
                "constant",
                " / ".join(str(i.threads) for i in idle),
                len({i.threads for i in idle}) == 1,
            )
        )
    # The default store flushes each commit to disk, as Redis with AOF fsync always does;
    # synchronous=normal does not, as Redis without persistence does not: each beside its match.
    for variant, matched, flushes in ((OURS, REDIS_DURABLE, "synchronous=full (default)"),
                                      (OURS_NORMAL, REDIS_PLAIN, "synchronous=normal")):
        ours = report.find_latency(variant)
        if ours is None:
            continue
        for name, wanted in (("p50", TARGET_P50), ("p99", TARGET_P99)):
            value = ours.p50 if name == "p50" else ours.p99
            peers = [lat for lat in report.latency if lat.implementation in (REDIS_PLAIN, REDIS_DURABLE)]
            peers.sort(key=lambda lat: lat.implementation != matched)
            beside = ", ".join(f"{peer_name(p)} {p.p50 if name == 'p50' else p.p99:.2f} ms" for p in peers)
            out.append(
                Target(
                    f"Cross-process latency {name}, {flushes}, one message every {ours.pace * 1000:g} ms",
                    f"<= {wanted:g} ms",
                    f"{value:.2f} ms, append alone {ours.append_p50:.2f} ms"
                    + (f" ({beside})" if beside else ""),
                    value <= wanted,
                )
            )
    if report.read is not None:
        read = report.read
        out.append(
            Target(
                f"Read path, {read.messages:,} messages: count_window(100) pipeline / raw SELECT + loads",
                f">= {TARGET_READ:g}x",
                f"{read.ratio:.2f}x ({read.rate(read.ours):,.0f} vs {read.rate(read.raw):,.0f} msg/s)",
                read.ratio >= TARGET_READ,
            )
        )
    w1, w100, w1000 = report.find_window(1), report.find_window(100), report.find_window(1000)
    if w1 is not None and w1000 is not None:
        ratio = w1.rate / w1000.rate
        out.append(
            Target(
                "End to end, count_window(1) / count_window(1000)",
                f">= {TARGET_WINDOW_1:g}x",
                f"{ratio:.2f}x ({w1.rate:,.0f} vs {w1000.rate:,.0f} msg/s)",
                ratio >= TARGET_WINDOW_1,
            )
        )
    if w100 is not None:
        out.append(
            Target(
                f"SQLite end to end, count_window(100), {w100.messages:,} messages",
                f">= {TARGET_E2E_100:,.0f} msg/s",
                f"{w100.rate:,.0f} msg/s",
                w100.rate >= TARGET_E2E_100,
            )
        )
    rate = producer_rate(report)
    if rate is not None:
        out.append(
            Target(
                "Buffered producer, single appends from one thread (bench_producer.py)",
                f">= {bench_producer.TARGET:,.0f} msg/s",
                f"{rate:,.0f} msg/s",
                rate >= bench_producer.TARGET,
            )
        )
    return out


def peer_name(lat: ra.Latency) -> str:
    """A short name of a latency row, for the targets table."""
    return {REDIS_PLAIN: "Redis", REDIS_DURABLE: "Redis AOF always"}.get(
        lat.implementation, lat.implementation
    )


def verdict(passed: bool | None) -> str:
    """PASS, FAIL or not measured."""
    return "not measured" if passed is None else ("PASS" if passed else "FAIL")


def rates(values: Sequence[float]) -> str:
    """Rates as a comma-separated list of whole msg/s."""
    return ", ".join(f"{v:,.0f}" for v in values)


Rows = list[tuple[str, ...]]


def many_table(report: Report) -> str:
    """The many-pipelines table."""
    base = report.many[0]
    rows: Rows = [
        (
            str(m.pipelines),
            f"{m.messages:,}",
            f"{m.rate:,.0f}",
            rates(m.rates),
            f"{m.rate / base.rate:.2f}x",
            ", ".join(map(str, sorted(set(m.threads)))),
        )
        for m in report.many
    ]
    header = (
        "pipelines",
        "messages",
        "end-to-end msg/s (median)",
        "each run",
        f"/ {base.pipelines}",
        "threads",
    )
    return ra.table(header, rows)


def idle_table(report: Report) -> str:
    """The idle-cost table."""
    rows: Rows = [
        (
            i.who,
            str(i.pipelines),
            f"{i.seconds:.1f}",
            f"{i.cpu_percent:.2f}",
            str(i.threads_before),
            str(i.threads),
            "-" if i.server_percent is None else f"{i.server_percent:.2f}",
        )
        for i in report.idle
    ]
    header = (
        "process",
        "pipelines / streams",
        "idle s",
        "CPU % of a core",
        "threads before",
        "threads idle",
        "redis-server CPU %",
    )
    return ra.table(header, rows)


def latency_table(report: Report) -> str:
    """The latency table, ours and the Redis peers."""
    rows: Rows = [
        (
            lat.implementation,
            f"{lat.pace * 1000:g}",
            f"{len(lat.latencies):,}",
            f"{lat.p50:.3f}",
            f"{lat.percentile(90):.3f}",
            f"{lat.p99:.3f}",
            f"{lat.max:.3f}",
            f"{lat.append_p50:.3f}",
            str(lat.late_sends),
        )
        for lat in report.latency
    ]
    header = (
        "implementation",
        "pace ms",
        "samples",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "append p50 ms",
        "late sends",
    )
    return ra.table(header, rows)


def read_table(read: ReadPath) -> str:
    """The read-path table."""
    rows: Rows = [
        (
            "raw: `SELECT ... LIMIT 1000` + `json.loads` per row",
            f"{read.rate(read.raw):,.0f}",
            rates([read.messages / t for t in read.raw]),
            "1.00x",
        ),
        (
            "ours: `count_window(100).map(fn).run(...)`",
            f"{read.rate(read.ours):,.0f}",
            rates([read.messages / t for t in read.ours]),
            f"{read.ratio:.2f}x",
        ),
    ]
    return ra.table((f"reader, {read.messages:,} messages", "msg/s (median)", "each round", "/ raw"), rows)


def windows_table(report: Report) -> str:
    """The per-window cost table."""
    top = report.windows[-1]
    rows: Rows = [
        (
            f"count_window({w.window})",
            f"{w.messages:,}",
            f"{w.rate:,.0f}",
            rates(w.rates),
            f"{w.rate / top.rate:.2f}x",
        )
        for w in report.windows
    ]
    header = ("window", "messages", "end-to-end msg/s (median)", "each run", f"/ count_window({top.window})")
    return ra.table(header, rows)


def producer_table(report: Report) -> str:
    """bench_producer.py's modes."""
    rows: Rows = [
        (
            str(r["mode"]),
            f"{r['messages']:,}",
            f"{r['msgs_per_s']:,.0f}",
            f"{r['messages'] / r['batches']:,.0f}" if r.get("batches") else "-",
        )
        for r in report.producer
    ]
    return ra.table(("mode", "messages", "msg/s", "per batch"), rows)


def render(report: Report, with_targets: bool = True) -> str:
    """The tables of ``report`` (markdown), the messages checked, skipped peers, and the targets."""
    parts: list[str] = []
    if report.many:
        parts.append(
            f"**Many pipelines** in one consumer process, `count_window({WINDOW})`:\n\n" + many_table(report)
        )
    if report.idle:
        parts.append("**Idle cost**, pipelines started, no data:\n\n" + idle_table(report))
    if report.latency:
        peer = f" (Redis: {report.peer})" if report.peer else ""
        parts.append(f"**Cross-process latency**, one message at a time{peer}:\n\n" + latency_table(report))
    if report.read is not None:
        parts.append("**Read path**, one process, a pre-filled stream:\n\n" + read_table(report.read))
    if report.windows:
        parts.append("**Per-window cost**, producer and consumer processes:\n\n" + windows_table(report))
    if report.producer:
        parts.append("**Buffered producer** (`bench_producer.py`):\n\n" + producer_table(report))
    checked = ", ".join(f"{part} {n:,}" for part, n in report.checked.items())
    parts.append(f"Messages checked delivered once and in order: {checked}.")
    parts += [f"**Skipped:** {note}." for note in report.skipped]
    if with_targets:
        rows: Rows = [(t.name, t.wanted, t.measured, verdict(t.passed)) for t in targets(report)]
        parts.append("Targets:\n\n" + ra.table(("target", "wanted", "measured", "result"), rows))
    return "\n\n".join(parts)


def plot(report: Report, path: Path) -> bool:
    """Latency percentiles (ours and Redis) and throughput and idle cost against the number
    of pipelines, as a PNG; False (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        print(
            "note: matplotlib is not installed (pip install -e '.[bench]'); no plot written", file=sys.stderr
        )
        return False
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    ax = axes[0]
    qs = (50.0, 90.0, 99.0, 99.9)
    width = 0.8 / max(1, len(report.latency))
    for j, lat in enumerate(report.latency):
        xs = [q + (j - (len(report.latency) - 1) / 2) * width for q in range(len(qs))]
        ax.bar(xs, [lat.percentile(q) for q in qs], width, label=lat.implementation)
    ax.axhline(TARGET_P50, color="tab:green", linestyle=":", label=f"target p50 {TARGET_P50:g} ms")
    ax.axhline(TARGET_P99, color="tab:red", linestyle=":", label=f"target p99 {TARGET_P99:g} ms")
    ax.set_xticks(range(len(qs)), [f"p{q:g}" for q in qs])
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("append -> delivered (ms, log)")
    pace = report.latency[0].pace * 1000 if report.latency else 0
    ax.set_title(f"Cross-process latency, one message every {pace:g} ms")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    ax = axes[1]
    if report.many:
        counts = [m.pipelines for m in report.many]
        ax.plot(counts, [m.rate for m in report.many], "o-", label=f"{OURS}, median")
        for m in report.many:
            ax.scatter([m.pipelines] * len(m.rates), m.rates, color="tab:blue", alpha=0.4, s=12)
        ax.axhline(
            TARGET_MANY * report.many[0].rate,
            color="tab:red",
            linestyle=":",
            label=f"target: {TARGET_MANY:g}x one pipeline",
        )
        ax.set_xscale("log")
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    ax.set_xlabel("pipelines in the consumer process")
    ax.set_ylabel("end-to-end msg/s")
    ax.set_title("Throughput against pipelines per process (SQLite)")
    ax = axes[2]
    idle = [i for i in report.idle if i.who == OURS]
    if idle:
        labels = [str(i.pipelines) for i in idle]
        ax.bar(labels, [i.cpu_percent for i in idle], color="tab:blue", label="CPU % of a core")
        ax.axhline(TARGET_IDLE_CPU, color="tab:red", linestyle=":", label=f"target {TARGET_IDLE_CPU:g}%")
        twin = ax.twinx()
        twin.plot(labels, [i.threads for i in idle], "s--", color="tab:orange", label="threads")
        twin.set_ylabel("threads")
        twin.set_ylim(bottom=0)
        peer = next((i for i in report.idle if i.who == REDIS_CLIENT), None)
        title = "Idle consumer process" + (f" (Redis client: {peer.cpu_percent:.2f}%)" if peer else "")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
        twin.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("pipelines started, no data")
    ax.set_ylabel("CPU % of one core")
    fig.suptitle(f"minibatch_rx: many streams, latency beside Redis Streams ({report.sizes} sizes)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Run every part at the chosen sizes and print the tables and targets (or run one child)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about a minute)")
    parser.add_argument(
        "--tiny", action="store_true", help="the smoke test's sizes (seconds; numbers meaningless)"
    )
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the report and targets as JSON")
    parser.add_argument("--plot", metavar="PATH", type=Path, help="also draw the plot (PNG) there")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        mode, params = args.child
        CHILDREN[mode](json.loads(params))
        return 0
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    report = run_benchmark(sizes)
    print(render(report))
    if args.json:
        args.json.write_text(
            json.dumps({"report": asdict(report), "targets": [asdict(t) for t in targets(report)]}, indent=1)
        )
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
