"""Shell completion of SOURCE and DESTINATION URIs (click does commands and options).

``reg<TAB>`` offers ``registry://`` from the schemes the installed plugins provide
for that role, and after the scheme of a local path (``tar://``, ``oci-layout://``,
``dir://``: ``paths=True`` on the source or destination) the files there. Nothing
here imports an HTTP library: the plugins' entry-point modules are cheap by rule.
"""

from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem

from .errors import OccystrapError
from .types import Role


def sources(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _complete(ctx, "input", incomplete)


def destinations(ctx: click.Context, param: click.Parameter,
                 incomplete: str) -> list[CompletionItem]:
    return _complete(ctx, "output", incomplete)


def _complete(ctx: click.Context, role: Role, incomplete: str) -> list[CompletionItem]:
    from .cli import PLUGINS

    plugins = ctx.find_root().meta.get(PLUGINS)
    if plugins is None:
        return []
    try:
        table = plugins.inputs if role == "input" else plugins.outputs
    except OccystrapError:  # a conflict: the run itself will say so
        return []
    scheme, sep, path = incomplete.partition("://")
    if not sep:
        return [CompletionItem(f"{name}://", help=entry.item.summary) for name, entry in table
                if name.startswith(incomplete.lower())]
    entry = table.entries.get(scheme.lower())
    if entry is None or not entry.item.paths:
        return []
    return [CompletionItem(f"{scheme}://{name}") for name in _paths(path)]


def _paths(prefix: str) -> list[str]:
    """Files and directories (with a trailing /) whose path starts with ``prefix``."""
    directory, start = os.path.split(prefix)
    try:
        names = sorted(os.listdir(os.path.expanduser(directory) or "."))
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(start) and (start.startswith(".") or not name.startswith(".")):
            path = os.path.join(directory, name)
            found.append(path + "/" if os.path.isdir(os.path.expanduser(path)) else path)
    return found


def global_options(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """The group's options a command takes after its name too (see :mod:`.hoisting`),
    but for those it has of its own."""
    if not incomplete.startswith("-"):
        return []
    root = ctx.find_root()
    own = {o for p in ctx.command.get_params(ctx) for o in (*p.opts, *p.secondary_opts)}
    return [CompletionItem(name, help=param.help)
            for param in root.command.get_params(root)
            if isinstance(param, click.Option) and not param.hidden
            for name in (*param.opts, *param.secondary_opts)
            if name.startswith(incomplete) and name not in own]
