"""``occystrap -O json COMMAND``: the global ``-O/--output-format`` (0.4.17 had it).

It is the default of every command's own ``-O`` (a parameter named ``fmt`` or
``output_format``), plugins' and nested commands' included, through click's
``default_map``; a command's own ``-O`` wins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

NAMES = ("fmt", "output_format")
FORMATS = ("text", "json")
F = TypeVar("F", bound=Callable[..., Any])


def option(**extra: Any) -> Callable[[F], F]:
    """A command's own ``-O/--output-format`` (``fmt``: the name the global one fills)."""
    return click.option("-O", "--output-format", "fmt", type=click.Choice(FORMATS),
                        default="text", show_default=True, **extra)


class FormatDefaults(dict[str, Any]):
    """A ``default_map`` giving ``fmt`` to every command below it: click asks it for
    a parameter's default with ``in`` and ``[]``, and for a command's map with
    ``get``."""

    def __init__(self, fmt: str):
        super().__init__(dict.fromkeys(NAMES, fmt))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else self
