"""pytest fixtures for occystrap and its plugins, shipped in the core wheel.

Opt in from a ``conftest.py`` with ``pytest_plugins = ["occystrap_core.testing"]``.

- ``register_plugin(obj, name=...)``: make a throwaway plugin visible to every
  plugin load (CLI runs included) for the rest of the test.
- ``plugin_module(*hookimpls)``: a throwaway plugin object made of hook functions.
- ``fake_entry_points(eps)``: replace entry-point discovery entirely.
- ``run_cli(*args)``: run the ``occystrap`` CLI in-process; stdout and stderr apart.
- ``process_ok(SRC, DEST, ...)``, ``info_json(URI)``: CLI runs that must succeed.
- ``expect_error(result, *fragments)``: exit 1, one ``Error:`` line, no traceback.
- ``skopeo(*args)``: the interop peer, ``skopeo --insecure-policy ARGS``; stdout.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner, Result

from .. import plugins as _plugins
from .. import redact


@dataclass
class _FakeDist:
    name: str
    version: str

    @property
    def metadata(self) -> dict[str, str]:
        return {"Name": self.name}


class FakeEntryPoint:
    """Stands in for an ``importlib.metadata.EntryPoint`` of group ``occystrap``.

    ``target`` is what ``load()`` returns, or an exception instance it raises.
    """

    group = _plugins.GROUP

    def __init__(self, name: str, target: Any, dist: str | None = None, version: str = "1.0"):
        self.name = name
        self.value = f"{name}:fake"
        self._target = target
        self.dist = _FakeDist(dist or name, version)

    def load(self) -> Any:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def plugin_module(*hookimpls: Callable[..., Any],
                  name: str = "occystrap_test_plugin") -> ModuleType:
    """A plugin made of ``@hookimpl`` functions, each under its own ``__name__``.

    A module object, like what an entry point loads; pluggy needs plugins hashable, which
    rules out a ``SimpleNamespace``.
    """
    module = ModuleType(name)
    for function in hookimpls:
        setattr(module, function.__name__, function)
    return module


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Any]], None]:
    """Replace discovery so that exactly the given entry points are found."""

    def install(eps: list[Any]) -> None:
        monkeypatch.setattr(_plugins, "discover_entry_points", lambda: tuple(eps))

    return install


@pytest.fixture
def register_plugin(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeEntryPoint]:
    """Add an in-process plugin next to the installed ones, undone after the test."""
    extra: list[FakeEntryPoint] = []
    real = _plugins.discover_entry_points
    monkeypatch.setattr(_plugins, "discover_entry_points", lambda: real() + tuple(extra))

    def register(obj: Any, name: str = "occystrap-test-plugin",
                 version: str = "1.0") -> FakeEntryPoint:
        ep = FakeEntryPoint(name, obj, version=version)
        extra.append(ep)
        return ep

    return register


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    """The CLI configures the ``occystrap``, ``httpx`` and ``httpcore`` loggers for the
    process (handlers, level, propagation); put them back after every test, so one
    test's CLI run does not hide log records from the next one's ``caplog``."""
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate)
             for logger in map(logging.getLogger, ("occystrap", "httpx", "httpcore"))]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    """Secrets registered for redaction are process-wide; keep them per test."""
    yield
    redact.forget()


@pytest.fixture
def run_cli() -> Callable[..., Result]:
    """Run the CLI in-process: ``run_cli("info", "tar://x.tar")``."""
    from ..cli import cli

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, input=input, prog_name="occystrap")

    return run


@pytest.fixture
def process_ok(run_cli: Callable[..., Result]) -> Callable[..., Result]:
    """``occystrap process ARGS...`` that must succeed."""

    def process(*args: str) -> Result:
        result = run_cli("process", *args)
        assert result.exit_code == 0, result.output
        return result

    return process


@pytest.fixture
def info_json(run_cli: Callable[..., Result]) -> Callable[[str], dict[str, Any]]:
    """``occystrap info -O json URI`` as a dict (the command must succeed)."""

    def info(uri: str) -> dict[str, Any]:
        result = run_cli("info", "-O", "json", uri)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    return info


@pytest.fixture
def expect_error() -> Callable[..., None]:
    """Check an expected failure: exit 1, an ``Error:`` line, no traceback."""

    def check(result: Result, *fragments: str) -> None:
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: "), result.stderr
        assert "Traceback" not in result.stderr and "Error: unexpected" not in result.stderr
        for fragment in fragments:
            assert fragment in result.stderr, result.stderr

    return check


@pytest.fixture
def skopeo() -> Callable[..., str]:
    """Run skopeo, the interop peer; returns stdout. Missing skopeo fails the test:
    scripts/setup.sh installs it, and a skipped interop test would hide a failure."""
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (scripts/setup.sh installs it)")

    def run(*args: str) -> str:
        result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run
