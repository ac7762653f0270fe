"""The rate-limit layer: per host per run, a token bucket and an adaptive
concurrency limit, shared by every thread.

It sits inside the retry layer, so each attempt (retries and token requests
included) takes a token. A 429 answer pauses the whole host, for ``Retry-After``
or a short default, for every client and thread of the run, whether or not
``--rate-limit`` is set. Hosts are taken from each request's URL, so redirected
hops (blob storage) are paced as hosts of their own.

A host given a concurrency cap (``sync``'s per-registry ``concurrency``) also has
at most ``limit`` requests in flight, adapted AIMD-style: the limit starts at the
cap, a 429 halves it (at least 1; the 429s of requests sent before that halving do
not halve it again), and :data:`GROW_AFTER` successes in a row add one, up to the
cap. A request counts as in flight until its answer's headers arrive, or its body is
sent (uploads); a thread already holding a slot of a host (a download resumed while
it feeds an upload) does not wait for another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import httpx

from .clock import Clock, get_clock
from .retry import retry_after

if TYPE_CHECKING:
    from ..context import Context

LIMITERS_KEY = "occystrap.transport.ratelimit"
BUDGETS_KEY = "occystrap.transport.budgets"
DEFAULT_PAUSE = 1.0  # seconds a 429 without Retry-After pauses its host
GROW_AFTER = 10  # successes in a row that raise a host's concurrency limit by one


class AdaptiveLimit:
    """At most ``limit`` requests in flight, AIMD between 1 and ``cap`` (module doc)."""

    def __init__(self, cap: int):
        self.cap = self.limit = cap
        self._cond = threading.Condition()
        self._in_flight = 0
        self._successes = 0
        self._epoch = 0  # halvings so far: a 429 of an earlier epoch does not halve again
        self._held = threading.local()  # slots of this host the current thread holds

    def enter(self) -> int | None:
        """Wait for a slot; returns the epoch to give :meth:`leave`, or None when this
        thread holds a slot already (a nested request takes none)."""
        if getattr(self._held, "slots", 0):
            self._held.slots += 1
            return None
        with self._cond:
            while self._in_flight >= self.limit:
                self._cond.wait()
            self._in_flight += 1
            self._held.slots = 1
            return self._epoch

    def leave(self, epoch: int | None, throttled: bool | None) -> int | None:
        """Free the slot after a 429 (``throttled``), another answer (False) or none
        (None: a network error, which neither lowers nor raises the limit); returns the
        new limit when this answer changed it."""
        self._held.slots -= 1
        if epoch is None:
            return None
        with self._cond:
            self._in_flight -= 1
            changed = None
            if throttled:
                self._successes = 0
                if epoch == self._epoch:
                    self._epoch += 1
                    self.limit = changed = max(1, self.limit // 2)
            elif throttled is False:
                self._successes += 1
                if self._successes >= GROW_AFTER and self.limit < self.cap:
                    self._successes = 0
                    self.limit = changed = self.limit + 1
            self._cond.notify_all()
            return changed


class HostLimiter:
    """A token bucket (burst 1: requests evenly spaced) plus a "paused until" time.

    With ``rate`` None only 429 pauses apply.
    """

    def __init__(self, rate: float | None, clock: Clock):
        self.rate = rate
        self.clock = clock
        self.concurrency: AdaptiveLimit | None = None  # no cap: requests are not counted
        self._lock = threading.Lock()
        self._tokens = 1.0
        self._updated = clock.monotonic()
        self._paused_until = 0.0

    def acquire(self) -> bool:
        """Wait for a token; returns whether this call had to wait."""
        if self.rate is None and self._paused_until <= self.clock.monotonic():
            return False  # no bucket and no pause: nothing to take, no lock to contend for
        waited = False
        while True:
            with self._lock:
                now = self.clock.monotonic()
                wait = self._paused_until - now
                if wait <= 0:
                    if self.rate is None:
                        return waited
                    self._tokens = min(1.0, self._tokens + (now - self._updated) * self.rate)
                    self._updated = now
                    if self._tokens >= 1.0:
                        self._tokens -= 1.0
                        return waited
                    wait = (1.0 - self._tokens) / self.rate
            # Sleep outside the lock and check again: a 429 may pause the host meanwhile.
            waited = True
            self.clock.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every request to this host for ``seconds`` from now."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock.monotonic() + seconds)


@dataclass(frozen=True)
class Budget:
    """One host's own request rate and concurrency cap (``sync``'s per-registry
    settings), instead of the run's ``--rate-limit`` and no cap."""

    rate: float | None = None
    concurrency: int | None = None


class HostLimiters:
    """The run's limiters by host (``ctx.shared``), created on first use."""

    def __init__(self, rate: float | None, clock: Clock,
                 budgets: dict[str, Budget] | None = None):
        self.rate = rate
        self.clock = clock
        self.budgets = budgets or {}
        self._lock = threading.Lock()
        self._hosts: dict[str, HostLimiter] = {}

    def __getitem__(self, host: str) -> HostLimiter:
        limiter = self._hosts.get(host)  # once made, never replaced: no lock to read it
        if limiter is not None:
            return limiter
        with self._lock:
            limiter = self._hosts.get(host)
            if limiter is None:
                budget = self.budgets.get(host, Budget())
                limiter = self._hosts[host] = HostLimiter(budget.rate or self.rate, self.clock)
                if budget.concurrency:
                    limiter.concurrency = AdaptiveLimit(budget.concurrency)
            return limiter


def set_budget(ctx: Context, host: str, budget: Budget) -> None:
    """Give ``host`` its own budget; before the run's first client is built (the
    limiters, and the clock a test installs then, are created with it)."""
    ctx.shared(BUDGETS_KEY, dict)[host] = budget


def host_limiters(ctx: Context) -> HostLimiters:
    clock = get_clock(ctx)  # not inside the factory: ctx.shared is not re-entrant
    budgets = ctx.shared(BUDGETS_KEY, dict)
    return ctx.shared(LIMITERS_KEY,
                      lambda: HostLimiters(ctx.settings.rate_limit, clock, budgets))


class RateLimitTransport(httpx.BaseTransport):
    """Takes a slot and a token of the request host's limiter before each attempt.

    ``on_wait(host)`` is called when a request waited for a token or a pause;
    ``on_throttled(host, seconds, limit)`` for each 429: the pause it set and the
    host's concurrency limit (None: uncapped host); ``on_raised(host, limit)`` when
    successes raised that limit again.
    """

    def __init__(self, inner: httpx.BaseTransport, limiters: HostLimiters,
                 on_wait: Callable[[str], None] | None = None,
                 on_throttled: Callable[[str, float, int | None], None] | None = None,
                 on_raised: Callable[[str, int], None] | None = None):
        self.inner = inner
        self.limiters = limiters
        self.on_wait = on_wait
        self.on_throttled = on_throttled
        self.on_raised = on_raised

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.netloc.decode()
        limiter = self.limiters[host]
        slots = limiter.concurrency
        epoch = slots.enter() if slots is not None else None
        throttled: bool | None = None
        changed = None
        try:
            if limiter.acquire() and self.on_wait:
                self.on_wait(host)
            response = self.inner.handle_request(request)
            throttled = response.status_code == 429
        finally:
            if slots is not None:
                changed = slots.leave(epoch, throttled)
        if changed is not None and not throttled and self.on_raised:
            self.on_raised(host, changed)
        if throttled:
            pause = retry_after(response, limiter.clock.time()) or DEFAULT_PAUSE
            limiter.pause(pause)
            if self.on_throttled:
                self.on_throttled(host, pause, slots.limit if slots is not None else None)
        return response

    def close(self) -> None:
        self.inner.close()
