"""``registry://`` output: blob dedupe and mounts, passthrough or compressed uploads, manifest push.

Layers stored compressed (gzip or zstd) are uploaded byte for byte, straight from
the source: same digests, no recompression. Uncompressed layers, or any layer when
``?compression=`` asks for another format, are compressed to a temporary file first.
When nothing changed the image, the source manifest is pushed unchanged, so a
registry-to-registry copy is a faithful mirror with the same manifest digest.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.api import Image, ImageOutput, Layer, LayerData, OutputResult
from occystrap_core.errors import URIError
from occystrap_core.types import ResolvedURI

from . import compress
from .client import Repository
from .reference import parse, same_registry
from .upload import Session, Uploader

if TYPE_CHECKING:
    from occystrap_core.context import Context


class RegistryOutput(ImageOutput):
    requires_ordered_layers = False

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.ctx = ctx
        self.ref = parse(uri.target)
        self.compression: str | None = uri.options.get("compression")
        self.level: int | None = uri.options.get("level")
        compress.check(self.compression, self.level)
        self.repo = Repository(ctx, self.ref, uri, "output")
        self.uploader = Uploader(self.repo)
        self._lock = threading.Lock()
        self._warm = False
        self._family = "oci"
        self._mount_from: str | None = None
        self._sessions: dict[str, Session] = {}  # digest -> session left by a refused mount
        self._rewritten: dict[int, Layer] = {}  # index -> descriptor of a recompressed layer

    # --- before the layers ----------------------------------------------------

    def start(self, image: Image) -> None:
        self._family = image.family
        self._mount_from = self._mount_source(image)
        # Also the first authenticated request: bad credentials fail here, before any work.
        current = self._remote_digest()
        unchanged = image.manifest is not None and not any(
            self._target_compression(layer) for layer in image.layers)
        self._warm = unchanged and current == image.manifest_digest

    def _remote_digest(self) -> str | None:
        """The digest of the manifest the destination reference points at now, if any."""
        response = self.repo.request(
            "HEAD", self.repo.url("manifests", self.ref.ref), what=f"HEAD manifest {self.ref}",
            missing_ok=True, headers={"Accept": ", ".join(mt.MANIFESTS + mt.INDEXES)})
        if response.status_code == 404:
            return None
        return response.headers.get("Docker-Content-Digest")

    def _mount_source(self, image: Image) -> str | None:
        """The source repository, when it is on this registry (so blobs can be mounted)."""
        if not image.name:
            return None
        try:
            source = parse(image.name)
        except URIError:
            return None
        if same_registry(source.domain, self.ref.domain) and source.path != self.ref.path:
            return source.path
        return None

    def _target_compression(self, layer: Layer) -> str | None:
        """The compression to re-encode ``layer`` with, or None to upload it unchanged."""
        stored = layer.compression
        if layer.digest is None:
            return self.compression or "gzip"
        if self.compression is None:
            return "gzip" if stored == "none" else None
        return None if stored == self.compression else self.compression

    def wants_layer(self, layer: Layer) -> bool:
        if self._warm:
            return False
        if layer.foreign:
            return False  # never pushed: the manifest keeps pointing at its urls
        if self._target_compression(layer) is not None:
            return True  # its digest is known only after compressing (see add_layer)
        assert layer.digest is not None
        if self.uploader.exists(layer.digest):
            return False
        if self._mount_from:
            session = self.uploader.mount(layer.digest, self._mount_from)
            if session is None:
                self.ctx.stats.add("mounted")
                return False
            with self._lock:
                self._sessions[layer.digest] = session
        return True

    # --- layers ---------------------------------------------------------------

    def add_layer(self, data: LayerData) -> None:
        layer = data.layer
        target = self._target_compression(layer)
        if target is None:
            assert layer.digest is not None
            with self._lock:
                session = self._sessions.pop(layer.digest, None)
            self.uploader.upload(layer.digest, layer.size, data.open_blob, session)
            return
        with data.open_tar() as tar:
            spooled = compress.spool(tar, target, self.level, self.ctx.temp_dir)
        try:
            if not self.uploader.exists(spooled.digest):
                self.uploader.upload(spooled.digest, spooled.size,
                                     lambda: open(spooled.path, "rb"))
        finally:
            spooled.remove()
        new = dataclasses.replace(
            layer, media_type=mt.layer_type(self._family, target), digest=spooled.digest,
            size=spooled.size, diff_id=spooled.diff_id, urls=())
        with self._lock:
            self._rewritten[layer.index] = new

    # --- after the layers -----------------------------------------------------

    def finish(self, image: Image) -> OutputResult:
        location = f"registry://{self.ref.domain}/{self.ref.path}"
        if self._warm:
            suffix = f":{self.ref.tag}" if self.ref.tag else f"@{image.manifest_digest}"
            return OutputResult(location=location + suffix,
                                manifest_digest=image.manifest_digest,
                                details={"unchanged": True})
        self.uploader.push_bytes(image.config_digest, image.config)
        if image.manifest is not None and image.manifest_media_type and not self._rewritten:
            manifest, media_type = image.manifest, image.manifest_media_type
        else:
            layers = [self._rewritten.get(layer.index, layer) for layer in image.layers]
            manifest, media_type = image.build_manifest(layers, family=image.family)
        digest = digests.of_bytes(manifest)
        if self.ref.digest and self.ref.digest != digest:
            raise URIError(f"destination {self.ref} is pinned to {self.ref.digest}, but the "
                           f"manifest to push has digest {digest}")
        ref = self.ref.tag or digest
        response = self.repo.request("PUT", self.repo.url("manifests", ref),
                                     what=f"pushing manifest {self.ref.path}:{ref}",
                                     ok=(200, 201, 202), content=manifest,
                                     headers={"Content-Type": media_type})
        pushed = response.headers.get("Docker-Content-Digest") or digest
        suffix = f":{self.ref.tag}" if self.ref.tag else f"@{pushed}"
        return OutputResult(location=location + suffix, manifest_digest=pushed)

    def abort(self) -> None:
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            self.uploader.cancel(session)

