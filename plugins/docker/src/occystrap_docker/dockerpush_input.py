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
import math
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import BinaryIO

from occystrap_core.api import Fetched, ImageSource
from occystrap_core.clitypes import MAX_SECONDS
from occystrap_core.context import Context
from occystrap_core.errors import (
    ImageNotFoundError,
    OccystrapError,
    TransportError,
    UnsupportedError,
    URIError,
)
from occystrap_core.oci.convert import index_document
from occystrap_core.oci.manifest import Descriptor, Index, parse
from occystrap_core.types import ResolvedURI

from .daemon import Daemon, socket_path
from .push_registry import LOOPBACK, Pushed, PushRegistry
from .reference import DaemonReference

log = logging.getLogger("occystrap.dockerpush")

PUSH_REPOSITORY = "occystrap-push"
DEFAULT_TIMEOUT = 300.0
_TEMPORARY_TAG = re.compile(rf"{re.escape(LOOPBACK)}:(\d+)/{PUSH_REPOSITORY}:[0-9a-f]{{16}}")


def _listening(port: int) -> bool:
    """Does something accept connections on 127.0.0.1:port (a live run's registry)?"""
    try:
        socket.create_connection((LOOPBACK, port), timeout=1.0).close()
    except ConnectionRefusedError:
        return False
    except (OSError, OverflowError):
        return True  # unsure: keep the tag
    return True


class DockerPushInput(ImageSource):
    """What the daemon pushed: a manifest, or (Docker's containerd store) an index of
    the platforms it holds, from which the engine picks as from any registry."""

    parallel = True

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.asked = DaemonReference(uri.target, "dockerpush")
        self.ref = self.asked.ref
        self.name, self.tag = self.ref.familiar_name, self.ref.tag
        self.ctx = ctx
        timeout = uri.options.get("timeout")
        self.timeout: float = DEFAULT_TIMEOUT if timeout is None else timeout
        if not (math.isfinite(self.timeout) and 0 < self.timeout < MAX_SECONDS):
            raise URIError(f"dockerpush://: option 'timeout' must be a number of seconds "
                           f"above 0 and below {MAX_SECONDS:g}, got {timeout}")
        self.daemon = Daemon(socket_path(uri.options.get("socket")), ctx.settings, ctx.retry)
        self._registry: PushRegistry | None = None
        self._top: Fetched | None = None

    def manifest(self, digest: str | None = None) -> Fetched:
        if self._top is None:
            self._top = self._pushed(self._push_all())
        if digest is None:
            return self._top
        assert self._registry is not None
        found = self._registry.manifest(PUSH_REPOSITORY, digest)
        if found is None:
            raise ImageNotFoundError(f"the daemon did not push manifest {digest} of "
                                     f"{self.asked.asked}")
        return Fetched(found.data, found.media_type)

    def _push_all(self) -> Pushed:
        from .certs import server_context

        ref = self.asked.asked
        inspected = self.daemon.inspect(ref)  # a clear "not found" before the registry starts
        image_id = self.asked.image_id(inspected)
        if image_id:  # pushed by its full ID; an ID names no image
            if not [t for t in inspected.get("RepoTags") or () if t != "<none>:<none>"]:
                # The push needs a name, and removing an image's only name deletes it.
                raise UnsupportedError(
                    f"dockerpush:// cannot push image {image_id}: it has no name, and the "
                    f"daemon deletes an image when the name a push needs is removed "
                    f"(read it with docker://{self.asked.asked})")
            ref, self.name, self.tag = image_id, None, None
        self._sweep_stale_tags()
        registry = self._registry = PushRegistry(
            tempfile.mkdtemp(prefix="dockerpush-", dir=self.ctx.temp_dir),
            server_context(self.ctx.temp_dir))
        registry.start()
        try:
            return self._push(ref, registry)
        finally:
            registry.stop()

    def _sweep_stale_tags(self) -> None:
        """Remove the temporary tags of runs that were killed: their registry's port no
        longer answers. A tag that is an image's only name stays (removing it would
        delete the image); a daemon that cannot list its images is not swept."""
        try:
            listed = self.daemon.images()
        except OccystrapError as e:
            log.debug("not sweeping temporary tags: %s", e)
            return
        for image in listed:
            tags = [t for t in image.get("RepoTags") or () if isinstance(t, str)]
            for tag in tags:
                m = _TEMPORARY_TAG.fullmatch(tag)
                if m and len(tags) > 1 and not _listening(int(m.group(1))):
                    log.info("removing %s, left by a killed dockerpush:// run", tag)
                    self._untag(tag)
                    tags.remove(tag)

    def _push(self, ref: str, registry: PushRegistry) -> Pushed:
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

    def _pushed(self, top: Pushed) -> Fetched:
        """The pushed manifest; an index lists only the platforms the daemon pushed (it
        holds, and pushes, only some of those an image pulled for one platform lists)."""
        doc = parse(top.data, top.media_type, f"the manifest the daemon pushed for "
                                              f"{self.asked.asked}")
        if not isinstance(doc, Index):
            return Fetched(top.data, top.media_type)
        assert self._registry is not None
        kept = [d for d in doc.manifests
                if self._registry.manifest(PUSH_REPOSITORY, d.digest) is not None]
        if not kept:
            raise ImageNotFoundError(f"the daemon pushed an index of {self.asked.asked} "
                                     f"but none of its images")
        if len(kept) == len(doc.manifests):
            return Fetched(top.data, top.media_type)
        log.info("the daemon pushed %d of the %d images %s lists", len(kept),
                 len(doc.manifests), self.asked.asked)
        whole = {**json.loads(top.data), "manifests": [d.json() for d in kept]}
        return Fetched(index_document(whole, doc.media_type), doc.media_type)

    def open_blob(self, descriptor: Descriptor) -> contextlib.AbstractContextManager[BinaryIO]:
        return self._open(descriptor.digest, f"blob {descriptor.digest}")

    @contextlib.contextmanager
    def _open(self, digest: str, what: str) -> Iterator[BinaryIO]:
        assert self._registry is not None, "manifest() first"
        if self._registry.blob_size(digest) is None:
            raise ImageNotFoundError(f"the daemon did not push the {what}")
        with open(self._registry.blob_path(digest), "rb") as f:
            yield f

    def close(self) -> None:
        if self._registry is not None:
            self._registry.stop()
            self._registry.remove()
        self.daemon.close()
