"""``search``: list the layer members whose path matches, passing the image through.

A glob (``fnmatch``) matches the full path (with or without its leading ``/``)
or the base name; with ``regex=true`` ``re.search`` runs on the full path, with
or without its leading ``/``.
Each layer is searched on its own, so deleted files and the whiteouts deleting
them are both reported. Results go to stdout when the image is finished.

When the wrapped output reads a layer too, the search reads the same bytes as
they pass (a tee into a thread), so the layer is fetched once.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import posixpath
import queue
import re
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TextIO

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

from .. import streams
from ..api import Image, ImageFilter, ImageOutput, Layer, LayerData, OutputResult
from ..errors import NOT_A_REGEX, UsageError
from ..layertar import clean_name, members, read_stream
from ..uri import check_glob

_KINDS = {tarfile.DIRTYPE: "directory", tarfile.FIFOTYPE: "fifo",
          tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device"}


@dataclass(frozen=True)
class Match:
    path: str
    description: str


def describe(member: tarfile.TarInfo, path: str) -> str:
    if member.issym():
        return f"{path} -> {member.linkname} (symlink)"
    if member.islnk():
        return f"{path} -> {member.linkname} (hardlink)"
    if member.isreg():
        return f"{path} (file, {member.size} bytes)"
    return f"{path} ({_KINDS.get(member.type, 'unknown')})"


def matcher(pattern: str, regex: bool) -> Callable[[str], bool]:
    if regex:
        try:
            compiled = re.compile(pattern)
        except NOT_A_REGEX as e:
            raise UsageError(f"search: invalid regex {pattern!r}: {e}") from None
        # as globs do, the path may be written as a container sees it: /usr/bin/...
        return lambda path: (compiled.search(path) is not None
                             or compiled.search("/" + path) is not None)
    check_glob(pattern, "search: glob")
    return lambda path: (fnmatch.fnmatchcase(path, pattern)
                         or fnmatch.fnmatchcase("/" + path, pattern)
                         or fnmatch.fnmatchcase(posixpath.basename(path), pattern))


def shown(text: str) -> str:
    """A name from a layer as it may be printed: control characters (newlines, terminal
    escape sequences) written as escapes, so no layer can forge lines or drive the
    terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def search_tar(stream: BinaryIO, matches: Callable[[str], bool], what: str) -> list[Match]:
    found = []
    for member in members(read_stream(stream), what):  # read to its end: digests checked
        path = clean_name(member.name)
        if path and matches(path):
            found.append(Match(shown(path), shown(describe(member, path))))
    return found


class _Pipe(io.RawIOBase):
    """Bytes handed from the reading thread to the searching thread, bounded."""

    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._left = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def put(self, data: bytes | None) -> None:
        self._queue.put(data)

    def readinto(self, buffer: WriteableBuffer) -> int:
        if not self._left and not self._eof:
            chunk = self._queue.get()
            if chunk is None:
                self._eof = True
            else:
                self._left = chunk
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._left))
        view[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class _Tee(io.RawIOBase):
    def __init__(self, raw: streams.HashingReader, pipe: _Pipe):
        self._raw = raw
        self._pipe = pipe

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        n = self._raw.readinto(buffer)
        if n:
            self._pipe.put(bytes(memoryview(buffer)[:n]))
        return n


class Search(ImageFilter):
    def __init__(self, inner: ImageOutput, pattern: str, regex: bool = False,
                 script_friendly: bool = False, out: TextIO | None = None):
        super().__init__(inner)
        self.matches = matcher(pattern, regex)
        self.script_friendly = script_friendly
        self.out = out
        self._lock = threading.Lock()
        self._found: dict[int, tuple[str, list[Match]]] = {}

    def start(self, image: Image) -> None:
        image.refuse_non_tar("search")
        self.inner.start(image)

    def wants_layer(self, layer: Layer) -> bool:
        return True  # searched even when the output already has it

    def _record(self, data: LayerData, found: list[Match]) -> None:
        name = data.layer.digest or data.layer.diff_id or f"layer {data.layer.index}"
        with self._lock:
            self._found[data.layer.index] = (name, found)

    def add_layer(self, data: LayerData) -> None:
        what = f"layer {data.layer.index}"
        if self.inner.wants_layer(data.layer):
            self.inner.add_layer(LayerData(data.layer, lambda: self._teed(data)))
        if data.layer.index not in self._found:  # not wanted, or the output never read it
            with data.open_tar() as tar:
                self._record(data, search_tar(tar, self.matches, what))

    @contextlib.contextmanager
    def _teed(self, data: LayerData) -> Iterator[streams.Readable]:
        pipe = _Pipe()
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                buf = streams.buffered(pipe)
                plain = streams.decompressing(buf, streams.sniff(buf), f"layer {data.layer.index}")
                self._record(data, search_tar(streams.buffered(plain), self.matches,
                                              f"layer {data.layer.index}"))
            except BaseException as e:  # noqa: BLE001 - re-raised by the reading thread
                errors.append(e)
            while pipe.read(streams.CHUNK):  # never leave the reader blocked
                pass

        thread = threading.Thread(target=consume, name="search", daemon=True)
        thread.start()
        try:
            with data.open_blob() as blob:
                yield _Tee(blob, pipe)
        finally:
            pipe.put(None)
            thread.join()
        if errors:
            raise errors[0]

    def finish(self, image: Image) -> OutputResult:
        result = self.inner.finish(image)
        out = self.out or sys.stdout
        total, layers = 0, 0
        for index in sorted(self._found):
            name, found = self._found[index]
            if not found:
                continue
            layers += 1
            total += len(found)
            if not self.script_friendly:
                print(f"Layer: {name}", file=out)
            for match in found:
                print(f"{image.name or ''}:{image.tag or ''}:{name}:{match.path}"
                      if self.script_friendly else f"  {match.description}", file=out)
        if not self.script_friendly:
            print(f"\nFound {total} match(es) in {layers} layer(s)." if total
                  else "No matches found.", file=out)
        return result
