"""Compressing a layer tar into a temporary file, hashing the compressed result.

The compressed digest is needed before the upload's final ``PUT``, so a layer that
must be (re)compressed is spooled to disk; memory stays bounded by the chunk size.
gzip comes from ISA-L (several times faster than zlib, deterministic: mtime 0)
running in its own thread so that reading, hashing and compressing overlap.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, cast

from occystrap_core.errors import URIError
from occystrap_core.streams import CHUNK

COMPRESSIONS = ("gzip", "zstd", "none")
DEFAULT_LEVEL = {"gzip": 1, "zstd": 3, "none": 0}
_LEVELS = {"gzip": range(0, 4), "zstd": range(-7, 23), "none": range(0, 1)}


def check(compression: str | None, level: int | None, where: str = "registry://") -> None:
    """Validate ``?compression=`` (or ``--compression``, named by ``where``) and
    ``?level=`` when the output is built."""
    if compression is not None and compression not in COMPRESSIONS:
        raise URIError(f"{where}: compression must be one of {', '.join(COMPRESSIONS)}, "
                       f"not {compression!r}")
    if level is not None:
        kind = compression or "gzip"
        allowed = _LEVELS[kind]
        if level not in allowed:
            raise URIError(f"registry://: {kind} level must be between {allowed.start} and "
                           f"{allowed.stop - 1}, not {level}")


@functools.cache
def step(compression: str, level: int | None) -> str:
    """The layer cache's identity of compressing a tar with ``compression`` at ``level``:
    the compressor and its version are part of it, as another may write other bytes."""
    version = ""
    # The modules' own __version__, not importlib.metadata: importing that, and its scan
    # of every distribution, cost a warm cached copy 20 ms.
    if compression == "gzip":
        import isal

        version = f" isal=={isal.__version__}"
    elif compression == "zstd":
        import zstandard

        version = f" zstandard=={zstandard.__version__}"
    chosen = DEFAULT_LEVEL[compression] if level is None else level
    return f"compress {compression}:level={chosen}{version}"


@dataclass
class Spooled:
    path: str
    digest: str
    size: int

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _HashingFile:
    """A write-only file that hashes and counts what is written to it."""

    def __init__(self, f: BinaryIO):
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._f.write(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self.closed = True


def _compressor(sink: _HashingFile, compression: str, level: int) -> BinaryIO:
    if compression == "gzip":
        from isal import igzip_threaded

        return igzip_threaded.open(sink, "wb", compresslevel=level, threads=1)
    if compression == "zstd":
        import zstandard

        # _HashingFile has the write/flush/close the writer calls
        return zstandard.ZstdCompressor(level=level).stream_writer(cast(BinaryIO, sink),
                                                                   closefd=False)
    return cast(BinaryIO, sink)


def spool(tar: BinaryIO, compression: str, level: int | None, temp_dir: str) -> Spooled:
    """Compress ``tar`` into a temporary file under ``temp_dir``, hashing the result.

    The uncompressed side is not hashed here: ``LayerData.open_tar`` already computes
    the diff_id while verifying the layer, and hashing twice costs a core.
    """
    fd, path = tempfile.mkstemp(dir=temp_dir, prefix="layer-", suffix=f".{compression}")
    try:
        with os.fdopen(fd, "wb") as f:
            sink = _HashingFile(f)
            out = _compressor(sink, compression, DEFAULT_LEVEL[compression] if level is None
                              else level)
            try:
                while True:
                    data = tar.read(CHUNK)
                    if not data:
                        break
                    out.write(data)
            finally:
                if compression in ("gzip", "zstd"):  # a compressor, not the sink itself
                    out.close()  # also stops the compression thread after a failure
    except BaseException:
        os.unlink(path)
        raise
    return Spooled(path, f"sha256:{sink.hash.hexdigest()}", sink.size)
