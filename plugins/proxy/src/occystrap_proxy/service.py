"""What the proxy does with images, apart from HTTP: runs in worker threads.

Every copy goes through occystrap's own copy engine (``occystrap.copy``) with the
proxy's filters: a push from the store to the downstream, a pull-through from the
upstream to the downstream. Reads and writes of the downstream go through one URI
builder, so ``--downstream HOST/PREFIX`` names the same repositories for both.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import urlencode

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core.api import Fetched, ImageSource
from occystrap_core.context import Context
from occystrap_core.engine import Selection
from occystrap_core.errors import (
    CorruptImageError,
    ImageNotFoundError,
    TransportError,
    URIError,
    UsageError,
)
from occystrap_core.keyedlocks import KeyedLocks
from occystrap_core.library import copy, open_source
from occystrap_core.listing import open_lister
from occystrap_core.oci import platform as platforms
from occystrap_core.oci import reference as references
from occystrap_core.oci.manifest import Descriptor, Index, parse
from occystrap_core.serving import Pushed, RegistryError, check_manifest
from occystrap_core.types import Credentials

from .events import EventLog
from .store import BlobStore

log = logging.getLogger("occystrap.proxy")


@dataclass(frozen=True)
class Remote:
    """A registry the proxy talks to: ``HOST[/PREFIX]`` and how to log in: the
    ``credentials`` given for all its repositories, else those ``lookup`` finds for
    one (auth files may hold some per namespace)."""

    host: str
    prefix: str = ""
    credentials: Credentials | None = None
    lookup: Callable[[str], Credentials | None] | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, text: str, option: str) -> Remote:
        """``[USER:PASS@]HOST[:PORT][/PREFIX]``, given as ``option``; anything else (a
        URL, a bad port, a host the grammar would take for Docker Hub's namespace, a
        prefix no repository can have) is an error naming the option, never the
        credentials."""
        credentials = None
        userinfo, at, rest = text.rpartition("@")
        if at:  # user:pass@host, as 0.4.17's --upstream took it
            user, _, password = userinfo.partition(":")
            credentials = Credentials(user, password, source=option)
        host, _, prefix = rest.strip("/").partition("/")
        prefix = prefix.strip("/")
        problem = _address_problem(rest, host, prefix)
        if problem:
            raise UsageError(f"{option} {rest!r}: {problem} (expected HOST[:PORT][/PREFIX])")
        return cls(host, prefix, credentials)

    def uri(self, name: str, ref: str | None = None) -> str:
        """``registry://HOST/PREFIX/NAME[:TAG|@DIGEST]``, credentials in the query."""
        path = f"{self.prefix}/{name}" if self.prefix else name
        sep = "" if ref is None else "@" if digests.is_valid(ref) else ":"
        query = ""
        c = self.credentials or (self.lookup(path) if self.lookup else None)
        if c is not None and c.username is not None:
            query = "?" + urlencode({"username": c.username, "password": c.password or ""})
        return f"registry://{self.host}/{path}{sep}{ref or ''}{query}"

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host


def _address_problem(text: str, host: str, prefix: str) -> str | None:
    if "://" in text:
        return "a registry's address, not a URL"
    if not host:
        return "no registry host"
    name = f"{host}/{prefix or 'repository'}"
    try:  # the reference grammar decides what a registry:// URI will make of it
        ref = references.parse(name, normalize=False, default_tag=False)
    except URIError as e:
        return str(e).removeprefix(f"invalid image reference {name!r}: ")
    if ref.domain != host:
        return (f"{host!r} would be read as a repository on Docker Hub: a registry host has "
                f"a '.' or a port, or is localhost")
    if ref.tag or ref.digest:
        return "a repository prefix has no tag or digest"
    return None


@dataclass
class Served:
    """A manifest to answer with."""

    data: bytes
    media_type: str
    digest: str


@dataclass
class _Seen:
    upstream: str | None  # the upstream digest last copied for the tag
    checked: float  # when the upstream was last asked


@dataclass
class ProxyService:
    ctx: Context
    downstream: Remote
    upstream: Remote | None
    filters: tuple[str, ...]
    store: BlobStore
    events: EventLog
    freshness: float = 300.0  # seconds a tag's upstream answer is trusted
    limit: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(4))
    clock: Callable[[], float] = time.monotonic
    _seen: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    _pulls: KeyedLocks[tuple[str, str]] = field(default_factory=KeyedLocks)  # (name, ref)

    # --- the downstream ----------------------------------------------------------

    def downstream_manifest(self, name: str, ref: str) -> Served | None:
        try:
            with open_source(self.downstream.uri(name, ref), session=self.ctx) as source:
                assert isinstance(source, ImageSource)
                fetched = source.manifest()
        except ImageNotFoundError:
            return None
        return _served(fetched)

    def _downstream_blob_size(self, name: str, digest: str) -> int | None:
        with open_source(self.downstream.uri(name), session=self.ctx) as source:
            assert isinstance(source, ImageSource)
            return source.blob_size(digest)

    # --- reads -------------------------------------------------------------------

    def manifest(self, name: str, ref: str) -> Served:
        """The manifest a client asks for: what it pushed, the downstream's, or (with
        an upstream) pulled through."""
        # By digest, what a client pushed reads back as it was pushed; a tag names
        # what the downstream holds (the filtered image).
        pushed = self.store.manifest(name, ref) if digests.is_valid(ref) else None
        if pushed is not None and self._whole(name, pushed):
            return Served(pushed.data, pushed.media_type, pushed.digest)
        if self.upstream is not None:
            return self._pull_through(name, ref)
        found = self.downstream_manifest(name, ref)
        if found is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN",
                                f"{name}:{ref} is not in {self.downstream}")
        return found

    def _whole(self, name: str, pushed: Pushed) -> bool:
        """Whether every blob a pushed manifest names (through its index) can still be
        served: the store sweeps them, and a manifest whose blobs answer 404 would
        fail its client halfway through a pull."""
        doc = parse(pushed.data, pushed.media_type)
        if isinstance(doc, Index):
            return all((child := self.store.manifest(name, d.digest)) is not None and
                       self._whole(name, child) or
                       self.downstream_manifest(name, d.digest) is not None
                       for d in doc.manifests)
        return all(self.blob_size(name, d.digest) is not None
                   for d in (doc.config, *doc.layers) if not d.urls)

    def tags(self, name: str) -> list[str]:
        """The tags a client can pull: the downstream's, and with pull-through the
        upstream's too."""
        found: set[str] = set()
        remotes = [self.downstream] + ([self.upstream] if self.upstream else [])
        known = False
        for remote in remotes:
            lister, _ = open_lister(self.ctx, remote.uri(name))
            try:
                found.update(lister.tags(f"{remote.prefix}/{name}" if remote.prefix else name))
            except ImageNotFoundError:
                continue
            known = True
        if not known:
            raise RegistryError(404, "NAME_UNKNOWN",
                                f"{name} is not in {' or '.join(map(str, remotes))}")
        return sorted(found)

    def blob_size(self, name: str, digest: str, pushing: bool = False) -> int | None:
        """The blob's size, from the store or the downstream; ``pushing``: a client
        pushing to ``name`` asks (its manifest will name the blob)."""
        size = self.store.size(digest, name if pushing else None)
        return size if size is not None else self._downstream_blob_size(name, digest)

    @contextlib.contextmanager
    def open_blob(self, name: str, digest: str, size: int) -> Iterator[BinaryIO]:
        """The blob, from the store or the downstream (which the engine verifies)."""
        with self.store.pinned([digest]):
            if self.store.size(digest) is not None:
                with open(self.store.path(digest), "rb") as f:
                    yield f
                return
        with open_source(self.downstream.uri(name), session=self.ctx) as source:
            assert isinstance(source, ImageSource)
            with source.open_blob(Descriptor(mt.OCI_LAYER_TAR, digest, size)) as blob:
                yield blob

    # --- pull-through ------------------------------------------------------------

    def _pull_through(self, name: str, ref: str) -> Served:
        assert self.upstream is not None
        with self._pulls.hold((name, ref)):  # concurrent pulls of one tag copy it once
            if digests.is_valid(ref):
                return self._pull_digest(name, ref)
            return self._pull_tag(name, ref)

    def _pull_digest(self, name: str, digest: str) -> Served:
        assert self.upstream is not None
        found = self.downstream_manifest(name, digest)
        if found is not None:
            return found
        if self.filters:  # a client checks what it gets against the digest it asked for
            raise RegistryError(404, "MANIFEST_UNKNOWN",
                                f"{name}@{digest} is not in {self.downstream}; with filters, "
                                f"the upstream's digests name unfiltered images: pull by tag")
        # pushed by digest: never to a tag named after the digest
        self._copy("pull-through", self.upstream.uri(name, digest),
                   self.downstream.uri(name, digest), name, digest)
        found = self.downstream_manifest(name, digest)
        if found is None:
            raise RegistryError(502, "UNKNOWN", f"{self.downstream} lost {name}@{digest}")
        return found

    def _pull_tag(self, name: str, tag: str) -> Served:
        assert self.upstream is not None
        key = (name, tag)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.checked < self.freshness:
            found = self.downstream_manifest(name, tag)
            if found is not None:
                return found
        try:
            with open_source(self.upstream.uri(name, tag), session=self.ctx) as source:
                assert isinstance(source, ImageSource)
                upstream = source.manifest_digest()
        except TransportError as e:  # the upstream is down: what the downstream has will do
            stale = self.downstream_manifest(name, tag)
            if stale is None:
                raise
            self.events.emit("stale", repository=name, tag=tag, error=str(e))
            return stale
        if upstream is None:  # then what the downstream holds (pushed through the proxy)
            found = self.downstream_manifest(name, tag)
            if found is None:
                raise RegistryError(404, "MANIFEST_UNKNOWN",
                                    f"{name}:{tag} is neither in {self.upstream} nor in "
                                    f"{self.downstream}")
            self._seen[key] = _Seen(None, now)
            return found
        # copied before and unchanged upstream: the downstream's, unless it lost it since
        found = self.downstream_manifest(name, tag) \
            if seen is not None and seen.upstream == upstream else None
        if found is None:
            self._copy("pull-through", self.upstream.uri(name, tag),
                       self.downstream.uri(name, tag), name, tag)
            found = self.downstream_manifest(name, tag)
        self._seen[key] = _Seen(upstream, now)
        if found is None:
            raise RegistryError(502, "UNKNOWN", f"{self.downstream} lost {name}:{tag}")
        return found

    # --- push --------------------------------------------------------------------

    def push(self, name: str, ref: str, data: bytes, media_type: str) -> Pushed:
        """Take a manifest a client pushes. By digest it is kept (an index pushed
        later lists it); by tag the image or index goes through the filters to the
        downstream before this returns."""
        pushed, image = check_manifest(ref, data, media_type,
                                       lambda d: self.blob_size(name, d) is not None)
        if image is None:  # a client skips an image the proxy said it has: the downstream's
            index = parse(data, pushed.media_type)
            assert isinstance(index, Index)
            for d in index.manifests:
                if self.store.manifest(name, d.digest) is None and \
                        self.downstream_manifest(name, d.digest) is None:
                    raise RegistryError(400, "MANIFEST_UNKNOWN",
                                        f"manifest {d.digest} was not pushed first")
        self.store.remember(name, [pushed.digest], pushed)
        if digests.is_valid(ref):
            return pushed
        source = _PushedSource(self, name, ref, pushed)
        blobs = source.blobs()
        try:
            with self.store.pinned(blobs):
                self._copy("push", source, self.downstream.uri(name, ref), name, ref)
        except CorruptImageError as e:  # what the client pushed does not add up
            raise RegistryError(400, "MANIFEST_INVALID", str(e)) from None
        finally:
            self.store.settle(name, blobs)
        return pushed

    # --- copies ------------------------------------------------------------------

    def _copy(self, kind: str, source: str | ImageSource, destination: str, name: str,
              ref: str) -> None:
        with self.limit:
            try:
                self._copy_now(kind, source, destination, name, ref)
            except TransportError as e:
                if not e.retryable:
                    raise
                # e.g. the downstream lost a blob the proxy saw it hold (its garbage
                # collection ran): the failed copy forgot that, so one more sends it
                self.events.emit(f"{kind}-retried", repository=name, ref=ref, error=str(e))
                self._copy_now(kind, source, destination, name, ref)

    def _copy_now(self, kind: str, source: str | ImageSource, destination: str, name: str,
                  ref: str) -> None:
        started = self.clock()
        self.events.emit(f"{kind}-started", repository=name, ref=ref)
        if isinstance(source, str):
            with open_source(source, session=self.ctx) as opened:
                assert isinstance(opened, ImageSource)
                opened.selection = _every_platform()
                result = copy(opened, destination, filters=self.filters,
                              unfiltered_artifacts=True, session=self.ctx)
        else:
            result = copy(source, destination, filters=self.filters,
                          unfiltered_artifacts=True, session=self.ctx)
        self.events.emit(kind, repository=name, ref=ref, destination=result.location,
                         digest=result.manifest_digest, problems=result.problems,
                         seconds=round(self.clock() - started, 3))
        if result.problems:
            raise TransportError(f"{destination}: verification failed: "
                                 f"{'; '.join(result.problems)}")


def _every_platform() -> Selection:
    """A client picks its platform from the index: the downstream needs all of them."""
    return Selection(platforms.host(), every=True)


def _served(fetched: Fetched) -> Served:
    media_type = fetched.media_type or parse(fetched.data).media_type
    return Served(fetched.data, media_type, digests.of_bytes(fetched.data))


class _PushedSource(ImageSource):
    """What a client pushed to the proxy, as a source for the copy engine: manifests
    from the store, blobs from the store or, when the client skipped one because the
    downstream had it, from the downstream."""

    def __init__(self, service: ProxyService, name: str, tag: str, top: Pushed):
        self.service = service
        self.repository = name
        self.tag = tag
        self.top = top
        self.where = f"the push of {name}:{tag}"
        self.selection = _every_platform()

    def manifest(self, digest: str | None = None) -> Fetched:
        if digest is None:
            return Fetched(self.top.data, self.top.media_type)
        pushed = self.service.store.manifest(self.repository, digest)
        if pushed is not None:
            return Fetched(pushed.data, pushed.media_type)
        found = self.service.downstream_manifest(self.repository, digest)
        if found is None:
            raise ImageNotFoundError(f"{self.where}: manifest {digest} was not pushed")
        return Fetched(found.data, found.media_type)

    def blobs(self) -> list[str]:
        """Every blob the push names, through its index."""
        found: list[str] = []
        pending = [self.top]
        while pending:
            doc = parse(pending.pop().data)
            if isinstance(doc, Index):
                pending += [p for d in doc.manifests
                            if (p := self.service.store.manifest(self.repository, d.digest))]
            else:
                found += [doc.config.digest] + [d.digest for d in doc.layers]
        return found

    def open_blob(self, descriptor: Descriptor) -> Any:
        return self.service.open_blob(self.repository, descriptor.digest, descriptor.size)

    def blob_size(self, digest: str) -> int | None:
        return self.service.blob_size(self.repository, digest)

