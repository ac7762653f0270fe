"""pytest fixtures for occystrap and its plugins, shipped in the core wheel.

Opt in from a ``conftest.py`` with ``pytest_plugins = ["occystrap_core.testing"]``.

- ``register_plugin(obj, name=...)``: make a throwaway plugin visible to every
  plugin load (CLI runs included) for the rest of the test.
- ``fake_entry_points(eps)``: replace entry-point discovery entirely.
- ``run_cli(*args)``: run the ``occystrap`` CLI in-process; stdout and stderr apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
from click.testing import CliRunner, Result

from .. import plugins as _plugins


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

    def register(obj: Any, name: str = "occystrap-test-plugin", version: str = "1.0") -> FakeEntryPoint:
        ep = FakeEntryPoint(name, obj, version=version)
        extra.append(ep)
        return ep

    return register


@pytest.fixture
def run_cli() -> Callable[..., Result]:
    """Run the CLI in-process: ``run_cli("info", "tar://x.tar")``."""
    from ..cli import cli

    def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), env=env, input=input, prog_name="occystrap")

    return run
