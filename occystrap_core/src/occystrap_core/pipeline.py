"""Builds input, filters and output from URIs, and streams an image through them."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

from . import digest as digests
from . import redact
from .api import (MOUNTED, Image, ImageIndex, ImageInput, ImageOutput, Layer, LayerData,
                  ManifestSummary, OutputResult)
from .context import Context
from .errors import UnsupportedError
from .plugins import Entry
from .types import ResolvedURI, Role
from .uri import convert_options, split_filter
from .workers import parallel

log = logging.getLogger("occystrap.pipeline")


def resolve(ctx: Context, uri: str, role: Role) -> tuple[ResolvedURI, Entry]:
    """Resolve ``uri`` through the resolution hook and find the plugin for it."""
    redact.remember_uri(uri)  # its password may be quoted by an error from here on
    resolved = ctx.plugins.hook.occystrap_resolve_uri(uri=uri, role=role, ctx=ctx)
    table = ctx.plugins.inputs if role == "input" else ctx.plugins.outputs
    entry = table.get(resolved.scheme)
    options = convert_options(entry.item.options, resolved.query, f"{resolved.scheme}://")
    return dataclasses.replace(resolved, options=options), entry


def _used(ctx: Context, entry: Entry) -> None:
    if not entry.record.builtin and entry.record not in ctx.used_plugins:
        ctx.used_plugins.append(entry.record)


def build_input(ctx: Context, uri: str) -> ImageInput:
    resolved, entry = resolve(ctx, uri, "input")
    _used(ctx, entry)
    return entry.item.factory(resolved, ctx)


def build_output(ctx: Context, uri: str, filters: Sequence[str] = ()) -> ImageOutput:
    """The output for ``uri`` wrapped by ``filters``; the first filter sees layers first."""
    resolved, entry = resolve(ctx, uri, "output")
    _used(ctx, entry)
    output = entry.item.factory(resolved, ctx)
    for spec in reversed(filters):
        name, raw = split_filter(spec)
        fentry = ctx.plugins.filters.get(name)
        _used(ctx, fentry)
        options = convert_options(fentry.item.options, raw, f"filter {name!r}")
        output = fentry.item.factory(output, options, ctx)
    return output


def run(ctx: Context, source: ImageInput, output: ImageOutput
        ) -> tuple[Image | None, OutputResult]:
    """Stream one image (or the index ``source.index()`` selects) from ``source`` to
    ``output``; on failure, ``output.abort()``.

    Returns the image read, or None when none was: the destination already held it
    (a warm no-op), or an index was copied.
    """
    try:
        index = source.index()
        if index is not None:
            return None, _run_index(ctx, index, output)
        return _run_image(ctx, source, output)
    except BaseException:
        try:
            output.abort()
        except Exception as e:  # the original failure matters more
            log.warning("cleanup after the failure failed too: %s", e,
                        exc_info=log.isEnabledFor(logging.DEBUG))
        raise


def _run_image(ctx: Context, source: ImageInput, output: ImageOutput
               ) -> tuple[Image | None, OutputResult]:
    summary = source.manifest_summary()
    existing = output.existing_manifest(summary) if summary is not None else None
    if summary is not None and existing is not None:
        # Before image(): a warm copy costs neither the config nor any blob request.
        with ctx.progress.image(summary.layers):
            for layer in summary.layers:
                ctx.stats.add("skipped")
                ctx.progress.skipped(layer)
        return None, existing
    image = source.image()
    output.start(image)
    with ctx.progress.image(image.layers):
        _deliver_layers(ctx, source, output, image.layers)
    return image, output.finish(image)


def _run_index(ctx: Context, index: ImageIndex, output: ImageOutput) -> OutputResult:
    """Each entry through the one-image pipeline (a nested index through this one),
    then the index, rewritten if need be."""
    unchanged = index.build()
    existing = output.existing_manifest(
        ManifestSummary(digests.of_bytes(unchanged), index.media_type))
    if existing is not None:
        return existing
    output.start_index(index)
    written: dict[str, dict[str, Any]] = {}
    for entry in index.entries:
        with entry.open() as child:
            nested = child.index()
            result = (_run_index(ctx, nested, output) if nested is not None
                      else _run_image(ctx, child, output)[1])
        if result.manifest_digest != entry.digest:
            if result.manifest_size is None or result.manifest_media_type is None:
                raise UnsupportedError(f"{type(output).__name__} did not say what it wrote "
                                       f"for {entry.digest}; cannot rewrite the index")
            written[entry.digest] = {"mediaType": result.manifest_media_type,
                                     "digest": result.manifest_digest,
                                     "size": result.manifest_size}
    return output.finish_index(index, index.build(written))


def _deliver_layers(ctx: Context, source: ImageInput, output: ImageOutput,
                    layers: Sequence[Layer]) -> None:
    token = ctx.cancel.child()  # a failed layer stops the others at their next chunk

    def deliver(layer: Layer) -> None:
        wanted = output.wants_layer(layer)
        if not wanted:
            ctx.stats.add("mounted" if wanted is MOUNTED else "skipped")
            ctx.progress.skipped(layer)
            return
        with ctx.progress.layer(layer) as advance:
            def on_bytes(n: int) -> None:
                ctx.stats.add("bytes", n)
                advance(n)

            data = LayerData(layer, lambda: source.open_layer(layer), on_bytes=on_bytes,
                             cancel=token)
            outcome = output.add_layer(data)
        ctx.stats.add("mounted" if outcome is MOUNTED else "skipped" if outcome is False
                      else "layers")

    ordered = output.requires_ordered_layers or not source.parallel
    parallel(deliver, layers, 1 if ordered else ctx.settings.parallel, token, name="layer")
