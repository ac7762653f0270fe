"""Builders of small sample images for tests and the demo.

Everything is deterministic (fixed mtimes, seeded content), so two builds of the
same image give the same digests. Images are held in memory: keep them small.

    info = build_docker_archive("app.tar", name="example.com/demo/app", tag="v1")
    write_oci_layout("layout", [sample_image(tag="v2")])
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .. import digest as digests
from .. import mediatypes as mt

MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
LAYOUTS = ("legacy", "podman", "docker25")


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def make_layer(files: Mapping[str, bytes | str]) -> bytes:
    """An uncompressed layer tar holding ``files`` (path -> content), parents included."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"/".join(p.strip("/").split("/")[:i])
                       for p in files for i in range(1, len(p.strip("/").split("/")))})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for path, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass(frozen=True)
class SampleImage:
    """An image in memory: uncompressed layer tars and the config describing them."""

    name: str | None
    tag: str | None
    layers: tuple[bytes, ...]
    config: bytes

    @property
    def reference(self) -> str | None:
        if not self.name:
            return None
        return f"{self.name}:{self.tag}" if self.tag else self.name

    @property
    def diff_ids(self) -> list[str]:
        return [digests.of_bytes(layer) for layer in self.layers]

    @property
    def config_digest(self) -> str:
        return digests.of_bytes(self.config)

    @property
    def config_json(self) -> dict[str, Any]:
        return json.loads(self.config)


def sample_image(name: str | None = "example.com/demo/app", tag: str | None = "v1", *,
                 layers: Sequence[Mapping[str, bytes | str]] | None = None,
                 n_layers: int = 2, layer_size: int = 1024, seed: int = 0,
                 os_: str = "linux", architecture: str = "amd64", variant: str | None = None,
                 cmd: Sequence[str] = ("/bin/sh", "-c", "cat /etc/motd")) -> SampleImage:
    """A valid image; ``layers`` gives each layer's files, else ``n_layers`` random ones."""
    if layers is None:
        layers = [{f"etc/layer{i}.txt": f"layer {i} of seed {seed}\n",
                   f"data/blob{i}.bin": random.Random(seed * 1000 + i).randbytes(layer_size)}
                  for i in range(n_layers)]
    tars = tuple(make_layer(files) for files in layers)
    config = {
        "architecture": architecture,
        "os": os_,
        **({"variant": variant} if variant else {}),
        "created": CREATED,
        "author": "occystrap test images",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           f"SAMPLE_SEED={seed}"],
                   "Cmd": list(cmd), "WorkingDir": "/",
                   "Labels": {"org.example.sample": "true"}},
        "rootfs": {"type": "layers", "diff_ids": [digests.of_bytes(t) for t in tars]},
        "history": [{"created": CREATED, "created_by": f"/bin/sh -c #(nop) ADD layer {i}"}
                    for i in range(len(tars))],
    }
    return SampleImage(name, tag, tars, json.dumps(config, sort_keys=True).encode())


class _TarBuilder:
    """A deterministic outer archive that writes each member name once."""

    def __init__(self, fileobj: Any):
        self.tar = tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT)
        self.names: set[str] = set()

    def _info(self, name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime, info.mode = MTIME, 0o644
        return info

    def file(self, name: str, data: bytes) -> None:
        if name in self.names:
            return
        self.names.add(name)
        for i in range(1, name.count("/") + 1):
            self.directory("/".join(name.split("/")[:i]))
        info = self._info(name)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def directory(self, name: str) -> None:
        if name in self.names:
            return
        self.names.add(name)
        info = self._info(name)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self.tar.addfile(info)

    def symlink(self, name: str, target: str) -> None:
        if name in self.names:
            return
        self.names.add(name)
        for i in range(1, name.count("/") + 1):
            self.directory("/".join(name.split("/")[:i]))
        info = self._info(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self.tar.addfile(info)

    def close(self) -> None:
        self.tar.close()


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _v1_ids(image: SampleImage) -> list[str]:
    """Legacy per-layer directory ids: a chain over the diff_ids, like docker's."""
    ids, parent = [], ""
    for diff_id in image.diff_ids:
        parent = hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
        ids.append(parent)
    return ids


def write_docker_archive(path: str, images: Iterable[SampleImage], *, layout: str = "legacy",
                         compression: str | None = None) -> None:
    """A docker-save archive of ``images``.

    ``layout``: ``legacy`` (``<id>/layer.tar``, Docker 1.10-24), ``podman``
    (``<diffid>.tar`` with ``<id>/layer.tar`` symlinks to it) or ``docker25``
    (``blobs/sha256/`` plus an OCI ``index.json``). ``compression="gzip"``
    compresses the whole archive.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    raw = io.BytesIO()
    out = _TarBuilder(raw)
    manifest: list[dict[str, Any]] = []
    index: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for image in images:
        ids = _v1_ids(image)
        layer_paths = []
        for layer, diff_id, v1 in zip(image.layers, image.diff_ids, ids, strict=True):
            if layout == "docker25":
                layer_paths.append(f"blobs/sha256/{_hex(diff_id)}")
                out.file(layer_paths[-1], layer)
                continue
            if layout == "podman":
                out.file(f"{_hex(diff_id)}.tar", layer)
                out.symlink(f"{v1}/layer.tar", f"../{_hex(diff_id)}.tar")
            else:
                out.file(f"{v1}/layer.tar", layer)
            out.file(f"{v1}/VERSION", b"1.0")
            out.file(f"{v1}/json", _json({"id": v1}))
            layer_paths.append(f"{v1}/layer.tar")
        config_path = (f"blobs/sha256/{_hex(image.config_digest)}" if layout == "docker25"
                       else f"{_hex(image.config_digest)}.json")
        out.file(config_path, image.config)
        manifest.append({"Config": config_path,
                         "RepoTags": [image.reference] if image.reference and image.tag else None,
                         "Layers": layer_paths})
        if image.name and image.tag and ids:
            repositories.setdefault(image.name, {})[image.tag] = ids[-1]
        if layout == "docker25":
            oci_manifest = _oci_manifest(image, [(mt.OCI_LAYER_TAR, l) for l in image.layers])
            out.file(f"blobs/sha256/{_hex(digests.of_bytes(oci_manifest))}", oci_manifest)
            index.append(_index_entry(oci_manifest, image.tag, image.reference))
    if layout == "docker25":
        out.file("oci-layout", _json({"imageLayoutVersion": "1.0.0"}))
        out.file("index.json", _json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                      "manifests": index}))
    out.file("manifest.json", _json(manifest))
    if repositories:
        out.file("repositories", _json(repositories))
    out.close()
    data = raw.getvalue()
    if compression == "gzip":
        data = gzip.compress(data, mtime=0)
    elif compression is not None:
        raise ValueError("compression must be None or 'gzip'")
    with open(path, "wb") as f:
        f.write(data)


def _oci_manifest(image: SampleImage, blobs: Sequence[tuple[str, bytes]],
                  family: str = "oci") -> bytes:
    return _json({"schemaVersion": 2, "mediaType": mt.manifest_type(family),
                  "config": {"mediaType": mt.config_type(family),
                             "digest": image.config_digest, "size": len(image.config)},
                  "layers": [{"mediaType": media_type, "digest": digests.of_bytes(blob),
                              "size": len(blob)} for media_type, blob in blobs]})


def _index_entry(manifest: bytes, ref: str | None, full_name: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"mediaType": mt.OCI_MANIFEST, "digest": digests.of_bytes(manifest),
                             "size": len(manifest)}
    notes = {}
    if ref:
        notes["org.opencontainers.image.ref.name"] = ref
    if full_name:
        notes["io.containerd.image.name"] = full_name
    if notes:
        entry["annotations"] = notes
    return entry


def oci_blobs(images: Iterable[SampleImage], refs: Sequence[str | None] | None = None, *,
              compress: bool = True) -> tuple[dict[str, bytes], bytes]:
    """The files of an OCI layout holding ``images``: ``{relative path: bytes}``, index.json.

    ``refs`` gives each image's ``org.opencontainers.image.ref.name`` (default: its
    tag). Layers are gzip-compressed unless ``compress`` is false.
    """
    images = list(images)
    refs = list(refs) if refs is not None else [image.tag for image in images]
    files: dict[str, bytes] = {}
    entries = []
    for image, ref in zip(images, refs, strict=True):
        blobs = [(mt.OCI_LAYER_GZIP, gzip.compress(l, mtime=0)) if compress
                 else (mt.OCI_LAYER_TAR, l) for l in image.layers]
        manifest = _oci_manifest(image, blobs)
        for blob in [image.config, manifest] + [b for _, b in blobs]:
            files[f"blobs/sha256/{_hex(digests.of_bytes(blob))}"] = blob
        entries.append(_index_entry(manifest, ref, None))
    files["oci-layout"] = _json({"imageLayoutVersion": "1.0.0"})
    index = _json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    files["index.json"] = index
    return files, index


def write_oci_layout(path: str, images: Iterable[SampleImage],
                     refs: Sequence[str | None] | None = None, *, compress: bool = True) -> None:
    """An OCI image layout directory at ``path`` (created if missing)."""
    write_files(path, oci_blobs(images, refs, compress=compress)[0])


def multi_platform_blobs(images: Iterable[SampleImage], ref: str = "v1", *,
                         family: str = "oci") -> tuple[dict[str, bytes], bytes]:
    """The files of an OCI layout whose ``index.json`` names one multi-platform image:
    an OCI index (``family="docker"``: a Docker manifest list of Docker manifests)
    listing ``images`` with the platforms their configs give. Returns the files and
    the index (or list) bytes."""
    files: dict[str, bytes] = {}
    entries = []
    for image in images:
        blobs = [(mt.layer_type(family, "gzip"), gzip.compress(l, mtime=0)) for l in image.layers]
        manifest = _oci_manifest(image, blobs, family)
        for blob in [image.config, manifest] + [b for _, b in blobs]:
            files[f"blobs/sha256/{_hex(digests.of_bytes(blob))}"] = blob
        config = image.config_json
        platform = {"os": config["os"], "architecture": config["architecture"],
                    **({"variant": config["variant"]} if config.get("variant") else {})}
        entries.append({"mediaType": mt.manifest_type(family), "size": len(manifest),
                        "digest": digests.of_bytes(manifest), "platform": platform})
    index = _json({"schemaVersion": 2, "mediaType": mt.index_type(family), "manifests": entries})
    files[f"blobs/sha256/{_hex(digests.of_bytes(index))}"] = index
    top = {"mediaType": mt.index_type(family), "digest": digests.of_bytes(index),
           "size": len(index), "annotations": {"org.opencontainers.image.ref.name": ref}}
    files["oci-layout"] = _json({"imageLayoutVersion": "1.0.0"})
    files["index.json"] = _json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                 "manifests": [top]})
    return files, index


def write_files(path: str, files: Mapping[str, bytes]) -> None:
    """``files`` (relative path -> bytes) under the directory ``path``."""
    for name, data in files.items():
        target = os.path.join(path, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)


def write_oci_archive(path: str, images: Iterable[SampleImage],
                      refs: Sequence[str | None] | None = None, *, compress: bool = True) -> None:
    """An OCI archive (the layout as a tar), as ``oci-archive:`` transports write it."""
    write_tar(path, oci_blobs(images, refs, compress=compress)[0])


def write_tar(path: str, files: Mapping[str, bytes]) -> None:
    """``files`` (relative path -> bytes) as a deterministic tar archive at ``path``."""
    with open(path, "wb") as f:
        out = _TarBuilder(f)
        for name, data in sorted(files.items()):
            out.file(name, data)
        out.close()


def build_docker_archive(path: str, name: str | None = "example.com/demo/app",
                         tag: str | None = "v1", *,
                         layers: Sequence[Mapping[str, bytes | str]] | None = None,
                         n_layers: int = 2, layer_size: int = 1024, seed: int = 0,
                         layout: str = "legacy", compression: str | None = None) -> dict[str, Any]:
    """Write a one-image docker-save archive and describe what it holds."""
    image = sample_image(name, tag, layers=layers, n_layers=n_layers,
                         layer_size=layer_size, seed=seed)
    write_docker_archive(path, [image], layout=layout, compression=compression)
    return {"path": path, "name": name, "tag": tag, "reference": image.reference,
            "config_digest": image.config_digest, "diff_ids": image.diff_ids,
            "image": image}
