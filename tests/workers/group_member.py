"""One member of a consumer group by key partition, for the kill-and-join test
(tests/test_group_kill.py).

    python tests/workers/group_member.py KIND URL SOURCE SINK --group G --member M --lease-timeout S

Runs :func:`pipeline` ``(KIND, URL, SOURCE, SINK)`` (``KIND`` is ``tumbling``
or ``pattern``) as member ``M`` of group ``G`` until SIGTERM (a clean stop:
the member leaves the group, exit 0) or SIGKILL. Prints ``holds P,Q,...``
(flushed) whenever the partitions it runs change, ``holds -`` when it runs
none, and ``stopped`` after a clean stop. The test imports the pipelines,
so the group and the single reference consumer run the same one.

* ``tumbling``: per device, event-time windows of ``SIZE`` seconds; each
  window becomes ``{"key", "start", "n", "sum", "ids"}`` (``ids``: the
  sorted ``[producer, i]`` of its events).
* ``pattern``: per device, an ``a`` event followed (relaxed) by a ``b``
  within ``WITHIN`` seconds; each match becomes ``{"key", "start", "end",
  "a", "b"}`` (the ``[producer, i]`` of its events per step).

Late events go to the stream ``SINK.late``, timed-out partial matches to
``SINK.timeouts``. Only the events move the watermark (``idle=None``), so
the output depends on the stored order alone, not on when it is read.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from minibatch_rx import Window, stream
from minibatch_rx.cep import Match, Pattern
from minibatch_rx.partition_group import GroupMemberHandle
from minibatch_rx.pipeline import Pipeline

# The payload fields written by tests/workers/group_producer.py (the test checks they agree).
DEVICE, TS, VALUE, TYPE = "dev", "t", "v", "type"
SIZE = 1.0  # seconds of event time per tumbling window
MAX_DELAY = 2.0  # seconds: how far behind the newest event time an event may arrive without being late
WITHIN = 0.5  # seconds of event time from a match's ``a`` to its ``b``
KINDS = ("tumbling", "pattern")


def event_id(event: dict[str, Any]) -> list[int]:
    """The producer and index of an event: unique in the input."""
    return [event["p"], event["i"]]


def window_summary(window: Window) -> dict[str, Any]:
    """One output message for a tumbling window; the same whichever member closed it."""
    assert window.start is not None  # a time window always has its bounds
    return {"key": window.key, "start": window.start.timestamp(), "n": len(window.messages),
            "sum": sum(m.data[VALUE] for m in window.messages),
            "ids": sorted(event_id(m.data) for m in window.messages)}


def a_then_b() -> Pattern[dict[str, Any]]:
    """An ``a`` event, followed (relaxed) by a ``b`` event, within ``WITHIN`` seconds."""
    return (Pattern.begin("a").where(lambda e: e[TYPE] == "a")
            .followed_by("b").where(lambda e: e[TYPE] == "b")
            .within(WITHIN))


def match_summary(match: Match[dict[str, Any]]) -> dict[str, Any]:
    """One output message for a match; the same whichever member found it."""
    return {"key": match.key, "start": match.start, "end": match.end,
            "a": [event_id(e) for e in match.get("a", [])],
            "b": [event_id(e) for e in match.get("b", [])]}


def pipeline(kind: str, url: str, source: str, sink: str) -> Pipeline[Any, Any]:
    """The keyed event-time pipeline ``kind`` from ``source`` into the stream ``sink``."""
    clocked = stream(source, url).key_by(DEVICE).event_time(TS, max_delay=MAX_DELAY, idle=None)
    if kind == "tumbling":
        return clocked.fixed_time_window(SIZE).late(f"{sink}.late").map(window_summary).sink(sink)
    if kind == "pattern":
        return (clocked.match(a_then_b(), timeouts=f"{sink}.timeouts").late(f"{sink}.late")
                .map(match_summary).sink(sink))
    raise ValueError(f"unknown pipeline kind {kind!r}, expected one of {KINDS}")


def main() -> None:
    """Parse the command line and run the member until SIGTERM, reporting its partitions."""
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("url")
    parser.add_argument("source")
    parser.add_argument("sink")
    parser.add_argument("--group", required=True)
    parser.add_argument("--member", required=True)
    parser.add_argument("--lease-timeout", type=float, required=True)
    args = parser.parse_args()

    terminated = threading.Event()

    def on_sigterm(_signum: int, _frame: FrameType | None) -> None:
        terminated.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    handle = pipeline(args.kind, args.url, args.source, args.sink).start(
        group=args.group, member=args.member, lease_timeout=args.lease_timeout)
    assert isinstance(handle, GroupMemberHandle), handle  # a keyed pipeline's group: by key partition
    reported: list[int] | None = None
    while not terminated.is_set():
        if handle.join(timeout=0.05):  # the member failed: its error is on stderr
            print(f"failed: {handle.error!r}", file=sys.stderr, flush=True)
            sys.exit(2)
        held = handle.partitions
        if held != reported:
            print("holds " + (",".join(map(str, held)) or "-"), flush=True)
            reported = held
    if not handle.stop(timeout=20):
        print("the member did not stop within 20 s", file=sys.stderr, flush=True)
        sys.exit(4)
    if handle.error is not None:
        print(f"failed: {handle.error!r}", file=sys.stderr, flush=True)
        sys.exit(2)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
