"""The MQTT connector against a private mosquitto broker (never the machine's own).

The session starts ``/usr/sbin/mosquitto`` on a free loopback port with
persistence in a temporary directory, so a restart keeps persistent sessions
and queued QoS 1 messages. Tests that restart the broker use one of their own.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from minibatch_rx import Stream, stream
from minibatch_rx.connectors import MissingExtraError
from minibatch_rx.errors import StoreUnavailableError

mqtt_connector = pytest.importorskip("minibatch_rx.connectors.mqtt")
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from minibatch_rx.connectors.mqtt import (  # noqa: E402
    KEY_PROPERTY,
    MqttBridge,
    MqttPublishError,
    MqttSink,
)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """A private mosquitto on a loopback port, with persistence in ``directory``;
    restartable on the same port (sessions and queued messages survive a stop)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory, self.port = directory, port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {directory}/\n"
            "max_queued_messages 0\n"          # the tests queue thousands for offline sessions
            f"user {getpass.getuser()}\n"      # as root, do not switch to the mosquitto user
            f"log_dest file {directory}/mosquitto.log\n")

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start and wait (bounded) until the port accepts connections."""
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return self
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM (mosquitto saves its persistence file) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None


@contextlib.contextmanager
def running_broker() -> Iterator[MosquittoBroker]:
    """A broker of its own for one test (or the session), removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="mb-mosquitto-"))
    broker = MosquittoBroker(directory).start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def broker() -> Iterator[MosquittoBroker]:
    """The module's broker; tests keep apart by unique topics and client ids."""
    with running_broker() as b:
        yield b


@pytest.fixture
def own_broker() -> Iterator[MosquittoBroker]:
    """A broker this test may stop and restart."""
    with running_broker() as b:
        yield b


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, poll: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds (a bounded wait on a condition)."""
    deadline = time.monotonic() + timeout
    done = threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        done.wait(poll)
    return predicate()


class Publisher:
    """A raw paho client that counts PUBACKs (publishes are queued while disconnected)."""

    def __init__(self, broker: MosquittoBroker, client_id: str = "", qos: int = 1,
                 session_expiry: int = 0) -> None:
        self.qos, self.acked = qos, 0
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry
        self.client.connect_async("127.0.0.1", broker.port, clean_start=session_expiry == 0,
                                  properties=props)
        self.client.loop_start()
        assert wait_until(self.client.is_connected), "publisher could not connect"

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, *rest: Any) -> None:
        with self._lock:
            self.acked += 1

    def publish(self, topic: str, payload: bytes | str, properties: Properties | None = None) -> None:
        """Queue one message (sent now or after reconnection)."""
        self.client.publish(topic, payload, self.qos, properties=properties)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def names() -> tuple[str, str]:
    """A unique topic prefix and client id for one test."""
    tag = uuid.uuid4().hex[:10]
    return f"t{tag}", f"bridge-{tag}"


def sqlite_stream(tmp_path: Path, name: str = "mqtt.in") -> Stream:
    """A fresh stream on the default embedded store."""
    return stream(name, url=f"sqlite://{tmp_path / 'store.db'}")


# -- bridge ---------------------------------------------------------------------


def test_bridge_stores_json_and_other_payloads_in_order_with_their_topics(
        broker: MosquittoBroker, names: tuple[str, str], tmp_path: Path) -> None:
    prefix, client_id = names
    target = sqlite_stream(tmp_path)
    with MqttBridge(f"mqtt://{broker.address}", [f"{prefix}/a/#", f"{prefix}/b"], target,
                    client_id=client_id) as bridge:
        publisher = Publisher(broker)
        for n in range(50):
            publisher.publish(f"{prefix}/a/x" if n % 2 else f"{prefix}/b", json.dumps({"n": n}))
        odd = [b"plain text", b"\xff\x00\xfe", b"[1, 2]", b'{"x": NaN}', b'{"topic": "mine"}']
        for payload in odd:
            publisher.publish(f"{prefix}/b", payload)
        publisher.publish(f"{prefix}/elsewhere", b'{"n": -1}')  # not subscribed
        assert wait_until(lambda: target.count() == 55), target.count()
        publisher.close()
        assert bridge.received == 55 and bridge.stored == 55 and bridge.duplicates == 0
    data = [m.data for m in target.read()]
    assert [d["n"] for d in data[:50]] == list(range(50))  # one publisher: its order
    assert all(d["topic"] == (f"{prefix}/a/x" if d["n"] % 2 else f"{prefix}/b") for d in data[:50])
    assert data[50:] == [
        {"topic": f"{prefix}/b", "payload": "plain text", "encoding": "utf-8"},
        {"topic": f"{prefix}/b", "payload": "/wD+", "encoding": "base64"},
        {"topic": f"{prefix}/b", "payload": [1, 2]},
        {"topic": f"{prefix}/b", "payload": '{"x": NaN}', "encoding": "utf-8",
         "error": "payload['x']: float nan is not finite"},
        {"topic": f"{prefix}/b", "payload": {"topic": "mine"}},
    ]


def test_dead_letter_policy_keeps_non_json_out_of_the_stream(
        broker: MosquittoBroker, names: tuple[str, str], tmp_path: Path) -> None:
    prefix, client_id = names
    target = sqlite_stream(tmp_path)
    with MqttBridge(broker.address, f"{prefix}/#", target, client_id=client_id,
                    invalid="dead_letter") as bridge:
        publisher = Publisher(broker)
        for payload in (b'{"ok": 1}', b"\xff\x01", b'{"ok": 2}'):
            publisher.publish(f"{prefix}/s", payload)
        assert wait_until(lambda: bridge.received == 3)
        publisher.close()
    assert [m.data for m in target.read()] == [{"ok": n, "topic": f"{prefix}/s"} for n in (1, 2)]
    dead = [m.data for m in stream("mqtt.in.dead", url=target.store.url).read()]
    assert dead == [{"topic": f"{prefix}/s", "payload": "/wE=", "encoding": "base64", "source": "mqtt"}]
    assert bridge.dead_lettered == 1


def test_messages_published_while_the_bridge_is_away_arrive_after_it_restarts(
        broker: MosquittoBroker, names: tuple[str, str], tmp_path: Path) -> None:
    prefix, client_id = names
    target = sqlite_stream(tmp_path)
    first = MqttBridge(broker.address, f"{prefix}/#", target, client_id=client_id).start()
    publisher = Publisher(broker)
    publisher.publish(f"{prefix}/s", json.dumps({"n": 0}))
    assert wait_until(lambda: target.count() == 1)
    assert first.stop()
    for n in range(1, 201):  # the bridge is away: the broker queues them in its session
        publisher.publish(f"{prefix}/s", json.dumps({"n": n}))
    assert wait_until(lambda: publisher.acked == 201)
    assert target.count() == 1
    with MqttBridge(broker.address, f"{prefix}/#", target, client_id=client_id):
        assert wait_until(lambda: target.count() >= 201)
    publisher.close()
    assert [m.data["n"] for m in target.read()] == list(range(201))


def test_acknowledged_only_once_durable_a_message_the_store_refused_comes_again(
        broker: MosquittoBroker, names: tuple[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    prefix, client_id = names
    target = sqlite_stream(tmp_path)
    failing = Stream(target.name, store=target.store)
    attempts = []

    def store_down(*args: Any, **kwargs: Any) -> list[int]:
        attempts.append(1)
        raise StoreUnavailableError("the store is down")

    monkeypatch.setattr(failing, "extend", store_down)
    bridge = MqttBridge(broker.address, f"{prefix}/#", failing, client_id=client_id).start()
    publisher = Publisher(broker)
    for n in range(5):
        publisher.publish(f"{prefix}/s", json.dumps({"n": n}))
    assert wait_until(lambda: bridge.received == 5 and len(attempts) >= 2)
    assert not bridge.stop(timeout=0.2)  # the store never took them: not acknowledged
    assert target.count() == 0
    with MqttBridge(broker.address, f"{prefix}/#", target, client_id=client_id):
        assert wait_until(lambda: target.count() >= 5)
    publisher.close()
    assert [m.data["n"] for m in target.read()] == list(range(5))


class FakeClient:
    """Records the acks a bridge sends."""

    def __init__(self) -> None:
        self.acks: list[int] = []

    def ack(self, mid: int, qos: int) -> None:
        self.acks.append(mid)


def incoming(mid: int, payload: bytes, dup: bool = False, topic: bytes = b"s/1") -> paho.MQTTMessage:
    message = paho.MQTTMessage(mid=mid, topic=topic)
    message.payload, message.qos, message.dup = payload, 1, dup
    return message


def test_a_redelivery_after_a_reconnect_is_stored_once_and_stale_acks_are_not_sent(tmp_path: Path) -> None:
    target = sqlite_stream(tmp_path)
    bridge = MqttBridge("127.0.0.1:1", "s/#", target, client_id="unit", key_property=None)
    fake = FakeClient()
    bridge._client = fake  # type: ignore[assignment]
    bridge._generation, bridge._connected = 1, True
    bridge._store([(incoming(7, b'{"n": 1}'), 1), (incoming(8, b'{"n": 2}'), 0)])
    assert fake.acks == [7]  # mid 8 came on an earlier connection: its ack is not sent on this one
    # After the reconnect the broker sends the unacknowledged one again, flagged dup.
    bridge._store([(incoming(8, b'{"n": 2}', dup=True), 1), (incoming(9, b'{"n": 2}', dup=True), 1),
                   (incoming(7, b'{"n": 3}', dup=True), 1), (incoming(10, b'{"n": 4}'), 1),
                   (incoming(10, b'{"n": 4}', dup=True), 1)])
    assert [m.data["n"] for m in target.read()] == [1, 2, 2, 3, 4]  # mid 9 and mid 7's new payload are new
    assert bridge.duplicates == 2 and fake.acks == [7, 8, 9, 7, 10, 10]  # in arrival order


def test_keys_make_appends_idempotent(tmp_path: Path) -> None:
    target = sqlite_stream(tmp_path)
    bridge = MqttBridge("127.0.0.1:1", "s/#", target, client_id="unit", id_field="id")
    bridge._client, bridge._connected = FakeClient(), True  # type: ignore[assignment]
    bridge._store([(incoming(1, b'{"id": "a"}'), 0), (incoming(2, b'{"id": "b"}'), 0)])
    bridge._store([(incoming(3, b'{"id": "a", "again": 1}'), 0), (incoming(4, b"x"), 0)])
    assert [m.data.get("id", m.data.get("payload")) for m in target.read()] == ["a", "b", "x"]
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [(KEY_PROPERTY, "k1")]
    by_property = MqttBridge("127.0.0.1:1", "s/#", target, client_id="unit")
    by_property._client = FakeClient()  # type: ignore[assignment]
    for mid in (5, 6):
        message = incoming(mid, b'{"p": 1}')
        message.properties = props
        by_property._store([(message, 0)])
    assert target.count() == 4
    broken = MqttBridge("127.0.0.1:1", "s/#", target, client_id="unit", key=lambda m: 1 / 0)  # type: ignore[arg-type,return-value]
    broken._client = FakeClient()  # type: ignore[assignment]
    broken._store([(incoming(7, b'{"q": 1}'), 0)])
    assert target.count() == 4 and broken.dead_lettered == 1
    dead = list(stream("mqtt.in.dead", url=target.store.url).read())
    assert "ZeroDivisionError" in dead[0].data["error"]


def test_stream_attach_runs_a_bridge_until_stream_stop(
        broker: MosquittoBroker, names: tuple[str, str], tmp_path: Path) -> None:
    prefix, client_id = names
    target = sqlite_stream(tmp_path)
    bridge = MqttBridge(broker.address, f"{prefix}/#", client_id=client_id)
    target.attach(bridge)
    assert bridge.wait_subscribed(10)
    publisher = Publisher(broker)
    publisher.publish(f"{prefix}/s", b'{"via": "attach"}')
    assert wait_until(lambda: target.count() == 1)
    publisher.close()
    assert target.stop(timeout=10)
    assert not bridge.subscribed.is_set()
    assert [m.data for m in target.read()] == [{"via": "attach", "topic": f"{prefix}/s"}]


def test_broker_restarted_mid_run_every_message_stored_once_by_id(
        own_broker: MosquittoBroker, tmp_path: Path) -> None:
    target = sqlite_stream(tmp_path)
    bridge = MqttBridge(own_broker.address, "plant/#", target, client_id="restart-bridge",
                        id_field="id", reconnect_delay=(1, 2)).start()
    sink = MqttSink(own_broker.address, lambda v: f"plant/{v['id'] % 3}", timeout=30, key_property=None,
                    reconnect_delay=(1, 2))
    total, stop_at = 3000, 1000
    stopped = threading.Event()

    def publish() -> None:
        for n in range(total):
            sink.write([{"id": n}], [str(n)])
            if n == stop_at:
                stopped.wait(10)  # the broker goes down here; the rest is queued meanwhile
            if n % 100 == 99:  # pacing: keep publishing while the broker restarts
                time.sleep(0.01)  # noqa: sleep-ok

    thread = threading.Thread(target=publish)
    thread.start()
    assert wait_until(lambda: target.count() >= 500, 20)
    own_broker.stop()
    stopped.set()
    assert wait_until(lambda: not bridge.subscribed.is_set(), 5)
    own_broker.start()
    thread.join(60)
    sink.flush()  # every message acknowledged by the broker (some twice, after the restart)
    assert wait_until(lambda: len({m.data["id"] for m in target.read()}) == total, 60)
    sink.close()
    assert bridge.stop()
    ids = [m.data["id"] for m in target.read()]
    assert sorted(ids) == list(range(total))  # nothing lost, nothing twice
    assert bridge.connects >= 2


def test_broker_restarted_mid_run_without_keys_nothing_lost_nothing_twice(
        own_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ids at all: the publisher's QoS 2 session puts each message in the
    broker once, so every duplicate would be the bridge's own. The store is
    held back while the broker goes down, so the bridge stores hundreds of
    messages it can no longer acknowledge, which the restarted broker sends again."""
    target = sqlite_stream(tmp_path)
    gate, batches = threading.Event(), []
    extend = target.extend

    def held_back(payloads: Any, keys: Any = None) -> list[int]:
        batches.append(1)
        if len(batches) > 4:
            assert gate.wait(30), "the test did not open the gate"
        return extend(payloads, keys)

    monkeypatch.setattr(target, "extend", held_back)
    bridge = MqttBridge(own_broker.address, "raw/#", target, client_id="raw-bridge", key_property=None,
                        reconnect_delay=(1, 2), max_batch=50).start()
    publisher = Publisher(own_broker, client_id="raw-publisher", qos=2, session_expiry=3600)
    total = 3000
    for n in range(total // 2):
        publisher.publish("raw/s", json.dumps({"n": n}))
    assert wait_until(lambda: publisher.acked == total // 2, 30)  # all in the broker
    assert wait_until(lambda: bridge.received >= 1000, 10)  # the bridge holds many unacknowledged
    own_broker.stop()
    assert wait_until(lambda: not bridge.subscribed.is_set(), 5)
    stored_before = target.count()
    gate.set()  # stored now, but their acks would go to a connection that is gone
    assert wait_until(lambda: target.count() >= bridge.received, 10)
    assert target.count() > stored_before + 500
    own_broker.start()
    assert wait_until(publisher.client.is_connected, 10)
    for n in range(total // 2, total):
        publisher.publish("raw/s", json.dumps({"n": n}))
    assert wait_until(lambda: publisher.acked == total, 30)
    assert wait_until(lambda: target.count() >= total, 30), target.count()
    publisher.close()
    assert bridge.stop()
    got = [m.data["n"] for m in target.read()]
    assert sorted(got) == list(range(total)), (len(got), bridge.duplicates)
    assert bridge.duplicates >= 500  # the broker did send them again, and they were recognised
    assert bridge.connects >= 2


# -- sink -------------------------------------------------------------------------


def test_sink_publishes_with_keys_and_flush_waits_for_the_acks(
        broker: MosquittoBroker, names: tuple[str, str]) -> None:
    prefix, _ = names
    received: list[tuple[str, Any, str]] = []
    subscriber = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *args: subscribed.set()
    subscriber.on_message = lambda c, u, m: received.append(
        (m.topic, json.loads(m.payload), dict(getattr(m.properties, "UserProperty", []))[KEY_PROPERTY]))
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.subscribe(f"{prefix}/#", qos=1)
    subscriber.loop_start()
    assert subscribed.wait(10)
    sink = MqttSink(f"mqtt://{broker.address}", lambda v: f"{prefix}/{v['kind']}")
    values = [{"kind": "even" if n % 2 == 0 else "odd", "n": n} for n in range(300)]
    sink.write(values[:150], [f"k{n}" for n in range(150)])
    sink.write(values[150:], [f"k{n}" for n in range(150, 300)])
    sink.flush()
    assert sink.published == 300
    assert wait_until(lambda: len(received) == 300)
    subscriber.disconnect()
    subscriber.loop_stop()
    sink.close()
    assert received == [(f"{prefix}/{v['kind']}", v, f"k{v['n']}") for v in values]


def test_sink_flush_raises_when_the_broker_is_down_and_delivers_once_it_is_back(
        own_broker: MosquittoBroker) -> None:
    sink = MqttSink(own_broker.address, "out/s", timeout=0.5, reconnect_delay=(1, 1))
    sink.write([{"n": 0}], ["a"])
    sink.flush()
    own_broker.stop()
    sink.write([{"n": 1}], ["b"])
    with pytest.raises(MqttPublishError, match="1 of 1 messages not acknowledged"):
        sink.flush()
    own_broker.start()
    sink.timeout = 15
    sink.flush()  # queued in the client, sent after the reconnection
    assert sink.published == 2
    sink.close()


def test_sink_without_any_broker_raises_at_flush() -> None:
    sink = MqttSink(f"127.0.0.1:{free_port()}", "nowhere", timeout=0.3)
    sink.write([{"n": 1}, {"n": 2}], ["a", "b"])
    with pytest.raises(MqttPublishError, match=r"2 of 2 messages not acknowledged .* \(not connected\)"):
        sink.flush()
    sink.close()


def test_sink_refuses_values_that_are_not_json(broker: MosquittoBroker) -> None:
    sink = MqttSink(broker.address, "x")
    with pytest.raises(TypeError):
        sink.write([{"s": {1, 2}}], ["k"])
    sink.close()


# -- packaging, example -------------------------------------------------------------


def test_importing_without_paho_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "paho" or n.startswith("paho.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "paho", None)
    monkeypatch.delitem(sys.modules, "minibatch_rx.connectors.mqtt")
    with pytest.raises(MissingExtraError, match=r"pip install 'minibatch_rx\[mqtt\]'"):
        importlib.import_module("minibatch_rx.connectors.mqtt")


def test_the_example_bridges_and_publishes(broker: MosquittoBroker, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "examples/mqtt_bridge.py", "--broker", broker.address, "--count", "20",
         "--url", f"sqlite://{tmp_path / 'example.db'}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "bridged 20 readings; mean temperature per sensor: {'s0': 20.9, 's1': 21.0}"


def test_a_closed_sink_connects_again_for_the_next_run(broker: MosquittoBroker) -> None:
    # A pipeline description, and the sink in it, may run more than once; each run closes it.
    sink = MqttSink(broker.address, "reuse/s", timeout=10)
    sink.write([{"n": 0}], ["a"])
    sink.flush()
    sink.close()
    sink.write([{"n": 1}], ["b"])
    sink.flush()
    assert sink.published == 2
    sink.close()
