"""One large blob over several connections: parallel ``Range`` requests into one file.

Registries and CDNs often cap each connection's throughput, so a single large layer
downloads no faster than that cap however fast the link is. A blob of a known size
of at least ``threshold`` bytes is therefore cut into chunks that ``connections``
workers (8, or ``-j`` if more) take in order from a shared queue (a slow connection
does not hold the others back), each chunk a :class:`~occystrap_core.transport.blobs.BlobReader` for
its byte range (retried and resumed under the run's retry policy, redirects
followed). Workers write at their offsets into a
:class:`~occystrap_core.partials.Partial`; the reader hands out the contiguous
prefix in order as soon as it is there, so the one digest check above it (the
consumer's) sees the blob as one stream, and memory stays bounded by the workers'
buffers whatever the blob's size.

The partial is kept across runs: a killed pull resumes from its complete chunks.
A server answering the first range with the whole blob makes :func:`open_ranged`
raise :class:`~occystrap_core.transport.blobs.RangesRefused`; the caller then
streams the blob over one connection.

``OCCYSTRAP_RANGE_CHUNK`` sets the chunk size (``0`` turns ranges off),
``OCCYSTRAP_RANGE_THRESHOLD`` the smallest blob fetched this way.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import httpx

from .. import partials
from ..errors import TransportError, UsageError
from ..layercache import parse_size
from .blobs import BlobReader
from .retry import RetryPolicy

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from ..context import Context

log = logging.getLogger("occystrap.transport")

CHUNK = 16 << 20
# Ranges write every byte to the partial file and read it back: on a link that does not
# cap connections that costs a third of a pull of 64 MiB layers (bench/registry_bench.py),
# where -j layers at once fill the link anyway. A blob this large is the long tail a
# capped connection makes of a pull.
THRESHOLD = 256 << 20
# Connections per large blob (or -j, if more). A capped connection's rate times this is
# the ceiling; 8 at 40 MB/s is past what one consumer thread hashes and writes here
# (130-190 MB/s), and the spare-connection semaphore keeps the pool's bound.
CONNECTIONS = 8
_BUFFER = 1 << 20  # a worker's read buffer
_JOIN = 5.0  # seconds a closing reader waits for each worker to notice


@dataclass(frozen=True)
class RangePlan:
    """How large blobs are fetched: from ``threshold`` bytes up, in ``chunk``-byte
    ranges over up to ``connections`` connections, kept in ``directory`` (None: not
    kept) or else in ``temp_dir`` for the run.

    Each blob has one connection, as it would without ranges; the others are taken
    from ``spare``, the run's connections beyond one per layer transferred at once,
    so that several large layers together stay within the connection pool."""

    threshold: int
    chunk: int
    connections: int
    directory: str | None
    temp_dir: str
    spare: threading.BoundedSemaphore = field(compare=False)

    def applies(self, size: int | None) -> bool:
        return size is not None and size >= max(self.threshold, 2 * self.chunk)


def _env_size(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return parse_size(text)
    except UsageError:
        raise UsageError(f"{name}: expected a size such as 16M or 0, not {text!r}") from None


def plan(ctx: Context, size: int | None) -> RangePlan | None:
    """The run's plan when a blob of ``size`` bytes is to come in ranges, else None
    (directories are only made for such a blob)."""
    chunk = _env_size("OCCYSTRAP_RANGE_CHUNK", CHUNK)
    threshold = _env_size("OCCYSTRAP_RANGE_THRESHOLD", THRESHOLD)
    if chunk == 0 or size is None or size < max(threshold, 2 * chunk):
        return None
    settings = ctx.settings
    spare = threading.BoundedSemaphore(max(0, settings.max_connections - settings.parallel))
    result: RangePlan = ctx.shared("transport.range_plan", lambda: RangePlan(
        threshold, chunk, max(CONNECTIONS, settings.parallel), partials.directory(ctx),
        ctx.temp_dir, spare))
    return result


class RangedReader(io.RawIOBase):
    """The blob's bytes in order, fetched by parallel range requests (see the module)."""

    def __init__(self, client: httpx.Client, url: str, *, digest: str, size: int,
                 plan: RangePlan, policy: RetryPolicy, headers: Mapping[str, str] | None,
                 what: str):
        self.client, self.url, self.policy, self.what = client, url, policy, what
        self.headers = headers
        self.size = size
        self.partial = partials.Partial.open(plan.directory, digest, size, plan.chunk,
                                             plan.temp_dir)
        self.plan = plan
        self.position = 0  # bytes handed out
        self._todo = [i for i in range(self.partial.chunks) if i not in self.partial.done]
        self._prefix = 0  # chunks complete from the first
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._stop = False
        self._threads: list[threading.Thread] = []
        self.fetched = 0  # bytes received from the network

    def readable(self) -> bool:
        return True

    def _chunk_reader(self, index: int) -> BlobReader:
        start, end = self.partial.span(index)
        first = start + self.partial.filled.get(index, 0)  # an earlier run got this far
        return BlobReader(self.client, self.url, size=end - first, policy=self.policy,
                          headers=self.headers, what=f"{self.what} bytes {first}-{end - 1}",
                          first=first, last=end - 1)

    def open(self) -> None:
        """Ask for the first missing chunk (raising ``RangesRefused`` when the server
        sends the whole blob instead), then start the workers."""
        if not self._todo:
            return  # an earlier run fetched it all
        index = self._todo.pop(0)
        self._start((index, self._opened(index)), spare=False)
        for _ in range(min(self.plan.connections, len(self._todo) + 1) - 1):
            if not self.plan.spare.acquire(blocking=False):
                break  # other large blobs use the run's spare connections
            self._start(None, spare=True)

    def _start(self, first: tuple[int, BlobReader] | None, spare: bool) -> None:
        fd = os.dup(self.partial.fd)  # the worker's own: closing the reader leaves it be
        thread = threading.Thread(target=self._work, args=(fd, first, spare), daemon=True,
                                  name=f"occystrap-range-{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def _work(self, fd: int, first: tuple[int, BlobReader] | None, spare: bool) -> None:
        try:
            task = first or self._take()
            while task is not None:
                self._fetch(fd, *task)
                task = self._take()
        except BaseException as e:  # handed to the consumer, which raises it
            with self._cond:
                if self._error is None and not self._stop:
                    self._error = e
                self._cond.notify_all()
        finally:
            os.close(fd)
            if spare:
                self.plan.spare.release()

    def _take(self) -> tuple[int, BlobReader] | None:
        with self._cond:
            if self._stop or self._error is not None or not self._todo:
                return None
            index = self._todo.pop(0)
        return index, self._opened(index)

    def _opened(self, index: int) -> BlobReader:
        """Chunk ``index``'s reader, its request sent."""
        reader = self._chunk_reader(index)
        try:
            reader.open()
        except BaseException:
            reader.close()
            raise
        return reader

    def _fetch(self, fd: int, index: int, reader: BlobReader) -> None:
        start, end = self.partial.span(index)
        buffer = bytearray(_BUFFER)
        view = memoryview(buffer)
        offset = start + self.partial.filled.get(index, 0)
        try:
            while offset < end:
                if self._stop:
                    return
                n = reader.readinto(buffer)
                if not n:
                    break
                try:
                    os.pwrite(fd, view[:n], offset)
                except OSError as e:  # a full disk: said of the partial's, not the output's
                    raise OSError(e.errno, e.strerror, self.partial.where) from None
                offset += n
                with self._cond:
                    self.fetched += n
                    self.partial.filled[index] = offset - start
                    self._cond.notify_all()
        finally:
            reader.close()
        if offset != end:
            raise TransportError(f"{self.what}: bytes {start}-{end - 1} ended at {offset}")
        with self._cond:
            self.partial.complete(index)
            self._cond.notify_all()

    def _available(self) -> int:
        """Bytes from the start that are in the file (caller holds the condition)."""
        while self._prefix in self.partial.done:
            self._prefix += 1
        if self._prefix >= self.partial.chunks:
            return self.size
        return self.partial.span(self._prefix)[0] + self.partial.filled.get(self._prefix, 0)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                available = self._available()
                if available > self.position or self.position >= self.size:
                    break
                self._cond.wait()
        n = min(len(view), available - self.position)
        if n <= 0:
            return 0
        got = os.preadv(self.partial.fd, [view[:n]], self.position)
        if got != n:
            raise TransportError(f"{self.what}: the partial download lost bytes at "
                                 f"{self.position + got}")
        self.position += n
        return n

    def close(self) -> None:
        if self.closed:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(_JOIN)
        finished = self.position >= self.size
        if finished and self.fetched < self.size:
            log.info("%s: %d of %d bytes came from a partial download", self.what,
                     self.size - self.fetched, self.size)
        self.partial.close(finished=finished)
        super().close()
