"""Streaming blob downloads: Range resume after a broken body, digest checks."""

from __future__ import annotations

import gzip
import hashlib

import httpx
import pytest
from occystrap_core.errors import (
    CorruptImageError,
    DigestMismatchError,
    ImageNotFoundError,
    TransportError,
)
from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport.blobs import open_blob

BLOB = bytes(range(256)) * 4096  # 1 MiB
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()
RESET = httpx.ReadError("connection reset")


class BrokenStream(httpx.SyncByteStream):
    """Sends ``data`` in small chunks, then breaks as a reset connection would."""

    def __init__(self, data: bytes, error: Exception | None = None):
        self.data, self.error = data, error
        self.closed = False

    def __iter__(self):
        for i in range(0, len(self.data), 65536):
            yield self.data[i:i + 65536]
        if self.error:
            raise self.error

    def close(self):
        self.closed = True


class Server:
    """Serves BLOB; ``cuts`` says how many bytes each answer gets before breaking."""

    def __init__(self, cuts=(), honour_range=True, error: Exception | None = RESET):
        self.cuts = list(cuts)
        self.honour_range = honour_range
        self.error = error
        self.requests: list[httpx.Request] = []
        self.streams: list[BrokenStream] = []

    def __call__(self, request):
        self.requests.append(request)
        start = 0
        status, headers = 200, {}
        if self.honour_range and "range" in request.headers:
            start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"
        body = BLOB[start:]
        cut = self.cuts.pop(0) if self.cuts else None
        if cut is None:
            stream = BrokenStream(body)
        else:
            stream = BrokenStream(body[:cut], self.error)
        self.streams.append(stream)
        return httpx.Response(status, headers=headers, stream=stream)


def client_for(handler):
    ctx = make_context(MockHTTP(handler), client_factory_plugin(), clock=FakeClock())
    return ctx.http_client("test", "reg.example")


def test_whole_blob_is_verified():
    server = Server()
    with open_blob(client_for(server), "/v2/app/blobs/x", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert server.requests[0].headers["accept-encoding"] == "identity"
    assert all(s.closed for s in server.streams)


def test_resume_with_range_after_a_cut_body():
    server = Server(cuts=[300_000, 100_000])
    resumes = []
    with open_blob(client_for(server), "/b", size=len(BLOB), digest=DIGEST, retries=3,
                   on_resume=lambda: resumes.append(1)) as f:
        assert f.read() == BLOB
    assert [r.headers.get("range") for r in server.requests] == [
        None, "bytes=300000-", "bytes=400000-"]
    assert all(s.closed for s in server.streams)
    assert len(resumes) == 2  # counted as retries in the run's summary


def test_resume_after_a_short_body_without_an_error():
    server = Server(cuts=[500_000], error=None)
    with open_blob(client_for(server), "/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert server.requests[1].headers["range"] == "bytes=500000-"


def test_server_ignoring_range_restarts_cleanly():
    server = Server(cuts=[200_000], honour_range=False, error=httpx.RemoteProtocolError("eof"))
    with open_blob(client_for(server), "/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert len(server.requests) == 2


def test_gives_up_after_the_retries_with_a_clear_error():
    server = Server(cuts=[1000, 1000, 1000])
    with pytest.raises(TransportError, match=r"blob sha256:\w+: download from reg.example broke "
                                             r"after 3000 of 1048576 bytes and 2 resumes"):
        with open_blob(client_for(server), "/b", size=len(BLOB), digest=DIGEST, retries=2) as f:
            f.read()
    assert all(s.closed for s in server.streams)


def test_digest_mismatch_is_reported():
    server = Server()
    with pytest.raises(DigestMismatchError):
        with open_blob(client_for(server), "/b", digest="sha256:" + "0" * 64) as f:
            f.read()


def test_wrong_size_is_reported():
    with pytest.raises(CorruptImageError, match="more than the announced"):
        with open_blob(client_for(Server()), "/b", size=10) as f:
            f.read()


def test_missing_blob_raises_with_the_response():
    client = client_for(lambda r: httpx.Response(404, json={"errors": [
        {"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}))
    with pytest.raises(ImageNotFoundError, match="BLOB_UNKNOWN blob unknown") as info:
        with open_blob(client, "/v2/app/blobs/x", digest=DIGEST):
            pass
    assert info.value.response.status_code == 404


def test_content_encoding_is_not_decoded():
    packed = gzip.compress(b"layer")
    digest = "sha256:" + hashlib.sha256(packed).hexdigest()
    client = client_for(lambda r: httpx.Response(200, stream=BrokenStream(packed),
                                                 headers={"Content-Encoding": "gzip"}))
    with open_blob(client, "/b", digest=digest) as f:
        assert f.read() == packed


def test_whole_bodies_from_mock_transports():
    client = client_for(lambda r: httpx.Response(200, content=BLOB))
    with open_blob(client, "/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB


def test_reads_in_small_pieces():
    with open_blob(client_for(Server(cuts=[70_000])), "/b", size=len(BLOB), digest=DIGEST) as f:
        parts = iter(lambda: f.read(4093), b"")
        assert b"".join(parts) == BLOB
