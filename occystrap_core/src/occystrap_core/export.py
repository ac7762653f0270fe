"""An image's flattened root filesystem as one tar, streamed (``occystrap export``).

Layers are read top-down, the last one first, and each member is copied from the
layer stream to the output unless an upper layer decided that path already: it wrote
the path, removed it with a whiteout (``DIR/.wh.NAME``: the path and all under it),
hid what lower layers put in a directory (``DIR/.wh..wh..opq``), or wrote something
other than a directory where a lower layer has a parent. A layer's whiteouts act on
lower layers only, as overlayfs applies them, and never appear in the output. So an
upper layer's file or directory (its mode, owner, times) wins, as it does in a merged
rootfs, and no layer is held in memory or extracted to disk: only the paths seen.

Member names are checked by the rules of :mod:`occystrap_core.rootfs` (absolute
paths, ``..``, NUL bytes, whiteouts of ``.`` or ``..``, overlayfs xattrs: refused)
and written cleaned (``./a//b`` as ``a/b``). Hard links are written last, once their
target is in the output: an upper layer's link may name a file a lower layer holds,
which the top-down order writes after it.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
from typing import BinaryIO

from .errors import CorruptImageError
from .layertar import (
    clean_name,
    members,
    prepare_copy,
    read_stream,
    refuse_unsafe,
    unsafe_reason,
    write_stream,
)
from .streams import Writable

log = logging.getLogger("occystrap.export")


class Flattener:
    """Writes the merged rootfs of the layers given top-down to the tar stream ``out``;
    a context manager that ends the tar (or, on an error, abandons it)."""

    def __init__(self, out: Writable):
        self.out = write_stream(out)
        self.decided: set[str] = set()  # paths an upper layer wrote
        self.removed: set[str] = set()  # paths an upper layer's whiteouts removed
        self.opaque: set[str] = set()  # directories an upper layer made opaque
        self.files: set[str] = set()  # paths an upper layer wrote as no directory
        self.links: list[tarfile.TarInfo] = []  # hard links, written at the end
        self.count = 0  # members written

    def hidden(self, name: str) -> bool:
        """Whether an upper layer decided ``name`` (or a parent of it)."""
        if name in self.decided or name in self.removed or "" in self.opaque:
            return True
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self.removed or parent in self.opaque or parent in self.files:
                return True
        return False

    def add_layer(self, stream: BinaryIO, what: str) -> None:
        """Copy what shows of one uncompressed layer tar (the next one down), read to
        its end so that its digest is checked."""
        tar = read_stream(stream)
        decided: set[str] = set()
        removed: set[str] = set()
        opaque: set[str] = set()
        files: set[str] = set()
        for member in members(tar, what):
            name = clean_name(member.name)
            if not name:
                continue
            whiteout = refuse_unsafe(member, name, what)
            if whiteout is not None:
                directory, base = whiteout
                if base is None:
                    opaque.add(directory)
                else:
                    removed.add(posixpath.join(directory, base))
                continue
            if self.hidden(name):
                continue
            decided.add(name)
            if not member.isdir():
                files.add(name)
            prepare_copy(member, member.mtime)
            member.name = name
            if member.islnk():
                target = clean_name(member.linkname)
                problem = unsafe_reason(target)
                if problem or not target:
                    raise CorruptImageError(f"{what}: hard link {member.name!r} names "
                                            f"{member.linkname!r}; refused")
                member.linkname = target
                self.links.append(member)
                continue
            self.out.addfile(member, tar.extractfile(member) if member.isreg() else None)
            self.count += 1
        # this layer's whiteouts and entries decide for the layers below it only
        self.decided |= decided
        self.removed |= removed
        self.opaque |= opaque
        self.files |= files

    def __enter__(self) -> Flattener:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """Finish the tar; after a failure, :meth:`abandon` it instead."""
        if kind is None:
            self.close()
        else:
            self.abandon()

    def abandon(self) -> None:
        """After a failure: flush what is buffered, and end no archive (a stream
        written so far stays visibly cut short)."""
        if self.out.fileobj is not None:
            self.out.fileobj.close()  # tarfile's stream; the file under it stays open

    def close(self) -> None:
        """Write the hard links whose target is in the output, and end the tar."""
        written = self.decided - {link.name for link in self.links}
        for link in self.links:
            if link.linkname in written:
                self.out.addfile(link)
                self.count += 1
            else:
                log.warning("hard link %s -> %s left out: its target is not in the "
                            "merged rootfs", link.name, link.linkname)
        self.out.close()
