"""HTTP/2 for threads, through httpx's public async API: one event loop owns the connections.

httpcore's sync HTTP/2 connection is not safe to share between threads (encode/httpx#3566:
the h2 state machine and the TLS socket are changed by several threads at once), while its
async connection is correct on one event loop. :class:`H2Transport` therefore runs one loop
on one daemon thread with an ``httpx.AsyncHTTPTransport(http2=True)`` that only that thread
uses. A sync caller's request is a task on the loop that the caller waits for, and another
task reads the answer into a queue for it: every change to h2 state and every read or write
of the socket happens on the loop thread, with no lock needed, whatever a trace hook or the
server does.

A caller that stops waiting (Ctrl-C in the main thread, or past the bound derived from its
timeouts) cancels its task, and an answer that arrives for nobody is closed on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import queue
import ssl
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx

from .base import has_body

T = TypeVar("T")
Trace = Callable[[str, dict[str, Any]], object]

# Seconds a caller waits past httpx's own timeouts: those name the phase, so they should
# fire first; this bound only matters if the loop is wedged or gone.
GRACE = 5.0
_EMPTY = httpx.ByteStream(b"")


@contextlib.contextmanager
def _h2_errors() -> Iterator[None]:
    """h2's own exceptions (httpcore lets some through, such as a body shorter than its
    content-length) as the httpx error every layer above knows how to retry."""
    try:
        yield
    except Exception as e:
        if type(e).__module__.split(".")[0] != "h2":
            raise
        raise httpx.RemoteProtocolError(f"HTTP/2: {type(e).__name__}: {e}") from e


def _bound(timeout: dict[str, float | None], *phases: str) -> float | None:
    """The longest a caller waits for the loop: its timeouts for ``phases``, plus GRACE."""
    seconds = [timeout.get(phase) for phase in phases]
    return None if None in seconds else sum(s or 0.0 for s in seconds) + GRACE


def _sync_trace(callback: Trace) -> Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]]:
    """A sync caller's ``trace`` extension, in the async form httpcore calls on the loop."""

    async def trace(name: str, info: dict[str, Any]) -> None:
        callback(name, info)

    return trace


class H2Transport(httpx.BaseTransport):
    """HTTP/2 over TLS (HTTP/1.1 when the server offers no h2) for bodiless requests.

    Safe to share between threads. Requests with a body are refused: they belong on
    HTTP/1.1 (see :class:`~occystrap_core.transport.base.ProxyRouter`).
    """

    def __init__(self, *, verify: ssl.SSLContext, proxy: str | None,
                 limits: httpx.Limits) -> None:
        self._pid = os.getpid()
        self._loop = asyncio.new_event_loop()
        self._transport = httpx.AsyncHTTPTransport(verify=verify, http2=True, proxy=proxy,
                                                   limits=limits)
        self._background: set[asyncio.Task[None]] = set()  # loop thread only
        thread = threading.Thread(target=_serve, args=(self._loop,), name="occystrap-http2",
                                  daemon=True)
        thread.start()
        # One way down, whichever comes first: close(), garbage collection, interpreter exit.
        self._shutdown = weakref.finalize(self, _shutdown, self._loop, thread, self._transport,
                                          self._pid)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if has_body(request):
            raise ValueError(f"{request.method} {request.url}: H2Transport sends no bodies")
        timeout = request.extensions.get("timeout", {})
        extensions = dict(request.extensions)
        if "trace" in extensions:
            extensions["trace"] = _sync_trace(extensions["trace"])
        forwarded = httpx.Request(request.method, request.url, headers=request.headers,
                                  stream=_EMPTY, extensions=extensions)
        body = _Body(self, _bound(timeout, "read"))
        try:
            with _h2_errors():
                answer = self.call(lambda: self._send(forwarded, body),
                                   _bound(timeout, "pool", "connect", "write", "read"))
        except BaseException:
            body.abandon()
            raise
        return httpx.Response(answer.status_code, headers=answer.headers, stream=body,
                              extensions=answer.extensions)

    async def _send(self, request: httpx.Request, body: _Body) -> httpx.Response:
        answer = await self._transport.handle_async_request(request)
        assert isinstance(answer.stream, httpx.AsyncByteStream)
        await body.start(answer.stream)
        return answer

    def call(self, make: Callable[[], Coroutine[Any, Any, T]], bound: float | None) -> T:
        """Runs ``make()`` as a task on the loop and waits at most ``bound`` seconds for it.

        A caller that stops waiting, for an exception (Ctrl-C) or past the bound, cancels
        the task, whether or not it has started.
        """
        if os.getpid() != self._pid:
            raise RuntimeError("an HTTP/2 transport cannot be used in a forked child")
        if self.is_closed:
            raise RuntimeError("the HTTP/2 transport is closed")
        handoff: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:  # from before the task exists: no interruption can leave it running unseen
            self._loop.call_soon_threadsafe(_start, self._loop, make, handoff)
            if not concurrent.futures.wait([handoff], bound).done:
                raise httpx.ReadTimeout(f"no answer on the HTTP/2 connection in {bound:.0f} s")
        except BaseException:
            handoff.cancel()
            raise
        return handoff.result()

    def soon(self, callback: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Runs ``callback()`` as a task on the loop without waiting for it (any thread)."""

        def start() -> None:
            task = self._loop.create_task(callback())
            self._background.add(task)  # a task nobody refers to may be collected mid-way
            task.add_done_callback(self._background.discard)

        if not self.is_closed and os.getpid() == self._pid:
            self._loop.call_soon_threadsafe(start)

    @property
    def is_closed(self) -> bool:
        return not self._shutdown.alive

    def close(self) -> None:
        self._shutdown()


class _Body(httpx.SyncByteStream):
    """An HTTP/2 answer's body for a sync caller. A task on the loop reads it as it arrives
    into a queue the caller takes chunks from, so a chunk costs no trip to the loop. Read
    ahead, an answer costs no more memory than read: this transport carries documents, which
    the retry layer reads whole at once (bulk downloads go over HTTP/1.1).
    """

    def __init__(self, owner: H2Transport, bound: float | None) -> None:
        self._owner = owner
        self._bound = bound
        self._chunks: queue.SimpleQueue[bytes | Exception | None] = queue.SimpleQueue()
        self._reader: asyncio.Task[None] | None = None  # loop thread only
        self._left = False  # loop thread only: the caller closed the body, or never got it
        self._done = False  # the caller's thread only: the end, or an error, was taken

    async def start(self, stream: httpx.AsyncByteStream) -> None:
        if self._left:
            await stream.aclose()
        else:
            self._reader = asyncio.get_running_loop().create_task(self._read(stream))

    async def _read(self, stream: httpx.AsyncByteStream) -> None:
        try:
            async for chunk in stream:
                self._chunks.put(chunk)
            self._chunks.put(None)
        except Exception as e:  # noqa: BLE001 - raised by the reading thread
            self._chunks.put(e)
        except asyncio.CancelledError:  # the caller left, or the transport is closing
            self._chunks.put(httpx.ReadError("the HTTP/2 answer was closed"))
            raise
        finally:
            await asyncio.shield(stream.aclose())

    def __iter__(self) -> Iterator[bytes]:
        while not self._done:
            with _h2_errors():
                chunk = self._take()
            if chunk is None:
                return
            yield chunk

    def _take(self) -> bytes | None:
        try:
            item = self._chunks.get(timeout=self._bound)
        except queue.Empty:
            raise httpx.ReadTimeout(f"no data on the HTTP/2 connection in {self._bound:.0f} s") \
                from None
        if isinstance(item, bytes):
            return item
        self._done = True
        if item is not None:
            raise item
        return None

    def close(self) -> None:
        if not self._done and not self._owner.is_closed:
            self._owner.call(self._stop, GRACE)

    def abandon(self) -> None:
        """The caller left without the answer: close it on the loop, whenever it comes."""
        self._owner.soon(self._stop)

    async def _stop(self) -> None:
        self._left = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])


def _start(loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, T]],
           handoff: concurrent.futures.Future[T]) -> None:
    """On the loop: runs ``make()`` for a caller waiting on ``handoff``, unless it left."""
    if handoff.cancelled():
        return
    task = loop.create_task(make())

    def caller_left(done: concurrent.futures.Future[T]) -> None:
        if done.cancelled() and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    def finished(task: asyncio.Task[T]) -> None:
        error = None if task.cancelled() else task.exception()  # retrieved, hence not logged
        if not handoff.set_running_or_notify_cancel():
            return  # the caller left: nobody takes the result
        if task.cancelled():  # by the transport closing
            handoff.set_exception(httpx.ReadError("the HTTP/2 transport was closed"))
        elif error is not None:
            handoff.set_exception(error)
        else:
            handoff.set_result(task.result())

    handoff.add_done_callback(caller_left)
    task.add_done_callback(finished)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


async def _close(transport: httpx.AsyncHTTPTransport) -> None:
    try:
        await transport.aclose()  # every connection: requests still running fail
    finally:
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread,
              transport: httpx.AsyncHTTPTransport, pid: int) -> None:
    """Closes the connections on the loop, then stops it and its thread."""
    if os.getpid() != pid or not thread.is_alive():
        return  # a forked child (the loop and its sockets are the parent's), or a dead loop
    closing = asyncio.run_coroutine_threadsafe(_close(transport), loop)
    closing.add_done_callback(lambda _: loop.call_soon_threadsafe(loop.stop))
    if threading.current_thread() is thread:
        return  # collected by a task of its own loop, which cannot wait for itself
    try:
        if concurrent.futures.wait([closing], GRACE).done:
            closing.result()  # an error closing the connections is the caller's to see
    finally:
        closing.cancel()  # a wedged loop: stop it anyway, and let the daemon thread be
        thread.join(GRACE)
