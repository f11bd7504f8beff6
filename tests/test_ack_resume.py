"""Acknowledgement and resumption: a window's position is committed only once
its sinks succeeded, and a restarted pipeline resumes right after the last
acknowledged window, with nothing lost and nothing duplicated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import make_url
from pipeline_helpers import failing_dead_letters, seeded, values

from minibatch_rx import Pipeline, Stream, Window, stream
from minibatch_rx import store as store_module

# A lost message would otherwise block a run until the session-wide timeout.
pytestmark = pytest.mark.timeout(120)

WAIT = 10.0  # seconds: safety net so a lost message fails the test instead of hanging it


@pytest.fixture(params=["sqlite", "mongodb"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh URL on a backend that outlives the process."""
    return make_url(str(request.param), tmp_path, request)


def as_record(window: Window) -> dict[str, Any]:
    return {"first": window.first_seq, "vs": [d["v"] for d in window.data]}


def restart() -> None:
    """Forget every open store, as a new process would start without them."""
    store_module.close_all()


def job(url: str, size: int = 2) -> Pipeline:
    """The pipeline under test, built afresh each time (as a restarted process would)."""
    return stream("in", url).count_window(size).map(as_record).sink("out")


def test_position_is_committed_only_after_the_sink_succeeded(store_url: str) -> None:
    src = seeded(store_url, 6)
    seen: list[tuple[int | None, int]] = []

    def sink(window: Window) -> None:
        seen.append((window.last_seq, src.position("job")))

    pipeline = src.count_window(2).sink(sink).with_commit_interval(0)  # write after every window
    handle = pipeline.run(consumer="job", max_windows=3, duration=WAIT)
    # While a window is being sunk, the committed position is the previous window's.
    assert seen == [(2, 0), (4, 2), (6, 4)]
    assert src.position("job") == handle.position == 6


def test_a_failing_sink_dead_letters_its_window_and_the_position_moves_on(durable_url: str) -> None:
    src = seeded(durable_url, 6)
    calls: list[int | None] = []

    def picky(record: dict[str, Any]) -> None:
        calls.append(record["first"])
        if record["first"] == 3:
            raise ConnectionError("downstream refused window 2")

    handle = (stream("in", durable_url).count_window(2).map(as_record).with_retries(max_retries=0)
              .sink(picky).sink("out").run(consumer="job", max_windows=3, duration=WAIT))

    assert calls == [1, 3, 5]  # max_retries=0: one attempt each
    assert values(Stream("out", url=durable_url)) == [{"first": 1, "vs": [1, 2]}, {"first": 5, "vs": [5, 6]}]
    dead = values(Stream("in.dead", url=durable_url))
    assert len(dead) == 1
    assert (dead[0]["stage"], dead[0]["first_seq"], dead[0]["last_seq"]) == ("sink", 3, 4)
    assert dead[0]["error"] == "ConnectionError: downstream refused window 2"
    assert handle.position == src.position("job") == 6

    # A restart does not retry the dead-lettered window: it is acknowledged.
    restart()
    Stream("in", url=durable_url).extend([{"v": 7}, {"v": 8}])
    again = (stream("in", durable_url).count_window(2).map(as_record).sink(picky).sink("out")
             .run(consumer="job", max_windows=1, duration=WAIT))
    assert calls == [1, 3, 5, 7]
    assert values(Stream("out", url=durable_url))[-1] == {"first": 7, "vs": [7, 8]}
    assert again.position == 8


def test_a_restarted_pipeline_resumes_after_the_last_acknowledged_window(durable_url: str) -> None:
    seeded(durable_url, 6)
    # The first "process" stops after window 1.
    first = job(durable_url).run(consumer="job", max_windows=1, duration=WAIT)
    assert (first.windows, first.position) == (1, 2)
    assert values(Stream("out", url=durable_url)) == [{"first": 1, "vs": [1, 2]}]

    restart()
    second = job(durable_url).run(consumer="job", max_windows=2, duration=WAIT)

    assert (second.windows, second.position) == (2, 6)
    out = values(Stream("out", url=durable_url))
    assert out == [{"first": 1, "vs": [1, 2]}, {"first": 3, "vs": [3, 4]}, {"first": 5, "vs": [5, 6]}]
    firsts = [r["first"] for r in out]
    assert len(firsts) == len(set(firsts))  # no duplicate
    assert Stream("in", url=durable_url).position("job") == 6


def test_resume_is_per_consumer(durable_url: str) -> None:
    seeded(durable_url, 4)
    job(durable_url).run(consumer="fast", max_windows=2, duration=WAIT)
    job(durable_url).run(consumer="slow", max_windows=1, duration=WAIT)
    restart()
    src = Stream("in", url=durable_url)
    assert (src.position("fast"), src.position("slow")) == (4, 2)
    seen: list[list[int]] = []
    src.count_window(2).map(lambda w: [d["v"] for d in w.data]).sink(seen.append).run(
        consumer="slow", max_windows=1, duration=WAIT
    )
    assert seen == [[3, 4]]


def test_partial_windows_ack_only_what_they_emitted(store_url: str) -> None:
    src = seeded(store_url, 7)
    handle = job(store_url, size=3).run(consumer="job", max_windows=2, duration=WAIT)
    # Message 7 sits in an open window: it is not acknowledged.
    assert handle.position == src.position("job") == 6
    assert values(Stream("out", url=store_url)) == [
        {"first": 1, "vs": [1, 2, 3]}, {"first": 4, "vs": [4, 5, 6]},
    ]

    again = (stream("in", store_url).count_window(3, timeout=0.2).map(as_record).sink("out")
             .run(consumer="job", max_windows=1, duration=WAIT))
    assert again.position == 7
    assert values(Stream("out", url=store_url))[-1] == {"first": 7, "vs": [7]}
    assert Stream("out", url=store_url).count() == 3


def test_trim_processed_removes_acknowledged_messages_only(store_url: str) -> None:
    src = seeded(store_url, 7)
    job(store_url, size=3).trim_processed().run(consumer="job", max_windows=2, duration=WAIT)
    assert [m.seq for m in src.read()] == [7]
    assert src.last_seq() == 7


def test_without_trim_processed_messages_stay(store_url: str) -> None:
    src = seeded(store_url, 7)
    job(store_url, size=3).run(consumer="job", max_windows=2, duration=WAIT)
    assert [m.seq for m in src.read()] == [1, 2, 3, 4, 5, 6, 7]


def test_trim_processed_keeps_the_messages_of_a_failed_window_until_it_is_handled(tmp_path: Path) -> None:
    """A dead-letter append that fails stops the pipeline before the window is
    acknowledged, so nothing of it is trimmed."""
    url = f"sqlite://{tmp_path / 'trim.db'}"
    src = seeded(url, 4)
    with failing_dead_letters(src.store):
        def poison(window: Window) -> Window:
            if window.first_seq == 3:
                raise ValueError("poison")
            return window

        with pytest.raises(OSError, match="full"):
            (src.count_window(2).map(poison).with_retries(0).sink("out").trim_processed()
             .run(consumer="job", max_windows=2, duration=WAIT))
    assert src.position("job") == 2
    assert [m.seq for m in src.read()] == [3, 4]
