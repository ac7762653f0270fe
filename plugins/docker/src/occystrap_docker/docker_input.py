"""The ``docker://`` input: ``docker save`` streamed from the daemon into the run's temp dir.

The archive is spooled to disk in chunks, then read with the tarball plugin's
docker-save reader (legacy, Podman and Docker 25+ layouts; compressed layer
blobs are recognised by their magic), so memory use does not grow with the image.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from contextlib import AbstractContextManager
from functools import cached_property
from typing import TYPE_CHECKING, BinaryIO

from occystrap_core.api import Image, ImageInput, Layer
from occystrap_core.context import Context
from occystrap_core.errors import CorruptImageError
from occystrap_core.types import ResolvedURI

from .daemon import Daemon, socket_path
from .reference import parse_reference

if TYPE_CHECKING:
    from occystrap_tarball.stores import TarStore


class DockerInput(ImageInput):
    parallel = True  # every open_layer reads the spooled archive through its own handle

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.ref = parse_reference(uri.target, "docker")
        self.ctx = ctx
        self.daemon = Daemon(socket_path(uri.options.get("socket")), ctx.settings)
        self._archive: str | None = None
        self._store: TarStore | None = None
        self._paths: list[str] = []

    @cached_property
    def _image(self) -> Image:
        from occystrap_tarball.docker_archive import load_docker_image
        from occystrap_tarball.stores import TarStore

        ref = self.ref.familiar
        self.daemon.inspect(ref)  # a clear "not found" before anything is streamed
        fd, self._archive = tempfile.mkstemp(prefix="docker-save-", suffix=".tar",
                                             dir=self.ctx.temp_dir)
        with os.fdopen(fd, "wb") as f:
            self.daemon.export(ref, f)
        try:
            self._store = TarStore(self._archive, lambda: self.ctx.temp_dir)
            image, self._paths = load_docker_image(self._store, position=0)
        except CorruptImageError as e:
            raise CorruptImageError(f"the daemon at {self.daemon.where} sent an unreadable "
                                    f"archive of {ref}: {e}") from None
        # The daemon may list the image under a normalised or different name.
        return dataclasses.replace(image, name=self.ref.familiar_name, tag=self.ref.tag)

    def image(self) -> Image:
        return self._image

    def open_layer(self, layer: Layer) -> AbstractContextManager[BinaryIO]:
        assert self._store is not None, "image() first"
        return self._store.open(self._paths[layer.index])

    def close(self) -> None:
        self.daemon.close()
        if self._archive and os.path.exists(self._archive):
            os.unlink(self._archive)
