"""The ``dockerpush://`` input: the daemon pushes the image to an embedded registry.

Unlike ``docker save``, a push hands over the compressed blobs and the manifest
a registry would get, so the image can be passed on unchanged. The image is
tagged ``127.0.0.1:PORT/occystrap-push:RANDOM`` for the push, and that name is
removed afterwards whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Iterator
from functools import cached_property
from typing import Any, BinaryIO

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.api import Image, ImageInput, Layer
from occystrap_core.context import Context
from occystrap_core.errors import (
    CorruptImageError,
    ImageNotFoundError,
    OccystrapError,
    TransportError,
    UnsupportedError,
)
from occystrap_core.types import Platform, ResolvedURI

from .daemon import Daemon, socket_path
from .push_registry import LOOPBACK, Manifest, PushRegistry
from .reference import parse_reference

log = logging.getLogger("occystrap.dockerpush")

PUSH_REPOSITORY = "occystrap-push"
DEFAULT_TIMEOUT = 300.0


class DockerPushInput(ImageInput):
    parallel = True

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.ref = parse_reference(uri.target, "dockerpush")
        self.ctx = ctx
        self.timeout: float = uri.options.get("timeout") or DEFAULT_TIMEOUT
        self.daemon = Daemon(socket_path(uri.options.get("socket")), ctx.settings)
        self._registry: PushRegistry | None = None

    @cached_property
    def _image(self) -> Image:
        from .certs import server_context

        ref = self.ref.familiar
        self.daemon.inspect(ref)  # a clear "not found" before the registry starts
        registry = self._registry = PushRegistry(
            tempfile.mkdtemp(prefix="dockerpush-", dir=self.ctx.temp_dir),
            server_context(self.ctx.temp_dir))
        registry.start()
        try:
            manifest = self._push(ref, registry)
        finally:
            registry.stop()
        return self._build(self._one_platform(manifest, registry), registry)

    def _push(self, ref: str, registry: PushRegistry) -> Manifest:
        repo, tag = f"{LOOPBACK}:{registry.port}/{PUSH_REPOSITORY}", secrets.token_hex(8)
        deadline = time.monotonic() + self.timeout
        too_slow = (f"the daemon did not push {ref} within {self.timeout:g} s "
                    f"(allow longer with ?timeout=SECONDS)")
        self.daemon.tag(ref, repo, tag)
        try:
            self.daemon.push(repo, tag, deadline)
        except TransportError:
            if time.monotonic() >= deadline:
                raise TransportError(too_slow) from None
            raise
        finally:
            self._untag(f"{repo}:{tag}")
        manifest = registry.wait_manifest(PUSH_REPOSITORY, tag,
                                          max(deadline - time.monotonic(), 0.0))
        if manifest is None:
            raise TransportError(too_slow)
        return manifest

    def _untag(self, temporary: str) -> None:
        try:
            self.daemon.untag(temporary)
        except OccystrapError as e:  # the run's own outcome matters more
            log.warning("could not remove the temporary tag %s: %s", temporary, e)

    def _one_platform(self, manifest: Manifest, registry: PushRegistry) -> Manifest:
        """The manifest, or the run's platform's from an index (Docker's containerd store)."""
        doc = _json_object(manifest.data)
        if manifest.media_type not in mt.INDEXES and "manifests" not in doc:
            return manifest
        want = self.ctx.settings.platform
        pushed = []
        for entry in doc.get("manifests") or ():
            if not isinstance(entry, dict) or not isinstance(entry.get("platform"), dict):
                continue
            platform = entry["platform"]
            child = registry.manifest(PUSH_REPOSITORY, str(entry.get("digest")))
            if child is None:  # a platform the daemon does not hold is not pushed
                continue
            got = Platform(str(platform.get("os")), str(platform.get("architecture")),
                           platform.get("variant"))
            pushed.append(str(got))
            if (got.os, got.architecture) == (want.os, want.architecture) and \
                    (not want.variant or got.variant == want.variant):
                return child
        raise ImageNotFoundError(f"the daemon pushed no {want} image for {self.ref.familiar} (pushed: "
                                 f"{', '.join(pushed) or 'none'}); pick one with --platform")

    def _build(self, manifest: Manifest, registry: PushRegistry) -> Image:
        doc = _json_object(manifest.data)
        media_type = manifest.media_type
        if doc.get("schemaVersion") != 2 or \
                not isinstance(doc.get("config"), dict) or \
                not isinstance(doc.get("layers"), list):
            raise UnsupportedError(f"the daemon pushed an unsupported manifest ({media_type})")
        config_digest = digests.validate(str(doc["config"].get("digest")), "config digest")
        with self._open(registry, config_digest, "image config") as f:
            config = f.read()
        try:
            config_json = json.loads(config)
            diff_ids = config_json["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError):
            raise CorruptImageError("the pushed image config has no rootfs.diff_ids") from None
        plat = (Platform(config_json["os"], config_json["architecture"],
                         config_json.get("variant"))
                if config_json.get("os") and config_json.get("architecture") else None)
        config_type = doc["config"].get("mediaType") or mt.config_type(mt.family_of(media_type))
        return Image(name=self.ref.familiar_name, tag=self.ref.tag, config=config,
                     layers=_layers(doc["layers"], diff_ids), config_media_type=config_type,
                     manifest=manifest.data, manifest_media_type=media_type, platform=plat)

    @contextlib.contextmanager
    def _open(self, registry: PushRegistry, digest: str, what: str) -> Iterator[BinaryIO]:
        if registry.blob_size(digest) is None:
            raise ImageNotFoundError(f"the daemon did not push the {what} ({digest})")
        with open(registry.blob_path(digest), "rb") as f:
            yield f

    def image(self) -> Image:
        return self._image

    def open_layer(self, layer: Layer) -> contextlib.AbstractContextManager[BinaryIO]:
        assert self._registry is not None and layer.digest, "image() first"
        return self._open(self._registry, layer.digest, f"layer {layer.index}")

    def close(self) -> None:
        if self._registry is not None:
            self._registry.stop()
            self._registry.remove()
        self.daemon.close()


def _layers(descriptors: list[Any], diff_ids: Any) -> tuple[Layer, ...]:
    """The manifest's layer descriptors, each with its diff_id from the config."""
    if not isinstance(diff_ids, list):
        raise CorruptImageError("the pushed image config's rootfs.diff_ids is not a list")
    if len(diff_ids) != len(descriptors):
        raise CorruptImageError(f"the pushed manifest lists {len(descriptors)} layers but "
                                f"the config has {len(diff_ids)} diff_ids")
    layers = []
    for i, (d, diff_id) in enumerate(zip(descriptors, diff_ids)):
        if not isinstance(d, dict) or not isinstance(d.get("mediaType"), str) or \
                not isinstance(d.get("size"), int):
            raise CorruptImageError(f"the pushed manifest's layer {i} is malformed")
        layers.append(Layer(
            index=i, media_type=d["mediaType"], size=d["size"],
            digest=digests.validate(str(d.get("digest")), f"layer {i} digest"),
            diff_id=digests.validate(str(diff_id), f"diff_id of layer {i}"),
            urls=tuple(d.get("urls") or ()), annotations=dict(d.get("annotations") or {})))
    return tuple(layers)


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise CorruptImageError("the daemon pushed a manifest that is not a JSON object")
    return doc
