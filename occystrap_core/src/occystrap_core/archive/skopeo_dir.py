"""The directory ``skopeo copy ... dir:PATH`` (and ``podman save --format docker-dir``)
writes, as a source: containers/image's directory transport.

``version`` says ``Directory Transport Version: 1.x``; ``manifest.json`` is the
manifest the image was copied with (an index after ``skopeo copy --all``), each
manifest of that index is ``<hex>.manifest.json``, and every blob is a file named by
the hex of its digest. The manifests and blobs are kept as they were, so the engine
reads it like a registry repository: digests are preserved, and every one verified.
"""

from __future__ import annotations

import contextlib
from typing import BinaryIO

from .. import digest as digests
from ..api import Fetched, ImageSource
from ..errors import ImageNotFoundError
from ..oci.manifest import Descriptor
from .blobs import read_manifest
from .stores import DirStore

VERSION_PREFIX = b"Directory Transport Version: "


def is_skopeo_dir(store: DirStore) -> bool:
    """Whether ``store`` is a containers/image ``dir:`` directory (by its ``version``)."""
    if not store.exists("version"):
        return False
    with store.open("version") as f:
        return f.read(len(VERSION_PREFIX)) == VERSION_PREFIX


def _hex(digest: str, what: str) -> str:
    """The file name of ``digest`` (validated, so it never leaves the directory)."""
    return digests.validate(digest, what).split(":", 1)[1]


class SkopeoDirSource(ImageSource):
    """The ``dir:`` directory in ``store``, named ``where``."""

    parallel = True

    def __init__(self, store: DirStore, where: str):
        self.store = store
        self.path = where

    def manifest(self, digest: str | None = None) -> Fetched:
        if digest is None:
            return Fetched(self.store.read_bytes("manifest.json", f"{self.path} manifest.json"))
        name = f"{_hex(digest, 'manifest digest')}.manifest.json"
        return Fetched(read_manifest(self.store, name, digest, self.path))

    def open_blob(self, descriptor: Descriptor) -> contextlib.AbstractContextManager[BinaryIO]:
        name = _hex(descriptor.digest, "blob digest")
        if not self.store.exists(name):
            raise ImageNotFoundError(f"{self.path}: blob {descriptor.digest} is missing")
        return self.store.open(name)

    def blob_size(self, digest: str) -> int | None:
        name = _hex(digest, "blob digest")
        return self.store.size(name) if self.store.exists(name) else None
