"""Checked reading of the JSON documents and blobs archives and layouts hold."""

from __future__ import annotations

import json
from typing import Any

from .. import digest as digests
from ..errors import (
    NOT_JSON,
    CorruptImageError,
    DigestMismatchError,
    ImageNotFoundError,
)
from .stores import Store

ANNOTATION_REF = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"  # full reference, as Docker 25+ writes


def parse_json(data: bytes, what: str, kind: type = dict) -> Any:
    try:
        value = json.loads(data)
    except NOT_JSON as e:
        raise CorruptImageError(f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, kind):
        raise CorruptImageError(f"{what} is not a JSON {'list' if kind is list else 'object'}")
    return value


def read_manifest(store: Store, name: str, digest: str, where: str) -> bytes:
    """The manifest ``digest`` stored as ``name``, verified against its digest."""
    if not store.exists(name):
        raise ImageNotFoundError(f"{where}: manifest {digest} is missing")
    data = store.read_bytes(name, f"manifest {digest}")
    actual = digests.of_bytes(data, digest.split(":", 1)[0])
    if actual != digest:
        raise CorruptImageError(f"{where}: manifest {digest} hashes to {actual}")
    return data


def blob_path(digest: str, what: str) -> str:
    """``blobs/<algorithm>/<hex>`` for a validated digest (never escapes the store)."""
    algo, hexpart = digests.validate(digest, what).split(":", 1)
    return f"blobs/{algo}/{hexpart}"


def digest_of_path(path: str) -> str | None:
    """The digest a file name promises: ``blobs/sha256/<hex>`` or ``<hex>.json``."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[-3] == "blobs":
        candidate = f"{parts[-2]}:{parts[-1]}"
    else:
        candidate = "sha256:" + parts[-1].removesuffix(".json")
    return candidate if digests.is_valid(candidate) else None


def check_bytes(data: bytes, digest: str | None, size: int | None, what: str) -> bytes:
    if size is not None and len(data) != size:
        raise CorruptImageError(f"{what}: size mismatch, expected {size} bytes, got {len(data)}")
    if digest:
        actual = digests.of_bytes(data, digests.validate(digest, what).split(":", 1)[0])
        if actual != digest:
            raise DigestMismatchError(what, digest, actual)
    return data


def read_blob(store: Store, descriptor: dict[str, Any], what: str) -> bytes:
    """A small blob (config, manifest) named by ``descriptor``, checked against it."""
    digest = descriptor.get("digest")
    if not isinstance(digest, str):
        raise CorruptImageError(f"{what} descriptor has no digest")
    path = blob_path(digest, f"{what} digest")
    if not store.exists(path):
        raise ImageNotFoundError(f"{what} blob {digest} is missing")
    size = descriptor.get("size")
    return check_bytes(store.read_bytes(path, what), digest,
                       size if isinstance(size, int) else None, what)
