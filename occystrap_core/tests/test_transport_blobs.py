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


def opener(handler, retries=3, clock=None, **settings):
    """``open_blob`` bound to a client of a mock network, and the run's context."""
    ctx = make_context(MockHTTP(handler), client_factory_plugin(), clock=clock or FakeClock(),
                       retries=retries, **settings)
    client = ctx.http_client("test", "reg.example")
    return (lambda url, **kw: open_blob(client, url, policy=ctx.retry, **kw)), ctx


def test_whole_blob_is_verified():
    server = Server()
    fetch, _ = opener(server)
    with fetch("/v2/app/blobs/x", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert server.requests[0].headers["accept-encoding"] == "identity"
    assert all(s.closed for s in server.streams)


def test_resume_with_range_after_a_cut_body():
    server = Server(cuts=[300_000, 100_000])
    fetch, ctx = opener(server)
    with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert [r.headers.get("range") for r in server.requests] == [
        None, "bytes=300000-", "bytes=400000-"]
    assert all(s.closed for s in server.streams)
    assert ctx.stats["retries"] == 2  # counted as retries in the run's summary


def test_resume_after_a_short_body_without_an_error():
    server = Server(cuts=[500_000], error=None)
    fetch, _ = opener(server)
    with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert server.requests[1].headers["range"] == "bytes=500000-"


def test_server_ignoring_range_restarts_cleanly():
    server = Server(cuts=[200_000], honour_range=False, error=httpx.RemoteProtocolError("eof"))
    fetch, _ = opener(server)
    with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert len(server.requests) == 2


def test_gives_up_after_the_retries_with_a_clear_error():
    server = Server(cuts=[1000, 1000, 1000])
    fetch, ctx = opener(server, retries=2)
    with pytest.raises(TransportError, match=r"blob sha256:\w+: download from reg.example "
                                             r"failed after 3000 of 1048576 bytes and 2 "
                                             r"retries did not help"):
        with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
            f.read()
    assert all(s.closed for s in server.streams)
    assert len(server.requests) == 3 and ctx.stats["retries"] == 2


def test_digest_mismatch_is_reported():
    fetch, _ = opener(Server())
    with pytest.raises(DigestMismatchError):
        with fetch("/b", digest="sha256:" + "0" * 64) as f:
            f.read()


def test_wrong_size_is_reported():
    with pytest.raises(CorruptImageError, match="more than the announced"):
        with opener(Server())[0]("/b", size=10) as f:
            f.read()


def test_missing_blob_raises_with_the_response():
    fetch, _ = opener(lambda r: httpx.Response(404, json={"errors": [
        {"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}))
    with pytest.raises(ImageNotFoundError, match="BLOB_UNKNOWN blob unknown") as info:
        with fetch("/v2/app/blobs/x", digest=DIGEST):
            pass
    assert info.value.response.status_code == 404


def test_content_encoding_is_not_decoded():
    packed = gzip.compress(b"layer")
    digest = "sha256:" + hashlib.sha256(packed).hexdigest()
    fetch, _ = opener(lambda r: httpx.Response(200, stream=BrokenStream(packed),
                                               headers={"Content-Encoding": "gzip"}))
    with fetch("/b", digest=digest) as f:
        assert f.read() == packed


def test_whole_bodies_from_mock_transports():
    fetch, _ = opener(lambda r: httpx.Response(200, content=BLOB))
    with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB


def test_reads_in_small_pieces():
    with opener(Server(cuts=[70_000]))[0]("/b", size=len(BLOB), digest=DIGEST) as f:
        parts = iter(lambda: f.read(4093), b"")
        assert b"".join(parts) == BLOB


def test_failed_requests_and_broken_bodies_share_one_budget():
    """--retries N means N: a 503, a reset before the headers and a cut body are
    three retries of one download, never N per request and N per resume."""
    answers = [httpx.Response(503), httpx.ReadError("reset")]
    server = Server(cuts=[2000])

    def handler(request):
        if answers:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        return server(request)

    fetch, ctx = opener(handler, retries=3)
    with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert ctx.stats["retries"] == 3
    fetch, ctx = opener(handler, retries=2)
    answers[:] = [httpx.Response(503), httpx.ReadError("reset")]
    server.cuts = [2000]
    with pytest.raises(TransportError, match="2 retries did not help"):
        with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
            f.read()


def test_retry_after_of_a_blob_answer_is_honoured():
    clock = FakeClock()
    answers = [httpx.Response(429, headers={"Retry-After": "9"})]
    fetch, _ = opener(lambda r: answers.pop(0) if answers else httpx.Response(200, content=BLOB),
                      clock=clock)
    with fetch("/b", digest=DIGEST) as f:
        assert f.read() == BLOB
    assert max(clock.sleeps) >= 9.0


def test_a_trickling_body_is_resumed_as_a_timeout():
    """Each read arrives well within --timeout, but the whole answer crawls along."""
    clock = FakeClock()

    class Trickle(httpx.SyncByteStream):
        def __iter__(self):
            for i in range(0, len(BLOB), 100):
                clock.advance(1.0)  # 100 bytes a second, far below --min-speed
                yield BLOB[i:i + 100]

    calls = []

    def handler(request):
        calls.append(request.headers.get("range"))
        if len(calls) == 1:
            return httpx.Response(200, stream=Trickle())
        start = int(request.headers["range"].removeprefix("bytes=").rstrip("-"))
        return httpx.Response(206, content=BLOB[start:], headers={
            "Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"})

    fetch, ctx = opener(handler, clock=clock, read_timeout=30.0, min_speed=1024)
    with fetch("/b", size=len(BLOB), digest=DIGEST) as f:
        assert f.read() == BLOB
    assert calls[0] is None and calls[1].startswith("bytes=")
    assert ctx.stats["retries"] == 1


def test_a_web_page_is_not_taken_for_a_blob():
    page = b"<html>captive portal</html>"
    fetch, _ = opener(lambda r: httpx.Response(200, content=page,
                                               headers={"Content-Type": "text/html"}))
    with pytest.raises(TransportError, match="an HTML page"):
        with fetch("/b", digest=DIGEST):
            pass
