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

A blob bigger than :data:`RESUMABLE_FROM` is always sent in chunks, each
acknowledged chunk journaled (:mod:`~occystrap_registry.sessions`): when a run is
killed, the next one asks the registry how much of the session it holds
(``GET`` on the session: ``204`` with ``Range: 0-N``) and sends the rest, from a
source read again from the start (so a verifying reader still hashes every byte).
Sessions are keyed by the digest of the bytes sent, so only the same bytes ever
continue one, and the final ``PUT ?digest=`` has the registry check the whole
blob. A session the registry no longer knows, or refuses to complete, is cancelled
and the blob uploaded afresh. (The CNCF registry forgets a session whose last
``PATCH`` was cut mid-body: only sessions whose chunks all arrived whole resume.)
A registry that will not take several ``PATCH``es (Artifact Registry refuses them,
GHCR keeps only the last) gets the blob in one ``PUT`` instead, and every later big
blob of the run too.

Every answer is checked the way the distribution spec defines it: the status, not
a web page, and ``Docker-Content-Digest`` (when sent) naming the blob uploaded.
Open sessions are remembered, so that an interrupted run can cancel them.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import httpx

from occystrap_core.errors import AuthError, CorruptImageError, OccystrapError, TransportError
from occystrap_core.streams import CHUNK, Readable, direct
from occystrap_core.transport.auth import SCOPES
from occystrap_core.transport.errors import error_codes, html_page, status_error
from occystrap_core.transport.retry import NO_RETRY, RETRY_STATUSES

from .client import Repository
from .sessions import Journals, state_dir

log = logging.getLogger("occystrap.registry")

OCTET = "application/octet-stream"
PATCH_CHUNK = 16 * 1024 * 1024
PATCH_FLOOR = 256 * 1024  # smallest chunk tried when a proxy keeps answering 413
# Bigger blobs go in chunks, so that a killed run's successor can resume them.
RESUMABLE_FROM = 2 * PATCH_CHUNK
_ONCE = {NO_RETRY: False}  # a session's requests: retried whole by the uploader
# A session the registry has forgotten (it expired, or a lost answer spent it).
_SESSION_GONE = (404, 416)
JOURNALS = "registry.upload_journals"


@dataclass
class Session:
    """An upload in progress: where to send the next request, and the chunk minimum."""

    location: str
    min_chunk: int = 0
    offset: int = 0  # bytes the registry holds already (a resumed session)


class _TooLarge(Exception):
    """The registry or a proxy refused a monolithic body (413)."""


class _ChunksRefused(Exception):
    """The registry will not take a blob in several PATCHes: it refused one (GAR
    answers PATCH with an error), or the blob they made does not match its digest
    (GHCR keeps only the last of several PATCHes)."""

    def __init__(self, error: OccystrapError):
        self.error = error


# a PATCH refused outright; a finished chunked upload refused as another blob
_PATCH_REFUSED = (400, 405, 415, 501)
_CHUNKS_MISMATCH = {"DIGEST_INVALID", "BLOB_UPLOAD_INVALID", "SIZE_INVALID"}
WHOLE_BLOBS = "registry.whole_blobs"  # ctx.shared: hosts that refused chunks


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

    def _read(self, size: int) -> bytes:  # not read(): httpx would read a file-like to EOF
        try:
            return self.body.read(size)
        except BaseException:
            self.source_failed = True
            raise

    def __iter__(self) -> Iterator[bytes]:
        while data := self._read(CHUNK):
            yield data


class _Slice(_Body):
    """The next ``length`` bytes of a body, streamed as one chunk's request body; the
    last chunk reads on to EOF, so that a digest-verifying reader runs its checks."""

    def __init__(self, body: Readable, length: int, last: bool):
        super().__init__(body)
        self.length = length
        self.last = last

    def __iter__(self) -> Iterator[bytes]:
        left = self.length
        while left:
            data = self._read(min(left, CHUNK))
            if not data:
                self.source_failed = True
                raise CorruptImageError(f"the blob ended {left} bytes short of its size")
            left -= len(data)
            yield data
        if self.last and self._read(1):
            self.source_failed = True
            raise CorruptImageError("the blob is longer than its size")


def _direct(body: Readable) -> Readable:
    """``body`` read with no copy beyond the source's own: ``read(n)`` on a raw stream
    (the engine's verifying reader) fills a new buffer and copies it into the bytes it
    returns, holding the interpreter lock for both; a BufferedReader over it has the
    raw stream fill the bytes it returns directly (reads of ``CHUNK`` bypass its buffer)."""
    return direct(body) if isinstance(body, io.RawIOBase) else body


def _pieces(data: bytes) -> Iterator[bytes]:
    """A chunk's body in pieces: httpcore copies what a send leaves of a buffer, so one
    big buffer costs a copy per socket write (quadratic in the chunk, and memory)."""
    for start in range(0, len(data), CHUNK):
        yield data[start:start + CHUNK]


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
        # registries that refused chunks: big blobs go in one PUT to them, in this run
        self._whole: set[str] = repo.ctx.shared(WHOLE_BLOBS, set)
        self._no_mount = False
        self._lock = threading.Lock()
        self._open: set[str] = set()  # locations of the sessions not finished or cancelled
        self.journal, new = repo.ctx.shared(JOURNALS, self._journals).get(repo.host)
        if new:  # the first output of the run for this registry
            self.journal.sweep(self._cancel_stale)

    def _journals(self) -> Journals:
        journals = Journals(state_dir(self.repo.ctx.layer_cache_dir))
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
        resumed = self._resume(digest, size)
        if resumed is not None:
            if session is not None:
                self.cancel(session)
            if self._resumed_upload(resumed, digest, size, open_body):
                return
            session = None
        session = session or self.start()
        # Sent in chunks when big, so that a later run can resume the upload.
        resumable = self.journal.directory is not None and (size or 0) > RESUMABLE_FROM \
            and self.repo.host not in self._whole
        attempt = 0
        while True:
            try:
                # A blob smaller than the registry's chunk minimum goes in one PUT.
                chunks = session.min_chunk and (size is None or size > session.min_chunk)
                with open_body() as opened:
                    body = _direct(opened)
                    if self._chunked or chunks:
                        self._patch(session, digest, body)
                    elif resumable:
                        assert size is not None
                        self._stream_chunks(session, digest, size, body)
                    else:
                        self._put(session.location, digest, size, body)
                self._finished(session)
                return
            except _TooLarge:
                self.cancel(session)
                with self._lock:
                    self._chunked = True  # the same limit will hit every later blob
            except _ChunksRefused as refused:
                self.cancel(session)
                if not resumable:
                    raise refused.error from None
                self._refused_chunks(refused)
                resumable = False  # what a registry refuses once it refuses again
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

    def _resume(self, digest: str, size: int | None) -> Session | None:
        """The session a killed run left ``digest`` half-sent in, at the offset the
        registry reports; None (that session cancelled) when there is none to go on with."""
        found = self.journal.take(self.repo.path, digest)
        if found is None:
            return None
        session = Session(found.location)
        with self._lock:
            self._open.add(session.location)
        if httpx.URL(found.location).netloc.decode() != self.repo.host:
            self._finished(session)  # never send these credentials elsewhere
            return None
        try:
            response = self.client.get(found.location, extensions=dict(_ONCE))
        except (httpx.HTTPError, OccystrapError) as e:
            log.info("no resuming the upload of %s: %s", digest, e)
            self.cancel(session)
            return None
        held = re.fullmatch(r"(?:bytes=)?0-(\d+)", response.headers.get("Range", ""))
        offset = int(held.group(1)) + 1 if held else 0
        if response.status_code != 204 or html_page(response) or offset <= 1 or (
                size is not None and offset > size):
            log.info("no resuming the upload of %s: the registry answered %d (Range %s)",
                     digest, response.status_code, response.headers.get("Range"))
            self.cancel(session)
            return None
        self._moved(session, str(response.url.join(response.headers.get("Location")
                                                    or found.location)), digest, offset)
        session.min_chunk = int(response.headers.get("OCI-Chunk-Min-Length") or 0)
        session.offset = offset
        log.info("resuming the upload of %s at byte %d", digest, offset)
        return session

    def _resumed_upload(self, session: Session, digest: str, size: int | None,
                        open_body: Callable[[], ContextManager[Readable]]) -> bool:
        """Send the rest of a resumed session: False (the session cancelled) when the
        registry refuses it, so the blob goes up afresh."""
        try:
            with open_body() as opened:
                body = _direct(opened)
                if size is None or self._chunked or session.min_chunk:
                    self._patch(session, digest, body)
                else:
                    self._stream_chunks(session, digest, size, body)
        except (_Failed, _TooLarge, _ChunksRefused, TransportError) as e:
            self.cancel(session)
            if isinstance(e, AuthError):
                raise
            # _ChunksRefused too: the bytes the session held may have been another
            # blob's; the fresh upload finds out whether the registry takes chunks
            log.info("resuming the upload of %s failed, starting over: %s", digest,
                     e.error if isinstance(e, (_Failed, _ChunksRefused)) else e)
            return False
        except BaseException:
            self.cancel(session)
            raise
        self._finished(session)
        return True

    def _refused_chunks(self, refused: _ChunksRefused) -> None:
        log.warning("%s does not take a blob in chunks (%s): big blobs go in one PUT, "
                    "which a killed run cannot resume", self.repo.host, refused.error)
        self._whole.add(self.repo.host)

    def _moved(self, session: Session, location: str, digest: str, offset: int) -> None:
        """The session goes by ``location`` now, ``offset`` bytes of ``digest`` sent."""
        with self._lock:
            self._open.discard(session.location)
            self._open.add(location)
        self.journal.opened(location, repo=self.repo.path, digest=digest, offset=offset)
        if location != session.location:
            self.journal.closed(session.location)
        session.location = location

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
        offset, pending, eof = session.offset, b"", False
        if offset:
            self._skip(body, offset, digest)
        while True:
            if not eof and len(pending) < size:
                pending, eof = self._fill(body, pending, size)
            if not pending:
                break
            # no copy but after a 413, when a smaller chunk is cut from what was read
            part = pending if len(pending) <= size else pending[:size]
            try:
                response = self._send(
                    "PATCH", session.location, what, (202,), content=_pieces(part),
                    headers={"Content-Type": OCTET, "Content-Length": str(len(part)),
                             "Content-Range": f"{offset}-{offset + len(part) - 1}"})
            except _TooLarge:
                if size // 2 < floor:
                    raise
                size //= 2
                continue
            offset += len(part)
            self._moved(session, str(response.url.join(response.headers.get("Location")
                                                        or session.location)), digest, offset)
            pending = pending[len(part):]
        response = self._send("PUT", self._finish_url(session.location, digest), what,
                              (201, 204),
                              headers={"Content-Length": "0"})
        check_digest_header(response, digest, what)

    def _stream_chunks(self, session: Session, digest: str, size: int, body: Readable) -> None:
        """Send ``size`` bytes in chunks streamed from ``body``, none held in memory,
        from the session's offset on. A 413 cannot be answered with a smaller chunk
        (the bytes are gone): it raises _TooLarge, and the blob starts over buffered."""
        what = f"uploading blob {digest} in chunks"
        offset, chunk = session.offset, max(session.min_chunk, PATCH_CHUNK)
        if offset:
            self._skip(body, offset, digest)
        while offset < size:
            # Less than two chunks left: one PATCH, not a full one and a short one (each
            # costs a round trip, and the registry a close and reopen of the upload).
            length = chunk if size - offset >= 2 * chunk else size - offset
            stream = _Slice(body, length, offset + length == size)
            response = self._chunk_send(
                "PATCH", session.location, what, (202,), stream, content=stream,
                headers={"Content-Type": OCTET, "Content-Length": str(length),
                         "Content-Range": f"{offset}-{offset + length - 1}"})
            offset += length
            self._moved(session, str(response.url.join(response.headers.get("Location")
                                                        or session.location)), digest, offset)
        if offset == session.offset and body.read(1):  # resumed at the end: check it is
            raise CorruptImageError(f"uploading blob {digest}: the blob is longer than "
                                    "the registry holds")
        response = self._chunk_send("PUT", self._finish_url(session.location, digest), what,
                                    (201, 204), headers={"Content-Length": "0"})
        check_digest_header(response, digest, what)

    def _chunk_send(self, method: str, url: str | httpx.URL, what: str, ok: tuple[int, ...],
                    stream: _Body | None = None, **kwargs: Any) -> httpx.Response:
        """:meth:`_send` for a chunked upload we chose (to resume it): a registry
        refusing chunks raises _ChunksRefused, so the blob goes whole instead."""
        try:
            return self._send(method, url, what, ok, stream, **kwargs)
        except OccystrapError as e:  # an AuthError's 401 or 403 is neither refusal
            response = e.response
            if response is None or stream is not None and stream.source_failed:
                raise
            if method == "PATCH" and response.status_code in _PATCH_REFUSED or \
                    response.status_code == 400 and _CHUNKS_MISMATCH & set(error_codes(response)):
                raise _ChunksRefused(e) from None
            raise

    @staticmethod
    def _fill(body: Readable, pending: bytes, size: int) -> tuple[bytes, bool]:
        """``pending`` topped up to ``size`` bytes from ``body`` (one copy at most),
        and whether the body ended."""
        pieces, have = [pending] if pending else [], len(pending)
        while have < size:
            data = body.read(size - have)
            if not data:
                break
            pieces.append(data)
            have += len(data)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces), have < size

    def _skip(self, body: Readable, offset: int, digest: str) -> None:
        """Pass the ``offset`` bytes the registry holds: read (and so hashed) unless
        the body is a file, which needs no checking."""
        if isinstance(body, io.IOBase) and body.seekable():
            if body.seek(offset) == offset:
                return
        else:
            while offset:
                data = body.read(min(offset, CHUNK))
                if not data:
                    break
                offset -= len(data)
            else:
                return
        raise _Failed(CorruptImageError(f"resuming the upload of {digest}: the blob is "
                                        "shorter than what the registry holds"))

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
