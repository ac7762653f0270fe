"""How many images of a sync are in their checks (HEADs) at once: as many as the link
needs, and no more than the CPUs can serve.

A warm sync is HEADs. Over a slow link each one mostly waits for its answer, and the
more are in flight the sooner the run ends (``LOOKUPS_PER_COPY`` x ``-J`` threads ask).
On a fast link (a registry on the same machine or LAN) each one is CPU work in
httpx, and threads beyond a few only contend for the interpreter lock and the
connection pool: on 2 CPUs, 32 threads spent a third more CPU per HEAD than 8.

So the limit follows the answers, as TCP Vegas does, timing each check per HEAD it
made: ``best`` is the quickest seen (what a HEAD costs without queueing); a check at
most :data:`SLOW` times that says the CPUs had room, and raises the limit by one
(doubling it every round trip, up to the cap); a slower one says the HEADs queue for
the CPUs (or the registry), and lowers it by one, down to :data:`FLOOR`, where it also
starts: 8 cost as little CPU per HEAD as 4 on 2 CPUs, and keep a slow link busy enough
even when its jitter makes HEADs look slow.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..transport.clock import Clock

SLOW = 2.0  # a HEAD slower than this many times the quickest means the HEADs queue
FLOOR = 8


class Slot:
    """One image's turn: the HEADs it made (:meth:`InFlight.slot` times them)."""

    def __init__(self) -> None:
        self.heads = 0


class InFlight:
    """At most ``limit`` image checks at once, between ``floor`` and ``cap``."""

    def __init__(self, cap: int, clock: Clock, floor: int = FLOOR):
        self.cap = max(cap, 1)
        self.floor = min(max(floor, 1), self.cap)
        self.limit = self.floor
        self.clock = clock
        self.best = float("inf")  # seconds of the quickest HEAD so far
        self._running = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self) -> Iterator[Slot]:
        """Wait for a free slot; the time it is held, per HEAD counted in the
        :class:`Slot`, adjusts the limit (module doc)."""
        with self._cond:
            while self._running >= self.limit:
                self._cond.wait()
            self._running += 1
        slot = Slot()
        started = self.clock.monotonic()
        done = False
        try:
            yield slot
            done = True
        finally:
            took = self.clock.monotonic() - started
            with self._cond:
                self._running -= 1
                if done and slot.heads:  # a failure says nothing of the link
                    self._adjust(took / slot.heads)
                # only as many as may start: waking every waiting thread is what this avoids
                self._cond.notify(self.limit - self._running)

    def _adjust(self, took: float) -> None:
        self.best = min(self.best, took)
        if took <= self.best * SLOW:
            self.limit = min(self.cap, self.limit + 1)
        else:
            self.limit = max(self.floor, self.limit - 1)
