"""An OCI image layout (``index.json`` + ``blobs/``) as a source, in a directory or
inside an archive: the engine asks for manifests and blobs, and picks platforms.

What the reference names is the ``index.json`` entry the user chose (``?ref=``,
``?index=``, or the only one). When every entry is one platform of one image (as
``skopeo copy --all`` and Docker 25 write them), ``index.json`` itself is that
image's index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import BinaryIO

from .. import digest as digests
from .. import mediatypes as mt
from ..api import Fetched, ImageSource, Layer
from ..errors import CorruptImageError, ImageNotFoundError
from ..oci import referrers
from ..oci.manifest import Descriptor, Index, parse
from ..oci.reference import split_stored
from .blobs import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF,
    blob_path,
    read_manifest,
)
from .stores import Store


def describe_entry(i: int, entry: Descriptor) -> str:
    notes = entry.annotations
    label = notes.get(ANNOTATION_IMAGE_NAME) or notes.get(ANNOTATION_REF)
    if not label and entry.platform:
        label = str(entry.platform)
    return f"[{i}] {label or '(unnamed)'} {entry.digest}"


def _without_referrers(index: Index, images: list[Descriptor]) -> Index:
    """``index.json`` as it would read without its referrer entries (several platform
    entries of one image are then read as that image's index)."""
    doc = json.loads(index.data)
    doc["manifests"] = [dict(e.raw) for e in images]
    data = json.dumps(doc, separators=(",", ":")).encode()
    return dataclasses.replace(index, data=data, digest=digests.of_bytes(data),
                               manifests=tuple(images))


def _name_of(entry: Descriptor) -> tuple[str | None, str | None]:
    notes = entry.annotations
    if notes.get(ANNOTATION_IMAGE_NAME):
        return split_stored(notes[ANNOTATION_IMAGE_NAME])
    ref = notes.get(ANNOTATION_REF)
    if not ref:
        return None, None
    if "/" in ref or ":" in ref:  # a full reference rather than just a tag
        return split_stored(ref)
    return None, ref


class OciStoreSource(ImageSource):
    """The layout in ``store`` (a directory or an archive), named ``where``."""

    parallel = True

    def __init__(self, store: Store, where: str, *, ref: str | None, position: int | None,
                 option: str, digest: str | None = None):
        self.store = store
        self.path = where
        self.wanted = ref
        self.digest = digest  # a manifest by digest, listed in index.json or not
        self.position = position
        self.option = option
        self._top: Fetched | None = None

    def _index(self) -> Index:
        what = f"{self.path} index.json"
        data = self.store.read_bytes("index.json", what)
        index = parse(data, mt.OCI_INDEX, what)
        if not isinstance(index, Index):
            raise CorruptImageError(f"{what} is not an image index")
        return index

    def manifest(self, digest: str | None = None) -> Fetched:
        if digest is not None:
            return self._blob_manifest(digest, None)
        if self._top is None:
            self._top = self._select()
        return self._top

    def _select(self) -> Fetched:
        """The ``index.json`` entry asked for (or ``index.json`` itself, see module doc)."""
        index = self._index()
        entries = list(index.manifests)
        if self.digest is not None:
            listed = [e for e in entries if e.digest == self.digest]
            self.name, self.tag = _name_of(listed[0]) if listed else (None, None)
            return self._blob_manifest(self.digest, listed[0].media_type if listed else None)
        choices = "; ".join(describe_entry(i, e) for i, e in enumerate(entries)) or "none"
        if self.position is not None:
            if not 0 <= self.position < len(entries):
                raise ImageNotFoundError(f"{self.path} has no image at index {self.position} "
                                         f"(available: {choices})")
            entries = [entries[self.position]]
        elif self.wanted is not None:
            entries = [e for e in entries if self.wanted in (
                e.annotations.get(ANNOTATION_REF), e.annotations.get(ANNOTATION_IMAGE_NAME))]
            if not entries:
                raise ImageNotFoundError(f"{self.path} has no image {self.wanted!r} "
                                         f"(available: {choices})")
        else:  # referrers are listed untagged, with their artifactType: not what is meant
            images = [e for e in entries if not e.artifact_type]
            if images and len(images) < len(entries):
                entries = images
                index = _without_referrers(index, images)
        if not entries:
            raise ImageNotFoundError(f"{self.path} holds no image")
        if len(entries) > 1:
            if not all(e.platform for e in entries):
                raise ImageNotFoundError(f"{self.path} holds {len(entries)} images; pick one "
                                         f"with ?{self.option}=NAME or ?index=N: {choices}")
            self.name, self.tag = _name_of(entries[0])
            return Fetched(index.data, index.media_type)  # one image, several platforms
        self.name, self.tag = _name_of(entries[0])
        return self._blob_manifest(entries[0].digest, entries[0].media_type)

    def referrers(self, digest: str) -> list[Descriptor]:
        """The manifests ``index.json`` lists whose subject is ``digest``."""
        found = []
        for entry in self._index().manifests:
            if entry.media_type not in mt.MANIFESTS + mt.INDEXES or not self.store.exists(
                    blob_path(entry.digest, "manifest digest")):
                continue
            fetched = self._blob_manifest(entry.digest, entry.media_type)
            doc = parse(fetched.data, fetched.media_type, f"{self.path}: {entry.digest}")
            if doc.subject is not None and doc.subject.digest == digest:
                found.append(referrers.descriptor_of(doc))
        return found

    def _blob_manifest(self, digest: str, media_type: str | None) -> Fetched:
        path = blob_path(digest, "manifest digest")
        return Fetched(read_manifest(self.store, path, digest, self.path), media_type)

    def open_blob(self, descriptor: Descriptor) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._open(descriptor, "blob")

    def open_layer(self, layer: Layer) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._open(layer.as_descriptor(), f"layer {layer.index} blob")

    def _open(self, descriptor: Descriptor, what: str
              ) -> contextlib.AbstractContextManager[BinaryIO]:
        path = blob_path(descriptor.digest, f"{what} digest")
        if not self.store.exists(path):
            foreign = " (a non-distributable layer)" if descriptor.media_type in mt.FOREIGN else ""
            raise ImageNotFoundError(f"{self.path}: {what} {descriptor.digest} "
                                     f"is missing{foreign}")
        return self.store.open(path)
