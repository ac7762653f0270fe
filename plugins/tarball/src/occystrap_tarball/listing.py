"""An OCI image layout's tags: the ref names (``org.opencontainers.image.ref.name``) of
its ``index.json`` entries, so that ``occystrap tags oci-layout://DIR`` and ``sync`` can
list a layout as they list a registry repository. The layout is one repository, named
``""``."""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import urlencode

from occystrap_core.api import BulkItem, ImageLister
from occystrap_core.archive.blobs import ANNOTATION_REF, parse_json
from occystrap_core.archive.stores import DirStore
from occystrap_core.context import Context
from occystrap_core.errors import CorruptImageError, ImageNotFoundError
from occystrap_core.types import ResolvedURI

from .layout_uri import layout_target


class LayoutLister(ImageLister):
    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.path, _ = layout_target(uri)  # the layout: a digest names no tag

    def _entries(self) -> list[dict[str, Any]]:
        store = DirStore(self.path)
        if not store.exists("index.json"):
            raise ImageNotFoundError(f"{self.path} is not an OCI image layout (no index.json)")
        what = f"{self.path} index.json"
        index = parse_json(store.read_bytes("index.json", what), what)
        entries = index.get("manifests")
        if not isinstance(entries, list):
            raise CorruptImageError(f"{what} has no valid 'manifests' list")
        return [e for e in entries if isinstance(e, dict)]

    def repository(self, target: str) -> str:
        return ""

    def repositories(self) -> Iterator[str]:
        yield ""

    def tags(self, repository: str) -> Iterator[str]:
        for entry in self._entries():
            ref = ref_of(entry)
            if ref:
                yield ref

    knows_digests = True

    def digest(self, repository: str, tag: str) -> str | None:
        found = None
        for entry in self._entries():  # the last entry of a ref is the one read
            if ref_of(entry) == tag:
                found = entry.get("digest")
        return found if isinstance(found, str) else None

    def item(self, repository: str, tag: str) -> BulkItem:
        query = f"?{urlencode({'ref': tag})}" if tag else ""
        return BulkItem(uri=f"oci-layout://{self.path}{query}", fields={"tag": tag})


def ref_of(entry: dict[str, Any]) -> str | None:
    """The ref name of an ``index.json`` entry, if it has one."""
    notes = entry.get("annotations")
    ref = notes.get(ANNOTATION_REF) if isinstance(notes, dict) else None
    return ref if isinstance(ref, str) and ref else None
