"""The per-host rate limiter and the host-wide pause after a 429."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport.ratelimit import (
    GROW_AFTER,
    AdaptiveLimit,
    Budget,
    HostLimiter,
    host_limiters,
    set_budget,
)


def test_achieved_rate_under_four_threads():
    stamps: list[float] = []
    lock = threading.Lock()

    def handler(request):
        with lock:
            stamps.append(time.monotonic())
        return httpx.Response(200)

    ctx = make_context(MockHTTP(handler), client_factory_plugin(), rate_limit=20)
    client = ctx.http_client("test", "reg.example")

    def worker():
        for _ in range(10):
            client.get("/v2/")

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert len(stamps) == 40
    assert 1.85 <= elapsed <= 2.8  # 39 intervals of 1/20 s after the first request
    stamps.sort()
    for i in range(len(stamps) - 20):  # never more than 20 in any second
        assert stamps[i + 20] - stamps[i] >= 0.95
    assert ctx.stats["rate_limit_waits"] >= 30


def test_limiter_is_shared_by_clients_and_keyed_by_host():
    clock = FakeClock()
    ctx = make_context(MockHTTP(lambda r: httpx.Response(200)), client_factory_plugin(),
                       client_factory_plugin("other"), clock=clock, rate_limit=2)
    ctx.http_client("test", "a.example").get("/")
    ctx.http_client("other", "a.example").get("/")  # another plugin's client, same host
    assert clock.sleeps == [pytest.approx(0.5)]
    ctx.http_client("test", "b.example").get("/")  # a fresh bucket
    assert len(clock.sleeps) == 1


def test_429_pauses_the_whole_host_for_every_thread():
    clock = FakeClock()
    answers = {"a.example": [httpx.Response(429, headers={"Retry-After": "5"})]}

    def handler(request):
        queue = answers.get(request.url.host) or []
        return queue.pop(0) if queue else httpx.Response(200)

    ctx = make_context(MockHTTP(handler), client_factory_plugin(), client_factory_plugin("x"),
                       clock=clock, retries=0)  # no rate limit set: the pause still applies
    assert ctx.http_client("test", "a.example").get("/").status_code == 429
    results = {}

    def other_thread(name, host):
        results[name] = ctx.http_client("x", host).get("/").status_code

    t = threading.Thread(target=other_thread, args=("b", "b.example"))
    t.start()
    t.join()
    assert results["b"] == 200 and clock.sleeps == []  # another host is not held
    t = threading.Thread(target=other_thread, args=("a", "a.example"))
    t.start()
    t.join()
    assert results["a"] == 200 and clock.sleeps == [5.0]
    assert ctx.stats["rate_limit_waits"] == 1


def test_retry_after_429_waits_once_not_twice():
    clock = FakeClock()
    answers = [httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200)]
    ctx = make_context(MockHTTP(lambda r: answers.pop(0)), client_factory_plugin(), clock=clock)
    assert ctx.http_client("test", "a.example").get("/").status_code == 200
    assert clock.sleeps == [3.0]  # the retry sleep covers the pause


def test_pause_reaches_a_thread_already_waiting_for_a_token():
    clock = FakeClock()
    limiter = HostLimiter(rate=1, clock=clock)
    assert limiter.acquire() is False
    limiter.pause(10)
    assert limiter.acquire() is True
    assert clock.now - 1_000_000.0 == pytest.approx(10.0)


def test_fractional_rates():
    clock = FakeClock()
    limiter = HostLimiter(rate=0.5, clock=clock)
    limiter.acquire()
    limiter.acquire()
    assert clock.sleeps == [pytest.approx(2.0)]


def test_a_429_halves_the_concurrency_limit_and_successes_raise_it_again():
    clock = FakeClock()
    answers = [httpx.Response(429, headers={"Retry-After": "2"})]

    def handler(request):
        return answers.pop(0) if answers else httpx.Response(200)

    ctx = make_context(MockHTTP(handler), client_factory_plugin(), clock=clock, retries=0)
    set_budget(ctx, "a.example", Budget(concurrency=8))
    limit = host_limiters(ctx)["a.example"].concurrency
    assert limit is not None and limit.limit == 8
    client = ctx.http_client("test", "a.example")
    assert client.get("/").status_code == 429
    assert limit.limit == 4 and clock.sleeps == []  # the pause is waited by the next one
    assert ctx.stats["rate_limited"] == 1
    for _ in range(GROW_AFTER - 1):
        client.get("/")
    assert clock.sleeps == [2.0] and limit.limit == 4
    client.get("/")
    assert limit.limit == 5
    for _ in range(3 * GROW_AFTER):
        client.get("/")
    assert limit.limit == 8 and ctx.stats["limit_raised"] == 4  # never above the cap


def test_a_burst_of_429s_in_flight_at_once_halves_the_limit_once():
    limit = AdaptiveLimit(8)
    all_sent = threading.Barrier(6)
    results: list[int | None] = []

    def request() -> None:
        epoch = limit.enter()
        all_sent.wait()  # six requests in flight, then six 429s
        results.append(limit.leave(epoch, True))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limit.limit == 4 and sorted(results, key=str) == [4, None, None, None, None, None]
    assert limit.leave(limit.enter(), True) == 2  # one sent after the halving halves again
    for _ in range(5):
        assert limit.leave(limit.enter(), True) in (1, None)
    assert limit.limit == 1  # never below one


def test_the_limit_holds_requests_until_a_slot_frees():
    limit = AdaptiveLimit(2)
    first, second = limit.enter(), None
    order: list[str] = []

    def other() -> None:
        nonlocal second
        second = limit.enter()
        order.append("second in")
        limit.leave(second, False)

    def third() -> None:
        e = limit.enter()
        order.append("third in")
        limit.leave(e, False)

    blocker = threading.Thread(target=other)
    blocker.start()
    blocker.join()  # two slots: the other thread got one at once
    assert order == ["second in"]
    limit.limit = 1  # as after a 429: the next request waits for this thread's slot
    waiting = threading.Thread(target=third)
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive() and order == ["second in"]
    limit.leave(first, None)  # a network error: frees the slot, changes nothing
    waiting.join()
    assert order == ["second in", "third in"] and limit.limit == 1


def test_a_nested_request_of_a_thread_holding_a_slot_does_not_wait():
    limit = AdaptiveLimit(1)
    outer = limit.enter()
    assert limit.enter() is None  # a download resumed inside an upload's body
    assert limit.leave(None, False) is None
    assert limit.leave(outer, False) is None
    assert limit.leave(limit.enter(), False) is None  # free again
