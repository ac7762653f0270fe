"""Entry points remembered between runs, and found again when what is installed changes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from occystrap_core import entrypoints
from occystrap_core.entrypoints import Found


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """Each real scan, by group; the cache lives in tmp_path."""
    monkeypatch.setenv("OCCYSTRAP_CACHE_DIR", str(tmp_path / "cache"))
    done: list[str] = []
    real = entrypoints._scan

    def scan(group: str) -> tuple[Found, ...]:
        done.append(group)
        return real(group)

    monkeypatch.setattr(entrypoints, "_scan", scan)
    return done


def test_found_once_then_remembered(scans: list[str]) -> None:
    first = entrypoints.find("occystrap")
    assert {"occystrap-registry", "occystrap-proxy"} <= {e.name for e in first}
    assert entrypoints.find("occystrap") == first
    assert scans == ["occystrap"]
    registry = next(e for e in first if e.name == "occystrap-registry")
    assert (registry.distribution, registry.version) == ("occystrap-registry", "0.5.0")
    assert registry.load().__name__ == "occystrap_registry.plugin"


def test_a_change_on_the_path_means_a_new_scan(scans: list[str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    entrypoints.find("occystrap")
    (site / "newly_installed-1.0.dist-info").mkdir()  # what pip install does to a directory
    os.utime(site, ns=(1, 1))  # whatever the clock's resolution, the time differs
    entrypoints.find("occystrap")
    assert scans == ["occystrap", "occystrap"]


def test_files_coming_and_going_where_no_distribution_is_need_no_scan(
        scans: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m`` puts the working directory on the path: a busy one must not
    cost a scan each run, until a distribution appears there."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(sys, "path", [str(work), *sys.path])
    entrypoints.find("occystrap")
    (work / "output.tar").write_text("written by the last run")
    os.utime(work, ns=(1, 1))
    entrypoints.find("occystrap")
    assert scans == ["occystrap"]
    (work / "local_plugin-1.0.dist-info").mkdir()
    entrypoints.find("occystrap")
    assert scans == ["occystrap", "occystrap"]


def test_another_working_directory_needs_no_scan(scans: list[str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m occystrap_core`` from one directory, then from another."""
    rest = list(sys.path)
    for name in ("project", "elsewhere"):
        (tmp_path / name).mkdir()
        monkeypatch.setattr(sys, "path", [str(tmp_path / name), *rest])
        entrypoints.find("occystrap")
    assert scans == ["occystrap"]


@pytest.mark.parametrize("content", ["{not json", '{"key": 1}', '{"entries": []}', ""])
def test_a_broken_cache_file_means_a_new_scan(scans: list[str], tmp_path: Path,
                                              content: str) -> None:
    entrypoints.find("occystrap")
    (cache_file,) = (tmp_path / "cache").iterdir()
    cache_file.write_text(content)
    assert {e.name for e in entrypoints.find("occystrap")} >= {"occystrap-registry"}
    assert scans == ["occystrap", "occystrap"]
    assert json.loads(cache_file.read_text())["entries"]  # written again


def test_no_cache_when_turned_off_or_unwritable(scans: list[str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCCYSTRAP_CACHE_DIR", "")
    entrypoints.find("occystrap")
    entrypoints.find("occystrap")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("OCCYSTRAP_CACHE_DIR", str(blocked / "cache"))
    assert entrypoints.find("occystrap")
    assert scans == ["occystrap"] * 3


@pytest.mark.parametrize("value, expected", [
    ("json", json), ("json:dumps", json.dumps), ("os:path.join", os.path.join),
    ("json:loads [extra]", json.loads),
])
def test_load_follows_the_entry_point_syntax(value: str, expected: Any) -> None:
    assert Found("x", value, None, None).load() is expected
