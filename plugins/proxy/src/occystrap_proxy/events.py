"""The proxy's JSON-lines log: one object per request and per event, secrets redacted."""

from __future__ import annotations

import json
import threading
import time
from typing import IO, Any

from occystrap_core import redact


class EventLog:
    """Writes ``{"time": ..., "event": ..., ...}`` lines to ``stream``, one per call,
    whole lines even from many threads."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event,
                  **{k: _redacted(v) for k, v in fields.items()}}
        line = json.dumps(record, default=str) + "\n"
        with self._lock:
            self.stream.write(line)
            self.stream.flush()


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact.redact_text(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
