"""Blob uploads: existence checks, cross-repository mounts, streamed PUT, chunked PATCH.

A blob goes up as ``POST`` then one ``PUT ?digest=`` whose body is streamed from a
file or straight from the source, never held whole in memory. When a registry (or a
proxy in front of it) refuses that body with 413, or asks for chunks with
``OCI-Chunk-Min-Length``, the blob is sent as ``PATCH`` chunks with
``Content-Range`` instead, and the run remembers to use chunks from then on.

An upload session is spent by its final ``PUT``, so the transport never replays
those requests: when one fails (a broken connection, 429 or 5xx, an answer that
never came) the uploader asks whether the registry has the blob after all (the
answer may have been lost after the blob was stored), and otherwise starts over
with a new session and the source opened again, under the run's retry policy.

Every answer is checked the way the distribution spec defines it: the status, not
a web page, and ``Docker-Content-Digest`` (when sent) naming the blob uploaded.
Open sessions are remembered, so that an interrupted run can cancel them.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import httpx

from occystrap_core.errors import AuthError, CorruptImageError, OccystrapError, TransportError
from occystrap_core.streams import CHUNK, Readable
from occystrap_core.transport.auth import SCOPES
from occystrap_core.transport.errors import html_page, status_error
from occystrap_core.transport.retry import NO_RETRY, RETRY_STATUSES

from .client import Repository
from .sessions import Journals, sweep

log = logging.getLogger("occystrap.registry")

OCTET = "application/octet-stream"
PATCH_CHUNK = 16 * 1024 * 1024
PATCH_FLOOR = 256 * 1024  # smallest chunk tried when a proxy keeps answering 413
_ONCE = {NO_RETRY: False}  # a session's requests: retried whole by the uploader
# A session the registry has forgotten (it expired, or a lost answer spent it).
_SESSION_GONE = (404, 416)
JOURNALS = "registry.upload_journals"


@dataclass
class Session:
    """An upload in progress: where to send the next request, and the chunk minimum."""

    location: str
    min_chunk: int = 0


class _TooLarge(Exception):
    """The registry or a proxy refused a monolithic body (413)."""


class _Failed(Exception):
    """An upload attempt failed in a way a new attempt may cure."""

    def __init__(self, error: OccystrapError, response: httpx.Response | None = None):
        self.error = error
        self.response = response


class _Body:
    """A streamed request body. Reads to EOF, so that a digest-verifying reader runs
    its checks before the body ends; notes whether the source (not the network) failed."""

    def __init__(self, body: Readable):
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


def check_digest_header(response: httpx.Response, digest: str, what: str) -> None:
    """A ``Docker-Content-Digest`` that names another digest is an error, not news."""
    stated = response.headers.get("Docker-Content-Digest")
    if stated is not None and stated != digest:
        raise CorruptImageError(f"{what}: {response.request.url.netloc.decode()} says it "
                                f"stored {stated}, but {digest} was sent")


class Uploader:
    """Blob operations on one destination repository; safe to share between threads."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.client = repo.client
        self.policy = repo.ctx.retry
        self._chunked = False
        self._no_mount = False
        self._lock = threading.Lock()
        self._open: set[str] = set()  # locations of the sessions not finished or cancelled
        self.journal, new = repo.ctx.shared(JOURNALS, self._journals).get(repo.host)
        if new:  # the first output of the run for this registry
            sweep(repo.host, self._cancel_stale)

    def _journals(self) -> Journals:
        journals = Journals()
        self.repo.ctx.call_on_close(journals.close)
        return journals

    def _cancel_stale(self, location: str) -> bool:
        """Cancel a session a killed run left open; True once the registry holds it no more."""
        if httpx.URL(location).netloc.decode() != self.repo.host:
            return False  # never send these credentials elsewhere
        try:
            response = self.client.delete(location, extensions=dict(_ONCE))
        except (httpx.HTTPError, OccystrapError):
            return False
        return response.is_success or response.status_code == 404

    def exists(self, digest: str, size: int | None = None) -> bool:
        """Does the repository hold ``digest``? Only a registry's own yes counts: a 200
        that is a web page, or names another digest or size, is an error."""
        what = f"HEAD blob {digest}"
        response = self.repo.request("HEAD", self.repo.url("blobs", digest), what=what,
                                     missing_ok=True)
        if response.status_code == 404:
            return False
        check_digest_header(response, digest, what)
        length = response.headers.get("Content-Length")
        if size is not None and length is not None and length.isdigit() and int(length) != size:
            raise CorruptImageError(f"{what}: {self.repo.host} holds {length} bytes under "
                                    f"that digest, not {size}")
        return True

    def _session(self, response: httpx.Response) -> Session:
        location = response.headers.get("Location")
        if not location:
            raise self.repo.transport_error("starting an upload",
                                            ValueError("no Location header in the answer"))
        session = Session(str(response.url.join(location)),
                          int(response.headers.get("OCI-Chunk-Min-Length") or 0))
        with self._lock:
            self._open.add(session.location)
        self.journal.opened(session.location)
        return session

    def start(self) -> Session:
        response = self.repo.request("POST", self.repo.url("blobs/uploads"),
                                     what="starting an upload", ok=(202,))
        return self._session(response)

    @property
    def can_mount(self) -> bool:
        """False once the registry refused these credentials a mount's pull scope."""
        return not self._no_mount

    def mount(self, digest: str, from_repo: str) -> Session | None:
        """Try a cross-repository mount: None when mounted, else a session to upload with.

        Any refusal (no pull access to ``from_repo``, blob gone) just means uploading.
        """
        if self._no_mount:
            return self.start()
        what = f"mounting {digest} from {from_repo}"
        try:
            response = self.client.post(
                self.repo.url("blobs/uploads"), params={"mount": digest, "from": from_repo},
                extensions={SCOPES: [f"repository:{from_repo}:pull"]})
        except AuthError:
            # These credentials may push here but not pull from_repo: stop trying.
            self._no_mount = True
            return self.start()
        except httpx.HTTPError as e:
            raise self.repo.transport_error(what, e) from None
        if html_page(response):
            raise status_error(response, what, expected=(201, 202))
        if response.status_code == 201:
            check_digest_header(response, digest, what)
            return None
        if response.status_code == 202 and response.headers.get("Location"):
            return self._session(response)
        return self.start()

    def upload(self, digest: str, size: int | None,
               open_body: Callable[[], ContextManager[Readable]],
               session: Session | None = None) -> None:
        """Upload the blob ``open_body()`` yields, retried as the run's policy allows.

        ``open_body`` is called again (the stream is spent by then) for each new
        attempt, and when a monolithic PUT is refused with 413.
        """
        session = session or self.start()
        attempt = 0
        while True:
            try:
                # A blob smaller than the registry's chunk minimum goes in one PUT.
                chunks = session.min_chunk and (size is None or size > session.min_chunk)
                with open_body() as body:
                    if self._chunked or chunks:
                        self._patch(session, digest, body)
                    else:
                        self._put(session.location, digest, size, body)
                self._finished(session)
                return
            except _TooLarge:
                self.cancel(session)
                with self._lock:
                    self._chunked = True  # the same limit will hit every later blob
            except _Failed as failed:
                # The answer may have been lost after the registry stored the blob.
                if self.exists(digest, size):
                    self.cancel(session)
                    return
                self.cancel(session)
                if not self.policy.allows(attempt):
                    raise failed.error from None
                self.policy.wait(attempt, str(failed.error), f"uploading {digest} to "
                                 f"{self.repo.host}", failed.response, host=self.repo.host)
                attempt += 1
            except BaseException:
                self.cancel(session)
                raise
            session = self.start()

    def _finish_url(self, location: str, digest: str) -> httpx.URL:
        return httpx.URL(location).copy_merge_params({"digest": digest})

    def _send(self, method: str, url: str | httpx.URL, what: str, ok: tuple[int, ...],
              stream: _Body | None = None, **kwargs: Any) -> httpx.Response:
        """One request of a session: failures a new session may cure raise _Failed."""
        try:
            response = self.client.request(method, url, extensions=dict(_ONCE),
                                           **kwargs)
        except httpx.HTTPError as e:
            raise _Failed(self.repo.transport_error(what, e)) from None
        except TransportError as e:  # the retry layer translated a network failure
            if isinstance(e, AuthError) or (stream and stream.source_failed) or not e.retryable:
                raise
            raise _Failed(e) from None
        status = response.status_code
        if status in ok and not html_page(response):
            return response
        if status == 413:
            response.close()
            raise _TooLarge
        error = status_error(response, what, expected=ok)
        if status in RETRY_STATUSES or status in _SESSION_GONE:
            raise _Failed(error, response)
        raise error

    def _put(self, location: str, digest: str, size: int | None, body: Readable) -> None:
        headers = {"Content-Type": OCTET}
        if size is not None:
            headers["Content-Length"] = str(size)
        what = f"uploading blob {digest}"
        # A stream from the source is read to EOF, so that its checks run.
        stream = None if isinstance(body, io.IOBase) and body.seekable() else _Body(body)
        response = self._send("PUT", self._finish_url(location, digest), what, (201, 204),
                              stream, content=stream or body, headers=headers)
        check_digest_header(response, digest, what)

    def _patch(self, session: Session, digest: str, body: Readable) -> None:
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
            try:
                response = self._send(
                    "PATCH", location, what, (202,), content=part,
                    headers={"Content-Type": OCTET, "Content-Length": str(len(part)),
                             "Content-Range": f"{offset}-{offset + len(part) - 1}"})
            except _TooLarge:
                if size // 2 < floor:
                    raise
                size //= 2
                continue
            location = str(response.url.join(response.headers.get("Location") or location))
            with self._lock:  # the session now goes by its new location
                self._open.discard(session.location)
                self._open.add(location)
            self.journal.opened(location)
            self.journal.closed(session.location)
            session.location = location
            offset += len(part)
            del buf[:len(part)]
        response = self._send("PUT", self._finish_url(location, digest), what, (201, 204),
                              headers={"Content-Length": "0"})
        check_digest_header(response, digest, what)

    def push_bytes(self, digest: str, data: bytes) -> None:
        """Upload a small blob (the config) unless the registry has it."""
        if not self.exists(digest, len(data)):
            self.upload(digest, len(data), lambda: io.BytesIO(data))

    def _finished(self, session: Session) -> None:
        with self._lock:
            self._open.discard(session.location)
        self.journal.closed(session.location)

    def cancel(self, session: Session) -> None:
        """Best effort: tell the registry an upload session is abandoned."""
        self._finished(session)
        try:  # once: an interrupted run must not wait for retries of a courtesy
            self.client.delete(session.location, extensions=dict(_ONCE))
        except (httpx.HTTPError, OccystrapError):
            pass

    def cancel_all(self) -> None:
        """Cancel every session still open (an interrupted or failed run)."""
        with self._lock:
            locations, self._open = list(self._open), set()
        for location in locations:
            self.cancel(Session(location))
