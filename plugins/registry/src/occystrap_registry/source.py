"""``registry://`` input: manifests, platform selection, config and streamed layer blobs."""

from __future__ import annotations

import contextlib
import copy
import logging
import dataclasses
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

import httpx

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.api import Image, ImageIndex, ImageInput, IndexEntry, Layer, ManifestSummary
from occystrap_core.errors import (CorruptImageError, DigestMismatchError, ImageNotFoundError,
                                   UnsupportedError)
from occystrap_core.oci import platform as platforms
from occystrap_core.oci.reference import parse, registry_key
from occystrap_core.transport.blobs import open_blob
from occystrap_core.types import Platform, ResolvedURI

from . import manifests
from .client import FACTORY, Repository
from .locations import KEY as LOCATIONS
from .locations import BlobLocations

if TYPE_CHECKING:
    from occystrap_core.context import Context

log = logging.getLogger("occystrap.registry")

_MAX_INDEX_DEPTH = 4
_MAX_MANIFEST = 4 * 1024 * 1024  # the OCI distribution spec's suggested limit
_MAX_CONFIG = 64 * 1024 * 1024
# buildx attestation manifests name the image they describe with this annotation
_REFERENCE_DIGEST = "vnd.docker.reference.digest"


class RegistryInput(ImageInput):
    parallel = True

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.ctx = ctx
        self.ref = parse(uri.target)
        self.repo = Repository(ctx, self.ref, uri, "input")
        wanted = uri.options.get("platform")
        self.platform: Platform = platforms.parse(wanted) if wanted else ctx.settings.platform
        listed = uri.options.get("platforms")
        self.platform_list = [platforms.parse(p) for p in listed.split(",")] if listed else []
        self.all_platforms = bool(uri.options.get("all_platforms")) or ctx.settings.all_platforms
        self.locations: BlobLocations = ctx.shared(LOCATIONS, BlobLocations)
        self._depth = 0  # how many indexes up the one being copied is nested
        self._top: manifests.Manifest | None = None
        self._resolved: tuple[manifests.Manifest, Platform | None] | None = None
        self._image: Image | None = None

    # --- manifests -----------------------------------------------------------

    def fetch_manifest(self, ref: str) -> manifests.Manifest:
        """GET a manifest by tag or digest, verified (see :meth:`_get_verified`)."""
        pinned = digests.is_valid(ref)
        what = f"manifest {self.ref.path}{'@' if pinned else ':'}{ref}"
        response, confirmed = self._get_verified(
            self.repo.url("manifests", ref), what, ref if pinned else None, _MAX_MANIFEST,
            headers={"Accept": manifests.ACCEPT})
        manifest = manifests.parse(response.content, response.headers.get("Content-Type"),
                                   f"registry {self.repo.host}: {what}")
        if not confirmed:
            log.warning("%s: %s sent no Docker-Content-Digest; the digest %s was computed "
                        "from the bytes received, not confirmed by the registry", what,
                        self.repo.host, manifest.digest)
        return manifest

    def _get_verified(self, url: str, what: str, digest: str | None, limit: int,
                      headers: dict[str, str] | None = None) -> tuple[httpx.Response, bool]:
        """GET a document and check it against ``digest`` or, when None (a manifest by
        tag), the registry's Docker-Content-Digest: a proxy rewriting the bytes cannot go
        unnoticed. A mismatch (bytes broken on the way) is asked for again under the
        run's retry policy. Also says whether the digest was confirmed at all."""
        attempt = 0
        while True:
            response = self.repo.request("GET", url, what=what, headers=headers)
            if len(response.content) > limit:
                raise CorruptImageError(f"{what}: larger than {limit} bytes")
            stated = digest or response.headers.get("Docker-Content-Digest")
            if not stated:
                return response, False
            try:
                algorithm = digests.validate(stated, "digest").split(":", 1)[0]
            except CorruptImageError:
                raise CorruptImageError(f"{what}: {self.repo.host} sent the malformed "
                                        f"Docker-Content-Digest {stated!r}") from None
            actual = digests.of_bytes(response.content, algorithm)
            if actual == stated:
                return response, True
            error = DigestMismatchError(f"{what} from {self.repo.host}", stated, actual)
            if not self.ctx.retry.allows(attempt):
                raise error
            self.ctx.retry.wait(attempt, str(error), f"GET {url}")
            attempt += 1

    def top_manifest(self) -> manifests.Manifest:
        """What the reference points at (fetched once)."""
        if self._top is None:
            self._top = self.fetch_manifest(self.ref.ref)
        return self._top

    def resolve_manifest(self) -> tuple[manifests.Manifest, Platform | None]:
        """The image manifest for our platform, descending through (nested) indexes."""
        if self._resolved is None:
            self._resolved = self._resolve()
        return self._resolved

    def _resolve(self) -> tuple[manifests.Manifest, Platform | None]:
        manifest = self.top_manifest()
        chosen: Platform | None = None
        for _ in range(_MAX_INDEX_DEPTH):
            if not manifest.is_index:
                return manifest, chosen
            entry, chosen = self.select(manifest)
            manifest = self.fetch_manifest(
                digests.validate(str(entry.get("digest")), "index entry digest"))
        raise UnsupportedError(f"{self.ref}: indexes nested more than {_MAX_INDEX_DEPTH} deep")

    def select(self, index: manifests.Manifest) -> tuple[dict, Platform | None]:
        entries = index.entries
        found = [platforms.of_descriptor(entry) for entry in entries]
        choice = platforms.best(self.platform, found)
        if choice is not None:
            return entries[choice], found[choice]
        nested = [e for e in entries if e.get("mediaType") in mt.INDEXES]
        if len(nested) == 1 and not any(found):
            return nested[0], None  # a platform-less nested index: look inside
        raise ImageNotFoundError(
            f"{self.ref}: no image for platform {self.platform} (available: "
            f"{platforms.describe(found)}); choose one with --platform")

    # --- several platforms ---------------------------------------------------

    def index(self) -> ImageIndex | None:
        if not (self.all_platforms or self.platform_list):
            return None
        top = self.top_manifest()
        if not top.is_index:
            return None  # one image: copied as it is
        if self._depth >= _MAX_INDEX_DEPTH:
            raise UnsupportedError(f"{self.ref}: indexes nested more than "
                                   f"{_MAX_INDEX_DEPTH} deep")
        return ImageIndex(top.data, top.media_type, tuple(
            IndexEntry(entry, lambda entry=entry: self._child(
                str(entry["digest"]), nested=entry.get("mediaType") in mt.INDEXES))
            for entry in self._select_entries(top)), name=self.ref.name, tag=self.ref.tag)

    def _select_entries(self, index: manifests.Manifest) -> list[dict]:
        """Every entry, or those of the listed platforms and their attestations."""
        entries = index.entries
        for entry in entries:
            digests.validate(str(entry.get("digest")), "index entry digest")
        if not self.platform_list:
            return entries  # nested indexes included: copied whole too
        if any(entry.get("mediaType") in mt.INDEXES for entry in entries):
            raise UnsupportedError(f"{self.ref}: choosing platforms in an index that nests "
                                   f"indexes is not supported; copy them all with "
                                   f"--all-platforms, or one with --platform")
        found = {id(e): p for e in entries if (p := platforms.of_descriptor(e)) is not None}
        kept = [e for e in entries if id(e) in found and any(
            platforms.matches(w, found[id(e)]) for w in self.platform_list)]
        missing = [w for w in self.platform_list
                   if not any(platforms.matches(w, found[id(e)]) for e in kept)]
        if missing:
            raise ImageNotFoundError(
                f"{self.ref}: no image for platform {', '.join(map(str, missing))} (available: "
                f"{platforms.describe(found.values())})")
        described = {e["digest"] for e in kept}
        return [e for e in entries if any(e is k for k in kept) or (
            id(e) not in found
            and (e.get("annotations") or {}).get(_REFERENCE_DIGEST) in described)]

    def _child(self, digest: str, nested: bool = False) -> RegistryInput:
        """The manifest ``digest`` of our index as an input of its own: an image, or
        (``nested``) an index to copy whole."""
        child = copy.copy(self)  # the same repository, client and run-level state
        child.ref = dataclasses.replace(self.ref, digest=digest)
        child.platform_list, child.all_platforms = [], nested
        child._depth = self._depth + 1
        child._top = child._resolved = child._image = None
        return child

    # --- the image -----------------------------------------------------------

    def manifest_summary(self) -> ManifestSummary:
        manifest, _ = self.resolve_manifest()
        layers = manifest.layers([])
        self._record(manifest, layers)
        return ManifestSummary(manifest.digest, manifest.media_type, layers)

    def _record(self, manifest: manifests.Manifest, layers: tuple[Layer, ...]) -> None:
        """Tell the run's blob map that this repository holds these blobs (for mounts)."""
        self.locations.add(registry_key(self.ref.domain), self.ref.path,
                           [manifest.config.get("digest")]
                           + [layer.digest for layer in layers if not layer.foreign])

    def image(self) -> Image:
        if self._image is None:
            self._image = self._load()
        return self._image

    def _load(self) -> Image:
        manifest, platform = self.resolve_manifest()
        cfg = manifest.config
        config_digest = digests.validate(cfg["digest"], "config digest")
        if (cfg.get("size") or 0) > _MAX_CONFIG:
            raise CorruptImageError(f"{self.ref}: config larger than {_MAX_CONFIG} bytes")
        response, _ = self._get_verified(self.repo.url("blobs", config_digest),
                                         f"config {config_digest}", config_digest, _MAX_CONFIG)
        config = response.content
        image = Image(name=self.ref.name, tag=self.ref.tag, config=config, layers=(),
                      config_media_type=cfg.get("mediaType") or mt.DOCKER_CONFIG,
                      manifest=manifest.data, manifest_media_type=manifest.media_type,
                      platform=platform)
        layers = manifest.layers(image.diff_ids)
        self._record(manifest, layers)
        return dataclasses.replace(image, layers=layers,
                                   platform=platform or platforms.of_config(image.config_json))

    # --- layers --------------------------------------------------------------

    def open_layer(self, layer: Layer) -> contextlib.AbstractContextManager[BinaryIO]:
        if layer.foreign:
            return self._open_foreign(layer)
        return self._open(self.repo.client, self.repo.url("blobs", layer.digest or ""), layer)

    def _open(self, client: httpx.Client, url: str,
              layer: Layer) -> contextlib.AbstractContextManager[BinaryIO]:
        # No digest or size here: LayerData verifies both, hashing once is enough.
        return open_blob(client, url, policy=self.ctx.retry,
                         what=f"{self.ref.path}: layer {layer.index} blob {layer.digest}")

    def _open_foreign(self, layer: Layer) -> contextlib.AbstractContextManager[BinaryIO]:
        """Foreign (non-distributable) layers are fetched from their ``urls``, never from
        the registry, which by definition does not hold them."""
        for url in layer.urls:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.netloc:
                client = self.ctx.http_client(FACTORY, parts.netloc, scheme=parts.scheme)
                return self._open(client, url, layer)
        raise UnsupportedError(
            f"{self.ref}: layer {layer.index} ({layer.digest}) is a foreign layer "
            f"({layer.media_type}) with no http(s) URL to fetch it from")
