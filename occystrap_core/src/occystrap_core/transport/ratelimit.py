"""The rate-limit layer: one token bucket per host per run, shared by every thread.

It sits inside the retry layer, so each attempt (retries and token requests
included) takes a token. A 429 answer pauses the whole host, for ``Retry-After``
or a short default, for every client and thread of the run, whether or not
``--rate-limit`` is set. Hosts are taken from each request's URL, so redirected
hops (blob storage) are paced as hosts of their own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

import httpx

from .clock import Clock, get_clock
from .retry import retry_after

if TYPE_CHECKING:
    from ..context import Context

LIMITERS_KEY = "occystrap.transport.ratelimit"
DEFAULT_PAUSE = 1.0  # seconds a 429 without Retry-After pauses its host


class HostLimiter:
    """A token bucket (burst 1: requests evenly spaced) plus a "paused until" time.

    With ``rate`` None only 429 pauses apply.
    """

    def __init__(self, rate: float | None, clock: Clock):
        self.rate = rate
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens = 1.0
        self._updated = clock.monotonic()
        self._paused_until = 0.0

    def acquire(self) -> bool:
        """Wait for a token; returns whether this call had to wait."""
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


class HostLimiters:
    """The run's limiters by host (``ctx.shared``), created on first use."""

    def __init__(self, rate: float | None, clock: Clock):
        self.rate = rate
        self.clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, HostLimiter] = {}

    def set_rate(self, host: str, rate: float) -> None:
        """A request budget for one host (``sync``'s per-registry setting)."""
        self[host].rate = rate

    def __getitem__(self, host: str) -> HostLimiter:
        with self._lock:
            limiter = self._hosts.get(host)
            if limiter is None:
                limiter = self._hosts[host] = HostLimiter(self.rate, self.clock)
            return limiter


def host_limiters(ctx: Context) -> HostLimiters:
    clock = get_clock(ctx)  # not inside the factory: ctx.shared is not re-entrant
    return ctx.shared(LIMITERS_KEY, lambda: HostLimiters(ctx.settings.rate_limit, clock))


class RateLimitTransport(httpx.BaseTransport):
    """Takes a token from the request host's bucket before each attempt."""

    def __init__(self, inner: httpx.BaseTransport, limiters: HostLimiters,
                 on_wait: Callable[[], None] | None = None):
        self.inner = inner
        self.limiters = limiters
        self.on_wait = on_wait

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        limiter = self.limiters[request.url.netloc.decode()]
        if limiter.acquire() and self.on_wait:
            self.on_wait()
        response = self.inner.handle_request(request)
        if response.status_code == 429:
            limiter.pause(retry_after(response, limiter.clock.time()) or DEFAULT_PAUSE)
        return response

    def close(self) -> None:
        self.inner.close()
