"""``registry://`` output: blob dedupe and mounts, passthrough or compressed uploads, manifest push.

Layers stored compressed (gzip or zstd) are uploaded byte for byte, straight from
the source: same digests, no recompression. Uncompressed layers, or any layer when
``?compression=`` asks for another format, are compressed to a temporary file first.
When nothing changed the image, the source manifest is pushed unchanged, so a
registry-to-registry copy is a faithful mirror with the same manifest digest.

A blob already in the repository is skipped; one the run knows in another
repository of the same registry (the run's :mod:`~occystrap_registry.locations`
map, or the layer cache's) is mounted from there. An index is pushed after its
images, which go by digest. A manifest for which nothing was written (every blob
there already) is not pushed when the destination holds it: a warm copy under
filters without a layer cache rebuilds it, and writes nothing.

With a layer cache (docs/cache.md), a layer to recompress whose compressed result
is known is not read when that blob is here or can be mounted here; a manifest the
same chain wrote before from the same source is pushed again once its blobs are
all here (:meth:`RegistryOutput.adopt_manifest`). What is uploaded, mounted and
compressed is recorded for later runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, ContextManager

import httpx

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.api import (
    Image,
    ImageIndex,
    ImageOutput,
    Layer,
    LayerData,
    ManifestSummary,
    Mounted,
    OutputResult,
)
from occystrap_core.errors import (
    CorruptImageError,
    ImageNotFoundError,
    OccystrapError,
    TransportError,
    UnsupportedError,
    URIError,
)
from occystrap_core.oci import convert, referrers
from occystrap_core.oci.manifest import Manifest, parse
from occystrap_core.oci.reference import parse as parse_reference
from occystrap_core.oci.reference import registry_key, same_registry
from occystrap_core.streams import CHUNK, Readable
from occystrap_core.transport.auth import SCOPES
from occystrap_core.transport.blobs import open_blob
from occystrap_core.transport.errors import error_codes, status_error
from occystrap_core.types import ResolvedURI

from . import compress, deletes
from .client import Repository
from .locations import (
    HEADS_KEY,
    LOCKS_KEY,
    BlobLocations,
    ManifestHeads,
    ManifestLocks,
    blob_locations,
)
from .plugin import COMPRESSION_OPTION
from .upload import Session, Uploader, check_digest_header

if TYPE_CHECKING:
    from occystrap_core.context import Context

MOUNT_TRIES = 3  # repositories a layer-cache hit tries to mount its blob from
CONFIG_PUSHES = "registry.config_pushes"
SMALL_REQUESTS = "registry.small_requests"
# a manifest PUT's error codes for a blob the repository lacks (distribution: the first)
BLOB_UNKNOWN = {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"}


def _run_pool(ctx: Context, key: str, workers: int, name: str) -> ThreadPoolExecutor:
    """The run's pool of threads under ``key``: made on first use, shut down with the run."""
    def build() -> ThreadPoolExecutor:
        pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
        ctx.call_on_close(pool.shutdown)
        return pool

    pool: ThreadPoolExecutor = ctx.shared(key, build)
    return pool


def _config_pushes(ctx: Context) -> ThreadPoolExecutor:
    """The run's threads that push image configs while the layers go up."""
    return _run_pool(ctx, CONFIG_PUSHES, max(4, ctx.settings.image_parallel), "config")


class RegistryOutput(ImageOutput):
    requires_ordered_layers = False

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.ctx = ctx
        self._uri = uri
        self.ref = parse_reference(uri.target)
        self.compression: str | None = uri.options.get("compression")
        self.level: int | None = uri.options.get("level")
        if self.compression is None:  # --compression / OCCYSTRAP_COMPRESSION, for every push
            self.compression = ctx.settings.plugin_options.get(COMPRESSION_OPTION)
            compress.check(self.compression, None, f"--{COMPRESSION_OPTION}")
        compress.check(self.compression, self.level)
        self.repo = Repository(ctx, self.ref, uri, "output")
        self.uploader = Uploader(self.repo)
        self.registry = registry_key(self.ref.domain)
        self.locations: BlobLocations = blob_locations(ctx)
        self.heads: ManifestHeads = ctx.shared(HEADS_KEY, ManifestHeads)
        self.manifest_lock: ManifestLocks = ctx.shared(LOCKS_KEY, ManifestLocks)
        self.location = f"registry://{self.ref.domain}/{self.ref.path}"
        self._lock = threading.Lock()
        self._remote: str | None = None
        self._remote_known = False  # the destination tag's digest was asked for
        self._depth = 0  # indexes open: their images (and nested ones) go by digest
        self._referrers = 0  # by_digest blocks open: what is written refers to an image
        self._claims: set[str] = set()  # digests this output is uploading for the whole run
        self._family = "oci"
        self._artifact = False  # the image being copied is an artifact: its blobs stay as they are
        self._mount_from: str | None = None
        self._sessions: dict[str, Session] = {}  # digest -> session left by a refused mount
        self._rewritten: dict[int, Layer] = {}  # index -> descriptor of a recompressed layer
        # (bytes, media type, its blobs' checks) of each manifest PUT, for verify()
        self._pushed: list[tuple[bytes, str, list[Future[str | None]] | None]] = []
        self._config: tuple[str, Future[None]] | None = None  # the config going up early
        # blobs uploaded or mounted and manifests pushed, and that count as each image or
        # index open began: a manifest for which none was written may be here already
        self._writes = 0
        self._marks: list[int] = []

    @property
    def cache_identity(self) -> str:
        """What this output does to an image's bytes: the compression of its layers."""
        return f"registry compression={self.compression or 'default'} " + \
            compress.step(self.compression or "gzip", self.level)

    # --- before the layers ----------------------------------------------------

    def existing_manifest(self, summary: ManifestSummary) -> OutputResult | None:
        if summary.media_type in mt.INDEXES and self.compression:
            return None  # its images may be recompressed: only copying them tells
        if any(self._target_compression(layer, summary.artifact) for layer in summary.layers):
            return None  # this copy would write another manifest
        if self._in_index:
            # a referrer's bytes, to see it listed; an index's image's presence
            response = self._by_digest("GET" if self._referrers else "HEAD", summary.digest)
            if response.status_code == 404:
                return None
            if self._referrers:
                self._keep_listed(summary.digest, response)
        elif self._remote_digest() != summary.digest or self.ref.digest not in (
                None, summary.digest):
            return None
        return OutputResult(location=self._where(summary.digest),
                            manifest_digest=summary.digest, details={"unchanged": True})

    def start(self, image: Image) -> None:
        self._family = image.family
        self._artifact = image.is_artifact
        self._mount_from = self._mount_source(image)
        self._rewritten = {}  # an output is reused for each image of an index
        self._marks.append(self._writes)
        if not self._in_index:
            self._remote_digest()  # the first authenticated request: bad credentials fail now
        if image.manifest is not None:  # the config finish() gets: it may go up right away,
            # off the critical path of the image's few sequential requests
            self._config = (image.config_digest, _config_pushes(self.ctx).submit(
                self._push_config, image.config_digest, image.config))

    def start_index(self, index: ImageIndex) -> None:
        self._depth += 1
        self._marks.append(self._writes)

    def _by_digest(self, method: str, digest: str) -> httpx.Response:
        """The manifest ``digest`` of this repository (404 when it lacks it)."""
        return self.repo.request(method, self.repo.url("manifests", digest), missing_ok=True,
                                 what=f"manifest {self.ref.path}@{digest}",
                                 headers={"Accept": ", ".join(mt.MANIFESTS + mt.INDEXES)})

    def _wrote(self) -> None:
        with self._lock:
            self._writes += 1

    def _held_already(self, manifest: bytes, media_type: str) -> OutputResult | None:
        """The unchanged result when the image or index just finished wrote nothing
        (no blob uploaded or mounted, no manifest pushed) and the destination holds
        ``manifest`` where it would go: a warm copy that had to rebuild it (filters
        without a layer cache, a rewritten index). At the top, the tag's digest, known
        since before the blobs; by digest, one HEAD (a referrer is pushed as before:
        pushing lists it where the registry keeps no referrers index). Anything
        written means the manifest is new: nothing is asked."""
        if self._marks.pop() != self._writes:
            return None
        digest = digests.of_bytes(manifest)
        if self._in_index:
            if self._referrers or self._by_digest("HEAD", digest).status_code == 404:
                return None
        elif self.ref.digest not in (None, digest) or self._remote_digest() != digest:
            return None
        return OutputResult(location=self._where(digest), manifest_digest=digest,
                            manifest_size=len(manifest), manifest_media_type=media_type,
                            details={"unchanged": True})

    def _remote_digest(self) -> str | None:
        """The digest of the manifest the destination reference points at (one HEAD)."""
        if not self._remote_known and self.ref.tag and not self.ref.digest:
            # a sync's HEAD of this tag moments ago answers it
            self._remote_known, self._remote = self.heads.take(
                self.repo.host, self.ref.path, self.ref.tag)
        if not self._remote_known:
            response = self.repo.request(
                "HEAD", self.repo.url("manifests", self.ref.ref),
                what=f"HEAD manifest {self.ref}", missing_ok=True,
                headers={"Accept": ", ".join(mt.MANIFESTS + mt.INDEXES)})
            self._remote = None if response.status_code == 404 else \
                response.headers.get("Docker-Content-Digest")
            self._remote_known = True
        return self._remote

    def _where(self, digest: str) -> str:
        if self.ref.tag and not self._in_index:
            return f"{self.location}:{self.ref.tag}"
        return f"{self.location}@{digest}"

    def _mount_source(self, image: Image) -> str | None:
        """The source repository, when it is on this registry (so blobs can be mounted)."""
        if not image.name:
            return None
        try:
            source = parse_reference(image.name)
        except URIError:
            return None
        if same_registry(source.domain, self.ref.domain) and source.path != self.ref.path:
            return source.path
        return None

    def _target_compression(self, layer: Layer, artifact: bool) -> str | None:
        """The compression to re-encode ``layer`` (of an ``artifact`` or an image) with,
        or None to upload it unchanged."""
        stored = layer.compression
        if not layer.is_tar or artifact:
            return None  # an artifact's blob is what it is, even one typed as a tar
        if layer.digest is None:
            return self.compression or "gzip"
        if self.compression is None:
            return "gzip" if stored == "none" else None
        return None if stored == self.compression else self.compression

    def wants_layer(self, layer: Layer) -> bool | Mounted:
        if layer.foreign:
            return False  # never pushed: the manifest keeps pointing at its urls
        target = self._target_compression(layer, self._artifact)
        if target is not None:
            # its digest is known only after compressing (see add_layer), or from the cache
            placed = self._probe_compressed(layer, target)
            if not placed:
                self.ctx.stats.add("cache_hits")
            return placed
        assert layer.digest is not None
        return self._place(layer.digest, layer.size)

    def probe_layer(self, layer: Layer) -> bool | Mounted:
        if layer.foreign:
            return False
        target = self._target_compression(layer, self._artifact)
        if target is not None:
            return self._probe_compressed(layer, target)
        assert layer.digest is not None
        return self._probe_blob(layer.digest, layer.size)

    def _step(self, target: str) -> str:
        return compress.step(target, self.level)

    def _probe_compressed(self, layer: Layer, target: str) -> bool | Mounted:
        """Falsy when the cache knows what compressing ``layer`` gives and that blob is
        here (or was just mounted): the layer is then this image's as that blob."""
        cache = self.ctx.layer_cache
        tar = layer.digest if layer.compression == "none" else layer.diff_id
        if cache is None or tar is None:
            return True
        known = cache.transform(tar, self._step(target))
        if known is None:
            return True
        digest, size = known
        placed = self._probe_blob(digest, size)
        if not placed:
            new = dataclasses.replace(
                layer, media_type=mt.layer_type(self._family, target), digest=digest,
                size=size, diff_id=tar, uncompressed_size=layer.uncompressed_size, urls=())
            with self._lock:
                self._rewritten[layer.index] = new
        return placed

    def _probe_blob(self, digest: str, size: int | None) -> bool | Mounted:
        """Like :meth:`_place`, leaving no claim to upload: False when this repository
        holds ``digest``, MOUNTED when a mount brought it; True leaves nothing behind
        (the session of a refused mount is cancelled). The run's claim on ``digest`` is
        held while asking, so that no other image links it here meanwhile (see
        :class:`~occystrap_registry.locations.ManifestLocks`)."""
        while not self.locations.holds(self.registry, self.ref.path, digest):
            running = self.locations.claim(self.registry, digest)
            if running is None:
                try:
                    return self._ask(digest, size)
                finally:
                    self.locations.release(self.registry, digest)
            running.wait()
        return False

    def _ask(self, digest: str, size: int | None) -> bool | Mounted:
        # A known place to mount from is asked first: a mount answers for a blob this
        # repository holds already too, so the common case costs one request, not two.
        for repository in self._mount_candidates(digest)[:MOUNT_TRIES]:
            if not self.uploader.can_mount:
                break
            session = self.uploader.mount(digest, repository)
            if session is None:
                self._held(digest)
                self._wrote()
                return Mounted(repository)
            self.uploader.cancel(session)
            cache = self.ctx.layer_cache
            if cache is not None and self.uploader.can_mount:  # refused: it is not there
                cache.forget_location(self.registry, digest, repository)
        if self.uploader.exists(digest, size):
            self._held(digest)
            return False
        return True

    def _mount_candidates(self, digest: str) -> list[str]:
        """Repositories of this registry to mount ``digest`` from: the run's first,
        then the source's, then the layer cache's (most recently used first), at most
        :data:`MOUNT_TRIES` of the cache's."""
        candidates = self.locations.repositories(self.registry, digest, self.ref.path)
        if self._mount_from and self._mount_from not in candidates:
            candidates.append(self._mount_from)
        cache = self.ctx.layer_cache
        if cache is not None:
            # enough rows that MOUNT_TRIES remain once those already listed are dropped
            recent = cache.locations(self.registry, digest, MOUNT_TRIES + len(candidates) + 1)
            candidates += [r for r in recent
                           if r != self.ref.path and r not in candidates][:MOUNT_TRIES]
        return candidates

    def _held(self, digest: str) -> None:
        """This repository holds ``digest`` now: for the rest of the run, and later ones."""
        self.locations.add(self.registry, self.ref.path, [digest])
        cache = self.ctx.layer_cache
        if cache is not None:
            cache.record_location(self.registry, digest, self.ref.path)

    def _place(self, digest: str, size: int | None) -> bool | Mounted:
        """False when this repository holds ``digest``, MOUNTED when it was mounted from
        another repository of this registry; True when it must be uploaded, this
        output then holding the run's claim on that upload (see :meth:`_release`).

        The first image of the run to need ``digest`` on this registry uploads it
        (after one HEAD: the repository may hold it already); every other waits for
        that upload, then mounts it from there with one request and no HEAD (a mount
        answers for a blob the repository holds already too). A registry refusing or
        ignoring the mount is asked the HEAD after all, before anything is uploaded."""
        while True:
            if self.locations.holds(self.registry, self.ref.path, digest):
                return False  # uploaded or mounted here earlier in this run
            asked = not (self.uploader.can_mount
                         and self.locations.known(self.registry, digest, self.ref.path))
            if asked and self.uploader.exists(digest, size):
                self._held(digest)
                return False
            running = self.locations.claim(self.registry, digest)
            if running is None:
                break
            running.wait()  # another image is uploading it to this registry: mount it after
        with self._lock:
            self._claims.add(digest)
        try:
            candidates = self._mount_candidates(digest)
            if not candidates:
                return True
            # One try: a refused mount starts an upload session, which is then used.
            session = self.uploader.mount(digest, candidates[0])
            if session is None:
                self._held(digest)
                self._wrote()
                self._release(digest)
                return Mounted(candidates[0])
            if not asked and self.uploader.exists(digest, size):
                self.uploader.cancel(session)
                self._held(digest)
                self._release(digest)
                return False
            with self._lock:  # the upload goes through it, saving a POST and a DELETE
                self._sessions[digest] = session
            return True
        except BaseException:
            self._release(digest)
            raise

    def _release(self, digest: str) -> None:
        with self._lock:
            if digest not in self._claims:
                return
            self._claims.discard(digest)
        self.locations.release(self.registry, digest)

    # --- layers ---------------------------------------------------------------

    def _upload(self, digest: str, size: int | None,
                opener: Callable[[], ContextManager[Readable]]) -> None:
        """Upload a blob :meth:`_place` claimed, through the session a refused mount left."""
        with self._lock:
            session = self._sessions.pop(digest, None)
        try:
            self.uploader.upload(digest, size, opener, session)
            self._held(digest)
            self._wrote()
        finally:
            self._release(digest)

    def _push_config(self, digest: str, data: bytes) -> None:
        """Placed like a layer: tags of one image share their config, which goes up once
        per registry (two uploads of it to one repository at once would race; see
        :class:`~occystrap_registry.locations.ManifestLocks`)."""
        if self._place(digest, len(data)) is True:
            self._upload(digest, len(data), lambda: io.BytesIO(data))

    def add_layer(self, data: LayerData) -> bool | Mounted:
        layer = data.layer
        target = self._target_compression(layer, self._artifact)
        if target is None:
            assert layer.digest is not None
            self._upload(layer.digest, layer.size, data.open_blob)
            return True
        with data.open_tar() as tar:
            spooled = compress.spool(tar, target, self.level, self.ctx.temp_dir)
        diff_id = data.tar_digest  # computed while LayerData verified the layer
        assert diff_id is not None  # spool read the tar to its end
        try:
            placed = self._place(spooled.digest, spooled.size)
            if placed is True:
                self._upload(spooled.digest, spooled.size, lambda: open(spooled.path, "rb"))
        finally:
            spooled.remove()
        cache = self.ctx.layer_cache
        if cache is not None:
            cache.record_transform(diff_id, self._step(target), spooled.digest, spooled.size)
        new = dataclasses.replace(
            layer, media_type=mt.layer_type(self._family, target), digest=spooled.digest,
            size=spooled.size, diff_id=diff_id, urls=())
        with self._lock:
            self._rewritten[layer.index] = new
        return placed

    # --- after the layers -----------------------------------------------------

    def finish(self, image: Image) -> OutputResult:
        if self._pushed_config() != image.config_digest:
            self._push_config(image.config_digest, image.config)
        if image.manifest is not None and image.manifest_media_type and not self._rewritten:
            manifest, media_type = image.manifest, image.manifest_media_type
        else:
            layers = [self._rewritten.get(layer.index, layer) for layer in image.layers]
            family = convert.manifest_family(image.family, [l.media_type for l in layers])
            manifest, media_type = image.build_manifest(layers, family=family)
        return self._held_already(manifest, media_type) or \
            self._push_manifest(manifest, media_type, by_digest=self._in_index)

    def adopt_manifest(self, data: bytes, media_type: str) -> OutputResult | None:
        """Push ``data`` again when every blob it names is here or mounts here; nothing
        when the destination holds it already (a warm run: one HEAD of the tag)."""
        try:
            doc = parse(data, media_type, "a manifest from the layer cache")
        except OccystrapError:
            return None
        if not isinstance(doc, Manifest):
            return None
        existing = self.existing_manifest(ManifestSummary(digests.of_bytes(data), media_type))
        if existing is not None:  # an index is rewritten with what its images are
            return dataclasses.replace(existing, manifest_size=len(data),
                                       manifest_media_type=media_type)
        blobs = [(doc.config.digest, doc.config.size)] + [
            (d.digest, d.size) for d in doc.layers if not d.urls]
        asked = [self._small_requests().submit(self._probe_blob, *blob) for blob in blobs]
        placed = [a.result() for a in asked]
        if any(p is True for p in placed):
            return None
        result = self._push_manifest(data, media_type, by_digest=self._in_index)
        result.details["mounted"] = sum(isinstance(p, Mounted) for p in placed[1:])
        return result

    def finish_index(self, index: ImageIndex, data: bytes) -> OutputResult:
        self._depth -= 1
        return self._held_already(data, index.media_type) or \
            self._push_manifest(data, index.media_type, by_digest=self._in_index)

    def sibling(self, tag: str) -> RegistryOutput:
        ref = dataclasses.replace(self.ref, tag=tag, digest=None)
        return RegistryOutput(dataclasses.replace(self._uri, target=str(ref)), self.ctx)

    @property
    def holds_referrers(self) -> bool:
        return True

    @contextlib.contextmanager
    def by_digest(self) -> Iterator[None]:
        self._depth += 1  # as an index's images: by digest, checked by digest
        self._referrers += 1
        try:
            yield
        finally:
            self._depth -= 1
            self._referrers -= 1

    @property
    def _in_index(self) -> bool:
        return self._depth > 0

    def _small_requests(self) -> ThreadPoolExecutor:
        """The run's threads for this registry's tiny requests that each wait on it
        (mounts, HEADs), asked all at once: as many as its connection pool holds. They
        outlive each batch, so the next one (a manifest's checks after its mounts)
        starts no thread; a thread's start waits for the interpreter's lock, which the
        threads already answering hold, and 17 starts cost a warm copy 10 ms."""
        return _run_pool(self.ctx, f"{SMALL_REQUESTS} {self.registry}",
                         self.ctx.settings.max_connections, "requests")

    def _push_manifest(self, manifest: bytes, media_type: str, by_digest: bool,
                       verified: bool = True) -> OutputResult:
        """PUT ``manifest``; with ``verified``, for verify() to check (its blobs' HEADs
        go with it), else alone (occystrap tag: the tag's manifest is there already)."""
        digest = digests.of_bytes(manifest)
        if not by_digest and self.ref.digest and self.ref.digest != digest:
            raise URIError(f"destination {self.ref} is pinned to {self.ref.digest}, but the "
                           f"manifest to push has digest {digest}")
        ref = digest if by_digest else self.ref.tag or digest
        what = f"pushing manifest {self.ref.path}:{ref}"
        checks = self._check_blobs(manifest, media_type) if verified else None
        with self.manifest_lock.hold((self.registry, self.ref.path, digest)):
            response = self._put_manifest(ref, manifest, media_type, what)
        self._wrote()
        check_digest_header(response, digest, what)
        if response.status_code != 201 and "Docker-Content-Digest" not in response.headers:
            raise status_error(response, f"{what}: the answer names no digest", expected=(201,))
        if "OCI-Subject" not in response.headers:  # a registry with the API says it has it
            self._list_in_fallback(manifest, media_type)
        if verified:
            self._pushed.append((manifest, media_type, checks))
        return OutputResult(location=self._where(digest), manifest_digest=digest,
                            manifest_size=len(manifest), manifest_media_type=media_type,
                            manifest=manifest)

    def _put_manifest(self, ref: str, manifest: bytes, media_type: str,
                      what: str) -> httpx.Response:
        """The PUT, tried again (as --retries allows) on DIGEST_INVALID. The digest is
        of the bytes sent, so that answer is not ours to fix: distribution says it when
        it reads a blob's link while another writer (another process pushing this
        image) rewrites it, or the bytes were damaged on the way."""
        attempt = 0
        while True:
            # 201 is the spec's answer; Quay answers 202, so other successes count when
            # the registry names what it stored (a front answering 200 to anything
            # does not).
            response = self.repo.request("PUT", self.repo.url("manifests", ref), what=what,
                                         ok=(200, 201, 202, 400), content=manifest,
                                         headers={"Content-Type": media_type})
            if response.status_code != 400:
                return response
            codes = error_codes(response)
            if BLOB_UNKNOWN & set(codes):
                raise self._lost_blobs(response, manifest, media_type, what)
            if "DIGEST_INVALID" not in codes or not self.ctx.retry.allows(attempt):
                raise status_error(response, what, expected=(200, 201, 202))
            self.ctx.retry.wait(attempt, "DIGEST_INVALID", f"PUT manifest {self.ref.path}:{ref}",
                                host=self.repo.host)
            attempt += 1

    def _lost_blobs(self, response: httpx.Response, manifest: bytes, media_type: str,
                    what: str) -> OccystrapError:
        """The registry lacks a blob of ``manifest`` that this repository was known to
        hold: removed since (a registry's garbage collection, during a proxy's days), or
        never there. Nothing known of the manifest's blobs here is trusted again, so a
        second try asks the registry and sends what it lacks."""
        doc = parse(manifest, media_type, "the pushed manifest")
        if isinstance(doc, Manifest):
            blobs = [d.digest for d in (doc.config, *doc.layers)]
            self.locations.forget(self.registry, self.ref.path, blobs)
            cache = self.ctx.layer_cache
            if cache is not None:
                for digest in blobs:
                    cache.forget_location(self.registry, digest, self.ref.path)
        error = status_error(response, what, expected=(200, 201, 202))
        if type(error) is not TransportError:
            return error
        stale = TransportError(f"{error}; a blob this run took the repository to hold is "
                               f"not there (removed meanwhile?): trying again sends it",
                               retryable=True)
        stale.response = error.response
        return stale

    def _keep_listed(self, digest: str, response: httpx.Response) -> None:
        """A referrer already here: listed in its subject's fallback index, as pushing it
        would have (a tool that keeps no index, or a run cut short, left it unlisted),
        unless the registry lists referrers itself."""
        what = f"manifest {self.ref.path}@{digest}"
        if digests.of_bytes(response.content, digest.split(":", 1)[0]) != digest:
            raise CorruptImageError(f"{what}: the registry serves other bytes")
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        doc = parse(response.content, media_type, what)
        if doc.subject is None:
            return
        subject = doc.subject.digest
        tag = referrers.fallback_tag(subject)
        index = self.repo.request("GET", self.repo.url("manifests", tag), missing_ok=True,
                                  what=f"the referrers index {self.ref.path}:{tag}",
                                  headers={"Accept": mt.OCI_INDEX})
        try:
            if index.status_code != 404 and digest in {
                    d.digest for d in referrers.listed(index.content)}:
                return
            api = self.repo.request("GET", self.repo.url("referrers", subject),
                                    what=f"referrers of {self.ref.path}@{subject}",
                                    ok=(200, 400, 405), missing_ok=True,
                                    follow_redirects=False, headers={"Accept": mt.OCI_INDEX})
            if api.status_code == 200 and api.headers.get("Content-Type", "").startswith(
                    mt.OCI_INDEX):
                return
        except OccystrapError as e:
            # a broken index is rewritten; a redirect (GHCR's) is no referrers API
            if e.response is not None and not e.response.is_redirect:
                raise
        self._list_in_fallback(response.content, media_type)

    def _list_in_fallback(self, manifest: bytes, media_type: str) -> None:
        """A manifest with a subject, pushed to a registry without the referrers API:
        the spec has the client add it to the subject's fallback tag index, keeping
        what other tools listed there."""
        doc = parse(manifest, media_type, "the pushed manifest")
        if doc.subject is None:
            return
        tag = referrers.fallback_tag(doc.subject.digest)
        what = f"the referrers index {self.ref.path}:{tag}"
        with self.manifest_lock.hold((self.registry, self.ref.path, tag)):
            response = self.repo.request("GET", self.repo.url("manifests", tag), what=what,
                                         missing_ok=True, headers={"Accept": mt.OCI_INDEX})
            existing = None if response.status_code == 404 else response.content
            index = referrers.merged(existing, referrers.descriptor_of(doc))
            self.repo.request("PUT", self.repo.url("manifests", tag), what=f"updating {what}",
                              ok=(200, 201, 202), content=index,
                              headers={"Content-Type": mt.OCI_INDEX})

    # --- registry operations (occystrap tag, delete) ----------------------------

    def put_manifest(self, data: bytes, media_type: str) -> OutputResult:
        """One PUT of ``data`` under this output's tag; no blob is asked about."""
        return self._push_manifest(data, media_type, by_digest=False, verified=False)

    def delete_tag(self) -> None:
        """The spec's ``DELETE /v2/<name>/manifests/<tag>``; CNCF distribution before 3
        refuses it (it deletes manifests, taking every tag naming them along)."""
        tag = self.ref.tag
        if not tag or self.ref.digest:
            raise URIError(f"{self.ref} names no tag to delete; give REPO:TAG, or "
                           f"--manifest to delete a manifest by digest")
        what = f"deleting tag {self.ref.path}:{tag}"
        response = self._delete(tag, what, ok=(202, 400, 405))
        if response.status_code != 202:
            if self._remote_digest() is None:  # it refuses any tag; one it lacks is missing
                raise ImageNotFoundError(f"{what}: {self.repo.host} has no such tag")
            if response.status_code == 405 and not self._deletes_manifests():
                raise deletes.disabled(what, self.repo.host)
            raise UnsupportedError(
                f"{what}: {self.repo.host} cannot delete a tag alone (HTTP "
                f"{response.status_code}); delete the manifest it names, and every tag "
                f"naming that, with --manifest")

    def delete_manifest(self, digest: str) -> None:
        """The manifest goes; one with a subject leaves its subject's fallback index
        too, as the spec has the client do where the registry keeps no index."""
        digests.validate(digest, "manifest digest")
        found, subject = self._subject_of(digest)
        try:
            self._delete(digest, f"deleting manifest {self.ref.path}@{digest}", ok=(202,))
        except ImageNotFoundError:
            # here a moment ago: a DELETE retried after its answer was lost (or another
            # client's) finds it gone, and its subject's index must still drop it
            if not found:
                raise
        if subject is None:
            return
        tag = referrers.fallback_tag(subject)
        what = f"the referrers index {self.ref.path}:{tag}"
        with self.manifest_lock.hold((self.registry, self.ref.path, tag)):
            response = self.repo.request("GET", self.repo.url("manifests", tag), what=what,
                                         missing_ok=True, headers={"Accept": mt.OCI_INDEX})
            index = None if response.status_code == 404 \
                else referrers.without(response.content, digest)
            if index is not None:
                self.repo.request("PUT", self.repo.url("manifests", tag),
                                  what=f"updating {what}", ok=(200, 201, 202), content=index,
                                  headers={"Content-Type": mt.OCI_INDEX})

    def _subject_of(self, digest: str) -> tuple[bool, str | None]:
        """Whether the manifest ``digest`` is here, and the digest it refers to if any."""
        what = f"manifest {self.ref.path}@{digest}"
        response = self.repo.request("GET", self.repo.url("manifests", digest), what=what,
                                     missing_ok=True,
                                     headers={"Accept": ", ".join(mt.MANIFESTS + mt.INDEXES)})
        if response.status_code == 404:
            return False, None
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        try:
            doc = parse(response.content, media_type, what)
        except OccystrapError:
            return True, None  # a schema 1 manifest, say: nothing refers through it
        return True, None if doc.subject is None else doc.subject.digest

    def _deletes_manifests(self) -> bool:
        """Whether this registry deletes manifests at all (see :mod:`.deletes`)."""
        response = self.repo.request(
            "DELETE", self.repo.url("manifests", deletes.NO_MANIFEST), ok=(202, 400, 405),
            what=f"asking whether {self.repo.host} deletes manifests", missing_ok=True,
            extensions={SCOPES: [f"repository:{self.ref.path}:pull,push,delete"]})
        return response.status_code != 405

    def _delete(self, ref: str, what: str, ok: tuple[int, ...]) -> httpx.Response:
        response = self.repo.request(
            "DELETE", self.repo.url("manifests", ref), what=what, ok=(*ok, 405),
            missing_ok=True,
            extensions={SCOPES: [f"repository:{self.ref.path}:pull,push,delete"]})
        if response.status_code == 404:
            raise ImageNotFoundError(f"{what}: {self.repo.host} has no such manifest")
        if response.status_code == 405 and 405 not in ok:
            # CNCF distribution's answer to every DELETE unless deletes are enabled
            raise deletes.disabled(what, self.repo.host)
        return response

    # --- verification ---------------------------------------------------------

    def verify(self) -> list[str]:
        """Read back every manifest this run pushed, by digest, and check each blob it
        names is there: HEAD by default, GET and re-hash with --verify-full. A warm
        no-op pushed nothing and checks nothing, so it keeps its few requests."""
        problems = []
        for manifest, media_type, checks in self._pushed:
            problems += self._verify_manifest(manifest, media_type, checks)
        return problems

    def _blobs(self, manifest: bytes, media_type: str) -> list[tuple[str, str, int]]:
        """(what, digest, size) of each blob an image's manifest names and this output
        pushed; none for an index (its images are verified one by one)."""
        if media_type in mt.INDEXES:
            return []
        what = f"manifest {self.ref.path}@{digests.of_bytes(manifest)}"
        doc = parse(manifest, media_type, what)
        assert isinstance(doc, Manifest)
        return [(f"{what} config", doc.config.digest, doc.config.size)] + [
            (f"{what} layer {i}", d.digest, d.size) for i, d in enumerate(doc.layers)
            if not d.urls]  # foreign layers are never pushed: see wants_layer

    def _check_blobs(self, manifest: bytes, media_type: str
                     ) -> list[Future[str | None]] | None:
        """Start verify()'s HEADs of the manifest's blobs as it goes up: they were all
        written before it, and the checks take no round trip of their own after the
        PUT. None when verify() is not asked for, re-hashes blobs (--verify-full takes
        -j's width, after the copy) or cannot read the manifest (it says so)."""
        settings = self.ctx.settings
        if not settings.verify or settings.verify_full:
            return None
        try:
            blobs = self._blobs(manifest, media_type)
        except OccystrapError:
            return None
        return [self._small_requests().submit(self._verify_blob, *blob) for blob in blobs]

    def _verify_manifest(self, manifest: bytes, media_type: str,
                         checks: list[Future[str | None]] | None) -> list[str]:
        digest = digests.of_bytes(manifest)
        what = f"manifest {self.ref.path}@{digest}"
        if checks is not None:
            problems = self._read_back(digest, media_type, what)
            return problems + [p for p in (c.result() for c in checks) if p]
        try:
            blobs = self._blobs(manifest, media_type)
        except OccystrapError as e:
            return [str(e)]
        # --verify-full: whole blobs are re-read, -j's width at a time, while the
        # manifest is read back
        with ThreadPoolExecutor(self.ctx.settings.parallel, thread_name_prefix="verify") as pool:
            found = pool.map(lambda blob: self._verify_blob(*blob), blobs)
            problems = self._read_back(digest, media_type, what)
            return problems + [p for p in found if p]

    def _read_back(self, digest: str, media_type: str, what: str) -> list[str]:
        """The manifest ``digest`` as the registry serves it: there, and those bytes."""
        with self.manifest_lock.hold((self.registry, self.ref.path, digest)):
            response = self.repo.request("GET", self.repo.url("manifests", digest), what=what,
                                         missing_ok=True, headers={"Accept": media_type})
        if response.status_code == 404:
            return [f"{what} is missing"]
        actual = digests.of_bytes(response.content, digest.split(":", 1)[0])
        if actual != digest:
            return [f"{what}: the registry serves bytes hashing to {actual}"]
        return []

    def _verify_blob(self, what: str, digest: str, size: int | None) -> str | None:
        url = self.repo.url("blobs", digest)
        if self.ctx.settings.verify_full:
            try:
                with open_blob(self.repo.client, url, digest=digest, size=size,
                               policy=self.ctx.retry, what=what) as blob:
                    while blob.read(CHUNK):
                        pass
            except (ImageNotFoundError, CorruptImageError) as e:
                return str(e)
            return None
        response = self.repo.request("HEAD", url, what=f"HEAD {what}", missing_ok=True)
        if response.status_code == 404:
            return f"{what}: blob {digest} is missing"
        length = response.headers.get("Content-Length")
        if length is not None and size is not None and int(length) != size:
            return f"{what}: the registry holds {length} bytes, the manifest says {size}"
        return None

    def _pushed_config(self) -> str | None:
        """Wait for the config :meth:`start` sent up; its digest (its error raised)."""
        if self._config is None:
            return None
        (digest, future), self._config = self._config, None
        future.result()
        return digest

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the copy failed already: that is the error
            self._pushed_config()  # not left running while the sessions are cancelled
        with self._lock:
            self._sessions = {}
            claims = list(self._claims)
        self.uploader.cancel_all()
        for digest in claims:
            self._release(digest)
