"""Streaming helpers: digest-verifying readers, compression sniffing, decompression.

Layers are never held whole in memory: everything here wraps a file-like object
and works chunk by chunk.
"""

from __future__ import annotations

import io
import zlib
from typing import TYPE_CHECKING, BinaryIO, Callable, Protocol, cast

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from . import digest as digests
from .errors import CorruptImageError, DigestMismatchError

CHUNK = 1024 * 1024

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Readable(Protocol):
    """What streaming code reads from: a file, a response body, a :class:`HashingReader`."""

    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


class HashingReader(io.RawIOBase):
    """Reads from ``raw`` while hashing and counting what passes through.

    With ``expected`` set, reaching EOF checks the digest (and ``size`` when given)
    and raises :class:`DigestMismatchError` on a mismatch, so a consumer that
    reads to the end cannot miss corruption. ``on_bytes`` is called with each
    chunk's length (progress, statistics).
    """

    def __init__(
        self,
        raw: Readable,
        expected: str | None = None,
        size: int | None = None,
        what: str = "blob",
        on_bytes: Callable[[int], None] | None = None,
    ):
        self._raw = raw
        self._hash = digests.hasher(expected)
        self._algo = expected.split(":", 1)[0] if expected else "sha256"
        self.expected = expected
        self.expected_size = size
        self.what = what
        self.count = 0
        self._on_bytes = on_bytes
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        fill = getattr(self._raw, "readinto", None)
        n = fill(view) if fill is not None else None
        if n is None:
            chunk = self._raw.read(len(view))
            n = len(chunk)
            view[:n] = chunk
        if n:
            self._hash.update(view[:n])
            self.count += n
            if self._on_bytes:
                self._on_bytes(n)
            if self.expected_size is not None and self.count > self.expected_size:
                raise CorruptImageError(
                    f"{self.what}: more than the announced {self.expected_size} bytes"
                )
        elif not self._done:
            self._done = True
            self._check()
        return n

    def _check(self) -> None:
        if self.expected_size is not None and self.count != self.expected_size:
            raise CorruptImageError(
                f"{self.what}: size mismatch, expected {self.expected_size} bytes, "
                f"got {self.count}"
            )
        if self.expected and self.digest != self.expected:
            raise DigestMismatchError(self.what, self.expected, self.digest)

    @property
    def complete(self) -> bool:
        """True once EOF was reached and every check passed."""
        return self._done

    @property
    def digest(self) -> str:
        return f"{self._algo}:{self._hash.hexdigest()}"

    def drain(self) -> None:
        """Read to EOF (running the checks) and discard the data."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass


def buffered(raw: Readable) -> io.BufferedReader:
    """``raw`` buffered; it must have ``readinto`` too (every raw stream here has)."""
    return io.BufferedReader(cast(io.RawIOBase, raw), buffer_size=CHUNK)


# Smaller than CHUNK, so that BufferedReader hands reads of CHUNK straight to the raw
# stream, which fills the bytes returned: one copy of each byte less than through a
# buffer as large as the read.
DIRECT_BUFFER = 64 * 1024


def direct(raw: Readable) -> io.BufferedReader:
    """``raw`` buffered for readers of ``CHUNK``: their reads bypass the buffer."""
    return io.BufferedReader(cast(io.RawIOBase, raw), buffer_size=DIRECT_BUFFER)


def sniff(stream: io.BufferedReader) -> str:
    """``"gzip"``, ``"zstd"`` or ``"none"`` from a stream's first bytes (not consumed)."""
    head = stream.peek(4)[:4]
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def codec_error(error: BaseException) -> bool:
    """Is ``error`` a decompressor's complaint about its input? gzip raises an OSError
    without errno (a full disk has one) or EOFError, zlib its error; ISA-L, xz and
    zstandard their own classes."""
    return (isinstance(error, OSError) and error.errno is None) or \
        isinstance(error, (EOFError, zlib.error)) or \
        type(error).__name__ in ("IsalError", "ZstdError", "LZMAError")


class _Decompressed(io.RawIOBase):
    """Turns a codec's own exceptions into :class:`CorruptImageError`."""

    def __init__(self, reader: Readable, what: str,
                 before_error: Callable[[], None] | None):
        self._reader = reader
        self._what = what
        self._before_error = before_error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        try:
            fill = getattr(self._reader, "readinto", None)
            if fill is not None:
                return int(fill(buffer))
            view = memoryview(buffer).cast("B")
            chunk = self._reader.read(len(view))
            view[:len(chunk)] = chunk
            return len(chunk)
        except Exception as e:
            if not codec_error(e):
                raise
            if self._before_error:
                self._before_error()
            raise CorruptImageError(f"{self._what}: cannot decompress: {e}") from None


def decompressing(stream: Readable, compression: str, what: str = "layer",
                  before_error: Callable[[], None] | None = None) -> Readable:
    """A reader of the decompressed bytes of ``stream``.

    ``before_error`` runs before a codec error is raised (to report a digest
    mismatch of the compressed stream instead, which explains it better).
    """
    if compression == "none":
        return stream
    if compression == "gzip":
        from isal import igzip

        reader: Readable = igzip.GzipFile(fileobj=stream, mode="rb")
    elif compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(  # it only calls read()
            cast(BinaryIO, stream), read_across_frames=True, read_size=CHUNK)
    else:
        raise CorruptImageError(f"{what}: unknown compression {compression!r}")
    return _Decompressed(reader, what, before_error)


def copy(src: Readable, dst: Writable, chunk: int = CHUNK) -> int:
    """Copy ``src`` to ``dst`` in chunks; returns the number of bytes copied."""
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        dst.write(data)
        total += len(data)
