"""The core's transport: the default network transport and the global layers.

Layers, innermost first: HTTP logging (order 50, every attempt), the per-host
rate limiter (100, every attempt), retries (200). A plugin layer above 200 sees
each logical request once; one below 100 sees every attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .. import hookimpl
from ..types import TransportLayer

if TYPE_CHECKING:
    import httpx

    from ..context import Context


@hookimpl(trylast=True)
def occystrap_base_transport(host: str, ctx: Context, tls_verify: bool) -> httpx.BaseTransport:
    from ..transport.base import ProxyRouter

    return ProxyRouter(ctx, tls_verify=tls_verify)


def _logging(inner: httpx.BaseTransport, host: str, ctx: Context) -> httpx.BaseTransport:
    from .. import redact
    from ..transport.httplog import LoggingTransport

    redact.install()  # httpx's own request log shows URLs, whoever enables it
    return LoggingTransport(inner)


def _rate_limit(inner: httpx.BaseTransport, host: str, ctx: Context) -> httpx.BaseTransport:
    from ..transport.ratelimit import RateLimitTransport, host_limiters

    def throttled(host: str, pause: float, limit: int | None) -> None:
        ctx.stats.add("rate_limited", host=host, pause=pause, limit=limit)

    return RateLimitTransport(inner, host_limiters(ctx),
                              on_wait=lambda host: ctx.stats.add("rate_limit_waits", host=host),
                              on_throttled=throttled,
                              on_raised=lambda host, limit: ctx.stats.add(
                                  "limit_raised", host=host, limit=limit))


def _retry(inner: httpx.BaseTransport, host: str, ctx: Context) -> httpx.BaseTransport:
    from ..transport.retry import RetryTransport

    return RetryTransport(inner, ctx.retry)


@hookimpl
def occystrap_transport_layers() -> Iterable[TransportLayer]:
    yield TransportLayer(name="http-log", order=50, wrap=_logging)
    yield TransportLayer(name="rate-limit", order=100, wrap=_rate_limit)
    yield TransportLayer(name="retry", order=200, wrap=_retry)
