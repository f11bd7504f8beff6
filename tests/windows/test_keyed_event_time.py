"""Keyed windows on both clocks, in virtual time (issue 10, point 7).

For each clock (ingest time, event time) and each assigner (tumbling,
sliding by time, session): keys interleaved, out-of-order records, the
exact late boundaries, grace, the idle advance, session merges, freed
state and acks across keys. Then the pieces the engine is made of:
timestamps, keys, keyed count windows and custom emitters per key.

Reading the marbles: ``rec(at, seq, key, t)`` is record ``seq`` of ``key``
arriving at scheduler time ``at`` with time ``t`` (ingest ``ts`` and event
field alike). Windows read ``(time emitted, key, seqs, start, end, ack)``;
late records ``(time, seq)``. Subscription is at 200. Every expected value
is derived in the comment next to it.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from enum import Enum, IntEnum
from typing import Any

import pytest
from reactivex.testing import TestScheduler
from reactivex.testing.recorded import Recorded

from minibatch_rx import Message, Window, WindowEmitter
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.windows import Count, Custom, Resume, Session, Sliding, Tumbling, WindowCore, WindowOperator
from minibatch_rx.windows._timed import TimeWindowCore, micros
from minibatch_rx.windows.assigners import Gaps, Grid
from minibatch_rx.windows.clocks import BadRecordError, EventTime, IngestTime, event_seconds
from minibatch_rx.windows.keyed import KeyedCore
from minibatch_rx.windows.keys import KeyBy, key_text
from windows.keyed_marbles import capture_cores, event, keyed, keyed_operator, rec, run_keyed
from windows.marbles import arrive, msg, notifications

TUMBLING = Tumbling(10)
SLIDING = Sliding(10, 5, by="time")  # windows [5k, 5k + 10)
SESSION = Session(4)

# -- keys interleaved: each key's windows on their own, ordered by first record ------------


def test_event_tumbling_keys_interleaved() -> None:
    run = run_keyed(TUMBLING, [
        rec(201, 1, "a", 1), rec(202, 2, "b", 2), rec(203, 3, "a", 8), rec(204, 4, "c", 9),
        rec(205, 5, "b", 12),  # watermark 12 >= 10: [0, 10) closes for a, b and c
        rec(206, 6, "a", 15),
        rec(207, 7, "c", 21),  # watermark 21: [10, 20) closes for b (opened by seq 5) and a (seq 6)
        rec(208, 8, "b", 30),  # watermark 30: [20, 30) closes for c
    ], event())
    assert run.windows == [
        # Same close: by first record (a: 1, b: 2, c: 4); one ack for the step, on the last:
        # b's [10, 20) still holds seq 5, so 4.
        (205, "a", [1, 3], 0, 10, None), (205, "b", [2], 0, 10, None), (205, "c", [4], 0, 10, 4),
        # b before a this time (first records 5 < 6), not by key name; c's [20, 30) holds 7.
        (207, "b", [5], 10, 20, None), (207, "a", [6], 10, 20, 6),
        (208, "c", [7], 20, 30, 7),  # b's [30, 40) holds 8
        # Quiet after 208: the watermark 30 advances 1:1 from 208 + idle 100; it reaches
        # 40 at 308 + (40 - 30) = 318. Nothing held any more: ack the last seq seen.
        (318, "b", [8], 30, 40, 8),
    ]
    assert run.late == []


def test_event_sliding_keys_interleaved() -> None:
    run = run_keyed(SLIDING, [
        rec(201, 1, "a", 1),  # a: [-5, 5) [0, 10)
        rec(202, 2, "b", 6),  # b: [0, 10) [5, 15); watermark 6 closes a's [-5, 5)
        rec(203, 3, "a", 7),  # a: [0, 10) [5, 15)
        rec(204, 4, "b", 11),  # b: [5, 15) [10, 20); watermark 11 closes the [0, 10)s
        rec(205, 5, "a", 16),  # a: [10, 20) [15, 25); watermark 16 closes the [5, 15)s
    ], event())
    assert run.windows == [
        (202, "a", [1], -5, 5, 0),  # a's [0, 10) still holds seq 1
        # [0, 10) by first record (a 1, b 2); held after: b's [5, 15) from seq 2, so ack 1.
        (204, "a", [1, 3], 0, 10, None), (204, "b", [2], 0, 10, 1),
        # [5, 15): b (first record 2) before a (3); held: b's [10, 20) from 4, so ack 3.
        (205, "b", [2, 4], 5, 15, None), (205, "a", [3], 5, 15, 3),
        # Quiet: watermark 16 from 205 + 100; close 20 at 305 + 4 = 309, close 25 at 305 + 9.
        (309, "b", [4], 10, 20, None), (309, "a", [5], 10, 20, 4),  # a's [15, 25) holds 5
        (314, "a", [5], 15, 25, 5),
    ]


def test_event_session_keys_interleaved_never_merge_across_keys() -> None:
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 1),  # a: [1, 5)
        rec(202, 2, "b", 3),  # b: [3, 7), overlapping a's session in time: another key, no merge
        rec(203, 3, "a", 4),  # a: [1, 8)
        rec(204, 4, "b", 6),  # b: [3, 10)
        rec(205, 5, "c", 5),  # c: [5, 9)
        rec(206, 6, "a", 12),  # a: [12, 16), apart from [1, 8); watermark 12 closes close <= 12
    ], event())
    assert run.windows == [
        # By close: a 8, c 9, b 10. Held: a's new session from 6, so ack 5.
        (206, "a", [1, 3], 1, 8, None), (206, "c", [5], 5, 9, None), (206, "b", [2, 4], 3, 10, 5),
        (310, "a", [6], 12, 16, 6),  # quiet from 206 + 100, watermark 12 -> 16 at 306 + 4
    ]


def test_ingest_tumbling_keys_interleaved() -> None:
    run = run_keyed(TUMBLING, [
        rec(201, 1, "a", 201), rec(202, 2, "b", 202), rec(205, 3, "a", 205), rec(207, 4, "c", 207),
        rec(212, 5, "b", 212), rec(214, 6, "a", 214), rec(221, 7, "c", 221),
    ])
    # Ingest time: a window closes at its end on the scheduler clock (quiet 0.25 s is over
    # by then: no record within 0.25 s of any end).
    assert run.windows == [
        (210, "a", [1, 3], 200, 210, None), (210, "b", [2], 200, 210, None),
        (210, "c", [4], 200, 210, 4),  # nothing held: ack the last seq seen
        (220, "b", [5], 210, 220, None), (220, "a", [6], 210, 220, 6),  # b opened first (5 < 6)
        (230, "c", [7], 220, 230, 7),
    ]


def test_ingest_sliding_keys_interleaved() -> None:
    run = run_keyed(SLIDING, [
        rec(201, 1, "a", 201),  # a: [195, 205) [200, 210)
        rec(203, 2, "b", 203),  # b: [195, 205) [200, 210)
        rec(206, 3, "b", 206),  # b: [200, 210) [205, 215)
        rec(208, 4, "a", 208),  # a: [200, 210) [205, 215)
    ])
    assert run.windows == [
        (205, "a", [1], 195, 205, None), (205, "b", [2], 195, 205, 0),  # a's [200, 210) holds 1
        (210, "a", [1, 4], 200, 210, None), (210, "b", [2, 3], 200, 210, 2),  # b's [205, 215) holds 3
        (215, "b", [3], 205, 215, None), (215, "a", [4], 205, 215, 4),  # b opened [205, 215) first
    ]


def test_ingest_session_keys_interleaved_never_merge_across_keys() -> None:
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 201),  # a: [201, 205)
        rec(202, 2, "b", 202),  # b: [202, 206)
        rec(203, 3, "a", 203),  # a: [201, 207)
        rec(204, 4, "b", 204),  # b: [202, 208)
        rec(206, 5, "c", 206),  # c: [206, 210)
    ])
    assert run.windows == [
        (207, "a", [1, 3], 201, 207, 1),  # b still holds 2
        (208, "b", [2, 4], 202, 208, 4),  # c holds 5
        (210, "c", [5], 206, 210, 5),
    ]


# -- out of order, late, exact boundaries ----------------------------------------------------
# A record is late when a window it belongs to has closed: [start, end) closes once the
# watermark reaches end + grace. A record exactly at `end` belongs to the next window.


def test_event_tumbling_out_of_order_and_late_boundaries() -> None:
    run = run_keyed(TUMBLING, [
        rec(201, 1, "a", 5),  # watermark 5 - 3 = 2
        rec(202, 2, "b", 12),  # watermark 9
        rec(203, 3, "a", 8),  # behind the newest (12) but [0, 10) is open (9 < 10): accepted
        rec(204, 4, "a", 13),  # watermark 10 = end of [0, 10): closes it
        rec(205, 5, "b", 10),  # exactly at the end: belongs to [10, 20), not late
        rec(206, 6, "a", 9.999999),  # the last microsecond of [0, 10): late
        rec(207, 7, "b", 23),  # watermark 20: closes [10, 20)
        rec(208, 8, "a", 17),  # [10, 20) closed at watermark 20 exactly: late
    ], event(max_delay=3))
    assert run.windows == [
        (204, "a", [1, 3], 0, 10, 1),  # b's [10, 20) holds seq 2
        (207, "b", [2, 5], 10, 20, None), (207, "a", [4], 10, 20, 6),  # b's [20, 30) holds 7
        (318, "b", [7], 20, 30, 8),  # quiet: watermark 20 at 208 + 100, 30 at 308 + 10
    ]
    assert run.late == [(206, 6), (208, 8)]


def test_event_sliding_out_of_order_and_late_boundaries() -> None:
    run = run_keyed(SLIDING, [
        rec(201, 1, "a", 7),  # a: [0, 10) [5, 15); watermark 5
        # [-5, 5) closed at watermark 5 (empty): late for it, yet a member of a's [0, 10).
        rec(202, 2, "a", 3),
        rec(203, 3, "b", 10),  # b: [5, 15) [10, 20); watermark 8
        rec(204, 4, "a", 12),  # a: [5, 15) [10, 20); watermark 10 closes [0, 10)
        # t = 5 is the end of [-5, 5) and the start of [5, 15): in [0, 10) (closed: late)
        # and in b's open [5, 15), which it joins.
        rec(205, 5, "b", 5),
        rec(206, 6, "b", 17),  # b: [10, 20) [15, 25); watermark 15 closes [5, 15)
    ], event(max_delay=2))
    assert run.windows == [
        (204, "a", [1, 2], 0, 10, 0),  # a's [5, 15) holds seq 1
        # [5, 15): a (first record 1) before b (3); held: b's [10, 20) from 3, so ack 2.
        (206, "a", [1, 4], 5, 15, None), (206, "b", [3, 5], 5, 15, 2),
        # Quiet from 206 + 100 at watermark 15: close 20 at 306 + 5, close 25 at 306 + 10.
        (311, "b", [3, 6], 10, 20, None), (311, "a", [4], 10, 20, 5),  # b's [15, 25) holds 6
        (316, "b", [6], 15, 25, 6),
    ]
    assert run.late == [(202, 2), (205, 5)]


def test_event_session_out_of_order_and_late_boundaries() -> None:
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 10),  # a: [10, 14); watermark 8
        rec(202, 2, "a", 8),  # out of order, overlaps [10, 14): a: [8, 14)
        rec(203, 3, "b", 11),  # b: [11, 15)
        rec(204, 4, "a", 20),  # a: [20, 24); watermark 18 closes a's [8, 14) and b's [11, 15)
        rec(205, 5, "a", 13),  # joins no open session, inside a's emitted [8, 14): late
        rec(206, 6, "b", 15),  # exactly at the end of b's emitted [11, 15): a new session [15, 19)
        rec(207, 7, "c", 14),  # its own session [14, 18) ends at the watermark 18: late
        rec(208, 8, "c", 14.5),  # [14.5, 18.5) ends after 18: a session
    ], event(max_delay=2))
    assert run.windows == [
        (204, "a", [1, 2], 8, 14, None), (204, "b", [3], 11, 15, 3),  # a's [20, 24) holds 4
        # Quiet from 208 + 100 at watermark 18: 18.5 at 308.5, 19 at 309, 24 at 314.
        (308.5, "c", [8], 14.5, 18.5, 3), (309, "b", [6], 15, 19, 3),  # a still holds 4
        (314, "a", [4], 20, 24, 8),
    ]
    assert run.late == [(205, 5), (207, 7)]


def test_ingest_tumbling_lagging_records_and_late_boundaries() -> None:
    run = run_keyed(TUMBLING, [
        rec(201, 1, "a", 201), rec(204, 2, "b", 204),
        rec(206, 3, "a", 203),  # stamped before seq 2, its window still open: accepted
        # [200, 210) closes at 210 on the clock.
        rec(212, 4, "b", 210),  # stamped exactly 210: [210, 220)
        rec(213, 5, "a", 209.999999),  # the last microsecond of [200, 210): late
    ])
    assert run.windows == [
        (210, "a", [1, 3], 200, 210, None), (210, "b", [2], 200, 210, 3),
        (220, "b", [4], 210, 220, 5),  # the late seq 5 counts as handled
    ]
    assert run.late == [(213, 5)]


def test_ingest_sliding_lagging_records_and_late_boundaries() -> None:
    run = run_keyed(SLIDING, [
        rec(201, 1, "a", 201), rec(203, 2, "b", 203),
        rec(206, 3, "a", 204),  # [195, 205) closed at 205: late for it, a member of [200, 210)
        rec(207, 4, "b", 205),  # exactly 205: [200, 210) [205, 215), not [195, 205)
    ])
    assert run.windows == [
        (205, "a", [1], 195, 205, None), (205, "b", [2], 195, 205, 0),  # a's [200, 210) holds 1
        (210, "a", [1, 3], 200, 210, None), (210, "b", [2, 4], 200, 210, 3),  # b's [205, 215): 4
        (215, "b", [4], 205, 215, 4),
    ]
    assert run.late == [(206, 3)]


def test_ingest_session_lagging_records_and_late_boundaries() -> None:
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 201),  # a: [201, 205), closes at 205
        rec(203, 2, "b", 203),  # b: [203, 207)
        rec(206, 3, "a", 204),  # inside a's emitted session: late
        rec(206.5, 4, "a", 205),  # exactly at its end, [205, 209) not yet closed: a session
        rec(210, 5, "c", 205),  # its own [205, 209) is behind the watermark 210: late
    ])
    assert run.windows == [
        (205, "a", [1], 201, 205, 1),  # b holds 2
        (207, "b", [2], 203, 207, 3),  # a's new session holds 4
        (209, "a", [4], 205, 209, 4),
    ]
    assert run.late == [(206, 3), (210, 5)]


# -- grace -------------------------------------------------------------------------------------


def test_event_tumbling_grace() -> None:
    run = run_keyed(Tumbling(10, grace=2), [
        rec(201, 1, "a", 5), rec(202, 2, "b", 11),  # watermark 11: [0, 10) closes at 12
        rec(203, 3, "a", 9),  # within grace: joins a's [0, 10)
        rec(204, 4, "b", 12),  # watermark 12 = end + grace: closes it
        rec(205, 5, "a", 9.5),  # late
        rec(206, 6, "a", 21.999999),  # watermark a microsecond short of 22: [10, 20) stays open
        rec(207, 7, "b", 22),  # 22: closes b's [10, 20)
    ], event())
    assert run.windows == [
        (204, "a", [1, 3], 0, 10, 1),  # b's [10, 20) holds 2
        (207, "b", [2, 4], 10, 20, 5),  # a's [20, 30) holds 6
        # Quiet from 207 + 100 at watermark 22: close 32 at 307 + 10.
        (317, "a", [6], 20, 30, None), (317, "b", [7], 20, 30, 7),
    ]
    assert run.late == [(205, 5)]


def test_event_sliding_grace() -> None:
    run = run_keyed(Sliding(10, 5, by="time", grace=2), [
        rec(201, 1, "a", 4),  # a: [-5, 5) [0, 10)
        rec(202, 2, "a", 6.5),  # a: [0, 10) [5, 15); watermark 6.5 < 5 + 2
        rec(203, 3, "b", 4.5),  # b: [-5, 5) [0, 10): within grace
        rec(204, 4, "b", 7),  # b: [0, 10) [5, 15); watermark 7 closes [-5, 5)
        rec(205, 5, "b", 3),  # [-5, 5) closed: late, and a member of b's [0, 10) (closes at 12)
        rec(206, 6, "a", 12),  # a: [5, 15) [10, 20); watermark 12 closes [0, 10)
    ], event())
    assert run.windows == [
        (204, "a", [1], -5, 5, None), (204, "b", [3], -5, 5, 0),  # a's [0, 10) holds 1
        (206, "a", [1, 2], 0, 10, None), (206, "b", [3, 4, 5], 0, 10, 1),  # a's [5, 15) holds 2
        # Quiet from 206 + 100 at watermark 12: close 17 at 311, close 22 at 316.
        (311, "a", [2, 6], 5, 15, None), (311, "b", [4], 5, 15, 5),  # a's [10, 20) holds 6
        (316, "a", [6], 10, 20, 6),
    ]
    assert run.late == [(205, 5)]


def test_ingest_tumbling_grace() -> None:
    run = run_keyed(Tumbling(10, grace=2), [
        rec(201, 1, "a", 201), rec(205, 2, "b", 205),
        rec(211, 3, "a", 208),  # after the end, within grace: joins [200, 210)
        # The clock closes [200, 210) at 212.
        rec(213, 4, "b", 209),  # late
        rec(214, 5, "a", 214),
    ])
    assert run.windows == [
        (212, "a", [1, 3], 200, 210, None), (212, "b", [2], 200, 210, 3),
        (222, "a", [5], 210, 220, 5),
    ]
    assert run.late == [(213, 4)]


def test_ingest_sliding_grace() -> None:
    run = run_keyed(Sliding(10, 5, by="time", grace=2), [
        rec(201, 1, "a", 201),  # a: [195, 205) [200, 210)
        rec(206, 2, "a", 204),  # [195, 205) closes at 207: joins it, and [200, 210)
        # The clock closes [195, 205) at 207.
        rec(208, 3, "b", 203),  # late for [195, 205), a member of b's [200, 210)
    ])
    assert run.windows == [
        (207, "a", [1, 2], 195, 205, 0),  # a's [200, 210) holds 1
        (212, "a", [1, 2], 200, 210, None), (212, "b", [3], 200, 210, 3),
    ]
    assert run.late == [(208, 3)]


# -- the idle advance: windows close on a quiet stream, at exact times ------------------------
# Event time: last arrival t, idle i, max_delay d, newest time m: the watermark m - d
# advances 1:1 from t + i, so a window [s, e) with grace g closes at t + i + (e + g - (m - d)).
# Ingest time: at max(e + g, last arrival + quiet).


def test_event_tumbling_idle_advance() -> None:
    run = run_keyed(Tumbling(10, grace=1), [
        rec(201, 1, "a", 3), rec(202.5, 2, "b", 7), rec(203, 3, "a", 4),  # m - d = 7 - 2 = 5
        # t = 203: [0, 10) closes at 203 + 1.5 + (10 + 1 - 5) = 210.5.
        rec(211, 4, "b", 9.5),  # the watermark the clock moved stays: [0, 10) is closed, late
        rec(212, 5, "a", 25),  # m - d = 23: [20, 30) closes at 212 + 1.5 + (31 - 23) = 221.5
    ], event(max_delay=2, idle=1.5))
    assert run.windows == [
        (210.5, "a", [1, 3], 0, 10, None), (210.5, "b", [2], 0, 10, 3),
        (221.5, "a", [5], 20, 30, 5),
    ]
    assert run.late == [(211, 4)]


def test_event_sliding_idle_advance() -> None:
    run = run_keyed(SLIDING, [
        rec(201, 1, "a", 3),  # a: [-5, 5) [0, 10)
        rec(202, 2, "b", 6),  # b: [0, 10) [5, 15); m - d = 6 - 2 = 4
    ], event(max_delay=2, idle=1.5))
    assert run.windows == [
        (204.5, "a", [1], -5, 5, 0),  # 202 + 1.5 + (5 - 4); a's [0, 10) holds 1
        (209.5, "a", [1], 0, 10, None), (209.5, "b", [2], 0, 10, 1),  # + (10 - 4); b's [5, 15): 2
        (214.5, "b", [2], 5, 15, 2),  # + (15 - 4)
    ]


def test_event_session_idle_advance() -> None:
    run = run_keyed(Session(3), [
        rec(201, 1, "a", 10),  # a: [10, 13)
        rec(201.5, 2, "b", 11),  # b: [11, 14)
        rec(202, 3, "a", 12),  # a: [10, 15); m - d = 12 - 1 = 11
    ], event(max_delay=1, idle=2))
    assert run.windows == [
        (207, "b", [2], 11, 14, 0),  # 202 + 2 + (14 - 11); a holds 1
        (208, "a", [1, 3], 10, 15, 3),  # 202 + 2 + (15 - 11)
    ]


def test_ingest_tumbling_quiet_advance() -> None:
    run = run_keyed(TUMBLING, [
        rec(201, 1, "a", 201), rec(209.5, 2, "b", 209.5),
        rec(215, 3, "a", 215),
    ], IngestTime(quiet=1))
    assert run.windows == [
        # [200, 210): at max(210, 209.5 + 1) = 210.5, the quiet holds it past its end.
        (210.5, "a", [1], 200, 210, None), (210.5, "b", [2], 200, 210, 2),
        (220, "a", [3], 210, 220, 3),  # max(220, 215 + 1)
    ]


def test_ingest_sliding_quiet_advance() -> None:
    run = run_keyed(SLIDING, [
        rec(204.5, 1, "a", 204.5),  # a: [195, 205) [200, 210)
        rec(209.6, 2, "b", 209.6),  # b: [200, 210) [205, 215)
    ], IngestTime(quiet=1))
    assert run.windows == [
        (205.5, "a", [1], 195, 205, 0),  # max(205, 204.5 + 1); a's [200, 210) holds 1
        (210.6, "a", [1], 200, 210, None), (210.6, "b", [2], 200, 210, 1),  # max(210, 209.6 + 1)
        (215, "b", [2], 205, 215, 2),
    ]


def test_ingest_session_quiet_advance() -> None:
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 201),  # a: [201, 205)
        rec(204.5, 2, "b", 204.5),  # b: [204.5, 208.5)
    ], IngestTime(quiet=1))
    assert run.windows == [
        (205.5, "a", [1], 201, 205, 1),  # max(205, 204.5 + 1); b holds 2
        (208.5, "b", [2], 204.5, 208.5, 2),
    ]


# -- session merges --------------------------------------------------------------------------


def test_event_out_of_order_record_bridges_two_sessions_of_its_key_only() -> None:
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 10),  # a: [10, 14); watermark 10 - 5 = 5
        rec(202, 2, "a", 16),  # a: [16, 20), apart (16 >= 14)
        rec(203, 3, "b", 14),  # between a's sessions, but another key: bridges nothing
        rec(204, 4, "a", 13),  # [13, 17) overlaps both of a's: one session [10, 20)
    ], event(max_delay=5))
    assert run.windows == [
        # Quiet from 204 + 100 at watermark 16 - 5 = 11: 18 at 304 + 7, 20 at 304 + 9.
        (311, "b", [3], 14, 18, 0),  # a's session holds 1
        (313, "a", [1, 2, 4], 10, 20, 4),  # members in seq order
    ]
    assert run.late == []


def test_event_bridged_session_closes_at_its_merged_end_not_its_old_ones() -> None:
    # Without the bridge, a's first session [10, 14) would close at watermark 14.
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 10), rec(202, 2, "a", 16),  # a: [10, 14) and [16, 20)
        rec(203, 3, "a", 13),  # bridge: [10, 20); watermark 16 - 5 = 11
        rec(204, 4, "b", 19),  # watermark 14: no session of a closes at 14 any more
        rec(205, 5, "b", 25),  # watermark 20: a's [10, 20) closes, and b's [19, 23) at 23 > 20 not
    ], event(max_delay=5))
    assert run.windows == [
        (205, "a", [1, 2, 3], 10, 20, 3),  # b's [19, 23) holds 4
        # b: [19, 23) and [25, 29); quiet from 205 + 100 at watermark 20: 23 at 308, 29 at 314.
        (308, "b", [4], 19, 23, 4), (314, "b", [5], 25, 29, 5),
    ]


def test_ingest_sessions_cannot_be_bridged_the_earlier_one_is_already_closed() -> None:
    # Ingest time has no max_delay: a session of a key ends before the next one starts, so
    # the watermark (the newest ts) has closed it by then. A lagging record between them
    # extends the later session backwards, and never reopens the earlier one.
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 201),  # a: [201, 205), closes at 205
        rec(206, 2, "a", 206),  # a: [206, 210)
        rec(207, 3, "a", 204.5),  # [204.5, 208.5) overlaps [206, 210) only: a: [204.5, 210)
    ])
    assert run.windows == [(205, "a", [1], 201, 205, 1), (210, "a", [2, 3], 204.5, 210, 3)]
    assert run.late == []


# -- state is freed, acks never pass a seq another key holds -----------------------------------

SCENARIOS = {
    # (spec, clock, records, the time by which every window is closed)
    "event-tumbling": (TUMBLING, event(idle=1), [rec(201, 1, "a", 1), rec(202, 2, "b", 12)], 215),
    "event-sliding": (SLIDING, event(idle=1), [rec(201, 1, "a", 1), rec(202, 2, "b", 12)], 215),
    "event-session": (SESSION, event(idle=1), [rec(201, 1, "a", 1), rec(202, 2, "b", 12)], 215),
    "ingest-tumbling": (TUMBLING, None, [rec(201, 1, "a", 201), rec(212, 2, "b", 212)], 230),
    "ingest-sliding": (SLIDING, None, [rec(201, 1, "a", 201), rec(212, 2, "b", 212)], 230),
    "ingest-session": (SESSION, None, [rec(201, 1, "a", 201), rec(212, 2, "b", 212)], 230),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_key_state_is_freed_with_its_last_window(name: str) -> None:
    spec, clock, records, done = SCENARIOS[name]
    seen: dict[str, set[Any]] = {}

    def keys_at(label: str) -> Callable[[WindowCore], None]:
        def note(core: WindowCore) -> None:
            assert isinstance(core, TimeWindowCore)
            seen[label] = set(core.by_key)
        return note

    # a's record (time 1 or 201) and b's (12 or 212) are 11 s apart: a's windows have all
    # closed by the time b's record arrives (a tumbling/sliding window of 10 ends by 10,
    # a session of gap 4 by 5), and b's last by 12 + 10 + 1 s of idle.
    run = run_keyed(spec, records, clock,
                    at=[(201.5, keys_at("a open")), (202.5 if clock else 212.5, keys_at("b open")),
                        (done, keys_at("done"))])
    core = run.core
    assert isinstance(core, TimeWindowCore)
    assert seen == {"a open": {"a"}, "b open": {"b"}, "done": set()}
    assert core.held_min_seq() is None
    assert {window[1] for window in run.windows} == {"a", "b"}


def test_a_key_window_ack_never_passes_a_seq_another_key_holds() -> None:
    run = run_keyed(SESSION, [
        rec(201, 1, "a", 0),  # a: [0, 4)
        rec(202, 2, "b", 1),  # b: [1, 5)
        rec(203, 3, "a", 3),  # a: [0, 7)
        rec(204, 4, "b", 6),  # b: [6, 10); watermark 6 closes b's [1, 5)
        rec(205, 5, "a", 6),  # a: [0, 10)
        rec(206, 6, "b", 11),  # watermark 11 closes a's [0, 10) and b's [6, 10)
    ], event())
    assert run.windows == [
        (204, "b", [2], 1, 5, 0),  # b's window is done, but a still holds seq 1: ack 0
        # Same close: by first record, a (1) before b (4); held: b's [11, 15) from 6.
        (206, "a", [1, 3, 5], 0, 10, None), (206, "b", [4], 6, 10, 5),
        (310, "b", [6], 11, 15, 6),
    ]


def test_held_min_seq_is_the_lowest_first_record_of_any_key() -> None:
    core = TimeWindowCore(EventTime("t", max_delay=10).start(), Grid(micros(10), micros(10)),
                          key_by=KeyBy("k"))
    held = []
    for seq, key, t in [(1, "a", 5), (2, "b", 15), (3, "a", 16), (4, "c", 22), (5, "b", 31)]:
        core.on_message(msg(seq, 0, {"k": key, "t": t}), 0.0)
        held.append(core.held_min_seq())
    # Seqs 1-3 open a's [0, 10), b's [10, 20), a's [10, 20): 1 is held. Seq 4 (watermark
    # 22 - 10 = 12) closes a's [0, 10): b's window from 2 is the lowest, before a's from 3.
    # Seq 5 (watermark 21) closes both [10, 20)s: c's [20, 30) from 4, not b's new one from 5.
    assert held == [1, 1, 1, 2, 4]
    assert set(core.by_key) == {"b", "c"}



# -- timestamps --------------------------------------------------------------------------------
# 2026-01-01T00:00:00Z is 1767225600: 56 years after 1970 with 14 leap days (1972..2024),
# (56 * 365 + 14) * 86400 = 20454 * 86400.
NEW_YEAR_2026 = 1767225600


@pytest.mark.parametrize(("value", "seconds"), [
    ("2026-01-01T00:00:01Z", NEW_YEAR_2026 + 1),
    ("2026-01-01T02:00:01+02:00", NEW_YEAR_2026 + 1),  # the same instant, two hours east
    ("2025-12-31T19:00:01-05:00", NEW_YEAR_2026 + 1),
    ("2026-01-01T00:00:01", NEW_YEAR_2026 + 1),  # naive: UTC
    ("2026-01-01 00:00:01.250", NEW_YEAR_2026 + 1.25),  # space separator, fraction
    ("20260101T000001Z", NEW_YEAR_2026 + 1),  # ISO-8601 basic format
    ("2026-01-01", NEW_YEAR_2026),
    (5, 5.0), (-5, -5.0), (5.25, 5.25), (NEW_YEAR_2026, NEW_YEAR_2026),
    (datetime(2026, 1, 1, 0, 0, 1), NEW_YEAR_2026 + 1),  # naive: UTC
    (datetime(2026, 1, 1, 9, 0, 1, tzinfo=timezone(timedelta(hours=9))), NEW_YEAR_2026 + 1),
])
def test_event_seconds_reads_iso_text_epoch_numbers_and_datetimes(value: Any, seconds: float) -> None:
    assert event_seconds(value) == seconds


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process' local time zone is New York's (5 hours behind UTC in January)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york")
@pytest.mark.parametrize("value", ["2026-01-01T00:00:01", "2026-01-01 00:00:01",
                                   datetime(2026, 1, 1, 0, 0, 1)])
def test_naive_times_are_utc_whatever_the_local_time_zone(value: Any) -> None:
    assert event_seconds(value) == NEW_YEAR_2026 + 1  # not 5 hours later, as local time


@pytest.mark.parametrize("value", [
    True, False, None, math.nan, math.inf, -math.inf,
    "yesterday", "", "5",  # epoch seconds are numbers, not digits in text
    "2026-01-01T25:00", "2026-13-01", " 2026-01-01",
    [2026], {"t": 1}, b"2026-01-01", date(2026, 1, 1),
])
def test_event_seconds_rejects_what_is_not_a_timestamp(value: Any) -> None:
    with pytest.raises(BadRecordError, match=r"is not ISO-8601 text, epoch seconds or a datetime"):
        event_seconds(value)


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "key"), [
    ("kitchen", "kitchen"), ("", ""), (0, 0), (-1.5, -1.5), (True, True), (None, None),
    (["floor", 1], ("floor", 1)),  # a list (what JSON gives) becomes a tuple
    (("floor", [1, 2]), ("floor", (1, 2))),  # nested too
    ([], ()),
])
def test_keys_are_plain_values_lists_become_tuples(value: Any, key: Any) -> None:
    assert KeyBy("k").key_of({"k": value}) == key
    assert type(KeyBy("k").key_of({"k": value})) is type(key)


class Floor(IntEnum):
    GROUND = 0


class Room(str, Enum):  # noqa: UP042 - not a StrEnum: its str() is "Room.HALL"
    HALL = "hall"


class Celsius(float):
    """A float subclass, like ``numpy.float64``."""


@pytest.mark.parametrize(("value", "key"), [
    (Floor.GROUND, 0),  # its repr would name the enum: an idempotency key must not
    (Room.HALL, "hall"),  # str(Room.HALL) is 'Room.HALL'; the key is the plain value
    (Celsius(21.5), 21.5),  # was refused: "is a Celsius; keys must be str, int, float..."
    ([Floor.GROUND, Room.HALL], (0, "hall")),
])
def test_keys_of_a_subclass_of_str_int_or_float_are_their_plain_value(value: Any, key: Any) -> None:
    got = KeyBy(lambda v: v).key_of(value)
    assert got == key
    assert [type(part) for part in (got if isinstance(got, tuple) else (got,))] == \
        [type(part) for part in (key if isinstance(key, tuple) else (key,))]
    assert key_text(got) == key_text(key)


@pytest.mark.parametrize(("value", "reason"), [
    ({"id": 1}, "is a dict; keys must be str, int, float, bool, None or a tuple of them"),
    (["a", {"id": 1}], "is a dict"),
    ({1, 2}, "is a set"),
    (b"a", "is a bytes"),
    (math.nan, "is not a finite number"),
    (math.inf, "is not a finite number"),
    (Celsius(math.nan), "is not a finite number"),
])
def test_keys_of_other_types_are_rejected(value: Any, reason: str) -> None:
    with pytest.raises(BadRecordError, match=re.escape(reason)):
        KeyBy("k").key_of({"k": value})


def test_a_missing_key_or_a_failing_key_function_names_the_record() -> None:
    with pytest.raises(BadRecordError, match=r"key_by field 'room' is missing from \{'k': 1\}"):
        KeyBy("room").key_of({"k": 1})

    def floor(value: Any) -> Any:
        return value["floor"] // value["rooms"]

    with pytest.raises(BadRecordError, match=r"key_by function \S*floor failed: ZeroDivisionError: integer"):
        KeyBy(floor).key_of({"floor": 1, "rooms": 0})


def test_a_list_key_and_the_same_tuple_key_share_one_window() -> None:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(arrive(201, 1, data={"k": ["x", 1]}),
                                         arrive(202, 2, data={"k": ("x", 1)}))
    op = Tumbling(10).operator(scheduler, key_by=KeyBy("k"))
    results = scheduler.start(lambda: xs.pipe(op))
    assert notifications(results, keyed) == [(210, ("x", 1), [1, 2], 200, 210, 2)]


# -- keyed count windows with a timeout ----------------------------------------------------------



def counted_records(times: list[float]) -> list[Recorded[Message]]:
    """Records 1..7 of keys a b a c a b a, arriving at ``times``."""
    keys = "abacaba"
    return [rec(at, seq, key, at) for seq, (at, key) in enumerate(zip(times, keys, strict=True), start=1)]


COUNTED = counted_records([201, 202, 203, 204, 210, 211, 212])


class ClockLog:
    """A :class:`~minibatch_rx.windows.Journal` that keeps the clock decisions in a list."""

    def __init__(self) -> None:
        self.decisions: list[tuple[int, int, float, Any]] = []

    def record_clock(self, event: int, after: int, at: float, detail: Any = None) -> None:
        self.decisions.append((event, after, at, detail))


def counted(records: list[Recorded[Message]], journal: ClockLog | None = None,
            resume: Resume | None = None) -> list[tuple[Any, ...]]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*records)
    op = Count(2, timeout=5).operator(scheduler, key_by=KeyBy("k"))
    op.journal = journal
    if resume is not None:
        op.resume = lambda: resume
    return notifications(scheduler.start(lambda: xs.pipe(op)), keyed)


def test_keyed_count_windows_fill_and_time_out_per_key() -> None:
    log = ClockLog()
    assert counted(COUNTED, log) == [
        (203, "a", [1, 3], None, None, 1),  # a's pair; b holds 2
        (207, "b", [2], None, None, 3),  # b's first record waited 5 s (202 + 5); c holds 4
        (209, "c", [4], None, None, 4),  # 204 + 5
        (212, "a", [5, 7], None, None, 5),  # b holds 6
        (216, "b", [6], None, None, 7),  # 211 + 5
    ]
    # Each timeout flush is journaled as the first seq of the newest buffer it flushed
    # (buffers open in seq order), after the last seq seen then; steps count windows out.
    assert log.decisions == [(2, 4, 207.0, 2), (3, 4, 209.0, 4), (5, 7, 216.0, 6)]


def test_keyed_count_journaled_timeouts_replay_the_same_keys() -> None:
    log = ClockLog()
    first = counted(COUNTED, log)
    # A restart reads the same records as one burst at 300: without the journal b's
    # records 2 and 6 would pair up. Replayed before seq 5 (after seq 4), the decisions
    # flush the buffers opened up to seq 2 (b's), then up to 4 (c's); the last one (after
    # seq 7) is applied when the timer finds nothing left to read (b's seq 6, opened at
    # 300, times out at 305).
    burst = counted_records([300] * 7)
    again = counted(burst, resume=Resume(clock=tuple(log.decisions)))
    assert [w[1:] for w in again] == [w[1:] for w in first]
    assert [w[0] for w in again] == [300, 300, 300, 300, 305]
    unjournaled = counted(burst)
    assert [w[1:3] for w in unjournaled] == [("a", [1, 3]), ("b", [2, 6]), ("a", [5, 7]), ("c", [4])]


# -- a custom WindowEmitter per key ------------------------------------------------------------


class Pairs(WindowEmitter):
    """Emits the two oldest pending messages once two wait."""

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        return len(self.buffer) >= 2, ()

    def query(self, *args: Any) -> Iterable[Message]:
        return self.buffer[:2]


def keyed_emitter_run(emitter: WindowEmitter, records: list[Recorded[Message]],
                      checks: list[tuple[float, Callable[[KeyedCore], None]]]) -> list[tuple[Any, ...]]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*records)
    cores: list[WindowCore] = []
    op = capture_cores(Custom(emitter.operator).operator(scheduler, key_by=KeyBy("k")), cores)

    def check_at(at: float, check: Callable[[KeyedCore], None]) -> None:
        def action(*_: Any) -> None:
            core = cores[0]
            assert isinstance(core, KeyedCore)
            check(core)
        scheduler.schedule_absolute(at, action)

    for at, check in checks:
        check_at(at, check)
    return notifications(scheduler.start(lambda: xs.pipe(op)), keyed)


def test_custom_emitter_runs_once_per_key_on_its_own_copy() -> None:
    emitter = Pairs("s")
    buffers: dict[float, dict[Any, list[int]]] = {}
    emitters: list[Any] = []

    def note(at: float) -> Callable[[KeyedCore], None]:
        def check(core: KeyedCore) -> None:
            buffers[at] = {key: [m.seq for m in c.emitter.buffer]  # type: ignore[attr-defined]
                             for key, c in core.cores.items()}
            emitters.extend(c.emitter for c in core.cores.values())  # type: ignore[attr-defined]
        return check

    windows = keyed_emitter_run(emitter, [
        rec(201, 1, "a", 201), rec(202, 2, "b", 202), rec(203, 3, "a", 203), rec(204, 4, "b", 204),
        rec(205, 5, "a", 205), rec(206, 6, "a", 206),
    ], [(202.5, note(202.5)), (203.5, note(203.5))])
    assert windows == [
        (203, "a", [1, 3], None, None, 1),  # a's pair; b's emitter holds 2
        (204, "b", [2, 4], None, None, 4),  # nothing held (a's core went with its last message)
        (206, "a", [5, 6], None, None, 6),
    ]
    # At 202.5 each key has its own emitter, holding only that key's message; at 203.5 a's
    # was dropped with its window.
    assert buffers == {202.5: {"a": [1], "b": [2]}, 203.5: {"b": [2]}}
    assert all(isinstance(e, Pairs) for e in emitters)
    assert len({id(e) for e in emitters[:2]}) == 2 and emitter not in emitters
    assert emitter.buffer == []  # the user's instance is the prototype: it never gets a message


class History(WindowEmitter):
    """Keeps what it emitted in a list of its own, and emits each message alone."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.history: list[int] = []

    def window_ready(self) -> tuple[bool, tuple[Any, ...]]:
        return bool(self.buffer), ()

    def query(self, *args: Any) -> Iterable[Message]:
        self.history.append(self.buffer[0].seq)
        return self.buffer[:1]


def test_custom_emitter_state_in_a_list_is_per_key() -> None:
    emitter = History("s")
    windows = keyed_emitter_run(emitter, [rec(201, 1, "a", 201), rec(202, 2, "b", 202)], [])
    assert [w[1:3] for w in windows] == [("a", [1]), ("b", [2])]
    # Each key's copy noted its own message; the user's instance, the prototype, none.
    # A shallow copy shares one list: the user's instance reads [1, 2].
    assert emitter.history == []


# -- regressions -------------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_a_timer_at_the_deadline_closes_the_window_despite_float_rounding() -> None:
    # The deadline 201 + 0.7 + (10 - (1.0000165 - 0.3)) = 210.9999835 reaches the scheduler
    # as a datetime, to the microsecond; the watermark computed back from it came out a
    # microsecond short of 10, so the timer closed nothing and re-armed at the same instant,
    # again and again (a busy loop), until a TestScheduler moved on a whole second.
    run = run_keyed(TUMBLING, [rec(201, 1, "a", 1.0000165)], event(max_delay=0.3, idle=0.7))
    assert [w[1:] for w in run.windows] == [("a", [1], 0, 10, 1)]
    assert run.windows[0][0] == pytest.approx(210.9999835, abs=1e-6)


def far_off(times: list[Any]) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    """Windows and rejected records of a keyed event-time tumbling(10) run over records
    of one key at ``times``, arriving at 201, 202..."""
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*(arrive(200 + seq, seq, data={"k": "a", "t": time})
                                           for seq, time in enumerate(times, start=1)))
    op = keyed_operator(TUMBLING, scheduler, event(idle=1))
    rejected: list[tuple[int, str]] = []
    op.rejected.subscribe(lambda bad: rejected.append((bad[0].seq, bad[1])))
    return notifications(scheduler.start(lambda: xs.pipe(op)), keyed), rejected


@pytest.mark.timeout(20)
@pytest.mark.parametrize("t", [
    NEW_YEAR_2026 * 1000,  # epoch milliseconds (a JavaScript Date.now()): year 57970
    "9999-12-31T23:59:55Z",  # its window [23:59:50, 00:00:00) would end in year 10000
    "0001-01-01T00:00:00+01:00",  # an hour before year 1
    -1e300,
])
def test_times_whose_windows_a_datetime_cannot_hold_are_dead_lettered(t: Any) -> None:
    # They used to close every window (or none), then fail the stream, or hang it, when
    # their own window was turned into datetimes.
    windows, rejected = far_off([5, t, 6])
    # The stream flows on: 5 and 6 make [0, 10), closed once quiet at 203 + 1 + (10 - 6).
    assert windows == [(208, "a", [1, 3], 0, 10, 3)]
    assert [seq for seq, _ in rejected] == [2]
    assert "is out of range: its windows would fall outside the years 1 to 9999" in rejected[0][1]


@pytest.mark.parametrize(("t", "start"), [
    ("9999-12-31T23:59:40Z", datetime(9999, 12, 31, 23, 59, 40, tzinfo=UTC)),  # [..40, ..50)
    ("0001-01-01T00:00:30Z", datetime(1, 1, 1, 0, 0, 30, tzinfo=UTC)),
])
def test_times_near_the_ends_of_the_datetime_range_still_make_windows(t: str, start: datetime) -> None:
    windows, rejected = far_off([t])
    assert rejected == []
    assert len(windows) == 1 and windows[0][1:3] == ("a", [1])
    assert datetime.fromtimestamp(0, UTC) + timedelta(seconds=windows[0][3]) == start


# -- a custom WindowCore per key: its clock decisions are journaled per key ---------------------


class Aged(WindowCore):
    """Each timer emits the messages that waited 5 s; the decision is how many."""

    clocked = True

    def __init__(self) -> None:
        self.buffer: list[tuple[float, Message]] = []
        self.flushed = 0

    def on_message(self, message: Message, now: float) -> list[Window]:
        self.buffer.append((now, message))
        return []

    def deadline(self) -> float | None:
        return self.buffer[0][0] + 5 if self.buffer else None

    def on_timer(self, now: float, forced: bool = False) -> list[Window]:
        return self.flush(sum(1 for at, _ in self.buffer if forced or at + 5 <= now + 1e-6))

    def replay_timer(self, at: float, detail: Any) -> list[Window]:
        return self.flush(int(detail))

    def flush(self, n: int) -> list[Window]:
        messages, self.buffer, self.flushed = self.buffer[:n], self.buffer[n:], n
        return [Window(tuple(m for _, m in messages), "s")] if messages else []

    def decision(self) -> Any:
        return self.flushed

    def held_min_seq(self) -> int | None:
        return self.buffer[0][1].seq if self.buffer else None


def aged(records: list[Recorded[Message]], journal: ClockLog | None = None,
         resume: Resume | None = None) -> list[tuple[Any, ...]]:
    scheduler = TestScheduler()
    xs = scheduler.create_hot_observable(*records)
    op = Custom(lambda s: WindowOperator(Aged, s)).operator(scheduler, key_by=KeyBy("k"))
    op.journal = journal
    if resume is not None:
        op.resume = lambda: resume
    return [w[1:3] for w in notifications(scheduler.start(lambda: xs.pipe(op)), keyed)]


def test_a_custom_core_per_key_gets_its_own_journaled_decision_back() -> None:
    log = ClockLog()
    records = [rec(201, 1, "a", 201), rec(202, 2, "b", 202), rec(204, 3, "a", 204), rec(207, 4, "b", 207)]
    # a's timer at 206 emits seq 1 only (seq 3 waited 2 s); b's at 207 seq 2, before seq 4
    # arrives; a's at 209 seq 3; b's at 212 seq 4.
    assert aged(records, log) == [("a", [1]), ("b", [2]), ("a", [3]), ("b", [4])]
    # Replayed in one burst, a holds seqs 1 and 3 when the decision of 206 comes back: it
    # must flush the one message it flushed then, not whatever a's core holds.
    burst = [rec(300, seq, key, 300) for seq, key in enumerate("abab", start=1)]
    assert aged(burst, resume=Resume(clock=tuple(log.decisions))) == [
        ("a", [1]), ("b", [2]), ("a", [3]), ("b", [4])]


class Locked(WindowEmitter):
    """Holds a lock, which cannot be deep-copied."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lock = threading.Lock()


def test_an_emitter_that_cannot_be_copied_per_key_fails_clearly_before_any_record() -> None:
    with pytest.raises(InvalidArgumentError, match="Locked cannot run per key"):
        Custom(Locked("s").operator).operator(TestScheduler(), key_by=KeyBy("k"))


def test_a_key_that_never_goes_quiet_does_not_keep_emitted_windows_in_memory() -> None:
    # 'hot' gets a record every 0.1 s and keeps one session (gap 0.5 s) open all along,
    # while 9 in 10 records open a session of their own key that closes 0.5 s later.
    # The lowest-held-seq heap kept an entry (and the records) of every window emitted
    # since the hot session opened: 18,000 here. Now it stays near the open windows.
    core = TimeWindowCore(EventTime("t").start(), Gaps(gap=500_000), key_by=KeyBy("k"))
    emitted = []
    for i in range(1, 20_001):
        t = i * 0.01
        key = "hot" if i % 10 == 0 else f"cold{i}"
        emitted += core.on_message(Message("s", i, datetime.fromtimestamp(t, UTC), {"k": key, "t": t}), t)
        if i % 100 == 0:
            core.held_min_seq()  # as the driver asks at every emitting step
    assert len(emitted) > 17_900  # the cold sessions came out
    assert len(core.by_key) < 60  # keys open now: 'hot' and the last 0.5 s of cold ones
    assert len(core.firsts) < 2 * len(core.heap) + 65
    assert core.held_min_seq() == 10  # the hot session's first record
