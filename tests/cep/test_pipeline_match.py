"""``.match(pattern)`` in pipelines, in virtual time: per key, on ingest or event time.

Each scenario appends payloads at virtual times (``VirtualTime.append_at``) and
runs a pipeline to a virtual time, then checks what it emitted and when, and
what the side streams hold: ``<name>.timeouts`` (partial matches that ran out of
``within``), ``<name>.late`` (records behind the event-time watermark) and
``<name>.dead`` (records without a usable timestamp or key). Several tests
compare the pipeline with ``Pattern.evaluate`` on the same events, key by key.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

from minibatch_rx import Pipeline, Stream
from minibatch_rx.cep import AfterMatch, Match, Pattern
from minibatch_rx.errors import InvalidArgumentError
from minibatch_rx.testing import VirtualTime

Event = dict[str, Any]
Row = tuple[float, Event]
"""A payload and the virtual time it is appended at."""


class Crash(BaseException):
    """Stands in for a kill: no stage catches it, so the position is not committed."""


def feed(vt: VirtualTime, s: Stream, rows: Iterable[Row]) -> None:
    for at, payload in rows:
        vt.append_at(at, s, payload)


def contents(vt: VirtualTime, name: str) -> list[Any]:
    """The payloads of stream ``name`` ([] if it was never created; this does not create it)."""
    if name not in vt.store.streams():
        return []
    return [m.data for m in vt.stream(name).read()]


def ids(steps: Mapping[str, list[Event]], field: str = "ts") -> dict[str, list[Any]]:
    """A match as step -> the ``field`` of each of its events."""
    return {step: [e[field] for e in events] for step, events in steps.items()}


def login(user: str, ok: bool, ts: float) -> Event:
    return {"user": user, "ok": ok, "ts": ts}


def logins(*rows: tuple[str, bool, float]) -> list[Row]:
    """Logins appended at their own timestamp."""
    return [(ts, login(user, ok, ts)) for user, ok, ts in rows]


# Three failed logins, then a success, within a minute (Flink's cep.md example).
FRAUD = (
    Pattern.begin("fail")
    .where(lambda e: not e["ok"])
    .times(3)
    .followed_by("success")
    .where(lambda e: e["ok"])
    .within(60)
)

# An order with no payment within 15 minutes.
UNPAID = (
    Pattern.begin("order")
    .where(lambda e: e["type"] == "order")
    .not_followed_by("payment")
    .where(lambda e: e["type"] == "payment")
    .within(900)
)

A_THEN_B = Pattern.begin("a").where(lambda e: e["k"] == "a").followed_by("b").where(lambda e: e["k"] == "b")


# -- 1. fraud, keyed, event time ---------------------------------------------------------


def test_fraud_per_user_in_event_time_is_emitted_when_the_watermark_passes_the_success() -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    rows = logins(
        ("alice", False, 1), ("bob", False, 2), ("alice", False, 3), ("bob", False, 4),
        ("bob", True, 7), ("alice", True, 8), ("bob", False, 11),
        # carol: 20, 30, 50 then a success 65 s after the first: only 30, 50, 70 fit in the minute
        ("carol", False, 20), ("carol", False, 30), ("carol", False, 50), ("carol", False, 70),
        ("carol", True, 85), ("bob", True, 87),
    )  # fmt: skip
    rows.insert(4, (6, login("alice", False, 5)))  # arrives a second after its time
    feed(vt, s, rows)
    pipeline = s.key_by("user").event_time("ts", max_delay="2s", idle=None).match(FRAUD)
    out = vt.run(pipeline, until=200)
    assert [(e.time, e.value.key, ids(e.value)) for e in out] == [
        # the success at 8 waits until a record at 10 or later moves the watermark past it
        (11.0, "alice", {"fail": [1, 3, 5], "success": [8]}),
        (87.0, "carol", {"fail": [30, 50, 70], "success": [85]}),
    ]
    assert all(isinstance(e.value, Match) for e in out)
    assert [(e.value.start, e.value.end, e.value.timed_out_at) for e in out] == [
        (1.0, 8.0, None),
        (30.0, 85.0, None),
    ]
    assert out[0].value == {
        "fail": [login("alice", False, t) for t in (1, 3, 5)],
        "success": [login("alice", True, 8)],
    }


def test_on_a_quiet_stream_the_match_waits_max_delay_plus_idle() -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, logins(("alice", False, 1), ("alice", False, 3), ("alice", False, 5), ("alice", True, 8)))
    out = vt.run(s.key_by("user").event_time("ts", max_delay=2, idle=1).match(FRAUD), until=100)
    # Nothing arrives after 8: the watermark (8 - 2) moves with the clock after 1 s of silence.
    assert [(e.time, e.value.key, e.value.start, e.value.end) for e in out] == [(11.0, "alice", 1.0, 8.0)]


def test_fraud_in_ingest_time_is_emitted_as_the_success_arrives() -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    rows = [(at, {"user": user, "ok": ok}) for at, user, ok in
            [(1, "a", False), (2, "b", False), (3, "a", False), (4, "a", False), (5, "b", False),
             (6, "a", True), (7, "b", False), (70, "b", True)]]  # fmt: skip
    feed(vt, s, rows)
    out = vt.run(s.key_by("user").match(FRAUD, timeouts=lambda _m: None), until=200)
    # b's three failures (2, 5, 7) are more than a minute before its success at 70
    assert [(e.time, e.value.key, e.value.start, e.value.end) for e in out] == [(6.0, "a", 1.0, 6.0)]
    assert out[0].value == {"fail": [{"user": "a", "ok": False}] * 3, "success": [{"user": "a", "ok": True}]}


# -- 2. absence ---------------------------------------------------------------------------------


def orders() -> list[Row]:
    return [
        (10, {"order": 1, "type": "order", "ts": 10}),  # never paid
        (20, {"order": 2, "type": "order", "ts": 20}),
        (30, {"order": 3, "type": "order", "ts": 30}),
        (40, {"order": 4, "type": "order", "ts": 40}),
        (500, {"order": 2, "type": "payment", "ts": 500}),  # paid in time
        (930, {"order": 3, "type": "payment", "ts": 930}),  # exactly 900 s later: too late
        (939, {"order": 4, "type": "payment", "ts": 939}),  # 899 s later: in time
        (1000, {"order": 5, "type": "order", "ts": 1000}),  # never paid, and nothing comes after it
    ]


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        # ingest time: the watermark follows the scheduler clock
        ("ingest", [(910.0, 1), (930.0, 3), (1900.0, 5)]),
        # event time: the watermark moves with the clock after idle=5 s without records
        ("event", [(915.0, 1), (930.0, 3), (1905.0, 5)]),
    ],
)
def test_an_unpaid_order_is_emitted_once_its_fifteen_minutes_have_passed(
    clock: str, expected: list[tuple[float, int]]
) -> None:
    vt = VirtualTime()
    s = vt.stream("orders")
    feed(vt, s, orders())
    keyed = s.key_by("order")
    pipeline = keyed.event_time("ts", idle=5).match(UNPAID) if clock == "event" else keyed.match(UNPAID)
    out = vt.run(pipeline, until=3000)
    assert [(e.time, e.value.key) for e in out] == expected
    by_key = {e.value.key: e.value for e in out}
    assert by_key[1] == {"order": [{"order": 1, "type": "order", "ts": 10}]}
    assert (by_key[1].start, by_key[1].end) == (10.0, 10.0)
    assert (by_key[5].start, by_key[5].end) == (1000.0, 1000.0)
    assert "orders.timeouts" not in vt.store.streams()  # a held absence is a match, not a timeout


def test_an_absence_is_not_emitted_before_its_time_on_an_idle_stream() -> None:
    vt = VirtualTime()
    s = vt.stream("orders")
    vt.append_at(100, s, {"order": "x", "type": "order"})
    assert vt.run(s.key_by("order").match(UNPAID).sink("alerts"), until=999.5, consumer="c") == []
    out = vt.run(s.key_by("order").match(UNPAID).sink("alerts"), until=2000, consumer="c")
    assert [(e.time, e.value.key, e.value.start) for e in out] == [(1000.0, "x", 100.0)]
    assert contents(vt, "alerts") == [{"order": [{"order": "x", "type": "order"}]}]


# -- 3. within timeouts -----------------------------------------------------------------------------

# Two failures of user u and nothing else: both partial matches run out.
TWO_FAILURES = logins(("u", False, 1), ("u", False, 11))
TIMED_OUT = [
    {"key": "u", "start": 1.0, "end": 11.0, "steps": {"fail": [login("u", False, 1), login("u", False, 11)]},
     "timed_out_at": 61.0},
    {"key": "u", "start": 11.0, "end": 11.0, "steps": {"fail": [login("u", False, 11)]},
     "timed_out_at": 71.0},
]  # fmt: skip


@pytest.mark.parametrize("target", ["name", "stream"])
def test_timeouts_into_a_stream_are_stored_as_payloads(target: str) -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, TWO_FAILURES)
    timeouts: str | Stream = "failed.partials" if target == "name" else vt.stream("failed.partials")
    out = vt.run(s.key_by("user").match(FRAUD, timeouts=timeouts), until=200)
    assert out == []
    assert contents(vt, "failed.partials") == TIMED_OUT
    assert "logins.timeouts" not in vt.store.streams()


@pytest.mark.parametrize(("clock", "delay"), [("ingest", 0.0), ("event", 1.0)])
def test_timeouts_to_a_callable_are_matches_delivered_when_the_time_runs_out(
    clock: str, delay: float
) -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, TWO_FAILURES)
    got: list[tuple[float, Match[Any]]] = []
    keyed = s.key_by("user")
    if clock == "event":
        keyed = keyed.event_time("ts", idle=1)  # the watermark follows the clock after 1 s of silence
    vt.run(keyed.match(FRAUD, timeouts=lambda m: got.append((vt.now, m))), until=200)
    assert [(at, m.as_payload()) for at, m in got] == [
        (61.0 + delay, TIMED_OUT[0]),
        (71.0 + delay, TIMED_OUT[1]),
    ]
    assert all(isinstance(m, Match) and m.key == "u" for _, m in got)
    assert "logins.timeouts" not in vt.store.streams()


def test_timeouts_go_to_the_default_stream_created_at_the_first_one() -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, TWO_FAILURES)
    vt.run(s.key_by("user").match(FRAUD), until=61.5)
    assert contents(vt, "logins.timeouts") == TIMED_OUT[:1]
    vt.run(s.key_by("user").match(FRAUD), until=200)
    assert contents(vt, "logins.timeouts") == TIMED_OUT


def test_no_timeouts_stream_without_a_timeout() -> None:
    vt = VirtualTime()
    s = vt.stream("ev")
    feed(vt, s, [(1, {"k": "a"}), (2, {"k": "b"}), (3, {"k": "a"}), (4, {"k": "b"})])
    bounded = A_THEN_B.within(60)
    out = vt.run(s.match(bounded).sink("alerts"), until=500)
    assert [ids(e.value, "k") for e in out] == [{"a": ["a"], "b": ["b"]}] * 2
    out = vt.run(s.match(A_THEN_B).sink("alerts"), until=600, consumer="no-within")
    assert len(out) == 2
    assert "ev.timeouts" not in vt.store.streams()


def test_a_failing_timeouts_callable_fails_the_run_and_the_restart_delivers_the_timeout() -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, logins(("u", False, 1)))

    def refuse(_match: Match[Any]) -> None:
        raise RuntimeError("timeouts target down")

    with pytest.raises(RuntimeError, match="timeouts target down"):
        vt.run(s.key_by("user").match(FRAUD, timeouts=refuse), until=200, consumer="c")
    got: list[Match[Any]] = []
    vt.run(s.key_by("user").match(FRAUD, timeouts=got.append), until=300, consumer="c")
    assert [(m.key, ids(m), m.timed_out_at) for m in got] == [("u", {"fail": [1]}, 61.0)]


def test_every_partial_match_that_runs_out_is_delivered_as_evaluate_finds_it() -> None:
    rng = random.Random(11)
    events: list[Event] = []
    t = 0.0
    for i in range(120):
        t += rng.choice([1, 2, 5, 20])
        events.append({"i": i, "user": rng.choice("xyz"), "ok": rng.random() < 0.25, "ts": t})
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, [(e["ts"], e) for e in events])
    got: list[Match[Any]] = []
    out = vt.run(s.key_by("user").event_time("ts", idle=1).match(FRAUD, timeouts=got.append), until=t + 100)
    expected_matches: Counter[tuple[Any, ...]] = Counter()
    expected_timeouts: Counter[tuple[Any, ...]] = Counter()
    for user in "xyz":
        result = FRAUD.evaluate([e for e in events if e["user"] == user], time="ts")
        expected_matches.update(described(user, m) for m in result.matches)
        expected_timeouts.update(described(user, m) for m in result.timeouts)
    assert sum(expected_timeouts.values()) > 50 and sum(expected_matches.values()) > 5  # a real scenario
    assert Counter(described(e.value.key, e.value) for e in out) == expected_matches
    assert Counter(described(m.key, m) for m in got) == expected_timeouts


def described(key: Any, m: Match[Any]) -> tuple[Any, ...]:
    """A match as (key, steps as event ids, start, end, timed_out_at), to compare as a multiset."""
    steps = tuple((step, tuple(e["i"] for e in events)) for step, events in m.items())
    return key, steps, m.start, m.end, m.timed_out_at


# -- 4. event-time order, late records -------------------------------------------------------------

ORDER_SENSITIVE: dict[str, Pattern[Any]] = {
    "strict next": Pattern.begin("a").where(lambda e: e["k"] == "a").next("b").where(lambda e: e["k"] == "b"),
    "loop, any, within": (
        Pattern.begin("a").where(lambda e: e["k"] == "a").one_or_more().consecutive()
        .followed_by_any("b").where(lambda e: e["k"] == "b")
        .followed_by("c").where(lambda e: e["k"] == "c").within(15)
    ),
    "absence": (
        Pattern.begin("a").where(lambda e: e["k"] == "a")
        .not_followed_by("b").where(lambda e: e["k"] == "b").within(6)
    ),
    "skip past last": (
        Pattern.begin("a", after_match=AfterMatch.skip_past_last_event()).where(lambda e: e["k"] == "a")
        .followed_by("c").where(lambda e: e["k"] == "c").within(10)
    ),
}  # fmt: skip
MAX_DELAY = 3.0


def shuffled_events(seed: int) -> tuple[list[Event], list[Row]]:
    """Events with distinct times, and the same events each appended up to
    ``MAX_DELAY`` (exclusive) after its time: out of order, never late."""
    rng = random.Random(seed)
    events: list[Event] = []
    t = 0.0
    for i in range(70):
        t += rng.choice([0.5, 1, 1, 2, 4])
        events.append({"i": i, "k": rng.choice("abcx"), "u": rng.choice("pq"), "ts": t})
    rows = sorted(((e["ts"] + rng.uniform(0, MAX_DELAY - 0.01), e) for e in events), key=lambda r: r[0])
    return events, rows


def run_match(
    pattern: Pattern[Any], rows: list[Row], until: float
) -> tuple[list[Any], list[Any], VirtualTime]:
    vt = VirtualTime()
    s = vt.stream("ev")
    feed(vt, s, rows)
    got: list[Match[Any]] = []
    # idle outlasts every gap between arrivals: only the end of the input is flushed by the clock
    keyed = s.key_by("u").event_time("ts", max_delay=MAX_DELAY, idle=30)
    out = vt.run(keyed.match(pattern, timeouts=got.append), until=until)
    return [described(e.value.key, e.value) for e in out], [described(m.key, m) for m in got], vt


@pytest.mark.parametrize("name", sorted(ORDER_SENSITIVE))
def test_out_of_order_arrival_within_max_delay_matches_as_sorted_input(name: str) -> None:
    pattern = ORDER_SENSITIVE[name]
    events, rows = shuffled_events(seed=len(name))
    arrival = [e["i"] for _, e in rows]
    assert arrival != sorted(arrival), "the scenario must really arrive out of order"
    until = events[-1]["ts"] + 100
    matches, timeouts, vt = run_match(pattern, rows, until)
    assert "ev.late" not in vt.store.streams()
    in_order, in_order_timeouts, _ = run_match(pattern, [(e["ts"], e) for e in events], until)
    assert Counter(matches) == Counter(in_order)
    assert Counter(timeouts) == Counter(in_order_timeouts)
    expected: Counter[tuple[Any, ...]] = Counter()
    expected_timeouts: Counter[tuple[Any, ...]] = Counter()
    for key in "pq":
        result = pattern.evaluate([e for e in events if e["u"] == key], time="ts")
        expected.update(described(key, m) for m in result.matches)
        expected_timeouts.update(described(key, m) for m in result.timeouts)
    assert expected, "the scenario must match"
    assert Counter(matches) == expected
    assert Counter(timeouts) == expected_timeouts


LATE_ROWS: list[Row] = [
    (1, {"k": "a", "u": 1, "ts": 1}),
    (10, {"k": "x", "u": 2, "ts": 10}),  # watermark 10 - 2 = 8
    (11, {"k": "b", "u": 1, "ts": 5}),  # behind it: late
    (12, {"k": "b", "u": 1, "ts": 8}),  # at it: still in time
]


def test_a_record_behind_the_watermark_goes_to_the_late_stream_and_is_not_matched() -> None:
    vt = VirtualTime()
    s = vt.stream("ev")
    feed(vt, s, LATE_ROWS)
    out = vt.run(s.key_by("u").event_time("ts", max_delay=2, idle=None).match(A_THEN_B), until=100)
    assert [(e.time, e.value.key, ids(e.value)) for e in out] == [(12.0, 1, {"a": [1], "b": [8]})]
    assert contents(vt, "ev.late") == [{"k": "b", "u": 1, "ts": 5}]


def test_late_records_go_to_the_late_stream_given_as_a_stream() -> None:
    vt = VirtualTime()
    s = vt.stream("ev")
    feed(vt, s, LATE_ROWS)
    too_late = vt.stream("ev.too-late")  # a Stream object, empty when the run starts
    pipeline = s.key_by("u").event_time("ts", max_delay=2, idle=None).match(A_THEN_B).late(too_late)
    assert len(vt.run(pipeline, until=100)) == 1
    assert contents(vt, "ev.too-late") == [{"k": "b", "u": 1, "ts": 5}]
    assert "ev.late" not in vt.store.streams()


# -- 5. bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda s: s.match("not a pattern"), "needs a minibatch_rx.cep.Pattern, got str"),
        (lambda s: s.match(FRAUD, timeouts=42), "timeouts must be a Stream, a stream name or a callable"),
        (
            lambda s: s.match(
                Pattern.begin("order").where(lambda e: True).not_followed_by("paid").where(lambda e: True)
            ),
            "not_followed_by",
        ),
    ],
    ids=["not a pattern", "timeouts=42", "trailing absence without within"],
)
def test_a_bad_match_is_refused_when_the_pipeline_is_built(
    build: Callable[[Stream], Pipeline[Any]], message: str
) -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, logins(("u", False, 1)))
    vt.advance_to(2)
    with pytest.raises(InvalidArgumentError, match=message):
        build(s)
    # nothing ran: no consumer registered, no journal, no side stream
    assert vt.store.streams() == ["logins"]
    assert s.count() == 1


BAD_RECORDS: dict[str, list[Event]] = {
    "event": [
        {"ok": False, "ts": 2},
        {"user": "u", "ok": False},
        {"user": "u", "ok": False, "ts": "yesterday"},
    ],
    # ingest time reads no timestamp field: only the key can be wrong
    "ingest": [{"ok": False, "ts": 2}, {"user": {"id": 1}, "ok": False, "ts": 3}],
}


@pytest.mark.parametrize("clock", ["ingest", "event"])
def test_records_without_a_timestamp_or_key_go_to_the_dead_letter_stream(clock: str) -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    bad = BAD_RECORDS[clock]
    rows = [*logins(("u", False, 1)), *((2 + i * 0.5, b) for i, b in enumerate(bad)),
            *logins(("u", False, 5), ("u", False, 6), ("u", True, 7), ("v", False, 8))]  # fmt: skip
    feed(vt, s, rows)
    keyed = s.key_by("user")
    pipeline = keyed.event_time("ts", idle=1).match(FRAUD) if clock == "event" else keyed.match(FRAUD)
    out = vt.run(pipeline, until=20)
    assert [(e.value.key, ids(e.value)) for e in out] == [("u", {"fail": [1, 5, 6], "success": [7]})]
    dead = contents(vt, "logins.dead")
    assert [d["data"] for d in dead] == [[b] for b in bad]
    assert "'user'" in dead[0]["error"]
    if clock == "event":
        assert "'ts'" in dead[1]["error"] and "yesterday" in dead[2]["error"]
    else:
        assert "is a dict" in dead[1]["error"]


# -- 6. restart ------------------------------------------------------------------------------------

BEFORE_STOP = logins(("alice", False, 1), ("alice", False, 2), ("alice", False, 3),
                     ("bob", False, 5), ("bob", False, 6), ("bob", False, 7), ("bob", True, 8))  # fmt: skip
AFTER_STOP = logins(("bob", True, 25), ("alice", True, 30), ("carol", False, 31))
STOP = 20.0


def fraud_pipeline(s: Stream, clock: str, sink: str = "alerts") -> Pipeline[Any]:
    keyed = s.key_by("user")
    if clock == "event":
        keyed = keyed.event_time("ts", idle=1)
    return keyed.match(FRAUD, timeouts="partials").map(lambda m: m.as_payload()).sink(sink)


def uninterrupted(clock: str) -> tuple[list[Any], list[Any]]:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, BEFORE_STOP + AFTER_STOP)
    vt.run(fraud_pipeline(s, clock), until=300, consumer="c")
    return contents(vt, "alerts"), contents(vt, "partials")


@pytest.mark.parametrize("clock", ["ingest", "event"])
def test_a_partial_match_started_before_a_restart_completes_after_it(clock: str) -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, BEFORE_STOP)
    first = vt.run(fraud_pipeline(s, clock), until=STOP, consumer="c")
    assert [(e.value["key"], e.value["start"]) for e in first] == [("bob", 5.0)]
    feed(vt, s, AFTER_STOP)  # appended while the pipeline is stopped, and after the restart
    vt.advance_to(26)
    second = vt.run(fraud_pipeline(s, clock), until=300, consumer="c")
    assert [(e.time, e.value["key"], ids(e.value["steps"])) for e in second] == [
        (30.0, "alice", {"fail": [1, 2, 3], "success": [30]})
    ]
    assert vt.run(fraud_pipeline(s, clock), until=400, consumer="c") == []
    alerts = contents(vt, "alerts")
    assert [(a["key"], a["start"], a["end"]) for a in alerts] == [("bob", 5.0, 8.0), ("alice", 1.0, 30.0)]
    assert (alerts, contents(vt, "partials")) == uninterrupted(clock)


def test_a_partial_match_that_ran_out_while_stopped_times_out_at_the_restart() -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, logins(("alice", False, 1), ("alice", False, 2), ("alice", False, 3)))
    got: list[tuple[float, Match[Any]]] = []

    def pipeline() -> Pipeline[Any]:
        return s.key_by("user").match(FRAUD, timeouts=lambda m: got.append((vt.now, m))).sink("alerts")

    assert vt.run(pipeline(), until=STOP, consumer="c") == []
    feed(vt, s, logins(("alice", True, 70)))  # stored 69 s after the first failure
    vt.advance_to(100)
    assert vt.run(pipeline(), until=300, consumer="c") == []
    assert [(at, ids(m), m.timed_out_at) for at, m in got] == [
        (100.0, {"fail": [1, 2, 3]}, 61.0),
        (100.0, {"fail": [2, 3]}, 62.0),
        (100.0, {"fail": [3]}, 63.0),
    ]
    assert contents(vt, "alerts") == []


def crashing(after: int, seen: list[Any]) -> Callable[[Any], Any]:
    """A stage (after the sink) that crashes on the ``after``-th value, once."""

    def stage(value: Any) -> Any:
        seen.append(value)
        if len(seen) == after:
            raise Crash
        return value

    return stage


@pytest.mark.parametrize("clock", ["ingest", "event"])
def test_a_crash_after_the_sink_stores_no_match_or_timeout_twice(clock: str) -> None:
    expected_alerts, expected_partials = uninterrupted(clock)
    assert len(expected_alerts) == 2 and len(expected_partials) >= 3
    for after in range(1, len(expected_alerts) + 1):
        vt = VirtualTime()
        s = vt.stream("logins")
        feed(vt, s, BEFORE_STOP + AFTER_STOP)
        seen: list[Any] = []
        pipeline = fraud_pipeline(s, clock).map(crashing(after, seen))
        with pytest.raises(Crash):
            vt.run(pipeline, until=300, consumer="c")
        vt.scheduler.stop()  # the crash left the scheduler mid-advance
        vt.run(pipeline, until=300, consumer="c")
        assert seen[after - 1] == seen[after], "the match not acknowledged is handed on again"
        assert contents(vt, "alerts") == expected_alerts, f"crash after match {after}"
        assert contents(vt, "partials") == expected_partials, f"crash after match {after}"


def test_a_clean_stop_and_restart_does_not_hand_a_timeout_to_a_callable_again() -> None:
    # Matches are never handed on again after a plain stop and start (their
    # position is committed with the checkpoint); a timeout should not be either.
    vt = VirtualTime()
    s = vt.stream("logins")
    feed(vt, s, logins(("u", False, 5)))
    got: list[tuple[float, dict[str, Any]]] = []

    def pipeline() -> Pipeline[Any]:
        return s.key_by("user").match(FRAUD, timeouts=lambda m: got.append((vt.now, m.as_payload())))

    vt.run(pipeline(), until=100, consumer="c")
    assert got == [
        (
            65.0,
            {
                "key": "u",
                "start": 5.0,
                "end": 5.0,
                "steps": {"fail": [login("u", False, 5)]},
                "timed_out_at": 65.0,
            },
        )
    ]
    vt.run(pipeline(), until=200, consumer="c")
    vt.run(pipeline(), until=300, consumer="c")
    assert [at for at, _ in got] == [65.0], "the timeout was handed to the callable again at each restart"


def test_a_clean_stop_and_restart_does_not_hand_a_late_record_to_a_callable_again() -> None:
    vt = VirtualTime()
    s = vt.stream("ev")
    feed(vt, s, LATE_ROWS)
    late: list[tuple[float, Any]] = []

    def pipeline() -> Pipeline[Any]:
        keyed = s.key_by("u").event_time("ts", max_delay=2, idle=None)
        return keyed.match(A_THEN_B).late(lambda m: late.append((vt.now, m.data)))

    vt.run(pipeline(), until=11.5, consumer="c")  # stops before the match at 12
    assert late == [(11.0, {"k": "b", "u": 1, "ts": 5})]
    out = vt.run(pipeline(), until=100, consumer="c")
    assert [ids(e.value) for e in out] == [{"a": [1], "b": [8]}]
    vt.run(pipeline(), until=200, consumer="c")
    assert late == [(11.0, {"k": "b", "u": 1, "ts": 5})], "the late record was handed on again"


def test_several_records_per_message_are_matched_in_order_and_survive_a_crash_between_them() -> None:
    # flat_map makes several records of one message; the last message completes
    # two matches (u then v): a crash after the first must neither lose nor repeat the other.
    messages = [
        (1, {"logins": [login("u", False, 1), login("u", False, 1), login("v", False, 1)]}),
        (2, {"logins": [login("u", False, 2), login("v", False, 2), login("v", False, 2)]}),
        (3, {"logins": [login("u", True, 3), login("v", True, 3)]}),
    ]

    def run(crash_after: int | None) -> tuple[list[Any], list[Any]]:
        vt = VirtualTime()
        s = vt.stream("batches")
        feed(vt, s, messages)
        seen: list[Any] = []
        pipeline = (
            s.flat_map(lambda m: m.data["logins"])
            .key_by("user")
            .match(FRAUD, timeouts="partials")
            .map(lambda m: m.as_payload())
            .sink("alerts")
        )
        if crash_after is not None:
            pipeline = pipeline.map(crashing(crash_after, seen))
            with pytest.raises(Crash):
                vt.run(pipeline, until=100, consumer="c")
            vt.scheduler.stop()
        vt.run(pipeline, until=100, consumer="c")
        return contents(vt, "alerts"), contents(vt, "partials")

    alerts, partials = run(None)
    assert [(a["key"], a["start"], a["end"], len(a["steps"]["fail"])) for a in alerts] == [
        ("u", 1.0, 3.0, 3),
        ("v", 1.0, 3.0, 3),
    ]
    assert run(1) == (alerts, partials)
    assert run(2) == (alerts, partials)


# -- 7. Match objects sunk into a stream -------------------------------------------------------------


def test_matches_sunk_into_a_stream_are_stored_as_their_steps() -> None:
    vt = VirtualTime()
    s = vt.stream("ev")
    feed(vt, s, [(1, {"k": "a", "n": 1}), (2, {"k": "x", "n": 2}), (3, {"k": "b", "n": 3}),
                 (4, {"k": "a", "n": 4}), (5, {"k": "b", "n": 5})])  # fmt: skip
    out = vt.run(s.match(A_THEN_B).sink("alerts").map(lambda m: m.as_payload()).sink("payloads"), until=10)
    assert contents(vt, "alerts") == [
        {"a": [{"k": "a", "n": 1}], "b": [{"k": "b", "n": 3}]},
        {"a": [{"k": "a", "n": 4}], "b": [{"k": "b", "n": 5}]},
    ]
    assert contents(vt, "payloads") == [e.value for e in out]
    assert [(p["key"], p["start"], p["end"]) for p in contents(vt, "payloads")] == [
        (None, 1.0, 3.0),
        (None, 4.0, 5.0),
    ]


# -- 8. unkeyed ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clock", ["ingest", "event"])
def test_without_key_by_all_records_are_matched_together(clock: str) -> None:
    vt = VirtualTime()
    s = vt.stream("logins")
    rows = logins(("a", False, 1), ("b", False, 2), ("c", False, 3), ("d", True, 4),
                  ("e", False, 10))  # fmt: skip
    feed(vt, s, rows)
    got: list[Match[Any]] = []
    source: Pipeline[Any] | Stream = s.event_time("ts", idle=1) if clock == "event" else s
    out = vt.run(source.match(FRAUD, timeouts=got.append), until=200)
    assert [
        (e.value.key, [e2["user"] for e2 in e.value.events], e.value.start, e.value.end) for e in out
    ] == [(None, ["a", "b", "c", "d"], 1.0, 4.0)]
    # the partial matches left over (b c e, c e, e) run out with no key
    assert [(m.key, [e["user"] for e in m.events], m.timed_out_at) for m in got] == [
        (None, ["b", "c", "e"], 62.0),
        (None, ["c", "e"], 63.0),
        (None, ["e"], 70.0),
    ]
