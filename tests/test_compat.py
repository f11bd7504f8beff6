"""The seed-compatible API: code written for the original ``minibatch`` package
(``Stream.get_or_create``, ``@streaming``, ``WindowEmitter`` subclasses) runs
with only its import changed."""

from __future__ import annotations

import ast
import datetime
import uuid
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import seeded_values as seeded

import minibatch_rx.compat
from minibatch_rx import (
    CountWindow,
    FixedTimeWindow,
    InvalidArgumentError,
    Pipeline,
    PipelineHandle,
    RelaxedTimeWindow,
    Stream,
    Window,
    WindowEmitter,
    streaming,
)
from minibatch_rx.testing import VirtualTime

# A lost message would otherwise block a run until the session-wide timeout.
pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # seconds: upper bound for real-time waits



class SortedWindow(WindowEmitter):
    """The original README's custom emitter, reading ``self.buffer`` where the
    original queried its MongoDB buffer collection:
    sort all data by value and output only multiples of 2 in batches of interval size
    """

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        qs = self.buffer
        data = []
        for obj in sorted(qs, key=lambda obj: obj.data["value"]):
            if obj.data["value"] % 2 == 0:
                data.append(obj)
                if len(data) >= self.interval:
                    break
        self._data = data
        return len(self._data) == self.interval, ()

    def query(self, *args: Any) -> Any:
        return self._data


# -- the original README --------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_the_original_readme_runs_with_only_the_import_changed(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"memory://readme-{uuid.uuid4().hex}" if scheme == "memory" else f"sqlite://{tmp_path / 'mb.db'}"
    monkeypatch.setenv("MINIBATCH_URL", url)

    def sleep(_seconds: float) -> None:
        """The README paces its demo producer with time.sleep; no need here."""

    # --- README, step 2: the producer ---
    from minibatch_rx import Stream  # was: from minibatch import Stream
    stream = Stream.get_or_create('test')
    for i in range(100):  # noqa: B007 - as written in the README
        stream.append({'date': datetime.datetime.utcnow().isoformat()})
        sleep(.5)

    # --- README, step 3: the consumer (max_windows is ours, so that it returns) ---
    from minibatch_rx import streaming  # was: from minibatch import streaming
    @streaming('test', size=2, keep=True, max_windows=50)
    def myprocess(window):  # type: ignore[no-untyped-def]
        print(window.data)
        return window

    printed = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines()]
    stored = [m.data for m in Stream("test", url=url).read()]
    assert len(stored) == 100  # keep=True: nothing deleted, and it went to MINIBATCH_URL
    assert printed == [stored[i:i + 2] for i in range(0, 100, 2)]
    assert all(set(pair[0]) == {"date"} for pair in printed)
    assert isinstance(myprocess, PipelineHandle)
    assert (myprocess.windows, myprocess.position) == (50, 100)


# -- @streaming ----------------------------------------------------------------------------


def test_streaming_hands_windows_with_data(fast_url: str) -> None:
    seeded(fast_url, [1, 2, 3, 4, 5])
    seen: list[list[dict[str, int]]] = []

    @streaming("test", size=2, keep=True, max_windows=2, url=fast_url)
    def process(window: Window) -> None:
        assert isinstance(window, Window)
        seen.append(window.data)

    assert seen == [[{"value": 1}, {"value": 2}], [{"value": 3}, {"value": 4}]]
    assert process.position == 4


def test_streaming_resumes_under_the_function_name(fast_url: str) -> None:
    src = seeded(fast_url, [1, 2, 3, 4])
    seen: list[list[int]] = []

    def process(window: Window) -> None:
        seen.append([d["value"] for d in window.data])

    streaming("test", size=2, keep=True, max_windows=1, url=fast_url)(process)
    streaming("test", process, size=2, keep=True, max_windows=1, url=fast_url)
    assert seen == [[1, 2], [3, 4]]
    # "<file stem>.<qualname>": the same whether the file is run as a script or imported.
    assert src.positions() == {
        "test_compat.test_streaming_resumes_under_the_function_name.<locals>.process": 4
    }


def test_streaming_sends_return_values_to_a_sink(fast_url: str) -> None:
    seeded(fast_url, [1, 2, 3, 4])
    streaming("test", size=2, keep=True, max_windows=2, url=fast_url, sink="totals", consumer="adder")(
        lambda window: {"total": sum(d["value"] for d in window.data)}
    )
    assert [m.data for m in Stream("totals", url=fast_url).read()] == [{"total": 3}, {"total": 7}]


def test_non_blocking_streaming_returns_a_running_handle(fast_url: str) -> None:
    src = seeded(fast_url, [1])
    seen: list[list[int]] = []
    handle = streaming("test", size=2, keep=True, blocking=False, max_windows=2, url=fast_url)(
        lambda window: seen.append([d["value"] for d in window.data])
    )
    try:
        assert isinstance(handle, PipelineHandle)
        assert handle.running
        src.extend([{"value": v} for v in (2, 3, 4)])
        assert handle.join(WAIT), "the background consumer did not get the new messages"
    finally:
        handle.stop()
    assert seen == [[1, 2], [3, 4]]
    assert handle.error is None


def test_keep_false_removes_processed_messages(fast_url: str) -> None:
    src = seeded(fast_url, [1, 2, 3, 4, 5])
    streaming("test", size=2, max_windows=2, url=fast_url)(lambda window: None)  # keep=False by default
    assert [m.data["value"] for m in src.read()] == [5]  # the unprocessed one stays


def test_keep_true_leaves_processed_messages(fast_url: str) -> None:
    src = seeded(fast_url, [1, 2, 3, 4, 5])
    streaming("test", size=2, keep=True, max_windows=2, url=fast_url)(lambda window: None)
    assert [m.data["value"] for m in src.read()] == [1, 2, 3, 4, 5]


def test_legacy_keyword_arguments_are_accepted(fast_url: str) -> None:
    seeded(fast_url, [1])
    seen: list[Any] = []
    streaming("test", size=1, keep=True, max_windows=1, url=fast_url, workers=4, executor=object(),
              cnx_kwargs={"connect": False}, max_delay=5, queue=None)(seen.append)
    assert len(seen) == 1


def test_unknown_keyword_arguments_raise_type_error() -> None:
    with pytest.raises(TypeError, match="wokers"):
        streaming("test", size=2, wokers=4)


def test_stream_get_or_create_accepts_legacy_keywords(fast_url: str) -> None:
    s = Stream.get_or_create("legacy", url=fast_url, interval=1.0, batchsize=100)
    assert s.append({"x": 1}) == 1
    assert Stream.get_or_create("legacy", url=fast_url, max_delay=10).count() == 1
    with pytest.raises(TypeError, match="bogus"):
        Stream.get_or_create("legacy", url=fast_url, bogus=1)


# -- choosing the window strategy ------------------------------------------------------------------


def test_size_chooses_count_windows() -> None:
    strategy = minibatch_rx.compat._strategy("s", None, 3, None, True)
    assert type(strategy) is CountWindow
    assert strategy.size == 3


def test_no_option_chooses_windows_of_one_message() -> None:
    strategy = minibatch_rx.compat._strategy("s", None, None, None, True)
    assert type(strategy) is CountWindow
    assert strategy.size == 1


def test_interval_chooses_relaxed_time_windows_and_relaxed_false_fixed_ones() -> None:
    relaxed = minibatch_rx.compat._strategy("s", 2, None, None, True)
    fixed = minibatch_rx.compat._strategy("s", 2, None, None, False)
    assert type(relaxed) is RelaxedTimeWindow
    assert type(fixed) is FixedTimeWindow
    assert relaxed.interval == fixed.interval == 2


def test_emitter_chooses_the_given_class_with_the_options() -> None:
    strategy = minibatch_rx.compat._strategy("s", 2, 5, SortedWindow, True)
    assert type(strategy) is SortedWindow
    assert (strategy.stream, strategy.interval, strategy.size) == ("s", 2, 5)


@pytest.mark.parametrize(
    "options",
    [
        {"size": 0},
        {"size": -2},
        {"interval": 0},
        {"interval": -1},
        {"emitter": object},
        {"emitter": SortedWindow("test")},
    ],
    ids=["size-zero", "size-negative", "interval-zero", "interval-negative", "not-an-emitter", "an-instance"],
)
def test_bad_strategy_options_raise_before_anything_runs(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        streaming("test", url="memory://never", **options)


def _windows_in_virtual_time(relaxed: bool, emit_empty: bool | None = None
                             ) -> list[tuple[float, list[float]]]:
    """Emissions of the strategy chosen by ``interval=2`` started at virtual time 1."""
    vt = VirtualTime()
    src = vt.stream("t")
    for t in (1.5, 2.5, 7.5):
        vt.append_at(t, src, {"t": t})
    vt.advance_to(1)
    strategy = minibatch_rx.compat._strategy("t", 2, None, None, relaxed, emit_empty)
    pipeline = Pipeline(src).window(strategy.operator).map(lambda w: [d["t"] for d in w.data])
    return [(e.time, e.value) for e in vt.run(pipeline, until=9.5)]


def test_relaxed_time_windows_take_whatever_arrived_since_the_last_one() -> None:
    # Every 2 s from the start (t=1), empty windows included: the original's
    # RelaxedTimeWindow inherited FixedTimeWindow's emit_empty=True.
    assert _windows_in_virtual_time(relaxed=True) == [
        (3.0, [1.5, 2.5]), (5.0, []), (7.0, []), (9.0, [7.5])
    ]


def test_emit_empty_false_drops_the_empty_time_windows() -> None:
    assert _windows_in_virtual_time(relaxed=True, emit_empty=False) == [(3.0, [1.5, 2.5]), (9.0, [7.5])]
    assert _windows_in_virtual_time(relaxed=False, emit_empty=False) == [
        (2.0, [1.5]), (4.0, [2.5]), (8.0, [7.5])
    ]


def test_fixed_time_windows_are_aligned_and_include_empty_ones() -> None:
    # [0, 2) [2, 4) [4, 6) [6, 8): aligned on the clock, empty ones emitted.
    assert _windows_in_virtual_time(relaxed=False) == [(2.0, [1.5]), (4.0, [2.5]), (6.0, []), (8.0, [7.5])]


def test_streaming_with_an_interval_runs_relaxed_windows_in_real_time(fast_url: str) -> None:
    seeded(fast_url, [1, 2])
    seen: list[list[int]] = []
    handle = streaming("test", interval=0.2, keep=True, max_windows=1, url=fast_url)(
        lambda window: seen.append([d["value"] for d in window.data])
    )
    assert seen == [[1, 2]]
    assert handle.position == 2


def test_streaming_fixed_windows_run_in_real_time_with_empty_windows() -> None:
    url = "memory://fixed-real-time"
    seeded(url, [1])
    seen: list[list[int]] = []
    streaming("test", interval=0.1, relaxed=False, keep=True, max_windows=4, url=url)(
        lambda window: seen.append([d["value"] for d in window.data])
    )
    assert len(seen) == 4
    assert [v for window in seen for v in window] == [1]  # the message, exactly once
    assert [] in seen  # fixed windows are emitted empty too


# -- custom emitters -----------------------------------------------------------------------------------


def test_the_readme_sorted_window_emitter_runs_end_to_end(fast_url: str) -> None:
    src = seeded(fast_url, [8, 6, 3, 4, 2, 1, 5, 10, 0])
    seen: list[list[int]] = []

    @streaming("test", interval=2, emitter=SortedWindow, keep=True, max_windows=3, url=fast_url,
               consumer="sorted")
    def process(window: Window) -> None:
        seen.append([d["value"] for d in window.data])

    # Each window: the two smallest pending even values, in the emitter's (sorted) order.
    assert seen == [[6, 8], [2, 4], [0, 10]]
    # The odd values older than a window's newest message are skipped, so the
    # position reaches the last message (it stayed at 2, before the first odd one).
    assert process.position == 9
    assert src.position("sorted") == 9


def test_a_custom_emitter_sees_the_clock_and_can_emit_on_timer() -> None:
    """window_ready is also polled every ``interval`` without new messages."""

    class EveryTenSeconds(WindowEmitter):
        def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
            return bool(self.buffer) and self.now.timestamp() % 10 == 0, ()

    vt = VirtualTime()
    src = vt.stream("t")
    for t in (1, 4, 12):
        vt.append_at(t, src, {"t": t})
    pipeline = Pipeline(src).window(EveryTenSeconds("t", interval=5).operator).map(
        lambda w: [d["t"] for d in w.data]
    )
    assert [(e.time, e.value) for e in vt.run(pipeline, until=25)] == [(10.0, [1, 4]), (20.0, [12])]


def test_a_failing_window_of_a_sorting_emitter_is_dead_lettered_with_its_seq_range() -> None:
    """The window holds seq 2 before seq 1; the dead letter still gives the range 1..2."""
    url = "memory://sorted-dead"
    src = seeded(url, [8, 6])

    def boom(window: Window) -> None:
        raise RuntimeError(f"cannot handle {[d['value'] for d in window.data]}")

    handle = (Pipeline(src).window(SortedWindow("test", interval=2).operator).map(boom).with_retries(0)
              .run(max_windows=1, duration=WAIT))
    dead = [m.data for m in Stream("test.dead", url=url).read()]
    assert [(d["first_seq"], d["last_seq"], d["data"], d["error"]) for d in dead] == [
        (1, 2, [{"value": 6}, {"value": 8}], "RuntimeError: cannot handle [6, 8]"),
    ]
    assert handle.position == 2
