"""Verification of an OCI layout just written, re-read from disk (directory or archive).

Cheap by default: manifests, indexes and configs are re-read and re-hashed, every
blob they name is checked for presence and size, and the config's diff_ids against
the layers. With ``full`` every blob is re-hashed as well, and each layer
decompressed to check its diff_id. Problems are returned, not raised.
"""

from __future__ import annotations

from typing import Any

from occystrap_core import mediatypes as mt
from occystrap_core import streams
from occystrap_core.errors import CorruptImageError, OccystrapError

from .metadata import blob_path, parse_json, read_blob
from .stores import Store


def verify_descriptor(store: Store, descriptor: Any, what: str, full: bool) -> list[str]:
    """Problems with the manifest or index ``descriptor`` names, and all it references."""
    try:
        if not isinstance(descriptor, dict):
            return [f"{what}: descriptor is not a JSON object"]
        doc = parse_json(read_blob(store, descriptor, what), what)
    except OccystrapError as e:
        return [str(e)]
    if descriptor.get("mediaType") in mt.INDEXES or "manifests" in doc:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            return [f"{what}: no 'manifests' list"]
        return [p for i, entry in enumerate(entries)
                for p in verify_descriptor(store, entry, f"{what} entry {i}", full)]
    return _verify_image(store, doc, what, full)


def _verify_image(store: Store, manifest: dict[str, Any], what: str, full: bool) -> list[str]:
    try:
        config_descriptor = manifest.get("config")
        if not isinstance(config_descriptor, dict):
            return [f"{what}: no config descriptor"]
        config = parse_json(read_blob(store, config_descriptor, f"{what} config"),
                            f"{what} config")
    except OccystrapError as e:
        return [str(e)]
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        return [f"{what}: no 'layers' list"]
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        diff_ids = []
    problems = []
    if len(diff_ids) != len(layers):
        problems.append(f"{what}: {len(layers)} layers but {len(diff_ids)} diff_ids in the config")
    for i, layer in enumerate(layers):
        diff_id = diff_ids[i] if i < len(diff_ids) else None
        try:
            _verify_layer(store, layer, diff_id, f"{what} layer {i}", full)
        except OccystrapError as e:
            problems.append(str(e))
    return problems


def _verify_layer(store: Store, layer: Any, diff_id: str | None, what: str, full: bool) -> None:
    if not isinstance(layer, dict) or not isinstance(layer.get("digest"), str):
        raise CorruptImageError(f"{what}: descriptor has no digest")
    digest, size = layer["digest"], layer.get("size")
    path = blob_path(digest, f"{what} digest")
    if not store.exists(path):
        raise CorruptImageError(f"{what}: blob {digest} is missing")
    actual = store.size(path)
    if isinstance(size, int) and actual != size:
        raise CorruptImageError(f"{what}: blob {digest} is {actual} bytes, the manifest says "
                                f"{size}")
    compression = mt.compression_of(str(layer.get("mediaType") or ""))
    if compression == "none" and diff_id != digest:
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
    found: set[str] = set()
    pending = [d for d in index.get("manifests") or () if isinstance(d, dict)]
    while pending:
        descriptor = pending.pop()
        digest = descriptor.get("digest")
        if not isinstance(digest, str) or ":" not in digest or digest in found:
            continue
        found.add(digest)
        if descriptor.get("mediaType") not in mt.MANIFESTS + mt.INDEXES:
            continue  # a config or a layer: nothing further to follow
        try:
            doc = parse_json(read_blob(store, descriptor, "manifest"), "manifest")
        except OccystrapError:
            continue  # missing or unreadable: nothing further to follow
        for key in ("manifests", "layers"):
            pending += [d for d in doc.get(key) or () if isinstance(d, dict)]
        if isinstance(doc.get("config"), dict):
            pending.append(doc["config"])
    return {digest.split(":", 1)[1] for digest in found}
