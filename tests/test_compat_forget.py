"""``Stream.forget`` and ``Stream.consumers``: a stale consumer name no longer
blocks ``keep=False`` for good, and every registered consumer shows its lag."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_url

from minibatch_rx import InvalidArgumentError, Stream, streaming
from minibatch_rx.streams import ConsumerInfo

pytestmark = pytest.mark.timeout(60)

# MongoDB's remove_position is being written alongside: add "mongodb" once it lands.
BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_url(str(request.param), tmp_path, request)


def seeded(url: str, n: int) -> Stream:
    s = Stream.get_or_create("test", url=url)
    s.extend([{"value": v} for v in range(1, n + 1)])
    return s


def test_forgetting_a_stale_consumer_lets_keep_false_trim_again(url: str) -> None:
    s = seeded(url, 4)
    s.commit("debugging-session", 0)  # registered once, never acknowledges anything
    streaming("test", size=2, max_windows=2, url=url, consumer="live")(lambda w: None)  # keep=False
    assert s.count() == 4  # the stale consumer holds every message back

    assert s.forget("debugging-session") is True
    assert s.positions() == {"live": 4}
    assert s.trim_acknowledged() == 4
    assert s.count() == 0
    assert s.forget("debugging-session") is False  # already gone


def test_after_forget_the_next_keep_false_window_trims_by_itself(url: str) -> None:
    s = seeded(url, 4)
    s.commit("stale", 1)
    streaming("test", size=2, max_windows=1, url=url, consumer="live")(lambda w: None)
    assert s.count() == 3  # trimmed up to the stale position only
    s.forget("stale")
    streaming("test", size=2, max_windows=1, url=url, consumer="live")(lambda w: None)
    assert s.count() == 0


def test_consumers_lists_each_registered_name_with_position_and_lag(url: str) -> None:
    s = seeded(url, 5)
    assert s.consumers() == []
    s.commit("reporter", 2)
    s.commit("archiver", 5)
    assert s.consumers() == [ConsumerInfo("archiver", 5, 0), ConsumerInfo("reporter", 2, 3)]
    s.forget("reporter")
    assert [c.name for c in s.consumers()] == ["archiver"]


def test_forget_rejects_a_name_that_is_not_a_string() -> None:
    s = Stream.get_or_create("test", url="memory://forget-bad")
    for bad in ("", None, 3):
        with pytest.raises(InvalidArgumentError, match="consumer"):
            s.forget(bad)  # type: ignore[arg-type]
