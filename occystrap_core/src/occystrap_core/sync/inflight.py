"""How many images of a sync are in their checks (HEADs) at once: as many as the link
needs, and no more than the CPUs can serve.

A warm sync is HEADs. Over a slow link each one mostly waits for its answer, and the
more are in flight the sooner the run ends (up to ``LOOKUPS_PER_COPY`` x ``-J``). On a
fast link (a registry on the same machine or LAN) each one is CPU work in httpx, and
threads beyond a few only contend for the interpreter lock and the connection pool:
on 2 CPUs, 32 threads spent a third more CPU per HEAD than 8.

So the sync runs its images on ``limit`` threads plus one per image copying
(:func:`~occystrap_core.workers.parallel`'s ``width``), and the limit follows the
answers, as TCP Vegas does, timing each check per HEAD it made: ``best`` is the
quickest seen (what a HEAD costs without queueing); a check at most :data:`SLOW` times
that says the CPUs had room, and raises the limit by one per HEAD (doubling it every
round trip, up to the cap); one slower than twice that again says the HEADs queue for
the CPUs (or the registry), and lowers it by one, down to :data:`FLOOR`, where it also
starts (in between, the limit stays: each change starts or ends a thread). 8 cost as
little CPU per HEAD as 4 on 2 CPUs, and keep a slow link busy enough even when its
jitter makes HEADs look slow.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from ..transport.clock import Clock

SLOW = 2.0  # a HEAD slower than this many times the quickest means the HEADs queue
FLOOR = 8


class Slot:
    """One image's check: the HEADs it made (:meth:`InFlight.timing` times them)."""

    def __init__(self) -> None:
        self.heads = 0


class InFlight:
    """How many image checks to have in flight: ``limit``, between ``floor`` and ``cap``."""

    def __init__(self, cap: int, clock: Clock, floor: int = FLOOR):
        self.cap = max(cap, 1)
        self.floor = min(max(floor, 1), self.cap)
        self.limit = self.floor
        self.clock = clock
        self.best = float("inf")  # seconds of the quickest HEAD so far
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def timing(self) -> Iterator[Slot]:
        """Time one image's check; per HEAD counted in the :class:`Slot`, it adjusts
        the limit (module doc). A check that fails says nothing of the link."""
        slot = Slot()
        started = self.clock.monotonic()
        yield slot
        if slot.heads:
            self._adjust((self.clock.monotonic() - started) / slot.heads, slot.heads)

    def _adjust(self, took: float, heads: int) -> None:
        with self._lock:
            self.best = min(self.best, took)
            if took <= self.best * SLOW:
                self.limit = min(self.cap, self.limit + heads)
            elif took > self.best * SLOW * 2:  # in between: no change, no thread churn
                self.limit = max(self.floor, self.limit - 1)
