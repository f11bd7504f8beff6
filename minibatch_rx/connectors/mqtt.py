"""MQTT in and out with paho-mqtt 2.x (MQTT v5): a bridge from topic filters
into a stream, and a sink that publishes a pipeline's values.

:class:`MqttBridge` subscribes with QoS 1 under a fixed client id and a
persistent session (``clean_start=False`` and a session expiry interval), so
the broker keeps what is published while the bridge is away. Acknowledgement
is manual: a message's PUBACK is sent only once the append that holds it is
durable in the stream, so a bridge that stops or crashes before that gets the
message again. Messages are appended in batches (one transaction per batch,
in arrival order, so per-topic order is kept).

Guarantees. Nothing acknowledged to the broker is lost. A message the broker
sends again after a reconnect (flagged *dup*, same packet id, topic and
payload as one this bridge already stored) is recognised and stored once,
so a broker restart or a network cut stores nothing twice. After a crash of
the bridge itself, the messages it stored but had not yet acknowledged come
again and are stored again (at-least-once), unless they carry a key: the
``key=`` function, the payload field ``id_field=``, or the MQTT v5 user
property ``mb-key`` (:data:`KEY_PROPERTY`, which :class:`MqttSink` sets);
a keyed message is an idempotent append, stored once whatever happens.

Stored messages. A JSON object payload is stored as that object with the
topic added under ``topic_field`` (default ``"topic"``). Any other JSON value,
or an object that already has a ``topic_field`` key, is stored as
``{"topic": ..., "payload": value}``. A payload that is not JSON (or JSON a
stream refuses, e.g. NaN) is, with ``invalid="wrap"`` (the default), stored
as ``{"topic": ..., "payload": text, "encoding": "utf-8"}`` or, if not UTF-8,
``{"topic": ..., "payload": base64, "encoding": "base64"}`` (plus ``"error"``
when it was refused JSON); with ``invalid="dead_letter"`` that record goes
to ``<stream>.dead`` instead. A message the store refuses even so goes to
``<stream>.dead``; nothing is dropped silently.

Example (not run here: it needs a broker)::

    bridge = MqttBridge("mqtt://localhost:1883", ["sensors/#"], stream("readings"),
                        client_id="readings-bridge", id_field="id").start()
    ...
    bridge.stop()

    stream("readings").count_window(100).map(summary).sink(
        MqttSink("localhost:1883", "summaries"))
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from minibatch_rx.connectors import require
from minibatch_rx.errors import InvalidArgumentError, InvalidPayloadError, MinibatchError
from minibatch_rx.streams import Stream
from minibatch_rx.validation import check_payload

require("paho.mqtt.client", "mqtt", "the MQTT connector")

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from paho.mqtt.reasoncodes import ReasonCode  # noqa: E402
from paho.mqtt.subscribeoptions import SubscribeOptions  # noqa: E402

__all__ = ["KEY_PROPERTY", "Broker", "MqttBridge", "MqttError", "MqttPublishError", "MqttSink"]

log = logging.getLogger(__name__)

KEY_PROPERTY = "mb-key"
"""The MQTT v5 user property carrying a message's idempotency key."""

_TRANSIENT = (ConnectionError, TimeoutError)  # StoreUnavailableError, StoreBusyError, StoreFullError...
_Item = tuple[mqtt.MQTTMessage, int]  # a received message and the connection it came on


class MqttError(MinibatchError):
    """The broker refused the bridge's connection or subscription."""


class MqttPublishError(MinibatchError, ConnectionError):
    """:meth:`MqttSink.flush` could not get every message acknowledged."""


@dataclass(frozen=True)
class Broker:
    """Where a broker listens, from ``mqtt://[user:password@]host[:port]``
    (``mqtts://`` for TLS), ``host:port`` or ``host``.

    >>> Broker.parse('mqtt://bob:s3cret@10.0.0.5:1884')
    Broker(host='10.0.0.5', port=1884, tls=False, username='bob', password='s3cret')
    >>> Broker.parse('localhost', port=2883).port, Broker.parse('mqtts://example.org').port
    (2883, 8883)
    """

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, broker: str, port: int | None = None) -> Broker:
        """Parse ``broker``; ``port`` wins over a port in it."""
        text = broker if "://" in broker else f"mqtt://{broker}"
        parts = urlsplit(text)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise InvalidArgumentError(f"an MQTT broker is mqtt://host:port or host:port, got {broker!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        try:
            given = parts.port
        except ValueError:
            raise InvalidArgumentError(f"bad port in MQTT broker {broker!r}") from None
        return cls(parts.hostname, port or given or (8883 if tls else 1883), tls,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)

    def client(self, client_id: str, manual_ack: bool = False) -> mqtt.Client:
        """A paho MQTT v5 client for this broker (not yet connected)."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=MQTTProtocolVersion.MQTTv5, manual_ack=manual_ack)
        if self.tls:
            client.tls_set()
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        return client

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _user_property(message: mqtt.MQTTMessage, name: str) -> str | None:
    for prop_name, value in getattr(message.properties, "UserProperty", None) or ():
        if prop_name == name:
            return str(value)
    return None


class MqttBridge:
    """Appends the messages of MQTT topic filters to a stream (see the module doc).

    Args:
        broker: ``mqtt://[user:password@]host[:port]``, ``host:port`` or ``host``.
        topics: one topic filter or several (``sensors/#``, ``+/status``).
        stream: the target; may be left out when :meth:`Stream.attach` supplies it.
        client_id: the fixed client id naming the persistent session (one
            bridge per id: two would take the session from each other).
        port: overrides the port in ``broker``.
        qos: 1 (at least once, the default) or 0 (at most once, no session guarantees).
        key: ``key(message) -> str | None`` (a paho ``MQTTMessage``), the idempotency key.
        id_field: a field of JSON object payloads holding a unique id (the key).
        key_property: the MQTT v5 user property holding a key (``None``: not used).
        topic_field: the field recording the topic in stored messages.
        invalid: ``"wrap"`` non-JSON payloads into the stream or ``"dead_letter"`` them.
        max_batch: most messages per append.
        max_inflight: messages the broker may send before they are acknowledged
            (MQTT v5 Receive Maximum): bounds a batch and the bridge's memory.
        session_expiry: seconds the broker keeps the session (and queues
            messages) while the bridge is away.
        reconnect_delay: ``(first, longest)`` wait between reconnection attempts,
            seconds; it doubles from the first to the longest.
    """

    def __init__(self, broker: str, topics: str | Sequence[str], stream: Stream | None = None, *,
                 client_id: str, port: int | None = None, qos: int = 1,
                 key: Callable[[mqtt.MQTTMessage], str | None] | None = None, id_field: str | None = None,
                 key_property: str | None = KEY_PROPERTY, topic_field: str = "topic",
                 invalid: Literal["wrap", "dead_letter"] = "wrap", max_batch: int = 1000,
                 max_inflight: int = 1000, session_expiry: int = 7 * 24 * 3600,
                 reconnect_delay: tuple[int, int] = (1, 30), keepalive: int = 30) -> None:
        self.broker = Broker.parse(broker, port)
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not self.topics or not all(isinstance(t, str) and t for t in self.topics):
            raise InvalidArgumentError(f"topics must be non-empty topic filters, got {topics!r}")
        if not isinstance(client_id, str) or not client_id:
            raise InvalidArgumentError("a bridge needs a fixed, non-empty client_id (its session's name)")
        if qos not in (0, 1):
            raise InvalidArgumentError(f"qos must be 0 or 1, got {qos!r}")
        if invalid not in ("wrap", "dead_letter"):
            raise InvalidArgumentError(f"invalid must be 'wrap' or 'dead_letter', got {invalid!r}")
        for name, value in (("max_batch", max_batch), ("max_inflight", max_inflight)):
            if not isinstance(value, int) or not 0 < value <= 65535:
                raise InvalidArgumentError(f"{name} must be an int in 1..65535, got {value!r}")
        self.target = stream
        self.client_id, self.qos = client_id, qos
        self.key, self.id_field, self.key_property = key, id_field, key_property
        self.topic_field, self.invalid = topic_field, invalid
        self.max_batch, self.max_inflight = max_batch, max_inflight
        self.session_expiry, self.reconnect_delay, self.keepalive = session_expiry, reconnect_delay, keepalive
        self.subscribed = threading.Event()
        """Set while connected and subscribed."""
        self.error: BaseException | None = None
        """What the broker refused (a subscription), if anything."""
        self.received = self.stored = self.duplicates = self.dead_lettered = self.connects = 0
        # Redeliveries are recognised by packet id, topic and payload; only the
        # last messages can be resent (at most max_inflight are unacknowledged).
        self._recent: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._recent_size = 4 * max_inflight + max_batch
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()  # generation, connected and acks
        self._generation, self._connected = 0, False
        self._stopping = False
        self._drain, self._abandon, self._stopped = threading.Event(), threading.Event(), threading.Event()
        self._stop_lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._writer: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------
    def start(self, timeout: float = 30.0) -> MqttBridge:
        """Connect and bridge in background threads; returns once subscribed
        (or after ``timeout`` seconds if the broker cannot be reached yet: it
        keeps trying). Raises :class:`MqttError` if the broker refuses a
        subscription."""
        if self.target is None:
            raise InvalidArgumentError("MqttBridge has no stream: pass one, or use stream.attach(bridge)")
        with self._stop_lock:
            if self._stopped.is_set():
                return self
            if self._client is not None:
                raise InvalidArgumentError("this bridge was started already (make a new one to start again)")
            self._start_threads()
        deadline = time.monotonic() + timeout
        while not self.subscribed.wait(0.05) and self.error is None and time.monotonic() < deadline:
            pass
        if self.error is not None:
            self.stop()
            raise self.error
        if not self.subscribed.is_set():
            log.warning("MQTT bridge %s: broker %s not reached within %.0f s; still trying",
                        self.client_id, self.broker, timeout)
        return self

    def _start_threads(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name=f"mqtt-bridge-{self.client_id}",
                                        daemon=True)
        self._writer.start()
        client = self._client = self.broker.client(self.client_id, manual_ack=True)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_subscribe, client.on_message = self._on_subscribe, self._on_message
        client.reconnect_delay_set(*self.reconnect_delay)
        props = _properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry
        props.ReceiveMaximum = self.max_inflight
        client.connect_async(self.broker.host, self.broker.port, self.keepalive, clean_start=False,
                             properties=props)
        client.loop_start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop: messages already received are stored and acknowledged, later
        ones are left to the broker for the next run; then disconnect. Returns
        False if the store did not take the last messages within ``timeout``
        seconds (they are not acknowledged, so the broker sends them again)."""
        with self._stop_lock:
            if self._stopped.is_set() or self._client is None:
                self._stopped.set()
                return True
            self._stopping = True  # the network thread queues nothing more
            self._drain.set()
            assert self._writer is not None
            self._writer.join(timeout)
            stored_all = not self._writer.is_alive()
            if not stored_all:
                self._abandon.set()
                self._writer.join(1.0)
            self._client.disconnect()
            self._client.loop_stop()
            self.subscribed.clear()
            self._stopped.set()
            log.info("MQTT bridge %s stopped: %d received, %d stored, %d duplicates, %d dead letters",
                     self.client_id, self.received, self.stored, self.duplicates, self.dead_lettered)
            return stored_all

    def run(self, duration: float | None = None) -> None:
        """Bridge until :meth:`stop` (from another thread) or ``duration``
        seconds or Ctrl-C, then stop."""
        if self._client is None:
            self.start()
        try:
            self._stopped.wait(duration)
        finally:
            self.stop()

    def stream(self, stream: Stream) -> None:
        """The original connectors' protocol (``stream.attach(bridge)``):
        bridge into ``stream`` until :meth:`cancel`."""
        self.target = stream
        self.run()

    def cancel(self) -> None:
        """Stop the bridge (``stream.stop()`` calls it for attached bridges)."""
        self.stop()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until connected and subscribed."""
        return self.subscribed.wait(timeout)

    def __enter__(self) -> MqttBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- paho callbacks (the network thread) ----------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.error("MQTT bridge %s: broker %s refused the connection: %s",
                      self.client_id, self.broker, reason)
            return
        with self._lock:
            self._generation += 1
            self._connected = True
        self.connects += 1
        log.info("MQTT bridge %s connected to %s (session present: %s)",
                 self.client_id, self.broker, flags.session_present)
        # Retained messages only for a new subscription: a resubscription after
        # a reconnect does not send them again.
        options = SubscribeOptions(qos=self.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe([(topic, options) for topic in self.topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        refused = [f"{topic} ({reason})" for topic, reason in zip(self.topics, reasons, strict=False)
                   if reason.is_failure]
        if refused:
            self.error = MqttError(f"broker {self.broker} refused the subscription(s) {', '.join(refused)}")
            log.error("MQTT bridge %s: %s", self.client_id, self.error)
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, properties: Properties | None) -> None:
        with self._lock:
            self._generation += 1  # acks of messages received before this are not sent
            self._connected = False
        self.subscribed.clear()
        if not self._stopping:
            log.warning("MQTT bridge %s lost %s (%s); reconnecting with back-off",
                        self.client_id, self.broker, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self._stopping:  # when stopping: not acknowledged, so the broker keeps it
            self.received += 1
            self._queue.put((message, self._generation))

    # -- storing (the writer thread) -----------------------------------------
    def _write_loop(self) -> None:
        while not self._abandon.is_set():
            try:
                batch = [self._queue.get(timeout=0.05)]
            except queue.Empty:
                if self._drain.is_set():
                    return
                continue
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._store(batch)
            except Exception:  # never end the bridge: unacknowledged messages come again
                log.exception("MQTT bridge %s could not store %d messages", self.client_id, len(batch))

    def _store(self, batch: list[_Item]) -> None:
        assert self.target is not None
        payloads: list[dict[str, Any]] = []
        keys: list[str | None] = []
        kept: list[_Item] = []
        dead: list[tuple[_Item, dict[str, Any]]] = []
        acks: list[_Item] = []
        seen: dict[int, tuple[str, int]] = {}
        for item in batch:
            message = item[0]
            ident = (message.topic, hash(message.payload))
            data, error = self.decode(message)
            to_dead = error is not None and self.invalid == "dead_letter"
            try:
                key = self._key(message, data)
            except Exception as exc:  # a failing key function dead-letters, never stops the bridge
                data, key, to_dead = self._raw(message, f"key failed: {exc!r}"), None, True
            mid = message.mid
            if key is None and message.dup and ident in (seen.get(mid), self._recent.get(mid)):
                self.duplicates += 1
                acks.append(item)
            elif to_dead:
                dead.append((item, data))
            else:
                payloads.append(data)
                keys.append(key)
                kept.append(item)
                if key is None:
                    seen[message.mid] = ident
        if payloads:
            acks += self._append(payloads, keys, kept, dead)
        if dead:
            acks += self._dead_letter(dead)
        # PUBACKs go in the order the messages came (MQTT 4.6).
        done = {id(item) for item in acks}
        with self._lock:
            for message, generation in (item for item in batch if id(item) in done):
                if message.qos and generation == self._generation and self._connected:
                    assert self._client is not None
                    self._client.ack(message.mid, message.qos)

    def _append(self, payloads: list[dict[str, Any]], keys: list[str | None], items: list[_Item],
                dead: list[tuple[_Item, dict[str, Any]]]) -> list[_Item]:
        """Append (retrying outages until stopped); the items stored. Items the
        store refuses are added to ``dead``."""
        assert self.target is not None
        delay = 0.05
        while True:
            try:
                self.target.extend(payloads, keys if any(k is not None for k in keys) else None)
                break
            except _TRANSIENT as exc:
                if self._abandon.is_set():
                    return []
                log.warning("MQTT bridge %s: store unavailable (%s); retrying in %.2f s",
                            self.client_id, exc, delay)
                self._abandon.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception as exc:
                if len(payloads) == 1:
                    dead.append((items[0], self._raw(items[0][0], f"refused by the store: {exc!r}")))
                    return []
                stored: list[_Item] = []
                for payload, key, item in zip(payloads, keys, items, strict=True):
                    stored += self._append([payload], [key], [item], dead)
                return stored
        self.stored += len(items)
        for (message, _), key in zip(items, keys, strict=True):
            if key is None:
                self._recent[message.mid] = (message.topic, hash(message.payload))
                self._recent.move_to_end(message.mid)
        while len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)
        return items

    def _dead_letter(self, dead: list[tuple[_Item, dict[str, Any]]]) -> list[_Item]:
        assert self.target is not None
        name = f"{self.target.name}.dead"
        try:
            Stream(name, store=self.target.store).extend([{**data, "source": "mqtt"} for _, data in dead])
        except Exception:
            log.exception("MQTT bridge %s could not dead-letter %d messages to %s (not acknowledged: the "
                          "broker sends them again)", self.client_id, len(dead), name)
            return []
        self.dead_lettered += len(dead)
        log.warning("MQTT bridge %s: %d messages went to %s", self.client_id, len(dead), name)
        return [item for item, _ in dead]

    # -- messages --------------------------------------------------------------
    def decode(self, message: mqtt.MQTTMessage) -> tuple[dict[str, Any], str | None]:
        """The stored form of ``message`` and, for a payload that is not JSON a
        stream accepts, why (see the module doc)."""
        topic = message.topic
        try:
            value = json.loads(message.payload.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            return self._raw(message, None), "not JSON"
        if isinstance(value, dict) and self.topic_field not in value:
            data = value
            data[self.topic_field] = topic
        else:
            data = {self.topic_field: topic, "payload": value}
        try:
            return check_payload(data), None
        except InvalidPayloadError as exc:
            return self._raw(message, str(exc)), str(exc)

    def _raw(self, message: mqtt.MQTTMessage, error: str | None) -> dict[str, Any]:
        payload = bytes(message.payload)
        try:
            data = {self.topic_field: message.topic, "payload": payload.decode("utf-8"), "encoding": "utf-8"}
        except UnicodeDecodeError:
            data = {self.topic_field: message.topic, "payload": base64.b64encode(payload).decode("ascii"),
                    "encoding": "base64"}
        if error is not None:
            data["error"] = error
        return data

    def _key(self, message: mqtt.MQTTMessage, data: dict[str, Any]) -> str | None:
        if self.key is not None:
            key = self.key(message)
        elif self.id_field is not None:
            value = data.get(self.id_field) if "encoding" not in data else None
            key = None if value is None else str(value)
        else:
            key = _user_property(message, self.key_property) if self.key_property else None
        if key is not None and (not isinstance(key, str) or not key):
            raise InvalidArgumentError(f"a message key must be a non-empty str, got {key!r}")
        return key


class MqttSink:
    """A :class:`~minibatch_rx.sinks.Sink` publishing each value as JSON (bytes
    as they are) with QoS 1 and its idempotency key in the MQTT v5 user
    property :data:`KEY_PROPERTY`, so consumers (an :class:`MqttBridge`) can
    drop replays. :meth:`flush` returns once the broker acknowledged every
    message, or raises :class:`MqttPublishError` after ``timeout`` seconds.

    ``topic`` is a topic name or ``topic(value) -> str``. Values written while
    the broker is away wait in the sink, in order, and are published on
    reconnection; a flush that gives up leaves them waiting (and a replayed
    window publishes again: at-least-once, with the same keys). Messages in
    flight when a connection breaks are sent again by paho after the
    reconnection, possibly after newer ones.
    """

    def __init__(self, broker: str, topic: str | Callable[[Any], str], *, port: int | None = None,
                 qos: int = 1, timeout: float = 30.0, client_id: str = "", retain: bool = False,
                 key_property: str | None = KEY_PROPERTY, max_pending: int = 10000,
                 reconnect_delay: tuple[int, int] = (1, 30), keepalive: int = 30) -> None:
        if qos not in (0, 1, 2):
            raise InvalidArgumentError(f"qos must be 0, 1 or 2, got {qos!r}")
        if not callable(topic) and (not isinstance(topic, str) or not topic):
            raise InvalidArgumentError(f"topic must be a topic name or a function, got {topic!r}")
        self.broker = Broker.parse(broker, port)
        self.topic, self.qos, self.timeout, self.retain = topic, qos, timeout, retain
        self.key_property, self.max_pending = key_property, max_pending
        self.published = 0
        """Messages the broker acknowledged (counted at flush)."""
        # Lock order: _send (publishing, the backlog) before _acked (the counts).
        self._send = threading.Lock()
        self._backlog: list[tuple[str, bytes | str, Properties | None]] = []
        self._acked = threading.Condition()
        self._pending: list[int] = []
        self._done: dict[int, ReasonCode] = {}
        self._waiting = 0  # len(self._backlog), readable under _acked
        self._client = self.broker.client(client_id)
        self._client.on_publish, self._client.on_connect = self._on_publish, self._on_connect
        self._client.reconnect_delay_set(*reconnect_delay)
        self._keepalive = keepalive
        self._closed = True
        self._open()

    def _open(self) -> None:
        """Connect (again, after :meth:`close`: a pipeline may run more than once)."""
        if self._closed:
            self._closed = False
            self._client.connect_async(self.broker.host, self.broker.port, self._keepalive)
            self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, properties: Properties | None) -> None:
        if reason.is_failure:
            log.error("MQTT sink: broker %s refused the connection: %s", self.broker, reason)
            return
        with self._send:
            backlog, self._backlog = self._backlog, []
            for message in backlog:
                self._publish(*message)
            with self._acked:
                self._waiting = 0

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Properties | None) -> None:
        with self._acked:
            self._done[mid] = reason
            self._acked.notify_all()

    def _publish(self, topic: str, payload: bytes | str, props: Properties | None) -> None:
        info = self._client.publish(topic, payload, self.qos, self.retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttPublishError(
                f"cannot publish to {topic!r} on {self.broker}: {mqtt.error_string(info.rc)}")
        with self._acked:
            self._pending.append(info.mid)

    def write(self, values: Sequence[Any], keys: Sequence[str]) -> None:
        """Publish each value (now if connected, else on reconnection, in order)."""
        self._open()
        for value, key in zip(values, keys, strict=True):
            if len(self._pending) + self._waiting >= self.max_pending:
                self.flush()
            payload = bytes(value) if isinstance(value, bytes | bytearray) else json.dumps(
                value, separators=(",", ":"), allow_nan=False)
            topic = self.topic(value) if callable(self.topic) else self.topic
            props = None
            if self.key_property:
                props = _properties(PacketTypes.PUBLISH)
                props.UserProperty = [(self.key_property, key)]
            with self._send:
                if self._backlog or not self._client.is_connected():
                    self._backlog.append((topic, payload, props))
                    with self._acked:
                        self._waiting = len(self._backlog)
                else:
                    self._publish(topic, payload, props)

    def flush(self) -> None:
        """Wait until the broker acknowledged everything written; raise
        :class:`MqttPublishError` if it refused a message or after ``timeout`` seconds."""
        deadline = time.monotonic() + self.timeout
        with self._acked:
            while self._waiting or not all(mid in self._done for mid in self._pending):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = self._waiting + sum(mid not in self._done for mid in self._pending)
                    state = "connected" if self._client.is_connected() else "not connected"
                    raise MqttPublishError(
                        f"{missing} of {self._waiting + len(self._pending)} messages not acknowledged by "
                        f"{self.broker} within {self.timeout:g} s ({state}); they are sent on reconnection")
                self._acked.wait(min(left, 0.5))
            reasons = [self._done.pop(mid) for mid in self._pending]
            self._pending = []
        refused = [reason for reason in reasons if reason.is_failure]
        self.published += len(reasons) - len(refused)
        if refused:
            raise MqttPublishError(f"{self.broker} refused {len(refused)} of {len(reasons)} messages: "
                                   f"{sorted({str(r) for r in refused})}")

    def close(self) -> None:
        """Disconnect (messages not flushed are dropped); a later write connects again."""
        if not self._closed:
            self._closed = True
            self._client.disconnect()
            self._client.loop_stop()
