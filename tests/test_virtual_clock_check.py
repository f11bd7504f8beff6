"""A DSL pipeline in virtual time needs a store on the scheduler's clock."""

from __future__ import annotations

import pytest
from reactivex.testing import TestScheduler

from minibatch_rx import InvalidArgumentError, list_streams, stream
from minibatch_rx.testing import VirtualTime


def test_a_bare_test_scheduler_with_a_wall_clock_store_is_refused_before_anything_runs() -> None:
    s = stream("bare.x", url="memory://bare-scheduler")
    s.extend([{"n": 1}, {"n": 2}])

    with pytest.raises(InvalidArgumentError, match=r"virtual time.*minibatch_rx\.testing\.VirtualTime"):
        s.fixed_time_window(10).to_observable(scheduler=TestScheduler())

    assert list_streams("memory://bare-scheduler") == ["bare.x"]  # no .dead, no .late


def test_the_same_pipeline_on_virtual_time_emits() -> None:
    vt = VirtualTime()
    s = vt.stream("x")
    vt.append_at(1, s, {"n": 1})
    vt.append_at(2, s, {"n": 2})

    out = vt.run(s.fixed_time_window(10).map(len), until=30)

    assert [(e.time, e.value) for e in out] == [(10, 2)]
