"""The ``dir://PATH`` output: a directory of layers shared between images.

Layout::

    PATH/<diff_id hex>/layer.tar     uncompressed layers, one copy per content
    PATH/<config hex>.json           the config, byte for byte (its name is its digest)
    PATH/manifest.json               docker-save style [{Config, RepoTags, Layers}]

With ``unique_names=true`` each image gets ``manifest-<name with / as _>-<tag>.json``
instead, and ``catalog.json`` maps ``{name: {tag: manifest file}}`` (updated under
a file lock, so concurrent runs do not lose entries). With ``expand=true`` the
merged root filesystem is extracted to ``rootfs/`` (``rootfs-<name>-<tag>/`` with
unique names), applying whiteouts. A layer already present is not read again.
Everything is written under a temp name and renamed; :meth:`DirOutput.verify`
re-hashes every file it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
from typing import Any

from .. import streams
from ..api import Image, ImageOutput, Layer, LayerData, OutputResult
from ..context import Context
from ..errors import CorruptImageError
from ..rootfs import TreeWriter
from ..tempfiles import AtomicFile, TempDir, sweep
from ..types import ResolvedURI
from .common import PRIVATE, claim_dir, copy_hashing, hash_file, hex_name, local_path


def _safe(text: str) -> str:
    return text.replace("/", "_").replace(":", "_")


def _suffix(name: str, tag: str, catalog: dict[str, dict[str, str]]) -> str:
    """``-<name>-<tag>``, which names the image's manifest and rootfs with unique names.
    Flattened, names can meet (``app-dev:1`` and ``app:dev-1``, ``a_b/c`` and ``a/b_c``):
    a name the catalog gives another image gets a hash of the reference appended."""
    plain = f"-{_safe(name)}-{_safe(tag)}"
    owners = {file: (n, t) for n, tags in catalog.items() for t, file in tags.items()}
    if owners.get(f"manifest{plain}.json", (name, tag)) == (name, tag):
        return plain
    return f"{plain}-{hashlib.sha256(f'{name}:{tag}'.encode()).hexdigest()[:12]}"


def _owns(name: str) -> bool:
    """Names besides the digest-named ones that a dir:// output writes (or leaves, killed)."""
    return name in ("catalog.json", ".catalog.lock", "rootfs") or \
        name.startswith(("rootfs-", ".tmp-", ".old-")) or \
        (name.startswith("manifest-") and name.endswith(".json"))


def _wrote_manifest(doc: Any) -> bool:
    return isinstance(doc, list) and all(
        isinstance(e, dict) and "Config" in e and "Layers" in e for e in doc)


class DirOutput(ImageOutput):
    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.path = local_path(uri)
        self.ctx = ctx
        self.unique = bool(uri.options.get("unique_names"))
        self.expand = bool(uri.options.get("expand"))
        self._lock = threading.Lock()
        self._created = False
        self._new: list[str] = []  # paths this run added, removed by abort()
        self._written: dict[int, str] = {}  # layer index -> diff_id
        self._diff_ids: list[str] = []
        self._manifest_file: str | None = None
        self._tree: TreeWriter | None = None
        self._temps: list[TempDir] = []

    def start(self, image: Image) -> None:
        image.refuse_non_tar("dir://")
        self._created = claim_dir(self.path, PRIVATE if self.expand else 0o777, "dir://",
                                  _owns, _wrote_manifest)
        for prefix in (".tmp-", ".old-"):  # what a killed run left
            sweep(self.path, prefix)
        self._diff_ids = image.diff_ids

    def _layer_file(self, diff_id: str) -> str:
        return f"{hex_name(diff_id, 'diff_id')}/layer.tar"

    def wants_layer(self, layer: Layer) -> bool:
        diff_id = layer.diff_id or (self._diff_ids[layer.index]
                                    if layer.index < len(self._diff_ids) else None)
        if diff_id and diff_id.startswith("sha256:") and \
                os.path.isfile(os.path.join(self.path, self._layer_file(diff_id))):
            with self._lock:
                self._written[layer.index] = diff_id
            return False
        return True

    def add_layer(self, data: LayerData) -> None:
        with AtomicFile(self.path, ".tmp-layer-") as temp, data.open_tar() as tar:
            diff_id, _ = copy_hashing(tar, temp.file)
            final = os.path.join(self.path, self._layer_file(diff_id))
            with self._lock:
                if not os.path.isdir(os.path.dirname(final)):
                    os.mkdir(os.path.dirname(final))
                    self._new.append(os.path.dirname(final))
                temp.commit(final)
                self._written[data.layer.index] = diff_id

    def finish(self, image: Image) -> OutputResult:
        written = []
        for layer in image.layers:
            if layer.index not in self._written:
                raise CorruptImageError(f"layer {layer.index} was never written")
            written.append(self._written[layer.index])
        if written != image.diff_ids:
            raise CorruptImageError(f"the config's diff_ids {image.diff_ids} do not match "
                                    f"the layers written {written}")
        config_name = f"{hex_name(image.config_digest, 'config digest')}.json"
        entry: dict[str, Any] = {"Config": config_name,
                                 "RepoTags": [image.reference] if image.reference else [],
                                 "Layers": [self._layer_file(d) for d in written]}
        name, tag = image.name or "unnamed", image.tag or "latest"
        suffix = ""
        if self.unique:
            entry["ImageName"] = image.reference
            self._read_catalog()  # a damaged catalog fails the run before anything changed
        # What the directory held is replaced only once everything new is written in
        # full: a run that fails (a full disk, a bad layer) leaves it as it was.
        staged = self._extract(written, "rootfs") if self.expand else None
        with contextlib.ExitStack() as stack:
            temps = [(config_name, self._stage(stack, image.config))]
            manifest = self._stage(stack, json.dumps([entry], indent=2).encode())
            if self.unique:  # other runs may add images to this directory: one at a time
                lock = stack.enter_context(open(os.path.join(self.path, ".catalog.lock"), "a"))
                fcntl.flock(lock, fcntl.LOCK_EX)
                catalog = self._read_catalog()
                suffix = _suffix(name, tag, catalog)
                catalog.setdefault(name, {})[tag] = f"manifest{suffix}.json"
                temps.append(("catalog.json", self._stage(stack, json.dumps(
                    catalog, indent=2, sort_keys=True).encode())))
            manifest_file = f"manifest{suffix}.json"
            temps.insert(1, (manifest_file, manifest))
            for file, temp in temps:
                final = os.path.join(self.path, file)
                if not os.path.exists(final):
                    self._new.append(final)
                temp.commit(final)
        if staged is not None:
            self._replace(staged, f"rootfs{suffix}")
        self._manifest_file = manifest_file
        return OutputResult(location=self.path, details={"manifest": manifest_file})

    def _stage(self, stack: contextlib.ExitStack, data: bytes) -> AtomicFile:
        temp = stack.enter_context(AtomicFile(self.path))
        temp.file.write(data)
        temp.file.flush()  # a full disk fails here, before anything is renamed
        return temp

    def _read_catalog(self) -> dict[str, dict[str, str]]:
        path = os.path.join(self.path, "catalog.json")
        if not os.path.isfile(path):
            return {}
        with open(path, "rb") as f:
            try:
                catalog = json.load(f)
            except ValueError:
                raise CorruptImageError(f"{path} is not valid JSON") from None
        if not (isinstance(catalog, dict) and all(isinstance(v, dict) for v in catalog.values())):
            raise CorruptImageError(f"{path} is not a catalog ({{name: {{tag: file}}}})")
        return catalog

    def _extract(self, diff_ids: list[str], name: str) -> tuple[TempDir, TreeWriter]:
        """The merged root filesystem, built in a temporary directory."""
        work = TempDir(self.path, f".tmp-{name}-")
        self._temps.append(work)
        root = os.path.join(work.path, name)
        os.mkdir(root, 0o755)
        tree = TreeWriter(root)
        for i, diff_id in enumerate(diff_ids):
            with open(os.path.join(self.path, self._layer_file(diff_id)), "rb") as f:
                # re-hashed while extracting: a shared layer from an earlier run is checked too
                checked = streams.HashingReader(f, diff_id, what=f"stored layer {i}")
                tree.apply(streams.buffered(checked), f"layer {i}")
        tree.close()
        return work, tree

    def _replace(self, staged: tuple[TempDir, TreeWriter], name: str) -> None:
        """Rename the built root filesystem into place, instead of any earlier one."""
        work, tree = staged
        final = os.path.join(self.path, name)
        if os.path.lexists(final):
            old = TempDir(self.path, f".old-{name}-")
            os.rename(final, os.path.join(old.path, name))
            os.rename(tree.root, final)
            old.remove()
        else:
            self._new.append(final)
            os.rename(tree.root, final)
        work.remove()
        self._temps.remove(work)
        tree.root = final
        self._tree = tree

    def verify(self) -> list[str]:
        """Re-hash the config and every layer named by the manifest just written."""
        if self._manifest_file is None:
            return ["nothing was written"]
        problems = []
        with open(os.path.join(self.path, self._manifest_file), "rb") as f:
            entry = json.load(f)[0]
        config_path = os.path.join(self.path, entry["Config"])
        if hash_file(config_path) != "sha256:" + entry["Config"].removesuffix(".json"):
            problems.append(f"{entry['Config']}: content does not match its name")
        with open(config_path, "rb") as f:
            diff_ids = json.load(f).get("rootfs", {}).get("diff_ids", [])
        for i, name in enumerate(entry["Layers"]):
            actual = hash_file(os.path.join(self.path, name))
            if actual != "sha256:" + name.split("/")[0]:
                problems.append(f"{name}: content does not match its name")
            if i >= len(diff_ids) or actual != diff_ids[i]:
                problems.append(f"{name}: not the config's diff_id {i}")
        if self._tree is not None:
            problems += [f"rootfs {p}" for p in self._tree.verify()]
        return problems

    def abort(self) -> None:
        for temp in self._temps:
            temp.remove()
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for path in reversed(self._new):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)
