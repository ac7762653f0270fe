"""Manifests and indexes: the one model, and the one place they are validated.

Docker schema 2 manifests and manifest lists, OCI manifests and indexes, and OCI
artifacts (an ``artifactType``, an empty or non-image config, layers that are not
tars, a ``subject``) all parse into :class:`Manifest` or :class:`Index`. The bytes
are kept as they were: copying a manifest never re-serialises it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .. import digest as digests
from .. import mediatypes as mt
from ..errors import NOT_JSON, CorruptImageError, UnsupportedError
from .platform import Platform, of_descriptor

MAX_MANIFEST = 4 * 1024 * 1024  # the distribution spec's suggested limit


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor; ``raw`` is the JSON object as written (key order kept)."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, obj: Any, what: str, default_type: str | None = None) -> Descriptor:
        """Validate a descriptor object; ``default_type`` stands in for a missing
        ``mediaType`` (old Docker manifests left it out of layers)."""
        if not isinstance(obj, dict):
            raise CorruptImageError(f"{what} is not a descriptor object")
        media_type = obj.get("mediaType", default_type)
        if not isinstance(media_type, str) or not media_type:
            raise CorruptImageError(f"{what} has no mediaType")
        digest = obj.get("digest")
        if not isinstance(digest, str):
            raise CorruptImageError(f"{what} has no digest")
        digests.validate(digest, f"{what} digest")
        size = obj.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CorruptImageError(f"{what} has no valid size")
        urls = obj.get("urls") or []
        annotations = obj.get("annotations") or {}
        if not (isinstance(urls, list) and all(isinstance(u, str) for u in urls)):
            raise CorruptImageError(f"{what}: urls is not a list of strings")
        if not (isinstance(annotations, dict)
                and all(isinstance(v, str) for v in annotations.values())):
            raise CorruptImageError(f"{what}: annotations is not a map of strings")
        artifact_type = obj.get("artifactType")
        return cls(media_type, digest, size, tuple(urls), annotations, of_descriptor(obj),
                   artifact_type if isinstance(artifact_type, str) else None, obj)

    def json(self) -> dict[str, Any]:
        """The JSON object: as written when it was parsed, else built."""
        if self.raw:
            return dict(self.raw)
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = self.platform.as_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


@dataclass(frozen=True)
class _Document:
    data: bytes
    media_type: str
    digest: str
    subject: Descriptor | None
    artifact_type: str | None
    annotations: Mapping[str, str]

    @property
    def family(self) -> str:
        return mt.family_of(self.media_type)


@dataclass(frozen=True)
class Manifest(_Document):
    """An image or artifact manifest."""

    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def is_image(self) -> bool:
        """A container image (an image config), rather than an artifact."""
        return self.config.media_type in mt.IMAGE_CONFIGS

    @property
    def has_file_system(self) -> bool:
        """An image whose layers are all tars: what filters and file system outputs
        work on (not an artifact, a signature, an attestation)."""
        return self.is_image and all(mt.compression_of(d.media_type) for d in self.layers)

    def extras(self) -> dict[str, Any]:
        """What an :class:`~occystrap_core.api.Image` keeps when its manifest is rebuilt."""
        out: dict[str, Any] = {}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.subject:
            out["subject"] = self.subject.json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @property
    def kind(self) -> str | None:
        """What an artifact is: its ``artifactType``, else its config's media type;
        None for an image."""
        if self.artifact_type:
            return self.artifact_type
        return None if self.is_image else self.config.media_type


@dataclass(frozen=True)
class Index(_Document):
    """An OCI index or a Docker manifest list."""

    manifests: tuple[Descriptor, ...]


def media_type_of(doc: Mapping[str, Any], content_type: str | None = None) -> str:
    """A document's media type: its own field, else the Content-Type it came with, else
    its shape (OCI lets a manifest leave the field out)."""
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    header = (content_type or "").split(";")[0].strip()
    if header in mt.MANIFESTS + mt.INDEXES + mt.SCHEMA1:
        return header
    if "manifests" in doc:
        return mt.OCI_INDEX
    config = doc.get("config")
    if isinstance(config, dict):
        return mt.DOCKER_MANIFEST if config.get("mediaType") == mt.DOCKER_CONFIG \
            else mt.OCI_MANIFEST
    return header


def parse(data: bytes, content_type: str | None = None, where: str = "manifest",
          ) -> Manifest | Index:
    """Validate ``data`` as a manifest or an index; raise :class:`CorruptImageError`
    (or :class:`UnsupportedError` for schema 1 and unknown kinds)."""
    if len(data) > MAX_MANIFEST:
        raise CorruptImageError(f"{where}: larger than {MAX_MANIFEST} bytes")
    try:
        doc = json.loads(data)
    except NOT_JSON as e:
        raise CorruptImageError(f"{where}: not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise CorruptImageError(f"{where}: not a JSON object")
    media_type = media_type_of(doc, content_type)
    if doc.get("schemaVersion") == 1 or media_type in mt.SCHEMA1:
        raise UnsupportedError(
            f"{where}: Docker schema 1 manifests are not supported (deprecated since 2017); "
            f"re-push the image with a current docker or skopeo")
    if media_type not in mt.MANIFESTS + mt.INDEXES:
        raise UnsupportedError(f"{where}: unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise CorruptImageError(f"{where}: schemaVersion is {doc.get('schemaVersion')!r}, not 2")
    subject = Descriptor.parse(doc["subject"], f"{where} subject") if "subject" in doc else None
    artifact_type = doc.get("artifactType") if isinstance(doc.get("artifactType"), str) else None
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise CorruptImageError(f"{where}: annotations is not a map")
    digest = digests.of_bytes(data)
    if media_type in mt.INDEXES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise CorruptImageError(f"{where}: no 'manifests' list")
        return Index(data, media_type, digest, subject, artifact_type, annotations, tuple(
            Descriptor.parse(e, f"{where} entry {i}") for i, e in enumerate(entries)))
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise CorruptImageError(f"{where}: no 'layers' list")
    default_layer = mt.layer_type(mt.family_of(media_type), "gzip")
    return Manifest(data, media_type, digest, subject, artifact_type, annotations,
                    config=Descriptor.parse(doc.get("config"), f"{where} config"),
                    layers=tuple(Descriptor.parse(d, f"{where} layer {i}", default_layer)
                                 for i, d in enumerate(layers)))
