"""The shared transport against the real registry: auth in every mode, HTTP/2 sharing."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from occystrap_core.errors import AuthError, TransportError, UsageError
from occystrap_core.testing.faults import Fault, FaultFront
from occystrap_core.testing.http import client_factory_plugin, make_context
from occystrap_core.testing.processes import wait_until
from occystrap_core.testing.registry import push_sample_image
from occystrap_core.transport.auth import RegistryAuth
from occystrap_core.types import ClientConfig, Credentials


@pytest.fixture(autouse=True)
def _http2_from_the_first_request(monkeypatch):
    """HTTP/2 sharing is tested here: bodiless requests take it without waiting for
    them to overlap (but in the test of that)."""
    monkeypatch.setenv("OCCYSTRAP_HTTP2_OVERLAP", "1")


def _context(server):
    plugin = client_factory_plugin(
        "reg", lambda request, ctx: ClientConfig(auth=RegistryAuth(request.credentials)))
    return make_context(plugin, ca_cert=server.ca_cert)


def _client(ctx, server, credentials: Credentials | None):
    return ctx.http_client("reg", server.host, scheme=server.scheme, credentials=credentials)


def test_every_mode_authenticates_and_lists_tags(registry):
    repo = f"auth/{uuid.uuid4().hex[:8]}"
    push_sample_image(registry, repo, "v1")
    creds = Credentials(registry.username, registry.password) if registry.username else None
    with _context(registry) as ctx:
        response = _client(ctx, registry, creds).get(f"/v2/{repo}/tags/list")
    assert response.status_code == 200
    assert response.json()["tags"] == ["v1"]


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_wrong_credentials_name_the_registry(mode, request):
    server = request.getfixturevalue(f"registry_{mode}")
    with _context(server) as ctx:
        client = _client(ctx, server, Credentials("alice", "wrong-password"))
        with pytest.raises(AuthError, match=f"authentication to {server.host} failed"):
            client.get("/v2/anything/tags/list")


def test_the_default_roots_verify_the_registry_from_a_hashed_directory(
        registry_tls, tmp_path, monkeypatch):
    """Without --ca-cert, a CA in the system's kind of certificate directory (hash-named
    links, read by OpenSSL while verifying) is trusted, over HTTP/2 and HTTP/1.1."""
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(registry_tls.ca_cert, certs / "registry-ca.pem")
    subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(certs))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-bundle.pem"))
    with make_context(client_factory_plugin("reg"), retries=0) as ctx:
        client = _client(ctx, registry_tls, None)
        assert client.get("/v2/").http_version == "HTTP/2"
        upload = client.post("/v2/roots/blobs/uploads/", content=b"")  # HTTP/1.1
        assert upload.status_code == 202 and upload.http_version == "HTTP/1.1"
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path))  # no hashed names: nothing trusted
    with make_context(client_factory_plugin("reg"), retries=0) as ctx:
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            _client(ctx, registry_tls, None).get("/v2/")


def test_http2_is_negotiated_and_parallel_blob_requests_share_one_connection(registry_tls):
    repo = f"h2/{uuid.uuid4().hex[:8]}"
    image = push_sample_image(registry_tls, repo, "v1")
    blobs = [image.config_digest, *image.layer_digests] * 4
    connects = []
    lock = threading.Lock()

    def trace(event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete":
            with lock:
                connects.append(event)

    # no retries: a connection dropped under concurrency must fail the test, not be hidden
    with make_context(client_factory_plugin("reg"), ca_cert=registry_tls.ca_cert,
                      retries=0) as ctx:
        client = _client(ctx, registry_tls, None)
        first = client.get("/v2/", extensions={"trace": trace})
        assert first.http_version == "HTTP/2"
        assert len(connects) == 1

        def fetch(digest: str) -> str:
            response = client.get(f"/v2/{repo}/blobs/{digest}", extensions={"trace": trace})
            assert response.status_code == 200
            return response.http_version

        with ThreadPoolExecutor(max_workers=6) as pool:
            # several rounds: TLS reads racing writes used to drop the connection now and then
            versions = [v for _ in range(8) for v in pool.map(fetch, blobs)]
    assert versions == ["HTTP/2"] * len(blobs) * 8
    assert len(connects) == 1, "parallel requests opened new connections"


def test_concurrent_uploads_and_downloads_share_the_client_without_errors(registry_tls):
    """Requests with bodies go over HTTP/1.1 and the rest share one HTTP/2 connection,
    driven by one event loop, so nothing may fail here even without retries."""
    import hashlib
    import os

    blobs = [os.urandom(150_000 + i) for i in range(16)]
    versions: dict[str, set[str]] = {"POST": set(), "PUT": set(), "GET": set()}
    errors = []

    with make_context(client_factory_plugin("reg"), ca_cert=registry_tls.ca_cert,
                      retries=0) as ctx:
        client = _client(ctx, registry_tls, None)

        def cycle(i: int) -> None:
            blob = blobs[i % len(blobs)]
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            repo = f"stress/r{i % 4}"
            try:
                started = client.post(f"/v2/{repo}/blobs/uploads/")
                put = client.put(f"{started.headers['location']}&digest={digest}",
                                 content=iter([blob[:50_000], blob[50_000:]]))
                got = client.get(f"/v2/{repo}/blobs/{digest}")
                assert (started.status_code, put.status_code, got.content) == (202, 201, blob)
                for method, response in (("POST", started), ("PUT", put), ("GET", got)):
                    versions[method].add(response.http_version)
            except Exception as e:  # collected: a worker's exception would hide the count
                errors.append(repr(e))

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(cycle, range(96)))
    assert errors == []
    assert versions == {"POST": {"HTTP/1.1"}, "PUT": {"HTTP/1.1"}, "GET": {"HTTP/2"}}


def test_bodiless_requests_take_http2_once_they_overlap(registry_tls, monkeypatch):
    """One request at a time goes over HTTP/1.1 (a warm no-op copy needs no event loop
    and no h2); from the third bodiless request in flight at once on, HTTP/2."""
    monkeypatch.delenv("OCCYSTRAP_HTTP2_OVERLAP")
    with FaultFront(registry_tls.url, tls=True) as front:
        front.add(Fault("stall", path="/v2/slow", seconds=1.0, times=2))
        with make_context(client_factory_plugin("reg"), ca_cert=front.ca_cert,
                          retries=0) as ctx:
            client = ctx.http_client("reg", front.host, scheme="https")
            alone = [client.get("/v2/").http_version for _ in range(3)]
            with ThreadPoolExecutor(max_workers=2) as pool:
                stalled = [pool.submit(client.get, "/v2/slow") for _ in range(2)]
                wait_until(lambda: len([h for h in front.log if h.path == "/v2/slow"]) == 2,
                           "both slow requests to be in flight")
                third = client.get("/v2/").http_version  # two in flight: the third of them
                slow = [f.result().http_version for f in stalled]
            after = client.head("/v2/").http_version
            upload = client.post("/v2/over/blobs/uploads/", content=b"").http_version
    assert alone == ["HTTP/1.1"] * 3 and slow == ["HTTP/1.1"] * 2
    assert (third, after, upload) == ("HTTP/2", "HTTP/2", "HTTP/1.1")


def test_a_bad_http2_overlap_is_one_error(registry_tls, monkeypatch):
    monkeypatch.setenv("OCCYSTRAP_HTTP2_OVERLAP", "0")
    with make_context(client_factory_plugin("reg"), ca_cert=registry_tls.ca_cert) as ctx:
        with pytest.raises(UsageError, match="OCCYSTRAP_HTTP2_OVERLAP='0'"):
            ctx.http_client("reg", registry_tls.host, scheme="https")


def test_a_registry_named_in_capitals_gets_the_credentials(registry_token, run_cli):
    """Host names are case-insensitive: LocalHost:PORT is the token registry, and its
    credentials go to it (they went nowhere: a 401)."""
    repo = f"auth/{uuid.uuid4().hex[:8]}"
    push_sample_image(registry_token, repo, "v1")
    port = registry_token.host.rpartition(":")[2]
    result = run_cli("--ca-cert", registry_token.ca_cert, "--username", "alice",
                     "--password", "alice-secret", "info", "-O", "json",
                     f"registry://LocalHost:{port}/{repo}:v1")
    assert result.exit_code == 0, result.output
