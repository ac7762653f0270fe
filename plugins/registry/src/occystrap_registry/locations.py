"""Which repositories of which registry hold which blobs, as far as this run knows.

One map per run (``ctx.shared``), so that copying several images in one run moves a
shared blob once per destination registry: pulls record the source repository of
each blob, uploads and mounts record the destination. An output that needs a blob
its registry holds in another repository mounts it instead of uploading it, and two
uploads of one blob to one registry never run at once: the second waits for the
first, then mounts. So each blob is uploaded once per registry, by the first image
to need it; the others, knowing where it is (or will be), mount it without asking
first whether their repository has it.
"""

from __future__ import annotations

import threading
from typing import Iterable

from occystrap_core.keyedlocks import KeyedLocks

KEY = "registry.blob_locations"

Key = tuple[str, str]  # (registry, digest)


class BlobLocations:
    """Thread-safe; registries are :func:`~occystrap_core.oci.reference.registry_key`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repositories: dict[Key, list[str]] = {}  # oldest first
        self._uploading: dict[Key, threading.Event] = {}

    def add(self, registry: str, repository: str, digests: Iterable[str | None]) -> None:
        with self._lock:
            for digest in digests:
                if digest:
                    known = self._repositories.setdefault((registry, digest), [])
                    if repository not in known:
                        known.append(repository)

    def holds(self, registry: str, repository: str, digest: str) -> bool:
        with self._lock:
            return repository in self._repositories.get((registry, digest), ())

    def repositories(self, registry: str, digest: str, exclude: str) -> list[str]:
        with self._lock:
            return [r for r in self._repositories.get((registry, digest), ()) if r != exclude]

    def known(self, registry: str, digest: str, exclude: str) -> bool:
        """Does a repository other than ``exclude`` hold ``digest``, or is an upload of
        it under way (after which one will)?"""
        with self._lock:
            key = (registry, digest)
            return key in self._uploading or any(
                r != exclude for r in self._repositories.get(key, ()))

    def claim(self, registry: str, digest: str) -> threading.Event | None:
        """None: the caller may upload ``digest`` and must :meth:`release` it after.
        Otherwise an upload is under way; the event is set when it ends."""
        with self._lock:
            running = self._uploading.get((registry, digest))
            if running is None:
                self._uploading[(registry, digest)] = threading.Event()
            return running

    def release(self, registry: str, digest: str) -> None:
        with self._lock:
            event = self._uploading.pop((registry, digest), None)
        if event is not None:
            event.set()


LOCKS_KEY = "registry.manifest_locks"


class ManifestLocks(KeyedLocks[tuple[str, str, str]]):
    """Keyed by (registry, repository, manifest digest or tag).

    CNCF distribution's filesystem storage rewrites a link file in place (truncate,
    then write) each time a manifest is pushed: a second push of one manifest under
    another tag, or a read of it meanwhile, can find the link empty and fail with
    DIGEST_INVALID. Tags of one image copied at once do exactly that, so requests
    that write or read one manifest of one repository go one at a time; and a
    referrers fallback tag, read then rewritten, is updated by one image at a time."""


HEADS_KEY = "registry.manifest_heads"


class ManifestHeads:
    """What a lister's HEAD just found a destination tag pointing at (None: no such
    tag), kept for the copy that follows in the same run, so that the output does not
    ask again; each answer is used once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], str | None] = {}

    def put(self, host: str, repository: str, tag: str, digest: str | None) -> None:
        with self._lock:
            self._seen[(host, repository, tag)] = digest

    def take(self, host: str, repository: str, tag: str) -> tuple[bool, str | None]:
        """(known, digest): known is False when no HEAD was recorded."""
        with self._lock:
            if (host, repository, tag) not in self._seen:
                return False, None
            return True, self._seen.pop((host, repository, tag))
