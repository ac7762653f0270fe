"""HTTP/2 through one event loop (transport/h2.py): no h2 state is touched off the loop
thread whatever the callers' threads or trace hooks do, and a caller that leaves cancels
its request without wedging the loop. Against the real registry over TLS (Go's HTTP/2).

Nothing here finds races by chance: the thread of every h2 event is recorded and checked,
and hangs are turned into failures by running the work in a thread joined with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import signal
import socket
import socketserver
import ssl
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from occystrap_core.testing.faults import Fault
from occystrap_core.testing.http import client_factory_plugin, make_context
from occystrap_core.testing.registry import push_sample_image
from occystrap_core.transport.h2 import H2Transport

THREADS, ROUNDS = 8, 6
ACCEPT = ("application/vnd.oci.image.manifest.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


@pytest.fixture(autouse=True)
def _http2_from_the_first_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is tested here is HTTP/2 itself: no waiting for requests to overlap."""
    monkeypatch.setenv("OCCYSTRAP_HTTP2_OVERLAP", "1")


def _context(server: Any) -> Any:
    # no retries: a request broken by concurrency must fail the test, not be retried
    return make_context(client_factory_plugin("reg"), ca_cert=server.ca_cert, retries=0)


def _client(ctx: Any, server: Any) -> httpx.Client:
    return ctx.http_client("reg", server.host, scheme="https")


def _finishes(work: Callable[[], None], threads: int = 1, timeout: float = 60.0) -> None:
    """Runs ``work`` in ``threads`` threads released together; a hang fails, not hangs."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            work()
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(e)

    started = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in started), "the transport hung"
    if errors:
        raise errors[0]


def _loop_thread_idents() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name == "occystrap-http2"}


def _new_transport() -> tuple[H2Transport, threading.Thread]:
    before = set(threading.enumerate())
    transport = H2Transport(verify=ssl.create_default_context(), proxy=None,
                            limits=httpx.Limits())
    (thread,) = [t for t in threading.enumerate()
                 if t not in before and t.name == "occystrap-http2"]
    return transport, thread


def test_every_http2_event_happens_on_the_loop_thread(registry_tls):
    repo = f"h2loop/{uuid.uuid4().hex[:8]}"
    image = push_sample_image(registry_tls, repo, "v1")
    events: list[tuple[str, int]] = []  # list.append is atomic
    callers: set[int] = set()
    answers: list[tuple[Any, ...]] = []

    def trace(name: str, info: dict[str, Any]) -> None:
        events.append((name, threading.get_ident()))

    with _context(registry_tls) as ctx:
        client = _client(ctx, registry_tls)
        assert client.get("/v2/", extensions={"trace": trace}).http_version == "HTTP/2"

        def fetch() -> None:
            callers.add(threading.get_ident())
            for _ in range(ROUNDS):
                manifest = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT},
                                      extensions={"trace": trace})
                config = client.get(f"/v2/{repo}/blobs/{image.config_digest}",
                                    extensions={"trace": trace})
                layer = client.head(f"/v2/{repo}/blobs/{image.layer_digests[0]}",
                                    extensions={"trace": trace})
                answers.append((
                    manifest.content == image.manifest,
                    "sha256:" + hashlib.sha256(config.content).hexdigest(),
                    layer.status_code, layer.headers.get("docker-content-digest"),
                    {manifest.http_version, config.http_version, layer.http_version}))

        _finishes(fetch, THREADS)
        loops = _loop_thread_idents()

    assert answers == [(True, image.config_digest, 200, image.layer_digests[0], {"HTTP/2"})] \
        * THREADS * ROUNDS
    threads = {ident for _, ident in events}
    assert len(threads) == 1, "h2 events on several threads"
    assert threads <= loops and not threads & (callers | {threading.get_ident()})
    names = [name for name, _ in events]
    assert names.count("http2.send_request_headers.started") == 1 + 3 * THREADS * ROUNDS
    assert names.count("connection.connect_tcp.complete") == 1, "requests were not multiplexed"


class HookError(Exception):
    pass


@pytest.mark.parametrize("failing", ["http2.send_request_headers.started",
                                     "http2.receive_response_headers.complete",
                                     "http2.receive_response_body.started"])
def test_a_trace_hook_that_raises_fails_only_its_own_request(registry_tls, failing):
    # The old lock-based patch stayed locked when a hook raised between taking a stream
    # id and sending the headers: every later request on the connection hung.
    def hook(name: str, info: dict[str, Any]) -> None:
        if name == failing:
            raise HookError(name)

    with _context(registry_tls) as ctx:
        client = _client(ctx, registry_tls)

        def scenario() -> None:
            assert client.get("/v2/").http_version == "HTTP/2"
            for _ in range(3):
                with pytest.raises(HookError, match=failing):
                    client.get("/v2/", extensions={"trace": hook})

        def more() -> None:
            for _ in range(5):
                response = client.get("/v2/")
                assert (response.status_code, response.http_version) == (200, "HTTP/2")

        _finishes(scenario)
        _finishes(more, threads=4)


def test_ctrl_c_while_waiting_cancels_the_request_and_the_connection_goes_on(
        registry_plain, fault_front_factory):
    front = fault_front_factory(registry_plain, tls=True)  # HTTP/2, Python's h2 server side
    front.add(Fault("stall", path="/stalled", seconds=3600))
    events: list[tuple[str, dict[str, Any]]] = []
    connects: list[str] = []
    released = threading.Event()

    def count(name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.complete":
            connects.append(name)

    def interrupt(name: str, info: dict[str, Any]) -> None:
        count(name, info)
        events.append((name, info))
        if name == "http2.receive_response_headers.started":  # sent, now waiting: Ctrl-C
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        elif name == "http2.response_closed.complete":
            released.set()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with _context(front) as ctx:
            client = _client(ctx, front)
            assert client.get("/v2/", extensions={"trace": count}).http_version == "HTTP/2"
            with pytest.raises(KeyboardInterrupt):
                client.get("/v2/stalled/manifests/x", extensions={"trace": interrupt})
            assert released.wait(30), [name for name, _ in events]
            failed = [info["exception"] for name, info in events
                      if name == "http2.receive_response_headers.failed"]
            assert len(failed) == 1 and isinstance(failed[0], asyncio.CancelledError)

            def after() -> None:
                response = client.get("/v2/", extensions={"trace": count})
                assert (response.status_code, response.http_version) == (200, "HTTP/2")

            _finishes(after, threads=3)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert connects == ["connection.connect_tcp.complete"], "the connection did not survive"


def test_a_caller_past_its_bound_cancels_its_task_and_the_loop_goes_on():
    transport, _ = _new_transport()
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        with pytest.raises(httpx.ReadTimeout, match="no answer on the HTTP/2 connection"):
            transport.call(forever, 0.2)
        assert cancelled.wait(30)
        assert transport.call(lambda: asyncio.sleep(0, "next"), 30) == "next"
    finally:
        transport.close()


def test_a_task_whose_caller_left_before_it_started_never_runs():
    transport, _ = _new_transport()
    running, gate = threading.Event(), threading.Event()
    made: list[str] = []

    async def block_the_loop() -> None:
        running.set()
        gate.wait(60)  # blocking on purpose: the loop can start nothing else meanwhile

    def make() -> Any:
        made.append("started")
        return asyncio.sleep(0)

    blocker = threading.Thread(target=transport.call, args=(block_the_loop, 60), daemon=True)
    blocker.start()
    try:
        assert running.wait(30)
        with pytest.raises(httpx.ReadTimeout):
            transport.call(make, 0.2)
        gate.set()
        blocker.join(30)
        assert transport.call(lambda: asyncio.sleep(0, "after"), 30) == "after"
        assert made == []
    finally:
        gate.set()
        transport.close()


def test_close_fails_the_requests_in_flight_and_stops_the_loop_thread():
    transport, thread = _new_transport()
    started = threading.Event()
    errors: list[BaseException] = []

    async def forever() -> None:
        started.set()
        await asyncio.sleep(3600)

    def wait() -> None:
        try:
            transport.call(forever, 60)
        except BaseException as e:  # noqa: BLE001 - checked below
            errors.append(e)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    assert started.wait(30)
    transport.close()
    waiter.join(30)
    thread.join(30)
    assert not waiter.is_alive() and not thread.is_alive()
    assert [type(e) for e in errors] == [httpx.ReadError]
    with pytest.raises(RuntimeError, match="closed"):
        transport.call(lambda: asyncio.sleep(0), 1)
    transport.close()  # again: nothing to do


def test_a_transport_dropped_unclosed_stops_its_loop_thread():
    transport, thread = _new_transport()
    assert transport.call(lambda: asyncio.sleep(0, "used"), 30) == "used"
    del transport
    gc.collect()
    thread.join(30)
    assert not thread.is_alive()


class TunnelProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that only tunnels (CONNECT), recording each request line."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.seen: list[str] = []


class _Tunnel(socketserver.StreamRequestHandler):
    server: TunnelProxy

    def handle(self) -> None:
        line = self.rfile.readline().decode().strip()
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        self.server.seen.append(line)
        host, port = line.split()[1].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as upstream:
            self.connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            back = threading.Thread(target=_pipe, args=(upstream, self.connection), daemon=True)
            back.start()
            _pipe(self.connection, upstream)
            back.join(10)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def test_https_through_a_proxy_is_tunnelled_and_keeps_http2(registry_tls, monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    with TunnelProxy() as proxy:
        threading.Thread(target=proxy.serve_forever, args=(0.05,), daemon=True).start()
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
        try:
            with _context(registry_tls) as ctx:
                client = _client(ctx, registry_tls)
                versions = {client.get("/v2/").http_version for _ in range(3)}
        finally:
            proxy.shutdown()
    assert versions == {"HTTP/2"}
    assert proxy.seen == [f"CONNECT {registry_tls.host} HTTP/1.1"]  # one tunnel, reused


def test_requests_with_a_body_are_refused():
    transport, _ = _new_transport()
    try:
        for request in (httpx.Request("PUT", "https://r.example/x", content=b"data"),
                        httpx.Request("POST", "https://r.example/x")):  # Content-Length: 0
            with pytest.raises(ValueError, match="sends no bodies"):
                transport.handle_request(request)
    finally:
        transport.close()
