"""The ``docker://`` input: ``docker save`` streamed from the daemon into the run's temp dir.

The archive is spooled to disk in chunks, then read with the core's
docker-save reader (legacy, Podman and Docker 25+ layouts; compressed layer
blobs are recognised by their magic), so memory use does not grow with the image.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from contextlib import AbstractContextManager
from functools import cached_property
from typing import BinaryIO

from occystrap_core.api import Image, ImageInput, Layer
from occystrap_core.archive.docker_save import DockerArchiveInput
from occystrap_core.archive.stores import TarStore
from occystrap_core.context import Context
from occystrap_core.errors import CorruptImageError, ImageNotFoundError
from occystrap_core.oci import platform as platforms
from occystrap_core.types import ResolvedURI

from .daemon import Daemon, socket_path
from .reference import DaemonReference


class DockerInput(ImageInput):
    parallel = True  # every open_layer reads the spooled archive through its own handle

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.asked = DaemonReference(uri.target, "docker")
        self.ref = self.asked.ref
        self.name, self.tag = self.ref.familiar_name, self.ref.tag
        self.ctx = ctx
        self.daemon = Daemon(socket_path(uri.options.get("socket")), ctx.settings, ctx.retry)
        self._archive: str | None = None
        self._saved: DockerArchiveInput | None = None

    @cached_property
    def _image(self) -> Image:
        # a clear "not found" before anything is streamed
        image_id = self.asked.image_id(self.daemon.inspect(self.asked.asked))
        if image_id:  # saved by its full ID; an ID names no image
            ref, self.name, self.tag = image_id, None, None
        else:
            ref = self.asked.asked
        # A daemon with a multi-platform store (Docker 28+) saves the platform asked for;
        # others hold one image per name, checked against the choice below.
        selection = self.selection
        wanted = selection.platform if selection and selection.chosen else None
        fd, self._archive = tempfile.mkstemp(prefix="docker-save-", suffix=".tar",
                                             dir=self.ctx.temp_dir)
        with os.fdopen(fd, "wb") as f:
            self.daemon.export(ref, f, wanted)
        try:
            store = TarStore(self._archive, lambda: self.ctx.temp_dir)
            self._saved = DockerArchiveInput(store, None, 0)
            image = self._saved.image()
        except CorruptImageError as e:
            raise CorruptImageError(f"the daemon at {self.daemon.where} sent an unreadable "
                                    f"archive of {ref}: {e}") from None
        if wanted and not (image.platform and platforms.matches(wanted, image.platform)):
            raise ImageNotFoundError(f"the daemon at {self.daemon.where} holds {ref} for "
                                     f"{image.platform or 'an unknown platform'}, not {wanted}")
        # The daemon may list the image under a normalised or different name.
        return dataclasses.replace(image, name=self.name, tag=self.tag)

    def image(self) -> Image:
        return self._image

    def open_layer(self, layer: Layer) -> AbstractContextManager[BinaryIO]:
        assert self._saved is not None, "image() first"
        return self._saved.open_layer(layer)

    def close(self) -> None:
        self.daemon.close()
        if self._archive and os.path.exists(self._archive):
            os.unlink(self._archive)
