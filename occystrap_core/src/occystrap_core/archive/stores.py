"""Read-only access to the files of a tar archive or a directory, by relative path.

Both stores give the same small interface, so one reader understands an OCI
layout whether it sits in a directory or inside ``tar://``. Member contents are
only ever streamed; an uncompressed archive is read by seeking to each member's
data, so several threads may read layers at once.
"""

from __future__ import annotations

import bz2
import contextlib
import io
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from .. import streams
from ..errors import CorruptImageError, ImageNotFoundError

# Configs, manifests and indexes are small; anything bigger is not one of them.
MAX_METADATA = 64 * 1024 * 1024
_MAX_LINKS = 16


class Section(io.RawIOBase):
    """A window of ``size`` bytes at ``offset`` of an open file."""

    def __init__(self, f: io.BufferedReader, offset: int, size: int):
        self._f = f
        self._f.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer).cast("B")[:self._left]
        n = self._f.readinto(view) or 0
        if n == 0:
            raise CorruptImageError("archive is truncated")
        self._left -= n
        return n


class Store:
    """Files addressed by ``/``-separated relative paths; ``source`` names the
    directory or archive in messages."""

    source: str

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def size(self, name: str) -> int:
        raise NotImplementedError

    def open(self, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        raise NotImplementedError

    def head(self, name: str, n: int) -> bytes:
        with self.open(name) as f:
            return f.read(n)

    def read_bytes(self, name: str, what: str) -> bytes:
        """A small file (config, manifest, index) whole."""
        size = self.size(name)
        if size > MAX_METADATA:
            raise CorruptImageError(f"{what} is implausibly large ({size} bytes)")
        with self.open(name) as f:
            return f.read()


class DirStore(Store):
    """Files under a directory."""

    def __init__(self, root: str):
        self.root = self.source = root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def exists(self, name: str) -> bool:
        return os.path.isfile(self._path(name))

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise ImageNotFoundError(f"{self._path(name)} does not exist") from None

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        try:
            f = open(self._path(name), "rb")
        except FileNotFoundError:
            raise ImageNotFoundError(f"{self._path(name)} does not exist") from None
        with f:
            yield f


def _normalise(name: str) -> str:
    name = posixpath.normpath(name.lstrip("/"))
    return "" if name == "." else name


_COMPRESSORS: dict[bytes, tuple[str, Callable[[BinaryIO], streams.Readable]]] = {
    streams.GZIP_MAGIC: ("gzip", lambda f: streams.decompressing(f, "gzip", "the archive")),
    streams.ZSTD_MAGIC: ("zstd", lambda f: streams.decompressing(f, "zstd", "the archive")),
    b"BZh": ("bzip2", lambda f: bz2.BZ2File(f)),
    b"\xfd7zXZ\x00": ("xz", lambda f: lzma.LZMAFile(f)),
}


class TarStore(Store):
    """Members of a tar archive; a compressed archive is first decompressed to a temp
    file, and so is a pipe (``tar://-``), which can be read only once.

    Random access into a compressed stream would re-decompress from the start on
    every backward seek, so one sequential pass into ``temp_dir`` is cheaper.
    """

    def __init__(self, path: str, temp_dir: Callable[[], str]):
        self.source = path
        self.path = path
        try:
            with open(path, "rb") as f:
                if not f.seekable():
                    self.path = self._spool(f, temp_dir(), "")
        except FileNotFoundError:
            raise ImageNotFoundError(f"{path} does not exist") from None
        except IsADirectoryError:
            raise ImageNotFoundError(f"{path} is a directory, not an archive "
                                     f"(for an OCI layout use oci-layout://{path})") from None
        with open(self.path, "rb") as f:
            magic = f.read(6)
        self.compression: str | None = None
        for prefix, (kind, opener) in _COMPRESSORS.items():
            if magic.startswith(prefix):
                self.compression = kind
                with open(self.path, "rb") as f:
                    decompressed = self._spool(opener(f), temp_dir(), f" ({kind})")
                if self.path != path:
                    os.unlink(self.path)  # the spooled pipe
                self.path = decompressed
                break
        self._file_size = os.stat(self.path).st_size
        self.members = self._index()

    def _spool(self, src: streams.Readable, temp_dir: str, what: str) -> str:
        """Copy ``src`` to a new file in ``temp_dir``; its path."""
        fd, out = tempfile.mkstemp(prefix="archive-", suffix=".tar", dir=temp_dir)
        try:
            with os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, streams.CHUNK)
        except Exception as e:
            os.unlink(out)
            if isinstance(e, CorruptImageError) or streams.codec_error(e):
                raise CorruptImageError(f"{self.source}{what}: {e}") from None
            if isinstance(e, OSError) and e.errno and not e.filename:  # the temp dir is full
                raise OSError(e.errno, e.strerror, out) from None
            raise
        return out

    def _index(self) -> dict[str, tarfile.TarInfo]:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(self.path, "r:") as tf:
                for info in tf:
                    members[_normalise(info.name)] = info
                end = tf.offset
        except (tarfile.TarError, EOFError, OSError) as e:
            raise CorruptImageError(f"{self.source} is not a valid tar archive: {e}") from None
        # tarfile stops quietly at a short header; a complete archive ends in zero blocks.
        if members and self._file_size < end + tarfile.BLOCKSIZE:
            raise CorruptImageError(f"{self.source} is truncated (no end-of-archive marker)")
        if not members:
            raise CorruptImageError(f"{self.source} is an empty or invalid tar archive")
        return members

    def member(self, name: str) -> tarfile.TarInfo:
        """The regular file ``name`` refers to, following symlinks and hard links."""
        wanted = name = _normalise(name)
        for _ in range(_MAX_LINKS):
            info = self.members.get(name)
            if info is None:
                raise CorruptImageError(f"{self.source} has no member {wanted!r}")
            if info.isfile():
                if info.offset_data + info.size > self._file_size:
                    raise CorruptImageError(f"{self.source} is truncated in {name!r}")
                return info
            if info.issym():
                name = _normalise(posixpath.join(posixpath.dirname(name), info.linkname))
            elif info.islnk():
                name = _normalise(info.linkname)
            else:
                raise CorruptImageError(f"{self.source}: {wanted!r} is not a file")
            if name.startswith("../"):
                raise CorruptImageError(f"{self.source}: {wanted!r} links outside the archive")
        raise CorruptImageError(f"{self.source}: too many links resolving {wanted!r}")

    def exists(self, name: str) -> bool:
        return _normalise(name) in self.members

    def size(self, name: str) -> int:
        return self.member(name).size

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        info = self.member(name)
        with open(self.path, "rb") as f:  # a handle of its own: safe across threads
            yield streams.buffered(Section(f, info.offset_data, info.size))
