"""What clients push to the proxy, on disk only as long as it is needed.

A blob upload is streamed to a file and hashed on the way; it becomes a blob only if
it matches its digest. Blobs are kept ``keep`` seconds after their last use, unless
an image being processed pins them, and swept after that: a busy proxy does not fill
its disk with every layer it ever saw (0.4.17 kept them all until it stopped).
Pushed manifests are remembered in a bounded map, so a client can read back what it
pushed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from occystrap_core import digest as digests
from occystrap_core.serving import Pushed, RegistryError, Upload, unknown_upload

MAX_MANIFESTS = 4096  # pushed manifests remembered for reading back


@dataclass
class _Blob:
    size: int
    used: float
    pins: int = 0
    # repositories a client pushed (or skipped, being told it is here) this blob to,
    # whose manifest has not come yet: kept while such a push goes on
    pending: set[str] = field(default_factory=set)


@dataclass
class _Open:
    """An upload in progress: where it goes and when a request last touched it."""

    upload: Upload
    repository: str
    used: float


class BlobStore:
    """Uploads, blobs and pushed manifests of a running proxy, under ``root``."""

    def __init__(self, root: str, keep: float, clock: Callable[[], float] = time.monotonic):
        self.keep = keep
        self._clock = clock
        self._blobs_dir = os.path.join(root, "blobs")
        self._uploads_dir = os.path.join(root, "uploads")
        os.makedirs(self._blobs_dir, exist_ok=True)
        os.makedirs(self._uploads_dir, exist_ok=True)
        self._lock = threading.Lock()
        self._uploads: dict[str, _Open] = {}
        self._blobs: dict[str, _Blob] = {}
        self._manifests: OrderedDict[tuple[str, str], Pushed] = OrderedDict()

    # --- uploads ---------------------------------------------------------------

    def new_upload(self, repository: str) -> str:
        uuid = secrets.token_hex(16)
        path = os.path.join(self._uploads_dir, uuid)
        open(path, "xb").close()
        with self._lock:
            self._uploads[uuid] = _Open(Upload(path), repository, self._clock())
        return uuid

    def upload(self, uuid: str) -> Upload:
        with self._lock:
            opened = self._uploads.get(uuid)
            if opened is None:
                raise unknown_upload()
            opened.used = self._clock()
        return opened.upload

    @contextlib.contextmanager
    def writing(self, uuid: str) -> Iterator[Upload]:
        """Upload ``uuid`` for one request to write to, one request at a time; it is
        not swept while written (a big layer can take longer than ``keep`` to come)
        and counts as used when the request ends."""
        upload = self.upload(uuid)
        if not upload.lock.acquire(blocking=False):
            raise RegistryError(416, "BLOB_UPLOAD_INVALID", "another request writes this upload")
        try:
            yield upload
        finally:
            with self._lock:
                if uuid in self._uploads:
                    self._uploads[uuid].used = self._clock()
            upload.lock.release()

    def _end(self, uuid: str) -> _Open | None:
        with self._lock:
            return self._uploads.pop(uuid, None)

    def cancel(self, uuid: str) -> None:
        opened = self._end(uuid)
        if opened is None:
            raise unknown_upload()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(opened.upload.path)

    def complete(self, uuid: str, digest: str) -> int:
        """Keep upload ``uuid`` as blob ``digest`` if it hashes to it; either way the
        upload ends. Returns the blob's size."""
        opened = self._end(uuid)
        if opened is None:  # completed by a concurrent request meanwhile
            raise unknown_upload()
        upload, repository = opened.upload, opened.repository
        with self._lock:  # not while a sweep removes an earlier copy of the blob
            upload.commit(digest, self.path)
            blob = self._blobs.get(digest)
            if blob is None:
                blob = self._blobs[digest] = _Blob(upload.size, self._clock())
            # else pushed again (two clients at once): an image may have it pinned
            blob.pending.add(repository)
            now = self._clock()
            for other in self._blobs.values():  # this push goes on: so do its blobs
                if repository in other.pending:
                    other.used = now
        return upload.size

    # --- blobs -----------------------------------------------------------------

    def path(self, digest: str) -> str:
        algorithm, _, hexpart = digests.validate(digest, "blob digest").partition(":")
        return os.path.join(self._blobs_dir, f"{algorithm}-{hexpart}")

    def size(self, digest: str, pushed_to: str | None = None) -> int | None:
        """The blob's size (and a use of it), None when the store lacks it.
        ``pushed_to``: a client pushing to that repository was told the blob is here
        (``HEAD``, a mount), so its manifest will name it."""
        with self._lock:
            blob = self._blobs.get(digest)
            if blob is None:
                return None
            blob.used = self._clock()
            if pushed_to is not None:
                blob.pending.add(pushed_to)
            return blob.size

    def settle(self, repository: str, wanted: Iterable[str]) -> None:
        """A manifest pushed to ``repository`` was handled: the blobs it names wait
        for it no longer, and go ``keep`` seconds after their last use."""
        with self._lock:
            for digest in wanted:
                blob = self._blobs.get(digest)
                if blob is not None:
                    blob.pending.discard(repository)

    @contextlib.contextmanager
    def pinned(self, wanted: Iterable[str]) -> Iterator[None]:
        """Keep the blobs among ``wanted`` that the store holds until the block ends."""
        with self._lock:
            held = [self._blobs[d] for d in set(wanted) if d in self._blobs]
            for blob in held:
                blob.pins += 1
        try:
            yield
        finally:
            now = self._clock()
            with self._lock:
                for blob in held:
                    blob.pins -= 1
                    blob.used = now

    def sweep(self) -> int:
        """Remove unpinned blobs and uploads idle for ``keep`` seconds; how many."""
        cutoff = self._clock() - self.keep
        with self._lock:
            uploads = [u for u, o in self._uploads.items()
                       if o.used < cutoff and not o.upload.lock.locked()]
            paths = [self._uploads.pop(u).upload.path for u in uploads]
            # a push whose uploads go on (one layer can outlast keep) keeps the blobs
            # it sent or skipped before, until its manifest comes
            pushing = {o.repository for o in self._uploads.values()}
            blobs = [d for d, b in self._blobs.items()
                     if not b.pins and b.used < cutoff and not b.pending & pushing]
            for digest in blobs:
                del self._blobs[digest]
            paths = [self.path(d) for d in blobs] + paths
            # Renamed away under the lock (cheap), so a blob completed again meanwhile
            # is not the file removed; removed after it (slow for a big file), so the
            # requests waiting for the lock do not wait for the disk.
            doomed = []
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, path + ".swept")
                    doomed.append(path + ".swept")
        for path in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return len(paths)

    # --- manifests -------------------------------------------------------------

    def remember(self, name: str, refs: Iterable[str], manifest: Pushed) -> None:
        with self._lock:
            for ref in refs:
                self._manifests[(name, ref)] = manifest
                self._manifests.move_to_end((name, ref))
            while len(self._manifests) > MAX_MANIFESTS:
                self._manifests.popitem(last=False)

    def manifest(self, name: str, ref: str) -> Pushed | None:
        with self._lock:
            return self._manifests.get((name, ref))
