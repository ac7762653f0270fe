"""The core's local outputs: dir://, oci-bundle:// and mounts://.

Implementations live in :mod:`occystrap_core.outputs`, imported on use.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .. import hookimpl
from ..types import OptionSpec, OutputTarget

if TYPE_CHECKING:
    from ..api import ImageOutput
    from ..context import Context
    from ..types import ResolvedURI


def _dir(uri: ResolvedURI, ctx: Context) -> ImageOutput:
    from ..outputs.directory import DirOutput

    return DirOutput(uri, ctx)


def _bundle(uri: ResolvedURI, ctx: Context) -> ImageOutput:
    from ..outputs.bundle import BundleOutput

    return BundleOutput(uri, ctx)


def _mounts(uri: ResolvedURI, ctx: Context) -> ImageOutput:
    from ..outputs.mounts import MountsOutput

    return MountsOutput(uri, ctx)


@hookimpl
def occystrap_output_targets() -> Iterator[OutputTarget]:
    yield OutputTarget(
        name="dir", schemes=("dir",), factory=_dir,
        summary="directory of layers shared between images (dir://PATH)",
        options=(OptionSpec("unique_names", bool, "per-image manifest and catalog.json",
                            default=False),
                 OptionSpec("expand", bool, "also extract the merged rootfs", default=False)))
    yield OutputTarget(
        name="oci-bundle", schemes=("oci-bundle",), factory=_bundle,
        summary="OCI runtime bundle: rootfs/ and a runc config.json (oci-bundle://PATH)")
    yield OutputTarget(
        name="mounts", schemes=("mounts",), factory=_mounts,
        summary="overlayfs lower directories, one per layer; needs root (mounts://PATH)")
