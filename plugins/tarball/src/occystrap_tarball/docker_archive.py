"""Reads one image from a docker-save archive (``manifest.json``).

Handles the legacy layout (``<id>/layer.tar``), podman's (``<id>/layer.tar``
symlinks to ``<diffid>.tar``) and Docker 25+'s (``blobs/sha256/<hex>``). Docker
stores uncompressed layer tars, whose sha256 is the diff_id; Docker 25+ with the
containerd store may keep compressed blobs, which are recognised by their magic.
"""

from __future__ import annotations

from typing import Any

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core import streams
from occystrap_core.api import Image, Layer
from occystrap_core.errors import (
    CorruptImageError,
    DigestMismatchError,
    ImageNotFoundError,
)
from occystrap_core.types import Platform

from .metadata import digest_of_path, parse_json
from .references import split_reference
from .stores import TarStore


def _entries(store: TarStore) -> list[dict[str, Any]]:
    entries = parse_json(store.read_bytes("manifest.json", "manifest.json"), "manifest.json", list)
    for i, e in enumerate(entries):
        if (not isinstance(e, dict) or not isinstance(e.get("Config"), str)
                or not isinstance(e.get("Layers"), list)
                or not all(isinstance(p, str) for p in e["Layers"])):
            raise CorruptImageError(f"manifest.json entry {i} lacks Config or Layers")
    if not entries:
        raise ImageNotFoundError(f"{store.source} holds no image")
    return entries


def _tags(entry: dict[str, Any]) -> list[str]:
    return [t for t in entry.get("RepoTags") or () if isinstance(t, str)]


def _select(entries: list[dict[str, Any]], where: str, image: str | None,
            position: int | None) -> tuple[dict[str, Any], str | None]:
    """The entry asked for and the reference to name it by."""
    choices = "; ".join(f"[{i}] {', '.join(_tags(e)) or '(untagged) ' + e['Config']}"
                        for i, e in enumerate(entries))
    if position is not None:
        if not 0 <= position < len(entries):
            raise ImageNotFoundError(f"{where} has no image at index {position} "
                                     f"(available: {choices})")
        entry = entries[position]
        if image is None:
            return entry, next(iter(_tags(entry)), None)
        entries = [entry]
    if image is not None:
        for entry in entries:
            for tag in _tags(entry):
                if tag == image or split_reference(tag)[0] == image:
                    return entry, tag
        raise ImageNotFoundError(f"{where} has no image {image!r} (available: {choices})")
    if len(entries) > 1:
        raise ImageNotFoundError(f"{where} holds {len(entries)} images; pick one with "
                                 f"?image=NAME:TAG or ?index=N: {choices}")
    return entries[0], next(iter(_tags(entries[0])), None)


def _layer(store: TarStore, i: int, path: str, diff_id: Any) -> Layer:
    if not isinstance(diff_id, str):
        raise CorruptImageError(f"config diff_id {i} is not a string")
    digests.validate(diff_id, f"diff_id of layer {i}")
    size = store.size(path)
    with store.open(path) as f:
        compression = streams.sniff(f)  # type: ignore[arg-type]
    stored = digest_of_path(path) if path.startswith("blobs/") else None
    if compression == "none":
        return Layer(index=i, media_type=mt.DOCKER_LAYER_TAR, digest=stored or diff_id, size=size,
                     diff_id=diff_id, uncompressed_size=size)
    return Layer(index=i, media_type=mt.layer_type("docker", compression), digest=stored,
                 size=size, diff_id=diff_id)


def load_docker_image(store: TarStore, *, image: str | None = None,
                      position: int | None = None) -> tuple[Image, list[str]]:
    """The image and the archive path of each of its layers."""
    where = store.source
    entry, ref = _select(_entries(store), where, image, position)
    config_path = entry["Config"]
    config = store.read_bytes(config_path, "image config")
    promised = digest_of_path(config_path)
    if promised and digests.of_bytes(config) != promised:
        raise DigestMismatchError(f"image config {config_path}", promised,
                                  digests.of_bytes(config))
    config_json = parse_json(config, "image config")
    diff_ids = (config_json.get("rootfs") or {}).get("diff_ids") or []
    paths = entry["Layers"]
    if len(diff_ids) != len(paths):
        raise CorruptImageError(f"manifest.json lists {len(paths)} layers but the config "
                                f"has {len(diff_ids)} diff_ids")
    layers = tuple(_layer(store, i, p, d) for i, (p, d) in enumerate(zip(paths, diff_ids)))
    name, tag = split_reference(ref) if ref else (None, None)
    plat = (Platform(config_json["os"], config_json["architecture"], config_json.get("variant"))
            if config_json.get("os") and config_json.get("architecture") else None)
    return Image(name=name, tag=tag, config=config, layers=layers,
                 config_media_type=mt.DOCKER_CONFIG, platform=plat), list(paths)
