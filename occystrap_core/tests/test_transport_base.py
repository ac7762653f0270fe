"""The default network transport (TLS, proxies, plain HTTP) and the error helpers,
against small real servers on 127.0.0.1."""

from __future__ import annotations

import datetime
import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest
import trustme

from occystrap_core.errors import AuthError, ImageNotFoundError, TransportError, UsageError
from occystrap_core.testing.http import FakeClock, MockHTTP, client_factory_plugin, make_context
from occystrap_core.transport import base
from occystrap_core.transport.errors import raise_for_status, status_error, translate_errors


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.server.seen.append((self.path, self.headers.get("Host")))
        self.server.cookies.append(self.headers.get("Cookie"))
        body = f"{self.server.name}:{self.path}".encode()
        self.send_response(200)
        self.send_header("Set-Cookie", "session=s3cr3t; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(name, context=None):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.name, server.seen, server.cookies = name, [], []
        if context:
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server, f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_proxies(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def client(host, scheme="https", **settings):
    ctx = make_context(client_factory_plugin(), clock=FakeClock(), retries=0, **settings)
    return ctx.http_client("test", host, scheme=scheme)


def test_insecure_means_plain_http(serve, no_proxies):
    server, host = serve("plain")
    response = client(host, scheme="http").get("/v2/")
    assert response.text == "plain:/v2/"


def test_plain_http_loads_no_certificate_store(serve, no_proxies, monkeypatch):
    built = []
    real = base.ssl_context
    monkeypatch.setattr(base, "ssl_context", lambda ctx: built.append(ctx) or real(ctx))
    server, host = serve("plain")
    assert client(host, scheme="http").get("/v2/").text == "plain:/v2/"
    assert built == []  # a plain-HTTP run builds no TLS context, nor loads any roots


def _tls_server(serve, tmp_path):
    """A TLS server, and its CA's certificate written to ``tmp_path/ca.pem``."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return serve("tls", context)[1], tmp_path / "ca.pem"


def _hashed_dir(path, *certificates):
    """A certificate directory as update-ca-certificates leaves one: hash-named links."""
    path.mkdir()
    for certificate in certificates:
        shutil.copy(certificate, path / certificate.name)
    subprocess.run(["openssl", "rehash", str(path)], check=True, capture_output=True)
    return path


def test_clients_keep_no_cookies(serve, no_proxies, monkeypatch):
    # As registry clients do (Go's http.Client has no jar): a cookie a registry sets is
    # never sent back, and no response goes through httpx's cookie jar shims at all.
    def jar(*args):
        raise AssertionError("a response went through the cookie jar")

    monkeypatch.setattr(httpx.Cookies, "extract_cookies", jar)
    server, host = serve("plain")
    http = client(host, scheme="http")
    assert http.get("/v2/").headers["Set-Cookie"] == "session=s3cr3t; Path=/"
    assert http.get("/v2/").status_code == 200
    assert server.cookies == [None, None]
    assert not http.cookies
    with pytest.raises(TypeError):
        http.cookies = {"session": "s3cr3t"}


def test_tls_is_verified_and_ca_cert_is_honoured(serve, no_proxies, tmp_path):
    host, ca = _tls_server(serve, tmp_path)
    with pytest.raises(TransportError, match=f"cannot connect to {host}: .*CERTIFICATE_VERIFY"):
        client(host).get("/v2/")
    assert client(host, ca_cert=str(ca)).get("/v2/").text == "tls:/v2/"


def test_default_roots_are_read_from_a_hashed_directory_when_verifying(
        serve, no_proxies, tmp_path, monkeypatch):
    """No bundle is parsed up front (35 ms each, in every context): OpenSSL reads the
    root a server's chain names from the directory, during the handshake."""
    host, ca = _tls_server(serve, tmp_path)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_dir(tmp_path / "certs", ca)))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-bundle.pem"))
    assert base.default_roots().cert_store_stats()["x509_ca"] == 0
    assert client(host).get("/v2/").text == "tls:/v2/"
    other = tmp_path / "other"
    other.mkdir()
    elsewhere = _tls_server(serve, other)[0]  # signed by a CA the directory lacks
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        client(elsewhere).get("/v2/")


def test_a_bundle_is_loaded_where_there_is_no_hashed_directory_or_when_named(
        serve, no_proxies, tmp_path, monkeypatch):
    host, ca = _tls_server(serve, tmp_path)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    assert base.default_roots().cert_store_stats()["x509_ca"] == 1
    assert client(host).get("/v2/").text == "tls:/v2/"
    # SSL_CERT_FILE named, next to a hashed directory of other roots: both are trusted
    other = tmp_path / "other"
    other.mkdir()
    elsewhere, other_ca = _tls_server(serve, other)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_dir(tmp_path / "certs", other_ca)))
    assert base.default_roots().cert_store_stats()["x509_ca"] == 1
    assert client(host).get("/v2/").text == "tls:/v2/"
    assert client(elsewhere).get("/v2/").text == "tls:/v2/"


def test_the_systems_own_bundle_next_to_its_own_directory_is_not_parsed(
        serve, no_proxies, tmp_path, monkeypatch):
    """update-ca-certificates writes the bundle and the hashed directory from the same
    roots: when both are OpenSSL's defaults (here with SSL_CERT_FILE and SSL_CERT_DIR
    naming them, as some environments do), the directory alone is used."""
    host, ca = _tls_server(serve, tmp_path)
    certs = _hashed_dir(tmp_path / "certs", ca)
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "certs").symlink_to(certs)  # as /usr/lib/ssl/certs on Debian
    (tmp_path / "system" / "cert.pem").symlink_to(certs / "ca.pem")
    defaults = ssl.DefaultVerifyPaths(str(certs / "ca.pem"), str(certs), "SSL_CERT_FILE",
                                      str(tmp_path / "system" / "cert.pem"), "SSL_CERT_DIR",
                                      str(tmp_path / "system" / "certs"))
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: defaults)
    assert base.default_roots().cert_store_stats()["x509_ca"] == 0
    assert client(host).get("/v2/").text == "tls:/v2/"
    # a bundle of its own, named next to the system's directory, is loaded
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: defaults._replace(
        cafile=str(ca)))
    assert base.default_roots().cert_store_stats()["x509_ca"] == 1


def test_certifi_is_the_fallback_of_a_system_without_roots(tmp_path, monkeypatch):
    import certifi

    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "missing"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    bundle = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()
    assert base.default_roots().cert_store_stats() == bundle
    assert bundle["x509_ca"] > 50


@pytest.fixture
def mtls(serve):
    """A server that wants a client certificate issued by its CA: (ca, host)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    _, host = serve("mtls", context)
    return ca, host


def test_client_certificates(mtls, no_proxies, tmp_path):
    ca, host = mtls
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ca.issue_cert("occystrap-client").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "client.pem"))
    response = client(host, ca_cert=str(tmp_path / "ca.pem"),
                      client_cert=str(tmp_path / "client.pem")).get("/x")
    assert response.text == "mtls:/x"
    with pytest.raises(TransportError, match="wants a client certificate: give it with "
                                             "--client-cert"):
        client(host, ca_cert=str(tmp_path / "ca.pem")).get("/x")


def test_a_certs_d_directory_gives_the_ca_and_the_client_certificate(mtls, no_proxies,
                                                                     tmp_path, monkeypatch):
    """containers-certs.d(5): HOST:PORT/*.crt trusted, NAME.cert + NAME.key offered."""
    ca, host = mtls
    monkeypatch.setenv("HOME", str(tmp_path))
    certs = tmp_path / ".config/containers/certs.d" / host
    certs.mkdir(parents=True)
    ca.cert_pem.write_to_path(str(certs / "ca.crt"))
    issued = ca.issue_cert("occystrap-client")
    issued.cert_chain_pems[0].write_to_path(str(certs / "client.cert"))
    issued.private_key_pem.write_to_path(str(certs / "client.key"))
    assert client(host).get("/x").text == "mtls:/x"
    # --tls-verify=false checks nothing, but the server still wants the certificate
    assert client(host, tls_verify=False).get("/x").text == "mtls:/x"


def test_an_expired_certificate_is_not_blamed_on_the_ca(serve, no_proxies, tmp_path):
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    ca.issue_cert("127.0.0.1", not_before=past - datetime.timedelta(days=30),
                  not_after=past).configure_cert(context)
    server, host = serve("old", context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with pytest.raises(TransportError) as failed:
        client(host, ca_cert=str(tmp_path / "ca.pem")).get("/x")
    assert "certificate has expired" in str(failed.value)
    assert "validity dates" in str(failed.value) and "--ca-cert" not in str(failed.value)


def test_unreadable_certificates_are_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot load TLS certificates"):
        client("r.example", ca_cert=str(tmp_path / "missing.pem"))


def test_client_keys_with_a_passphrase_are_refused_not_prompted_for(tmp_path, monkeypatch):
    """OpenSSL asks the terminal for a key's passphrase: a run must fail instead, as it
    must for a key that is not the certificate's."""
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    issued, other = ca.issue_cert("occystrap-client"), ca.issue_cert("someone-else")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "client.cert"))
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    (tmp_path / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    cert, encrypted = str(tmp_path / "client.cert"), str(tmp_path / "client.key")
    with pytest.raises(UsageError, match=f"\\({cert}, {encrypted}\\): the key is encrypted"):
        client("r.example", client_cert=cert, client_key=encrypted)
    with pytest.raises(UsageError, match="the key is not the certificate's"):
        client("r.example", client_cert=cert, client_key=str(tmp_path / "other.key"))
    monkeypatch.setenv("HOME", str(tmp_path))  # the same key in a certs.d directory
    certs = tmp_path / ".config/containers/certs.d/r.example"
    certs.mkdir(parents=True)
    for name in ("client.cert", "client.key"):
        (certs / name).write_bytes((tmp_path / name).read_bytes())
    with pytest.raises(UsageError, match="the key is encrypted"):
        client("r.example").get("/v2/")  # a host's directory is read for its first request


def test_environment_proxies_are_used_despite_a_custom_transport(serve, monkeypatch,
                                                                 no_proxies):
    proxy, proxy_host = serve("proxy")
    direct, direct_host = serve("direct")
    monkeypatch.setenv("HTTP_PROXY", f"http://{proxy_host}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert client("registry.invalid", scheme="http").get("/v2/").text == \
        "proxy:http://registry.invalid/v2/"
    assert client(direct_host, scheme="http").get("/v2/").text == "direct:/v2/"  # bypassed
    assert proxy.seen == [("http://registry.invalid/v2/", "registry.invalid")]


def test_one_client_per_factory_host_and_credentials():
    from occystrap_core.types import Credentials

    ctx = make_context(MockHTTP(lambda r: httpx.Response(200)), client_factory_plugin())
    a = ctx.http_client("test", "r.example")
    assert ctx.http_client("test", "r.example") is a
    assert ctx.http_client("test", "r.example", credentials=Credentials("u", "p")) is not a
    assert ctx.http_client("test", "r.example", scheme="http") is not a
    ctx.close()
    assert a.is_closed


def test_http2_has_a_tls_context_of_its_own():
    # httpcore sets ALPN on the context at each connect: shared, an HTTP/1.1 route could
    # negotiate h2 and then use httpcore's sync HTTP/2, which is unsafe across threads.
    with make_context() as ctx:
        assert base.ssl_context(ctx, http2=True) is not base.ssl_context(ctx)
        assert base.ssl_context(ctx, http2=True) is base.ssl_context(ctx, http2=True)


# --- error helpers ----------------------------------------------------------------------

def response(status, **kwargs):
    return httpx.Response(status, request=httpx.Request("GET", "https://reg.example/v2/x"),
                          **kwargs)


def test_status_errors_name_the_host_and_keep_the_response():
    errors = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
    with pytest.raises(ImageNotFoundError, match="manifest app:1 on reg.example: not found: "
                                                 "MANIFEST_UNKNOWN manifest unknown"):
        raise_for_status(response(404, json=errors), "manifest app:1")
    assert isinstance(status_error(response(403), "push"), AuthError)
    error = status_error(response(502, text="<html>"), "blob upload")
    assert isinstance(error, TransportError) and "HTTP 502 Bad Gateway" in str(error)
    assert error.response.status_code == 502
    raise_for_status(response(201), "x")
    raise_for_status(response(404), "x", ok=(404,))


def test_translate_errors():
    with pytest.raises(TransportError, match="reading blob: network error talking to r: reset"):
        with translate_errors("r", "reading blob"):
            raise httpx.ReadError("reset")


@pytest.mark.parametrize("body, detail", [
    (b'{"errors": [{"code": "DENIED", "message": "no"}]}', ": DENIED no"),
    (b'{"message": "No such image: x"}', ": No such image: x"),  # Docker Engine API
    (b'{"error_message": "Invalid token"}', ": Invalid token"),  # Quay
    (b'{"detail": "Not Found"}', ": Not Found"),
    (b'{"error": "bad"}', ": bad"),
    (b'[1, 2]', ""), (b"<html>", ""), (b'{"errors": []}', ""),
])
def test_detail_of_every_error_body(body: bytes, detail: str) -> None:
    from occystrap_core.transport.errors import detail_of

    assert detail_of(body) == detail


@pytest.mark.parametrize("body, codes", [
    (b'{"errors": [{"code": "DIGEST_INVALID"}, {"code": "MANIFEST_BLOB_UNKNOWN"}]}',
     ["DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN"]),
    (b'{"errors": [{"code": 3}, "x", {"message": "m"}]}', []),
    (b'{"errors": "DIGEST_INVALID"}', []), (b'["DIGEST_INVALID"]', []), (b"<html>", []),
])
def test_error_codes_of_every_error_body(body: bytes, codes: list[str]) -> None:
    from occystrap_core.transport.errors import error_codes

    assert error_codes(httpx.Response(400, content=body)) == codes


def test_error_codes_never_read_a_big_body() -> None:
    from occystrap_core.transport.errors import MAX_ERROR_BODY, error_codes

    def chunks() -> Iterator[bytes]:
        raise AssertionError("the body was read")
        yield b""

    response = httpx.Response(400, headers={"Content-Length": str(MAX_ERROR_BODY + 1)},
                              content=chunks())
    assert error_codes(response) == []


@pytest.mark.parametrize("status, kind", [
    (401, "AuthError"), (403, "AuthError"), (404, "ImageNotFoundError"),
    (429, "TransportError"), (500, "TransportError"), (400, "TransportError"),
])
def test_one_translation_of_statuses(status: int, kind: str) -> None:
    from occystrap_core.transport.errors import error_for_status

    error = error_for_status(status, "doing it", not_found="gone", auth_hint="log in")
    assert type(error).__name__ == kind
    assert str(error) == {401: "doing it (log in)", 403: "doing it (log in)", 404: "gone",
                          429: "doing it (rate limited; try a lower --rate-limit)"
                          }.get(status, "doing it")


@pytest.mark.parametrize("host, port, no_proxy, bypassed", [
    ("127.0.0.1", 5000, "127.0.0.1", True),
    ("reg.example.com", None, ".example.com", True),
    ("reg.example.com", None, "example.com", True),
    ("notexample.com", None, "example.com", False),
    ("anything", None, "a.example, *", True),
    ("reg", 5000, "reg:5000", True),
    ("reg", 5001, "reg:5000", False),
    ("::1", 5000, "[::1]", True),
    ("reg.example", None, "", False),
])
def test_no_proxy_as_curl_reads_it(host: str, port: int | None, no_proxy: str,
                                   bypassed: bool) -> None:
    from occystrap_core.transport.base import _bypassed

    assert _bypassed(host, port, no_proxy) is bypassed
