"""The ``tar://`` and ``oci-layout://`` sources.

An archive from ``docker save`` (``manifest.json``; legacy, Podman and Docker 25+
layouts) holds images without manifests of their own: it is read as one image. An
OCI archive or an OCI layout holds manifests and blobs: the engine reads them, and
picks platforms from its indexes.
"""

from __future__ import annotations

import os

from occystrap_core.api import ImageInput, ImageSource
from occystrap_core.archive.docker_save import DockerArchiveInput
from occystrap_core.archive.layout import OciStoreSource
from occystrap_core.archive.stores import DirStore, TarStore
from occystrap_core.context import Context
from occystrap_core.errors import (
    CorruptImageError,
    ImageNotFoundError,
    UnsupportedError,
    URIError,
)
from occystrap_core.types import ResolvedURI
from occystrap_core.uri import local_path

from .layout_uri import layout_target


def open_tar(uri: ResolvedURI, ctx: Context) -> ImageInput | ImageSource:
    """A ``tar://`` archive as what it holds: docker-save images, or an OCI layout
    (``tar://-``: read from stdin)."""
    path = local_path(uri)
    if path == "-":
        path = "/dev/stdin"
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
    path, digest = layout_target(uri)
    if digest and (uri.options.get("ref") is not None or uri.options.get("index") is not None):
        raise URIError(f"oci-layout://{path}@{digest} names one manifest: give no "
                       f"?ref= or ?index= with it")
    if not os.path.isdir(path):
        raise ImageNotFoundError(f"{path} is not a directory")
    store = DirStore(path)
    if not store.exists("index.json"):
        raise ImageNotFoundError(f"{path} is not an OCI image layout (no index.json)")
    return OciStoreSource(store, path, ref=uri.options.get("ref"),
                          position=uri.options.get("index"), option="ref", digest=digest)
