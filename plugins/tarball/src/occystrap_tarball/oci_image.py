"""Reads one image from an OCI layout (``index.json`` + ``blobs/``) in any store."""

from __future__ import annotations

from typing import Any

from occystrap_core import mediatypes as mt
from occystrap_core.api import Image, Layer
from occystrap_core.errors import (
    CorruptImageError,
    ImageNotFoundError,
    UnsupportedError,
)
from occystrap_core.oci import platform as platforms
from occystrap_core.types import Platform

from .metadata import ANNOTATION_IMAGE_NAME, ANNOTATION_REF, parse_json, read_blob
from .references import split_reference
from .stores import Store

_MAX_DEPTH = 4


def describe_entry(i: int, entry: dict[str, Any]) -> str:
    notes = entry.get("annotations") or {}
    label = notes.get(ANNOTATION_IMAGE_NAME) or notes.get(ANNOTATION_REF)
    plat = entry.get("platform")
    if not label and isinstance(plat, dict):
        label = f"{plat.get('os')}/{plat.get('architecture')}"
    return f"[{i}] {label or '(unnamed)'} {entry.get('digest')}"


def _matches(entry: dict[str, Any], ref: str) -> bool:
    notes = entry.get("annotations") or {}
    names = {notes.get(ANNOTATION_REF), notes.get(ANNOTATION_IMAGE_NAME)}
    return ref in names


def _name_of(entry: dict[str, Any]) -> tuple[str | None, str | None]:
    notes = entry.get("annotations") or {}
    if notes.get(ANNOTATION_IMAGE_NAME):
        return split_reference(notes[ANNOTATION_IMAGE_NAME])
    ref = notes.get(ANNOTATION_REF)
    if not ref:
        return None, None
    if "/" in ref or ":" in ref:  # a full reference rather than just a tag
        return split_reference(ref)
    return None, ref


def _pick_platform(entries: list[dict[str, Any]], want: Platform, what: str) -> dict[str, Any]:
    found = [platforms.of_descriptor(e) for e in entries]
    choice = platforms.best(want, found)
    if choice is None:
        raise ImageNotFoundError(f"{what} has no image for platform {want} "
                                 f"(available: {platforms.describe(found)})")
    return entries[choice]


def _manifests(doc: dict[str, Any], what: str) -> list[dict[str, Any]]:
    entries = doc.get("manifests")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CorruptImageError(f"{what} has no valid 'manifests' list")
    return entries


def select_entry(index: dict[str, Any], where: str, platform: Platform, *, ref: str | None,
                 position: int | None, option: str) -> dict[str, Any]:
    """The top-level ``index.json`` entry the user asked for."""
    entries = _manifests(index, f"{where} index.json")
    choices = "; ".join(describe_entry(i, e) for i, e in enumerate(entries))
    if position is not None:
        if not 0 <= position < len(entries):
            raise ImageNotFoundError(f"{where} has no image at index {position} "
                                     f"(available: {choices or 'none'})")
        return entries[position]
    if ref is not None:
        entries = [e for e in entries if _matches(e, ref)]
        if not entries:
            raise ImageNotFoundError(f"{where} has no image {ref!r} "
                                     f"(available: {choices or 'none'})")
    if not entries:
        raise ImageNotFoundError(f"{where} holds no image")
    if len(entries) == 1:
        return entries[0]
    if all(platforms.of_descriptor(e) for e in entries):  # one image, several platforms
        return _pick_platform(entries, platform, where)
    raise ImageNotFoundError(f"{where} holds {len(entries)} images; pick one with "
                             f"?{option}=NAME or ?index=N: {choices}")


def load_oci_image(store: Store, where: str, platform: Platform, *, ref: str | None = None,
                   position: int | None = None, option: str = "ref") -> Image:
    what = f"{where} index.json"
    index = parse_json(store.read_bytes("index.json", what), what)
    top = select_entry(index, where, platform, ref=ref, position=position, option=option)
    name, tag = _name_of(top)

    entry = top
    for _ in range(_MAX_DEPTH):
        media_type = entry.get("mediaType")
        data = read_blob(store, entry, "manifest")
        doc = parse_json(data, f"manifest {entry.get('digest')}")
        media_type = doc.get("mediaType") or media_type
        if media_type in mt.INDEXES or "manifests" in doc:
            entry = _pick_platform(_manifests(doc, "image index"), platform,
                                   f"index {entry.get('digest')}")
            continue
        if media_type in mt.SCHEMA1:
            raise UnsupportedError("Docker schema 1 manifests are not supported")
        return _image_from_manifest(store, doc, data, media_type or mt.OCI_MANIFEST, name, tag)
    raise CorruptImageError(f"{where}: image indexes nested too deeply")


def _image_from_manifest(store: Store, doc: dict[str, Any], data: bytes, media_type: str,
                         name: str | None, tag: str | None) -> Image:
    config_desc = doc.get("config")
    layer_descs = doc.get("layers")
    if not isinstance(config_desc, dict) or not isinstance(layer_descs, list):
        raise CorruptImageError("manifest lacks a config or layers")
    config = read_blob(store, config_desc, "image config")
    config_json = parse_json(config, "image config")
    diff_ids = (config_json.get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layer_descs):
        raise CorruptImageError(f"manifest lists {len(layer_descs)} layers but the config "
                                f"has {len(diff_ids)} diff_ids")
    layers = []
    for i, (d, diff_id) in enumerate(zip(layer_descs, diff_ids)):
        if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
            raise CorruptImageError(f"manifest layer {i} is not a valid descriptor")
        layer_type = d.get("mediaType") or mt.OCI_LAYER_GZIP
        uncompressed = mt.compression_of(layer_type) == "none"
        layers.append(Layer(index=i, media_type=layer_type, digest=d["digest"],
                            size=d.get("size"), diff_id=diff_id,
                            uncompressed_size=d.get("size") if uncompressed else None,
                            urls=tuple(d.get("urls") or ()),
                            annotations=d.get("annotations") or {}))
    plat = platforms.of_config(config_json)
    return Image(name=name, tag=tag, config=config, layers=tuple(layers),
                 config_media_type=config_desc.get("mediaType") or mt.OCI_CONFIG,
                 manifest=data, manifest_media_type=media_type, platform=plat)
