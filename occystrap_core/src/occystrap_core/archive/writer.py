"""An outer tar archive written to a temp file and renamed into place on success
(or, for a stream such as a pipe, sent into it by :meth:`ArchiveWriter.send`).

PAX format, so a member of 8 GiB or more gets a ``size`` extended header instead
of overflowing USTAR's 11 octal digits. Several threads may add members, but a
tar has one write position: one thread at a time may :meth:`~ArchiveWriter.stream`
a member of unknown size straight into the archive (its header is patched when
it ends), while the others spool theirs to temp files that are appended, by the
kernel, as soon as the archive is free.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tarfile
import threading
from typing import TYPE_CHECKING, BinaryIO, Callable, Final, Iterator

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

from .. import streams
from ..errors import URIError
from ..tempfiles import beside, mkstemp, rename_into_place, send

FORMAT: Final = tarfile.PAX_FORMAT
BLOCK = tarfile.BLOCKSIZE
RECORD = tarfile.RECORDSIZE
COPY_CHUNK = 4 * 1024 * 1024
# copy_file_range refused (an old kernel, some file systems): copy through a buffer
_NO_COPY_FILE_RANGE = (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP)


def member_info(name: str, size: int, directory: bool = False) -> tarfile.TarInfo:
    """A reproducible header: fixed mtime, owner root, no user names."""
    info = tarfile.TarInfo(name)
    info.size = 0 if directory else size
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(FORMAT, "utf-8", "surrogateescape")


def one_block_header(name: str, size: int) -> bytes:
    """A 512-byte header, for patching in place: over 8 GiB, PAX would need an extended
    header first, so the size goes in GNU base-256 instead (every reader accepts it)."""
    info = member_info(name, size)
    data = header(info)
    if len(data) != BLOCK:
        data = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    if len(data) != BLOCK:
        raise ValueError(f"{name}: no single-block tar header")
    return data


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Sink(io.RawIOBase):
    """Where a streamed member's bytes go: the archive, counted."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer) -> int:
        n = self._out.write(data)
        self.count += n
        return n


class ArchiveWriter:
    """Members go to ``.<name>.*.tmp`` next to the file ``path`` names (through
    symlinks); :meth:`commit` renames it. When ``path`` is a stream (a pipe,
    /dev/stdout), they go to ``temp_dir()``, and :meth:`send` copies the committed
    archive into the stream."""

    def __init__(self, path: str, temp_dir: Callable[[], str]):
        self.path = os.path.abspath(path)
        if os.path.isdir(self.path):
            raise URIError(f"{path} is a directory; tar:// writes a file")
        # a stream's goes to the run's own temp dir, removed when it ends
        parent, prefix, self._target = beside(self.path, temp_dir, ".{}.")
        self.to_stream = self._target is None
        if not self.to_stream and not os.path.isdir(str(parent)):
            raise URIError(f"directory {parent} does not exist")
        fd, self.temp_path = mkstemp(parent, prefix, ".tmp")  # locked while it is written
        self._file = os.fdopen(fd, "wb")
        self._lock = threading.Lock()  # guards the state below; not held while streaming
        self._names: set[str] = set()
        self._streaming = False
        self._broken = False  # a stream failed: the archive must not be committed
        self._pending: list[tuple[bytes, BinaryIO | None, int]] = []  # after the stream

    def add_directory(self, name: str) -> None:
        self._add(name, header(member_info(name, 0, directory=True)), None, 0)

    def add_bytes(self, name: str, data: bytes) -> bool:
        return self.add_spooled(name, io.BytesIO(data), len(data))

    def add_spooled(self, name: str, spool: BinaryIO, size: int) -> bool:
        """Add ``size`` bytes of ``spool`` (from its current position) as member ``name``,
        once: a second add of the same name is skipped (returns False). Takes ``spool``
        over: it is closed once copied, now or when a stream in progress ends."""
        return self._add(name, header(member_info(name, size)), spool, size)

    def _add(self, name: str, head: bytes, data: BinaryIO | None, size: int) -> bool:
        with self._lock:
            if not self._claim(name):
                if data is not None:
                    data.close()
                return False
            if self._streaming:
                self._pending.append((head, data, size))
            else:
                self._append(head, data, size)
            return True

    @contextlib.contextmanager
    def stream(self, name: str) -> Iterator[streams.Writable | None]:
        """Write member ``name`` straight into the archive, its size counted as it goes.
        Yields None (spool it and :meth:`add_spooled` it instead) when another thread
        is streaming or ``name`` was added already."""
        with self._lock:  # (a longer name would need more than the one patched block)
            free = not self._streaming and len(name.encode()) < 100 and self._claim(name)
            if free:
                self._streaming = True
                self._file.flush()
                start = self._file.tell()
                self._file.write(bytes(BLOCK))  # the header, once the size is known
        if not free:
            yield None
            return
        sink = _Sink(self._file)
        try:
            yield sink
            self._file.write(bytes(-sink.count % BLOCK))
            self._file.flush()
            os.pwrite(self._file.fileno(), one_block_header(name, sink.count), start)
        except BaseException:
            self._broken = True
            raise
        finally:
            with self._lock:
                self._streaming = False
                pending, self._pending = self._pending, []
                for head, data, size in pending:
                    self._append(head, data, size)

    def _claim(self, name: str) -> bool:
        if name in self._names:
            return False
        self._names.add(name)
        return True

    def _append(self, head: bytes, data: BinaryIO | None, size: int) -> None:
        """Header, data and padding at the end of the archive (lock held, no stream)."""
        self._file.write(head)
        if data is not None:
            with data:
                self._copy(data, size)
            self._file.write(bytes(-size % BLOCK))

    def _copy(self, data: BinaryIO, size: int) -> None:
        """``size`` bytes of ``data``: copied by the kernel (page cache to page cache)
        from a real file, else through a buffer."""
        try:
            source = data.fileno()
        except (AttributeError, OSError):  # io.UnsupportedOperation included
            source = None
        copied = 0
        if source is not None:
            data.flush()
            self._file.flush()
            offset = data.tell()
            try:
                while copied < size:
                    n = os.copy_file_range(source, self._file.fileno(), size - copied,
                                           offset + copied)
                    if not n:
                        raise OSError(f"member data ended {size - copied} bytes early")
                    copied += n
            except OSError as e:
                if copied or e.errno not in _NO_COPY_FILE_RANGE:
                    raise
        while copied < size:
            chunk = data.read(min(size - copied, COPY_CHUNK))
            if not chunk:
                raise OSError(f"member data ended {size - copied} bytes early")
            self._file.write(chunk)
            copied += len(chunk)

    def commit(self) -> None:
        with self._lock:
            if self._broken or self._streaming:
                raise RuntimeError("the archive is incomplete; abort it")
            self._file.write(bytes(2 * BLOCK))  # end of archive, then a whole record
            self._file.write(bytes(-self._file.tell() % RECORD))
            # No fsync: the rename already guarantees that a failed run leaves no partial
            # archive; flushing a multi-GiB archive to disk costs ~10% of a pull, and
            # skopeo, docker save and crane do not pay it either.
            self._file.flush()
            if self.to_stream:
                return  # complete; :meth:`send` delivers it
            os.chmod(self.temp_path, 0o666 & ~_umask())  # mkstemp made it 0600
            assert self._target is not None
            rename_into_place(self.temp_path, self._target)
            self._file.close()  # only now: closing drops the lock that keeps sweeps away

    def send(self) -> None:
        """Copy the committed archive into the stream ``path``, then remove it."""
        try:
            with open(self.temp_path, "rb") as committed:
                send(committed, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            for _, data, _ in pending:
                if data is not None:
                    data.close()
            try:
                os.unlink(self.temp_path)
            except FileNotFoundError:
                pass  # committed, or never made
            try:
                self._file.close()
            except OSError:
                pass  # a full disk fails the flush of what was buffered again
