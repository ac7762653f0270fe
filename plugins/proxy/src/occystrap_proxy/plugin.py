"""Entry-point module of occystrap-proxy: hook implementations only, no heavy imports."""

from __future__ import annotations

from typing import Iterator

from occystrap_core import hookimpl
from occystrap_core.types import CommandSpec, lazy


@hookimpl
def occystrap_commands() -> Iterator[CommandSpec]:
    yield CommandSpec(name="proxy", summary="Serve a registry front: push and pull-through, "
                      "filtered", factory=lazy("occystrap_proxy.command:build"))
