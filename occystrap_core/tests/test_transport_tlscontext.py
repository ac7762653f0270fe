"""RouteContext: the run's TLS contexts offer their ALPN protocols from the start, and
httpcore's call at every connect leaves OpenSSL's list alone (real TLS on 127.0.0.1)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trustme

from occystrap_core.context import Context, Settings
from occystrap_core.transport import base
from occystrap_core.transport.tlscontext import RouteContext, client_context


@pytest.fixture
def ca(tmp_path: Any) -> tuple[trustme.CA, str]:
    authority = trustme.CA()
    path = str(tmp_path / "ca.pem")
    authority.cert_pem.write_to_path(path)
    return authority, path


@pytest.fixture
def alpn_server(ca: tuple[trustme.CA, str]) -> Iterator[tuple[str, list[str | None]]]:
    """A TLS server on 127.0.0.1 offering h2 and http/1.1; the protocols it chose, one
    per connection."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca[0].issue_cert("127.0.0.1").configure_cert(server_ctx)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    chosen: list[str | None] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                chosen.append(tls.selected_alpn_protocol())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    host, port = listener.getsockname()
    yield f"{host}:{port}", chosen
    listener.close()
    thread.join(5)


def _handshake(context: ssl.SSLContext, address: str) -> str | None:
    host, port = address.rsplit(":", 1)
    with context.wrap_socket(socket.create_connection((host, int(port))),
                             server_hostname=host) as tls:
        return tls.selected_alpn_protocol()


def test_the_run_contexts_offer_their_routes_protocols_from_the_start(
        ca: tuple[trustme.CA, str], alpn_server: tuple[str, list[str | None]]) -> None:
    ctx = Context(Settings(ca_cert=ca[1]))
    address, _ = alpn_server
    assert _handshake(base.ssl_context(ctx), address) == "http/1.1"
    assert _handshake(base.ssl_context(ctx, http2=True), address) == "h2"
    assert isinstance(base.ssl_context(ctx, verify=False), RouteContext)


def test_the_same_protocols_again_leave_openssl_alone(monkeypatch: pytest.MonkeyPatch,
                                                     ca: tuple[trustme.CA, str]) -> None:
    """httpcore asks at every connect; only a change reaches OpenSSL, which frees its
    list then, while another thread's connect may be copying it."""
    context = client_context(["http/1.1"], cafile=ca[1])
    calls: list[list[str]] = []
    real = ssl.SSLContext.set_alpn_protocols
    monkeypatch.setattr(ssl.SSLContext, "set_alpn_protocols",
                        lambda self, protocols: (calls.append(list(protocols)),
                                                 real(self, protocols)))
    for _ in range(3):
        context.set_alpn_protocols(["http/1.1"])
    assert calls == []
    context.set_alpn_protocols(["http/1.1", "h2"])
    assert calls == [["http/1.1", "h2"]]


def test_httpx_connects_through_a_route_context_many_threads_at_once(
        ca: tuple[trustme.CA, str], alpn_server: tuple[str, list[str | None]]) -> None:
    """httpcore's own call at each connect, from 8 threads at once, keeps the offer."""
    address, chosen = alpn_server
    context = client_context(["http/1.1"], cafile=ca[1])

    def connect() -> None:
        with httpx.Client(verify=context) as client, pytest.raises(httpx.HTTPError):
            client.get(f"https://{address}/")  # the server hangs up after the handshake

    threads = [threading.Thread(target=connect) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert chosen == ["http/1.1"] * 8
