"""The rules that turn one image format into another.

- An OCI image layout holds OCI documents only: a Docker manifest written into one
  becomes an OCI manifest (config and layer media types mapped alike), and a Docker
  manifest list an OCI index (skopeo, umoci and oci-image-tool refuse anything else).
- Docker has no zstd layer type: a manifest with zstd layers is an OCI manifest.
- An index listing an OCI manifest is an OCI index.

A converted document has a new digest: only an unconverted copy keeps the source's.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from .. import mediatypes as mt

_TO_OCI = {
    mt.DOCKER_MANIFEST: mt.OCI_MANIFEST,
    mt.DOCKER_MANIFEST_LIST: mt.OCI_INDEX,
    mt.DOCKER_CONFIG: mt.OCI_CONFIG,
    mt.DOCKER_LAYER_TAR: mt.OCI_LAYER_TAR,
    mt.DOCKER_LAYER_GZIP: mt.OCI_LAYER_GZIP,
    mt.DOCKER_FOREIGN_LAYER_GZIP: mt.OCI_LAYER_ND_GZIP,
}


def oci_type(media_type: str) -> str:
    """The OCI media type for a Docker one; anything else as it is."""
    return _TO_OCI.get(media_type, media_type)


def manifest_family(family: str, layer_types: Iterable[str]) -> str:
    """``"oci"`` when any layer is zstd (Docker cannot say so), else ``family``."""
    if any(mt.compression_of(t) == "zstd" for t in layer_types):
        return "oci"
    return family


def index_media_type(media_type: str, entry_types: Iterable[str]) -> str:
    """An index listing any OCI document is an OCI index."""
    if media_type == mt.DOCKER_MANIFEST_LIST and any("vnd.oci." in t for t in entry_types):
        return mt.OCI_INDEX
    return media_type


def index_document(doc: dict[str, Any], media_type: str) -> bytes:
    """``doc`` (an index) serialised with its media type set to ``media_type``."""
    if doc.get("mediaType") != media_type:
        doc = {**doc, "mediaType": media_type}
    return json.dumps(doc, separators=(",", ":")).encode()
