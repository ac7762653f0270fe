"""The base of filters that change layer contents.

Each layer is read as a tar stream and written, member by member, to a new
uncompressed tar in the run's temp directory while it is hashed: that hash is
the new diff_id. Nothing is held whole in memory. Members keep their PAX records
(xattrs, capabilities, ACLs), hardlinks and device nodes unless the filter
changes them. At :meth:`finish` the config's ``rootfs.diff_ids`` (and whatever
:meth:`LayerRewriteFilter.edit_config` changes) are rewritten, and the inner
output gets an evolved image, so it builds a new manifest.

With a layer cache, a layer whose result is known (its diff_id through this
filter's ``step``) is not read at all when the output behind already holds that
result (:meth:`~occystrap_core.api.ImageOutput.probe_layer`): the known result
stands in for it, in the config's diff_ids too. What a rewrite gives is recorded
once the layer went through. The rewrite must then be deterministic: a subclass
whose bytes depend on anything but the input and options sets ``cacheable = False``.
(:meth:`LayerRewriteFilter.edit_annotations` may change the manifest's annotations.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from .. import mediatypes as mt
from ..api import Image, ImageFilter, ImageOutput, Layer, LayerData, Mounted, OutputResult
from ..context import Context
from ..errors import CorruptImageError

if TYPE_CHECKING:
    import tarfile

# tarfile (and layertar, built on it) is imported when a layer is rewritten: a warm
# cached copy through a filter reads no layer, and its start-up skips that module.
Emitted = Iterable[tuple["tarfile.TarInfo", IO[bytes] | None]]


class MemberRewriter:
    """Rewrites the members of one layer. The default copies every member."""

    def rewrite(self, member: tarfile.TarInfo, data: IO[bytes] | None) -> Emitted:
        """The members to write for ``member`` (none to drop it); ``data`` is its content."""
        yield member, data

    def close(self) -> None:
        """Called once the layer is done, even on failure."""


class _HashingWriter:
    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class LayerRewriteFilter(ImageFilter):
    """A filter that rewrites every layer; subclasses provide :meth:`member_rewriter`."""

    name = "layer rewriting"  # the filter's name, in messages
    cacheable = True

    def __init__(self, inner: ImageOutput, ctx: Context):
        super().__init__(inner)
        self.ctx = ctx
        self._lock = threading.Lock()
        self._layers: dict[int, Layer] = {}
        self._family = "oci"

    def member_rewriter(self, layer: Layer) -> MemberRewriter:
        """A fresh rewriter for one layer (layers may be rewritten in parallel)."""
        return MemberRewriter()

    def edit_config(self, config: dict[str, Any]) -> None:
        """Change the config (a parsed copy) beyond the diff_ids, in place."""

    def edit_annotations(self, annotations: dict[str, str]) -> None:
        """Change the manifest's annotations (a copy; the rebuilt manifest has them)."""

    def start(self, image: Image) -> None:
        image.refuse_non_tar(f"the {self.name} filter")
        self._family = image.family
        # the config changes too: the output must not take this one for the final one
        self.inner.start(dataclasses.replace(image, manifest=None))

    def wants_layer(self, layer: Layer) -> bool | Mounted:
        placed = self.probe_layer(layer)
        if not placed:
            self.ctx.stats.add("cache_hits")
        return placed  # else every layer is rewritten, so it must be read

    def probe_layer(self, layer: Layer) -> bool | Mounted:
        """Without reading ``layer``: falsy when its cached result is in the output."""
        cache = self.ctx.layer_cache
        if cache is None or self.step is None or layer.diff_id is None:
            return True
        known = cache.transform(layer.diff_id, self.step)
        if known is None:
            return True
        digest, size = known
        result = Layer(index=layer.index, media_type=mt.layer_type(self._family, "none"),
                       digest=digest, size=size, diff_id=digest, uncompressed_size=size)
        placed = self.inner.probe_layer(result)
        if not placed:
            with self._lock:
                self._layers[layer.index] = result
        return placed

    def add_layer(self, data: LayerData) -> None:
        fd, path = tempfile.mkstemp(prefix="rewrite-", suffix=".tar", dir=self.ctx.temp_dir)
        try:
            with os.fdopen(fd, "wb") as raw:
                out = _HashingWriter(raw)
                with data.open_tar() as src:
                    self._rewrite(src, out, data.layer)
            layer = Layer(index=data.layer.index, media_type=mt.layer_type(self._family, "none"),
                          digest=out.digest, size=out.size, diff_id=out.digest,
                          uncompressed_size=out.size)
            with self._lock:
                self._layers[layer.index] = layer
            if self.inner.wants_layer(layer):
                # the opener returns the file, which LayerData uses as a context manager
                self.inner.add_layer(LayerData(layer, lambda: open(path, "rb"),  # noqa: SIM115
                                               cancel=self.ctx.cancel))
            self._remember(data, layer)
        finally:
            os.unlink(path)

    def _remember(self, data: LayerData, result: Layer) -> None:
        """Record what this layer became: its tar (as hashed while read) through this step."""
        cache = self.ctx.layer_cache
        if cache is not None and self.step is not None and data.tar_digest is not None:
            assert result.digest is not None and result.size is not None
            cache.record_transform(data.tar_digest, self.step, result.digest, result.size)

    def _rewrite(self, src: BinaryIO, dst: _HashingWriter, layer: Layer) -> None:
        import tarfile

        from ..layertar import link_problem, members, prepare_copy, read_stream, write_stream

        rewriter = self.member_rewriter(layer)
        writer = None
        try:
            reader = read_stream(src)
            writer = write_stream(dst)
            for member in members(reader, f"layer {layer.index}"):  # read to its end
                problem = "\0" in member.name and "a NUL byte" or link_problem(member)
                if problem:  # the tar writer would cut the name there, changing the image
                    raise CorruptImageError(f"layer {layer.index}: member {member.name!r} "
                                            f"has {problem}; refused")
                original_mtime = member.mtime
                content = reader.extractfile(member) if member.isreg() else None
                try:
                    for out, out_data in rewriter.rewrite(member, content):
                        prepare_copy(out, original_mtime)
                        writer.addfile(out, out_data if out.isreg() else None)
                except (tarfile.TarError, EOFError, ValueError, OverflowError) as e:
                    raise CorruptImageError(f"layer {layer.index}: invalid tar at "
                                            f"{member.name!r}: {e}") from None
            writer.close()
        finally:
            rewriter.close()
            if writer is not None:
                # After a failure, close it while the (discarded) file is still open:
                # else tarfile does, from a finalizer, to a closed file, with a traceback.
                # (Closing twice does nothing.)
                with contextlib.suppress(OSError):
                    writer.close()

    def finish(self, image: Image) -> OutputResult:
        layers = []
        for layer in image.layers:
            if layer.index not in self._layers:
                raise CorruptImageError(f"layer {layer.index} was never rewritten")
            layers.append(self._layers[layer.index])
        config = json.loads(image.config)
        rootfs = config.setdefault("rootfs", {"type": "layers"})
        rootfs["diff_ids"] = [l.diff_id for l in layers]
        self.edit_config(config)
        # unchanged content keeps the source's exact config bytes (and so its digest)
        data = image.config if config == image.config_json else \
            json.dumps(config, separators=(",", ":")).encode()
        extras = dict(image.extras)
        if isinstance(extras.get("annotations"), dict):
            extras["annotations"] = dict(extras["annotations"])
            self.edit_annotations(extras["annotations"])
        return self.inner.finish(image.evolve(config=data, layers=tuple(layers), extras=extras))
