"""Blob uploads: existence checks, cross-repository mounts, streamed PUT, chunked PATCH.

A blob goes up as ``POST`` then one ``PUT ?digest=`` whose body is streamed from a
file or straight from the source, never held whole in memory. When a registry (or a
proxy in front of it) refuses that body with 413, or asks for chunks with
``OCI-Chunk-Min-Length``, the blob is sent as ``PATCH`` chunks with
``Content-Range`` instead, and the run remembers to use chunks from then on.

A streamed body cannot be replayed by the transport's retry layer, so when the
connection to the destination breaks during that ``PUT`` the whole upload is
retried here: a new session, the source blob opened again, up to ``--retries`` times.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, ContextManager, Iterator

import httpx

from occystrap_core.errors import AuthError, OccystrapError, TransportError
from occystrap_core.streams import CHUNK
from occystrap_core.transport.auth import SCOPES

from .client import Repository

log = logging.getLogger("occystrap.registry")

OCTET = "application/octet-stream"
PATCH_CHUNK = 16 * 1024 * 1024
PATCH_FLOOR = 256 * 1024  # smallest chunk tried when a proxy keeps answering 413


@dataclass
class Session:
    """An upload in progress: where to send the next request, and the chunk minimum."""

    location: str
    min_chunk: int = 0


class _TooLarge(Exception):
    """The registry or a proxy refused a monolithic body (413)."""


class _Broken(Exception):
    """The connection to the destination broke during a streamed PUT."""

    def __init__(self, error: OccystrapError):
        self.error = error


class _Body:
    """A streamed request body. Reads to EOF, so that a digest-verifying reader runs
    its checks before the body ends; notes whether the source (not the network) failed."""

    def __init__(self, body: BinaryIO):
        self.body = body
        self.source_failed = False

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                data = self.body.read(CHUNK)
            except BaseException:
                self.source_failed = True
                raise
            if not data:
                return
            yield data


class Uploader:
    """Blob operations on one destination repository; safe to share between threads."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.client = repo.client
        self._chunked = False
        self._no_mount = False
        self._lock = threading.Lock()

    def exists(self, digest: str) -> bool:
        response = self.repo.request("HEAD", self.repo.url("blobs", digest),
                                     what=f"HEAD blob {digest}", missing_ok=True)
        return response.status_code == 200

    def _session(self, response: httpx.Response) -> Session:
        location = response.headers.get("Location")
        if not location:
            raise self.repo.transport_error("starting an upload",
                                            ValueError("no Location header in the answer"))
        return Session(str(response.url.join(location)),
                       int(response.headers.get("OCI-Chunk-Min-Length") or 0))

    def start(self) -> Session:
        response = self.repo.request("POST", self.repo.url("blobs/uploads"),
                                     what="starting an upload", ok=(202,))
        return self._session(response)

    def mount(self, digest: str, from_repo: str) -> Session | None:
        """Try a cross-repository mount: None when mounted, else a session to upload with.

        Any refusal (no pull access to ``from_repo``, blob gone) just means uploading.
        """
        if self._no_mount:
            return self.start()
        try:
            response = self.client.post(
                self.repo.url("blobs/uploads"), params={"mount": digest, "from": from_repo},
                extensions={SCOPES: [f"repository:{from_repo}:pull"]})
        except AuthError:
            # These credentials may push here but not pull from_repo: stop trying.
            self._no_mount = True
            return self.start()
        except httpx.HTTPError as e:
            raise self.repo.transport_error(f"mounting {digest}", e) from None
        if response.status_code == 201:
            return None
        if response.status_code == 202 and response.headers.get("Location"):
            return self._session(response)
        return self.start()

    def upload(self, digest: str, size: int | None,
               open_body: Callable[[], ContextManager[BinaryIO]],
               session: Session | None = None) -> None:
        """Upload the blob ``open_body()`` yields. ``open_body`` is called again (the
        stream is spent by then) when a monolithic PUT is refused with 413, or broke
        and is retried."""
        session = session or self.start()
        retries = self.repo.ctx.settings.retries
        attempt = 0
        while not (self._chunked or session.min_chunk):
            try:
                with open_body() as body:
                    self._put(session.location, digest, size, body)
                return
            except _TooLarge:
                with self._lock:
                    self._chunked = True  # the same limit will hit every later blob
            except _Broken as e:
                self.cancel(session)
                if attempt >= retries:
                    raise e.error from None
                attempt += 1
                self.repo.ctx.stats.add("retries")
                log.info("uploading %s to %s again after: %s (retry %d of %d)", digest,
                         self.repo.host, e.error, attempt, retries)
            session = self.start()
        with open_body() as body:
            self._patch(session, digest, body)

    def _finish_url(self, location: str, digest: str) -> httpx.URL:
        return httpx.URL(location).copy_merge_params({"digest": digest})

    def _put(self, location: str, digest: str, size: int | None, body: BinaryIO) -> None:
        headers = {"Content-Type": OCTET}
        if size is not None:
            headers["Content-Length"] = str(size)
        what = f"uploading blob {digest}"
        # A seekable file can be rewound, so the retry layer may resend it; a stream
        # from the source cannot, and is read to EOF so that its checks run.
        stream = None if body.seekable() else _Body(body)
        try:
            response = self.client.put(self._finish_url(location, digest),
                                       content=stream or body, headers=headers)
        except httpx.HTTPError as e:
            raise _Broken(self.repo.transport_error(what, e)) from None
        except TransportError as e:  # the retry layer gave up on the connection
            if isinstance(e, AuthError) or (stream and stream.source_failed):
                raise
            raise _Broken(e) from None
        if response.status_code == 413:
            raise _TooLarge
        if response.status_code not in (201, 204):
            raise self.repo.status_error(response, what)

    def _patch(self, session: Session, digest: str, body: BinaryIO) -> None:
        what = f"uploading blob {digest} in chunks"
        floor = max(session.min_chunk, PATCH_FLOOR)
        size = max(session.min_chunk, PATCH_CHUNK)
        location, offset, buf, eof = session.location, 0, bytearray(), False
        while True:
            while not eof and len(buf) < size:
                data = body.read(size - len(buf))
                eof = not data
                buf += data
            if not buf:
                break
            part = bytes(buf[:size])
            response = self.repo.request(
                "PATCH", location, what=what, ok=(202, 413), content=part,
                headers={"Content-Type": OCTET, "Content-Length": str(len(part)),
                         "Content-Range": f"{offset}-{offset + len(part) - 1}"})
            if response.status_code == 413:
                if size // 2 < floor:
                    raise self.repo.status_error(response, what)
                size //= 2
                continue
            location = str(response.url.join(response.headers.get("Location") or location))
            offset += len(part)
            del buf[:len(part)]
        self.repo.request("PUT", self._finish_url(location, digest), what=what,
                          ok=(201, 204), headers={"Content-Length": "0"})

    def push_bytes(self, digest: str, data: bytes) -> None:
        """Upload a small blob (the config) unless the registry has it."""
        if self.exists(digest):
            return
        session = self.start()
        self.repo.request("PUT", self._finish_url(session.location, digest),
                          what=f"uploading blob {digest}", ok=(201, 204), content=data,
                          headers={"Content-Type": OCTET})

    def cancel(self, session: Session) -> None:
        """Best effort: tell the registry an upload session is abandoned."""
        try:
            self.client.delete(session.location)
        except httpx.HTTPError:
            pass
