"""Reads one image from a docker-save archive (``manifest.json``).

Handles the legacy layout (``<id>/layer.tar``), podman's (``<id>/layer.tar``
symlinks to ``<diffid>.tar``) and Docker 25+'s (``blobs/sha256/<hex>``). Docker
stores uncompressed layer tars, whose sha256 is the diff_id; Docker 25+ with the
containerd store may keep compressed blobs, which are recognised by their magic.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, BinaryIO, ContextManager

from .. import digest as digests
from .. import mediatypes as mt
from .. import streams
from ..api import Image, ImageInput, Layer
from ..errors import (
    CorruptImageError,
    DigestMismatchError,
    ImageNotFoundError,
)
from ..oci.platform import Platform
from ..oci.reference import split_stored
from .blobs import digest_of_path, parse_json
from .stores import Store


def read_entries(store: Store, name: str = "manifest.json") -> list[dict[str, Any]]:
    """The entries of a docker-save style manifest file, checked."""
    entries = parse_json(store.read_bytes(name, name), name, list)
    for i, e in enumerate(entries):
        if (not isinstance(e, dict) or not isinstance(e.get("Config"), str)
                or not isinstance(e.get("Layers"), list)
                or not all(isinstance(p, str) for p in e["Layers"])):
            raise CorruptImageError(f"{name} entry {i} lacks Config or Layers")
    return entries


def _entries(store: Store) -> list[dict[str, Any]]:
    entries = read_entries(store)
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
                if tag == image or split_stored(tag)[0] == image:
                    return entry, tag
        raise ImageNotFoundError(f"{where} has no image {image!r} (available: {choices})")
    if len(entries) > 1:
        raise ImageNotFoundError(f"{where} holds {len(entries)} images; pick one with "
                                 f"?image=NAME:TAG or ?index=N: {choices}")
    return entries[0], next(iter(_tags(entries[0])), None)


def _layer(store: Store, i: int, path: str, diff_id: Any) -> Layer:
    if not isinstance(diff_id, str):
        raise CorruptImageError(f"config diff_id {i} is not a string")
    digests.validate(diff_id, f"diff_id of layer {i}")
    size = store.size(path)
    with store.open(path) as f:
        compression = streams.sniff(streams.buffered(f))
    stored = digest_of_path(path) if path.startswith("blobs/") else None
    if compression == "none":
        return Layer(index=i, media_type=mt.DOCKER_LAYER_TAR, digest=stored or diff_id, size=size,
                     diff_id=diff_id, uncompressed_size=size)
    return Layer(index=i, media_type=mt.layer_type("docker", compression), digest=stored,
                 size=size, diff_id=diff_id)


def load_docker_image(store: Store, *, image: str | None = None,
                      position: int | None = None,
                      entries: list[dict[str, Any]] | None = None) -> tuple[Image, list[str]]:
    """The image and the archive path of each of its layers; ``entries``: those of
    the store's ``manifest.json`` unless given."""
    where = store.source
    entry, ref = _select(entries if entries is not None else _entries(store), where, image,
                         position)
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
    layers = tuple(_layer(store, i, p, d)
                   for i, (p, d) in enumerate(zip(paths, diff_ids, strict=True)))
    name, tag = split_stored(ref) if ref else (None, None)
    plat = (Platform(config_json["os"], config_json["architecture"], config_json.get("variant"))
            if config_json.get("os") and config_json.get("architecture") else None)
    return Image(name=name, tag=tag, config=config, layers=layers,
                 config_media_type=mt.DOCKER_CONFIG, platform=plat), list(paths)


class DockerArchiveInput(ImageInput):
    """One image of a ``docker save`` archive; every layer is read through a file
    handle of its own, so layers may be read in parallel."""

    parallel = True

    def __init__(self, store: Store, wanted: str | None, position: int | None,
                 entries: list[dict[str, Any]] | None = None):
        self.store = store
        self.wanted = wanted
        self.position = position
        self.entries = entries
        self._paths: list[str] = []

    @cached_property
    def _image(self) -> Image:
        image, self._paths = load_docker_image(self.store, image=self.wanted,
                                               position=self.position, entries=self.entries)
        self.name, self.tag = image.name, image.tag
        return image

    def image(self) -> Image:
        return self._image

    def open_layer(self, layer: Layer) -> ContextManager[BinaryIO]:
        return self.store.open(self._paths[layer.index])
