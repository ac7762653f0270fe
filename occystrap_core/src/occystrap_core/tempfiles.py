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

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

log = logging.getLogger("occystrap.tempfiles")

MARKER = ".occystrap-tmp"


def try_lock(fd: int) -> bool:
    """Take ``fd``'s exclusive flock without waiting; False when another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


#: Why a directory refuses a new file whatever its name (a name too long is the name's).
_REFUSED_BY_DIRECTORY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                                   errno.EDQUOT})


def mkstemp(directory: str | None, prefix: str, suffix: str = "") -> tuple[int, str]:
    """Like :func:`tempfile.mkstemp` (None: the system's directory), the file locked
    until its descriptor is closed (close it after renaming the file into place, not
    before)."""
    while True:
        try:
            fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        except OSError as e:
            if e.errno not in _REFUSED_BY_DIRECTORY:
                raise
            # the error names a file that was never made: the directory refused it
            raise OSError(e.errno, e.strerror, directory or tempfile.gettempdir()) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A sweep may have taken the lock first, between creation and flock, and removed
        # the file: make another one then.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd, path
        except FileNotFoundError:
            pass
        os.close(fd)


def rename_into_place(temp: str, final: str) -> None:
    """``os.replace``, its error naming ``final`` (an immutable file, a busy mount
    point): the temporary file is not the user's and is removed after."""
    try:
        os.replace(temp, final)
    except OSError as e:
        raise OSError(e.errno, e.strerror, final) from None


class AtomicFile:
    """A locked temporary file in ``directory`` that becomes a final file only by
    :meth:`commit`; leaving the ``with`` block without committing removes it."""

    def __init__(self, directory: str | None, prefix: str = ".tmp-", suffix: str = ""):
        fd, self.path = mkstemp(directory, prefix, suffix)
        self.file = os.fdopen(fd, "wb")
        self.committed = False

    def commit(self, final: str, mode: int = 0o644) -> None:
        """Rename into place (still locked, so no sweep can take it half-way)."""
        self.file.flush()
        os.chmod(self.path, mode)
        rename_into_place(self.path, final)
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


def destination(path: str) -> str:
    """The file a new ``path`` is renamed onto: the one a symlink names, as the shell's
    ``>`` and ``cp`` write through links. Replacing the link itself would leave the file
    it names stale, and turn a dotfile link, or /dev/stdout, into a regular file."""
    return os.path.realpath(path)


def is_stream(path: str) -> bool:
    """Is ``path`` a destination no rename can reach: a pipe, a terminal, a device
    (/dev/stdout, /dev/null), or the file this process's stdout is redirected to
    (replacing that one would undo a ``>>``)?"""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode):
        return False
    return not stat.S_ISREG(st.st_mode) or _same_as_stdout(st)


def is_stdout(path: str) -> bool:
    """Is ``path`` (/dev/stdout, or the file it is redirected to) this process's stdout?"""
    try:
        return _same_as_stdout(os.stat(path))
    except OSError:
        return False


def _same_as_stdout(st: os.stat_result) -> bool:
    try:
        return os.path.samestat(st, os.fstat(1))
    except OSError:
        return False


def send(source: BinaryIO, path: str) -> None:
    """Copy ``source`` to its end into the stream ``path``; into this process's own
    stdout when ``path`` is it, so that the shell's redirection (``>>``) holds."""
    if is_stdout(path):
        out = os.fdopen(os.dup(1), "wb")
    else:
        out = open(path, "wb")  # noqa: SIM115 - closed below
    with out:
        shutil.copyfileobj(source, out, 1 << 20)


def beside(path: str, temp_dir: Callable[[], str | None], prefix: str
           ) -> tuple[str | None, str, str | None]:
    """Where a new ``path`` is written first, as ``(directory, prefix, target)`` for
    :func:`mkstemp` (suffix ``.tmp``): beside ``target``, the file it then replaces (see
    :func:`destination`), named ``prefix`` with ``{}`` standing for that file's name,
    after sweeping what a killed writer of it left there; or, when ``path`` is a stream
    (see :func:`is_stream`, target None), in ``temp_dir()``, to be :func:`send` whole."""
    if is_stream(path):
        return temp_dir(), prefix.format(os.path.basename(path)), None
    target = destination(path)
    directory, named = os.path.dirname(target), prefix.format(os.path.basename(target))
    sweep(directory, named, ".tmp")
    return directory, named, target


@contextlib.contextmanager
def replacing(path: str, mode: int = 0o644, temp_dir: str | None = None) -> Iterator[BinaryIO]:
    """Write a new ``path``: the file yielded is a locked temporary one that, once the
    block ends without an error, replaces the file ``path`` names or, when ``path`` is
    a stream, is copied into it whole (see :func:`beside`; ``temp_dir``, default the
    system's, then holds it)."""
    # ".tmp-" first, as the outputs' own sweeps expect
    directory, prefix, target = beside(path, lambda: temp_dir, ".tmp-{}.")
    with AtomicFile(directory, prefix, ".tmp") as temp:
        yield temp.file
        if target is None:
            temp.file.flush()
            with open(temp.path, "rb") as written:
                send(written, path)
        else:
            temp.commit(target, mode)


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file (see :func:`replacing`)."""
    with replacing(path, mode) as f:
        f.write(data)


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
