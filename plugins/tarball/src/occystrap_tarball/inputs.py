"""The ``tar://`` and ``oci-layout://`` inputs."""

from __future__ import annotations

import os
from functools import cached_property
from typing import BinaryIO, ContextManager

from occystrap_core.api import Image, ImageInput, Layer
from occystrap_core.context import Context
from occystrap_core.errors import (
    CorruptImageError,
    ImageNotFoundError,
    UnsupportedError,
    URIError,
)
from occystrap_core.types import ResolvedURI

from .metadata import blob_path
from .stores import DirStore, Store, TarStore


def local_path(uri: ResolvedURI) -> str:
    if not uri.target:
        raise URIError(f"{uri.raw!r} names no path")
    return os.path.expanduser(uri.target)


class _StoreInput(ImageInput):
    """Layers are files of a store: named by path (docker-save) or by digest (OCI).

    Every :meth:`open_layer` opens its own file handle, so layers may be read in
    parallel.
    """

    parallel = True

    def __init__(self) -> None:
        self._paths: list[str] = []

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def open_layer(self, layer: Layer) -> ContextManager[BinaryIO]:
        if self._paths:
            return self.store.open(self._paths[layer.index])
        if not layer.digest:
            raise CorruptImageError(f"layer {layer.index} has no digest")
        path = blob_path(layer.digest, f"layer {layer.index} digest")
        if not self.store.exists(path):
            raise ImageNotFoundError(f"layer {layer.index} blob {layer.digest} is missing"
                                     + (" (a non-distributable layer)" if layer.foreign else ""))
        return self.store.open(path)


class TarInput(_StoreInput):
    """A docker-save archive or an OCI archive, optionally compressed."""

    def __init__(self, uri: ResolvedURI, ctx: Context):
        super().__init__()
        self.path = local_path(uri)
        self.ctx = ctx
        self.wanted: str | None = uri.options.get("image")
        self.position: int | None = uri.options.get("index")

    @cached_property
    def store(self) -> TarStore:  # type: ignore[override]
        return TarStore(self.path, lambda: self.ctx.temp_dir)

    @cached_property
    def _image(self) -> Image:
        from .docker_archive import load_docker_image
        from .oci_image import load_oci_image

        store = self.store
        if store.exists("manifest.json"):
            image, self._paths = load_docker_image(store, image=self.wanted,
                                                   position=self.position)
            return image
        if store.exists("index.json"):
            return load_oci_image(store, self.path, self.ctx.settings.platform,
                                  ref=self.wanted, position=self.position, option="image")
        if store.exists("repositories"):
            raise UnsupportedError(f"{self.path} is a pre-1.10 docker-save archive without "
                                   f"manifest.json; re-save it with a current Docker")
        raise CorruptImageError(f"{self.path} has neither manifest.json nor index.json; "
                                f"it is not an image archive")

    def image(self) -> Image:
        return self._image


class LayoutInput(_StoreInput):
    """An OCI image layout directory."""

    def __init__(self, uri: ResolvedURI, ctx: Context):
        super().__init__()
        self.path = local_path(uri)
        self.ctx = ctx
        self.ref: str | None = uri.options.get("ref")
        self.position: int | None = uri.options.get("index")
        self._store = DirStore(self.path)

    @property
    def store(self) -> DirStore:
        return self._store

    @cached_property
    def _image(self) -> Image:
        from .oci_image import load_oci_image

        if not os.path.isdir(self.path):
            raise ImageNotFoundError(f"{self.path} is not a directory")
        if not self.store.exists("index.json"):
            raise ImageNotFoundError(f"{self.path} is not an OCI image layout (no index.json)")
        return load_oci_image(self.store, self.path, self.ctx.settings.platform,
                              ref=self.ref, position=self.position, option="ref")

    def image(self) -> Image:
        return self._image
