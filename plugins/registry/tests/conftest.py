"""Shared fixtures of the registry plugin tests (importlib mode: share code as fixtures)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

import pytest

from occystrap_core.testing.registry import RegistryServer, skopeo_args


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
def registry_info(occy: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    def info(server: RegistryServer, uri: str) -> dict[str, Any]:
        return json.loads(occy(server, "info", "-O", "json", uri).stdout)

    return info
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
