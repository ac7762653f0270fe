"""Fixtures of the proxy tests: the real ``occystrap proxy`` in a subprocess, in front
of the real registry, and podman with storage of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from occystrap_core.testing.registry import RegistryServer


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    events_path: Path
    port: int
    stderr_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        lines = self.events_path.read_text().splitlines()
        found = [json.loads(line) for line in lines if line.strip()]
        return [e for e in found if kind is None or e["event"] == kind]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def registry_args(server: RegistryServer) -> list[str]:
    """Global options for occystrap to reach ``server`` as it is set up."""
    args = ["--insecure"] if server.scheme == "http" else ["--ca-cert", str(server.ca_cert)]
    if server.username:
        args += ["--username", server.username, "--password", server.password or ""]
    return args


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    """``start_proxy(server, *proxy_args, global_args=[...])``: a running proxy."""
    started: list[Proxy] = []

    def start(server: RegistryServer, *args: str, global_args: tuple[str, ...] = ()) -> Proxy:
        events = tmp_path / f"events-{len(started)}.jsonl"
        stderr = tmp_path / f"stderr-{len(started)}.txt"
        command = [sys.executable, "-m", "occystrap", *registry_args(server), *global_args,
                   "proxy", "--listen", "127.0.0.1:0", "--events", str(events), *args]
        with open(stderr, "wb") as err:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if events.exists() and "listening" in events.read_text():
                break
            if process.poll() is not None:
                pytest.fail(f"the proxy exited: {stderr.read_text()}")
            time.sleep(0.05)
        else:
            process.kill()
            pytest.fail("the proxy did not start listening")
        port = next(json.loads(line)["port"] for line in events.read_text().splitlines()
                    if '"listening"' in line)
        proxy = Proxy(process, events, port, stderr, command)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        if proxy.process.poll() is None:
            proxy.process.kill()
            proxy.process.wait()


@pytest.fixture
def repo_name() -> Callable[[str], str]:
    """Unique repository names: the session registries are shared between tests."""
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Podman:
    base: str

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        dirs = [os.path.join(self.base, n) for n in ("root", "run", "tmp")]
        command = ["podman", "--root", dirs[0], "--runroot", dirs[1], "--tmpdir", dirs[2],
                   "--storage-driver=vfs", "--cgroup-manager=cgroupfs",
                   "--events-backend=file", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180,
                                env=dict(os.environ, TMPDIR=dirs[2]))
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed:\n{result.stderr}")
        return result


@pytest.fixture
def podman_cli() -> Iterator[Podman]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (apt-get install podman)")
    base = tempfile.mkdtemp(prefix="occy-pd-", dir="/tmp")  # runroot paths must stay short
    for name in ("root", "run", "tmp"):
        os.mkdir(os.path.join(base, name))
    yield Podman(base)
    subprocess.run(["podman", "--root", os.path.join(base, "root"), "--runroot",
                    os.path.join(base, "run"), "--storage-driver=vfs", "system", "reset",
                    "--force"], capture_output=True, timeout=120)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def layer_members() -> Callable[[str], dict[str, tarfile.TarInfo]]:
    return _layer_members


@pytest.fixture
def occy_args() -> Callable[[RegistryServer], list[str]]:
    return registry_args


def _layer_members(archive: str) -> dict[str, tarfile.TarInfo]:
    """Every member of every layer of a docker-save archive, by path (last layer wins)."""
    found: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(archive) as outer:
        manifest_file = outer.extractfile("manifest.json")
        assert manifest_file is not None
        for layer in json.load(manifest_file)[0]["Layers"]:
            data = outer.extractfile(layer)
            assert data is not None
            with tarfile.open(fileobj=data, mode="r:*") as inner:
                for member in inner.getmembers():
                    found[member.name.lstrip("./")] = member
    return found
