"""The ``tar://`` output: a docker-save v1.2 archive that is also an OCI archive.

The layout is Docker 25+'s: every blob under ``blobs/sha256/``, with both
``manifest.json`` (for ``docker load`` and ``docker-archive:`` readers) and
``index.json`` + ``oci-layout`` (for OCI readers) pointing at the same files.
Layers are stored as uncompressed tars named by their diff_id; with
``?compression=keep``, as the source stores them (gzip or zstd blobs named by
their digest, copied byte for byte), which ``docker load`` and ``podman load``
accept as well. A layer the source has no digest for is still stored uncompressed.

An OCI artifact (an SBOM, a Helm chart) is stored as it is, in the OCI layout only:
``docker load`` reads images. The archive is tagged only when the source named a tag
(or ``?tag=`` does): an image copied by digest must not become ``latest`` on load.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
from typing import Any, Callable, ContextManager

from .. import digest as digests
from .. import mediatypes as mt
from .. import streams
from ..api import Image, ImageOutput, Layer, LayerData, OutputResult
from ..context import Context
from ..errors import CorruptImageError, OccystrapError, URIError
from ..oci.convert import oci_type
from ..oci.reference import parse, split_stored
from ..types import ResolvedURI
from ..uri import local_path
from .blobs import ANNOTATION_IMAGE_NAME, ANNOTATION_REF, parse_json, read_blob
from .stores import TarStore
from .verify import verify_descriptor
from .writer import ArchiveWriter

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
COMPRESSIONS = ("none", "keep")
STDOUT = "/dev/stdout"  # tar://-


def blob_name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


class ArchiveOutput(ImageOutput):
    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.path = local_path(uri)
        if self.path == "-":
            self.path = STDOUT
        self.ctx = ctx
        self.repo_tag = _repo_tag(uri.options.get("tag"))
        compression = uri.options.get("compression") or "none"
        if compression not in COMPRESSIONS:
            raise URIError(f"tar://: compression must be one of {', '.join(COMPRESSIONS)}, "
                           f"not {compression!r}")
        self.keep = compression == "keep"
        self._writer: ArchiveWriter | None = None
        self._lock = threading.Lock()
        self._written: dict[int, Layer] = {}  # layer index -> the blob stored for it
        self._manifest_digest: str | None = None  # set once committed
        self._artifact = False  # what was committed is an artifact: no manifest.json
        self._sent: list[str] | None = None  # what checking a stream's archive found

    def start(self, image: Image) -> None:
        if not image.is_artifact:  # an artifact is stored in the OCI layout only
            image.refuse_non_tar("a docker-save archive")
        self._writer = ArchiveWriter(self.path, lambda: self.ctx.temp_dir)
        for name in ("blobs", "blobs/sha256"):
            self._writer.add_directory(name)

    def add_layer(self, data: LayerData) -> None:
        layer = data.layer
        if (self.keep or not layer.is_tar) and layer.digest is not None and not layer.foreign:
            # the blob as it is, named by its digest (checked while read)
            size = self._add(layer.digest, data.open_blob, lambda: layer.digest)
            written = Layer(index=layer.index, media_type=oci_type(layer.media_type),
                            digest=layer.digest, size=size, diff_id=layer.diff_id,
                            uncompressed_size=layer.uncompressed_size)
        else:  # the uncompressed tar, named by its diff_id (checked while read)
            self._add(layer.diff_id, data.open_tar, lambda: data.tar_digest)
            diff_id, tar_size = data.tar_digest, data.tar_size
            assert diff_id is not None and tar_size is not None  # the tar was read to its end
            size = tar_size
            written = Layer(index=layer.index, media_type=mt.OCI_LAYER_TAR, digest=diff_id,
                            size=size, diff_id=diff_id, uncompressed_size=size)
        with self._lock:
            self._written[layer.index] = written

    def _add(self, digest: str | None, opener: Callable[[], ContextManager[streams.Readable]],
             computed: Callable[[], str | None]) -> int:
        """Store what ``opener`` yields as the blob ``digest`` (None: as ``computed()``
        once read); returns its size. A tar header needs the size first: the archive's
        one streaming slot patches it afterwards; a layer read while the slot is taken
        is spooled to a temp file."""
        assert self._writer is not None
        name = blob_name(digest) if digest else ""
        with self._writer.stream(name) if name else contextlib.nullcontext() as sink:
            if sink is not None:
                with opener() as content:
                    return streams.copy(content, sink)
            spool = tempfile.TemporaryFile(dir=self.ctx.temp_dir)
            try:
                with opener() as content:
                    size = streams.copy(content, spool)
                spool.seek(0)
            except BaseException:
                spool.close()
                raise
        self._writer.add_spooled(name or blob_name(computed() or ""), spool, size)
        return size

    def _layers(self, image: Image) -> list[Layer]:
        layers = []
        for layer in image.layers:
            if layer.index not in self._written:
                raise CorruptImageError(f"layer {layer.index} was never written")
            layers.append(self._written[layer.index])
        written = [l.diff_id for l in layers]
        if not image.is_artifact and image.diff_ids != written:
            raise CorruptImageError(f"the config's diff_ids {image.diff_ids} do not match "
                                    f"the layers written {written}")
        return layers

    def finish(self, image: Image) -> OutputResult:
        assert self._writer is not None
        layers = self._layers(image)
        # Only a tagged name: a digest reference must not become "latest" on docker load.
        reference = self.repo_tag or (image.reference if image.tag else None)
        config_name = blob_name(image.config_digest)
        manifest, _ = image.build_manifest(layers, family="oci")
        if image.manifest is not None and image.family == "oci" and \
                [l.digest for l in layers] == [l.digest for l in image.layers]:
            manifest = image.manifest  # blobs kept as they were: keep the image's digest too
        manifest_digest = digests.of_bytes(manifest)
        w = self._writer
        w.add_bytes(config_name, image.config)
        w.add_bytes(blob_name(manifest_digest), manifest)
        w.add_bytes("oci-layout", OCI_LAYOUT)
        w.add_bytes("index.json", _index(manifest_digest, len(manifest), reference,
                                         image.extras.get("artifactType")))
        tags = [reference] if reference else []
        if not image.is_artifact:  # docker load reads images only
            docker_manifest = [{"Config": config_name, "RepoTags": tags,
                                "Layers": [blob_name(l.digest or "") for l in layers]}]
            w.add_bytes("manifest.json",
                        json.dumps(docker_manifest, separators=(",", ":")).encode())
        w.commit()
        self._manifest_digest = manifest_digest
        self._artifact = image.is_artifact
        if w.to_stream:  # what a pipe reads cannot be read back: check it before sending
            if self.ctx.settings.verify:
                self._sent = self._check(w.temp_path)
                if self._sent:
                    w.abort()
                    raise CorruptImageError(f"the archive for {self.path} does not verify, "
                                            f"so none of it was sent: {'; '.join(self._sent)}")
            w.send()
        return OutputResult(location=self.path, manifest_digest=manifest_digest,
                            details={"repo_tags": tags}, manifest_media_type=mt.OCI_MANIFEST)

    def verify(self) -> list[str]:
        """Re-open the committed archive: index.json, manifest.json and the OCI manifest
        must agree, and every blob be there (see :mod:`.verify` for how deep). A stream
        was checked before it was sent."""
        if self._manifest_digest is None:
            return ["nothing was written"]
        return self._sent if self._sent is not None else self._check(self.path)

    def _check(self, path: str) -> list[str]:
        try:
            store = TarStore(path, lambda: self.ctx.temp_dir)
            index = parse_json(store.read_bytes("index.json", "index.json"), "index.json")
            docker = [] if self._artifact else parse_json(
                store.read_bytes("manifest.json", "manifest.json"), "manifest.json", list)
            if not store.exists("oci-layout"):
                return ["oci-layout is missing"]
        except OccystrapError as e:
            return [str(e)]
        entries = index.get("manifests")
        if not isinstance(entries, list) or len(entries) != 1:
            return ["index.json does not list exactly one manifest"]
        problems = []
        if entries[0].get("digest") != self._manifest_digest:
            problems.append(f"index.json lists {entries[0].get('digest')}, not the manifest "
                            f"written ({self._manifest_digest})")
        problems += verify_descriptor(store, entries[0], "manifest", self.ctx.settings.verify_full)
        if self._artifact:
            return problems
        try:
            manifest = parse_json(read_blob(store, entries[0], "manifest"), "manifest")
            expected = {"Config": blob_name(manifest["config"]["digest"]),
                        "Layers": [blob_name(l["digest"]) for l in manifest["layers"]]}
        except (OccystrapError, KeyError, TypeError):
            return problems  # already reported by verify_descriptor
        if len(docker) != 1 or not isinstance(docker[0], dict):
            problems.append("manifest.json does not list exactly one image")
        elif {k: docker[0].get(k) for k in expected} != expected:
            problems.append("manifest.json names other blobs than the OCI manifest")
        return problems

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()


def _repo_tag(tag: str | None) -> str | None:
    """``?tag=`` as a RepoTags entry: ``NAME[:TAG]``, which docker and podman load parse
    (an invalid one would be written, then refused on load)."""
    if not tag:
        return None
    try:
        parsed = parse(tag, normalize=False, default_tag=False)
    except URIError as e:
        raise URIError(f"tar://: ?tag= must be NAME[:TAG]: {e}") from None
    if parsed.digest:
        raise URIError(f"tar://: ?tag= must be NAME[:TAG], without a digest: {tag!r}")
    # ":latest" as docker tag adds it; docker load refuses a name without a tag
    return f"{parsed.name}:{parsed.tag or 'latest'}"


def _index(manifest_digest: str, size: int, reference: str | None,
           artifact_type: str | None) -> bytes:
    descriptor: dict[str, Any] = {"mediaType": mt.OCI_MANIFEST, "digest": manifest_digest,
                                  "size": size}
    if artifact_type:
        descriptor["artifactType"] = artifact_type
    if reference:
        # As Docker 25+ writes them: the full name for containerd, the tag for OCI tools.
        notes = {ANNOTATION_IMAGE_NAME: reference}
        tag = split_stored(reference)[1]
        if tag:
            notes[ANNOTATION_REF] = tag
        descriptor["annotations"] = notes
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [descriptor]}
    return json.dumps(doc, separators=(",", ":")).encode()
