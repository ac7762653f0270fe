"""Shared fixtures of the registry plugin tests (importlib mode: share code as fixtures)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import uuid
from typing import Any, Callable

import httpx
import pytest

from occystrap_core import hookimpl
from occystrap_core.testing.registry import RegistryServer, skopeo_args
from occystrap_core.types import TransportLayer


@pytest.fixture
def skopeo() -> Callable[..., str]:
    """Run skopeo (skipping the test when it is not installed); returns stdout."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed")

    def run(*args: str) -> str:
        result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


@pytest.fixture
def inspect_raw(skopeo: Callable[..., str]) -> Callable[..., bytes]:
    """The manifest bytes a registry serves for ``repo:tag`` (fetched by skopeo)."""

    def inspect(server: RegistryServer, ref: str) -> bytes:
        return skopeo("inspect", "--raw", *skopeo_args(server),
                      f"docker://{server.host}/{ref}").encode()

    return inspect


@pytest.fixture
def repo_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique repository names: the session registries are shared between tests."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def occy(run_cli: Any) -> Callable[..., Any]:
    """``occy(server, "process", SRC, DEST, ok=True)``: the CLI with the server's TLS and
    credential options; ``creds`` overrides the credentials (None: anonymous)."""

    def run(server: RegistryServer, *args: str, ok: bool = True,
            creds: tuple[str, str] | None | bool = True) -> Any:
        flags = ["--ca-cert", server.ca_cert] if server.ca_cert else ["--insecure"]
        if creds is True and server.username:
            creds = (server.username, server.password or "")
        if isinstance(creds, tuple):
            flags += ["--username", creds[0], "--password", creds[1]]
        result = run_cli(*flags, *args)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


@pytest.fixture
def info_json(occy: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    def info(server: RegistryServer, uri: str) -> dict[str, Any]:
        return json.loads(occy(server, "info", "-O", "json", uri).stdout)

    return info


class RequestLog:
    """A transport layer above retries: records each logical request once."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def wrap(self, inner: httpx.BaseTransport, host: str, ctx: Any) -> httpx.BaseTransport:
        log = self

        class Recorder(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                with log._lock:
                    log.requests.append((request.method, request.url.path))
                return inner.handle_request(request)

            def close(self) -> None:
                inner.close()

        return Recorder()

    @hookimpl
    def occystrap_transport_layers(self) -> list[TransportLayer]:
        return [TransportLayer(name="test-request-log", order=300, wrap=self.wrap)]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()


@pytest.fixture
def request_log(register_plugin: Callable[..., Any]) -> RequestLog:
    log = RequestLog()
    register_plugin(log, name="occystrap-test-request-log")
    return log


def summary_counts(stderr: str) -> dict[str, int]:
    """Layers, skipped and mounted from the ``Summary:`` line (absent counts are 0)."""
    import re

    line = next(l for l in stderr.splitlines() if l.startswith("Summary:"))
    counts = {}
    for name in ("layers", "skipped", "mounted", "retries"):
        match = re.search(rf"(\d+) {name}\b", line)
        counts[name] = int(match.group(1)) if match else 0
    return counts


@pytest.fixture
def summary() -> Callable[[str], dict[str, int]]:
    return summary_counts
