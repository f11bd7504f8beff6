"""minibatch 0.6.0 behaviour kept with only the import changed: ``queue=``,
``.put()`` sinks, ``None`` forwarding the window, ``emit_empty``, ``source``,
``max_workers``, ``Stream.buffer/window/stop/attach`` and the original
README's ``SortedWindow`` (with ``Buffer``), including restarts with ``keep=False``."""

from __future__ import annotations

import multiprocessing
import queue
import threading
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import seeded_values as seeded

from minibatch_rx import Pipeline, PipelineHandle, Stream, Window, count_window, streaming
from minibatch_rx.compat import Buffer, WindowEmitter
from minibatch_rx.errors import CompatibilityError, InvalidArgumentError

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # seconds: upper bound for real-time waits



def values(window: Window) -> list[int]:
    return [d["value"] for d in window.data]


# -- queue= ------------------------------------------------------------------------------


def test_a_truthy_queue_message_stops_a_blocking_consumer(fast_url: str) -> None:
    src = seeded(fast_url, [1, 2, 3, 4])
    stop: queue.Queue[bool] = queue.Queue()
    seen: list[list[int]] = []
    result: list[PipelineHandle] = []

    def process(window: Window) -> None:
        seen.append(values(window))
        if len(seen) == 2:
            stop.put(True)  # as the original's tests did from the parent process

    def consume() -> None:
        result.append(streaming("test", size=2, keep=True, url=fast_url, queue=stop, consumer="q")(process))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), "queue.put(True) did not stop the blocking consumer"
    assert seen == [[1, 2], [3, 4]]
    assert src.position("q") == 4  # the last acknowledged window is committed on the way out
    assert not result[0].running


def test_a_falsy_queue_message_is_consumed_and_ignored(fast_url: str) -> None:
    src = seeded(fast_url, [1, 2])
    stop: queue.Queue[Any] = queue.Queue()
    stop.put(False)
    seen: list[list[int]] = []
    got_second = threading.Event()

    def process(window: Window) -> None:
        seen.append(values(window))
        if len(seen) == 2:
            got_second.set()

    handle = streaming("test", size=2, keep=True, url=fast_url, queue=stop, blocking=False)(process)
    try:
        assert _until(stop.empty), "the stop queue was never read"
        assert handle.running
        src.extend([{"value": 3}, {"value": 4}])
        assert got_second.wait(WAIT)
        stop.put(1)
        assert handle.join(WAIT), "a truthy message did not stop the background consumer"
    finally:
        handle.stop()
    assert seen == [[1, 2], [3, 4]]


def _consume_until_stopped(url: str, stop: Any) -> None:
    """The original's test: a consumer in its own process, stopped by the parent."""
    @streaming("test", size=2, keep=True, url=url, queue=stop, consumer="child")
    def process(window: Window) -> None:
        Stream.get_or_create("out", url=url).append({"values": values(window)})


def test_a_multiprocessing_queue_stops_a_consumer_in_another_process(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'mp.db'}"
    src = seeded(url, [1, 2, 3, 4])
    context = multiprocessing.get_context("spawn")
    stop = context.Queue()
    child = context.Process(target=_consume_until_stopped, args=(url, stop))
    child.start()
    try:
        assert _until(lambda: src.position("child") == 4, timeout=30)
        stop.put(True)
        child.join(WAIT)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
    assert [m.data["values"] for m in Stream("out", url=url).read()] == [[1, 2], [3, 4]]


# -- sinks and the forwarded value -------------------------------------------------------


def test_a_put_sink_gets_each_result_or_the_window_data_when_the_result_is_none(fast_url: str) -> None:
    seeded(fast_url, [1, 2, 3, 4])
    out: queue.Queue[Any] = queue.Queue()

    def process(window: Window) -> dict[str, int] | None:
        return {"total": sum(values(window))} if values(window) == [1, 2] else None

    streaming("test", size=2, keep=True, max_windows=2, url=fast_url, sink=out, consumer="p")(process)
    assert [out.get_nowait() for _ in range(out.qsize())] == [
        {"total": 3},
        [{"value": 3}, {"value": 4}],  # 0.6.0: `result or window`, forwarded as window.data
    ]


def test_a_function_returning_none_forwards_the_window_to_a_stream_sink(fast_url: str) -> None:
    seeded(fast_url, [1, 2, 3, 4])
    streaming("test", size=2, keep=True, max_windows=2, url=fast_url, sink="copies")(lambda w: None)
    assert [m.data for m in Stream("copies", url=fast_url).read()] == [{"value": v} for v in (1, 2, 3, 4)]
    assert Stream("test.dead", url=fast_url).count() == 0


def test_a_sink_without_put_is_rejected_before_running() -> None:
    with pytest.raises(InvalidArgumentError, match="put"):
        streaming("test", size=2, url="memory://never", sink=object())


# -- emit_empty, source, max_workers -------------------------------------------------------


class Nothing(WindowEmitter):
    """Always ready, never any message: only ``emit_empty`` makes windows."""

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        return True, ()

    def query(self, *args: Any) -> list[Any]:
        return []


def test_emit_empty_true_emits_the_empty_windows_of_a_custom_emitter(fast_url: str) -> None:
    Stream.get_or_create("test", url=fast_url)
    seen: list[int] = []
    handle = streaming("test", emitter=Nothing, interval=0.02, emit_empty=True, keep=True, url=fast_url,
                       max_windows=2, blocking=False)(lambda w: seen.append(len(w)))
    assert handle.join(WAIT)
    assert seen == [0, 0]


def test_interval_windows_are_emitted_empty_as_in_the_original(fast_url: str) -> None:
    Stream.get_or_create("test", url=fast_url)
    seen: list[list[int]] = []
    handle = streaming("test", interval=0.02, keep=True, url=fast_url, max_windows=2, blocking=False)(
        lambda w: seen.append(values(w))
    )
    assert handle.join(WAIT), "no empty relaxed window was emitted"
    assert seen == [[], []]


class ListSource:
    """A source connector as the original's (KafkaSource, MongoSource...):
    ``stream(stream)`` appends until ``cancel()``."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.appended = threading.Event()
        self.cancelled = threading.Event()

    def stream(self, stream: Stream) -> str:
        for item in self.items:
            stream.append(item)
        self.appended.set()
        self.cancelled.wait(WAIT)
        return "done"

    def cancel(self) -> None:
        self.cancelled.set()


def test_source_is_attached_while_consuming_and_cancelled_after(fast_url: str) -> None:
    source = ListSource([{"value": v} for v in range(4)])
    seen: list[list[int]] = []
    streaming("test", size=2, keep=True, max_windows=2, url=fast_url, source=source)(
        lambda w: seen.append(values(w))
    )
    assert seen == [[0, 1], [2, 3]]
    assert source.cancelled.is_set()


def test_a_source_without_a_stream_method_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="stream"):
        streaming("test", size=2, url="memory://never", source=[1, 2])


def test_max_workers_one_runs_and_more_names_consumer_groups(fast_url: str) -> None:
    seeded(fast_url, [1, 2])
    seen: list[list[int]] = []
    streaming("test", size=2, keep=True, max_workers=1, max_windows=1, url=fast_url)(
        lambda w: seen.append(values(w))
    )
    assert seen == [[1, 2]]
    with pytest.raises(CompatibilityError, match="group"):
        streaming("test", size=2, max_workers=4, url=fast_url)


# -- Stream.attach / stop / buffer / window ---------------------------------------------------


def test_stream_attach_runs_the_source_in_the_background_until_stop(fast_url: str) -> None:
    s = Stream.get_or_create("test", url=fast_url)
    source = ListSource([{"value": 1}, {"value": 2}])
    assert s.attach(source) is None
    assert source.appended.wait(WAIT)
    assert [m.data for m in s.read()] == [{"value": 1}, {"value": 2}]
    assert s.stop() is True
    assert source.cancelled.is_set()
    with pytest.raises(InvalidArgumentError):
        s.attach(object())


def test_stream_attach_in_the_foreground_returns_what_the_source_returns(fast_url: str) -> None:
    s = Stream.get_or_create("test", url=fast_url)
    source = ListSource([{"value": 1}])
    source.cancel()  # so that stream() returns at once
    assert s.attach(source, background=False) == "done"
    assert s.count() == 1


def test_stream_buffer_counts_and_filters_by_acknowledgement(fast_url: str) -> None:
    s = seeded(fast_url, [1, 2, 3])
    assert s.buffer().count() == 3
    assert s.buffer(processed=True).count() == 0  # no consumer yet: nothing processed
    s.commit("reader", 1)
    assert [m.data["value"] for m in s.buffer(processed=False)] == [2, 3]
    assert [m.data["value"] for m in s.buffer().filter(processed=True)] == [1]
    with pytest.raises(CompatibilityError, match="read"):
        s.buffer(created__gte=0)


def test_stream_window_queries_raise_and_a_factory_starts_a_pipeline(fast_url: str) -> None:
    s = seeded(fast_url, [1, 2])
    with pytest.raises(CompatibilityError, match="sink"):
        s.window()
    with pytest.raises(CompatibilityError):
        s.window(processed=True)
    pipeline = s.window(lambda scheduler: count_window(2, scheduler=scheduler))
    assert isinstance(pipeline, Pipeline)
    assert [v for v in _collect(pipeline.map(values))] == [[1, 2]]


def test_stream_flush_and_streaming_method(fast_url: str) -> None:
    s = seeded(fast_url, [1, 2])
    s.flush()  # appends are stored at once: nothing to flush
    seen: list[list[int]] = []
    s.streaming(lambda w: seen.append(values(w)), size=2, keep=True, max_windows=1)
    assert seen == [[1, 2]]


def test_buffer_objects_outside_an_emitter_names_the_replacement() -> None:
    with pytest.raises(CompatibilityError, match=r"Stream\.buffer"):
        Buffer.objects.no_cache().filter(processed=False)


# -- the original README's SortedWindow, restarted with keep=False -----------------------------


class SortedWindow(WindowEmitter):
    """
    sort all data by value and output only multiples of 2 in batches of interval size
    """
    def window_ready(self):  # type: ignore[no-untyped-def]  # verbatim from the original README
        qs = Buffer.objects.no_cache().filter(processed=False)
        data = []
        for obj in sorted(qs, key=lambda obj : obj.data['value']):
            if obj.data['value'] % 2 == 0:
                data.append(obj)
                if len(data) >= self.interval:
                    break
        self._data = data
        return len(self._data) == self.interval, ()

    def query(self, *args):  # type: ignore[no-untyped-def]
        return self._data


class SortedOverBuffer(WindowEmitter):
    """The same strategy over ``self.buffer``."""

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        evens = sorted((m for m in self.buffer if m.data["value"] % 2 == 0), key=lambda m: m.data["value"])
        self._data = evens[: self.interval]
        return len(self._data) == self.interval, ()

    def query(self, *args: Any) -> Any:
        return self._data


@pytest.mark.parametrize("emitter", [SortedWindow, SortedOverBuffer])
def test_a_skipping_emitter_with_keep_false_trims_and_never_reemits_after_restart(
    fast_url: str, emitter: type[WindowEmitter]
) -> None:
    src = seeded(fast_url, [8, 6, 3, 4, 2, 1, 5, 10, 0])
    seen: list[list[int]] = []

    def run(max_windows: int) -> PipelineHandle:
        return streaming("test", interval=2, emitter=emitter, url=fast_url, consumer="sorted",
                         max_windows=max_windows)(lambda w: seen.append(values(w)))

    first = run(2)
    assert seen == [[6, 8], [2, 4]]
    # 3 (older than the newest message of [2, 4]) was skipped: everything up to seq 5 is done.
    assert first.position == 5
    assert [m.data["value"] for m in src.read()] == [1, 5, 10, 0]  # keep=False trimmed 1..5

    run(1)  # restart under the same consumer
    assert seen == [[6, 8], [2, 4], [0, 10]]  # no window twice
    assert src.position("sorted") == 9
    assert src.count() == 0


# -- helpers --------------------------------------------------------------------------------------


def _until(condition: Any, timeout: float = WAIT) -> bool:
    """Wait (bounded) for ``condition()`` to hold; the event-free cases only."""
    done = threading.Event()
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            if condition():
                done.set()
                break
            deadline.wait(0.01)
    finally:
        timer.cancel()
    return done.is_set()


def _collect(pipeline: Pipeline) -> list[Any]:
    out: list[Any] = []
    pipeline.sink(out.append).run(max_windows=1, duration=WAIT)
    return out
