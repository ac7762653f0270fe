"""Builds input, filters and output from URIs, and streams an image through them."""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Sequence

from .api import Image, ImageInput, ImageOutput, Layer, LayerData, OutputResult
from .context import Context
from .errors import OccystrapError
from .plugins import Entry
from .types import ResolvedURI, Role
from .uri import convert_options, split_filter

log = logging.getLogger("occystrap.pipeline")


def resolve(ctx: Context, uri: str, role: Role) -> tuple[ResolvedURI, Entry]:
    """Resolve ``uri`` through the resolution hook and find the plugin for it."""
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


def run(ctx: Context, source: ImageInput, output: ImageOutput) -> tuple[Image, OutputResult]:
    """Stream one image from ``source`` to ``output``; on failure, ``output.abort()``."""
    try:
        image = source.image()
        output.start(image)
        _deliver_layers(ctx, source, output, image.layers)
        result = output.finish(image)
    except BaseException:
        try:
            output.abort()
        except Exception:  # the original failure matters more
            log.exception("cleanup after a failed run failed too")
        raise
    return image, result


def _deliver_layers(ctx: Context, source: ImageInput, output: ImageOutput,
                    layers: Sequence[Layer]) -> None:
    def deliver(layer: Layer) -> None:
        if not output.wants_layer(layer):
            ctx.stats.add("skipped")
            return
        data = LayerData(layer, lambda: source.open_layer(layer),
                         on_bytes=lambda n: ctx.stats.add("bytes", n))
        output.add_layer(data)
        ctx.stats.add("layers")

    workers = ctx.settings.parallel
    if output.requires_ordered_layers or not source.parallel or workers <= 1 or len(layers) <= 1:
        for layer in layers:
            deliver(layer)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer") as pool:
        futures = [pool.submit(deliver, layer) for layer in layers]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        errors = [f.exception() for f in done if f.exception() is not None]
        if errors:
            wait(pending)  # let running workers stop before the output is aborted
            # prefer an expected error over a knock-on failure in another thread
            errors.sort(key=lambda e: not isinstance(e, OccystrapError))
            raise errors[0]
