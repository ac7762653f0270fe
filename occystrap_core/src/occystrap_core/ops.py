"""Registry operations: what ``occystrap tags``, ``catalog``, ``manifest``, ``config``,
``digest``, ``tag``, ``delete`` and ``export`` do, for Python (``occystrap.ops``)::

    from occystrap import ops

    ops.tags("registry://registry.example/app", pattern="v1.*")
    ops.digest("registry://registry.example/app:1.0", platform="linux/arm64")
    ops.tag("registry://registry.example/app:1.0", ["stable"])
    ops.export("oci-layout://./layout?ref=app", "rootfs.tar")

Every function works on any scheme where it makes sense: tags on what has a lister
(``registry://``, ``quay://``, ``oci-layout://``), manifests and digests on sources
that have manifests (a registry, a layout), new tags and deletes on outputs that
implement :meth:`~occystrap_core.api.ImageOutput.put_manifest` and the delete
methods. Options and sessions are those of :mod:`occystrap_core.library`.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

from . import digest as digests
from . import pipeline
from .api import Fetched, ImageInput, ImageOutput, ImageSource, LayerData
from .engine import Reader, Selection, load
from .errors import ImageNotFoundError, UnsupportedError, URIError, UsageError
from .library import Session, Source, _names, _opened, _session
from .listing import open_lister
from .oci import platform as platforms
from .oci.manifest import Manifest, parse
from .oci.platform import Platform
from .oci.reference import TAG_RE
from .tempfiles import destination as destination_of
from .tempfiles import replacing
from .uri import check_glob
from .workers import parallel

Platforms = Platform | str | None


def tags(source: str, *, pattern: str | None = None, session: Session | None = None,
         **options: Any) -> list[str]:
    """The tags of the repository ``source`` names (its tag, if any, is ignored),
    sorted; ``pattern`` keeps those matching that glob."""
    if pattern is not None:
        check_glob(pattern, "tags: glob")
    with _session(session, options) as ctx:
        lister, resolved = open_lister(ctx, source)
        try:
            found = set(lister.tags(lister.repository(resolved.target)))
        finally:
            lister.close()
    return sorted(t for t in found if pattern is None or fnmatch.fnmatchcase(t, pattern))


def catalog(host: str, *, session: Session | None = None, **options: Any) -> list[str]:
    """The repositories of the registry ``host`` (``HOST[:PORT]`` or
    ``registry://HOST[:PORT][?options]``), sorted, every page of the catalog read."""
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "registry", host
    target, sep, query = rest.partition("?")
    target = target.strip("/")
    if not target or "/" in target:
        raise URIError(f"{host}: expected a registry host, as in HOST[:PORT] or "
                       f"registry://HOST[:PORT]")
    with _session(session, options) as ctx:
        lister, _ = open_lister(ctx, f"{scheme}://{target}/*{sep}{query}")
        try:
            return sorted(set(lister.repositories()))
        finally:
            lister.close()


def _with_manifests(source: ImageSource | ImageInput, what: str) -> ImageSource:
    if not isinstance(source, ImageSource):
        raise UnsupportedError(f"{what}: {source.where} holds an image without manifests "
                               f"of its own (a docker-save archive, a daemon)")
    return source


def _parsed(platform: Platforms) -> Platform | None:
    return platforms.parse(platform) if isinstance(platform, str) else platform


def _platform(source: ImageSource, platform: Platforms) -> Platform | None:
    """The platform asked for: ``platform``, else one the URI or the run's options
    chose (not this host's, which is only a default)."""
    if platform is None and source.selection is not None and source.selection.chosen:
        return source.selection.platform
    return _parsed(platform)


@contextmanager
def _choosing(source: ImageSource | ImageInput, platform: Platforms) -> Iterator[None]:
    """Have the engine pick ``platform`` from an index (else as the URI and options say)
    for this call: a source the caller opened goes on picking as it did."""
    chosen = _parsed(platform)
    if chosen is None:
        yield
        return
    before = source.selection
    source.selection = Selection(chosen, chosen=True)
    try:
        yield
    finally:
        source.selection = before


def _named(source: ImageSource, platform: Platforms) -> Fetched:
    """The bytes the reference names, or with a platform those of its manifest for it."""
    fetched = source.manifest()
    chosen = _platform(source, platform)
    if chosen is None:
        return fetched
    node = parse(fetched.data, fetched.media_type, f"{source.where}: manifest")
    if isinstance(node, Manifest):
        return fetched  # one image: nothing to pick
    picked, _ = Reader(source, Selection(chosen, chosen=True)).pick(node)
    return Fetched(picked.data, picked.media_type)


def manifest(source: Source, *, platform: Platforms = None, session: Session | None = None,
             **options: Any) -> Fetched:
    """The manifest or index ``source`` names, its bytes as stored (verified); with
    ``platform``, the manifest an index lists for it."""
    with _session(session, options) as ctx, _opened(ctx, source, "manifest") as opened:
        return _named(_with_manifests(opened, "manifest"), platform)


def digest(source: Source, *, platform: Platforms = None, session: Session | None = None,
           **options: Any) -> str:
    """The digest of what ``source`` names (an index's for an index); with
    ``platform``, that of the manifest an index lists for it."""
    with _session(session, options) as ctx, _opened(ctx, source, "digest") as opened:
        opened = _with_manifests(opened, "digest")
        if _platform(opened, platform) is not None:
            return digests.of_bytes(_named(opened, platform).data)
        found = opened.manifest_digest()  # a registry's HEAD: no manifest read
        if found is None:
            raise ImageNotFoundError(f"{opened.where}: no such image")
        return found


def config(source: Source, *, platform: Platforms = None, session: Session | None = None,
           **options: Any) -> bytes:
    """The config blob of the image ``source`` names, as stored (verified); from an
    index, the image for ``platform`` (default: as ``copy`` picks it)."""
    with _session(session, options) as ctx, _opened(ctx, source, "config") as opened, \
            _choosing(opened, platform):
        return load(ctx, opened).image.config


def tag(source: str, new_tags: str | Sequence[str], *, session: Session | None = None,
        **options: Any) -> list[dict[str, Any]]:
    """Give what ``source`` names the tags ``new_tags`` in the same repository (or
    layout): its manifest read once, then one manifest write per tag, no blob moved."""
    new_tags = list(dict.fromkeys(_names(new_tags)))  # a tag named twice is written once
    bad = [t for t in new_tags if not TAG_RE.match(t)]
    if bad or not new_tags:
        raise UsageError(f"not a tag: {bad[0]!r} (expected [A-Za-z0-9_][A-Za-z0-9_.-]*, "
                         f"at most 128 characters)" if bad else "name at least one new tag")
    with _session(session, options) as ctx:
        with _opened(ctx, source, "tag") as opened:
            fetched = _with_manifests(opened, "tag").manifest()
        media_type = parse(fetched.data, fetched.media_type, f"{source}: manifest").media_type
        output = pipeline.build_output(ctx, source)
        done = []
        for new in new_tags:
            result = output.sibling(new).put_manifest(fetched.data, media_type)
            done.append({"tag": new, "location": result.location,
                         "digest": result.manifest_digest})
        return done


def delete(source: str, *, manifest: bool = False, session: Session | None = None,
           **options: Any) -> dict[str, Any]:
    """Delete the tag ``source`` names, leaving its manifest and other tags. With
    ``manifest``, delete the manifest it names instead, and so every tag naming it:
    ``tags`` in the result lists them (found by asking each tag's digest)."""
    with _session(session, options) as ctx:
        output = pipeline.build_output(ctx, source)
        operation = "delete_manifest" if manifest else "delete_tag"
        if getattr(type(output), operation) is getattr(ImageOutput, operation):
            # the base class's error would name the output's class
            scheme = source.partition("://")[0]
            raise UnsupportedError(f"delete: {scheme}:// cannot delete "
                                   f"{'manifests' if manifest else 'tags'}")
        if not manifest:
            output.delete_tag()
            return {"deleted": "tag", "digest": None, "tags": None}
        with _opened(ctx, source, "delete") as opened:
            named = _with_manifests(opened, "delete").manifest_digest()
        if named is None:
            raise ImageNotFoundError(f"{source}: no such image")
        lister, resolved = open_lister(ctx, source)
        try:
            repository = lister.repository(resolved.target)
            listed = sorted(set(lister.tags(repository)))
            found = parallel(lambda t: lister.digest(repository, t), listed,
                             ctx.settings.max_connections, ctx.cancel.child(), name="head")
        finally:
            lister.close()
        output.delete_manifest(named)
        return {"deleted": "manifest", "digest": named,
                "tags": [t for t, d in zip(listed, found, strict=True) if d == named]}


def export(source: Source, destination: str | BinaryIO, *, platform: Platforms = None,
           session: Session | None = None, **options: Any) -> dict[str, Any]:
    """Write the flattened root filesystem of the image ``source`` names to
    ``destination`` as one tar (see :mod:`occystrap_core.export`): a path, written
    atomically, or a binary stream (written as the layers are read)."""
    from .export import Flattener

    path = None if not isinstance(destination, str) else _export_path(destination)
    with _session(session, options) as ctx, _opened(ctx, source, "export") as opened, \
            _choosing(opened, platform):
        loaded = load(ctx, opened)
        loaded.image.refuse_non_tar("export")

        def flatten(out: Any) -> int:
            with Flattener(out) as flat:
                for layer in reversed(loaded.image.layers):
                    data = LayerData(layer, functools.partial(loaded.open_layer, layer),
                                     cancel=ctx.cancel)
                    with data.open_tar() as tar:
                        flat.add_layer(tar, f"layer {layer.index}")
            return flat.count

        if path is None:
            count = flatten(destination)
        else:
            with replacing(path, temp_dir=ctx.temp_dir) as out:
                count = flatten(out)
        return {"layers": len(loaded.image.layers), "members": count,
                "manifest_digest": loaded.image.manifest_digest}


def _export_path(destination: str) -> str:
    """The file ``export`` writes, refused before anything is read if it cannot be."""
    if not destination:  # "  " is a file name like any other
        raise UsageError("export: no file named to write the root filesystem to (- for "
                         "stdout)")
    path = os.path.abspath(destination)
    if os.path.isdir(path):
        raise UsageError(f"{destination} is a directory; name a file")
    parent = os.path.dirname(destination_of(path))
    if not os.path.isdir(parent):
        raise UsageError(f"directory {parent} does not exist")
    return path
