"""The core's local outputs: dir://, oci-bundle:// and mounts://.

Implementations live in :mod:`occystrap_core.outputs`, imported on use.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import hookimpl
from ..types import OptionSpec, OutputTarget, ResolvedURI, lazy


def _unique_names(uri: ResolvedURI) -> bool:
    # layers shared by digest, a manifest per image and a catalog updated under a lock;
    # without unique names, each image's manifest.json replaces the last one's
    return bool(uri.options.get("unique_names"))


@hookimpl
def occystrap_output_targets() -> Iterator[OutputTarget]:
    yield OutputTarget(
        name="dir", schemes=("dir",), factory=lazy("occystrap_core.outputs.directory:DirOutput"),
        summary="directory of layers shared between images (dir://PATH)",
        options=(OptionSpec("unique_names", bool, "per-image manifest and catalog.json",
                            default=False),
                 OptionSpec("expand", bool, "also extract the merged rootfs", default=False)),
        holds_many=_unique_names, paths=True)
    yield OutputTarget(
        name="oci-bundle", schemes=("oci-bundle",),
        factory=lazy("occystrap_core.outputs.bundle:BundleOutput"),
        summary="OCI runtime bundle: rootfs/ and a runc config.json (oci-bundle://PATH)",
        paths=True)
    yield OutputTarget(
        name="mounts", schemes=("mounts",),
        factory=lazy("occystrap_core.outputs.mounts:MountsOutput"),
        summary="overlayfs lower directories, one per layer; needs root (mounts://PATH)",
        paths=True)
