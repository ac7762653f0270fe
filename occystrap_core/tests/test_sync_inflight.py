"""How many image checks a sync has in flight: the limit follows the HEADs' times."""

from __future__ import annotations

import threading

import pytest

from occystrap_core.sync.inflight import FLOOR, InFlight
from occystrap_core.testing.http import FakeClock


def _check(gate: InFlight, clock: FakeClock, seconds: float, heads: int = 1) -> None:
    with gate.slot() as slot:
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


def test_time_is_counted_per_head() -> None:
    """A warm image asks two HEADs and a cold one one: the same link, the same verdict."""
    clock = FakeClock()
    gate = InFlight(cap=32, clock=clock, floor=2)
    _check(gate, clock, 0.05, heads=1)
    _check(gate, clock, 0.05, heads=2)
    assert gate.limit == 4


def test_a_failed_check_changes_nothing() -> None:
    clock = FakeClock()
    gate = InFlight(cap=32, clock=clock, floor=2)
    with pytest.raises(RuntimeError), gate.slot() as slot:
        slot.heads += 1
        clock.advance(0.05)
        raise RuntimeError("network")
    assert (gate.limit, gate.best) == (2, float("inf"))
    _check(gate, clock, 0.05)  # and its slot was given back
    assert gate.limit == 3


def test_a_floor_above_the_cap_is_the_cap() -> None:
    assert InFlight(cap=4, clock=FakeClock()).limit == 4


def test_no_more_checks_than_the_limit_at_once() -> None:
    clock = FakeClock()
    gate = InFlight(cap=3, clock=clock, floor=3)
    inside, most = 0, 0
    lock = threading.Lock()
    go = threading.Barrier(12)

    def worker() -> None:
        nonlocal inside, most
        go.wait()
        for _ in range(20):
            with gate.slot() as slot:
                with lock:
                    inside += 1
                    most = max(most, inside)
                slot.heads += 1
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert 1 <= most <= 3
