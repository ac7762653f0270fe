"""An outer tar archive written to a temp file and renamed into place on success.

PAX format, so a member of 8 GiB or more gets a ``size`` extended header instead
of overflowing USTAR's 11 octal digits. Several threads may add members; one
lock keeps their headers and data together.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import threading
from typing import BinaryIO

from occystrap_core.errors import URIError

FORMAT = tarfile.PAX_FORMAT


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class ArchiveWriter:
    """Members go to ``.<name>.*.tmp`` next to ``path``; :meth:`commit` renames it."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        parent = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise URIError(f"{path} is a directory; tar:// writes a file")
        if not os.path.isdir(parent):
            raise URIError(f"directory {parent} does not exist")
        fd, self.temp_path = tempfile.mkstemp(
            prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=parent)
        self._file = os.fdopen(fd, "wb")
        # tarfile copies members in 16 KiB reads by default: far too many syscalls for layers.
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=FORMAT,
                                 copybufsize=4 * 1024 * 1024)
        self._lock = threading.Lock()
        self._names: set[str] = set()

    def has(self, name: str) -> bool:
        with self._lock:
            return name in self._names

    def add_directory(self, name: str) -> None:
        with self._lock:
            self._names.add(name)
            self._tar.addfile(member_info(name, 0, directory=True))

    def add_file(self, name: str, fileobj: BinaryIO, size: int) -> bool:
        """Add a member once; a second add of the same name is skipped (returns False)."""
        with self._lock:
            if name in self._names:
                return False
            self._names.add(name)
            self._tar.addfile(member_info(name, size), fileobj)
            return True

    def add_bytes(self, name: str, data: bytes) -> bool:
        return self.add_file(name, io.BytesIO(data), len(data))

    def commit(self) -> None:
        with self._lock:
            self._tar.close()
            # No fsync: the rename already guarantees that a failed run leaves no partial
            # archive; flushing a multi-GiB archive to disk costs ~10% of a pull, and
            # skopeo, docker save and crane do not pay it either.
            self._file.close()
            os.chmod(self.temp_path, 0o666 & ~_umask())  # mkstemp made it 0600
            os.replace(self.temp_path, self.path)

    def abort(self) -> None:
        with self._lock:
            try:
                self._file.close()
            finally:
                if os.path.exists(self.temp_path):
                    os.unlink(self.temp_path)
