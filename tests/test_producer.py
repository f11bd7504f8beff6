"""The buffered producer (``Stream.producer``): batching, handles, flush and
close, backpressure, failures, and many threads in many processes.

Nothing here sleeps to wait for a result: tests wait on handles, flushes and
events with bounded timeouts. A long ``linger`` ('1h') keeps a batch open for
as long as a test needs to look at it; a gated store holds the writer inside
``Store.append`` until the test lets it go.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from minibatch_rx import InvalidArgumentError, InvalidPayloadError, StoreUnavailableError, Stream, stream
from minibatch_rx.producer import (
    AppendHandle,
    Producer,
    ProducerClosedError,
    ProducerError,
    ProducerTimeoutError,
)
from minibatch_rx.store import MemoryStore

WAIT = 30.0  # seconds: the bound on every wait for the writer
WORKER = Path(__file__).parent / "workers" / "producer_worker.py"
BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_producer.py"


class GatedStore(MemoryStore):
    """A memory store whose appends wait at ``gate`` (open by default) and
    raise ``failure`` while it is set."""

    def __init__(self) -> None:
        super().__init__(f"memory://{uuid.uuid4().hex}")
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()  # an append is held at the closed gate
        self.failure: Exception | None = None
        self.calls: list[int] = []  # the size of each append call

    def append(
        self, stream: str, payloads: Sequence[Mapping[str, Any]], keys: Sequence[str | None] | None = None
    ) -> list[int]:
        self.calls.append(len(payloads))
        if not self.gate.is_set():
            self.waiting.set()
            assert self.gate.wait(WAIT), "the test never opened the gate"
        if self.failure is not None:
            raise self.failure
        return super().append(stream, payloads, keys)


def gated_stream() -> tuple[Stream, GatedStore]:
    store = GatedStore()
    return Stream("gated", store=store), store


def data(s: Stream) -> list[dict[str, Any]]:
    return [m.data for m in s.read()]


# -- order, seqs, batching -------------------------------------------------------------
def test_one_thread_keeps_its_order_and_gets_consecutive_seqs(fast_url: str) -> None:
    s = stream("single", fast_url)
    with s.producer(linger="5ms", max_batch=100) as producer:
        handles = [producer.append({"i": i}) for i in range(2500)]
        producer.flush()
        assert all(h.done() for h in handles)
        assert [h.result() for h in handles] == list(range(1, 2501))
        assert 25 <= producer.batches < 2500  # batched: full batches of 100 at most
    assert [(m.seq, m.data["i"]) for m in s.read()] == [(i + 1, i) for i in range(2500)]


def test_a_batch_is_one_store_append_of_at_most_max_batch() -> None:
    s, store = gated_stream()
    with s.producer(linger="1h", max_batch=10) as producer:
        handles = [producer.append({"i": i}) for i in range(25)]
        # Two full batches go without waiting for the linger; the third waits.
        assert handles[19].result(timeout=WAIT) == 20
        assert not handles[20].done()
        assert store.calls == [10, 10]
        producer.flush()
        assert store.calls == [10, 10, 5]
        assert handles[24].result(timeout=0) == 25


def test_max_bytes_bounds_a_batch() -> None:
    s, store = gated_stream()
    padded = {"pad": "x" * 30}  # 40 bytes of JSON
    with s.producer(linger="1h", max_batch=1000, max_bytes=100) as producer:
        handles = [producer.append(padded) for _ in range(5)]
        assert handles[3].result(timeout=WAIT) == 4  # a third would pass 100 bytes
        assert not handles[4].done()
        big = producer.append({"pad": "y" * 500})  # larger than max_bytes: a batch of its own
        assert big.result(timeout=WAIT) == 6
        assert store.calls == [2, 2, 1, 1]


def test_linger_is_counted_from_the_first_message() -> None:
    s = stream("linger", f"memory://{uuid.uuid4().hex}")
    with s.producer(linger="50ms") as producer:
        started = time.monotonic()
        handle = producer.append({"n": 1})
        assert handle.result(timeout=WAIT) == 1  # no flush: the linger ran out
        assert time.monotonic() - started >= 0.045


def test_many_threads_keep_each_threads_order(fast_url: str) -> None:
    s = stream("threads", fast_url)
    threads, per_thread = 8, 500
    results: dict[int, list[int]] = {}
    go = threading.Barrier(threads)
    with s.producer(linger="1ms", max_batch=64) as producer:

        def run(t: int) -> None:
            go.wait(WAIT)
            handles = [producer.append({"t": t, "i": i}) for i in range(per_thread)]
            results[t] = [h.result(timeout=WAIT) for h in handles]

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(WAIT)
        assert not any(worker.is_alive() for worker in workers)
    stored = {m.seq: m.data for m in s.read()}
    assert sorted(stored) == list(range(1, threads * per_thread + 1))
    for t, seqs in results.items():
        assert seqs == sorted(seqs)
        assert [stored[seq] for seq in seqs] == [{"t": t, "i": i} for i in range(per_thread)]
    order = [stored[seq]["t"] for seq in sorted(stored)]
    assert sum(a != b for a, b in itertools.pairwise(order)) >= threads  # they did interleave


def test_one_writer_thread_however_many_appends(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    real_start = threading.Thread.start

    def counting_start(thread: threading.Thread) -> None:
        started.append(thread.name)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    s = stream("one-writer", f"memory://{uuid.uuid4().hex}")
    with s.producer(linger=0, max_batch=10) as producer:
        for i in range(1000):
            producer.append({"i": i})
    assert started == ["minibatch-producer-one-writer"]
    assert s.count() == 1000


def test_an_idle_producer_does_not_spin() -> None:
    s = stream("idle", f"memory://{uuid.uuid4().hex}")
    with s.producer(linger="1ms") as producer:
        producer.append({"n": 1}).result(timeout=WAIT)
        cpu = time.process_time()
        threading.Event().wait(0.3)  # idle on purpose: the writer must sleep on its condition
        assert time.process_time() - cpu < 0.1


# -- handles ------------------------------------------------------------------------------
def test_handle_is_future_like() -> None:
    s = stream("handles", f"memory://{uuid.uuid4().hex}")
    with s.producer(linger="1h") as producer:
        handle = producer.append({"n": 1})
        assert not handle.done() and handle.running()
        assert not handle.cancel() and not handle.cancelled()
        assert repr(handle) == "<AppendHandle pending>"
        with pytest.raises(ProducerTimeoutError):
            handle.result(timeout=0.01)
        with pytest.raises(TimeoutError):  # what concurrent.futures raises too
            handle.exception(timeout=0)
        producer.flush()
        assert handle.done() and not handle.running()
        assert handle.result() == 1 and handle.exception() is None
        assert repr(handle) == "<AppendHandle seq=1>"


def test_done_callbacks_run_once_resolved() -> None:
    s = stream("callbacks", f"memory://{uuid.uuid4().hex}")
    seen: list[tuple[int, str]] = []
    called = threading.Event()

    def record(handle: AppendHandle) -> None:
        seen.append((handle.result(), threading.current_thread().name))
        called.set()

    def broken(handle: AppendHandle) -> None:
        raise RuntimeError("a bug in a callback")

    with s.producer(linger="1h") as producer:
        handle = producer.append({"n": 1})
        handle.add_done_callback(broken)  # logged; the others still run
        handle.add_done_callback(record)
        assert not called.is_set()
        producer.flush()
        assert called.wait(WAIT)
        assert seen == [(1, "minibatch-producer-callbacks")]
        handle.add_done_callback(record)  # already resolved: runs here, now
        assert seen[-1] == (1, threading.current_thread().name)


def test_a_callback_may_append_but_not_block_the_writer() -> None:
    s = stream("callback-append", f"memory://{uuid.uuid4().hex}")
    problems: list[BaseException] = []
    follow_up: list[AppendHandle] = []
    done = threading.Event()

    def chain(handle: AppendHandle) -> None:
        follow_up.append(producer.append({"after": handle.result()}))
        try:
            producer.flush()
        except ProducerError as exc:
            problems.append(exc)
        done.set()

    with s.producer(linger="1h") as producer:
        producer.append({"n": 1}).add_done_callback(chain)
        producer.flush()
        assert done.wait(WAIT)
    assert "done callback" in str(problems[0])
    assert follow_up[0].result(timeout=WAIT) == 2
    assert data(s) == [{"n": 1}, {"after": 1}]


# -- flush and close -------------------------------------------------------------------
def test_flush_returns_once_everything_before_it_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    s = stream("durable", f"sqlite://{path}")
    producer = s.producer(linger="1h")
    producer.flush()  # nothing to do
    handles = [producer.append({"i": i}) for i in range(10)]
    assert not any(h.done() for h in handles)
    producer.flush()
    assert all(h.done() for h in handles)
    # Committed: another connection, as another process would use, sees them all.
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM mb_messages").fetchone() == (10,)
    producer.close()


def test_close_flushes_then_refuses_appends(fast_url: str) -> None:
    s = stream("close", fast_url)
    producer = s.producer(linger="1h")
    handles = [producer.append({"i": i}) for i in range(3)]
    producer.close()
    assert producer.closed and producer.pending == 0
    assert [h.result(timeout=0) for h in handles] == [1, 2, 3]
    with pytest.raises(ProducerClosedError, match="closed"):
        producer.append({"i": 3})
    producer.close()  # again: nothing more to do
    producer.flush()
    assert s.count() == 3


def test_context_manager_closes_and_stores_even_after_an_exception() -> None:
    s = stream("ctx", f"memory://{uuid.uuid4().hex}")
    with pytest.raises(KeyError), s.producer(linger="1h") as producer:
        handle = producer.append({"n": 1})
        raise KeyError("the caller's own error")
    assert producer.closed
    assert handle.result(timeout=0) == 1
    assert data(s) == [{"n": 1}]


def test_flush_timeout_then_success() -> None:
    s, store = gated_stream()
    with s.producer(linger=0) as producer:
        store.gate.clear()
        handle = producer.append({"n": 1})
        assert store.waiting.wait(WAIT)
        with pytest.raises(ProducerTimeoutError, match="flush"):
            producer.flush(timeout=0.02)
        store.gate.set()
        producer.flush(timeout=WAIT)
        assert handle.result(timeout=0) == 1


def test_an_open_producer_is_flushed_when_the_interpreter_exits(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'exit.db'}"
    code = (
        "import sys\nfrom minibatch_rx import stream\n"
        "p = stream('exit', sys.argv[1]).producer(linger='1h')\n"
        "for i in range(10):\n    p.append({'i': i})\n"
        "print(p.pending)\n"
    )
    run = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "10"  # nothing was stored before the exit
    assert [m.data["i"] for m in stream("exit", url).read()] == list(range(10))


def test_a_forked_child_cannot_use_its_parents_producer() -> None:
    s = stream("fork", f"memory://{uuid.uuid4().hex}")
    with s.producer(linger="1h") as producer:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what append does, then leave at once
            try:
                producer.append({"n": 1})
                outcome = b"appended"
            except ProducerClosedError as exc:
                outcome = b"closed" if "parent process" in str(exc) else b"wrong message"
            os.write(write, outcome)
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            assert pipe.read() == b"closed"
        assert os.waitpid(pid, 0)[1] == 0
        handle = producer.append({"n": 2})  # the parent's producer still works
        producer.flush()
        assert handle.result(timeout=0) == 1
    assert data(s) == [{"n": 2}]


# -- input checks ---------------------------------------------------------------------------
def test_a_bad_payload_raises_in_the_callers_thread_and_nothing_is_stored(fast_url: str) -> None:
    s = stream("bad", fast_url)
    with s.producer(linger="1h") as producer:
        good = producer.append({"n": 1})
        with pytest.raises(InvalidPayloadError, match=r"payload\['when'\]: set"):
            producer.append({"when": {1, 2}})
        with pytest.raises(InvalidPayloadError, match="must be a dict"):
            producer.append([1, 2])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="key"):
            producer.append({"n": 2}, key="")
        assert producer.pending == 1
        producer.flush()
    assert good.result(timeout=0) == 1
    assert data(s) == [{"n": 1}]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"linger": "-1ms"}, "linger"),
        ({"linger": "soon"}, "linger"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_bytes": -5}, "max_bytes"),
        ({"max_pending": 0}, "max_pending"),
        ({"max_batch": 100, "max_pending": 50}, "max_pending"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    s = stream("settings", f"memory://{uuid.uuid4().hex}")
    with pytest.raises(InvalidArgumentError, match=problem):
        s.producer(**kwargs)


def test_the_payload_is_copied_at_append() -> None:
    s = stream("copy", f"memory://{uuid.uuid4().hex}")
    doc: dict[str, Any] = {}
    with s.producer(linger="1h") as producer:
        for i in range(3):
            doc["i"] = i  # one dict, reused: each message keeps its own value
            producer.append(doc)
    assert data(s) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_idempotency_keys_pass_through(fast_url: str) -> None:
    s = stream("keys", fast_url)
    with s.producer(linger="1h") as producer:
        first = [
            producer.append({"n": 1}, key="a"),
            producer.append({"n": 2}),
            producer.append({"n": 1}, key="a"),
        ]  # a duplicate in the same batch
        producer.flush()
        again = producer.append({"n": 1}, key="a")  # and in a later one
        other = producer.append({"n": 3}, key="b")
    assert [h.result() for h in first] == [1, 2, 1]
    assert again.result() == 1 and other.result() == 3
    assert data(s) == [{"n": 1}, {"n": 2}, {"n": 3}]


# -- failures ------------------------------------------------------------------------------
def test_a_store_failure_fails_the_batch_and_later_batches_are_stored() -> None:
    s, store = gated_stream()
    store.failure = StoreUnavailableError("the disk went away")
    producer = s.producer(linger="1h")
    lost = [producer.append({"i": i}) for i in range(3)]
    with pytest.raises(ProducerError, match=r"3 message.*disk went away") as raised:
        producer.flush()
    assert raised.value.failed == 3
    assert isinstance(raised.value.__cause__, StoreUnavailableError)
    for handle in lost:
        assert isinstance(handle.exception(timeout=0), StoreUnavailableError)
        with pytest.raises(StoreUnavailableError):
            handle.result(timeout=0)
    store.failure = None
    kept = producer.append({"i": 3})
    producer.flush()  # the failure was reported to this thread already
    assert kept.result(timeout=0) == 1
    producer.close()
    assert data(s) == [{"i": 3}]


def test_each_thread_hears_of_a_failure_in_its_next_flush() -> None:
    s, store = gated_stream()
    store.failure = StoreUnavailableError("offline")
    outcomes: list[str] = []
    with s.producer(linger="1h") as producer:
        producer.append({"i": 0})

        def other_thread() -> None:
            try:
                producer.flush()
                outcomes.append("flushed")
            except ProducerError as exc:
                outcomes.append(f"failed {exc.failed}")

        with pytest.raises(ProducerError):
            producer.flush()
        store.failure = None
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(WAIT)
    assert outcomes == ["failed 1"]


def test_close_reports_failures() -> None:
    s, store = gated_stream()
    store.failure = StoreUnavailableError("offline")
    producer = s.producer(linger="1h")
    handle = producer.append({"i": 0})
    with pytest.raises(ProducerError, match="offline"):
        producer.close()
    assert producer.closed
    assert isinstance(handle.exception(timeout=0), StoreUnavailableError)


def test_only_a_payload_the_store_refuses_fails_not_its_whole_batch() -> None:
    s = stream("split", f"memory://{uuid.uuid4().hex}")
    inner: list[Any] = []
    with s.producer(linger="1h") as producer:
        handles = [producer.append({"i": i}) for i in range(5)]
        bad = producer.append({"inner": inner})
        handles += [producer.append({"i": i}) for i in range(5, 9)]
        inner.append({1, 2})  # changed after append (do not do this): JSON cannot hold a set
        with pytest.raises(ProducerError, match="1 message"):
            producer.flush()
    assert isinstance(bad.exception(timeout=0), TypeError)
    assert [h.result(timeout=0) for h in handles] == list(range(1, 10))
    assert [d["i"] for d in data(s)] == list(range(9))


# -- backpressure ------------------------------------------------------------------------------
def test_append_blocks_when_max_pending_wait_and_resumes_when_stored() -> None:
    s, store = gated_stream()
    store.gate.clear()
    with s.producer(linger=0, max_batch=2, max_pending=4) as producer:
        for i in range(4):
            producer.append({"i": i})
        assert store.waiting.wait(WAIT)
        assert producer.pending == 4
        with pytest.raises(ProducerTimeoutError, match="max_pending"):
            producer.append({"i": 4}, timeout=0.02)
        blocked: list[AppendHandle] = []
        appender = threading.Thread(target=lambda: blocked.append(producer.append({"i": 4})))
        appender.start()
        appender.join(0.05)
        assert appender.is_alive() and not blocked  # still waiting for room
        store.gate.set()
        appender.join(WAIT)
        assert blocked[0].result(timeout=WAIT) == 5
    assert [d["i"] for d in data(s)] == list(range(5))


def test_close_wakes_an_append_blocked_on_a_full_buffer() -> None:
    s, store = gated_stream()
    store.gate.clear()
    producer = s.producer(linger=0, max_batch=1, max_pending=1)
    producer.append({"i": 0})
    assert store.waiting.wait(WAIT)
    errors: list[BaseException] = []

    def append() -> None:
        try:
            producer.append({"i": 1})
        except ProducerClosedError as exc:
            errors.append(exc)

    appender = threading.Thread(target=append)
    appender.start()
    closer = threading.Thread(target=producer.close)
    closer.start()
    appender.join(WAIT)
    assert [type(e) for e in errors] == [ProducerClosedError]
    store.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert data(s) == [{"i": 0}]


# -- many processes ------------------------------------------------------------------------------
def test_processes_and_threads_append_without_gap_duplicate_or_reordering(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'many.db'}"
    name, processes, threads, count = "many", 4, 4, 5000
    reader = Stream.get_or_create(name, url=url)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                url,
                name,
                str(p),
                "--threads",
                str(threads),
                "--count",
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(processes)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.close()
        for proc in procs:
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.wait(timeout=240) == 0, proc.stderr.read()
            assert proc.stdout.read().strip() == f"done {threads * count}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    messages = list(reader.read())
    total = processes * threads * count
    assert [m.seq for m in messages] == list(range(1, total + 1))  # no gap
    triples = [(m.data["p"], m.data["t"], m.data["i"]) for m in messages]
    assert len(set(triples)) == total  # no duplicate
    by_thread: dict[tuple[int, int], list[int]] = {}
    for p, t, i in triples:
        by_thread.setdefault((p, t), []).append(i)
    assert by_thread == {(p, t): list(range(count)) for p in range(processes) for t in range(threads)}
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(triples))
    assert switches > processes, "the processes did not overlap; nothing concurrent was tested"


def test_producer_repr_and_type(fast_url: str) -> None:
    s = stream("repr", fast_url)
    producer = s.producer()
    assert isinstance(producer, Producer)
    assert "0 pending" in repr(producer)
    producer.close()
    assert "closed" in repr(producer)


def test_the_benchmark_runs_and_checks_itself(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_producer", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_producer"] = bench  # dataclasses look their module up
    spec.loader.exec_module(bench)
    out = tmp_path / "producer.json"
    assert bench.main(["--messages", "3000", "--rounds", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {row["mode"]: row for row in report["results"]}
    assert set(rows) == {"producer", "append", "extend", "producer, 4 threads"}
    assert all(row["msgs_per_s"] > 0 for row in rows.values())
    assert rows["producer"]["messages"] == 3000 and rows["append"]["messages"] == 60
    assert 3 <= rows["producer"]["batches"] < 3000  # batched: at most 1,000 a batch
