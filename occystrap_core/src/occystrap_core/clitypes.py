"""Click parameter types for numbers, media types and paths, shared by the core's options
and plugins' commands."""

from __future__ import annotations

import math
from typing import Any

import click

#: The longest timeout, in seconds (11 days): a socket's timeout overflows long before
#: ``inf``, and ``1e400`` reads as ``inf``.
MAX_SECONDS = 1e6


class Finite(click.FloatRange):
    """A :class:`click.FloatRange` that refuses ``nan``, which fails none of the range's
    comparisons and so passes every bound, and ``inf`` where no bound stops it."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def seconds(*, above_zero: bool = False) -> Finite:
    """A number of seconds: from 0 (or above it) up to :data:`MAX_SECONDS`."""
    return Finite(min=0, max=MAX_SECONDS, min_open=above_zero)


class MediaType(click.ParamType):
    """A media type, TYPE/SUBTYPE: an option filtering by one that is not (``sbom``, an
    empty string) would match nothing, or everything, without a word."""

    name = "media type"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        from .mediatypes import MEDIA_TYPE

        if not MEDIA_TYPE.fullmatch(value):
            self.fail(f"{value!r} is not a media type (TYPE/SUBTYPE, as in "
                      f"application/vnd.example+json).", param, ctx)
        return value


class NamedPath(click.Path):
    """A :class:`click.Path` that refuses ``""``: an empty name names no file, and read
    as the option left out it would quietly mean its default (no cache, the default
    auth file). An empty environment variable stays unset: click never reads one."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        if value == "":
            what = ("file" if not self.dir_okay else "directory" if not self.file_okay
                    else "file or directory")
            self.fail(f"no {what} named; leave the option out instead.", param, ctx)
        return super().convert(value, param, ctx)
