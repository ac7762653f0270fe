"""occystrap 0.4.17's deprecated commands, kept as hidden aliases.

Each takes 0.4.17's arguments and options, prints on stderr the command line that
does the same today (``Note: 'fetch-to-tarfile' is deprecated; this runs:
occystrap process ...``), and runs it: the ``process`` or ``search`` command itself
is invoked, so an alias can never behave differently from what it prints. The
global options stay where they were typed, before the command. docs/migrating.md
maps them all.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import click

from . import redact


def _note_and_run(ctx: click.Context, name: str, command: str, args: list[str],
                  flags: list[str]) -> None:
    """Print the equivalent of 0.4.17's ``name`` and run it: ``occystrap COMMAND
    ARGS... FLAGS...`` (positional arguments, then options)."""
    shown = " ".join(shlex.quote(redact.redact_uri(a) if "://" in a else a)
                     for a in [command, *args, *flags])
    click.echo(f"Note: '{name}' is deprecated; this runs: occystrap {shown}", err=True)
    group = ctx.find_root().command
    assert isinstance(group, click.Group)
    target = group.get_command(ctx, command)
    assert target is not None, f"the {command} command is the core's own"
    # the command parses what it would be given on the command line: the same defaults,
    # the same checks, and nothing to keep in step here
    sub = target.make_context(command, [*args, *flags], parent=ctx.parent)
    with sub:
        target.invoke(sub)


def _with_query(uri: str, **options: Any) -> str:
    given = {k: "true" if v is True else str(v) for k, v in options.items()
             if v not in (None, False)}
    return uri + ("?" + urlencode(given, safe="/:@") if given else "")


def _registry(registry: str, image: str, tag: str) -> str:
    return f"registry://{registry}/{image}:{tag}"


def _docker(image: str, tag: str, socket: str | None) -> str:
    return _with_query(f"docker://{image}:{tag}", socket=socket)


def _path(scheme: str, path: str, **options: Any) -> str:
    return _with_query(f"{scheme}://{quote(path, safe='/~:@')}", **options)


def _normalize(normalize: bool, timestamp: int) -> list[str]:
    if not normalize:
        return []
    return ["-f", "normalize-timestamps" + (f":ts={timestamp}" if timestamp else "")]


def _search(regex: bool, script_friendly: bool) -> list[str]:
    return (["--regex"] if regex else []) + (["--script-friendly"] if script_friendly else [])


def _alias(name: str, *params: Callable[[Any], Any]) -> Callable[[Callable[..., Any]],
                                                                  click.Command]:
    """A hidden command ``name`` whose function returns (command, args, flags)."""

    def build(plan: Callable[..., tuple[str, list[str], list[str]]]) -> click.Command:
        def callback(**kwargs: Any) -> None:
            ctx = click.get_current_context()
            _note_and_run(ctx, name, *plan(**kwargs))

        command: Any = callback
        for param in reversed(params):
            command = param(command)
        return click.command(name, hidden=True, help=f"Deprecated (0.4.17): {plan.__doc__}",
                             context_settings={"help_option_names": ["-h", "--help"]})(command)

    return build


_UNIQUE = click.option("--use-unique-names", is_flag=True)
_EXPAND = click.option("--expand", is_flag=True)
_SOCKET = click.option("--socket", default=None)
_NORMALIZE = click.option("--normalize-timestamps", is_flag=True)
_TIMESTAMP = click.option("--timestamp", type=int, default=0)
_REGEX = click.option("--regex", is_flag=True)
_SCRIPT = click.option("--script-friendly", is_flag=True)
_ARGS = {name: click.argument(name) for name in
         ("registry", "image", "tag", "path", "tarfile", "pattern")}
_PULL = (_ARGS["registry"], _ARGS["image"], _ARGS["tag"])


@_alias("fetch-to-extracted", *_PULL, _ARGS["path"], _UNIQUE, _EXPAND)
def fetch_to_extracted(registry: str, image: str, tag: str, path: str,
                       use_unique_names: bool, expand: bool) -> tuple[str, list[str], list[str]]:
    """process registry://REGISTRY/IMAGE:TAG dir://PATH"""
    return "process", [_registry(registry, image, tag),
                       _path("dir", path, unique_names=use_unique_names, expand=expand)], []


@_alias("fetch-to-oci", *_PULL, _ARGS["path"])
def fetch_to_oci(registry: str, image: str, tag: str, path: str
                 ) -> tuple[str, list[str], list[str]]:
    """process registry://REGISTRY/IMAGE:TAG oci-bundle://PATH"""
    return "process", [_registry(registry, image, tag), _path("oci-bundle", path)], []


@_alias("fetch-to-tarfile", *_PULL, _ARGS["tarfile"], _NORMALIZE, _TIMESTAMP)
def fetch_to_tarfile(registry: str, image: str, tag: str, tarfile: str,
                     normalize_timestamps: bool, timestamp: int
                     ) -> tuple[str, list[str], list[str]]:
    """process registry://REGISTRY/IMAGE:TAG tar://TARFILE"""
    return "process", [_registry(registry, image, tag), _path("tar", tarfile)], \
        _normalize(normalize_timestamps, timestamp)


@_alias("fetch-to-mounts", *_PULL, _ARGS["path"])
def fetch_to_mounts(registry: str, image: str, tag: str, path: str
                    ) -> tuple[str, list[str], list[str]]:
    """process registry://REGISTRY/IMAGE:TAG mounts://PATH"""
    return "process", [_registry(registry, image, tag), _path("mounts", path)], []


@_alias("recreate-image", _ARGS["path"], _ARGS["image"], _ARGS["tag"], _ARGS["tarfile"],
        _NORMALIZE, _TIMESTAMP)
def recreate_image(path: str, image: str, tag: str, tarfile: str, normalize_timestamps: bool,
                   timestamp: int) -> tuple[str, list[str], list[str]]:
    """process dir://PATH?image=IMAGE:TAG tar://TARFILE"""
    return "process", [_path("dir", path, image=f"{image}:{tag}"), _path("tar", tarfile)], \
        _normalize(normalize_timestamps, timestamp)


@_alias("tarfile-to-extracted", _ARGS["tarfile"], _ARGS["path"], _UNIQUE, _EXPAND)
def tarfile_to_extracted(tarfile: str, path: str, use_unique_names: bool, expand: bool
                         ) -> tuple[str, list[str], list[str]]:
    """process tar://TARFILE dir://PATH"""
    return "process", [_path("tar", tarfile),
                       _path("dir", path, unique_names=use_unique_names, expand=expand)], []


@_alias("docker-to-tarfile", _ARGS["image"], _ARGS["tag"], _ARGS["tarfile"], _SOCKET,
        _NORMALIZE, _TIMESTAMP)
def docker_to_tarfile(image: str, tag: str, tarfile: str, socket: str | None,
                      normalize_timestamps: bool, timestamp: int
                      ) -> tuple[str, list[str], list[str]]:
    """process docker://IMAGE:TAG tar://TARFILE"""
    return "process", [_docker(image, tag, socket), _path("tar", tarfile)], \
        _normalize(normalize_timestamps, timestamp)


@_alias("docker-to-extracted", _ARGS["image"], _ARGS["tag"], _ARGS["path"], _SOCKET, _UNIQUE,
        _EXPAND)
def docker_to_extracted(image: str, tag: str, path: str, socket: str | None,
                        use_unique_names: bool, expand: bool
                        ) -> tuple[str, list[str], list[str]]:
    """process docker://IMAGE:TAG dir://PATH"""
    return "process", [_docker(image, tag, socket),
                       _path("dir", path, unique_names=use_unique_names, expand=expand)], []


@_alias("docker-to-oci", _ARGS["image"], _ARGS["tag"], _ARGS["path"], _SOCKET)
def docker_to_oci(image: str, tag: str, path: str, socket: str | None
                  ) -> tuple[str, list[str], list[str]]:
    """process docker://IMAGE:TAG oci-bundle://PATH"""
    return "process", [_docker(image, tag, socket), _path("oci-bundle", path)], []


@_alias("search-layers", *_PULL, _ARGS["pattern"], _REGEX, _SCRIPT)
def search_layers(registry: str, image: str, tag: str, pattern: str, regex: bool,
                  script_friendly: bool) -> tuple[str, list[str], list[str]]:
    """search registry://REGISTRY/IMAGE:TAG PATTERN"""
    return "search", [_registry(registry, image, tag), pattern], \
        _search(regex, script_friendly)


@_alias("search-layers-docker", _ARGS["image"], _ARGS["tag"], _ARGS["pattern"], _SOCKET,
        _REGEX, _SCRIPT)
def search_layers_docker(image: str, tag: str, pattern: str, socket: str | None, regex: bool,
                         script_friendly: bool) -> tuple[str, list[str], list[str]]:
    """search docker://IMAGE:TAG PATTERN"""
    return "search", [_docker(image, tag, socket), pattern], _search(regex, script_friendly)


@_alias("search-layers-tarfile", _ARGS["tarfile"], _ARGS["pattern"], _REGEX, _SCRIPT)
def search_layers_tarfile(tarfile: str, pattern: str, regex: bool, script_friendly: bool
                          ) -> tuple[str, list[str], list[str]]:
    """search tar://TARFILE PATTERN"""
    return "search", [_path("tar", tarfile), pattern], _search(regex, script_friendly)
