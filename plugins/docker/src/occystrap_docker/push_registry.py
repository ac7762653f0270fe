"""A short-lived registry on 127.0.0.1, over TLS, that receives one push from a daemon.

Only what a push needs: ``GET /v2/``, blob ``HEAD``/``GET``, uploads (``POST``,
``PATCH``, ``PUT ?digest=``) and manifest ``PUT``/``HEAD``/``GET``. Upload bodies,
plain or chunked, are streamed to files in chunks and hashed on the way; a blob
is kept only if it matches its digest. Path parts and the ``digest`` parameter
are matched against strict patterns before they name a file or reach a
response header; upload ids are minted here.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from occystrap_core import digest as digests
from occystrap_core import streams
from occystrap_core.oci.manifest import MAX_MANIFEST
from occystrap_core.serving import (
    ROUTES,
    Pushed,
    RegistryError,
    Upload,
    check_manifest,
    unknown_upload,
)

log = logging.getLogger("occystrap.dockerpush")

LOOPBACK = "127.0.0.1"


class PushRegistry:
    """Start it, let a daemon push to ``127.0.0.1:PORT``, read what arrived, stop it."""

    def __init__(self, root: str, context: ssl.SSLContext):
        self.root = root
        self._blobs_dir = os.path.join(root, "blobs")
        self._uploads_dir = os.path.join(root, "uploads")
        os.makedirs(self._blobs_dir)
        os.makedirs(self._uploads_dir)
        self._lock = threading.Condition()
        self._uploads: dict[str, Upload] = {}
        self._blobs: dict[str, int] = {}  # digest -> size, blobs received and verified
        self._manifests: dict[tuple[str, str], Pushed] = {}
        self._server = _TLSServer((LOOPBACK, 0), _Handler, context, self)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="dockerpush-registry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    # --- blobs ---

    def blob_path(self, digest: str) -> str:
        if not digests.is_valid(digest) or not digest.startswith("sha256:"):
            raise ValueError(f"not a sha256 digest: {digest!r}")  # the daemon pushes sha256
        return os.path.join(self._blobs_dir, digest.split(":", 1)[1])

    def blob_size(self, digest: str) -> int | None:
        with self._lock:
            return self._blobs.get(digest)

    def new_upload(self) -> str:
        uuid = secrets.token_hex(16)
        path = os.path.join(self._uploads_dir, uuid)
        open(path, "xb").close()
        with self._lock:
            self._uploads[uuid] = Upload(path)
        return uuid

    def upload(self, uuid: str) -> Upload:
        with self._lock:
            upload = self._uploads.get(uuid)
        if upload is None:
            raise unknown_upload()
        return upload

    def complete(self, uuid: str, digest: str) -> None:
        """Keep the upload as blob ``digest`` if it hashes to it; either way it ends."""
        with self._lock:
            upload = self._uploads.pop(uuid, None)
        if upload is None:  # completed by a concurrent request meanwhile
            raise unknown_upload()
        upload.commit(digest, self.blob_path)
        with self._lock:
            self._blobs[digest] = upload.size

    # --- manifests ---

    def put_manifest(self, name: str, ref: str, data: bytes, media_type: str) -> Pushed:
        manifest, _ = check_manifest(ref, data, media_type,
                                     lambda digest: self.blob_size(digest) is not None)
        with self._lock:
            self._manifests[(name, ref)] = self._manifests[(name, manifest.digest)] = manifest
            self._lock.notify_all()
        return manifest

    def manifest(self, name: str, ref: str) -> Pushed | None:
        with self._lock:
            return self._manifests.get((name, ref))

    def wait_manifest(self, name: str, ref: str, timeout: float) -> Pushed | None:
        with self._lock:
            self._lock.wait_for(lambda: (name, ref) in self._manifests, timeout)
            return self._manifests.get((name, ref))

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, context: ssl.SSLContext,
                 registry: PushRegistry):
        self.ssl_context = context
        self.registry = registry
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve a host name we never use.
        socket.socket.bind(self.socket, self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = LOOPBACK, self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        # The handshake runs in the connection's own thread, not in the accept loop.
        sock, address = self.socket.accept()
        return self.ssl_context.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False), address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver calls this from its except block: the exception is current
        log.debug("embedded registry: connection from %s failed", client_address,
                  exc_info=True)  # noqa: LOG014


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "occystrap-dockerpush"
    timeout = 120  # seconds without a byte before a connection is dropped
    # Headers and body go out in two writes: with Nagle's algorithm a small body waits
    # for the daemon's delayed ACK of the headers (40 ms an answer).
    disable_nagle_algorithm = True
    server: _TLSServer

    def setup(self) -> None:
        super().setup()
        self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("embedded registry: " + format, *args)

    @property
    def registry(self) -> PushRegistry:
        return self.server.registry

    # --- plumbing ---

    def _dispatch(self) -> None:
        self._body_read = False
        path, _, query = self.path.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}
        try:
            for pattern, route in ROUTES:
                m = pattern.match(path)
                if m:
                    action: Callable[..., None] | None = getattr(
                        self, f"_{route}_{self.command.lower()}", None)
                    if action is None:
                        raise RegistryError(405, "UNSUPPORTED", "method not allowed")
                    action(params, **m.groupdict())
                    return
            raise RegistryError(404, "NAME_UNKNOWN", "no such endpoint")
        except RegistryError as e:
            self._send(e.status, {"Content-Type": "application/json"}, e.body())

    do_GET = do_HEAD = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    def _send(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"",
              length: int | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if not self._body_read and self._has_body():
            self.close_connection = True  # the unread body would be taken for a request
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _has_body(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower() or \
            self.headers.get("Content-Length", "0") not in ("", "0")

    def _body(self) -> Iterator[bytes]:
        """The request body in chunks, whether sized or chunked."""
        self._body_read = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise RegistryError(400, "BLOB_UPLOAD_INVALID",
                                        "bad chunked encoding") from None
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return
                yield from self._exactly(size)
                self.rfile.readline(16)  # the CRLF ending the chunk
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self.close_connection = True
                raise RegistryError(400, "BLOB_UPLOAD_INVALID", "bad Content-Length") from None
            yield from self._exactly(length)

    def _exactly(self, size: int) -> Iterator[bytes]:
        while size > 0:
            data = self.rfile.read(min(size, streams.CHUNK))
            if not data:
                self.close_connection = True
                raise RegistryError(400, "BLOB_UPLOAD_INVALID", "request body ended early")
            size -= len(data)
            yield data

    def _append(self, upload: Upload) -> None:
        with open(upload.path, "ab") as f:
            for chunk in self._body():
                upload.write(f, chunk)

    # --- endpoints (every argument was matched by a pattern in ROUTES) ---

    def _base_get(self, params: dict[str, str]) -> None:
        self._send(200, {"Content-Type": "application/json"}, b"{}")

    _base_head = _base_get

    def _blob_head(self, params: dict[str, str], name: str, digest: str) -> None:
        size = self.registry.blob_size(digest)
        if size is None:
            raise RegistryError(404, "BLOB_UNKNOWN", "blob unknown")
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
        if self.command == "HEAD":
            self._send(200, headers, length=size)
            return
        with open(self.registry.blob_path(digest), "rb") as f:
            self._send(200, headers, length=size)
            streams.copy(f, self.wfile)

    _blob_get = _blob_head

    def _uploads_post(self, params: dict[str, str], name: str) -> None:
        # A cross-repository mount (?mount=&from=) is answered with a plain upload.
        uuid = self.registry.new_upload()
        self._send(202, self.registry.upload(uuid).headers(name, uuid))

    def _upload_patch(self, params: dict[str, str], name: str, uuid: str) -> None:
        upload = self.registry.upload(uuid)
        with upload.lock:
            with upload.patching(self.headers.get("Content-Range", "")):
                self._append(upload)
        self._send(202, upload.headers(name, uuid))

    def _upload_put(self, params: dict[str, str], name: str, uuid: str) -> None:
        upload = self.registry.upload(uuid)
        digest = params.get("digest", "")
        with upload.lock:
            self._append(upload)
            self.registry.complete(uuid, digest)
        self._send(201, {"Location": f"/v2/{name}/blobs/{digest}",
                         "Docker-Content-Digest": digest})

    def _manifest_put(self, params: dict[str, str], name: str, ref: str) -> None:
        data = bytearray()
        for chunk in self._body():
            data += chunk
            if len(data) > MAX_MANIFEST:
                self.close_connection = True
                raise RegistryError(400, "MANIFEST_INVALID", "manifest too large")
        media_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip()
        manifest = self.registry.put_manifest(name, ref, bytes(data), media_type)
        self._send(201, {"Location": f"/v2/{name}/manifests/{manifest.digest}",
                         "Docker-Content-Digest": manifest.digest})

    def _manifest_get(self, params: dict[str, str], name: str, ref: str) -> None:
        manifest = self.registry.manifest(name, ref)
        if manifest is None:
            raise RegistryError(404, "MANIFEST_UNKNOWN", "manifest unknown")
        self._send(200, {"Content-Type": manifest.media_type,
                         "Docker-Content-Digest": manifest.digest}, manifest.data)

    _manifest_head = _manifest_get
