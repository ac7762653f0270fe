"""How an upload reads a streamed source: in whole CHUNKs, straight from the source,
still verified to its end."""

from __future__ import annotations

import io
import os

import pytest

from occystrap_core import digest as digests
from occystrap_core.errors import DigestMismatchError
from occystrap_core.streams import CHUNK, HashingReader
from occystrap_registry.upload import _direct


class Source(io.RawIOBase):
    """A raw stream that notes the size of every read it is asked for."""

    def __init__(self, data: bytes):
        self.data, self.position, self.asked = data, 0, []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        self.asked.append(len(buffer))
        n = min(len(buffer), len(self.data) - self.position)
        buffer[:n] = self.data[self.position:self.position + n]
        self.position += n
        return n


def _read_all(body) -> bytes:
    return b"".join(iter(lambda: body.read(CHUNK), b""))


def test_reads_of_a_chunk_go_straight_to_the_source() -> None:
    data = os.urandom(3 * CHUNK + 1000)
    source = Source(data)
    verified = HashingReader(source, expected=digests.of_bytes(data), size=len(data))
    assert _read_all(_direct(verified)) == data
    assert source.asked[:3] == [CHUNK] * 3  # whole chunks, no buffer in between
    assert verified.complete


def test_a_source_with_the_wrong_digest_still_fails_at_its_end() -> None:
    data = os.urandom(CHUNK + 10)
    verified = HashingReader(Source(data), expected=digests.of_bytes(b"other"),
                             size=len(data))
    with pytest.raises(DigestMismatchError):
        _read_all(_direct(verified))


def test_a_file_is_read_as_it_is() -> None:
    body = io.BytesIO(b"abc")
    assert _direct(body) is body
