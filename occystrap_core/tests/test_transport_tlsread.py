"""GatheringSSLSocket: a recv returns every TLS record that has arrived, over a real
TLS connection on 127.0.0.1."""

from __future__ import annotations

import fcntl
import socket
import ssl
import struct
import termios
import threading
import time

import pytest
import trustme

from occystrap_core.testing.http import make_context
from occystrap_core.transport import base
from occystrap_core.transport.tlsread import GatheringSSLSocket

RECORD = 16384  # the most one TLS record carries
SENT = 6 * RECORD  # well within the default receive buffer (128 KiB)


def _arrived(sock: socket.socket) -> int:
    """Bytes the kernel holds for ``sock``, not yet read (TLS records, undecrypted)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


@pytest.fixture
def tls_pair():
    """A connected (client, server) pair of TLS 1.2 sockets (no session tickets
    after the handshake, so only the data sent is in flight); the client's
    context uses ``socket_class``."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[ssl.SSLSocket] = []
    thread = threading.Thread(target=lambda: accepted.append(
        server_ctx.wrap_socket(listener.accept()[0], server_side=True)))
    thread.start()
    opened = []

    def connect(socket_class: type[ssl.SSLSocket]) -> tuple[ssl.SSLSocket, ssl.SSLSocket]:
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        client_ctx.sslsocket_class = socket_class
        client = client_ctx.wrap_socket(socket.create_connection(listener.getsockname()),
                                        server_hostname="127.0.0.1")
        thread.join(10)
        opened.extend([client, *accepted])
        return client, accepted[0]

    yield connect
    for s in opened:
        s.close()
    listener.close()


def _send_and_wait(client: ssl.SSLSocket, server: ssl.SSLSocket) -> None:
    """Send 6 full records and wait until they have all reached the client's kernel."""
    server.sendall(b"x" * SENT)
    cipher = client.cipher()
    assert cipher is not None
    overhead = 5 + 8 + 16 if "GCM" in cipher[0] else 5 + 16  # header, nonce, tag
    deadline = time.monotonic() + 10
    while _arrived(client) < SENT + 6 * overhead:
        assert time.monotonic() < deadline, f"the records never arrived: {_arrived(client)}"
        time.sleep(0.01)


def test_recv_gathers_the_records_that_arrived(tls_pair):
    client, server = tls_pair(GatheringSSLSocket)
    client.settimeout(5.0)
    _send_and_wait(client, server)
    assert len(client.recv(4 * RECORD)) == 4 * RECORD  # four records in one call
    assert len(client.recv(SENT)) == 2 * RECORD  # the rest, without waiting for more
    assert client.gettimeout() == 5.0  # the caller's timeout is back
    server.close()
    assert client.recv(SENT) == b""


def test_a_plain_ssl_socket_returns_one_record(tls_pair):
    """What the class is for: OpenSSL hands out one record per read."""
    client, server = tls_pair(ssl.SSLSocket)
    _send_and_wait(client, server)
    assert len(client.recv(4 * RECORD)) == RECORD


def test_recv_still_waits_for_the_first_bytes(tls_pair):
    client, server = tls_pair(GatheringSSLSocket)
    client.settimeout(0.05)
    with pytest.raises(TimeoutError):
        client.recv(4 * RECORD)
    assert client.gettimeout() == 0.05
    server.sendall(b"abc")
    client.settimeout(5.0)
    assert client.recv(4 * RECORD) == b"abc"


def test_the_run_context_uses_it():
    ctx = make_context()
    assert base.ssl_context(ctx).sslsocket_class is GatheringSSLSocket
