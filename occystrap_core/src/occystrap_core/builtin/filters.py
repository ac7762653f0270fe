"""The core's filters: normalize-timestamps, exclude, search and inspect.

Implementations live in :mod:`occystrap_core.filters` and are imported only
when a filter is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .. import hookimpl
from ..errors import UsageError
from ..types import FilterSpec, OptionSpec

# The last second a config's RFC 3339 dates (and Python's datetime) can say.
MAX_TIMESTAMP = 253402300799

if TYPE_CHECKING:
    from ..api import ImageFilter, ImageOutput
    from ..context import Context


def _normalize(inner: ImageOutput, opts: Mapping[str, Any], ctx: Context) -> ImageFilter:
    from ..filters.normalize import NormalizeTimestamps

    if opts["ts"] is not None and opts["timestamp"] is not None:
        raise UsageError("normalize-timestamps: give ts or timestamp, not both")
    ts = opts["ts"] if opts["ts"] is not None else opts["timestamp"] or 0
    if not 0 <= ts <= MAX_TIMESTAMP:
        raise UsageError(f"normalize-timestamps: ts must be between 0 and {MAX_TIMESTAMP} "
                         f"(9999-12-31T23:59:59Z), got {ts}")
    return NormalizeTimestamps(inner, ctx, ts, opts["config"])


def _exclude(inner: ImageOutput, opts: Mapping[str, Any], ctx: Context) -> ImageFilter:
    from ..filters.exclude import Exclude

    return Exclude(inner, ctx, opts["pattern"])


def _search(inner: ImageOutput, opts: Mapping[str, Any], ctx: Context) -> ImageFilter:
    from ..filters.search import Search

    return Search(inner, opts["pattern"], opts["regex"], opts["script_friendly"])


def _inspect(inner: ImageOutput, opts: Mapping[str, Any], ctx: Context) -> ImageFilter:
    import os

    from ..filters.inspect import Inspect

    # checked now: a history file that cannot be written fails the run before any output
    path = opts["file"]
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory):
        why = "it is a directory" if os.path.isdir(path) else f"no directory {directory}"
        raise UsageError(f"inspect: cannot write {path!r}: {why}")
    return Inspect(inner, path)


@hookimpl
def occystrap_filters() -> Iterator[FilterSpec]:
    yield FilterSpec(
        name="normalize-timestamps", factory=_normalize,
        summary="set every mtime (and config created dates) to one value, for reproducibility",
        options=(OptionSpec("ts", int, "seconds since the epoch (default 0)"),
                 OptionSpec("timestamp", int, "same as ts"),
                 OptionSpec("config", bool, "also set config created and history[].created",
                            default=True)))
    yield FilterSpec(
        name="exclude", factory=_exclude,
        summary="drop paths matching globs from every layer (repeat pattern= for several)",
        options=(OptionSpec("pattern", help="glob; ** spans directories; a directory "
                            "excludes its contents", multiple=True, required=True),))
    yield FilterSpec(
        name="search", factory=_search,
        summary="print layer members whose path matches (passthrough)",
        options=(OptionSpec("pattern", required=True, help="glob, or regex with regex=true"),
                 OptionSpec("regex", bool, default=False),
                 OptionSpec("script_friendly", bool, default=False,
                            help="print NAME:TAG:LAYER:PATH lines")))
    yield FilterSpec(
        name="inspect", factory=_inspect,
        summary="append the layer history as a JSON line to a file (passthrough)",
        options=(OptionSpec("file", required=True, help="file to append to"),))
