"""The ``minibatch`` command (also ``python -m minibatch_rx``): look at and
operate streams, and run pipelines defined in modules.

Every command takes ``--url`` (else ``MINIBATCH_URL`` and the usual
resolution) and ``--json`` (machine-readable output: one JSON document, or
JSON lines for ``tail -f`` and ``run``). Exit codes: 0 done, 1 the work failed
(unknown stream, store error, bad input, pipeline error), 2 the command line is
wrong (options, URL scheme, stream name, ``MODULE:ATTR``), 130 interrupted.
A connector's missing extra is 1 (the environment lacks a package).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from minibatch_rx.cli import bridge, commands, run, writing
from minibatch_rx.cli.common import FAILED, INTERRUPTED, USAGE, Abort, CommandError
from minibatch_rx.errors import InvalidStreamNameError, InvalidURLError, MinibatchError

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], int]


def _non_negative(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port 0..65535, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 seconds, got {text}")
    return value


def _age(text: str) -> str:
    from minibatch_rx.durations import to_seconds

    try:
        to_seconds(text, "--older-than", allow_zero=True)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``minibatch`` argument parser with every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help="store URL (default: $MINIBATCH_URL, $MINIBATCH_MONGO_URL, $MONGO_URL, "
                             "else SQLite at ~/.minibatch_rx/streams.db)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output (JSON; JSON lines for tail -f, run and bridge)")
    parser = argparse.ArgumentParser(
        prog="minibatch", parents=[common],
        description="Look at and operate minibatch_rx streams; run pipelines.",
        epilog="exit codes: 0 done, 1 the work failed, 2 wrong command line, 130 interrupted")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fn: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=fn)
        return p

    p = command("streams", commands.streams, "list streams: messages, head seq, oldest age, consumers")
    p.add_argument("--all", action="store_true", help="include the library's own _mb.* streams")

    p = command("tail", commands.tail, "print a stream's last messages; -f: then follow it")
    p.add_argument("stream", metavar="NAME")
    p.add_argument("-n", "--lines", type=_non_negative, default=10, metavar="N",
                   help="how many of the last messages (default 10)")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new messages until Ctrl-C or SIGTERM")

    p = command("append", writing.append, "append JSON lines (one object each) from stdin, in batches")
    p.add_argument("stream", metavar="NAME")
    p.add_argument("--batch-size", type=_positive, default=1000, metavar="N",
                   help="lines per batch, stored atomically (default 1000)")
    p.add_argument("--linger", type=_seconds, default=0.5, metavar="SECONDS",
                   help="store a partial batch this long after its first line (default 0.5)")
    p.add_argument("--key", metavar="FIELD",
                   help="idempotency key from this field of each object: a line already stored "
                        "under its key is not stored again (safe to re-run)")

    p = command("consumers", commands.consumers, "list a stream's consumers and groups: position, lag")
    p.add_argument("stream", metavar="NAME")

    p = command("dead", writing.dead, "list a stream's dead letters (NAME.dead); --replay appends them back")
    p.add_argument("stream", metavar="NAME")
    p.add_argument("--replay", action="store_true",
                   help="append the dead letters' payloads to NAME (each once, however often replayed)")
    p.add_argument("--seq", type=_positive, action="append", metavar="SEQ",
                   help="only this dead letter (repeatable)")
    p.add_argument("-n", "--lines", type=_non_negative, default=None, metavar="N",
                   help="only the last N dead letters")

    p = command("trim", commands.trim, "remove old messages from a stream")
    p.add_argument("stream", metavar="NAME")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--upto", type=_non_negative, metavar="SEQ", help="remove messages with seq <= SEQ")
    how.add_argument("--acknowledged", action="store_true",
                     help="remove what every registered consumer and group acknowledged")
    how.add_argument("--older-than", type=_age, metavar="AGE",
                     help="remove messages ingested longer ago than AGE (seconds, or 30s, 15m, 2h, 7d)")

    p = command("forget", commands.forget, "unregister a consumer or group of a stream")
    p.add_argument("stream", metavar="NAME")
    p.add_argument("consumer", metavar="CONSUMER")

    p = command("run", run.run, "run a pipeline defined in a module until Ctrl-C or SIGTERM")
    p.add_argument("pipeline", metavar="MODULE:ATTR",
                   help="e.g. jobs:pipeline or path/to/jobs.py:build (a Pipeline, or a function "
                        "of no arguments returning one)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--consumer", metavar="C", help="consumer name (default: the pipeline's shape)")
    who.add_argument("--group", metavar="G",
                     help="join consumer group G (a count window: shared by window; a keyed "
                          "pipeline: shared by key partition)")
    p.add_argument("--partitions", type=_positive, metavar="N",
                   help="with --group and a keyed pipeline: the group's partition count (default 12; "
                        "the same in every member)")
    p.add_argument("--member", metavar="NAME",
                   help="with --group: this member's name (default host:pid:random)")
    p.add_argument("--lease-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="with --group: how long a dead member's work waits before it moves (default 30)")
    p.add_argument("--metrics-port", type=_port, metavar="P",
                   help="serve the run's metrics to Prometheus at http://ADDR:P/metrics (0: a free "
                        "port, printed); needs pip install 'minibatch_rx[metrics]'")
    p.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR",
                   help="the address --metrics-port listens on (default 127.0.0.1; 0.0.0.0: every interface)")
    p.add_argument("--stop-timeout", type=_seconds, default=10.0, metavar="SECONDS",
                   help="how long a stop waits for the window in flight (default 10)")
    p.add_argument("--progress-interval", type=_seconds, default=5.0, metavar="SECONDS",
                   help="seconds between progress log lines when not on a terminal (default 5)")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"],
                   help="minibatch_rx logging (default warning)")

    bridge.add_parsers(sub, common, _seconds, _positive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``minibatch`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.url = getattr(args, "url", None)
    args.json = getattr(args, "json", False)
    prog = f"minibatch {args.command}"
    try:
        code: int = args.handler(args)
        return code
    except (InvalidURLError, InvalidStreamNameError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return USAGE
    except CommandError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except MinibatchError as error:
        print(f"{prog}: error: {type(error).__name__}: {error}", file=sys.stderr)
        return FAILED
    except (KeyboardInterrupt, Abort):
        print(f"{prog}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        return _closed_stdout()
    except Exception:
        traceback.print_exc()
        print(f"{prog}: error: unexpected failure (traceback above)", file=sys.stderr)
        return FAILED


def _closed_stdout() -> int:
    """stdout went away (``| head``): exit quietly, without a second error at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return FAILED
