"""Global options typed after the command: ``occystrap process --insecure SRC DEST``.

skopeo and crane users put every option after the command. Before click parses the
command line, the group's options (the core's and the plugins') found after the
command name are moved in front of it, unless that command has an option of the same
name itself (``info -O json`` stays ``info``'s). An option's value is never taken for
an option (``--username --insecure`` gives the user name ``--insecure``), ``--``
ends the moving, and nested groups are followed (``cache info --layer-cache DIR``).
Anything not understood is left where it is, for click to report.
"""

from __future__ import annotations

import click

Options = dict[str, bool]  # option string -> whether it takes a value


def hoist(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    """``args`` with the global options that follow the command moved before it."""
    options = _options(group, ctx)
    i = 0
    while i < len(args) and _is_option(args[i]):
        name, inline = _name(args[i])
        if args[i] == "--" or name not in options:
            return args  # nothing is moved past these; click reports an unknown option
        i += 2 if options[name] and not inline else 1
    if i >= len(args):
        return args
    moved: list[str] = []
    rest = _scan(group, ctx, args[i:], options, moved)
    return args[:i] + moved + rest


def _scan(group: click.Group, ctx: click.Context, tokens: list[str], options: Options,
          moved: list[str]) -> list[str]:
    """``tokens`` (a command name and its arguments) without the global options,
    which are appended to ``moved``."""
    command = group.get_command(ctx, tokens[0])
    if command is None:
        return tokens
    sub = click.Context(command, info_name=tokens[0], parent=ctx)
    own = _options(command, sub)
    kept = tokens[:1]
    j = 1
    while j < len(tokens):
        token = tokens[j]
        if token == "--":
            return kept + tokens[j:]
        if not _is_option(token):
            if isinstance(command, click.Group):  # its command: the rest is that one's
                return kept + _scan(command, sub, tokens[j:], options, moved)
            if not sub.allow_interspersed_args:  # the rest is arguments, as typed
                return kept + tokens[j:]
            kept.append(token)
            j += 1
            continue
        name, inline = _name(token)
        if name in own:
            width = 2 if own[name] and not inline else 1
            kept += tokens[j:j + width]
        elif name in options and (options[name] or not inline):  # -vx: not ours to split
            width = 2 if options[name] and not inline else 1
            if j + width <= len(tokens):
                moved += tokens[j:j + width]
            elif not ctx.resilient_parsing:  # moved in front, it would take the command name
                raise click.BadOptionUsage(name, f"Option '{name}' requires an argument.", sub)
            else:  # shell completion: its value is being typed
                kept.append(token)
        else:
            width = 1
            kept.append(token)
        j += width
    return kept


def _options(command: click.Command, ctx: click.Context) -> Options:
    table: Options = {}
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                table[opt] = not (param.is_flag or param.count)
    return table


def _is_option(token: str) -> bool:
    return token.startswith("-") and token != "-"


def _name(token: str) -> tuple[str, bool]:
    """The option a token names, and whether it carries its value (``--a=b``, ``-j4``)."""
    if token.startswith("--"):
        name, eq, _ = token.partition("=")
        return name, bool(eq)
    return token[:2], len(token) > 2
