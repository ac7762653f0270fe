"""Reading and re-writing layer tars member by member, streaming.

Shared by the rewriting filters, the extractors and ``check``. Layers are read
with :mod:`tarfile` in stream mode (``r|``): nothing is held whole in memory,
and an extended header larger than :data:`MAX_HEADER` is refused instead of
being read into memory.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from typing import BinaryIO, Self, cast

from . import streams
from .errors import CorruptImageError

#: The largest PAX or GNU long-name header accepted (xattrs and ACLs fit easily).
MAX_HEADER = 1024 * 1024

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"

# PAX records that mirror header fields: tarfile regenerates them from the
# TarInfo when needed, and an existing record would override a changed field.
_MIRRORS = ("path", "linkpath", "size", "uid", "gid", "uname", "gname", "hdrcharset")


# The HeaderErrors frombuf raises at a proper end of the archive (tarfile names them so;
# the others, InvalidHeaderError and TruncatedHeaderError, mean a damaged header).
_END_OF_ARCHIVE = ("EOFHeaderError", "EmptyHeaderError")


class BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses oversized extended headers before reading them, and
    damaged headers instead of taking them for the end of the archive."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as e:
            if type(e).__name__ in _END_OF_ARCHIVE:
                raise  # a zero block, or nothing: the end, which tarfile handles
            # tarfile ends the archive quietly there: every later member would be lost
            raise CorruptImageError(f"damaged tar header ({e})") from None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK) \
                and self.size > MAX_HEADER:
            raise CorruptImageError(f"tar extended header of {self.size} bytes "
                                    f"(limit {MAX_HEADER})")
        # _proc_member is tarfile's only hook before an extended header is read whole;
        # typeshed leaves it out. CI pins Python 3.11; test_hostile_layers covers it.
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def read_stream(stream: BinaryIO) -> tarfile.TarFile:
    """A stream-mode reader of an uncompressed tar."""
    try:
        return tarfile.open(fileobj=stream, mode="r|", tarinfo=BoundedTarInfo,
                            errors="surrogateescape")
    except tarfile.ReadError as e:
        raise CorruptImageError(f"not a tar archive: {e}") from None


def members(tar: tarfile.TarFile, what: str) -> Iterator[tarfile.TarInfo]:
    """Iterate ``tar``, turning tarfile's errors into :class:`CorruptImageError`; then
    read the rest of the stream (see :func:`end_of_archive`)."""
    it = iter(tar)
    while True:
        try:
            member = next(it)
        except StopIteration:
            break
        except CorruptImageError as e:
            raise CorruptImageError(f"{what}: {e}") from None
        except (tarfile.TarError, EOFError, ValueError, OverflowError) as e:
            raise CorruptImageError(f"{what}: invalid tar: {e}") from None
        yield member
    end_of_archive(tar, what)


def end_of_archive(tar: tarfile.TarFile, what: str) -> None:
    """Read what follows the last member, to its end (so that a digest check of the
    stream runs). The zero block that ended the archive must be followed by another
    one, or nothing, as Go's archive/tar (Docker, containerd) requires: members
    hidden after a single zero block are refused, not silently dropped."""
    block = tar.fileobj.read(tarfile.BLOCKSIZE) if tar.fileobj else b""
    if block.strip(b"\0"):
        raise CorruptImageError(f"{what}: data after a zero block that ended the tar "
                                f"archive early; refused")
    while tar.fileobj and tar.fileobj.read(1024 * 1024):
        pass


def write_stream(fileobj: streams.Writable) -> tarfile.TarFile:
    """A writer producing USTAR headers, with PAX records only where needed."""
    # a stream ("w|") is only ever written to, whatever the stub asks of fileobj
    return tarfile.open(fileobj=cast(BinaryIO, fileobj), mode="w|", format=tarfile.PAX_FORMAT,
                        encoding="utf-8", errors="surrogateescape")


def clean_name(name: str) -> str:
    """The member path without empty or ``.`` components and trailing slashes
    (``""`` for the root): ``./a//b/.`` is ``a/b``. A leading ``/`` and ``..``
    components stay, for :func:`unsafe_reason` to see."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return ("/" if name.startswith("/") and parts else "") + "/".join(parts)


def link_problem(member: tarfile.TarInfo) -> str | None:
    """Why a link's target cannot be written: a NUL byte (the file system would cut it)."""
    if (member.issym() or member.islnk()) and "\0" in member.linkname:
        return "a link target with a NUL byte"
    return None


def unsafe_reason(name: str) -> str | None:
    """Why a (cleaned) member path may not be written inside a root, or None if it may."""
    if name.startswith("/"):
        return "an absolute path"
    if ".." in name.split("/"):
        return "a '..' component"
    if "\0" in name:
        return "a NUL byte"
    return None


def whiteout_target(name: str) -> tuple[str, str | None] | None:
    """For a whiteout entry: ``(directory, name)``, name None for an opaque marker.

    Returns None for an ordinary entry. The name is as written: check it with
    :func:`whiteout_problem` before removing anything.
    """
    parent, base = posixpath.split(name)
    if base == OPAQUE:
        return parent, None
    if base.startswith(WHITEOUT_PREFIX):
        return parent, base[len(WHITEOUT_PREFIX):]
    return None


def whiteout_problem(name: str | None) -> str | None:
    """Why the whiteout of ``name`` (None: an opaque marker) must not be applied:
    ``.wh.``, ``.wh..`` and ``.wh...`` would remove the directory itself or its parent."""
    if name is None:
        return None
    if name in ("", "."):
        return "names its own directory"
    if name == "..":
        return "names the parent directory"
    return None


# overlayfs reads its own xattrs from trusted.overlay.*, or user.overlay.* when mounted
# with userxattr (rootless): only occystrap may set those.
OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
XATTR_PAX_PREFIX = "SCHILY.xattr."


def xattr_problem(member: tarfile.TarInfo) -> str | None:
    """Why the member's xattrs may not be set: an overlayfs one (redirects, opaque
    directories, origins act on the layer's say-so), or a name with a NUL byte."""
    for key in member.pax_headers:
        if not key.startswith(XATTR_PAX_PREFIX):
            continue
        name = key[len(XATTR_PAX_PREFIX):]
        if name.startswith(OVERLAY_XATTR_PREFIXES):
            return f"the overlayfs xattr {name}"
        if "\0" in name:
            return f"the xattr {name!r}, whose name has a NUL byte"
    return None


def refuse_unsafe(member: tarfile.TarInfo, name: str, what: str) -> tuple[str, str | None] | None:
    """Raise CorruptImageError for a member no output may write (its ``name`` cleaned);
    else its whiteout target, as :func:`whiteout_target` gives it."""
    problem = unsafe_reason(name) or link_problem(member)
    if problem:
        raise CorruptImageError(f"{what}: member {member.name!r} has {problem}; refused")
    whiteout = whiteout_target(name)
    problem = whiteout_problem(whiteout[1]) if whiteout else None
    if problem:
        raise CorruptImageError(f"{what}: whiteout {member.name!r} {problem}; refused")
    problem = xattr_problem(member)
    if problem:
        raise CorruptImageError(f"{what}: {member.name!r} carries {problem}; refused")
    return whiteout


def prepare_copy(member: tarfile.TarInfo, original_mtime: float) -> None:
    """Make ``member`` safe to write again after a filter changed it.

    Drops PAX records that tarfile regenerates (and that would otherwise override
    a changed field) while keeping the rest (xattrs, capabilities, ACLs, atime).
    The original sub-second mtime record is kept when the mtime was not changed.
    """
    pax = {k: v for k, v in member.pax_headers.items()
           if k not in _MIRRORS and not k.startswith("GNU.sparse.")}
    if member.mtime != original_mtime:
        pax.pop("mtime", None)
    member.pax_headers = pax
    if member.type == tarfile.GNUTYPE_SPARSE or member.sparse is not None:
        member.type, member.sparse = tarfile.REGTYPE, None  # written out in full
    if not member.isreg():
        member.size = 0
