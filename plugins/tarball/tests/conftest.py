"""Fixtures for the tarball plugin tests (importlib mode: share code as fixtures)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from typing import Any, Callable

import pytest


@pytest.fixture
def skopeo() -> Callable[..., str]:
    """Run skopeo (skipping the test when it is not installed); returns stdout."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed")

    def run(*args: str) -> str:
        result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


@pytest.fixture
def archive_member() -> Callable[[str, str], bytes]:
    def read(archive: str, name: str) -> bytes:
        with tarfile.open(archive) as tar:
            return tar.extractfile(name).read()  # type: ignore[union-attr]

    return read


@pytest.fixture
def info_json(run_cli: Any) -> Callable[[str], dict[str, Any]]:
    """``occystrap info -O json URI`` as a dict (the command must succeed)."""

    def info(uri: str) -> dict[str, Any]:
        result = run_cli("info", "-O", "json", uri)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return info


@pytest.fixture
def process_ok(run_cli: Any) -> Callable[..., Any]:
    """``occystrap process SRC DEST`` that must succeed."""

    def process(*args: str) -> Any:
        result = run_cli("process", *args)
        assert result.exit_code == 0, result.output
        return result

    return process


@pytest.fixture
def expect_error() -> Callable[..., None]:
    """Check an expected failure: exit 1, an ``Error:`` line, no traceback."""

    def check(result: Any, *fragments: str) -> None:
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: "), result.stderr
        assert "Traceback" not in result.stderr and "Error: unexpected" not in result.stderr
        for fragment in fragments:
            assert fragment in result.stderr, result.stderr

    return check
