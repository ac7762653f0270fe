"""The ``mounts://PATH`` output: one overlayfs lower directory per layer.

Each layer is extracted on its own into ``PATH/<diff_id hex>/`` (shared between
images, skipped when present), with whiteouts as overlayfs wants them: a 0/0
character device for ``.wh.NAME`` and ``trusted.overlay.opaque=y`` on a directory
holding ``.wh..wh..opq``. Both need root. ``PATH/<config hex>.json`` holds the
config and ``PATH/manifest.json`` the layer directories, lowest first, and the
``lowerdir=`` option to mount them with (each directory escaped; reported in the
result, never run).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import threading

from .. import streams
from ..api import Image, ImageOutput, Layer, LayerData, OutputResult
from ..context import Context
from ..errors import CorruptImageError, UnsupportedError
from ..rootfs import TreeWriter
from ..tempfiles import TempDir, sweep, write_atomic
from ..types import ResolvedURI
from .common import PRIVATE, claim_dir, hash_file, hex_name, local_path


def overlay_escaped(path: str) -> str:
    """``path`` as one entry of an overlayfs ``lowerdir=`` option: ``:`` separates the
    layers and ``,`` the options, so both (and ``\\``) are escaped with ``\\``."""
    return re.sub(r"([\\:,])", r"\\\1", path)


class MountsOutput(ImageOutput):
    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.path = local_path(uri)
        self.ctx = ctx
        self._lock = threading.Lock()
        self._created = False
        self._new: list[str] = []
        self._temps: list[TempDir] = []
        self._written: dict[int, str] = {}
        self._trees: dict[str, TreeWriter] = {}
        self._diff_ids: list[str] = []
        self._config: str | None = None

    def start(self, image: Image) -> None:
        image.refuse_non_tar("mounts://")
        if os.geteuid() != 0:
            raise UnsupportedError("mounts:// needs root: whiteouts are character devices and "
                                   "opaque directories trusted.* xattrs")
        self._created = claim_dir(
            self.path, PRIVATE, "mounts://", lambda name: name.startswith(".tmp-"),
            lambda doc: isinstance(doc, dict) and "layers" in doc and "lowerdir" in doc)
        sweep(self.path, ".tmp-")  # what a killed run left
        self._diff_ids = image.diff_ids

    def wants_layer(self, layer: Layer) -> bool:
        diff_id = layer.diff_id or (self._diff_ids[layer.index]
                                    if layer.index < len(self._diff_ids) else None)
        if diff_id and diff_id.startswith("sha256:") and \
                os.path.isdir(os.path.join(self.path, hex_name(diff_id, "diff_id"))):
            with self._lock:
                self._written[layer.index] = diff_id
            return False
        return True

    def add_layer(self, data: LayerData) -> None:
        work = TempDir(self.path, ".tmp-layer-")
        with self._lock:
            self._temps.append(work)
        temp = os.path.join(work.path, "layer")
        os.mkdir(temp, 0o755)
        tree = TreeWriter(temp, overlay=True)
        with data.open_tar() as tar:
            hashing = streams.HashingReader(tar)
            tree.apply(streams.buffered(hashing), f"layer {data.layer.index}")
        tree.close()
        diff_id = hashing.digest
        final = os.path.join(self.path, hex_name(diff_id, "diff_id"))
        with self._lock:
            if not os.path.isdir(final):  # else the same layer twice in one image
                os.rename(temp, final)
                self._new.append(final)
                tree.root = final
                self._trees[diff_id] = tree
            work.remove()
            self._temps.remove(work)
            self._written[data.layer.index] = diff_id

    def finish(self, image: Image) -> OutputResult:
        written = [self._written.get(layer.index) for layer in image.layers]
        if written != image.diff_ids:
            raise CorruptImageError(f"the config's diff_ids {image.diff_ids} do not match "
                                    f"the layers written {written}")
        self._config = f"{hex_name(image.config_digest, 'config digest')}.json"
        write_atomic(os.path.join(self.path, self._config), image.config)
        dirs = [os.path.join(self.path, hex_name(d, "diff_id")) for d in image.diff_ids]
        # overlayfs lists the top layer first
        lowerdir = ":".join(overlay_escaped(d) for d in reversed(dirs))
        write_atomic(os.path.join(self.path, "manifest.json"), json.dumps(
            {"image": image.reference, "config": self._config, "layers": dirs,
             "lowerdir": lowerdir}, indent=2).encode())
        return OutputResult(location=self.path, details={
            "mount": f"mount -t overlay overlay -o {shlex.quote('lowerdir=' + lowerdir)} TARGET"})

    def verify(self) -> list[str]:
        """Re-hash the config and re-read every layer directory this run extracted."""
        if self._config is None:
            return ["nothing was written"]
        problems = []
        if hash_file(os.path.join(self.path, self._config)) != \
                "sha256:" + self._config.removesuffix(".json"):
            problems.append(f"{self._config}: content does not match its name")
        for diff_id, tree in self._trees.items():
            problems += [f"layer {diff_id}: {p}" for p in tree.verify()]
        return problems

    def abort(self) -> None:
        for temp in self._temps:
            temp.remove()
        for path in self._new:
            shutil.rmtree(path, ignore_errors=True)
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
