"""Temporary files and directories that a later run can tell from live ones.

Every temporary file or directory an output writes beside its destination is
held under an exclusive ``flock`` for as long as its writer lives. The kernel
drops the lock when the process ends, however it ends (SIGKILL included), so
:func:`sweep` can remove what a dead run left behind without ever touching what
a running one is still writing. A temporary directory is marked as ours with a
``.occystrap-tmp`` file, created only once its lock is held, so that a sweep
never removes a directory that merely shares a name pattern.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile

log = logging.getLogger("occystrap.tempfiles")

MARKER = ".occystrap-tmp"


def try_lock(fd: int) -> bool:
    """Take ``fd``'s exclusive flock without waiting; False when another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def mkstemp(directory: str, prefix: str, suffix: str = "") -> tuple[int, str]:
    """Like :func:`tempfile.mkstemp`, the file locked until its descriptor is closed
    (close it after renaming the file into place, not before)."""
    while True:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A sweep may have taken the lock first, between creation and flock, and removed
        # the file: make another one then.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd, path
        except FileNotFoundError:
            pass
        os.close(fd)


class AtomicFile:
    """A locked temporary file in ``directory`` that becomes a final file only by
    :meth:`commit`; leaving the ``with`` block without committing removes it."""

    def __init__(self, directory: str, prefix: str = ".tmp-", suffix: str = ""):
        fd, self.path = mkstemp(directory, prefix, suffix)
        self.file = os.fdopen(fd, "wb")
        self.committed = False

    def commit(self, final: str, mode: int = 0o644) -> None:
        """Rename into place (still locked, so no sweep can take it half-way)."""
        self.file.flush()
        os.chmod(self.path, mode)
        os.replace(self.path, final)
        self.committed = True
        self.file.close()

    def discard(self) -> None:
        try:
            if not self.committed:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            self.file.close()

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it."""
    with AtomicFile(os.path.dirname(path) or ".") as temp:
        temp.file.write(data)
        temp.commit(path, mode)


class TempDir:
    """A temporary directory, locked while this object lives (see :meth:`remove`).

    It holds the marker file, so build what is to be renamed into place in a
    subdirectory of it, never in it directly."""

    def __init__(self, directory: str | None, prefix: str):
        self.path = tempfile.mkdtemp(prefix=prefix, dir=directory)
        self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        with open(os.path.join(self.path, MARKER), "w"):
            pass  # only now: a sweep seeing the marker finds the lock taken

    def release(self) -> None:
        """Unlock (the directory stays; it was renamed into place, or handed over)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.release()


def sweep(directory: str, prefix: str, suffix: str = "") -> int:
    """Remove the temporary files and marked directories named ``prefix*suffix`` in
    ``directory`` that no live process holds; returns how many went."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    removed = 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        path = os.path.join(directory, name)
        try:
            is_dir = os.path.isdir(path) and not os.path.islink(path)
            if is_dir and not os.path.isfile(os.path.join(path, MARKER)):
                continue  # not one of ours
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
                         | (os.O_DIRECTORY if is_dir else 0))
        except OSError:
            continue
        try:
            if not try_lock(fd):
                continue  # a live run is writing it
            if is_dir:
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            removed += 1
        except OSError as e:
            log.debug("could not remove the stale %s: %s", path, e)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d temporary entries a stopped run left in %s", removed, directory)
    return removed


def cache_dir(*parts: str) -> str | None:
    """``$XDG_CACHE_HOME/occystrap/PARTS`` (default ``~/.cache``), made if missing;
    None when it cannot be made (a read-only home): callers then do without."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "occystrap", *parts)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        log.debug("no cache directory %s: %s", path, e)
        return None
    return path


def state_dir(env: str, layer_cache: str | None, name: str) -> str | None:
    """Where runs keep ``name`` state for later runs: ``$ENV``, else ``NAME`` in the
    layer cache directory, else :func:`cache_dir` ``(NAME)``; made if missing. None
    when it cannot be made (a directory named by the user warns: callers do without)."""
    path = os.environ.get(env) or (os.path.join(layer_cache, name) if layer_cache else None)
    if path is None:
        return cache_dir(name)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        log.warning("%s cannot be kept in %s: %s", name, path, e)
        return None
    return path
