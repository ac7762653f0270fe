"""The ``docker://`` output: a docker-save archive streamed to ``POST /images/load``.

The core's archive output writes the archive (``RepoTags`` = the destination) into the
run's temp dir; it is then sent as the request body in chunks. A daemon that
keeps another name (or only the ID) gets the destination tag added afterwards.
"""

from __future__ import annotations

import logging
import os
import secrets

from occystrap_core.api import Image, ImageOutput, LayerData, OutputResult
from occystrap_core.archive.output import ArchiveOutput
from occystrap_core.context import Context
from occystrap_core.errors import ImageNotFoundError, URIError
from occystrap_core.types import ResolvedURI

from .daemon import Daemon, socket_path
from .reference import parse_reference

log = logging.getLogger("occystrap.docker")


class DockerOutput(ImageOutput):
    def __init__(self, uri: ResolvedURI, ctx: Context):
        ref = parse_reference(uri.target, "docker")
        if ref.digest:
            raise URIError(f"{uri.raw}: a docker:// destination takes a tag, not a digest")
        self.ref = ref
        self.ctx = ctx
        self.daemon = Daemon(socket_path(uri.options.get("socket")), ctx.settings, ctx.retry)
        self._archive: str | None = None
        self._tar: ArchiveOutput | None = None

    def start(self, image: Image) -> None:
        image.refuse_non_tar("docker://")
        self.daemon.ping()  # fail before any layer is written if the daemon is unreachable
        self._archive = os.path.join(self.ctx.temp_dir,
                                     f"docker-load-{secrets.token_hex(8)}.tar")
        # The full name: Podman stores a name without a registry as localhost/NAME,
        # Docker shows docker.io/library/NAME as NAME either way.
        archive_uri = ResolvedURI(scheme="tar", target=self._archive,
                                  raw=f"tar://{self._archive}", options={"tag": str(self.ref)})
        self._tar = ArchiveOutput(archive_uri, self.ctx)
        self._tar.start(image)

    def add_layer(self, data: LayerData) -> None:
        assert self._tar is not None, "start() first"
        self._tar.add_layer(data)

    def finish(self, image: Image) -> OutputResult:
        assert self._tar is not None and self._archive is not None, "start() first"
        written = self._tar.finish(image)
        # The image ID is the config digest, or with containerd's store the manifest's.
        ids = {d for d in (image.config_digest, written.manifest_digest) if d}
        try:
            with open(self._archive, "rb") as archive:
                loaded = self.daemon.load(archive)
            os.unlink(self._archive)
            image_id = self._ensure_tagged(ids, loaded, image.config_digest)
        finally:
            self.daemon.close()
        return OutputResult(location=f"docker://{self.ref.familiar}", details={
            "image_id": image_id, "loaded": loaded, "socket": self.daemon.where})

    def _ensure_tagged(self, ids: set[str], loaded: list[str], fallback: str) -> str:
        """The destination's image ID, after tagging the loaded image if it lacks the name."""
        target = str(self.ref)
        try:
            current = str(self.daemon.inspect(target).get("Id"))
        except ImageNotFoundError:
            current = None
        if current in ids:
            return current
        source = next((r for r in loaded if r in ids), loaded[0] if loaded else fallback)
        log.info("the daemon did not name the loaded image %s; tagging %s", target, source)
        self.daemon.tag(source, self.ref.name, self.ref.tag or "latest")
        return str(self.daemon.inspect(target).get("Id"))

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.abort()
        if self._archive and os.path.exists(self._archive):
            os.unlink(self._archive)
        self.daemon.close()
