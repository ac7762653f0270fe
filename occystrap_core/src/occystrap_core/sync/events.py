"""The sync's machine-readable account: one JSON object a line (``--events FILE|-``).

Every line has ``event`` and ``time`` (Unix seconds); values pass the redaction.
Events (docs/sync.md has the fields): ``image`` (``state`` started, skipped,
copied, failed, would-copy), ``delete`` (``state`` deleted, failed, would-delete),
``blob`` (``action`` transferred, mounted ``from`` a repository, present, or cached),
``retry``, ``rate_limit_wait``, ``rate_limited`` and ``concurrency`` (with ``host``).
Blob events come from the run's progress, the others from its counters, so they
carry no image: images overlap with ``-J``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..context import Stats
from ..progress import Progress
from ..redact import redact_text

if TYPE_CHECKING:
    from ..api import Layer


class Events:
    """Writes events to a stream (None: nowhere); thread-safe."""

    def __init__(self, stream: IO[str] | None, clock: Callable[[], float] = time.time):
        self.stream = stream
        self.clock = clock
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether events go anywhere: callers skip building them when not."""
        return self.stream is not None

    def emit(self, event: str, **fields: Any) -> None:
        if self.stream is None:
            return
        # Each value is redacted, not the line: a rule matching across the JSON escapes
        # (``?token=...\"``) would eat a backslash and end the string early.
        line = json.dumps({"event": event, "time": round(self.clock(), 3),
                           **{k: _redacted(v) for k, v in fields.items()}})
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


class EventProgress(Progress):
    """The run's progress, plus a ``blob`` event per layer delivered or present."""

    def __init__(self, inner: Progress, events: Events):
        self.inner = inner
        self.events = events

    @contextlib.contextmanager
    def image(self, layers: Sequence[Layer]) -> Iterator[None]:
        with self.inner.image(layers):
            yield

    @contextlib.contextmanager
    def layer(self, layer: Layer) -> Iterator[Callable[[int], None]]:
        with self.inner.layer(layer) as advance:
            yield advance
        self.events.emit("blob", action="transferred", digest=layer.digest, size=layer.size)

    def skipped(self, layer: Layer) -> None:
        self.inner.skipped(layer)
        self.events.emit("blob", action="present", digest=layer.digest, size=layer.size)

    def mounted(self, layer: Layer, source: str | None) -> None:
        self.inner.mounted(layer, source)
        self.events.emit("blob", action="mounted", digest=layer.digest, size=layer.size,
                         **({"from": source} if source else {}))

    def cached(self, layer: Layer) -> None:
        self.inner.cached(layer)
        self.events.emit("blob", action="cached", digest=layer.digest, size=layer.size)

    def write(self, line: str) -> None:
        self.inner.write(line)


class EventStats(Stats):
    """The run's counters, plus an event for each retry, rate-limit wait, 429 and
    concurrency limit raised again, with its details (the host...)."""

    NAMED = {"retries": "retry", "rate_limit_waits": "rate_limit_wait",
             "rate_limited": "rate_limited", "limit_raised": "concurrency"}

    def __init__(self, events: Events):
        super().__init__()
        self.events = events

    def add(self, name: str, n: int = 1, **detail: Any) -> None:
        super().add(name, n)
        if name in self.NAMED:
            self.events.emit(self.NAMED[name], **detail)
