"""Docker and OCI media types, and what compression each one means."""

from __future__ import annotations

import re

_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
#: A media type as RFC 6838 names one, TYPE/SUBTYPE, without parameters (fullmatch it).
MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

OCI_EMPTY = "application/vnd.oci.empty.v1+json"  # the config of an artifact that needs none

MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
IMAGE_CONFIGS = (DOCKER_CONFIG, OCI_CONFIG)
INDEXES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
SCHEMA1 = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)

FOREIGN = (DOCKER_FOREIGN_LAYER_GZIP, OCI_LAYER_ND_TAR, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_ZSTD)

_LAYER_TYPES = {
    "docker": {"none": DOCKER_LAYER_TAR, "gzip": DOCKER_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD},
    "oci": {"none": OCI_LAYER_TAR, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD},
}


_COMPRESSION = {
    DOCKER_LAYER_TAR: "none", DOCKER_LAYER_GZIP: "gzip", DOCKER_FOREIGN_LAYER_GZIP: "gzip",
    OCI_LAYER_TAR: "none", OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_ND_TAR: "none", OCI_LAYER_ND_GZIP: "gzip", OCI_LAYER_ND_ZSTD: "zstd",
}


def compression_of(media_type: str) -> str | None:
    """``"gzip"``, ``"zstd"`` or ``"none"`` for a file system layer's media type; None
    for anything else: an artifact's blob is no layer, even a Helm chart's
    ``...tar+gzip`` (it is copied as it is, never decompressed or re-encoded)."""
    return _COMPRESSION.get(media_type.lower())


def family_of(media_type: str | None) -> str:
    """``"oci"`` or ``"docker"`` for a manifest or config media type."""
    return "oci" if media_type and "vnd.oci." in media_type else "docker"


def layer_type(family: str, compression: str) -> str:
    """The layer media type for a manifest family and compression.

    Docker has no zstd layer type; the OCI one is what Docker and containerd use.
    """
    return _LAYER_TYPES[family][compression]


def config_type(family: str) -> str:
    return OCI_CONFIG if family == "oci" else DOCKER_CONFIG


def manifest_type(family: str) -> str:
    return OCI_MANIFEST if family == "oci" else DOCKER_MANIFEST


def index_type(family: str) -> str:
    return OCI_INDEX if family == "oci" else DOCKER_MANIFEST_LIST
