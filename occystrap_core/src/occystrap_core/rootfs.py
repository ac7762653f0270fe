"""Safe extraction of layer tars into a directory: a merged rootfs, or overlay layers.

Rules, for layers that may be hostile:

- member paths that are absolute or contain ``..`` are refused (the run fails), and
  so are whiteouts naming their own or the parent directory (``.wh.``, ``.wh..``,
  ``.wh...``), overlayfs xattrs (``trusted.overlay.*``, ``user.overlay.*``:
  overlayfs would follow a redirect or hide a directory on the layer's say-so),
  NUL bytes in link targets and xattr names, damaged tar headers and members
  hidden after a zero block (tarfile would stop there quietly);
- nothing is ever written through a symlink: every parent directory of a member
  must be a real directory (a symlinked parent is refused), and an existing entry
  at the member's own path is removed first, then created with ``O_NOFOLLOW``;
- symlinks themselves may point anywhere, absolute targets included: they are
  resolved inside the container at run time, never by the extractor;
- hardlinks must name a path already extracted, reached without symlinks;
- device nodes need root (``mknod``); without it they are skipped with a warning.
  They are created readable and writable by their owner only, whatever the layer
  says: a world-writable block device in an output directory would hand the host's
  disk to every local user.

In a merged rootfs whiteouts are applied exactly: ``DIR/.wh.NAME`` removes
``DIR/NAME`` (not siblings sharing the prefix), ``DIR/.wh..wh..opq`` removes what
lower layers put in exactly ``DIR``, and whiteouts of absent paths are ignored.
In overlay mode (``mounts://``) they become what overlayfs expects instead: a
0/0 character device, and the ``trusted.overlay.opaque=y`` xattr.

Every entry written is recorded (regular files with the sha256 of the bytes
taken from the verified layer), so :meth:`TreeWriter.verify` can re-read the tree
and compare it with what the layers say it must hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from . import streams
from .errors import CorruptImageError, OccystrapError
from .layertar import (
    XATTR_PAX_PREFIX,
    clean_name,
    members,
    read_stream,
    refuse_unsafe,
    unsafe_reason,
)

log = logging.getLogger("occystrap.rootfs")

OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_READ = 16 * 1024 * 1024  # /etc/passwd and friends, read whole


@dataclass(frozen=True)
class Entry:
    """What a path must be: ``kind`` is dir, file, symlink, char, block or fifo."""

    kind: str
    size: int = 0
    digest: str | None = None
    target: str | None = None
    rdev: int = 0


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "dir"), (stat.S_ISREG, "file"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo")):
        if test(mode):
            return kind
    return "other"


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """A layer's bad data as one clear error: header numbers the OS cannot take (a uid,
    a device number or a time out of range raise OverflowError or ValueError, not
    OSError), tar errors, and file system errors."""
    try:
        yield
    except (tarfile.TarError, EOFError, ValueError, OverflowError) as e:
        raise CorruptImageError(f"{what}: invalid tar entry: {e}") from None
    except OSError as e:
        raise OccystrapError(f"{what}: cannot extract: {e}") from None


class TreeWriter:
    """Extracts layers, lowest first, into ``root`` (which must exist)."""

    def __init__(self, root: str, *, overlay: bool = False):
        self.root = os.path.abspath(root)
        self.overlay = overlay
        self.expected: dict[str, Entry] = {}
        self.is_root = os.geteuid() == 0
        self._real_dirs: set[str] = {""}
        self._dir_meta: dict[str, tarfile.TarInfo] = {}
        self._warned: set[str] = set()

    # ---- paths -------------------------------------------------------------

    def _abs(self, path: str) -> str:
        return os.path.join(self.root, path) if path else self.root

    def _walk(self, path: str, create: bool, what: str) -> bool:
        """Check (or create) that ``path`` is a real directory, not reached via a symlink.

        Returns False when it is absent and ``create`` is false.
        """
        if path in self._real_dirs:
            return True
        current = ""
        for part in path.split("/"):
            current = f"{current}/{part}" if current else part
            if current in self._real_dirs:
                continue
            full = self._abs(current)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                if not create:
                    return False
                os.mkdir(full, 0o755)
                self.expected[current] = Entry("dir")
            else:
                if stat.S_ISLNK(st.st_mode):
                    if not create:
                        return False
                    raise CorruptImageError(f"{what} would be written through the symlink "
                                            f"{current!r}; refused")
                if not stat.S_ISDIR(st.st_mode):
                    if not create:
                        return False
                    raise CorruptImageError(f"{what}: parent {current!r} is not a directory")
            self._real_dirs.add(current)
        return True

    def _lexists(self, path: str) -> bool:
        if not self._walk(posixpath.dirname(path), False, path):
            return False
        return os.path.lexists(self._abs(path))

    def _forget(self, path: str) -> None:
        """Drop ``path`` and everything below it from the bookkeeping."""
        below = path + "/"
        for table in (self.expected, self._dir_meta):
            table.pop(path, None)
            for key in [k for k in table if k.startswith(below)]:
                del table[key]
        self._real_dirs = {d for d in self._real_dirs if d != path and not d.startswith(below)}

    def _remove(self, path: str) -> None:
        full = self._abs(path)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)  # never follows symlinks
            self._forget(path)
        else:
            os.unlink(full)
            self.expected.pop(path, None)

    def read_file(self, path: str, limit: int = MAX_READ) -> bytes | None:
        """A regular file of the tree (at most ``limit`` bytes), or None if absent,
        not a regular file (a FIFO would block, a device never end) or reached
        through a symlink."""
        if not self._walk(posixpath.dirname(path), False, path):
            return None
        try:
            fd = os.open(self._abs(path),
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None
            if st.st_size > limit:
                raise CorruptImageError(f"/{path} in the image is {st.st_size} bytes; "
                                        f"more than {limit} is not believable")
            return f.read(limit)

    # ---- extraction ----------------------------------------------------------

    def apply(self, stream: BinaryIO, what: str) -> None:
        """Extract one uncompressed layer tar, read to its end."""
        tar = read_stream(stream)
        written: set[str] = set()
        for member in members(tar, what):
            name = clean_name(member.name)
            if not name:
                continue
            whiteout = refuse_unsafe(member, name, what)
            with _errors(f"{what}: {name!r}"):
                if whiteout is not None:
                    self._whiteout(whiteout, written, f"{what}: {name!r}")
                else:
                    self._write(name, member, tar, f"{what}: {name!r}")
            written.add(name)

    def _whiteout(self, whiteout: tuple[str, str | None], written: set[str], what: str) -> None:
        directory, name = whiteout
        if self.overlay:
            self._walk(directory, True, what)
            if name is None:
                os.setxattr(self._abs(directory), OPAQUE_XATTR, b"y")
            else:
                path = posixpath.join(directory, name)
                if os.path.lexists(self._abs(path)):
                    self._remove(path)
                os.mknod(self._abs(path), 0o600 | stat.S_IFCHR, os.makedev(0, 0))
                self.expected[path] = Entry("char", rdev=os.makedev(0, 0))
            return
        if name is None:
            if self._walk(directory, False, what):
                self._clear(directory, written)
        else:
            path = posixpath.join(directory, name)
            if path not in written and self._lexists(path):
                self._remove(path)

    def _clear(self, directory: str, written: set[str]) -> None:
        """Remove what lower layers put in ``directory``, keeping this layer's entries."""
        for child in os.listdir(self._abs(directory)):
            path = posixpath.join(directory, child) if directory else child
            if path not in written:
                self._remove(path)
            elif path in self._real_dirs or os.path.isdir(self._abs(path)) \
                    and not os.path.islink(self._abs(path)):
                self._clear(path, written)

    def _write(self, name: str, member: tarfile.TarInfo, tar: tarfile.TarFile, what: str) -> None:
        self._walk(posixpath.dirname(name), True, what)
        full = self._abs(name)
        try:
            existing = os.lstat(full)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if member.isdir() and stat.S_ISDIR(existing.st_mode):
                self._dir_meta[name] = member  # merge into the lower directory
                return
            self._remove(name)
        if member.isdir():
            os.mkdir(full, 0o700)  # its own mode is applied at close(), after its children
            self._real_dirs.add(name)
            self._dir_meta[name] = member
            self.expected[name] = Entry("dir")
            return
        if member.isreg():
            content = tar.extractfile(member)
            assert content is not None  # a regular file always has content
            self.expected[name] = self._write_file(full, content)
        elif member.issym():
            os.symlink(member.linkname, full)
            self.expected[name] = Entry("symlink", target=member.linkname)
        elif member.islnk():
            self._hardlink(name, member, what)
            return  # shares the target's inode and metadata
        elif member.ischr() or member.isblk():
            if not self.is_root:
                self._warn("device", f"{what}: device node skipped (needs root)")
                return
            kind, flag = ("char", stat.S_IFCHR) if member.ischr() else ("block", stat.S_IFBLK)
            rdev = os.makedev(member.devmajor, member.devminor)
            os.mknod(full, 0o600 | flag, rdev)
            self.expected[name] = Entry(kind, rdev=rdev)
        elif member.isfifo():
            os.mkfifo(full, 0o600)
            self.expected[name] = Entry("fifo")
        else:
            self._warn(f"type {member.type!r}", f"{what}: unsupported member type "
                                                f"{member.type!r} skipped")
            return
        self._metadata(full, member)

    def _write_file(self, full: str, data: streams.Readable) -> Entry:
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as f:
            while chunk := data.read(streams.CHUNK):
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
        return Entry("file", size=size, digest="sha256:" + digest.hexdigest())

    def _hardlink(self, name: str, member: tarfile.TarInfo, what: str) -> None:
        target = clean_name(member.linkname)
        reason = unsafe_reason(target) or ("no target" if not target else None)
        if reason:
            raise CorruptImageError(f"{what}: hardlink target {member.linkname!r} has "
                                    f"{reason}; refused")
        if not self._lexists(target) or target == name:
            raise CorruptImageError(f"{what}: hardlink to {target!r}, which is not extracted")
        source = self._abs(target)
        if os.path.isdir(source) and not os.path.islink(source):
            raise CorruptImageError(f"{what}: hardlink to the directory {target!r}; refused")
        os.link(source, self._abs(name), follow_symlinks=False)
        if target in self.expected:
            self.expected[name] = self.expected[target]

    def _metadata(self, full: str, member: tarfile.TarInfo) -> None:
        link = member.issym()
        if self.is_root:
            os.lchown(full, member.uid, member.gid)  # before chmod: chown clears setuid
        if not link:
            device = member.ischr() or member.isblk()
            os.chmod(full, member.mode & (0o700 if device else 0o7777))
        for key, value in member.pax_headers.items():
            if key.startswith(XATTR_PAX_PREFIX):  # after chown, which clears capabilities
                name = key[len(XATTR_PAX_PREFIX):]
                try:
                    os.setxattr(full, name, value.encode("utf-8", "surrogateescape"),
                                follow_symlinks=False)
                except OSError as e:
                    self._warn(key, f"xattr {name} not set: {e}")
        os.utime(full, (member.mtime, member.mtime), follow_symlinks=False)

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def close(self) -> None:
        """Apply directory modes and times, deepest first (children changed them)."""
        for name in sorted(self._dir_meta, key=lambda n: n.count("/"), reverse=True):
            with _errors(f"directory {name!r}"):
                self._metadata(self._abs(name), self._dir_meta[name])
        self._dir_meta.clear()

    # ---- verification --------------------------------------------------------

    def verify(self) -> list[str]:
        """Re-read the tree and compare it with what the layers put there."""
        problems: list[str] = []
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            for child in dirnames + filenames:
                full = os.path.join(dirpath, child)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                seen.add(rel)
                want = self.expected.get(rel)
                if want is None:
                    problems.append(f"{rel}: not from any layer")
                else:
                    problem = _compare(full, want)
                    if problem:
                        problems.append(f"{rel}: {problem}")
        problems += [f"{rel}: missing" for rel in sorted(self.expected.keys() - seen)]
        return problems


def _compare(full: str, want: Entry) -> str | None:
    st = os.lstat(full)
    kind = _kind(st.st_mode)
    if kind != want.kind:
        return f"is a {kind}, expected a {want.kind}"
    if kind == "symlink" and os.readlink(full) != want.target:
        return f"points to {os.readlink(full)!r}, expected {want.target!r}"
    if kind in ("char", "block") and st.st_rdev != want.rdev:
        return "has the wrong device number"
    if kind == "file":
        if st.st_size != want.size:
            return f"has {st.st_size} bytes, expected {want.size}"
        digest = hashlib.sha256()
        with open(full, "rb") as f:
            while chunk := f.read(streams.CHUNK):
                digest.update(chunk)
        if "sha256:" + digest.hexdigest() != want.digest:
            return "content differs from the layer's"
    return None
