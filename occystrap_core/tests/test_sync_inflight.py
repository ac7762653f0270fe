"""How many image checks a sync has in flight: the limit follows the HEADs' times."""

from __future__ import annotations

import threading

import pytest

from occystrap_core.sync.inflight import FLOOR, InFlight
from occystrap_core.testing.http import FakeClock
from occystrap_core.workers import CancelToken, parallel


def _check(gate: InFlight, clock: FakeClock, seconds: float, heads: int = 1) -> None:
    with gate.timing() as slot:
        for _ in range(heads):
            slot.heads += 1
            clock.advance(seconds)


def test_quick_answers_raise_the_limit_to_the_cap() -> None:
    clock = FakeClock()
    gate = InFlight(cap=12, clock=clock, floor=4)
    assert gate.limit == 4  # it starts low
    for expected in range(5, 13):
        _check(gate, clock, 0.05)
        assert gate.limit == expected
    _check(gate, clock, 0.05)
    assert gate.limit == 12  # never past the cap


def test_queued_answers_lower_it_to_the_floor() -> None:
    clock = FakeClock()
    gate = InFlight(cap=32, clock=clock)
    for _ in range(20):
        _check(gate, clock, 0.001)
    assert gate.limit == 28
    for _ in range(30):
        _check(gate, clock, 0.01)  # ten times the quickest: the checks queue
    assert gate.limit == FLOOR
    for _ in range(30):
        _check(gate, clock, 0.003)  # three times: no verdict, no change
    assert gate.limit == FLOOR


def test_time_is_counted_per_head() -> None:
    """A warm image asks two HEADs and a cold one one: the same link, the same verdict."""
    clock = FakeClock()
    gate = InFlight(cap=32, clock=clock, floor=2)
    _check(gate, clock, 0.05, heads=1)
    _check(gate, clock, 0.05, heads=2)
    assert gate.limit == 5  # one per HEAD answered in time: doubling every round trip
    _check(gate, clock, 0.5, heads=2)  # 0.25 s per HEAD: five times the quickest
    assert gate.limit == 4  # one less per check that queued


def test_a_failed_check_changes_nothing() -> None:
    clock = FakeClock()
    gate = InFlight(cap=32, clock=clock, floor=2)
    with pytest.raises(RuntimeError), gate.timing() as slot:
        slot.heads += 1
        clock.advance(0.05)
        raise RuntimeError("network")
    assert (gate.limit, gate.best) == (2, float("inf"))
    _check(gate, clock, 0.05)
    assert gate.limit == 3


def test_a_floor_above_the_cap_is_the_cap() -> None:
    assert InFlight(cap=4, clock=FakeClock()).limit == 4


def test_parallel_runs_as_many_workers_as_wanted() -> None:
    """``width``: never more workers than it says (nor than ``workers``), and more start
    when it grows; every item is done, results in order."""
    want = 1
    inside, most, names = 0, 0, set()
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal inside, most, want
        with lock:
            inside += 1
            most = max(most, inside)
            names.add(threading.current_thread().name)
        if i == 10:
            want = 3
        if i == 60:
            want = 9  # more than workers: workers it is
        with lock:
            inside -= 1
        return i * 2

    results = parallel(work, list(range(100)), 4, CancelToken(), name="t",
                       width=lambda: want)
    assert results == [i * 2 for i in range(100)]
    assert 1 <= most <= 4
    assert len(names) >= 2  # it grew past the one worker it started with
