"""The commands that append: ``append`` (JSON lines from stdin) and ``dead``
(dead letters, and ``--replay`` of their payloads into the source stream)."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

from minibatch_rx.cli.common import (
    FAILED,
    OK,
    CommandError,
    age_seconds,
    human_age,
    known_stream,
    message_json,
    open_existing,
    print_json,
    store_url,
    table,
)
from minibatch_rx.errors import InvalidPayloadError
from minibatch_rx.message import Message
from minibatch_rx.store import open_store
from minibatch_rx.streams import Stream
from minibatch_rx.validation import check_payload

_SHOWN_ERRORS = 20
Line = tuple[int, str]


def batches(source: IO[str], size: int, linger: float) -> Iterator[list[Line]]:
    """``source``'s lines, numbered from 1, in batches of up to ``size``. A
    batch is handed over when full, at the end of input, or ``linger`` seconds
    after its first line (so a slow pipe is stored as it comes)."""
    lines: queue.Queue[Line | None] = queue.Queue(maxsize=2 * size)

    def read() -> None:
        for number, text in enumerate(source, start=1):
            lines.put((number, text))
        lines.put(None)

    threading.Thread(target=read, name="minibatch-append-stdin", daemon=True).start()
    ended = False
    while not ended:
        first = lines.get()
        if first is None:
            return
        batch, deadline = [first], time.monotonic() + linger
        while len(batch) < size:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            batch.append(line)
        yield batch


def parse_line(text: str, key_field: str | None) -> tuple[dict[str, Any], str | None]:
    """One input line as a checked payload and its key; ``ValueError`` says what is wrong."""
    try:
        payload = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"a JSON object is needed, got {_json_type(payload)}")
    try:
        check_payload(payload)
    except InvalidPayloadError as error:
        raise ValueError(str(error)) from None
    if key_field is None:
        return payload, None
    key = payload.get(key_field)
    if isinstance(key, bool) or not isinstance(key, (str, int)) or key == "":
        raise ValueError(f"--key field {key_field!r} must be a non-empty string or an integer, "
                         f"got {json.dumps(key)}")
    return payload, str(key)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def append(args: argparse.Namespace) -> int:
    """Append JSON lines from stdin in batches; a batch with a bad line stores nothing."""
    store = open_store(store_url(args.url))
    stream = Stream.get_or_create(args.stream, store=store)
    stored = lines_read = 0
    first_seq = last_seq = None
    for batch in batches(sys.stdin, args.batch_size, args.linger):
        payloads: list[dict[str, Any]] = []
        keys: list[str | None] = []
        errors: list[tuple[int, str]] = []
        for number, text in batch:
            if not text.strip():
                continue
            try:
                payload, key = parse_line(text, args.key)
            except ValueError as error:
                errors.append((number, str(error)))
                continue
            payloads.append(payload)
            keys.append(key)
        span = (batch[0][0], batch[-1][0])
        if not errors and payloads:
            try:
                seqs = stream.extend(payloads, keys if args.key else None)
            except InvalidPayloadError as error:  # the store's own limits (MongoDB's 16 MB)
                errors.append((span[0], f"the store refused lines {span[0]}-{span[1]}: {error}"))
            else:
                stored += len(seqs)
                first_seq = seqs[0] if first_seq is None else first_seq
                last_seq = seqs[-1]
        if errors:
            return _refused(args, stream, errors, span, stored, first_seq, last_seq)
        lines_read = span[1]
    if args.json:
        print_json({"stream": stream.name, "lines": lines_read, "stored": stored,
                    "first_seq": first_seq, "last_seq": last_seq})
    else:
        seqs_text = f" (seqs {first_seq}..{last_seq})" if stored else ""
        print(f"appended {stored} message(s) to {stream.name!r}{seqs_text}")
    return OK


def _refused(args: argparse.Namespace, stream: Stream, errors: list[tuple[int, str]],
             span: tuple[int, int], stored: int, first_seq: int | None, last_seq: int | None) -> int:
    for number, reason in errors[:_SHOWN_ERRORS]:
        print(f"line {number}: {reason}", file=sys.stderr)
    if len(errors) > _SHOWN_ERRORS:
        print(f"... and {len(errors) - _SHOWN_ERRORS} more bad line(s) in this batch", file=sys.stderr)
    print(f"minibatch append: nothing stored from lines {span[0]}-{span[1]} (their batch); "
          f"{stored} message(s) from the lines before {span[0]} were stored in {stream.name!r}; "
          "the rest of the input was not read", file=sys.stderr)
    if args.json:
        print_json({"stream": stream.name, "stored": stored, "first_seq": first_seq, "last_seq": last_seq,
                    "refused_lines": list(span), "errors": [{"line": n, "reason": r} for n, r in errors]})
    return FAILED


def dead(args: argparse.Namespace) -> int:
    """List the dead letters of a stream (``NAME.dead``); ``--replay`` appends
    their payloads back to the stream, once however often it is run."""
    store = open_existing(args.url)
    source = known_stream(store, args.stream)
    dead_name = f"{source.name}.dead"
    letters = list(Stream(dead_name, store=store).read()) if dead_name in store.streams() else []
    if args.seq:
        letters = [m for m in letters if m.seq in set(args.seq)]
    if args.lines is not None:
        letters = letters[-args.lines:] if args.lines else []
    if args.replay:
        return _replay(args, source, dead_name, letters)
    if args.json:
        print_json({"stream": source.name, "dead_letter_stream": dead_name,
                    "dead_letters": [message_json(m) for m in letters]})
    elif not letters:
        print(f"no dead letters for {source.name!r} (stream {dead_name!r})")
    else:
        rows = [[str(m.seq), human_age(age_seconds(m.ts)), str(m.data.get("stage", "?")),
                 _seq_range(m.data), str(_payload_count(m.data)), str(m.data.get("error", ""))[:100]]
                for m in letters]
        print(table(["SEQ", "AGE", "STAGE", "SEQS", "MESSAGES", "ERROR"], rows, numeric={0, 4}))
    return OK


def _payload_count(letter: dict[str, Any]) -> int:
    return len(letter.get("data") or []) + len(letter.get("omitted_seqs") or [])


def _seq_range(letter: dict[str, Any]) -> str:
    first, last = letter.get("first_seq"), letter.get("last_seq")
    return "-" if first is None else (f"{first}" if first == last else f"{first}..{last}")


def _replay(args: argparse.Namespace, source: Stream, dead_name: str, letters: list[Message]) -> int:
    payloads: list[dict[str, Any]] = []
    keys: list[str | None] = []
    skipped: list[str] = []
    for letter in letters:
        origin = letter.data.get("stream")
        if origin is not None and origin != source.name:
            skipped.append(f"dead letter {letter.seq}: its window came from stream {origin!r}, "
                           f"not {source.name!r} (a later step of the pipeline)")
            continue
        for index, payload in enumerate(letter.data.get("data") or []):
            if isinstance(payload, dict):
                payloads.append(payload)
                keys.append(f"replay|{dead_name}|{letter.seq}|{index}")
            else:
                skipped.append(f"dead letter {letter.seq}: payload {index} is not an object")
        omitted = letter.data.get("omitted_seqs") or []
        if omitted:
            skipped.append(f"dead letter {letter.seq}: {len(omitted)} payload(s) were too large to keep "
                           f"(source seqs {omitted[0]}..{omitted[-1]}); read them from the source "
                           "stream if it still holds them")
    head = source.last_seq()
    seqs = source.extend(payloads, keys) if payloads else []
    fresh = sum(1 for seq in seqs if seq > head)
    if args.json:
        print_json({"stream": source.name, "dead_letters": len(letters), "payloads": len(seqs),
                    "appended": fresh, "already_replayed": len(seqs) - fresh, "skipped": skipped})
    else:
        print(f"replayed {len(letters)} dead letter(s) into {source.name!r}: {fresh} message(s) appended, "
              f"{len(seqs) - fresh} already replayed before")
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    if skipped and not payloads:
        raise CommandError("nothing could be replayed")
    return OK
