"""A pipeline for the ``minibatch`` command to run: order totals per window.

    printf '{"item": "tea", "qty": 2, "price": 3.5}\\n' | minibatch append cli.orders
    minibatch run examples/cli_pipeline.py:pipeline --consumer totals     # Ctrl-C stops it
    minibatch tail cli.order_totals

``pipeline`` is a function of no arguments returning the pipeline, so importing
this module opens no store: ``minibatch run --url ...`` chooses the store (it
sets ``MINIBATCH_URL`` before the pipeline is built).
"""

from __future__ import annotations

from typing import Any

from minibatch_rx import Pipeline, Window, stream

SOURCE = "cli.orders"
TOTALS = "cli.order_totals"


def total(window: Window[dict[str, Any]]) -> dict[str, Any]:
    """One window of orders summed up: how many, which seqs, the amount."""
    amount = sum(order.get("qty", 1) * order.get("price", 0.0) for order in window.data)
    return {"orders": len(window), "seqs": [window.first_seq, window.last_seq], "amount": round(amount, 2)}


def pipeline() -> Pipeline[Any, Any]:
    """Orders in windows of up to 5 (a partial window after 1 s), each summed into ``cli.order_totals``."""
    return stream(SOURCE).count_window(5, timeout="1s").map(total).sink(TOTALS)


if __name__ == "__main__":
    print("run me with: minibatch run examples/cli_pipeline.py:pipeline")
