"""Make httpcore's HTTP/2 connections safe to share between threads.

httpcore 1.0 multiplexes the requests of several threads over one HTTP/2
connection but only locks socket reads and writes: the shared
``h2.connection.H2Connection`` state machine (streams, flow control, HPACK
tables) is changed by sending and receiving threads at once and gets corrupted
(``KeyError`` on stream ids, "deque mutated during iteration"; encode/httpx#3566,
python-hyper/hpack#275), and two threads can take the same new stream id. Every
h2 call is a pure state change without I/O, so guarding each one with a
per-connection lock fixes it without risking deadlock. The TLS socket itself is
also read and written from two threads at once; :class:`_SerialStream` stops that.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpcore
from httpcore._sync import http2 as _http2


class _LockedState:
    """Forwards to an ``H2Connection``, holding a lock for every method call.

    Opening a stream is two calls, ``get_next_available_stream_id`` then
    ``send_headers``: two threads in between would open the same id, or open ids
    out of order (both protocol errors). ``_opening`` is held from the first call
    to the end of the second, so streams open one at a time, in order.
    """

    def __init__(self, state: Any):
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_lock", threading.RLock())
        object.__setattr__(self, "_opening", threading.Lock())

    def get_next_available_stream_id(self) -> int:
        self._opening.acquire()
        try:
            with self._lock:
                return self._state.get_next_available_stream_id()
        except BaseException:
            self._opening.release()
            raise

    def send_headers(self, *args: Any, **kwargs: Any) -> None:
        try:
            with self._lock:
                self._state.send_headers(*args, **kwargs)
        finally:
            self._opening.release()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._state, name)
        if not callable(value):
            return value
        lock = self._lock

        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return value(*args, **kwargs)

        return locked

    def __setattr__(self, name: str, value: Any) -> None:
        with self._lock:
            setattr(self._state, name, value)


class _SerialStream:
    """One TLS socket, never read and written by two threads at once.

    httpcore reads (under its read lock) while other threads write (under its write
    lock): on a TLS socket that is concurrent use of one OpenSSL connection, which
    OpenSSL does not allow; now and then a record is mangled and the server drops the
    connection ("Server disconnected"). Reads therefore take the lock too, but only
    for short polls, so a writer (say, a WINDOW_UPDATE the server waits for before it
    sends more) is never held up for long.
    """

    POLL = 0.01  # seconds a read holds the socket before letting writers in

    def __init__(self, stream: Any):
        self._stream = stream
        self._lock = threading.Lock()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.POLL if deadline is None else \
                max(min(self.POLL, deadline - time.monotonic()), 0.001)
            with self._lock:
                try:
                    return self._stream.read(max_bytes, wait)
                except httpcore.ReadTimeout:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:  # httpcore "flushes" after every frame it reads, mostly nothing:
            return      # waiting for the socket behind a polling reader would stall it
        with self._lock:
            self._stream.write(buffer, timeout)

    def __getattr__(self, name: str) -> Any:  # close, get_extra_info, start_tls
        return getattr(self._stream, name)


class _ThreadSafeHTTP2Connection(_http2.HTTP2Connection):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._h2_state = _LockedState(self._h2_state)
        self._network_stream = _SerialStream(self._network_stream)


def install() -> None:
    """Make every HTTP/2 connection httpcore opens from now on thread-safe (idempotent).

    httpcore imports ``HTTP2Connection`` from this module at connect time, so
    replacing the module attribute reaches every pool.
    """
    if _http2.HTTP2Connection is not _ThreadSafeHTTP2Connection:
        _http2.HTTP2Connection = _ThreadSafeHTTP2Connection  # type: ignore[misc]
