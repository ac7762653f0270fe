"""Streaming blob downloads that resume with ``Range`` when the body breaks.

A transport-level retry cannot resume a half-read body, so this sits on top of
the client and retries the whole download itself, under the run's one
:class:`~occystrap_core.transport.retry.RetryPolicy`: a failed request (a
connection error, 429 or 5xx) and a broken body (a reset, an early end, data
arriving below ``--min-speed``) each use one of the ``--retries`` attempts. The
bytes already handed to the caller are kept and the rest is asked for with
``Range: bytes=N-``. Bytes are passed on exactly as sent (``iter_raw``,
``Accept-Encoding: identity``): a blob's digest is over its stored bytes, and
Range offsets only make sense on those.

A reader may also stand for one byte range of the blob (``first``, ``last``), as
:mod:`~occystrap_core.transport.ranged` uses it to fetch a large blob over several
connections; a server answering such a request with the whole blob raises
:class:`RangesRefused`. :func:`open_blob` does that for blobs of a known size and
digest when given a :class:`~occystrap_core.transport.ranged.RangePlan`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from typing import TYPE_CHECKING, BinaryIO, Iterator, Mapping

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from .ranged import RangePlan

import httpx

from ..errors import TransportError
from ..redact import redact_uri
from ..streams import HashingReader, direct
from .base import BULK
from .errors import html_page, status_error
from .retry import NO_RETRY, RETRY_STATUSES, RetryPolicy, SpeedCheck, retryable

log = logging.getLogger("occystrap.transport")

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_EMPTY = memoryview(b"")


class RangesRefused(TransportError):
    """The server answered a request for part of a blob with the whole of it."""


class BlobReader(io.RawIOBase):
    """The body of ``GET url`` as a raw stream, retried and resumed as ``policy`` allows:
    the whole blob, or only its bytes ``first`` to ``last`` (inclusive) when ``last``
    is given (``size`` is then their count)."""

    def __init__(self, client: httpx.Client, url: str, *, size: int | None,
                 policy: RetryPolicy, headers: Mapping[str, str] | None, what: str,
                 first: int = 0, last: int | None = None):
        self.client = client
        self.first, self.last = first, last
        self.url = url
        self.policy = policy
        self.headers = {"Accept-Encoding": "identity", **(headers or {})}
        self.what = what
        self.total = size
        self.received = 0
        self.attempt = 0  # retries used so far, requests and resumes alike
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] = iter(())
        self._pending = _EMPTY
        self._skip = 0
        self._speed: SpeedCheck | None = None

    def readable(self) -> bool:
        return True

    def open(self) -> None:
        """Send the request for the bytes not received yet (retrying it if need be)."""
        while not self._request():
            pass

    def _request(self) -> bool:
        """One attempt at the request; False when it failed and may be tried again."""
        headers = dict(self.headers)
        start = self.first + self.received
        partial = bool(start) or self.last is not None
        if partial:
            headers["Range"] = f"bytes={start}-{'' if self.last is None else self.last}"
        request = self.client.build_request("GET", self.url, headers=headers,
                                            extensions={BULK: True, NO_RETRY: False})
        try:
            response = self.client.send(request, stream=True)
        except TransportError as e:
            if not e.retryable:
                raise
            self._again(str(e))
            return False
        self._response = response
        status = response.status_code
        if status in RETRY_STATUSES:
            self._close_response()
            self._again(f"HTTP {status} {response.reason_phrase}", response)
            return False
        if status == 206 and partial:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if not match or int(match.group(1)) != start or (
                    self.last is not None and int(match.group(2)) != self.last):
                self._close_response()
                raise TransportError(
                    f"{self.what}: {self._host}: asked for bytes {headers['Range'][6:]}, got "
                    f"Content-Range {response.headers.get('content-range')!r}")
            self._skip = 0
            if self.total is None and match.group(3) != "*":
                self.total = int(match.group(3))
        elif status == 200 and self.last is not None and not html_page(response):
            self._close_response()
            raise RangesRefused(f"{self.what}: {self._host} does not serve byte ranges")
        elif status == 200 and not html_page(response):
            self._skip = self.received  # Range ignored: the whole body again, skip the start
            length = response.headers.get("content-length")
            if self.total is None and length and length.isdigit():
                self.total = int(length)
        else:
            raise status_error(response, self.what)
        self._speed = self.policy.speed_check()
        try:  # a body given whole (mock transports) is already read: iter_raw refuses it
            self._chunks = iter([response.content])
        except httpx.ResponseNotRead:
            self._chunks = response.iter_raw()  # no chunk_size: it buffers, losing bytes on a break
        return True

    @property
    def _host(self) -> str:
        return self.client.base_url.join(self.url).netloc.decode()

    def _again(self, reason: str, response: httpx.Response | None = None) -> None:
        """Wait to try once more, or raise when the policy allows no more tries."""
        of = f" of {self.total}" if self.total is not None else ""
        at = f" after {self.received}{of} bytes" if self.received else ""
        if not self.policy.allows(self.attempt):
            tries = f" and {self.attempt} retries did not help" if self.attempt else ""
            raise TransportError(f"{self.what}: download from {self._host} failed{at}{tries}: "
                                 f"{reason}", retryable=True) from None
        where = redact_uri(str(self.client.base_url.join(self.url)))
        self.policy.wait(self.attempt, f"{reason}{at}", f"GET {where}", response,
                         host=self._host)
        self.attempt += 1

    def _resume(self, reason: str) -> None:
        self._close_response()
        self._again(reason)
        self.open()

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fills ``buffer`` from as many network chunks as it takes (up to EOF): the
        readers stacked above then run once per buffer, not once per TLS record."""
        view = memoryview(buffer).cast("B")
        size, filled = len(view), 0
        while filled < size:
            pending = self._pending
            if not pending:
                if not self._next_chunk():
                    break
                pending = self._pending
            n = len(pending)
            if n <= size - filled:  # the whole chunk: the common case, no slicing of it
                view[filled:filled + n] = pending
                self._pending = _EMPTY
            else:
                n = size - filled
                view[filled:] = pending[:n]
                self._pending = pending[n:]
            self.received += n  # now: a resume asks for the bytes after these
            filled += n
        return filled

    def _next_chunk(self) -> bool:
        """The next chunk of the body into ``_pending`` (resuming a broken body);
        False at its end."""
        while not self._pending:
            try:
                chunk = next(self._chunks)
                if self._speed is not None:
                    self._speed.update(len(chunk))
            except StopIteration:
                if self.total is not None and self.received < self.total:
                    self._resume(f"body ended early, at byte {self.received}")
                    continue
                return False
            except httpx.TransportError as e:
                if not retryable(e):
                    raise TransportError(f"{self.what}: download from {self._host} failed: "
                                         f"{e or type(e).__name__}") from e
                self._resume(str(e) or type(e).__name__)
                continue
            if self._skip:
                cut = min(self._skip, len(chunk))
                chunk, self._skip = chunk[cut:], self._skip - cut
            self._pending = memoryview(chunk)
        return True

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
        self._chunks = iter(())

    def close(self) -> None:
        self._close_response()
        super().close()


@contextlib.contextmanager
def open_blob(client: httpx.Client, url: str, *, policy: RetryPolicy, size: int | None = None,
              digest: str | None = None, headers: Mapping[str, str] | None = None,
              what: str | None = None, ranges: RangePlan | None = None,
              verify: bool = True) -> Iterator[BinaryIO]:
    """Stream ``GET url`` as a buffered binary file, retried and resumed under ``policy``.

    With ``digest`` (and/or ``size``) the stream is verified (unless ``verify`` is
    False: the caller hashes what it reads itself, as the engine does): reading to the end
    raises :class:`~occystrap_core.errors.DigestMismatchError` or
    :class:`~occystrap_core.errors.CorruptImageError` on a mismatch. A failed
    answer raises :func:`~occystrap_core.transport.errors.status_error` (with
    ``.response``); a download still failing when the policy's retries are spent
    raises :class:`~occystrap_core.errors.TransportError`. The response is always
    closed.

    With ``ranges``, a blob whose ``size`` and ``digest`` are given and that the plan
    applies to is fetched in parallel ranges (:mod:`~occystrap_core.transport.ranged`),
    or over one connection when the server refuses ranges.
    """
    what = what or (f"blob {digest}" if digest else redact_uri(url))
    reader: io.RawIOBase
    if ranges is not None and digest and ranges.applies(size):
        assert size is not None
        from .ranged import RangedReader  # it builds on BlobReader

        reader = RangedReader(client, url, digest=digest, size=size, plan=ranges,
                              policy=policy, headers=headers, what=what)
        try:
            reader.open()
        except RangesRefused as e:
            log.info("%s; fetching it over one connection", e)
            reader.close()
        except BaseException:
            reader.close()
            raise
        else:
            try:
                yield direct(HashingReader(reader, expected=digest, size=size, what=what)
                             if verify else reader)
            finally:
                reader.close()
            return
    reader = BlobReader(client, url, size=size, policy=policy, headers=headers, what=what)
    try:
        reader.open()
        raw: io.RawIOBase = reader
        if verify and (digest or size is not None):
            raw = HashingReader(reader, expected=digest, size=size, what=what)
        yield direct(raw)
    finally:
        reader.close()
