"""Parsing of the manifests a registry serves: image manifests and indexes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.api import Layer
from occystrap_core.errors import CorruptImageError, UnsupportedError

# Schema1 is listed so that an old registry answers with it rather than a 404,
# and we can say clearly that it is not supported.
ACCEPT = ", ".join((mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST,
                    mt.DOCKER_MANIFEST, mt.DOCKER_SCHEMA1_SIGNED, mt.DOCKER_SCHEMA1))


@dataclass(frozen=True)
class Manifest:
    """Manifest bytes as served, with their media type and digest."""

    data: bytes
    media_type: str
    digest: str
    doc: dict[str, Any]

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [m for m in self.doc.get("manifests", []) if isinstance(m, dict)]

    @property
    def config(self) -> dict[str, Any]:
        config = self.doc.get("config")
        if not isinstance(config, dict) or "digest" not in config:
            raise CorruptImageError(f"manifest {self.digest} has no config descriptor")
        return config

    def layers(self, diff_ids: list[str]) -> tuple[Layer, ...]:
        result = []
        for i, d in enumerate(self.doc.get("layers") or []):
            if not isinstance(d, dict) or "digest" not in d:
                raise CorruptImageError(f"manifest {self.digest}: layer {i} has no digest")
            result.append(Layer(
                index=i,
                media_type=str(d.get("mediaType") or mt.DOCKER_LAYER_GZIP),
                digest=digests.validate(d["digest"], f"layer {i} digest"),
                size=d.get("size"),
                diff_id=diff_ids[i] if i < len(diff_ids) else None,
                urls=tuple(d.get("urls") or ()),
                annotations=d.get("annotations") or {},
            ))
        return tuple(result)


def _media_type(header: str | None, doc: dict[str, Any]) -> str:
    """The manifest's media type: the body's own field, else Content-Type, else its shape."""
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = (header or "").split(";")[0].strip()
    if header in mt.MANIFESTS + mt.INDEXES + mt.SCHEMA1:
        return header
    # OCI allows omitting mediaType; tell the kind from the fields present.
    if "manifests" in doc:
        return mt.OCI_INDEX
    if isinstance(doc.get("config"), dict):
        return mt.manifest_type(mt.family_of(doc["config"].get("mediaType")))
    return header


def parse(data: bytes, content_type: str | None, where: str) -> Manifest:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CorruptImageError(f"{where}: manifest is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CorruptImageError(f"{where}: manifest is not a JSON object")
    media_type = _media_type(content_type, doc)
    if doc.get("schemaVersion") == 1 or media_type in mt.SCHEMA1:
        raise UnsupportedError(
            f"{where}: Docker schema 1 manifests are not supported (deprecated since "
            f"2017); re-push the image with a current docker or skopeo")
    if media_type not in mt.MANIFESTS + mt.INDEXES:
        raise UnsupportedError(f"{where}: unsupported manifest media type {media_type!r}")
    return Manifest(data, media_type, digests.of_bytes(data), doc)
