"""The ``dir://PATH`` source: what the ``dir://`` output wrote, read back as an image.

That layout is a docker-save archive spread over a directory
(:mod:`occystrap_core.outputs.directory`): ``manifest.json``, or with
``unique_names`` one ``manifest-<name>-<tag>.json`` per image listed by
``catalog.json``. Every image of both is offered; ``?image=NAME:TAG`` (or the end
of the name, as ``library/busybox:latest`` for ``docker.io/library/busybox:latest``)
or ``?index=N`` picks one when there are several. The config is checked against its
file name and each layer against its diff_id, as for a ``tar://`` archive.
occystrap 0.4.17 wrote the same layout (``recreate-image`` read it back).

A directory that ``skopeo copy ... dir:PATH`` wrote is read too
(:mod:`occystrap_core.archive.skopeo_dir`), with its manifests as they are.
"""

from __future__ import annotations

import os
from typing import Any

from ..archive.blobs import parse_json
from ..archive.docker_save import DockerArchiveInput, read_entries
from ..archive.skopeo_dir import SkopeoDirSource, is_skopeo_dir
from ..archive.stores import DirStore
from ..context import Context
from ..errors import CorruptImageError, ImageNotFoundError, UsageError
from ..oci.reference import split_stored
from ..types import ResolvedURI
from ..uri import local_path


def _catalog_files(store: DirStore) -> list[str]:
    """The manifest files ``catalog.json`` lists, in a stable order."""
    catalog = parse_json(store.read_bytes("catalog.json", "catalog.json"), "catalog.json")
    files = set()
    for name, tags in catalog.items():
        if not isinstance(tags, dict) or not all(isinstance(f, str) for f in tags.values()):
            raise CorruptImageError(f"catalog.json: entry {name!r} is not {{tag: file}}")
        for file in tags.values():
            if "/" in file or file.startswith("."):
                raise CorruptImageError(f"catalog.json names {file!r}, not a file of "
                                        f"{store.source}")
            files.add(file)
    return sorted(files)


def open_dir(uri: ResolvedURI, ctx: Context) -> DockerArchiveInput | SkopeoDirSource:
    path = local_path(uri)
    if not os.path.isdir(path):
        raise ImageNotFoundError(f"{path} is not a directory")
    store = DirStore(path)
    if is_skopeo_dir(store):
        picked = [f"?{k}=" for k in ("image", "index") if uri.options.get(k) is not None]
        if picked:  # it holds one image (or one index: pick with ?platform=)
            raise UsageError(f"{path} is a skopeo dir: directory of one image; "
                             f"{' and '.join(picked)} {'do' if len(picked) > 1 else 'does'} not "
                             f"apply to it")
        return SkopeoDirSource(store, path)
    files = (["manifest.json"] if store.exists("manifest.json") else []) + \
        (_catalog_files(store) if store.exists("catalog.json") else [])
    if not files:
        raise ImageNotFoundError(f"{path} holds neither manifest.json nor catalog.json: it "
                                 f"is not a directory the dir:// output or skopeo wrote")
    entries: list[dict[str, Any]] = []
    for file in files:
        entries += read_entries(store, file)
    if not entries:
        raise ImageNotFoundError(f"{path} holds no image")
    for entry in entries:  # the files it names are the directory's own
        for name in (entry["Config"], *entry["Layers"]):
            if name.startswith("/") or ".." in name.split("/"):
                raise CorruptImageError(f"{path}: the manifest names {name!r}, outside "
                                        f"the directory")
    return DockerArchiveInput(store, _wanted(entries, uri.options.get("image")),
                              uri.options.get("index"), entries)


def _wanted(entries: list[dict[str, Any]], image: str | None) -> str | None:
    """``image`` as stored: 0.4.17's recreate-image named an image by its repository
    (``library/busybox`` for ``docker.io/library/busybox``), so a name matching only
    the end of one stored reference stands for it."""
    if image is None:
        return None
    tags = [t for e in entries for t in e.get("RepoTags") or () if isinstance(t, str)]
    if image in tags or any(split_stored(t)[0] == image for t in tags):
        return image
    ends = [t for t in tags if t.endswith("/" + image) or split_stored(t)[0].endswith("/" + image)]
    return ends[0] if len(ends) == 1 else image
