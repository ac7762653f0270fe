"""The proxy's HTTP side: an ASGI application speaking the Distribution API.

Only what clients push and pull with: ``/v2/``, blob ``HEAD``/``GET``, uploads
(``POST``, ``PATCH``, ``PUT ?digest=``, ``GET``, ``DELETE``; monolithic and mounts)
and manifest ``GET``/``HEAD``/``PUT``. Path parts are matched against strict patterns
before they name a file or reach a header. Bodies stream both ways in chunks: a
request body goes to a file as it arrives (the server stops reading the socket while
a chunk waits), a blob goes out as it is read. Image work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qs

from occystrap_core import digest as digests
from occystrap_core import streams
from occystrap_core.errors import ImageNotFoundError, OccystrapError, UnsupportedError
from occystrap_core.oci.manifest import MAX_MANIFEST
from occystrap_core.serving import MEDIA_TYPE, ROUTES, RegistryError, Upload

from .auth import Authenticator
from .events import EventLog
from .numbers import at_most
from .ranges import Unsatisfiable, byte_range
from .service import ProxyService

log = logging.getLogger("occystrap.proxy")

T = TypeVar("T")


class _ClientGone(Exception):
    """The client went away in the middle of its request."""


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # the body, when it is streamed
    length: int | None = None  # Content-Length of a streamed or HEAD body

    @property
    def content_length(self) -> int:
        return self.length if self.length is not None else len(self.body)


class _Request:
    def __init__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]]):
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in scope.get("headers", [])}
        client = scope.get("client")
        self.client = f"{client[0]}:{client[1]}" if client else "-"
        self._receive = receive
        self.sent = 0  # bytes of the response's body sent

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body"):
                return

    async def read(self, limit: int) -> bytes:
        data = bytearray()
        async for chunk in self.chunks():
            data += chunk
            if len(data) > limit:
                raise RegistryError(400, "MANIFEST_INVALID", f"larger than {limit} bytes")
        return bytes(data)

    async def disconnected(self) -> None:
        """Returns when the client goes away (for a request without a body)."""
        while (await self._receive())["type"] != "http.disconnect":
            pass


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None
           ) -> Response:
    body = RegistryError(status, code, message).body()
    return Response(status, {"Content-Type": "application/json", **(headers or {})}, body)


class ProxyApp:
    """The ASGI application. ``pool`` runs blocking work (downstream reads, blobs);
    ``images`` runs manifest requests, which may wait long for a copy (--concurrency):
    on threads of their own, they leave ``pool``'s to other clients' blob requests."""

    def __init__(self, service: ProxyService, events: EventLog, pool: Executor,
                 auth: Authenticator | None = None, sweep_every: float = 60.0,
                 images: Executor | None = None):
        self.service = service
        self.events = events
        self.pool = pool
        self.images = images or pool
        self.auth = auth
        self.sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _run_image(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.images, fn, *args)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._sweeper = asyncio.create_task(self._sweep())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._sweeper is not None:
                    self._sweeper.cancel()
                # in-flight requests had their grace period: work still running stops
                self.service.ctx.cancel.set()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            try:
                removed = await self._run(self.service.store.sweep)
            except OSError as e:
                self.events.emit("error", error=f"sweeping the blob store: {e}")
                continue
            if removed:
                self.events.emit("swept", files=removed)

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.monotonic()
        request = _Request(scope, receive)
        try:
            response = await self._handle(request)
        except _ClientGone:
            self._access(request, 499, 0, started, aborted=True)
            return
        except RegistryError as e:
            response = _error(e.status, e.code, str(e))
        except ImageNotFoundError as e:
            response = _error(404, "MANIFEST_UNKNOWN", str(e))
        except UnsupportedError as e:  # what the copy cannot do: asking again will not help
            response = _error(400, "UNSUPPORTED", str(e))
        except OccystrapError as e:  # the upstream or downstream failed us
            self.events.emit("error", method=request.method, path=request.path, error=str(e))
            response = _error(502, "UNKNOWN", str(e))
        except Exception as e:
            log.exception("proxy: %s %s failed", request.method, request.path)
            self.events.emit("error", method=request.method, path=request.path,
                             error=f"unexpected {type(e).__name__}: {e}")
            response = _error(500, "UNKNOWN", "internal error")
        try:
            await self._send(send, request, response)
        finally:  # a body broken off (the client left, the blob failed) is said so
            whole = 0 if request.method == "HEAD" else response.content_length
            self._access(request, response.status, request.sent, started,
                         aborted=request.sent < whole)

    def _access(self, request: _Request, status: int, sent: int, started: float,
                aborted: bool = False) -> None:
        self.events.emit("request", method=request.method, path=request.path, status=status,
                         bytes=sent, aborted=aborted,
                         seconds=round(time.monotonic() - started, 3), client=request.client)

    async def _send(self, send: Any, request: _Request, response: Response) -> None:
        """Send ``response``, counting the body's bytes in ``request.sent`` as they go."""
        headers = {"Docker-Distribution-API-Version": "registry/2.0", **response.headers}
        headers["Content-Length"] = str(response.content_length)
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})
        if request.method == "HEAD" or response.stream is None:
            body = b"" if request.method == "HEAD" else response.body
            await send({"type": "http.response.body", "body": body})
            request.sent = len(body)
            return
        gone = asyncio.ensure_future(request.disconnected())
        try:
            async for chunk in response.stream:
                if gone.done():
                    break  # the client left: stop reading the blob
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                request.sent += len(chunk)
        except (OccystrapError, OSError) as e:  # headers are out: only breaking it off tells
            self.events.emit("error", method=request.method, path=request.path,
                             error=f"sending the blob failed: {e}")
            raise
        finally:
            gone.cancel()
        await send({"type": "http.response.body", "body": b""})

    # --- routing ---------------------------------------------------------------------

    async def _handle(self, request: _Request) -> Response:
        if self.auth is not None and not await self._run(
                self.auth.check, request.headers.get("authorization")):
            return _error(401, "UNAUTHORIZED", "authentication required",
                          {"WWW-Authenticate": f'Basic realm="{self.auth.realm}"'})
        for pattern, route in ROUTES:
            m = pattern.match(request.path)
            if m:
                action = getattr(self, f"_{route}_{request.method.lower()}", None)
                if action is None:
                    raise RegistryError(405, "UNSUPPORTED", f"{request.method} is not supported")
                response: Response = await action(request, **m.groupdict())
                return response
        # not NAME_UNKNOWN: oras-go takes that, on GET .../referrers/<digest>, for a
        # missing repository and fails instead of falling back to the referrers tag
        raise RegistryError(404, "UNSUPPORTED", "no such endpoint")

    async def _base_get(self, request: _Request) -> Response:
        return Response(200, {"Content-Type": "application/json"}, b"{}")

    _base_head = _base_get

    # --- blobs -------------------------------------------------------------------

    async def _blob_head(self, request: _Request, name: str, digest: str) -> Response:
        digests.validate(digest, "blob digest")
        # a HEAD is how a pushing client asks whether to send the blob
        size = await self._run(self.service.blob_size, name, digest, request.method == "HEAD")
        if size is None:
            raise RegistryError(404, "BLOB_UNKNOWN", f"blob {digest} unknown")
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes"}
        if request.method == "HEAD":
            return Response(200, headers, length=size)
        try:
            wanted = byte_range(request.headers.get("range", ""), size)
        except Unsatisfiable:
            return _error(416, "RANGE_INVALID", f"the blob has {size} bytes",
                          {"Content-Range": f"bytes */{size}"})
        if wanted is None:
            return Response(200, headers, stream=self._blob_stream(name, digest, size, 0,
                                                                   size - 1), length=size)
        first, last = wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return Response(206, headers, stream=self._blob_stream(name, digest, size, first, last),
                        length=last - first + 1)

    _blob_get = _blob_head

    async def _blob_stream(self, name: str, digest: str, size: int, first: int, last: int
                           ) -> AsyncIterator[bytes]:
        """Bytes ``first`` to ``last`` of the blob. A file of the store (hashed when it
        was pushed) is read from ``first``; a blob from the downstream is read whole,
        its digest checked, and its last piece held back until that check passed, so a
        client never gets all it asked for of a blob that does not verify."""
        opened = self.service.open_blob(name, digest, size)
        raw = await self._run(opened.__enter__)
        try:
            if (first, last) != (0, size - 1) and raw.seekable():
                await self._run(raw.seek, first)
                left = last - first + 1
                while left > 0:
                    chunk = await self._run(raw.read, min(streams.CHUNK, left))
                    if not chunk:
                        raise OSError(f"blob {digest}: the stored file ended early")
                    left -= len(chunk)
                    yield chunk
                return
            blob = streams.HashingReader(raw, digest, size, what=f"blob {digest}")
            at, held = 0, b""
            while chunk := await self._run(blob.read, streams.CHUNK):
                start, at = at, at + len(chunk)
                if held:
                    yield held
                held = chunk[max(first - start, 0):max(last + 1 - start, 0)]
            if held:
                yield held
        finally:
            await self._run(opened.__exit__, None, None, None)

    async def _tags_get(self, request: _Request, name: str) -> Response:
        """The tag list, with the spec's ``n`` and ``last`` paging (and a ``Link``)."""
        tags = await self._run(self.service.tags, name)
        last = request.query.get("last")
        if last:
            tags = [t for t in tags if t > last]
        headers = {"Content-Type": "application/json"}
        n = request.query.get("n", "")
        count = at_most(n, len(tags))  # a larger n is the whole list; not digits, none
        if count is not None and count < len(tags):
            tags = tags[:count]
            if tags:  # n=0 asks for an empty page: there is no next one to point at
                headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={tags[-1]}>; rel="next"'
        return Response(200, headers, json.dumps({"name": name, "tags": tags}).encode())

    # --- uploads -----------------------------------------------------------------

    def _created(self, name: str, digest: str) -> Response:
        return Response(201, {"Location": f"/v2/{name}/blobs/{digest}",
                              "Docker-Content-Digest": digest})

    async def _uploads_post(self, request: _Request, name: str) -> Response:
        store = self.service.store
        mount = request.query.get("mount")
        if mount and digests.is_valid(mount) and store.size(mount, name) is not None:
            return self._created(name, mount)  # pushed here before, under another name
        uuid = store.new_upload(name)
        digest = request.query.get("digest")
        if digest:  # a monolithic upload: the blob is the body
            return await self._finish(request, name, uuid, digest)
        return Response(202, store.upload(uuid).headers(name, uuid))

    async def _upload_patch(self, request: _Request, name: str, uuid: str) -> Response:
        with self.service.store.writing(uuid) as upload:
            with upload.patching(request.headers.get("content-range", "")):
                await self._append(request, upload)
        return Response(202, upload.headers(name, uuid))

    async def _append(self, request: _Request, upload: Upload) -> None:
        with open(upload.path, "ab") as f:
            async for chunk in request.chunks():
                upload.write(f, chunk)

    async def _upload_put(self, request: _Request, name: str, uuid: str) -> Response:
        return await self._finish(request, name, uuid, request.query.get("digest", ""))

    async def _finish(self, request: _Request, name: str, uuid: str, digest: str) -> Response:
        with self.service.store.writing(uuid) as upload:
            await self._append(request, upload)
            self.service.store.complete(uuid, digest)
        return self._created(name, digest)

    async def _upload_get(self, request: _Request, name: str, uuid: str) -> Response:
        return Response(204, self.service.store.upload(uuid).headers(name, uuid))

    async def _upload_delete(self, request: _Request, name: str, uuid: str) -> Response:
        self.service.store.cancel(uuid)
        return Response(204)

    # --- manifests ---------------------------------------------------------------

    async def _manifest_get(self, request: _Request, name: str, ref: str) -> Response:
        served = await self._run_image(self.service.manifest, name, ref)
        return Response(200, {"Content-Type": served.media_type,
                              "Docker-Content-Digest": served.digest}, served.data)

    _manifest_head = _manifest_get

    async def _manifest_put(self, request: _Request, name: str, ref: str) -> Response:
        data = await request.read(MAX_MANIFEST)
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip()
        if media_type and not MEDIA_TYPE.fullmatch(media_type):
            raise RegistryError(400, "MANIFEST_INVALID", "malformed Content-Type")
        pushed = await self._run_image(self.service.push, name, ref, data, media_type)
        return Response(201, {"Location": f"/v2/{name}/manifests/{pushed.digest}",
                              "Docker-Content-Digest": pushed.digest})
