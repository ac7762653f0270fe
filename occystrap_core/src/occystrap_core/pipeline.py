"""Builds sources, filters and outputs from URIs; :mod:`.engine` copies between them."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from . import redact
from .api import Image, ImageFilter, ImageInput, ImageOutput, ImageSet, ImageSource, OutputResult
from .context import Context
from .engine import SELECTION_OPTIONS, Selection, copy
from .plugins import Entry
from .types import ResolvedURI, Role
from .uri import convert_options, split_filter

Source = ImageSource | ImageInput


def resolve(ctx: Context, uri: str, role: Role) -> tuple[ResolvedURI, Entry]:
    """Resolve ``uri`` through the resolution hook and find the plugin for it. A
    source's URI also takes the engine's platform options."""
    redact.remember_uri(uri)  # its password may be quoted by an error from here on
    resolved = ctx.plugins.hook.occystrap_resolve_uri(uri=uri, role=role, ctx=ctx)
    table = ctx.plugins.inputs if role == "input" else ctx.plugins.outputs
    entry = table.get(resolved.scheme)
    specs = tuple(entry.item.options) + (SELECTION_OPTIONS if role == "input" else ())
    options = convert_options(specs, resolved.query, f"{resolved.scheme}://")
    return dataclasses.replace(resolved, options=options), entry


def build_input(ctx: Context, uri: str) -> Any:
    """The source ``uri`` names (an :class:`ImageSource`, an :class:`ImageInput`, or
    an :class:`ImageSet` of many), with the platforms to copy from it."""
    resolved, entry = resolve(ctx, uri, "input")
    source = entry.item.factory(resolved, ctx)
    if not isinstance(source, ImageSet):
        source.selection = Selection.of(ctx.settings, resolved.options)
        source.where = redact.redact_uri(uri)
    return source


def build_output(ctx: Context, uri: str, filters: Sequence[str] = ()) -> ImageOutput:
    """The output for ``uri`` wrapped by ``filters``; the first filter sees layers first."""
    resolved, entry = resolve(ctx, uri, "output")
    output = entry.item.factory(resolved, ctx)
    for spec in reversed(filters):
        name, raw = split_filter(spec)
        fentry = ctx.plugins.filters.get(name)
        options = convert_options(fentry.item.options, raw, f"filter {name!r}")
        output = fentry.item.factory(output, options, ctx)
        if isinstance(output, ImageFilter) and output.cacheable:
            from .layercache import filter_step

            output.step = filter_step(name, options, fentry.record)
    return output


def run(ctx: Context, source: Source, output: ImageOutput, unfiltered_artifacts: bool = False
        ) -> tuple[Image | None, OutputResult]:
    """Copy ``source`` to ``output`` (see :func:`occystrap_core.engine.copy`)."""
    return copy(ctx, source, output, unfiltered_artifacts)
