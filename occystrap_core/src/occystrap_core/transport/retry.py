"""The retry layer: every plugin's requests are retried here, never in plugins.

Retries connection-level failures and 429/500/502/503/504 with capped exponential
backoff and jitter, honouring ``Retry-After``. 401/403/404 and other statuses are
returned as they are. When retries run out, an httpx network error becomes an
:class:`~occystrap_core.errors.TransportError` naming the host, so every plugin
gets the same clear message.

A request is only replayed when its body can be sent again: no body, ``bytes``,
or a seekable file. A generator or iterator body may already be half-sent, so it
is retried only on errors raised before anything was sent (connect and pool
failures). ``extensions={"occystrap.retry": False}`` opts one request out.
"""

from __future__ import annotations

import email.utils
import logging
import random
from typing import Callable

import httpx

from ..errors import TransportError
from .clock import Clock
from ..redact import redact_uri

log = logging.getLogger("occystrap.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Raised before any byte of the request went out: safe to retry even a streamed body.
UNSENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
RETRY_ERRORS = UNSENT_ERRORS + (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError,
                                httpx.WriteError, httpx.ProtocolError)
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 300.0  # a server asking for longer still gets retried, just sooner
NO_RETRY = "occystrap.retry"


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``attempt`` (0-based): capped, with jitter in [d/2, d)."""
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** attempt)
    return delay / 2 + rand() * delay / 2


def retry_after(response: httpx.Response, now: float) -> float | None:
    """``Retry-After`` in seconds (delta or HTTP date, against wall time ``now``), capped."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def _rewinder(stream: httpx.SyncByteStream) -> Callable[[], None] | None:
    """How to make ``stream`` send its body again, or None when it cannot."""
    if isinstance(stream, httpx.ByteStream):  # no body, or bytes: always replayable
        return lambda: None
    # httpx wraps file bodies in an iterator stream that reads from the current position.
    source = getattr(stream, "_stream", None)
    seekable = getattr(source, "seekable", None)
    if seekable is not None and seekable():
        start = source.tell()
        return lambda: source.seek(start)
    return None


def _describe(error: httpx.TransportError, host: str) -> str:
    detail = str(error) or type(error).__name__
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect to {host}: {detail}"
    if isinstance(error, httpx.TimeoutException):
        return f"timed out talking to {host} ({type(error).__name__}): {detail}"
    return f"network error talking to {host}: {detail}"


class RetryTransport(httpx.BaseTransport):
    """Wraps ``inner``; retries up to ``retries`` times, sleeping on ``clock``."""

    def __init__(self, inner: httpx.BaseTransport, *, retries: int, clock: Clock,
                 on_retry: Callable[[], None] | None = None,
                 rand: Callable[[], float] = random.random):
        self.inner = inner
        self.retries = retries
        self.clock = clock
        self.on_retry = on_retry
        self.rand = rand

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Decided before the first attempt: sending a body may change its stream.
        rewind = _rewinder(request.stream)
        allowed = self.retries if request.extensions.get(NO_RETRY, True) else 0
        attempt = 0
        while True:
            try:
                response = self.inner.handle_request(request)
            except httpx.TransportError as e:
                retryable = isinstance(e, RETRY_ERRORS) and (
                    rewind is not None or isinstance(e, UNSENT_ERRORS))
                if attempt >= allowed or not retryable:
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise TransportError(_describe(e, request.url.netloc.decode()) + suffix) from e
                delay, why = backoff(attempt, self.rand), type(e).__name__
            else:
                status = response.status_code
                if status not in RETRY_STATUSES or attempt >= allowed or rewind is None:
                    return response
                delay = backoff(attempt, self.rand)
                delay = max(delay, retry_after(response, self.clock.time()) or 0.0)
                why = f"HTTP {status}"
                response.close()
            attempt += 1
            log.info("retrying %s %s after %s in %.1fs (retry %d of %d)", request.method,
                     redact_uri(str(request.url)), why, delay, attempt, allowed)
            if self.on_retry:
                self.on_retry()
            self.clock.sleep(delay)
            if rewind:
                rewind()

    def close(self) -> None:
        self.inner.close()
