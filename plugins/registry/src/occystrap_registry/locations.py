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
from collections import OrderedDict
from typing import TYPE_CHECKING, Iterable

from occystrap_core.keyedlocks import KeyedLocks
from occystrap_core.transport.clock import Clock, get_clock

if TYPE_CHECKING:
    from occystrap_core.context import Context

KEY = "registry.blob_locations"

Key = tuple[str, str]  # (registry, digest)

# How long "this repository holds that blob" is believed without asking. A run is
# minutes, but a proxy's context lasts for days, in which a registry's garbage
# collection may remove what was there: an older fact costs one request to check.
TRUSTED_FOR = 600.0
# How long it is kept as a place to mount the blob from, which the registry checks:
# a long sync still mounts what its first images uploaded; a proxy forgets, in time,
# the blobs it no longer sees.
KEPT_FOR = 86400.0


def blob_locations(ctx: Context) -> BlobLocations:
    """The run's map."""
    locations: BlobLocations = ctx.shared(KEY, lambda: BlobLocations(get_clock(ctx)))
    return locations


class BlobLocations:
    """Thread-safe; registries are :func:`~occystrap_core.oci.reference.registry_key`.
    A repository seen holding a blob is trusted to hold it for ``trusted_for`` seconds
    (:meth:`holds`), and offered to mount it from for ``kept_for`` (:meth:`known`,
    :meth:`repositories`); then it is forgotten, so the map holds only the blobs of
    recent copies, however long the process lives."""

    def __init__(self, clock: Clock | None = None, trusted_for: float = TRUSTED_FOR,
                 kept_for: float = KEPT_FOR) -> None:
        self._clock = clock or Clock()
        self._trusted_for = trusted_for
        self._kept_for = kept_for
        self._lock = threading.Lock()
        # repository -> when it was last seen holding the blob, oldest first; the keys
        # in the order they were last learnt of, so the stale ones are at the front
        self._repositories: OrderedDict[Key, dict[str, float]] = OrderedDict()
        self._uploading: dict[Key, threading.Event] = {}

    def add(self, registry: str, repository: str, digests: Iterable[str | None]) -> None:
        with self._lock:
            now = self._clock.monotonic()
            for digest in digests:
                if digest:
                    known = self._repositories.pop((registry, digest), {})
                    known.pop(repository, None)
                    known[repository] = now
                    self._repositories[(registry, digest)] = known
            self._expire(now)

    def forget(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        """``repository`` may no longer hold ``digests``: ask before relying on it again."""
        with self._lock:
            for digest in digests:
                known = self._repositories.get((registry, digest))
                if known is not None:
                    known.pop(repository, None)

    def holds(self, registry: str, repository: str, digest: str) -> bool:
        return repository in self._seen(registry, digest, self._trusted_for)

    def repositories(self, registry: str, digest: str, exclude: str) -> list[str]:
        return [r for r in self._seen(registry, digest, self._kept_for) if r != exclude]

    def known(self, registry: str, digest: str, exclude: str) -> bool:
        """Does a repository other than ``exclude`` hold ``digest``, or is an upload of
        it under way (after which one will)?"""
        with self._lock:
            if (registry, digest) in self._uploading:
                return True
        return any(r != exclude for r in self._seen(registry, digest, self._kept_for))

    def _seen(self, registry: str, digest: str, within: float) -> list[str]:
        """The repositories seen holding ``digest`` in the last ``within`` seconds,
        oldest first."""
        with self._lock:
            since = self._clock.monotonic() - within
            known = self._repositories.get((registry, digest), {})
            return [r for r, seen in known.items() if seen > since]

    def _expire(self, now: float) -> None:
        since = now - self._kept_for
        while self._repositories:
            key, known = next(iter(self._repositories.items()))
            if known and max(known.values()) > since:
                break
            del self._repositories[key]

    def __len__(self) -> int:
        """Blobs remembered."""
        with self._lock:
            return len(self._repositories)

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
