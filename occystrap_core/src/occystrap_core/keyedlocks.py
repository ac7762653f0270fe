"""One lock per key, kept only while someone holds or waits for it.

A run serialises work on one thing among many (a manifest of a repository, a tag a
proxy pulls through) without a lock per thing for ever: a long-lived run, such as
the proxy, would otherwise keep one for everything it ever saw.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Generic, Hashable, Iterator, TypeVar

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    """Thread-safe: ``with locks.hold(key):`` runs one holder of ``key`` at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[K, tuple[threading.Lock, int]] = {}  # key -> (lock, users)

    @contextlib.contextmanager
    def hold(self, key: K) -> Iterator[None]:
        with self._lock:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                users = self._locks[key][1] - 1
                if users:
                    self._locks[key] = (lock, users)
                else:
                    del self._locks[key]

    def __len__(self) -> int:
        """How many keys are in use (held or waited for)."""
        with self._lock:
            return len(self._locks)
