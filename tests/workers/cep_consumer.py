"""A keyed event-time pattern consumer process for the CEP crash test (tests/test_crash_cep.py).

    python tests/workers/cep_consumer.py URL SOURCE SINK --consumer NAME [--work CPU_SECONDS]

Runs ``stream(SOURCE).key_by(KEY).event_time(TS, max_delay=MAX_DELAY,
idle=IDLE).match(pattern(), timeouts=timeouts_stream(SINK)).map(summary).sink(SINK)``
under the consumer name ``NAME`` until killed. The pattern is ``a``, then
(relaxed) ``b``, then (relaxed) ``c``, all within ``WITHIN`` seconds of event
time; partial matches that run out of it go to the stream ``SINK.timeouts``,
late events to ``SINK.late``. Each match becomes one output message
``{"key", "start", "end", "steps": {step: [event ids]}}``. A second, callable
sink burns ``--work`` CPU seconds per match after its output is stored and
before its position is committed, so a kill often lands between the two.
The test imports the parameters and the pattern, so both sides agree on them.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from minibatch_rx import stream
from minibatch_rx.cep import Match, Pattern

KEY, TS, TYPE, ID = "k", "ts", "type", "i"  # payload fields: key, event time (epoch seconds), type, id
MAX_DELAY = 0.5  # seconds: events may be at most this much older than the newest seen
IDLE = 30.0  # seconds: longer than any test run, so only the events move the watermark
WITHIN = 1.0  # seconds of event time from a partial match's first event to its last


def pattern() -> Pattern[dict[str, Any]]:
    """``a``, followed by ``b``, followed by ``c``, within ``WITHIN`` seconds."""
    return (
        Pattern.begin("a")
        .where(lambda e: e[TYPE] == "a")
        .followed_by("b")
        .where(lambda e: e[TYPE] == "b")
        .followed_by("c")
        .where(lambda e: e[TYPE] == "c")
        .within(WITHIN)
    )


def late_stream(sink: str) -> str:
    """Where a run into ``sink`` sends late events: a stream of its own, so
    the test tells which run found an event late."""
    return f"{sink}.late"


def timeouts_stream(sink: str) -> str:
    """Where a run into ``sink`` sends its timed-out partial matches."""
    return f"{sink}.timeouts"


def summary(match: Match[dict[str, Any]]) -> dict[str, Any]:
    """One output message for ``match``: its key, time span and the ids of its events per step."""
    return {
        "key": match.key,
        "start": match.start,
        "end": match.end,
        "steps": {step: [event[ID] for event in events] for step, events in match.items()},
    }


def main() -> None:
    """Parse the command line, print ``ready`` and run the pipeline until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("source")
    parser.add_argument("sink")
    parser.add_argument("--consumer", required=True)
    parser.add_argument(
        "--work",
        type=float,
        default=0.0,
        help="CPU seconds burnt per match after its output is stored, before its ack",
    )
    args = parser.parse_args()

    def work(_value: dict[str, Any]) -> None:
        deadline = time.process_time() + args.work
        while time.process_time() < deadline:  # CPU-bound work, not a sleep
            pass

    pipeline = (
        stream(args.source, args.url)
        .key_by(KEY)
        .event_time(TS, max_delay=MAX_DELAY, idle=IDLE)
        .match(pattern(), timeouts=timeouts_stream(args.sink))
        .late(late_stream(args.sink))
        .map(summary)
        .sink(args.sink)
        .sink(work)
    )
    print("ready", flush=True)
    pipeline.run(consumer=args.consumer)


if __name__ == "__main__":
    main()
