"""The ``tar://`` and ``oci-layout://`` sources.

An archive from ``docker save`` (``manifest.json``; legacy, Podman and Docker 25+
layouts) holds images without manifests of their own: it is read as one image. An
OCI archive or an OCI layout holds manifests and blobs: the engine reads them, and
picks platforms from its indexes.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import BinaryIO, ContextManager

from occystrap_core.api import Image, ImageInput, ImageSource, Layer
from occystrap_core.context import Context
from occystrap_core.errors import CorruptImageError, ImageNotFoundError, UnsupportedError, URIError
from occystrap_core.types import ResolvedURI

from .oci_source import OciStoreSource
from .stores import DirStore, TarStore


def local_path(uri: ResolvedURI) -> str:
    if not uri.target:
        raise URIError(f"{uri.raw!r} names no path")
    return os.path.expanduser(uri.target)


class DockerArchiveInput(ImageInput):
    """One image of a ``docker save`` archive; every layer is read through a file
    handle of its own, so layers may be read in parallel."""

    parallel = True

    def __init__(self, store: TarStore, wanted: str | None, position: int | None):
        self.store = store
        self.wanted = wanted
        self.position = position
        self._paths: list[str] = []

    @cached_property
    def _image(self) -> Image:
        from .docker_archive import load_docker_image

        image, self._paths = load_docker_image(self.store, image=self.wanted,
                                               position=self.position)
        self.name, self.tag = image.name, image.tag
        return image

    def image(self) -> Image:
        return self._image

    def open_layer(self, layer: Layer) -> ContextManager[BinaryIO]:
        return self.store.open(self._paths[layer.index])


def open_tar(uri: ResolvedURI, ctx: Context) -> ImageInput | ImageSource:
    """A ``tar://`` archive as what it holds: docker-save images, or an OCI layout."""
    path = local_path(uri)
    store = TarStore(path, lambda: ctx.temp_dir)
    wanted, position = uri.options.get("image"), uri.options.get("index")
    if store.exists("manifest.json"):
        return DockerArchiveInput(store, wanted, position)
    if store.exists("index.json"):
        return OciStoreSource(store, path, ref=wanted, position=position, option="image")
    if store.exists("repositories"):
        raise UnsupportedError(f"{path} is a pre-1.10 docker-save archive without "
                               f"manifest.json; re-save it with a current Docker")
    raise CorruptImageError(f"{path} has neither manifest.json nor index.json; "
                            f"it is not an image archive")


def open_layout(uri: ResolvedURI, ctx: Context) -> OciStoreSource:
    path = local_path(uri)
    if not os.path.isdir(path):
        raise ImageNotFoundError(f"{path} is not a directory")
    store = DirStore(path)
    if not store.exists("index.json"):
        raise ImageNotFoundError(f"{path} is not an OCI image layout (no index.json)")
    return OciStoreSource(store, path, ref=uri.options.get("ref"),
                          position=uri.options.get("index"), option="ref")
