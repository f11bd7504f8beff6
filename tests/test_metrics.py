"""A running pipeline's metrics (issue 13, point 4): handle.metrics() and the
Prometheus endpoint, scraped over HTTP."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_for

from minibatch_rx import Window, stream

WAIT = 20.0




def test_counters_position_lag_and_stage_times(fast_url: str) -> None:
    s = stream("m", fast_url)
    s.extend({"n": i} for i in range(20))
    failed = [False]

    def flaky(window: Window) -> int:
        if window.messages[0].seq == 5 and not failed[0]:
            failed[0] = True
            raise ConnectionError("once")
        if window.messages[0].seq == 9:
            raise ValueError("always")
        return len(window)

    handle = (s.count_window(4).map(flaky).with_retries(1, backoff=0)
              .sink(lambda _: None).run(consumer="c", max_windows=3))
    m = handle.metrics()
    assert (m.stream, m.consumer) == ("m", "c")
    assert m.windows_out == 3 and m.position == 12
    assert m.head == 20 and m.lag == 8
    assert m.retries == 2 and m.dead_lettered == 1  # 5-8 retried once and passed, 9-12 once and buried
    assert m.messages_in >= 12
    assert m.stages["map"].count == 2  # calls that returned: windows 1-4 and 5-8 (after its retry)
    assert m.stages["sink"].count == 2
    assert m.stages["map"].total > 0 and m.stages["map"].buckets[float("inf")] == 2
    assert m.watermark is None  # count windows keep none
    as_json = m.as_dict()
    assert as_json["stages"]["sink"]["count"] == 2 and as_json["lag"] == 8


def test_late_messages_and_the_watermark_of_event_time_windows(tmp_path: Path) -> None:
    s = stream("ev", f"sqlite://{tmp_path / 'ev.db'}")
    base = 1_800_000_000
    s.extend([{"t": base + 1}, {"t": base + 15}, {"t": base + 2}, {"t": base + 25}])  # base+2: late
    handle = (s.event_time("t", idle=None).fixed_time_window("10s").map(len)
              .start(consumer="c"))
    try:
        wait_for(lambda: handle.metrics().late == 1, "the late message to be counted")
        wait_for(lambda: handle.metrics().windows_out >= 2, "two windows")
        m = handle.metrics()
        assert m.watermark == pytest.approx(base + 25)
        assert m.messages_in == 4
    finally:
        handle.stop(timeout=5)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no {name} {labels} in:\n{text}")


def test_prometheus_endpoint_serves_the_figures_and_stops_with_the_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client", reason="the metrics extra is not installed")
    s = stream("prom", f"sqlite://{tmp_path / 'prom.db'}")
    s.extend({"n": i} for i in range(10))
    done = threading.Event()

    def total(window: Window) -> dict[str, Any]:
        if window.messages[-1].seq == 10:
            done.set()
        return {"n": len(window)}

    handle = s.count_window(5).map(total).sink("prom.out").start(consumer="web")
    try:
        port = handle.serve_metrics(0)
        assert done.wait(WAIT)
        wait_for(lambda: handle.position == 10, "the position")
        text = scrape(port)
        labels = {"stream": "prom", "consumer": "web"}
        assert sample(text, "minibatch_messages_in_total", **labels) == 10
        assert sample(text, "minibatch_windows_out_total", **labels) == 2
        assert sample(text, "minibatch_lag_messages", **labels) == 0
        assert sample(text, "minibatch_position", **labels) == 10
        assert sample(text, "minibatch_dead_letters_total", **labels) == 0
        assert sample(text, "minibatch_stage_seconds_count", stage="map", **labels) == 2
        assert sample(text, "minibatch_stage_seconds_bucket", stage="sink", le="+Inf", **labels) == 2
        assert "# TYPE minibatch_stage_seconds histogram" in text
    finally:
        handle.stop(timeout=5)
    with pytest.raises(OSError):
        scrape(port)  # the endpoint ended with the run


def test_serving_metrics_without_the_extra_names_the_install(
    fast_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from minibatch_rx.connectors import MissingExtraError

    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    s = stream("noprom", fast_url)
    handle = s.count_window(1).map(len).start(consumer="c")
    try:
        with pytest.raises(MissingExtraError, match=r"pip install 'minibatch_rx\[metrics\]'"):
            handle.serve_metrics(0)
    finally:
        handle.stop(timeout=5)


def test_a_restarted_consumer_starts_from_its_position_not_zero(fast_url: str) -> None:
    s = stream("restart", fast_url)
    s.extend({"n": n} for n in range(10))
    s.count_window(5).map(len).run(consumer="m", max_windows=2)
    handle = s.count_window(5).map(len).start(consumer="m")
    try:
        m = handle.metrics()
        assert (m.position, m.head, m.lag) == (10, 10, 0)
    finally:
        handle.stop(timeout=5)
