"""Verification of an OCI layout just written, re-read from disk (directory or archive).

Cheap by default: manifests, indexes and configs are re-read and re-hashed, every
blob they name is checked for presence and size, and the config's diff_ids against
the layers. With ``full`` every blob is re-hashed as well, and each layer
decompressed to check its diff_id. Problems are returned, not raised.
"""

from __future__ import annotations

from typing import Any

from .. import mediatypes as mt
from .. import streams
from ..engine import Reader, Selection
from ..errors import CorruptImageError, OccystrapError
from ..oci import platform as platforms
from ..oci.manifest import Descriptor, Index, Manifest
from .blobs import blob_path, parse_json, read_blob
from .layout import OciStoreSource
from .stores import Store


def _reader(store: Store) -> Reader:
    """The engine's reader of the layout in ``store``: its one index walker."""
    return Reader(OciStoreSource(store, store.source, ref=None, position=None, option="ref"),
                  Selection(platforms.host()))


def verify_descriptor(store: Store, descriptor: Any, what: str, full: bool) -> list[str]:
    """Problems with the manifest or index ``descriptor`` names, and all it references."""
    reader = _reader(store)
    try:
        top = Descriptor.parse(descriptor, what)
        node = reader.fetch(top.digest)
    except OccystrapError as e:
        return [f"{what}: {e}"]
    problems = []
    if len(node.data) != top.size:
        problems.append(f"{what}: {len(node.data)} bytes, the descriptor says {top.size}")
    for label, found in reader.walk(node, what):
        if isinstance(found, OccystrapError):
            problems.append(f"{label}: {found}")
        elif isinstance(found, Manifest):
            problems += _verify_image(store, found, label, full)
    return problems


def _verify_image(store: Store, manifest: Manifest, what: str, full: bool) -> list[str]:
    """An image: config and layers, diff_ids against layers. An artifact: its blobs."""
    try:
        config = read_blob(store, manifest.config.json(), f"{what} config")
        diff_ids: list[Any] = []
        if manifest.is_image:
            rootfs = parse_json(config, f"{what} config").get("rootfs")
            found = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
            diff_ids = found if isinstance(found, list) else []
    except OccystrapError as e:
        return [str(e)]
    layers = manifest.layers
    problems = []
    if manifest.is_image and len(diff_ids) != len(layers):
        problems.append(f"{what}: {len(layers)} layers but {len(diff_ids)} diff_ids in the config")
    for i, layer in enumerate(layers):
        diff_id = diff_ids[i] if i < len(diff_ids) else None
        try:
            _verify_layer(store, layer, diff_id, f"{what} layer {i}", full)
        except OccystrapError as e:
            problems.append(str(e))
    return problems


def _verify_layer(store: Store, layer: Descriptor, diff_id: str | None, what: str,
                  full: bool) -> None:
    digest, size = layer.digest, layer.size
    path = blob_path(digest, f"{what} digest")
    if not store.exists(path):
        raise CorruptImageError(f"{what}: blob {digest} is missing")
    actual = store.size(path)
    if actual != size:
        raise CorruptImageError(f"{what}: blob {digest} is {actual} bytes, the manifest says "
                                f"{size}")
    compression = mt.compression_of(layer.media_type)
    if compression == "none" and diff_id is not None and diff_id != digest:
        raise CorruptImageError(f"{what}: uncompressed blob {digest} is not the config's "
                                f"diff_id {diff_id}")
    if not full:
        return
    with store.open(path) as f:
        blob = streams.HashingReader(f, digest, actual, what=f"{what} blob")
        if diff_id is None or compression in (None, "none"):
            blob.drain()  # an uncompressed blob's digest is its diff_id, checked above
            return
        # A corrupt blob reports its digest mismatch rather than the codec's complaint.
        tar = streams.decompressing(streams.buffered(blob), compression, what,
                                    before_error=blob.drain)
        streams.HashingReader(tar, diff_id, what=f"{what} (uncompressed)").drain()
        blob.drain()  # bytes after the compressed stream are hashed too


def referenced_blobs(store: Store) -> set[str]:
    """The hex names of every blob ``index.json`` reaches: manifests, indexes, configs
    and layers, however deep. Raises when ``index.json`` cannot be read."""
    index = parse_json(store.read_bytes("index.json", "index.json"), "index.json")
    reader = _reader(store)
    found: set[str] = set()
    for i, entry in enumerate(index.get("manifests") or ()):
        try:
            top = Descriptor.parse(entry, f"index.json entry {i}")
            found.add(top.digest)
            node = reader.fetch(top.digest)
        except OccystrapError:
            continue  # missing or unreadable: nothing further to follow
        for _, doc in reader.walk(node, "index.json"):
            if isinstance(doc, Index):
                found.update(d.digest for d in doc.manifests)
            elif isinstance(doc, Manifest):
                found.update(d.digest for d in (doc.config, *doc.layers))
            if not isinstance(doc, OccystrapError):
                found.add(doc.digest)
    return {digest.split(":", 1)[1] for digest in found}
