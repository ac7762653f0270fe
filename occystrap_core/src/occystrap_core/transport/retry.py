"""The run's one retry policy, and the transport layer that applies it to requests.

``--retries N`` allows N more attempts of any one operation, whatever it is: a
request (retried here, in the transport layer every client has), a blob download
however often its body breaks (:mod:`.blobs` resumes it with ``Range``), a blob
upload however often it restarts (the registry plugin's uploader). All wait the
same way: capped exponential backoff with jitter, and at least what a
``Retry-After`` asks for. Connection failures, timeouts, 429 and 500/502/503/504
are retried; 401/403/404 and other statuses are returned as they are, and so are
TLS failures no retry can cure (:mod:`.tlshints`: an untrusted certificate, TLS
spoken to a plain-HTTP server), with a hint of what to try.

The layer reads every answer's body inside its loop, except bulk downloads that
the caller streams (the ``occystrap.bulk`` extension): a connection reset in the
middle of a manifest, a config or a token answer is retried like one before the
headers. Every body must keep arriving at ``--min-speed`` bytes per second over
windows of ``--timeout`` seconds: a server trickling a few bytes at a time would
otherwise never time out, since the timeout applies to each read.

A request is only replayed when its body can be sent again: no body, ``bytes``,
or a seekable file. A generator or iterator body may already be half-sent, so it
is retried only on errors raised before anything was sent (connect and pool
failures). ``extensions={"occystrap.retry": False}`` opts one request out, for
callers that retry a whole operation themselves under the same policy.
"""

from __future__ import annotations

import email.utils
import logging
import random
from typing import Callable, Iterator

import httpx

from ..errors import TransportError
from ..redact import redact_uri
from .base import BULK
from .clock import Clock
from .tlshints import tls_failure

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
# Answers read whole (manifests, configs, tokens, API pages); bigger ones are refused
# rather than held in memory. Image configs are the largest, and capped at this too.
MAX_ANSWER = 64 * 1024 * 1024


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


class SpeedCheck:
    """Fails a transfer slower than ``min_speed`` bytes/s over a whole ``window``."""

    def __init__(self, clock: Clock, min_speed: int, window: float):
        self.clock = clock
        self.min_speed = min_speed
        self.window = window
        self._start = clock.monotonic()
        self._bytes = 0

    def update(self, n: int) -> None:
        """Count ``n`` bytes; raise ``httpx.ReadTimeout`` (retried like any timeout)
        when a window ended below the minimum."""
        if not self.min_speed:
            return
        self._bytes += n
        elapsed = self.clock.monotonic() - self._start
        if elapsed < self.window:
            return
        if self._bytes < self.min_speed * elapsed:
            raise httpx.ReadTimeout(f"data arrived at {self._bytes / elapsed:.0f} bytes/s, "
                                    f"below the minimum of {self.min_speed} (--min-speed)")
        self._start, self._bytes = self.clock.monotonic(), 0


class RetryPolicy:
    """How many times, and how, any one operation of the run is retried (see module doc)."""

    def __init__(self, retries: int, clock: Clock, *, min_speed: int = 0,
                 window: float = 30.0, on_retry: Callable[[str], None] | None = None,
                 rand: Callable[[], float] = random.random):
        self.retries = retries
        self.clock = clock
        self.min_speed = min_speed
        self.window = window
        self.on_retry = on_retry
        self.rand = rand

    def allows(self, attempt: int) -> bool:
        """May an operation that has been retried ``attempt`` times be retried again?"""
        return attempt < self.retries

    def wait(self, attempt: int, why: str, what: str,
             response: httpx.Response | None = None, *, host: str = "") -> None:
        """Count retry number ``attempt`` (0-based) of ``what`` (to ``host``) and sleep
        before it."""
        delay = backoff(attempt, self.rand)
        if response is not None:
            delay = max(delay, retry_after(response, self.clock.time()) or 0.0)
        log.info("retrying %s after %s in %.1fs (retry %d of %d)", redact_uri(what), why,
                 delay, attempt + 1, self.retries)
        if self.on_retry:
            self.on_retry(host)
        self.clock.sleep(delay)

    def speed_check(self) -> SpeedCheck:
        return SpeedCheck(self.clock, self.min_speed, self.window)


def retryable(error: Exception) -> bool:
    """Could trying again cure ``error`` (an httpx error, or a TransportError for one)?"""
    if isinstance(error, TransportError):
        return error.retryable
    # an untrusted certificate or TLS to a plain-HTTP server fails every time
    return isinstance(error, RETRY_ERRORS) and not tls_failure(error)


def _describe(error: httpx.TransportError, host: str) -> str:
    detail = str(error) or type(error).__name__
    hint = tls_failure(error)
    if hint:
        detail += f" ({hint})"
    if isinstance(error, httpx.ConnectError):
        return f"cannot connect to {host}: {detail}"
    if isinstance(error, httpx.TimeoutException):
        return f"timed out talking to {host} ({type(error).__name__}): {detail}"
    return f"network error talking to {host}: {detail}"


class _CheckedBody(httpx.SyncByteStream):
    """An answer's body, refused past ``MAX_ANSWER`` bytes or below the minimum speed."""

    def __init__(self, inner: httpx.SyncByteStream, check: SpeedCheck):
        self.inner = inner
        self.check = check

    def __iter__(self) -> Iterator[bytes]:
        total = 0
        for chunk in self.inner:
            total += len(chunk)
            if total > MAX_ANSWER:
                raise httpx.RemoteProtocolError(f"an answer of more than {MAX_ANSWER} bytes "
                                                f"where a document was expected")
            self.check.update(len(chunk))
            yield chunk

    def close(self) -> None:
        self.inner.close()


class RetryTransport(httpx.BaseTransport):
    """Wraps ``inner``; retries as ``policy`` says (see module doc)."""

    def __init__(self, inner: httpx.BaseTransport, policy: RetryPolicy):
        self.inner = inner
        self.policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Only a body of bytes can be sent again: a streamed one (an upload) is sent
        # once, and its caller retries the whole operation under the same policy.
        replayable = isinstance(request.stream, httpx.ByteStream)
        allowed = request.extensions.get(NO_RETRY, True)
        bulk = request.extensions.get(BULK)
        head = request.method == "HEAD"  # its answer has no body: nothing to check
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self.inner.handle_request(request)
                if not bulk:
                    if not head:
                        assert isinstance(response.stream, httpx.SyncByteStream)  # sync
                        response.stream = _CheckedBody(response.stream,
                                                       self.policy.speed_check())
                    response.read()
            except httpx.TransportError as e:
                if response is not None:
                    response.close()
                cured = retryable(e)
                if not (allowed and cured and (replayable or isinstance(e, UNSENT_ERRORS))
                        and self.policy.allows(attempt)):
                    suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise TransportError(_describe(e, request.url.netloc.decode()) + suffix,
                                         retryable=cured) from e
                why = type(e).__name__
            else:
                status = response.status_code
                if status not in RETRY_STATUSES or not allowed or not replayable \
                        or not self.policy.allows(attempt):
                    return response
                why = f"HTTP {status}"
                response.close()
            self.policy.wait(attempt, why, f"{request.method} {request.url}", response,
                             host=request.url.netloc.decode())
            attempt += 1

    def close(self) -> None:
        self.inner.close()
