"""Fixtures for the tarball plugin tests (importlib mode: share code as fixtures)."""

from __future__ import annotations

import tarfile
from typing import Callable

import pytest


@pytest.fixture
def archive_member() -> Callable[[str, str], bytes]:
    def read(archive: str, name: str) -> bytes:
        with tarfile.open(archive) as tar:
            return tar.extractfile(name).read()  # type: ignore[union-attr]

    return read
