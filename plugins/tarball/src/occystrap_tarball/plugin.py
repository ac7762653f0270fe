"""Entry-point module of occystrap-tarball: hook implementations only.

Implementation modules are imported inside the factories, so loading the plugin
costs nothing until one of its schemes is used.
"""

from __future__ import annotations

from typing import Iterator

from occystrap_core import hookimpl
from occystrap_core.types import InputSource, Lister, OptionSpec, OutputTarget, lazy


@hookimpl
def occystrap_input_sources() -> Iterator[InputSource]:
    yield InputSource(
        name="tarball", schemes=("tar",), factory=lazy("occystrap_tarball.inputs:open_tar"),
        summary="docker-save or OCI archive (tar://PATH, may be compressed; tar://- is stdin)",
        options=(OptionSpec("image", help="pick an image by NAME:TAG (RepoTags or ref name)"),
                 OptionSpec("index", int, help="pick the N-th image of the archive (from 0)")),
        paths=True)
    yield InputSource(
        name="oci-layout", schemes=("oci-layout",),
        factory=lazy("occystrap_tarball.inputs:open_layout"),
        summary="OCI image layout directory (oci-layout://DIR; DIR@DIGEST: one manifest)",
        options=(OptionSpec("ref", help="pick an image by org.opencontainers.image.ref.name"),
                 OptionSpec("index", int, help="pick the N-th entry of index.json (from 0)")),
        paths=True)


@hookimpl
def occystrap_listers() -> Iterator[Lister]:
    yield Lister(name="oci-layout", schemes=("oci-layout",),
                 summary="the ref names of index.json (one repository per layout)",
                 factory=lazy("occystrap_tarball.listing:LayoutLister"))


@hookimpl
def occystrap_output_targets() -> Iterator[OutputTarget]:
    yield OutputTarget(
        name="tarball", schemes=("tar",),
        factory=lazy("occystrap_core.archive.output:ArchiveOutput"),
        summary="docker-save v1.2 archive that is also an OCI archive (tar://PATH; - is stdout)",
        options=(OptionSpec("tag", help="RepoTags entry NAME:TAG instead of the image's own"),
                 OptionSpec("compression", help="none (default): uncompressed layer tars; "
                            "keep: layers as the source stores them (gzip, zstd)")),
        paths=True)
    yield OutputTarget(
        name="oci-layout", schemes=("oci-layout",),
        factory=lazy("occystrap_tarball.oci_layout_output:LayoutOutput"),
        summary="OCI image layout directory, added to if it exists (oci-layout://DIR)",
        options=(OptionSpec("ref", help="org.opencontainers.image.ref.name (default: the tag)"),),
        # index.json keeps one image per ref, and the ref (?ref= or each image's tag) is no
        # part of the destination: two images of one set would share it (a:latest, b:latest)
        holds_many=False, paths=True)
