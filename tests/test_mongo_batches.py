"""MongoDB: a batch is stored whole or not at all, even when its producer is
SIGKILLed between the insert commands pymongo splits it into."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import pymongo
import pytest

from minibatch_rx.store import mongo_batch
from minibatch_rx.store.mongodb import MongoStore

BIG = 10_000  # documents of ~6 KB: 60 MB, past pymongo's 48 MB split
CHILD = """
import sys
from minibatch_rx.store.mongodb import MongoStore
store = MongoStore(sys.argv[1])
store.append("big", [{"i": i, "pad": "x" * 6000} for i in range(int(sys.argv[2]))])
print("done", flush=True)
"""


def raw(url: str) -> pymongo.collection.Collection[dict[str, Any]]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    return client.get_default_database()["mb_messages"]


def wait_for(predicate: Any, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Poll ``predicate``; the pause between polls is the child's own exit wait."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        try:
            process.wait(timeout=0.005)
            raise AssertionError(f"the producer finished before it could be killed ({process.returncode})")
        except subprocess.TimeoutExpired:
            continue


def test_producer_killed_mid_batch_leaves_all_or_nothing(mongo_url: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = MongoStore(mongo_url)
    store.append("big", [{"before": True}])
    messages = raw(mongo_url)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # a reader polling all along: each read must show none or all of the batch
        while not stop.is_set():
            seen.append(len(store.read("big", after=1)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    child = subprocess.Popen([sys.executable, "-c", CHILD, mongo_url, str(BIG)], stdout=subprocess.PIPE)
    try:
        # Kill once part of the batch is stored on the server, before all of it is.
        wait_for(lambda: messages.count_documents({"s": "big"}) > 1, 120, child)
        child.kill()
        child.wait(30)
        stored_at_kill = messages.count_documents({"s": "big"})
    finally:
        stop.set()
        watcher.join(30)
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert child.returncode == -9
    assert 1 < stored_at_kill < BIG + 1, "the kill did not land mid-batch"
    assert set(seen) <= {0, BIG}, f"a reader saw part of the batch: {sorted(set(seen))[:5]}"
    held = [m.seq for m in store.read("big")]
    assert held in ([1], list(range(1, BIG + 2))), f"{len(held)} messages held"
    assert store.last_seq("big") == held[-1]

    # The next producer waits for the dead batch to stand still, then takes its seqs back.
    monkeypatch.setattr(mongo_batch, "STALE_AFTER", 0.5)
    assert MongoStore(mongo_url).append("big", [{"after": 1}, {"after": 2}]) == [held[-1] + 1, held[-1] + 2]
    after = store.read("big")
    assert [m.seq for m in after] == list(range(1, held[-1] + 3))
    assert [m.data for m in after[-2:]] == [{"after": 1}, {"after": 2}]
    assert messages.count_documents({"s": "big"}) == held[-1] + 2, "the dead batch's documents are gone"
    assert store.count("big") == held[-1] + 2


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage any batch over 2 KB, in chunks of at most 3 documents."""
    monkeypatch.setattr(mongo_batch, "CHUNK_BYTES", 2000)
    monkeypatch.setattr(mongo_batch, "CHUNK_DOCS", 3)
    monkeypatch.setattr(mongo_batch, "STALE_AFTER", 0.2)


def test_staged_batch_is_stored_whole_with_keys(mongo_url: str, small_chunks: None) -> None:
    store = MongoStore(mongo_url)
    payloads = [{"i": i, "pad": "x" * 300} for i in range(20)]
    assert store.append("s", payloads[:2]) == [1, 2]
    keys = [f"k{i}" for i in range(20)]
    assert store.append("s", payloads, keys) == list(range(3, 23))
    assert store.append("s", payloads, keys) == list(range(3, 23)), "keys are found again"
    assert [m.data for m in store.read("s")] == payloads[:2] + payloads
    assert raw(mongo_url).count_documents({"h": {"$exists": True}}) == 0, "marks removed after commit"
    assert store.count("s") == 22


def test_reader_stops_before_an_uncommitted_batch(mongo_url: str, small_chunks: None) -> None:
    store = MongoStore(mongo_url)
    store.append("s", [{"i": 0}])
    # What a producer that died after its tail and before its head leaves behind:
    raw(mongo_url).insert_many([{"s": "s", "q": q, "t": store.read("s")[0].ts, "d": {"i": q},
                                 "h": 2, "b": "dead"} for q in (3, 4, 5)])
    assert [m.seq for m in store.read("s")] == [1]
    assert store.reader("s").read(1) == []
    assert store.count("s") == 1
    assert store.last_seq("s") == 1
    store.clear("s")  # removal leaves an uncommitted batch alone
    assert raw(mongo_url).count_documents({"s": "s", "b": "dead"}) == 3
    assert store.append("s", [{"i": 1}]) == [2]
    assert store.append("s", [{"i": 2}]) == [3]
    assert [m.data for m in store.read("s")] == [{"i": 1}, {"i": 2}]


def test_concurrent_staged_and_small_batches_stay_whole(mongo_url: str, small_chunks: None) -> None:
    batches = {f"p{p}": [{"p": p, "i": i, "pad": "x" * 300} for i in range(12)] for p in range(3)}
    batches.update({f"q{p}": [{"p": p, "i": i} for i in range(3)] for p in range(3)})

    def produce(name: str) -> None:
        store = MongoStore(mongo_url)
        for _ in range(3):
            store.append("s", batches[name])

    threads = [threading.Thread(target=produce, args=(name,)) for name in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    messages = MongoStore(mongo_url).read("s")
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1))
    assert len(messages) == 3 * sum(len(b) for b in batches.values())
    # Each staged batch is contiguous: a batch's 12 messages follow each other.
    runs = [messages[i:i + 12] for i in range(len(messages)) if messages[i].data.get("pad")
            and messages[i].data["i"] == 0]
    assert len(runs) == 9
    for run in runs:
        assert [m.data["i"] for m in run] == list(range(12))
        assert len({m.data["p"] for m in run}) == 1


def test_extend_of_1000_small_documents_is_not_staged(mongo_url: str) -> None:
    store = MongoStore(mongo_url)
    assert store.append("s", [{"i": i} for i in range(1000)]) == list(range(1, 1001))
    assert raw(mongo_url).count_documents({"b": {"$exists": True}}) == 0


def test_a_live_reader_never_skips_the_head_of_a_batch_committed_during_its_read(
    mongo_url: str, small_chunks: None,
) -> None:
    # A read that finds a batch's tail but not its head (inserted, as the commit,
    # right after the read) must stop in front of it and read again, else it
    # skips the head for good.
    writer, reading = MongoStore(mongo_url), MongoStore(mongo_url)
    writer.append("s", [{"pre": 1}])
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        reader, after = reading.reader("s"), 0
        while not stop.is_set() or after < writer.last_seq("s"):
            messages = reader.read(after)
            for message in messages:
                seen.append(message.seq)
                after = message.seq
            if not messages:
                reader.wait(after, 0.05)
        reader.close()

    def produce() -> None:
        store = MongoStore(mongo_url)
        for batch in range(8):
            store.append("s", [{"b": batch, "i": i, "pad": "x" * 300} for i in range(10)])

    thread = threading.Thread(target=read)
    thread.start()
    producers = [threading.Thread(target=produce) for _ in range(2)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    stop.set()
    thread.join(60)
    assert seen == list(range(1, writer.last_seq("s") + 1)) == list(range(1, 162))


@pytest.mark.parametrize("removal", ["trim", "clear"])
def test_removing_a_committed_batch_whose_writer_died_before_tidying_keeps_its_tail(
    mongo_url: str, small_chunks: None, removal: str,
) -> None:
    store = MongoStore(mongo_url)
    store.append("s", [{"i": 0}])
    ts = store.read("s")[0].ts
    # What a producer killed after its commit (the head) and before removing the
    # tail's marks leaves behind: a committed batch, still marked.
    raw(mongo_url).insert_many([{"s": "s", "q": q, "t": ts, "d": {"i": q}, "h": 2, "b": "tok"}
                                for q in (3, 4, 5)])
    raw(mongo_url).insert_one({"s": "s", "q": 2, "t": ts, "d": {"i": 2}, "b": "tok"})
    assert [m.seq for m in store.read("s")] == [1, 2, 3, 4, 5]
    if removal == "trim":
        store.trim("s", 2)
        assert [m.seq for m in store.read("s")] == [3, 4, 5]
    else:
        store.clear("s")
        assert store.read("s") == []
    assert store.last_seq("s") == 5
    assert store.append("s", [{"new": 1}]) == [6], "no seq is reused"
