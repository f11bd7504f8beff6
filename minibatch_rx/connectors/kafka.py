"""Kafka topics in and out, with confluent-kafka: :class:`KafkaBridge` and :class:`KafkaSink`.

Needs the extra: ``pip install 'minibatch_rx[kafka]'`` (importing this module
without it raises :class:`~minibatch_rx.connectors.MissingExtraError`).

**KafkaBridge** consumes topics in a consumer group and appends to a stream:
it reads a batch (``consume(batch_size)``), appends it with one ``extend``
(one transaction) keyed ``"{topic}/{partition}/{offset}"``, and only then
commits the offsets after it (synchronously; auto-commit is off). A bridge
that crashes between the append and the commit reads the batch again, and
the keys make the second append store nothing: every Kafka message is in the
stream exactly once, in order per partition. When partitions are revoked in a
rebalance, the offsets of what was stored are committed first. Broker
outages are ridden out: librdkafka reconnects with back-off
(``reconnect.backoff.max.ms``), a failed commit is retried with the next one,
and a store outage holds the batch (retried with back-off, never skipped).

Each stored message is the Kafka value decoded as a JSON object, with a
``_kafka`` field: ``{"topic", "partition", "offset", "key", "timestamp",
"format"}`` (``key`` is the Kafka key as text, ``None`` if absent; a key
that is not UTF-8 is in ``key_base64``; ``timestamp`` is epoch milliseconds
or ``None``; an object's own ``_kafka`` field is replaced). A value that is
not a JSON object follows ``non_json``:

* ``"wrap"`` (default): stored as ``{"_kafka": {..., "format": F, "error":
  why}, "value": V}``, F being ``"json"`` (other JSON: array, number, ...; V
  decoded), ``"text"`` (UTF-8 but not storable JSON; V the text),
  ``"base64"`` (not UTF-8; V base64) or ``"null"`` (a tombstone; V ``None``).
* ``"dead_letter"``: appended (with the same key) to ``<stream>.dead`` as
  ``{"stage": "kafka-bridge", "error", "_kafka", "value_base64"}``.
  Tombstones are still wrapped.

Nothing is dropped silently and no value makes the bridge fail.

**KafkaSink** implements :class:`~minibatch_rx.sinks.Sink`: ``write``
produces each value as JSON (message key: ``key(value)`` if given, else the
idempotency key; the idempotency key is also in the ``minibatch-key``
header), and ``flush`` waits for every delivery report and raises
:class:`KafkaDeliveryError` naming the failed deliveries, which fails the
window (retried, then dead-lettered). The producer is idempotent
(``enable.idempotence``), so librdkafka's own retries add no duplicates;
a window retried after a failed flush may produce again what was already
delivered (at-least-once): readers deduplicate by the header, as a
``KafkaBridge(..., key_header="minibatch-key")`` does.

Limit: a bridge's keys assume a partition's offsets are never reused. A topic
deleted and created again (or a broker that lost its log) starts again at
offset 0, and those messages would be taken for ones already stored: bridge
such a topic into a new stream, or give a new ``key_prefix``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from minibatch_rx.connectors import require

require("confluent_kafka", "kafka", "the Kafka connector")

from confluent_kafka import (  # noqa: E402 - after require(), which names the extra if it is missing
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage  # noqa: E402

from minibatch_rx.errors import (  # noqa: E402
    InvalidArgumentError,
    InvalidPayloadError,
    MinibatchError,
)
from minibatch_rx.message import Message  # noqa: E402
from minibatch_rx.resilience import OUTAGES  # noqa: E402
from minibatch_rx.store.base import Backoff  # noqa: E402
from minibatch_rx.streams import Stream  # noqa: E402
from minibatch_rx.validation import check_payload  # noqa: E402

__all__ = ["BridgeStats", "KafkaBridge", "KafkaDeliveryError", "KafkaSink"]

log = logging.getLogger(__name__)

NonJson = Literal["wrap", "dead_letter"]
_STORE_OUTAGES = OUTAGES


@dataclass
class BridgeStats:
    """What a :class:`KafkaBridge` object did so far (replays included)."""

    received: int = 0
    """Kafka messages consumed."""
    stored: int = 0
    """Messages handed to the stream (a replayed key stores nothing new)."""
    wrapped: int = 0
    """Values that were not JSON objects, stored wrapped."""
    dead_lettered: int = 0
    """Values that were not JSON objects, sent to ``<stream>.dead``."""
    commits: int = 0
    """Offset commits that succeeded."""
    commit_failures: int = 0
    """Offset commits that failed (retried with the next one)."""
    errors: int = 0
    """Errors librdkafka reported (broker down, unknown topic, ...)."""


class KafkaBridge:
    """Appends the messages of Kafka topics to a stream, each exactly once.

    Args:
        bootstrap: ``host:port[,host:port...]`` of the brokers.
        topics: a topic or a list of topics (``^regex`` subscriptions work too).
        stream: the target :class:`Stream` or its name (opened with ``url``);
            ``None`` when the bridge is given to ``Stream.attach``.
        group_id: the consumer group whose committed offsets the bridge
            resumes from (default ``minibatch.<stream name>``).
        url: the store of a stream given by name.
        batch_size: most messages read and appended at once.
        poll_timeout: seconds one read waits for messages (also how quickly
            :meth:`stop` is noticed).
        non_json: what to do with values that are not JSON objects:
            ``"wrap"`` or ``"dead_letter"`` (see the module's doc).
        key_prefix: put before every idempotency key.
        key_header: if set, a message carrying this header is keyed by its
            value instead of its offset (``"minibatch-key"`` deduplicates what a
            :class:`KafkaSink` produced again after a retried window).
        config: more librdkafka settings (``session.timeout.ms``, security,
            ...); ``enable.auto.commit`` must stay false.
        max_backoff: longest wait, seconds, between reconnection attempts and
            store retries.
    """

    def __init__(self, bootstrap: str, topics: str | Sequence[str], stream: Stream | str | None = None,
                 group_id: str | None = None, *, url: str | None = None, batch_size: int = 500,
                 poll_timeout: float = 0.2, non_json: NonJson = "wrap", key_prefix: str = "",
                 key_header: str | None = None, config: Mapping[str, Any] | None = None,
                 max_backoff: float = 10.0) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
        if non_json not in ("wrap", "dead_letter"):
            raise InvalidArgumentError(f"non_json must be 'wrap' or 'dead_letter', got {non_json!r}")
        settings = dict(config or {})
        if str(settings.get("enable.auto.commit", "false")).lower() not in ("false", "0"):
            raise InvalidArgumentError("KafkaBridge commits offsets itself: enable.auto.commit must be false")
        self.bootstrap = bootstrap
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics:
            raise InvalidArgumentError("KafkaBridge needs at least one topic")
        self.target: Stream | None = Stream.get_or_create(stream, url) if isinstance(stream, str) else stream
        self.group_id = group_id
        self.batch_size, self.poll_timeout, self.max_backoff = batch_size, poll_timeout, max_backoff
        self.non_json: NonJson = non_json
        self.key_prefix, self.key_header = key_prefix, key_header
        self.config = settings
        self.stats = BridgeStats()
        self.ready = threading.Event()
        """Set once partitions were first assigned to the bridge."""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[tuple[str, int], int] = {}  # stored but not yet committed: next offset
        self._fatal: KafkaError | None = None

    # -- running -----------------------------------------------------------
    def run(self, until: Callable[[], bool] | None = None) -> None:
        """Bridge in this thread until :meth:`stop` (or ``until()`` is true).
        A consumer that hit a fatal error is replaced after a back-off."""
        target = self._require_target()
        backoff = Backoff(start=0.1, limit=self.max_backoff)
        self._stop.clear()
        while not self._stop.is_set() and not (until and until()):
            consumer = Consumer(self._consumer_config(target))
            try:
                consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                   on_lost=self._on_lost)
                self._consume(consumer, target, until)
            finally:
                consumer.close()  # revokes its partitions: the stored offsets are committed
            if self._fatal is not None:
                log.error("kafka bridge %s: fatal consumer error %s; new consumer", target.name, self._fatal)
                self._fatal = None
                self._stop.wait(backoff.next(time.monotonic() + self.max_backoff))

    def start(self, timeout: float = 30.0) -> KafkaBridge:
        """Run in a daemon thread; returns once partitions are assigned, or after
        ``timeout`` seconds (the bridge keeps trying)."""
        self._require_target()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_guarded, name="minibatch-kafka-bridge", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if self.error is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                break
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop, commit what was stored and leave the group. Returns False if the
        thread is still running after ``timeout``; re-raises the error that ended it."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if self.error is not None:
            raise self.error
        return thread is None or not thread.is_alive()

    def stream(self, target: Stream) -> None:
        """Run into ``target`` until :meth:`cancel` (``Stream.attach(bridge)`` calls this)."""
        self.target = target
        self.run()

    def cancel(self) -> None:
        """Ask a running bridge to stop (``Stream.stop()`` calls this)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """True while the thread :meth:`start` made is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def uncommitted(self) -> dict[str, int]:
        """``{"topic/partition": next offset}`` stored but not yet committed."""
        return {f"{topic}/{partition}": offset for (topic, partition), offset in self._pending.items()}

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # kept for stop() to re-raise
            self.error = exc
            log.error("kafka bridge stopped: %r", exc)

    def _require_target(self) -> Stream:
        if self.target is None:
            raise InvalidArgumentError("KafkaBridge has no stream: pass one, or use stream.attach(bridge)")
        return self.target

    def _consumer_config(self, target: Stream) -> dict[str, Any]:
        backoff_ms = max(100, int(self.max_backoff * 1000))
        return {"bootstrap.servers": self.bootstrap, "group.id": self.group_id or f"minibatch.{target.name}",
                "auto.offset.reset": "earliest", "enable.partition.eof": False,
                "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": backoff_ms,
                "error_cb": self._on_error, **self.config, "enable.auto.commit": False}

    def _consume(self, consumer: Consumer, target: Stream, until: Callable[[], bool] | None) -> None:
        retry_commit = Backoff(start=0.1, limit=self.max_backoff)
        next_commit = 0.0
        while not self._stop.is_set() and not (until and until()) and self._fatal is None:
            messages = [m for m in consumer.consume(self.batch_size, self.poll_timeout) if self._ok(m)]
            if messages:
                self.stats.received += len(messages)
                if not self._store(target, messages):
                    return  # stopped during a store outage: not committed, read again next time
                for m in messages:
                    self._pending[(str(m.topic()), int(m.partition() or 0))] = int(m.offset() or 0) + 1
            if self._pending and (messages or time.monotonic() >= next_commit):
                if self._commit(consumer, self._pending):
                    retry_commit.reset()
                else:
                    next_commit = time.monotonic() + retry_commit.next(time.monotonic() + self.max_backoff)

    def _ok(self, message: KafkaMessage) -> bool:
        error = message.error()
        if error is None:
            return True
        self._on_error(error)
        return False

    def _on_error(self, error: KafkaError) -> None:
        self.stats.errors += 1
        if error.fatal():
            self._fatal = error
        level = logging.DEBUG if self.stats.errors > 1 and self.stats.errors % 100 else logging.WARNING
        log.log(level, "kafka bridge: %s (errors so far: %d)", error, self.stats.errors)

    # -- offsets -------------------------------------------------------------
    def _commit(self, consumer: Consumer, offsets: Mapping[tuple[str, int], int]) -> bool:
        chosen = dict(offsets)
        try:
            result = consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in chosen.items()],
                                     asynchronous=False)
        except KafkaException as exc:
            self.stats.commit_failures += 1
            log.warning("kafka bridge: commit failed (%s); retried later, stored messages are kept", exc)
            return False
        failed = {(tp.topic, tp.partition) for tp in result if tp.error is not None}
        for where, offset in chosen.items():
            if where not in failed and self._pending.get(where) == offset:
                del self._pending[where]
        if failed:
            self.stats.commit_failures += 1
            return False
        self.stats.commits += 1
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("kafka bridge: assigned %s", [f"{tp.topic}/{tp.partition}" for tp in partitions])
        self.ready.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        mine = {where: offset for where, offset in self._pending.items() if where in revoked}
        if mine:
            self._commit(consumer, mine)
        for where in mine:
            self._pending.pop(where, None)  # the next owner re-reads them; their keys store nothing

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.pop((tp.topic, tp.partition), None)

    # -- storing -------------------------------------------------------------
    def _store(self, target: Stream, messages: list[KafkaMessage]) -> bool:
        """Append the batch (and its dead letters), waiting out store outages.
        False if stopped before it was stored."""
        rows: list[tuple[dict[str, Any], str]] = []
        dead: list[tuple[dict[str, Any], str]] = []
        for message in messages:
            key = self._key(message)
            payload, problem = self.payload(message)
            tombstone = payload["_kafka"]["format"] == "null"
            if problem is not None and self.non_json == "dead_letter" and not tombstone:
                dead.append((self._dead_letter(message, payload["_kafka"], problem), key))
            else:
                rows.append((payload, key))
        backoff = Backoff(start=0.1, limit=self.max_backoff)
        while True:
            try:
                if dead:
                    _extend(Stream.get_or_create(f"{target.name}.dead", store=target.store), dead)
                if rows:
                    _extend(target, rows)
                break
            except _STORE_OUTAGES as exc:
                if self._stop.is_set():
                    return False
                delay = backoff.next(time.monotonic() + self.max_backoff)
                log.warning("kafka bridge: store unavailable (%s); retrying in %.1f s", exc, delay)
                self._stop.wait(delay)
        self.stats.stored += len(rows)
        self.stats.dead_lettered += len(dead)
        self.stats.wrapped += sum(1 for payload, _ in rows if payload["_kafka"]["format"] != "object")
        return True

    def _key(self, message: KafkaMessage) -> str:
        if self.key_header is not None:
            headers = message.headers() or []
            # confluent-kafka gives a list of (name, value) pairs; its stub also allows a dict
            pairs = headers.items() if isinstance(headers, dict) else headers
            for name, value in pairs:
                if name == self.key_header and value:
                    return self.key_prefix + _text(value)
        return f"{self.key_prefix}{message.topic()}/{message.partition()}/{message.offset()}"

    def payload(self, message: KafkaMessage) -> tuple[dict[str, Any], str | None]:
        """The stream payload for a Kafka message, and why it was wrapped (None
        for a JSON object)."""
        meta = _meta(message)
        raw = message.value()
        if raw is None:
            meta["format"] = "null"
            return {"_kafka": meta, "value": None}, "no value (a tombstone)"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            meta.update(format="base64", error="not UTF-8")
            return {"_kafka": meta, "value": base64.b64encode(raw).decode("ascii")}, "not UTF-8"
        try:
            value = json.loads(text)
            if isinstance(value, dict):
                meta["format"] = "object"
                return check_payload({**value, "_kafka": meta}), None
            meta.update(format="json", error=f"JSON {type(value).__name__}, not an object")
            return check_payload({"_kafka": meta, "value": value}), str(meta["error"])
        except (ValueError, InvalidPayloadError, RecursionError) as exc:
            meta.update(format="text", error=f"not storable JSON: {exc}"[:500])
            return {"_kafka": meta, "value": text}, str(meta["error"])

    def _dead_letter(self, message: KafkaMessage, meta: dict[str, Any], problem: str) -> dict[str, Any]:
        raw = message.value() or b""
        return {"stage": "kafka-bridge", "error": problem, "_kafka": meta,
                "value_base64": base64.b64encode(raw).decode("ascii")}


def _meta(message: KafkaMessage) -> dict[str, Any]:
    kind, stamp = message.timestamp()
    meta: dict[str, Any] = {"topic": message.topic(), "partition": message.partition(),
                            "offset": message.offset(), "key": None, "timestamp": stamp if kind else None}
    key = message.key()
    if key is not None:
        try:
            meta["key"] = key.decode("utf-8")
        except UnicodeDecodeError:
            meta["key_base64"] = base64.b64encode(key).decode("ascii")
    return meta


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "backslashreplace")


def _extend(target: Stream, rows: list[tuple[dict[str, Any], str]]) -> None:
    """One transaction; a batch the store refuses (a payload too large) is
    stored one by one, a refused payload as a note of what it was."""
    try:
        target.extend([payload for payload, _ in rows], [key for _, key in rows])
    except InvalidPayloadError:
        for payload, key in rows:
            try:
                target.append(payload, key)
            except InvalidPayloadError as exc:
                meta = payload.get("_kafka", {})
                target.append({"_kafka": {**meta, "format": "refused"}, "error": str(exc)[:500]}, key)


class KafkaDeliveryError(MinibatchError):
    """Messages a :class:`KafkaSink` produced were not delivered.

    ``failures`` lists ``(topic, idempotency key, error)`` for each."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.failures = failures


class KafkaSink:
    """A :class:`~minibatch_rx.sinks.Sink` producing each value to Kafka as JSON.

    Args:
        bootstrap: ``host:port[,host:port...]`` of the brokers.
        topic: the topic, or ``fn(value) -> topic``.
        key: ``fn(value) -> str | bytes | None``, the message key (default:
            the value's idempotency key).
        key_header: header holding the idempotency key (``None``: none).
        flush_timeout: seconds :meth:`flush` waits for the delivery reports;
            also librdkafka's ``message.timeout.ms`` unless ``config`` sets it.
        config: more librdkafka producer settings.
        serialize: ``fn(value) -> bytes`` (default: compact JSON; a
            :class:`~minibatch_rx.message.Message` is sent as its ``data``).
    """

    def __init__(self, bootstrap: str, topic: str | Callable[[Any], str], *,
                 key: Callable[[Any], str | bytes | None] | None = None,
                 key_header: str | None = "minibatch-key",
                 flush_timeout: float = 30.0, config: Mapping[str, Any] | None = None,
                 serialize: Callable[[Any], bytes] | None = None) -> None:
        if flush_timeout <= 0:
            raise InvalidArgumentError(f"flush_timeout must be > 0, got {flush_timeout!r}")
        self.topic, self.key, self.key_header = topic, key, key_header
        self.flush_timeout = flush_timeout
        self.serialize = serialize or _to_json
        self.config: dict[str, Any] = {
            "bootstrap.servers": bootstrap, "enable.idempotence": True,
            "message.timeout.ms": int(flush_timeout * 1000), **(config or {})}
        self.delivered = 0
        """Messages whose delivery was confirmed."""
        self._producer: Producer | None = None
        self._outstanding: dict[int, tuple[str, str]] = {}  # produced, no report yet: (topic, key)
        self._failures: list[tuple[str, str, str]] = []
        self._serial = 0

    @property
    def producer(self) -> Producer:
        """The confluent-kafka producer (made on first use, again after a fatal error)."""
        if self._producer is None:
            self._producer = Producer(self.config)
        return self._producer

    def write(self, values: Sequence[Any], keys: Sequence[str]) -> None:
        """Produce each value (asynchronously; :meth:`flush` waits for delivery)."""
        if len(values) != len(keys):
            raise InvalidArgumentError(f"write got {len(values)} values but {len(keys)} keys")
        producer = self.producer
        try:
            for value, ikey in zip(values, keys, strict=True):
                topic = self.topic if isinstance(self.topic, str) else self.topic(value)
                message_key = self.key(value) if self.key is not None else ikey
                headers: list[tuple[str, str | bytes | None]] | None = (
                    None if self.key_header is None else [(self.key_header, ikey.encode("utf-8"))])
                self._produce(producer, topic, self.serialize(value), message_key, headers, ikey)
            producer.poll(0)
        except KafkaException as exc:  # the producer is in a fatal state
            self._fail(exc)

    def _produce(self, producer: Producer, topic: str, data: bytes, message_key: str | bytes | None,
                 headers: list[tuple[str, str | bytes | None]] | None, ikey: str) -> None:
        self._serial += 1
        serial = self._serial
        self._outstanding[serial] = (topic, ikey)

        def report(error: KafkaError | None, _message: KafkaMessage) -> None:
            if self._outstanding.pop(serial, None) is None:
                return  # reported already, as lost with a producer that failed
            if error is None:
                self.delivered += 1
            else:
                self._failures.append((topic, ikey, str(error)))

        deadline = time.monotonic() + self.flush_timeout
        while True:
            try:
                producer.produce(topic, data, message_key, headers=headers, on_delivery=report)
                return
            except BufferError:  # librdkafka's queue is full: serve reports until there is room
                if time.monotonic() > deadline:
                    self._outstanding.pop(serial, None)
                    self._failures.append((topic, ikey, "producer queue full"))
                    return
                producer.poll(0.05)

    def flush(self) -> None:
        """Wait for the delivery report of everything written; raise
        :class:`KafkaDeliveryError` naming each message not delivered."""
        if self._producer is not None:
            try:
                if self._producer.flush(self.flush_timeout + 5.0):
                    # No report in time: drop them, so a retried window is not doubled by stragglers.
                    self._producer.purge(in_queue=True, in_flight=True, blocking=True)
                    self._producer.flush(5.0)
            except KafkaException as exc:
                self._fail(exc)
        for topic, ikey in self._outstanding.values():
            self._failures.append((topic, ikey, "no delivery report"))
        self._outstanding.clear()
        failures, self._failures = self._failures, []
        if failures:
            shown = "; ".join(f"{topic} key {key!r}: {error}" for topic, key, error in failures[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            raise KafkaDeliveryError(
                f"KafkaSink: {len(failures)} message(s) not delivered: {shown}{more}", failures)

    def _fail(self, exc: KafkaException) -> None:
        """The producer failed for good (e.g. an idempotent producer whose id the
        broker forgot): what it still held is lost, and the next write makes a new one."""
        log.warning("KafkaSink: producer failed (%s); a new one is made for the next write", exc)
        for topic, ikey in self._outstanding.values():
            self._failures.append((topic, ikey, str(exc)))
        self._outstanding.clear()
        self._producer = None

    def close(self) -> None:
        """Wait for outstanding deliveries (up to ``flush_timeout``) and close the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.flush(self.flush_timeout)
            finally:
                producer.close()


def _to_json(value: Any) -> bytes:
    if isinstance(value, Message):
        value = value.data
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
