"""The store commands: ``streams``, ``tail``, ``consumers``, ``trim`` and ``forget``."""

from __future__ import annotations

import argparse
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from minibatch_rx.cli.common import (
    OK,
    CommandError,
    age_seconds,
    human_age,
    known_stream,
    message_json,
    message_line,
    open_existing,
    print_json,
    stop_signals,
    table,
)
from minibatch_rx.message import Message
from minibatch_rx.partitions import is_partition_of


def streams(args: argparse.Namespace) -> int:
    """List the streams: messages held, head seq, age of the oldest message, consumers."""
    store = open_existing(args.url)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name in store.streams():
        if name.startswith("_mb.") and not args.all:
            continue
        oldest = store.read(name, 0, 1)
        rows.append({
            "name": name,
            "messages": store.count(name),
            "head": store.last_seq(name),
            "oldest_ts": oldest[0].ts.isoformat() if oldest else None,
            "oldest_age_s": round(age_seconds(oldest[0].ts, now), 3) if oldest else None,
            "consumers": len(store.positions(name)),
        })
    if args.json:
        print_json({"url": store.url, "streams": rows})
    elif not rows:
        print(f"no streams in {store.url}")
    else:
        print(table(["STREAM", "MESSAGES", "HEAD", "OLDEST", "CONSUMERS"],
                    [[r["name"], str(r["messages"]), str(r["head"]), human_age(r["oldest_age_s"]),
                      str(r["consumers"])] for r in rows], numeric={1, 2, 3, 4}))
    return OK


def tail(args: argparse.Namespace) -> int:
    """Print the last ``-n`` messages; with ``-f``, then every new one until Ctrl-C/SIGTERM."""
    store = open_existing(args.url)
    stream = known_stream(store, args.stream)
    head = stream.last_seq()
    last = store.read(stream.name, max(0, head - args.lines), args.lines) if args.lines else []
    if not args.follow:
        if args.json:
            print_json([message_json(m) for m in last])
        else:
            for message in last:
                print(message_line(message))
        return OK
    return _follow(last, stream.observe(after=last[-1].seq if last else head), args.json)


def _show(message: Message, as_json: bool) -> None:
    if as_json:
        print_json(message_json(message))
    else:
        sys.stdout.write(message_line(message) + "\n")
        sys.stdout.flush()


def _follow(first: list[Message], messages: Any, as_json: bool) -> int:
    """Print ``first``, then what the observable delivers (in its reader's
    thread) until a signal, a closed stdout or a read error ends it."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def on_next(message: Message) -> None:
        if stop.is_set():
            return
        try:
            _show(message, as_json)
        except (BrokenPipeError, ValueError):  # `| head`: the reader went away
            stop.set()

    def on_error(error: Exception) -> None:
        failure.append(error)
        stop.set()

    with stop_signals(stop):
        for message in first:
            on_next(message)
        subscription = messages.subscribe(on_next, on_error)
        try:
            stop.wait()
        finally:
            subscription.dispose()
    if failure:
        raise CommandError(f"following stopped: {type(failure[0]).__name__}: {failure[0]}")
    return OK


def consumers(args: argparse.Namespace) -> int:
    """List a stream's registered consumers and groups: position, lag, and the
    ingest time of the last message they acknowledged."""
    store = open_existing(args.url)
    stream = known_stream(store, args.stream)
    head = stream.last_seq()
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for info in stream.consumers():
        acked = store.read(stream.name, info.position - 1, 1) if info.position > 0 else []
        ts = acked[0].ts if acked and acked[0].seq == info.position else None
        rows.append({"name": info.name, "position": info.position, "lag": info.lag,
                     "acked_ts": ts.isoformat() if ts else None,
                     "acked_age_s": round(age_seconds(ts, now), 3) if ts else None})
    if args.json:
        print_json({"stream": stream.name, "head": head, "consumers": rows})
    elif not rows:
        print(f"stream {stream.name!r} has no registered consumers (head {head})")
    else:
        print(table(["CONSUMER", "POSITION", "LAG", "ACKED MESSAGE AGE"],
                    [[r["name"], str(r["position"]), str(r["lag"]), human_age(r["acked_age_s"])]
                     for r in rows], numeric={1, 2, 3}))
    return OK


def trim(args: argparse.Namespace) -> int:
    """Remove messages: up to a seq, those every consumer acknowledged, or older than an age."""
    store = open_existing(args.url)
    stream = known_stream(store, args.stream)
    if args.upto is not None:
        removed, how = stream.trim(args.upto), f"up to seq {args.upto}"
    elif args.acknowledged:
        positions = stream.positions()
        if not positions:
            raise CommandError(f"stream {stream.name!r} has no registered consumer: nothing is "
                               "acknowledged by all of them (use --upto SEQ to trim anyway)")
        removed = stream.trim_acknowledged()
        how = f"acknowledged by every consumer (up to seq {min(positions.values())})"
    else:
        removed, how = stream.expire(args.older_than), f"older than {args.older_than}"
    left = stream.count()
    if args.json:
        print_json({"stream": stream.name, "removed": removed, "messages": left})
    else:
        print(f"removed {removed} message(s) {how} from {stream.name!r}; {left} left")
    return OK


def forget(args: argparse.Namespace) -> int:
    """Unregister a consumer or group of a stream (its position and window state)."""
    store = open_existing(args.url)
    stream = known_stream(store, args.stream)
    positions = stream.positions()
    # A group run by key partition is registered as its partitions, <group>#<n>.
    parts = [p for name, p in positions.items() if is_partition_of(name, args.consumer)]
    if args.consumer not in positions and not parts:
        known = ", ".join(repr(n) for n in sorted(positions)) or "none"
        raise CommandError(f"consumer {args.consumer!r} is not registered on stream {stream.name!r} "
                           f"(registered: {known})")
    position = positions.get(args.consumer, min(parts, default=0))
    stream.forget(args.consumer)
    if args.json:
        print_json({"stream": stream.name, "forgotten": args.consumer, "position": position,
                    "partitions": len(parts)})
    else:
        what = (f"group {args.consumer!r} ({len(parts)} partitions)" if parts
                else f"consumer {args.consumer!r}")
        print(f"forgot {what} of {stream.name!r} (it was at position {position})")
    return OK


__all__ = ["consumers", "forget", "streams", "tail", "trim"]
