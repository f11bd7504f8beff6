"""MongoDB collections in and out: a bridge follows a collection's change
stream into a stream, a pipeline totals the orders per window, and a sink
upserts the totals into another collection (exactly once, by key).

Needs a MongoDB replica set (change streams)::

    python examples/mongodb_bridge.py --source mongodb://127.0.0.1:27017/shop --count 12
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from typing import Any

import pymongo

from minibatch_rx import Window, stream
from minibatch_rx.connectors.mongodb import CollectionBridge, CollectionSink


def main() -> None:
    """Insert orders, bridge them, total them per 4 and store the totals."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", default="mongodb://127.0.0.1:27017/shop",
                        help="mongodb:// URL of a replica set, with the database")
    parser.add_argument("--count", type=int, default=12, help="orders to insert (a multiple of 4)")
    parser.add_argument("--url", default=None, help="store URL (default: the embedded SQLite store)")
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]  # this run's collections, apart from earlier runs'
    orders = stream(f"mongo_example.orders.{run}", url=args.url)
    bridge = CollectionBridge(args.source, f"orders_{run}", orders).start()  # change stream open

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(args.source)
    shop = client.get_default_database()
    shop[f"orders_{run}"].insert_many([{"n": n, "amount": 10 + n} for n in range(args.count)])

    done = threading.Event()
    seen = [0]

    def total(window: Window) -> dict[str, Any]:
        amounts = [m["doc"]["amount"] for m in window.data]
        seen[0] += len(amounts)
        if seen[0] >= args.count:
            done.set()
        return {"orders": len(amounts), "total": sum(amounts)}

    handle = (orders.count_window(4).map(total)
              .sink(CollectionSink(args.source, f"totals_{run}")).start(consumer="totals"))
    done.wait(60)
    deadline = time.monotonic() + 30
    while handle.position < args.count and time.monotonic() < deadline:
        handle.join(0.05)
    handle.stop()
    bridge.stop()

    totals = sorted(d["total"] for d in shop[f"totals_{run}"].find())
    print(f"bridged {orders.count()} changes; totals per 4 orders: {totals}")
    client.close()


if __name__ == "__main__":
    main()
