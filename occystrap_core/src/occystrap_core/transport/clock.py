"""The time source of the transport layers, swappable per run so tests never sleep."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..context import Context

CLOCK_KEY = "occystrap.transport.clock"


class Clock:
    """Monotonic time for waiting, wall time for ``Retry-After`` dates, and sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


def get_clock(ctx: Context) -> Clock:
    """The run's clock; a test puts its own in first with ``ctx.shared(CLOCK_KEY, ...)``."""
    return ctx.shared(CLOCK_KEY, Clock)
