"""Parallel work that stops promptly: on the first failure, and on Ctrl-C or SIGTERM.

Work items run on daemon threads and read a :class:`CancelToken` at every chunk
(``LayerData`` does it for layer streams). On a failure the other items stop at
their next chunk and queued ones never start; the caller then cleans up. On an
interrupt the caller waits a moment (:data:`GRACE`) for running items to notice,
then goes on with its cleanup without them: a thread blocked in a network read
cannot be stopped, and being a daemon it cannot hold the process up either.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Sequence, TypeVar

from .errors import OccystrapError

T = TypeVar("T")
R = TypeVar("R")

GRACE = 2.0  # seconds running work gets to stop after an interrupt


class Cancelled(Exception):
    """Raised by work that noticed its token was cancelled."""


class CancelToken:
    """A flag for a run or a part of it; a child is cancelled with its parent."""

    def __init__(self, parent: CancelToken | None = None):
        self._event = threading.Event()
        self._parent = parent

    def child(self) -> CancelToken:
        return CancelToken(self)

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set() or (self._parent is not None and self._parent.is_set())

    def check(self) -> None:
        if self.is_set():
            raise Cancelled("cancelled")


def parallel(work: Callable[[T], R], items: Sequence[T], workers: int, own: CancelToken,
             name: str = "worker", width: Callable[[], int] | None = None) -> list[R]:
    """``work(item)`` for every item, ``workers`` at once; results in ``items`` order.

    The first exception sets ``own`` (the work reads it, and stops) and is raised
    once every running item has stopped: an expected :class:`OccystrapError` rather
    than a knock-on failure of another item. ``own`` set from outside (or its
    parent) stops the work the same way. Give each batch a fresh child token.

    ``width()``, when given, says how many workers are wanted now (at most
    ``workers``; as many start): each worker, after an item, stops when more are
    running, or starts another when fewer are. Threads that are not wanted
    do not exist, rather than wait: waking a waiting thread costs more than its item
    on a fast link.
    """
    results: list[Any] = [None] * len(items)  # every one filled, unless this raises
    if workers <= 1 or len(items) <= 1:
        for i, item in enumerate(items):
            own.check()
            results[i] = work(item)
        return results
    pending: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(items)):
        pending.put(i)
    errors: list[BaseException] = []
    lock = threading.Lock()
    done = threading.Event()
    wanted = (lambda: max(1, min(workers, width()))) if width is not None else None
    running = min(workers if wanted is None else wanted(), len(items))
    started = running

    def resize() -> bool:
        """After an item: whether this worker goes on (it stops when more run than
        are wanted, and starts another when fewer do)."""
        nonlocal running, started
        assert wanted is not None
        want = wanted()
        with lock:
            if running > want:
                running -= 1
                return False
            if running >= want or pending.empty():
                return True
            running += 1
            n, started = started, started + 1
        try:
            threading.Thread(target=worker, name=f"{name}-{n}", daemon=True).start()
        except BaseException:
            with lock:
                running -= 1
            raise
        return True

    def worker() -> None:
        nonlocal running
        counted = True  # in ``running``
        try:
            while not own.is_set():
                try:
                    i = pending.get_nowait()
                except queue.Empty:
                    break
                try:
                    results[i] = work(items[i])
                except BaseException as e:  # noqa: BLE001 - handed to the caller below
                    with lock:
                        errors.append(e)
                    own.set()
                if wanted is not None and not resize():
                    counted = False  # resize() counted it out
                    break
        finally:
            with lock:
                running -= counted
                if not running:
                    done.set()

    for n in range(running):
        threading.Thread(target=worker, name=f"{name}-{n}", daemon=True).start()
    try:
        done.wait()
    except BaseException:
        own.set()  # an interrupt: queued items never start
        done.wait(GRACE)
        raise
    if errors:
        errors.sort(key=lambda e: (isinstance(e, Cancelled), not isinstance(e, OccystrapError)))
        raise errors[0]
    own.check()  # cancelled from outside while the last items finished
    return results
