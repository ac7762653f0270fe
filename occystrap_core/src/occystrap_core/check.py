"""``occystrap check``: validate an image's metadata and, unless fast, every layer.

Fast mode reads only the manifest and config. Full mode reads each layer once
and re-derives everything from the bytes: the blob digest and size, the
compression the first bytes show against the one the media type declares, the
diff_id, and the tar itself (format, paths, whiteouts, permissions). Results
never stop at the first problem; any ``error`` makes the command exit 1.
"""

from __future__ import annotations

import json
import stat
import tarfile
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, ContextManager

from . import digest as digests
from . import streams
from .api import Image, Layer
from .errors import NOT_JSON, CorruptImageError, OccystrapError
from .layertar import (
    clean_name,
    link_problem,
    members,
    read_stream,
    unsafe_reason,
    whiteout_problem,
    whiteout_target,
    xattr_problem,
)

if TYPE_CHECKING:
    from .engine import Loaded

LARGE_LAYER = 1024 ** 3


@dataclass(frozen=True)
class Result:
    severity: str  # error | warning | info
    check: str
    message: str


class Report:
    def __init__(self, image: str, mode: str):
        self.image = image
        self.mode = mode
        self.results: list[Result] = []

    def add(self, severity: str, check: str, message: str) -> None:
        self.results.append(Result(severity, check, message))

    def count(self, severity: str) -> int:
        return sum(r.severity == severity for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "mode": self.mode, "errors": self.count("error"),
                "warnings": self.count("warning"), "results": [asdict(r) for r in self.results]}

    def as_text(self) -> str:
        lines = [f"Image: {self.image} ({self.mode} check)"]
        lines += [f"  [{r.severity.upper():<7}] {r.check}: {r.message}" for r in self.results]
        lines.append(f"{self.count('error')} error(s), {self.count('warning')} warning(s)")
        return "\n".join(lines)


def check_metadata(image: Image, report: Report) -> None:
    if image.manifest is not None:
        _check_manifest(image, report)
    if image.is_artifact:
        _check_artifact(image, report)
        return
    config = image.config_json
    rootfs = config.get("rootfs") or {}
    if rootfs.get("type") != "layers":
        report.add("error", "rootfs-type", f"rootfs.type is {rootfs.get('type')!r}, not 'layers'")
    diff_ids = image.diff_ids
    if len(diff_ids) != len(image.layers):
        report.add("error", "layer-count", f"{len(image.layers)} layers but "
                                           f"{len(diff_ids)} diff_ids in the config")
    for i, diff_id in enumerate(diff_ids):
        if not digests.is_valid(diff_id):
            report.add("error", "diff-id-format", f"diff_id {i} {diff_id!r} is not a digest")
    history = [h for h in config.get("history") or () if isinstance(h, dict)]
    filled = [h for h in history if not h.get("empty_layer")]
    if not history:
        report.add("info", "history-count", "the config has no history")
    elif len(filled) != len(image.layers):
        report.add("error", "history-count", f"{len(filled)} non-empty history entries for "
                                             f"{len(image.layers)} layers")
    for key in ("os", "architecture"):
        if not config.get(key):
            report.add("warning", "platform", f"the config has no {key!r}")
    if (config.get("config") or {}).get("ArgsEscaped"):
        report.add("warning", "args-escaped", "config.ArgsEscaped is set (a Windows-only field)")
    if image.family == "docker" and any(layer.compression == "zstd" for layer in image.layers):
        report.add("error", "zstd-docker", "a Docker manifest with zstd layers: Docker has no "
                                           "zstd media type, podman and skopeo refuse it; "
                                           "zstd needs an OCI manifest")
    for layer in image.layers:
        _check_descriptor(layer, diff_ids, report)


def _check_artifact(image: Image, report: Report) -> None:
    """An artifact: described, and its blobs checked as blobs, not as file systems."""
    report.add("info", "artifact", f"an artifact of type {image.artifact_type} (config "
                                   f"{image.config_media_type})")
    subject = image.extras.get("subject")
    if isinstance(subject, dict):
        report.add("info", "subject", f"it refers to {subject.get('digest')} "
                                      f"({subject.get('mediaType')})")
    for layer in image.layers:
        if not layer.digest or not digests.is_valid(layer.digest):
            report.add("error", "layer-digest-format",
                       f"blob {layer.index} digest {layer.digest!r} is invalid")


def _check_manifest(image: Image, report: Report) -> None:
    assert image.manifest is not None
    report.add("info", "manifest-digest", f"manifest {image.manifest_digest}")
    try:
        manifest = json.loads(image.manifest)
    except NOT_JSON as e:
        report.add("error", "manifest-json", f"the manifest is not JSON: {e}")
        return
    if manifest.get("schemaVersion") != 2:
        report.add("error", "schema-version", f"schemaVersion is {manifest.get('schemaVersion')!r}")
    declared = manifest.get("mediaType")
    if declared and image.manifest_media_type and declared != image.manifest_media_type:
        report.add("error", "manifest-media-type", f"the manifest says {declared}, "
                                                   f"it was served as {image.manifest_media_type}")
    descriptor = manifest.get("config")
    if not isinstance(descriptor, dict):
        report.add("error", "config-descriptor", "the manifest has no config descriptor")
    else:
        if descriptor.get("digest") != image.config_digest:
            report.add("error", "config-digest", f"the config hashes to {image.config_digest}, "
                                                 f"the manifest says {descriptor.get('digest')}")
        if descriptor.get("size") != len(image.config):
            report.add("error", "config-size", f"the config has {len(image.config)} bytes, "
                                               f"the manifest says {descriptor.get('size')}")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != len(image.layers):
        report.add("error", "manifest-layers", "the manifest's layer list does not match the "
                                               "image's layers")


def _check_descriptor(layer: Layer, diff_ids: list[str], report: Report) -> None:
    i = layer.index
    if not layer.digest or not digests.is_valid(layer.digest):
        report.add("error", "layer-digest-format", f"layer {i} digest {layer.digest!r} is invalid")
    if layer.compression is None:
        report.add("error", "layer-media-type", f"layer {i} has the unknown media type "
                                                f"{layer.media_type}")
    elif layer.compression == "zstd":
        report.add("warning", "zstd-compat", f"layer {i} is zstd: Docker < 23 and containerd "
                                             f"< 1.5 cannot pull it")
    if layer.foreign:
        report.add("info", "foreign-layer", f"layer {i} is non-distributable")
    if layer.size is not None and layer.size > LARGE_LAYER:
        report.add("warning", "large-layer", f"layer {i} is {layer.size} bytes")
    if layer.diff_id and i < len(diff_ids) and layer.diff_id != diff_ids[i]:
        report.add("error", "diff-id", f"layer {i}: the source says diff_id {layer.diff_id}, "
                                       f"the config {diff_ids[i]}")


def check_layer(open_layer: Callable[[Layer], ContextManager[BinaryIO]], layer: Layer,
                diff_ids: list[str], report: Report) -> None:
    i = layer.index
    if not layer.is_tar:  # an artifact's blob: its digest and size are all there is
        _check_blob(open_layer, layer, report)
        return
    complete = False
    try:
        with open_layer(layer) as raw:
            blob = streams.HashingReader(raw, what=f"layer {i} blob")
            buf = streams.buffered(blob)
            actual = streams.sniff(buf)
            if layer.compression not in (None, actual):
                report.add("error", "compression", f"layer {i} is declared {layer.compression} "
                                                   f"({layer.media_type}) but its bytes are "
                                                   f"{actual}")
            plain = streams.HashingReader(streams.decompressing(buf, actual, f"layer {i}"),
                                          what=f"layer {i} diff_id")
            complete = _check_tar(streams.buffered(plain), i, report)
            blob.drain()  # the rest of the stored bytes, for their digest
    except OccystrapError as e:
        report.add("error", "layer-read", str(e))
        return
    if layer.digest and blob.digest != layer.digest:
        report.add("error", "layer-digest", f"layer {i} hashes to {blob.digest}, "
                                            f"expected {layer.digest}")
    if layer.size is not None and blob.count != layer.size:
        report.add("error", "layer-size", f"layer {i} has {blob.count} bytes, "
                                          f"expected {layer.size}")
    if complete and i < len(diff_ids) and plain.digest != diff_ids[i]:
        report.add("error", "diff-id", f"layer {i} uncompressed hashes to {plain.digest}, "
                                       f"the config says {diff_ids[i]}")


def _check_tar(stream: BinaryIO, i: int, report: Report) -> bool:
    """Check every member, reading the layer to its end; False when it could not be
    (reported, and the stream is not read again: a failed decompressor only fails
    once more, with a meaningless error)."""
    seen: set[str] = set()
    try:
        for member in members(read_stream(stream), f"layer {i}"):
            name = clean_name(member.name)
            _check_member(member, name, seen, i, report)
            seen.add(name)
    except OccystrapError as e:
        report.add("error", "tar-format", str(e))
        return False
    return True


def _check_member(member: tarfile.TarInfo, name: str, seen: set[str], i: int,
                  report: Report) -> None:
    where = f"layer {i}: {member.name!r}"
    reason = unsafe_reason(name)
    if reason:
        report.add("error", "tar-path", f"{where} has {reason}")
    whiteout = whiteout_target(name)
    if whiteout is not None:
        problem = whiteout_problem(whiteout[1])
        if problem:
            report.add("error", "whiteout", f"{where} is a whiteout that {problem}")
        if member.size:
            report.add("warning", "whiteout-size", f"{where} is a whiteout of {member.size} bytes")
    problem = xattr_problem(member)
    if problem:
        report.add("error", "xattr", f"{where} carries {problem}")
    problem = link_problem(member)
    if problem:
        report.add("error", "tar-path", f"{where} has {problem}")
    if member.mtime < 0:
        report.add("error", "tar-timestamp", f"{where} has a negative mtime")
    if member.islnk():
        target = clean_name(member.linkname)
        if unsafe_reason(target):
            report.add("error", "tar-path", f"{where} hardlinks to {member.linkname!r}")
        elif target not in seen:
            report.add("warning", "hardlink", f"{where} hardlinks to {target!r}, not earlier "
                                              f"in the layer")
    special = member.mode & (stat.S_ISUID | stat.S_ISGID)
    if special and member.mode & stat.S_IWOTH and not member.issym():
        report.add("warning", "tar-permissions", f"{where} is setuid/setgid and world-writable "
                                                 f"({oct(member.mode)})")


def _check_blob(open_layer: Callable[[Layer], ContextManager[BinaryIO]], layer: Layer,
                report: Report) -> None:
    try:
        with open_layer(layer) as raw:
            blob = streams.HashingReader(raw, what=f"blob {layer.index}")
            blob.drain()
    except OccystrapError as e:
        report.add("error", "layer-read", str(e))
        return
    if blob.digest != layer.digest or (layer.size is not None and blob.count != layer.size):
        report.add("error", "layer-digest", f"blob {layer.index} hashes to {blob.digest} "
                                            f"({blob.count} bytes), expected {layer.digest} "
                                            f"({layer.size} bytes)")


def run_check(loaded: Loaded, fast: bool) -> Report:
    image = loaded.image
    report = Report(image.reference or "(unnamed)", "fast" if fast else "full")
    try:
        check_metadata(image, report)
    except CorruptImageError as e:  # the config is not a JSON object: nothing else to check
        report.add("error", "config-json", str(e))
        return report
    if not fast:
        for layer in image.layers:
            check_layer(loaded.open_layer, layer, image.diff_ids, report)
    return report
