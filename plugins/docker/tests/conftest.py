"""Fixtures for the docker plugin tests: a real Docker Engine API from ``podman system service``.

The service gets its own storage (``--root``/``--runroot``/``--tmpdir``, always
the ``vfs`` driver, which needs no fuse or overlay privileges), listens on a unix
socket in a private directory and is killed at the end of the session. Images
come from ``occystrap_core.testing.images``, never from the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import quote

import pytest
import requests_unixsocket

from occystrap_core.testing.images import build_docker_archive

STORAGE_DRIVER = "vfs"


@dataclass
class PodmanService:
    socket: str
    base: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return "http+unix://" + quote(self.socket, safe="")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        with requests_unixsocket.Session() as session:
            return session.request(method, self.url + path, timeout=60, **kwargs)

    def inspect(self, ref: str) -> dict[str, Any] | None:
        resp = self.api("GET", f"/images/{ref}/json")
        return resp.json() if resp.status_code == 200 else None

    def load(self, path: str) -> None:
        with open(path, "rb") as f:
            resp = self.api("POST", "/images/load", data=f,
                            headers={"Content-Type": "application/x-tar"})
        assert resp.status_code == 200, resp.text

    def log(self) -> str:
        with open(os.path.join(self.base, "service.log"), errors="replace") as f:
            return f.read()[-4000:]


@pytest.fixture(scope="session")
def podman() -> Iterator[PodmanService]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install podman)")
    base = tempfile.mkdtemp(prefix="occy-podman-", dir="/tmp")  # runroot paths must stay short
    dirs = {name: os.path.join(base, name) for name in ("root", "run", "tmp")}
    for path in dirs.values():
        os.mkdir(path)
    socket = os.path.join(base, "podman.sock")
    env = dict(os.environ, TMPDIR=dirs["tmp"])  # the API's load/push scratch files go here
    with open(os.path.join(base, "service.log"), "wb") as log:
        process = subprocess.Popen(
            ["podman", "--root", dirs["root"], "--runroot", dirs["run"], "--tmpdir", dirs["tmp"],
             f"--storage-driver={STORAGE_DRIVER}", "--cgroup-manager=cgroupfs",
             "--events-backend=file", "system", "service", "--time=0", f"unix://{socket}"],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    service = PodmanService(socket, base, process)
    try:
        _wait_ready(service)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(service: PodmanService, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(f"podman system service exited: {service.log()}")
        if os.path.exists(service.socket):
            try:
                if service.api("GET", "/_ping").text == "OK":
                    return
            except OSError:
                pass
        time.sleep(0.1)
    pytest.fail(f"podman system service did not answer /_ping: {service.log()}")


@pytest.fixture
def sample_in_daemon(podman: PodmanService, tmp_path: Any) -> Callable[..., dict[str, Any]]:
    """Load a generated image into the daemon with ``POST /images/load``; describe it."""

    def load(name: str, tag: str = "v1", **kwargs: Any) -> dict[str, Any]:
        path = str(tmp_path / f"sample-{len(os.listdir(tmp_path))}.tar")
        built = build_docker_archive(path, name=name, tag=tag, **kwargs)
        podman.load(path)
        return built

    return load


@pytest.fixture
def docker_uri(podman: PodmanService) -> Callable[..., str]:
    """``SCHEME://REF?socket=...`` for the test daemon."""

    def uri(ref: str, scheme: str = "docker", **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"socket": podman.socket, **options}.items())
        return f"{scheme}://{ref}?{query}"

    return uri
@dataclass
class FakeDaemon:
    """A stand-in Engine API on a unix socket, for what podman cannot produce.

    ``routes[(METHOD, path)] = (status, body)``, or a list of them answered in
    turn (the last one repeats); anything else is a 404 with a Docker-style JSON
    message. ``requests`` lists (METHOD, path with query, body size). ``cut[(METHOD,
    path)] = N`` sends only the first N bytes of that answer's body, then hangs up.
    """

    socket: str
    routes: dict[tuple[str, str], Any] = field(default_factory=dict)
    cut: dict[tuple[str, str], int] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    def json(self, method: str, path: str, value: Any, status: int = 200) -> None:
        self.routes[(method, path)] = (status, json.dumps(value).encode())

    def answer(self, method: str, path: str) -> tuple[int, bytes]:
        route = self.routes.get((method, path), (404, b'{"message":"No such image: fake"}'))
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route


class _FakeHandler(BaseHTTPRequestHandler):
    server: Any

    def _answer(self) -> None:
        daemon: FakeDaemon = self.server.daemon
        path = self.path.split("?", 1)[0]
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            left -= len(self.rfile.read(min(left, 65536)))
        daemon.requests.append((self.command, self.path,
                                int(self.headers.get("Content-Length") or 0)))
        status, body = daemon.answer(self.command, path)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = daemon.cut.get((self.command, path))
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:  # no client address on a unix socket
        pass


@pytest.fixture
def fake_daemon(tmp_path: Any) -> Iterator[FakeDaemon]:
    path = tempfile.mkdtemp(prefix="occy-fake-", dir="/tmp")
    daemon = FakeDaemon(os.path.join(path, "docker.sock"))
    daemon.routes[("GET", "/_ping")] = (200, b"OK")
    server = socketserver.ThreadingUnixStreamServer(daemon.socket, _FakeHandler)
    server.daemon = daemon  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class StallingFront:
    """A unix socket relaying to a real daemon that, once ``stall_after`` bytes of
    the answer to a save (``GET /images/.../get``) went through, relays no more and
    keeps the connection open: a daemon stuck in the middle of ``docker save``. With
    ``close``, the save's answer says ``Connection: close`` (the client does not keep
    the connection for another request)."""

    socket: str
    daemon: str
    stall_after: int
    close: bool = False
    stalled: threading.Event = field(default_factory=threading.Event)
    closing: threading.Event = field(default_factory=threading.Event)


class _StallingHandler(socketserver.BaseRequestHandler):
    server: Any

    def handle(self) -> None:
        front: StallingFront = self.server.front
        client: socket.socket = self.request
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(front.daemon)
        # the answers relayed before the save's request came (a kept-alive connection
        # carries an inspect first), when it has come
        mark: list[int] = []
        relayed = 0

        def requests() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    if not mark and re.search(rb"^GET /\S*/get[ ?]", data, re.M):
                        mark.append(relayed)
                    upstream.sendall(data)

        thread = threading.Thread(target=requests, daemon=True)
        thread.start()
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if mark and front.close and relayed == mark[0]:  # the save's status line
                    line, _, rest = data.partition(b"\r\n")
                    data = line + b"\r\nConnection: close\r\n" + rest
                if mark:
                    data = data[:max(mark[0] + front.stall_after - relayed, 0)]
                client.sendall(data)
                relayed += len(data)
                if mark and relayed >= mark[0] + front.stall_after:
                    front.stalled.set()
                    front.closing.wait()  # silent, the connection open
                    break
        upstream.close()
        thread.join(5)


@pytest.fixture(params=["keep-alive", "close"])
def stalling_daemon(podman: PodmanService, request: pytest.FixtureRequest
                    ) -> Iterator[StallingFront]:
    path = tempfile.mkdtemp(prefix="occy-stall-", dir="/tmp")
    front = StallingFront(os.path.join(path, "docker.sock"), podman.socket, stall_after=4096,
                          close=request.param == "close")
    server = socketserver.ThreadingUnixStreamServer(front.socket, _StallingHandler)
    server.daemon_threads = True
    server.front = front  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield front
    finally:
        front.closing.set()
        server.shutdown()
        server.server_close()
        shutil.rmtree(path, ignore_errors=True)
