"""``minibatch bridge kafka|mqtt|mongodb``: run a connector's bridge into a
stream until Ctrl-C or SIGTERM, showing what it stores, and stop it cleanly
(what was received is stored and acknowledged to the source first).

A bridge's extra missing (``minibatch_rx[kafka]``, ``[mqtt]``) is exit code 1
with the ``pip install`` to run: the command line is right, the environment
lacks a package.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minibatch_rx.cli.common import (
    FAILED,
    INTERRUPTED,
    OK,
    Abort,
    CommandError,
    UsageError,
    print_json,
    stop_signals,
    store_url,
)
from minibatch_rx.cli.run import RATE_SPAN, TICK, Reporter
from minibatch_rx.connectors import MissingExtraError
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.streams import Stream

__all__ = ["Running", "add_parsers", "bridge"]

MQTT_START_WAIT = 5.0
"""Seconds ``bridge mqtt`` waits for its first subscription before it shows
progress (it keeps trying after that); a signal is honoured once it returns."""


@dataclass
class Running:
    """A started bridge as the command sees it, whatever its kind."""

    kind: str
    source: str
    """Where it reads, for people (``kafka 127.0.0.1:9092 [orders]``)."""
    stored: Callable[[], int]
    """Messages handed to the stream so far by this run."""
    ready: Callable[[], bool]
    """Connected and reading (partitions assigned, subscribed, change stream open)."""
    failure: Callable[[], BaseException | None]
    """The error that ended the bridge's work, if one did."""
    stop: Callable[[float], bool]
    """Stop within the timeout; False if it had to give up waiting. Re-raises the bridge's error."""
    extra: Callable[[], dict[str, int]] = field(default=lambda: {})
    """Kind-specific counters shown with the progress (dead letters, duplicates...)."""


def add_parsers(sub: Any, common: argparse.ArgumentParser, seconds: Callable[[str], float],
                positive: Callable[[str], int]) -> None:
    """Add ``bridge`` and its ``kafka``, ``mqtt`` and ``mongodb`` subcommands to ``sub``."""
    help_text = "bring a Kafka topic, MQTT topics or a MongoDB collection into a stream until Ctrl-C/SIGTERM"
    parent = sub.add_parser("bridge", parents=[common], help=help_text, description=help_text)
    kinds = parent.add_subparsers(dest="kind", required=True, metavar="KIND")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--stop-timeout", type=seconds, default=10.0, metavar="SECONDS",
                        help="how long a stop waits for the messages received to be stored (default 10)")
    shared.add_argument("--progress-interval", type=seconds, default=5.0, metavar="SECONDS",
                        help="seconds between progress log lines when not on a terminal (default 5)")
    shared.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"],
                        help="minibatch_rx logging (default warning)")

    def kind(name: str, text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = kinds.add_parser(name, parents=[common, shared], help=text,
                                                      description=text)
        p.set_defaults(handler=bridge)
        p.add_argument("stream", metavar="NAME", help="the stream the messages are appended to")
        return p

    p = kind("kafka", "consume Kafka topics in a consumer group; each message stored once "
                      "(keyed by topic/partition/offset), then its offset committed")
    p.add_argument("bootstrap", metavar="BOOTSTRAP", help="brokers, host:port[,host:port...]")
    p.add_argument("topics", metavar="TOPIC", nargs="+", help="topics (^regex subscribes to a pattern)")
    p.add_argument("--group-id", metavar="G", help="consumer group (default minibatch.NAME)")
    p.add_argument("--non-json", choices=["wrap", "dead_letter"], default="wrap",
                   help="a value that is not a JSON object: stored wrapped (default) or sent to NAME.dead")
    p.add_argument("--batch-size", type=positive, default=500, metavar="N",
                   help="most messages read and appended at once (default 500)")
    p.add_argument("--key-header", metavar="HEADER",
                   help="key a message by this header when it has it (minibatch-key: what a KafkaSink "
                        "produced again is stored once)")
    p.add_argument("--key-prefix", default="", metavar="PREFIX", help="put before every idempotency key")
    p.add_argument("-X", "--config", action="append", default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting (repeatable), e.g. -X security.protocol=SSL")

    p = kind("mqtt", "subscribe to MQTT topic filters (QoS 1, persistent session); a message is "
                     "acknowledged to the broker once stored")
    p.add_argument("broker", metavar="BROKER", help="mqtt://[user:password@]host[:port], host:port or host")
    p.add_argument("topics", metavar="FILTER", nargs="+", help="topic filters (sensors/#, +/status)")
    p.add_argument("--client-id", metavar="ID",
                   help="fixed client id naming the persistent session (default minibatch.NAME); "
                        "one bridge per id")
    p.add_argument("--non-json", choices=["wrap", "dead_letter"], default="wrap",
                   help="a payload that is not JSON: stored wrapped (default) or sent to NAME.dead")
    p.add_argument("--id-field", metavar="FIELD",
                   help="a field of JSON payloads holding a unique id: the idempotency key")
    p.add_argument("--topic-field", default="topic", metavar="FIELD",
                   help="the field recording the topic in stored messages (default topic)")
    p.add_argument("--qos", type=int, choices=[0, 1], default=1,
                   help="1: at least once, with the session's guarantees (default); 0: at most once")
    p.add_argument("--session-expiry", type=positive, default=7 * 24 * 3600, metavar="SECONDS",
                   help="how long the broker keeps the session while the bridge is away (default 7 days)")

    p = kind("mongodb", "follow a MongoDB collection's change stream; each change stored once "
                        "(keyed by its resume token), resuming after the last one stored")
    p.add_argument("source", metavar="SOURCE_URL",
                   help="mongodb://host/DB of a replica set or sharded cluster")
    p.add_argument("collection", metavar="COLLECTION")
    p.add_argument("--name", metavar="N",
                   help="names the saved resume point NAME.bridge.N (default the collection's name)")
    p.add_argument("--operations", default="insert,update,replace,delete", metavar="OPS",
                   help="operation types kept, comma-separated (default insert,update,replace,delete)")
    p.add_argument("--batch-size", type=positive, default=500, metavar="N",
                   help="most changes stored in one append (default 500)")


def bridge(args: argparse.Namespace) -> int:
    """Start the bridge, report progress, stop cleanly on a signal."""
    target = Stream.get_or_create(args.stream, url=store_url(args.url))
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("minibatch_rx").setLevel(args.log_level.upper())
    stop = threading.Event()
    reporter = Reporter(sys.stderr, args.json, args.progress_interval)
    with stop_signals(stop):
        try:
            running = _STARTERS[args.kind](args, target)
        except InvalidArgumentError as error:
            raise UsageError(str(error)) from None
        try:
            return _watch(args, running, target, stop, reporter)
        except Abort:
            print(f"minibatch bridge {args.kind}: interrupted again; stopped waiting (messages received "
                  "but not yet stored are sent again by the source)", file=sys.stderr)
            return INTERRUPTED


def _config(pairs: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise UsageError(f"-X/--config wants KEY=VALUE, got {pair!r}")
        settings[key] = value
    return settings


def _kafka(args: argparse.Namespace, target: Stream) -> Running:
    try:
        from minibatch_rx.connectors.kafka import KafkaBridge
    except MissingExtraError as error:
        raise CommandError(str(error)) from None
    # librdkafka's own log repeats every failed connection attempt; the bridge reports
    # broker errors itself (a warning each), so the raw log shows only at --log-level debug.
    raw_log = logging.getLogger("minibatch_rx.cli.librdkafka")
    if args.log_level != "debug":
        raw_log.setLevel(logging.CRITICAL)
    bridge = KafkaBridge(args.bootstrap, args.topics, target, args.group_id,
                         batch_size=args.batch_size, non_json=args.non_json,
                         key_prefix=args.key_prefix, key_header=args.key_header,
                         config={"logger": raw_log, **_config(args.config)})
    bridge.start(timeout=0.0)  # readiness is watched with the progress, so a signal is seen at once
    stats = bridge.stats

    def stop(timeout: float) -> bool:
        return bool(bridge.stop(timeout))

    def failure() -> BaseException | None:
        if bridge.error is None and not bridge.running:
            return RuntimeError("the bridge's thread ended")
        return bridge.error

    return Running("kafka", f"kafka {args.bootstrap} {' '.join(args.topics)}", lambda: stats.stored,
                   bridge.ready.is_set, failure, stop,
                   lambda: {"received": stats.received, "wrapped": stats.wrapped,
                            "dead_letters": stats.dead_lettered, "commit_failures": stats.commit_failures})


def _mqtt(args: argparse.Namespace, target: Stream) -> Running:
    try:
        from minibatch_rx.connectors.mqtt import MqttBridge, MqttError
    except MissingExtraError as error:
        raise CommandError(str(error)) from None
    bridge = MqttBridge(args.broker, args.topics, target,
                             client_id=args.client_id or f"minibatch.{target.name}", qos=args.qos,
                             id_field=args.id_field, topic_field=args.topic_field, invalid=args.non_json,
                             session_expiry=args.session_expiry)
    try:
        bridge.start(timeout=MQTT_START_WAIT)
    except MqttError as error:
        raise CommandError(f"the broker refused: {error}") from None

    def stop(timeout: float) -> bool:
        return bool(bridge.stop(timeout))

    return Running("mqtt", f"mqtt {bridge.broker} {' '.join(args.topics)}", lambda: bridge.stored,
                   bridge.subscribed.is_set, lambda: bridge.error, stop,
                   lambda: {"received": bridge.received, "duplicates": bridge.duplicates,
                            "dead_letters": bridge.dead_lettered, "connects": bridge.connects})


def _mongodb(args: argparse.Namespace, target: Stream) -> Running:
    from minibatch_rx.connectors.mongodb import CollectionBridge

    operations = [op.strip() for op in args.operations.split(",") if op.strip()]
    if not operations:
        raise UsageError("--operations names no operation type")
    bridge = CollectionBridge(args.source, args.collection, target, name=args.name,
                              operations=operations, batch=args.batch_size)
    bridge.start(timeout=0.0)

    def stop(timeout: float) -> bool:
        bridge.stop(timeout)
        return True

    return Running("mongodb", f"mongodb collection {args.collection!r}", lambda: bridge.stored,
                   bridge.ready.is_set, lambda: bridge.error, stop)


_STARTERS: dict[str, Callable[[argparse.Namespace, Stream], Running]] = {
    "kafka": _kafka, "mqtt": _mqtt, "mongodb": _mongodb}


class Rate:
    """Messages per second over about the last :data:`RATE_SPAN` seconds."""

    def __init__(self, now: float, count: int) -> None:
        self.samples = deque([(now, count)])

    def update(self, now: float, count: int) -> float:
        """Add a sample; the rate since the oldest one kept."""
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_SPAN:
            self.samples.popleft()
        then, before = self.samples[0]
        return max(0, count - before) / max(now - then, 1e-6)


def _watch(args: argparse.Namespace, running: Running, target: Stream, stop: threading.Event,
           reporter: Reporter) -> int:
    prog = f"minibatch bridge {running.kind}"
    head = target.last_seq()
    reporter.line(f"bridging {running.source} into stream {target.name!r} on {target.store.url} "
                  f"(head {head})",
                  {"event": "started", "kind": running.kind, "source": running.source, "stream": target.name,
                   "url": target.store.url, "head": head})
    rate, ready, failure = Rate(time.monotonic(), 0), False, None
    while True:
        if not ready and running.ready():
            ready = True
            reporter.line(f"ready: reading from {running.source}", {"event": "ready", "kind": running.kind})
        failure = running.failure()
        if failure is not None or stop.wait(TICK if ready else 0.05):
            break
        now, stored = time.monotonic(), running.stored()
        per_second = rate.update(now, stored)
        extra = running.extra()
        details = "".join(f", {value} {name.replace('_', ' ')}" for name, value in extra.items())
        reporter.show(f"stored {stored}, {per_second:,.0f} msg/s, stream head {target.last_seq()}{details}",
                      {"stored": stored, "rate": round(per_second, 1), "head": target.last_seq(), **extra},
                      (stored, *extra.values()), now)
    try:
        clean = running.stop(args.stop_timeout)
    except Exception as error:  # the error that ended the bridge (stop re-raises it)
        failure = failure or error
        clean = True
    stored, extra = running.stored(), running.extra()
    head = target.last_seq()
    if reporter.tty:
        reporter.out.write("\r\x1b[K")
        reporter.out.flush()
    if args.json:
        print_json({"event": "stopped", "kind": running.kind, "stream": target.name, "stored": stored,
                    "head": head, **extra, "clean": clean and failure is None})
    else:
        details = "".join(f", {value} {name.replace('_', ' ')}" for name, value in extra.items())
        print(f"stopped: stored {stored} message(s) from {running.source} in stream {target.name!r} "
              f"(head {head}){details}", flush=True)
    if failure is not None:
        print(f"{prog}: error: the bridge failed: {type(failure).__name__}: {failure}", file=sys.stderr)
        return FAILED
    if not clean:
        print(f"{prog}: gave up waiting after {args.stop_timeout}s; what was received but not stored is "
              "sent again by the source on the next run", file=sys.stderr)
        return FAILED
    return OK
