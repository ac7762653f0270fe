"""``registry://`` source: manifests and blobs of one repository, verified.

The engine walks indexes and picks platforms; this answers "the manifest the
reference names, or the one with this digest" and "this blob". Every manifest is
checked against its digest (the pinned one, else the registry's
``Docker-Content-Digest``) before anyone reads it, and every blob the run sees is
noted in the run's blob map, so that a copy to another repository of this registry
can mount it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

import httpx

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.api import Fetched, ImageSet, ImageSource
from occystrap_core.errors import CorruptImageError, DigestMismatchError, OccystrapError
from occystrap_core.oci import referrers
from occystrap_core.oci.manifest import MAX_MANIFEST, Descriptor, Manifest, parse
from occystrap_core.oci.reference import parse as parse_reference
from occystrap_core.oci.reference import registry_key
from occystrap_core.transport.blobs import open_blob
from occystrap_core.types import ResolvedURI
from occystrap_core.uri import has_pattern

from .client import FACTORY, Repository
from .locations import BlobLocations, blob_locations
from .upload import check_digest_header

if TYPE_CHECKING:
    from occystrap_core.context import Context

log = logging.getLogger("occystrap.registry")

# Schema 1 is listed so that an old registry answers with it rather than a 404,
# and the engine can say clearly that it is not supported.
ACCEPT = ", ".join((mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST, mt.OCI_MANIFEST,
                    mt.DOCKER_MANIFEST, mt.DOCKER_SCHEMA1_SIGNED, mt.DOCKER_SCHEMA1))


class RegistrySource(ImageSource):
    parallel = True

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.ctx = ctx
        self._uri = uri
        self.ref = parse_reference(uri.target)
        self.name, self.tag = self.ref.name, self.ref.tag
        self.repo = Repository(ctx, self.ref, uri, "input")
        self.locations: BlobLocations = blob_locations(ctx)

    def manifest(self, digest: str | None = None) -> Fetched:
        ref = digest or self.ref.ref
        pinned = digest or self.ref.digest
        what = f"manifest {self.ref.path}{'@' if digests.is_valid(ref) else ':'}{ref}"
        response, confirmed = self._get_verified(self.repo.url("manifests", ref), what, pinned,
                                                 MAX_MANIFEST, {"Accept": ACCEPT})
        if not confirmed:
            log.warning("%s: %s sent no Docker-Content-Digest; the digest %s was computed "
                        "from the bytes received, not confirmed by the registry", what,
                        self.repo.host, digests.of_bytes(response.content))
        fetched = Fetched(response.content, response.headers.get("Content-Type"))
        self._record(fetched)
        return fetched

    def manifest_digest(self) -> str | None:
        response = self.repo.request(
            "HEAD", self.repo.url("manifests", self.ref.ref), missing_ok=True,
            what=f"HEAD manifest {self.ref}", headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        stated = response.headers.get("Docker-Content-Digest")
        if stated and digests.is_valid(stated) and self.ref.digest in (None, stated):
            return stated
        return super().manifest_digest()  # no usable header: fetch and hash it

    def blob_size(self, digest: str) -> int | None:
        digests.validate(digest, "blob digest")
        what = f"HEAD {self.ref.path}: blob {digest}"
        response = self.repo.request("HEAD", self.repo.url("blobs", digest), what=what,
                                     missing_ok=True)
        if response.status_code == 404:
            return None
        length = response.headers.get("Content-Length", "")
        if not length.isdigit():
            raise CorruptImageError(f"{what}: {self.repo.host} sent no Content-Length")
        return int(length)

    def sibling(self, tag: str) -> RegistrySource:
        ref = dataclasses.replace(self.ref, tag=tag, digest=None)
        other = RegistrySource(dataclasses.replace(self._uri, target=str(ref)), self.ctx)
        other.where = f"registry://{ref}"
        return other

    def referrers(self, digest: str) -> list[Descriptor]:
        """The referrers API when the registry has it, else the fallback tag's index."""
        digests.validate(digest, "subject digest")
        what = f"referrers of {self.ref.path}@{digest}"
        try:
            response = self.repo.request(
                "GET", self.repo.url("referrers", digest), what=what, ok=(200, 400, 405),
                missing_ok=True, headers={"Accept": mt.OCI_INDEX}, follow_redirects=False)
        except OccystrapError as e:
            # GHCR sends it to a (rate-limited) web API: no referrers API either
            if e.response is None or not e.response.is_redirect:
                raise
            response = e.response
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if response.status_code == 200 and content_type == mt.OCI_INDEX:
            return referrers.listed(response.content)
        tag = referrers.fallback_tag(digest)
        response = self.repo.request(
            "GET", self.repo.url("manifests", tag), what=f"{what} (tag {tag})",
            missing_ok=True, headers={"Accept": ", ".join(mt.INDEXES)})
        if response.status_code == 404:
            return []
        check_digest_header(response, digests.of_bytes(response.content), f"{what} (tag {tag})")
        return referrers.listed(response.content)

    def _record(self, fetched: Fetched) -> None:
        """Tell the run's blob map that this repository holds these blobs (for mounts)."""
        try:
            doc = parse(fetched.data, fetched.media_type)
        except CorruptImageError:
            return  # the engine reports it
        if isinstance(doc, Manifest):
            self.locations.add(registry_key(self.ref.domain), self.ref.path,
                               [doc.config.digest] + [d.digest for d in doc.layers if not d.urls])

    def read_blob(self, descriptor: Descriptor, limit: int, what: str) -> bytes:
        if descriptor.size > limit:
            raise CorruptImageError(f"{what} is {descriptor.size} bytes; more than {limit} "
                                    f"is not believable")
        response, _ = self._get_verified(self.repo.url("blobs", descriptor.digest), what,
                                         descriptor.digest, limit)
        if len(response.content) != descriptor.size:
            raise CorruptImageError(f"{what}: size mismatch, expected {descriptor.size} "
                                    f"bytes, got {len(response.content)}")
        return response.content

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
            self.ctx.retry.wait(attempt, str(error), f"GET {url}", host=self.repo.host)
            attempt += 1

    def open_blob(self, descriptor: Descriptor) -> contextlib.AbstractContextManager[BinaryIO]:
        what = f"{self.ref.path}: blob {descriptor.digest}"
        # A foreign (non-distributable) blob comes from its first http(s) url; without
        # one, the registry is asked, as containers/image does (a mirror may hold it).
        for url in descriptor.urls:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") and parts.netloc:
                client = self.ctx.http_client(FACTORY, parts.netloc, scheme=parts.scheme)
                return open_blob(client, url, policy=self.ctx.retry, what=what)
        # Large blobs come in parallel ranges; the engine verifies what it reads.
        from occystrap_core.transport.ranged import plan as range_plan  # runs reading blobs only

        return open_blob(self.repo.client, self.repo.url("blobs", descriptor.digest),
                         policy=self.ctx.retry, what=what, size=descriptor.size,
                         digest=descriptor.digest, verify=False,
                         ranges=range_plan(self.ctx, descriptor.size))


def open_source(uri: ResolvedURI, ctx: Context) -> ImageSource | ImageSet:
    """One image, or every image a ``HOST/REPO_GLOB[:TAG_GLOB]`` pattern names (the
    listing modules are imported for a pattern only)."""
    if not has_pattern(uri.target):
        return RegistrySource(uri, ctx)
    from occystrap_core.listing import ListedImages, split_pattern

    from .listing import RegistryLister

    return ListedImages(ctx, RegistryLister(uri, ctx),
                        split_pattern(uri.target, default_tag="latest"))
