"""Partial blob downloads kept across runs, so that a killed pull resumes.

A large blob fetched in parallel ranges is written at its offsets into
``DIR/<algorithm>-<hex>.partial``. Beside it, ``.partial.json`` records the chunk
size, which chunks are complete and how far the others got; it is rewritten each
time a chunk completes, only ever claiming bytes already written, so a kill -9 loses
only what the chunks in flight received since the last chunk completed. A run holds
the data file under ``flock`` while it writes it: two runs never write the same
partial, and a sweep never removes a live one.

Nothing here is trusted blindly: what a later run reads back from a partial goes,
with the rest of the blob, through the consumer's digest check (the kept bytes are
re-hashed from disk), and a blob read to its end loses its partial whether it
verified or not, so a bad partial costs one failed run, never a corrupt output.

DIR is ``$OCCYSTRAP_PARTIAL_DIR``, else ``partial`` in the ``--layer-cache``
directory, else ``$XDG_CACHE_HOME/occystrap/partial``. Completed partials are deleted
at once; partials left untouched for :data:`MAX_AGE` seconds are swept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from . import tempfiles

if TYPE_CHECKING:
    from .context import Context

log = logging.getLogger("occystrap.partials")

MAX_AGE = 86400.0
SUFFIX = ".partial"
_SIDECAR = ".json"
_swept: set[str] = set()  # directories this process swept already
_swept_lock = threading.Lock()


def directory(ctx: Context) -> str | None:
    """Where this run keeps partial downloads (made if missing, swept once per
    process); None when no such directory can be made."""
    path = tempfiles.state_dir("OCCYSTRAP_PARTIAL_DIR", ctx.layer_cache_dir, "partial")
    if path is None:
        return None
    with _swept_lock:
        first = path not in _swept
        _swept.add(path)
    if first:
        sweep(path)
    return path


def sweep(path: str, max_age: float = MAX_AGE, now: float | None = None) -> int:
    """Remove the partials in ``path`` untouched for ``max_age`` seconds that no live
    run holds, and what killed runs left of sidecar rewrites; returns how many went."""
    now = time.time() if now is None else now
    removed = tempfiles.sweep(path, ".tmp-")
    try:
        names = os.listdir(path)
    except OSError:
        return removed
    for name in names:
        data = os.path.join(path, name)
        if not name.endswith(SUFFIX):
            if name.endswith(SUFFIX + _SIDECAR) and not os.path.exists(data[:-len(_SIDECAR)]):
                with contextlib.suppress(OSError):
                    os.unlink(data)  # its data file is gone
            continue
        try:
            fd = os.open(data, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if now - os.fstat(fd).st_mtime < max_age or not tempfiles.try_lock(fd):
                continue
            _remove(data)
            removed += 1
        finally:
            os.close(fd)
    return removed


def _remove(data: str) -> None:
    for path in (data, data + _SIDECAR):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class Partial:
    """The file a blob is downloaded into, and which of its chunks are complete.

    ``fd`` is open for reading and writing at offsets (``os.pread``/``os.pwrite``).
    A kept partial (``path`` set) survives :meth:`close`; an anonymous one (another
    run holds the kept one, or there is nowhere to keep it) never outlives the run.
    """

    def __init__(self, fd: int, path: str | None, size: int, chunk: int, done: set[int],
                 filled: dict[int, int], where: str | None = None):
        self.fd, self.path, self.size, self.chunk = fd, path, size, chunk
        self.where = where or path  # named when a write fails (a write names no file)
        self.done = done
        self.filled = filled  # chunk not done -> bytes written from its start

    @classmethod
    def open(cls, where: str | None, digest: str, size: int, chunk: int,
             temp_dir: str) -> Partial:
        """The kept partial of ``digest`` in ``where`` (resumed when its record fits
        ``size``; its own chunk size is kept then), else an anonymous one in ``temp_dir``."""
        if where is not None:
            path = os.path.join(where, digest.replace(":", "-") + SUFFIX)
            try:
                fd = _open_locked(path)
            except OSError as e:
                log.warning("cannot keep a partial download in %s: %s", where, e)
                fd = None
            if fd is not None:
                chunk, done, filled = _resumable(path, fd, size, chunk)
                if not (done or filled):
                    os.ftruncate(fd, 0)  # whatever is there is not known to be right
                partial = cls(fd, path, size, chunk, done, filled)
                if partial.kept:
                    log.info("resuming %s from %d bytes kept by an earlier run", digest,
                             partial.kept)
                return partial
        fd, path = tempfiles.mkstemp(temp_dir, ".partial-")
        os.unlink(path)
        return cls(fd, None, size, chunk, set(), {}, where=temp_dir)

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk)

    @property
    def kept(self) -> int:
        """Bytes written, in complete chunks and the starts of the others."""
        return sum(self.span(i)[1] - self.span(i)[0] for i in self.done) + \
            sum(self.filled.values())

    def span(self, index: int) -> tuple[int, int]:
        """Chunk ``index``'s offsets: first byte, and one past its last."""
        return index * self.chunk, min(self.size, (index + 1) * self.chunk)

    def complete(self, index: int) -> None:
        """Note chunk ``index`` as written, with how far the others got (callers
        serialise the calls, and update ``filled`` only after writing)."""
        self.done.add(index)
        self.filled.pop(index, None)
        if self.path is not None:
            record = {"size": self.size, "chunk": self.chunk, "done": sorted(self.done),
                      "filled": {str(i): n for i, n in self.filled.items() if n}}
            try:
                tempfiles.write_atomic(self.path + _SIDECAR, json.dumps(record).encode(), 0o600)
            except OSError as e:
                log.debug("could not record the progress of %s: %s", self.path, e)

    def close(self, *, finished: bool) -> None:
        """Release the file; a kept partial is deleted when its download finished, or
        when no chunk was ever recorded (nothing a later run could resume)."""
        if self.path is not None and (finished or not self.done):
            _remove(self.path)
        os.close(self.fd)


def _open_locked(path: str) -> int | None:
    """``path`` opened read-write and locked; None when a live run holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        if not tempfiles.try_lock(fd):
            os.close(fd)
            return None
        try:  # a sweep may have removed it between open and lock: then open it again
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _resumable(path: str, fd: int, size: int,
               chunk: int) -> tuple[int, set[int], dict[int, int]]:
    """The chunk size, complete chunks and starts of chunks an earlier run recorded for
    ``path``, when they describe a blob of ``size`` bytes and all are in the file."""
    nothing: tuple[int, set[int], dict[int, int]] = (chunk, set(), {})
    try:
        with open(path + _SIDECAR, "rb") as f:
            record = json.load(f)
        kept_chunk, done = int(record["chunk"]), {int(i) for i in record["done"]}
        filled = {int(i): int(n) for i, n in record.get("filled", {}).items()}
        if int(record["size"]) != size or kept_chunk <= 0:
            return nothing
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return nothing
    length = os.fstat(fd).st_size
    count = -(-size // kept_chunk)

    def fits(index: int, end: int) -> bool:
        return 0 <= index < count and end <= min(length, size, (index + 1) * kept_chunk)

    if not all(fits(i, min(size, (i + 1) * kept_chunk)) for i in done) or not all(
            i not in done and 0 < n < min(size - i * kept_chunk, kept_chunk)
            and fits(i, i * kept_chunk + n) for i, n in filled.items()):
        return nothing
    return kept_chunk, done, filled

