"""Plugins on the command line: which to load before parsing, and their global options.

The plugins decide which options there are to parse, so ``--disable-plugin`` is read
from the raw arguments first (as pytest reads ``-p no:NAME``), the plugins are loaded,
and then the command line is parsed with every plugin's global options.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import click

from . import __version__
from .errors import PluginConflictError
from .plugins import CORE, Plugins
from .types import GlobalOption

DISABLE = "--disable-plugin"
VALUES = "occystrap.plugin_options"  # click context meta: option name -> value


def disabled_in(args: Sequence[str]) -> list[str]:
    """The ``--disable-plugin NAME`` values among raw ``args`` (up to ``--``)."""
    names: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--":
            break
        if arg == DISABLE:
            names.append(next(it, ""))
        elif arg.startswith(f"{DISABLE}="):
            names.append(arg.partition("=")[2])
    return names


def click_options(plugins: Plugins, core: Iterable[click.Parameter]) -> list[click.Option]:
    """One click option per global option the plugins contribute, by name.

    Raises PluginConflictError, naming both distributions, for a name two plugins
    claim or a plugin claims one of the ``core`` options' names.
    """
    taken = {opt for param in core for opt in (*param.opts, *param.secondary_opts)}
    options = []
    for name, entry in plugins.global_options:
        if f"--{name}" in taken:
            raise PluginConflictError(
                f"global option --{name} is claimed by both {CORE} {__version__} and "
                f"{entry.record.label}; disable it with --disable-plugin {entry.record.name}")
        options.append(_click_option(entry.item))
    return options


def _click_option(option: GlobalOption) -> click.Option:
    def store(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        ctx.meta.setdefault(VALUES, {})[option.name] = value
        return value

    flag = option.type is bool
    return click.Option([f"--{option.name}"], type=option.type, is_flag=flag,
                        envvar=option.envvar, help=option.help, metavar=option.metavar,
                        default=bool(option.default) if flag else option.default,
                        expose_value=False, callback=store)
