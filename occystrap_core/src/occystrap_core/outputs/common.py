"""Helpers shared by the local outputs: paths, atomic writes, re-hashing."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, BinaryIO, Callable

from .. import digest as digests
from .. import streams
from ..errors import CorruptImageError, OutputExistsError, URIError
from ..types import ResolvedURI


def local_path(uri: ResolvedURI) -> str:
    if not uri.target:
        raise URIError(f"{uri.raw!r} names no path")
    return os.path.abspath(os.path.expanduser(uri.target))


# Directories made to hold extracted trees are their owner's alone, as Docker's own
# storage is: setuid programs and device nodes from an image are inside.
PRIVATE = 0o700


def refuse_dangling_link(path: str) -> None:
    """Refuse a directory destination that is a symbolic link to a missing path: nothing
    is created through it (and mkdir would say "File exists", about a path that does not)."""
    if os.path.islink(path) and not os.path.exists(path):
        raise OutputExistsError(f"{path} is a symbolic link to {os.readlink(path)!r}, which "
                                f"does not exist")


def ensure_dir(path: str, mode: int = 0o777) -> bool:
    """Make ``path`` a directory (``mode``) if it is missing; True if this call made it."""
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise OutputExistsError(f"{path} exists and is not a directory")
        return False
    refuse_dangling_link(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise URIError(f"directory {parent} does not exist")
    os.mkdir(path, mode)
    return True


# a layer's directory or file, or a config, named by the hex of its digest
_DIGEST_NAMED = re.compile(r"[0-9a-f]{64}(\.json)?")


def claim_dir(path: str, mode: int, scheme: str, owns: Callable[[str], bool],
              wrote_manifest: Callable[[Any], bool]) -> bool:
    """Make ``path`` the directory of a layers-by-digest output (``scheme``): a new or
    empty one, or one the same output wrote before, whose ``manifest.json`` it replaces.
    Anything else (a home directory given by mistake, a skopeo ``dir:`` directory) is
    refused before a byte is written, as skopeo refuses a directory without its marker.
    ``owns(name)`` says which other names the output writes. True if this call made it."""
    if ensure_dir(path, mode):
        return True
    with os.scandir(path) as entries:
        for entry in entries:
            if not (_DIGEST_NAMED.fullmatch(entry.name) or entry.name == "manifest.json"
                    or owns(entry.name)):
                raise OutputExistsError(
                    f"{path} holds {entry.name!r}, which {scheme} does not write; give a new "
                    f"or empty directory, or one {scheme} wrote before")
    manifest = os.path.join(path, "manifest.json")
    try:
        with open(manifest, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return False  # a run killed before its manifest: the layers are reused
    except (OSError, ValueError):
        doc = None
    if not wrote_manifest(doc):
        raise OutputExistsError(f"{manifest} is not one {scheme} wrote; give a new or empty "
                                f"directory")
    return False


def copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copy ``src`` to ``dst``; the sha256 digest and size of what was copied."""
    reader = streams.HashingReader(src)
    size = streams.copy(streams.buffered(reader), dst)
    return reader.digest, size


def hash_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(streams.CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def hex_name(digest: str, what: str) -> str:
    """The hex part of a sha256 digest, safe as a file name."""
    if not digest.startswith("sha256:"):
        raise CorruptImageError(f"{what} {digest!r} is not a sha256 digest")
    return digests.hex_of(digest)
