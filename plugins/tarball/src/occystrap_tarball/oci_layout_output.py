"""The ``oci-layout://`` output: an OCI image layout directory.

Blobs are copied byte for byte (compressed stays compressed), each written to a
locked temp file and renamed to its digest, so a blob path never holds partial
data. ``index.json`` is replaced last, keeping other images already in the layout;
until then nothing new is referenced. A multi-platform index is stored whole: its
images as blobs, then the index blob, which ``index.json`` references.

Several runs may write into one layout at once, and a run killed half-way leaves
nothing that stops the next one:

- ``oci-layout`` is written first, created at most once (a directory holding only
  ``blobs/``, ``index.json`` or ``oci-layout`` is a layout being written);
- each writer holds a shared ``flock`` on the layout directory while it works, and
  ``index.json`` is read, merged and replaced under an exclusive ``flock`` on
  ``oci-layout``, so no entry is ever lost;
- temp files left by a killed run are swept when the next run starts;
- :meth:`abort` removes the blobs this run added only when no other writer is at
  work and no entry of ``index.json`` references them (another writer may have
  reused one); a layout it created and nobody committed to goes entirely (in an
  empty directory given, what it made there).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import threading
from dataclasses import replace
from typing import Any, Callable, Iterator

from occystrap_core import digest as digests
from occystrap_core import mediatypes as mt
from occystrap_core import streams
from occystrap_core.api import (
    Image,
    ImageIndex,
    ImageOutput,
    Layer,
    LayerData,
    OutputResult,
)
from occystrap_core.archive.blobs import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF,
    blob_path,
    parse_json,
)
from occystrap_core.archive.stores import DirStore
from occystrap_core.archive.verify import referenced_blobs, verify_descriptor
from occystrap_core.context import Context
from occystrap_core.errors import (
    CorruptImageError,
    ImageNotFoundError,
    OccystrapError,
    OutputExistsError,
    URIError,
)
from occystrap_core.oci import referrers
from occystrap_core.oci.convert import oci_type
from occystrap_core.oci.manifest import parse
from occystrap_core.oci.reference import join_stored
from occystrap_core.tempfiles import AtomicFile, sweep
from occystrap_core.types import ResolvedURI

from .layout_uri import layout_target
from .listing import ref_of

OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
_LAYOUT_FILES = {"blobs", "index.json", "oci-layout"}
TEMP = ".tmp-"  # AtomicFile's prefix: other writers' files being written
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# the image-spec's grammar of org.opencontainers.image.ref.name, which skopeo and umoci enforce
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


def check_ref(ref: str | None) -> None:
    """Refuse a ref name other tools could not name (``oci:DIR:REF``, ``DIR:REF``)."""
    if ref and not _REF.fullmatch(ref):
        raise URIError(f"oci-layout://: ref {ref!r} is not a valid ref name (letters and "
                       f"digits, joined by one of - . _ : @ + or --, in /-separated parts)")


class LayoutOutput(ImageOutput):
    def __init__(self, uri: ResolvedURI, ctx: Context):
        # DIR@DIGEST: a manifest already there, for occystrap tag and delete --manifest
        self.path, self.digest = layout_target(uri)
        self._uri = uri
        self.ctx = ctx
        self.ref: str | None = uri.options.get("ref")
        self._created_dir = False
        self._made: list[str] = []  # what of the layout's skeleton this run created
        self._new_blobs: list[str] = []
        self._lock = threading.Lock()
        self._written: dict[int, Layer] = {}
        self._depth = 0  # indexes open: their images (and nested ones) stay out of index.json
        self._loose = 0  # by_digest blocks open: referrers, listed in index.json untagged
        self._checked = False
        self._usage: int | None = None  # the layout directory, share-locked while we write
        self._temps: set[AtomicFile] = set()  # blobs being written
        self._listed: dict[str, Any] | None = None  # the index.json entry written
        self._loose_listed: list[dict[str, Any]] = []  # entries of referrers written

    def start(self, image: Image) -> None:
        self._refuse_digest("write to")
        check_ref(self.ref)
        self._written = {}  # an output is reused for each image of an index
        if not self._checked:
            self._checked = True  # a later image of an index: the first one opened it
            self._open_layout()

    def _open_layout(self) -> None:
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise OutputExistsError(f"{self.path} exists and is not a directory")
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise URIError(f"directory {parent} does not exist")
        try:
            os.mkdir(self.path)
            self._created_dir = True
        except FileExistsError:
            pass  # there already, or another writer made it just now
        self._usage = os.open(self.path, _DIR)
        fcntl.flock(self._usage, fcntl.LOCK_SH)
        sweep(self.path, TEMP)  # what a killed run left, beside and among the blobs
        others = {n for n in os.listdir(self.path) if not n.startswith(TEMP)} - _LAYOUT_FILES
        if others and not os.path.isfile(self._file("oci-layout")):
            raise OutputExistsError(f"{self.path} is a non-empty directory that is not "
                                    f"an OCI image layout")
        if not os.path.isfile(self._file("oci-layout")):
            with AtomicFile(self.path) as temp:
                temp.file.write(json.dumps(OCI_LAYOUT).encode())
                temp.file.flush()
                try:
                    os.link(temp.path, self._file("oci-layout"))  # created at most once
                    self._made.append(self._file("oci-layout"))
                except FileExistsError:
                    pass
        for name in ("blobs", "blobs/sha256"):
            try:
                os.mkdir(self._file(name))
                self._made.append(self._file(name))
            except FileExistsError:
                pass
        sweep(self._file("blobs/sha256"), TEMP)

    def _file(self, name: str) -> str:
        return os.path.join(self.path, *name.split("/"))

    def _has_blob(self, digest: str, size: int | None) -> bool:
        try:
            st = os.stat(self._file(blob_path(digest, "blob digest")))
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def _temp(self) -> AtomicFile:
        """A temp file beside the blobs, so that the final rename stays on one filesystem."""
        temp = AtomicFile(self._file("blobs/sha256"))
        with self._lock:
            self._temps.add(temp)
        return temp

    def _commit(self, temp: AtomicFile, name: str) -> None:
        final = self._file(name)
        existed = os.path.exists(final)
        temp.commit(final)
        with self._lock:
            self._temps.discard(temp)
            if not existed:
                self._new_blobs.append(final)

    def _put_bytes(self, name: str, data: bytes) -> None:
        with self._temp() as temp:
            temp.file.write(data)
            self._commit(temp, name)

    def wants_layer(self, layer: Layer) -> bool:
        if layer.digest and self._has_blob(layer.digest, layer.size):
            with self._lock:
                self._written[layer.index] = replace(
                    layer, media_type=oci_type(layer.media_type))
            return False
        return True

    def add_layer(self, data: LayerData) -> None:
        with self._temp() as temp:
            with data.open_blob() as blob:
                size = streams.copy(streams.buffered(blob), temp.file)
            digest = blob.digest  # checked against layer.digest at EOF when that is known
            self._commit(temp, blob_path(digest, "layer digest"))
        with self._lock:
            self._written[data.layer.index] = replace(
                data.layer, media_type=oci_type(data.layer.media_type),
                digest=digest, size=size)

    def _manifest(self, image: Image) -> tuple[bytes, str]:
        layers = []
        for layer in image.layers:
            if layer.index not in self._written:
                raise CorruptImageError(f"layer {layer.index} was never written")
            layers.append(self._written[layer.index])
        if image.manifest is not None and image.family == "oci":
            return image.manifest, image.manifest_media_type or mt.OCI_MANIFEST
        return image.build_manifest(layers, family="oci")

    def start_index(self, index: ImageIndex) -> None:
        self._depth += 1

    def finish(self, image: Image) -> OutputResult:
        manifest, media_type = self._manifest(image)
        self._put_bytes(blob_path(image.config_digest, "config digest"), image.config)
        if self._depth:
            return self._put_manifest(manifest, media_type)
        if self._loose:
            return self._commit_loose(manifest, media_type)
        return self._commit_top(image.name, image.tag, manifest, media_type)

    def finish_index(self, index: ImageIndex, data: bytes) -> OutputResult:
        self._depth -= 1
        if self._depth:
            return self._put_manifest(data, index.media_type)
        if self._loose:
            return self._commit_loose(data, index.media_type)
        return self._commit_top(index.name, index.tag, data, index.media_type)

    @property
    def holds_referrers(self) -> bool:
        return True

    @contextlib.contextmanager
    def by_digest(self) -> Iterator[None]:
        self._loose += 1
        try:
            yield
        finally:
            self._loose -= 1

    def _commit_loose(self, manifest: bytes, media_type: str) -> OutputResult:
        """A referrer: stored, and listed in ``index.json`` with its artifactType and
        no ref name, as OCI 1.1 layouts hold them (and readers find them)."""
        result = self._put_manifest(manifest, media_type)
        descriptor = referrers.descriptor_of(parse(manifest, media_type, "a referrer")).json()
        with self._index_lock():
            self._put_bytes("index.json", self._index(descriptor))
        self._loose_listed.append(descriptor)
        return result

    def _put_manifest(self, manifest: bytes, media_type: str) -> OutputResult:
        """A manifest inside an index: a blob, not listed in ``index.json``."""
        manifest_digest = digests.of_bytes(manifest)
        self._put_bytes(blob_path(manifest_digest, "manifest digest"), manifest)
        return OutputResult(location=self.path, manifest_digest=manifest_digest,
                            manifest_size=len(manifest), manifest_media_type=media_type)

    def _commit_top(self, name: str | None, tag: str | None, manifest: bytes,
                    media_type: str) -> OutputResult:
        """Store ``manifest`` and list it in ``index.json`` under the ref."""
        manifest_digest = digests.of_bytes(manifest)
        self._put_bytes(blob_path(manifest_digest, "manifest digest"), manifest)
        descriptor: dict[str, Any] = {"mediaType": media_type, "digest": manifest_digest,
                                      "size": len(manifest)}
        reference = join_stored(name, tag)
        notes = {}
        if self.ref or tag:
            notes[ANNOTATION_REF] = self.ref or tag
        if reference:
            notes[ANNOTATION_IMAGE_NAME] = reference
        if notes:
            descriptor["annotations"] = notes
        with self._index_lock():
            self._put_bytes("index.json", self._index(descriptor))
        self._listed = descriptor
        self._release()
        return OutputResult(location=self.path, manifest_digest=manifest_digest,
                            details={"ref": notes.get(ANNOTATION_REF)},
                            manifest_size=len(manifest), manifest_media_type=media_type)

    # --- registry operations (occystrap tag, delete) ----------------------------

    def _refuse_digest(self, what: str) -> None:
        if self.digest:
            raise URIError(f"oci-layout://{self.path}@{self.digest} names a manifest by "
                           f"digest, not a ref to {what}; name it with ?ref=NAME")

    def sibling(self, tag: str) -> LayoutOutput:
        """The same layout, writing ``tag`` as the ref name."""
        other = LayoutOutput(self._uri, self.ctx)
        other.ref, other.digest = tag, None
        return other

    def put_manifest(self, data: bytes, media_type: str) -> OutputResult:
        """``data`` listed in ``index.json`` under the ref (its blob is written too, in
        case it was only listed in another layout's index)."""
        self._refuse_digest("write")
        if not self.ref:
            raise URIError(f"{self.path}: name the ref to write with ?ref=NAME")
        check_ref(self.ref)
        self._open_layout()
        try:
            result = self._commit_top(None, None, data, media_type)
            return replace(result, location=f"oci-layout://{self.path}?ref={self.ref}")
        except BaseException:
            self.abort()
            raise

    def delete_tag(self) -> None:
        """The ``index.json`` entries whose ref name is the ref; blobs stay."""
        if self.digest:
            raise URIError(f"oci-layout://{self.path}@{self.digest} names no ref to delete; "
                           f"give ?ref=NAME, or --manifest to delete a manifest by digest")
        ref = self.ref
        if not ref:
            raise URIError(f"{self.path}: name the ref to delete with ?ref=NAME")
        self._drop(lambda e: ref_of(e) == ref, f"{self.path} has no image {ref!r}")

    def delete_manifest(self, digest: str) -> None:
        """Every ``index.json`` entry of ``digest``; blobs stay."""
        self._drop(lambda e: e.get("digest") == digest, f"{self.path} lists no {digest}")

    def _drop(self, gone: Callable[[dict[str, Any]], bool], missing: str) -> None:
        """Rewrite ``index.json`` without the entries ``gone`` picks, atomically."""
        for name in ("index.json", "oci-layout"):  # the lock is taken on oci-layout
            if not os.path.isfile(self._file(name)):
                raise ImageNotFoundError(f"{self.path} is not an OCI image layout (no {name})")
        with self._index_lock():
            path = self._file("index.json")
            with open(path, "rb") as f:
                index = parse_json(f.read(), path)
            entries = index.get("manifests")
            if not isinstance(entries, list):
                raise CorruptImageError(f"{path} has no valid 'manifests' list")
            kept = [e for e in entries if not (isinstance(e, dict) and gone(e))]
            if len(kept) == len(entries):
                raise ImageNotFoundError(missing)
            index["manifests"] = kept
            with AtomicFile(self.path) as temp:
                temp.file.write(json.dumps(index, separators=(",", ":")).encode())
                temp.commit(path)

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        """index.json is read, merged and replaced by one writer at a time."""
        fd = os.open(self._file("oci-layout"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _release(self) -> None:
        if self._usage is not None:
            os.close(self._usage)
            self._usage = None

    def _index(self, descriptor: dict[str, Any]) -> bytes:
        """The existing index with ``descriptor`` added, replacing any entry of the same ref."""
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        path = self._file("index.json")
        if os.path.isfile(path):
            with open(path, "rb") as f:
                index = parse_json(f.read(), f"{path}")
            if not isinstance(index.get("manifests"), list):
                raise CorruptImageError(f"{path} has no valid 'manifests' list")
        ref = (descriptor.get("annotations") or {}).get(ANNOTATION_REF)

        def keep(entry: Any) -> bool:
            if entry == descriptor:
                return False
            notes = entry.get("annotations") or {} if isinstance(entry, dict) else {}
            return ref is None or notes.get(ANNOTATION_REF) != ref

        index["manifests"] = [e for e in index["manifests"] if keep(e)] + [descriptor]
        return json.dumps(index, separators=(",", ":")).encode()

    def verify(self) -> list[str]:
        """Re-read the layout from index.json down to every blob of the image or index
        written (see :mod:`.verify` for how deep)."""
        if self._listed is None and not self._loose_listed:
            return ["nothing was written"]
        store = DirStore(self.path)
        try:
            index = parse_json(store.read_bytes("index.json", "index.json"), "index.json")
        except OccystrapError as e:
            return [str(e)]
        entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
        problems = []
        full = self.ctx.settings.verify_full
        if self._listed is not None:
            ref = (self._listed.get("annotations") or {}).get(ANNOTATION_REF)
            if self._listed not in entries and not (ref and any(
                    (e.get("annotations") or {}).get(ANNOTATION_REF) == ref for e in entries)):
                return [f"index.json does not list {self._listed['digest']}"]
            # (another writer may have listed its own image under the ref since: that is its)
            problems += verify_descriptor(store, self._listed, "manifest", full)
        for loose in self._loose_listed:
            problems += [f"index.json does not list referrer {loose['digest']}"] \
                if loose not in entries else verify_descriptor(store, loose, "referrer", full)
        return problems

    def abort(self) -> None:
        with self._lock:
            temps, self._temps = list(self._temps), set()
        for temp in temps:  # blobs still being written (by threads told to stop)
            temp.discard()
        if self._usage is None:
            return
        try:
            fcntl.flock(self._usage, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # other writers are at work: they may be relying on our new blobs
        try:
            if not os.path.exists(self._file("index.json")):  # nothing was ever committed
                if self._created_dir:
                    shutil.rmtree(self.path, ignore_errors=True)
                    return
                # an empty directory given: it is left empty again (what another run
                # left in it, or put there since, stays)
                for path in [*self._new_blobs, *reversed(self._made)]:
                    with contextlib.suppress(OSError):
                        (os.rmdir if os.path.isdir(path) else os.unlink)(path)
                return
            try:
                keep = referenced_blobs(DirStore(self.path))
            except OccystrapError:
                return  # index.json cannot be read: better leave blobs than break it
            for path in self._new_blobs:
                if os.path.basename(path) not in keep and os.path.exists(path):
                    os.unlink(path)
        finally:
            self._release()
