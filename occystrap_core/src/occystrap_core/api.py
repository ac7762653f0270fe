"""The image model, and the interfaces sources, outputs and filters implement.

A source gives manifests and blobs (:class:`ImageSource`: a registry repository,
an OCI layout), or, when it has no manifests of its own (an archive from
``docker save``, a daemon), one image (:class:`ImageInput`). The copy engine
(:mod:`occystrap_core.engine`) does the rest for every pair of schemes: it walks
indexes and picks platforms, builds the :class:`Image`, and drives the output::

    output.existing_manifest(summary)    -> the destination has it already: done
    output.adopt_manifest(memo)          -> with --layer-cache: a manifest this chain wrote
                                            before, its blobs all there: pushed, done
    output.start(image)
    for each layer output.wants_layer():  output.add_layer(LayerData)   # maybe in threads
    output.finish(final_image)           -> OutputResult

and, for a multi-platform copy, ``output.start_index`` .. one such run per image ..
``output.finish_index``. Filters are outputs that wrap an output. A layer's content
is only ever a stream; :class:`LayerData` checks every digest it can while the
output reads it.

With a layer cache (:mod:`occystrap_core.layercache`, docs/cache.md), a filter that
knows what a layer becomes asks the output behind it :meth:`ImageOutput.probe_layer`
whether that result is already there, and skips reading the layer if so.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Callable,
    ContextManager,
    Iterator,
    Mapping,
    Sequence,
)

from . import digest as digests
from . import mediatypes as mt
from . import streams
from .errors import (
    NOT_JSON,
    CorruptImageError,
    DigestMismatchError,
    OccystrapError,
    UnsupportedError,
)
from .oci import convert

if TYPE_CHECKING:
    from .engine import Selection
    from .oci.manifest import Descriptor
    from .oci.platform import Platform
    from .workers import CancelToken


#: The annotation containers/image puts on a zstd:chunked layer (its table of contents).
ZSTD_CHUNKED_TOC = "io.containers.zstd-chunked.manifest-checksum"


@dataclass(frozen=True)
class Layer:
    """One layer as the source stores it.

    ``digest``/``size``/``media_type`` describe the stored blob (compressed or not);
    ``diff_id``/``uncompressed_size`` describe the uncompressed tar. When a source
    stores uncompressed tars, ``digest == diff_id``. Unknown values are None. An
    artifact's layers need not be tars at all (see :attr:`is_tar`).
    """

    index: int
    media_type: str
    digest: str | None
    size: int | None
    diff_id: str | None = None
    uncompressed_size: int | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_descriptor(cls, index: int, descriptor: Descriptor,
                        diff_id: str | None = None) -> Layer:
        uncompressed = mt.compression_of(descriptor.media_type) == "none"
        return cls(index, descriptor.media_type, descriptor.digest, descriptor.size,
                   diff_id, descriptor.size if uncompressed else None, descriptor.urls,
                   descriptor.annotations)

    @property
    def compression(self) -> str | None:
        """gzip, zstd or none for a tar layer; None when it is not a tar."""
        return mt.compression_of(self.media_type)

    @property
    def is_tar(self) -> bool:
        """A file system layer (a tar, compressed or not), rather than an artifact's blob."""
        return self.compression is not None

    @property
    def foreign(self) -> bool:
        """A non-distributable layer: its blob normally lives at ``urls``."""
        return self.media_type in mt.FOREIGN

    def as_descriptor(self) -> Descriptor:
        """The stored blob's descriptor in the manifest model."""
        from .oci.manifest import Descriptor

        return Descriptor(self.media_type, self.digest or "", self.size or 0, self.urls,
                          self.annotations)

    def descriptor(self, family: str | None = None) -> dict[str, Any]:
        """Its descriptor; ``family="oci"`` gives Docker media types their OCI names."""
        media_type = convert.oci_type(self.media_type) if family == "oci" else self.media_type
        d: dict[str, Any] = {"mediaType": media_type, "size": self.size, "digest": self.digest}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class Image:
    """An image (or an artifact): config bytes, layer descriptors and, when unchanged,
    the source manifest.

    ``name`` is the full repository name as the source knows it (for example
    ``registry.example.com:5000/team/app``), ``tag`` its tag; either may be None.
    ``manifest`` holds the source's manifest bytes only while the image is
    unchanged, so an output may copy it byte for byte; :meth:`evolve` drops it.
    ``extras`` keeps its annotations, subject and artifactType for a rebuilt one.
    """

    name: str | None
    tag: str | None
    config: bytes
    layers: tuple[Layer, ...]
    config_media_type: str = mt.OCI_CONFIG
    manifest: bytes | None = None
    manifest_media_type: str | None = None
    platform: Platform | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def config_json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.config)
        except NOT_JSON as e:
            raise CorruptImageError(f"image config is not JSON: {e}") from None
        if not isinstance(value, dict):
            raise CorruptImageError("image config is not a JSON object")
        return value

    @cached_property
    def config_digest(self) -> str:
        return digests.of_bytes(self.config)

    @cached_property
    def manifest_digest(self) -> str | None:
        return digests.of_bytes(self.manifest) if self.manifest is not None else None

    @property
    def is_artifact(self) -> bool:
        """Not a container image: an SBOM, a signature, a Helm chart..."""
        return self.config_media_type not in mt.IMAGE_CONFIGS

    @property
    def artifact_type(self) -> str | None:
        """What an artifact is (its artifactType, else its config's media type)."""
        if not self.is_artifact and "artifactType" not in self.extras:
            return None
        return str(self.extras.get("artifactType") or self.config_media_type)

    @property
    def family(self) -> str:
        """``"oci"`` or ``"docker"``: the media-type family of the source."""
        if self.manifest_media_type:
            return mt.family_of(self.manifest_media_type)
        return "docker" if self.config_media_type == mt.DOCKER_CONFIG else "oci"

    @property
    def diff_ids(self) -> list[str]:
        if self.is_artifact:
            return []
        return list(self.config_json.get("rootfs", {}).get("diff_ids", []))

    @property
    def reference(self) -> str | None:
        """``name:tag`` (or just ``name``), for display and archive tags."""
        if not self.name:
            return None
        return f"{self.name}:{self.tag}" if self.tag else self.name

    def refuse_non_tar(self, what: str) -> None:
        """Raise for an output or filter that works on file system layers only: an
        artifact's blobs are none, even those typed as tars (oras types files so)."""
        odd = [l for l in self.layers if not l.is_tar]
        if odd or self.is_artifact:
            kind = f"an artifact ({self.artifact_type})" if self.is_artifact else \
                f"an image with a layer that is no tar ({odd[0].media_type})"
            raise UnsupportedError(f"{what} works on file system layers; "
                                   f"{self.reference or 'the source'} is {kind}")

    def evolve(self, **changes: Any) -> Image:
        """A changed copy; the source manifest is dropped unless passed explicitly."""
        changes.setdefault("manifest", None)
        changes.setdefault("manifest_media_type", None if changes["manifest"] is None
                           else self.manifest_media_type)
        return replace(self, **changes)

    def build_manifest(self, layers: list[Layer] | None = None,
                       family: str | None = None) -> tuple[bytes, str]:
        """Serialise a manifest for ``layers`` (default: ``self.layers``) in ``family``
        (default: the source's; OCI also names Docker layer types the OCI way)."""
        fam = family or self.family
        config_type = self.config_media_type if self.is_artifact else mt.config_type(fam)
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.manifest_type(fam),
                               **({"artifactType": self.extras["artifactType"]}
                                  if "artifactType" in self.extras and fam == "oci" else {}),
                               "config": {"mediaType": config_type,
                                          "size": len(self.config),
                                          "digest": self.config_digest},
                               "layers": [l.descriptor(fam) for l in (layers or self.layers)]}
        if fam == "oci":
            doc.update({k: self.extras[k] for k in ("subject", "annotations")
                        if k in self.extras})
        return json.dumps(doc, separators=(",", ":")).encode(), mt.manifest_type(fam)


class LayerData:
    """A layer's content handed to an output. Open it once, read it to the end.

    :meth:`open_blob` yields the stored bytes, checked against ``layer.digest`` and
    ``layer.size``; :meth:`open_tar` yields the uncompressed tar, checked against
    ``layer.diff_id`` as well. A mismatch raises at EOF. Once the tar was read to
    the end, ``tar_digest`` and ``tar_size`` hold what was computed, so an output
    needing the diff_id does not hash the layer a second time.

    ``on_bytes`` hears of each byte of the blob once: when an output opens it again
    (an upload retried from the start), bytes already reported are not reported again.
    Reading raises :class:`~occystrap_core.workers.Cancelled` once ``cancel`` is set.
    """

    def __init__(self, layer: Layer, opener: Callable[[], ContextManager[streams.Readable]],
                 on_bytes: Callable[[int], None] | None = None,
                 cancel: CancelToken | None = None):
        self.layer = layer
        self._opener = opener
        self._on_bytes = on_bytes
        self._cancel = cancel
        self._reported = 0  # the furthest any opening has read
        self.tar_digest: str | None = None
        self.tar_size: int | None = None

    @contextlib.contextmanager
    def open_blob(self) -> Iterator[streams.HashingReader]:
        position = 0

        def advance(n: int) -> None:
            nonlocal position
            if self._cancel is not None:
                self._cancel.check()  # an interrupt, or another layer failed: stop here
            position += n
            if position > self._reported and self._on_bytes:
                self._on_bytes(position - self._reported)
            self._reported = max(self._reported, position)

        with self._opener() as raw:
            yield streams.HashingReader(raw, self.layer.digest, self.layer.size,
                                        what=f"layer {self.layer.index} blob",
                                        on_bytes=advance)

    @contextlib.contextmanager
    def open_tar(self) -> Iterator[BinaryIO]:
        """The uncompressed tar; compression comes from the media type or the magic."""
        with self.open_blob() as blob:
            buf = streams.buffered(blob)
            compression = streams.sniff(buf)
            if compression == "none" and self.layer.diff_id == self.layer.digest:
                tar = blob  # already verified as the blob
                yield buf
            else:
                # on a codec error, a wrong blob digest explains it better: drain checks that
                plain = streams.decompressing(buf, compression,
                                              what=f"layer {self.layer.index}",
                                              before_error=blob.drain)
                what = f"layer {self.layer.index} diff_id"
                if ZSTD_CHUNKED_TOC in self.layer.annotations:
                    what += (" (a zstd:chunked layer, whose config may list the diff_id "
                             "from before its conversion, as skopeo 1.9 writes it)")
                tar = streams.HashingReader(plain, self.layer.diff_id,
                                            self.layer.uncompressed_size, what=what)
                yield streams.buffered(tar)
            if tar.complete:
                self.tar_digest, self.tar_size = tar.digest, tar.count


@dataclass
class OutputResult:
    """What an output reports when it finishes.

    ``manifest_size``/``manifest_media_type`` describe the manifest written, so that
    an index listing it can be rewritten; outputs that cannot hold an index may
    leave them None.
    """

    location: str
    manifest_digest: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    manifest_size: int | None = None
    manifest_media_type: str | None = None
    #: the manifest's bytes, when the output wrote one (small): the layer cache
    #: remembers them for the next copy of the same source through the same chain
    manifest: bytes | None = None


@dataclass(frozen=True)
class ManifestSummary:
    """What a source knows from its manifest alone, before fetching the config.

    ``layers`` carry no diff_ids (those are in the config); an index has none.
    ``artifact``: not a container image (its config says so), so its blobs are copied
    as they are, even one typed as a tar.
    """

    digest: str
    media_type: str
    layers: tuple[Layer, ...] = ()
    artifact: bool = False


@dataclass(frozen=True)
class IndexEntry:
    """One manifest an index lists; the engine knows how to read it."""

    descriptor: Mapping[str, Any]
    open: Callable[[], Any]

    @property
    def digest(self) -> str:
        return str(self.descriptor["digest"])


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform index to copy whole: its bytes as the source holds them, and
    the entries to copy (all of them, or the platforms asked for, in index order).
    ``name``/``tag`` as in :class:`Image`."""

    data: bytes
    media_type: str
    entries: tuple[IndexEntry, ...]
    name: str | None = None
    tag: str | None = None

    def build(self, written: Mapping[str, Mapping[str, Any]] | None = None
              ) -> tuple[bytes, str]:
        """The index to write, and its media type. ``written`` maps a source entry's
        digest to the ``digest``/``size``/``mediaType`` of the manifest written
        instead of it.

        Unchanged (every entry kept, none rewritten), it is the source bytes, so the
        index keeps its digest; otherwise the same document listing the new entries,
        an OCI index as soon as it lists an OCI manifest.
        """
        try:
            doc = json.loads(self.data)
        except NOT_JSON as e:
            raise CorruptImageError(f"image index is not JSON: {e}") from None
        entries = [{**e.descriptor, **(written or {}).get(e.digest, {})} for e in self.entries]
        media_type = convert.index_media_type(
            self.media_type, [str(e.get("mediaType")) for e in entries])
        if entries == doc.get("manifests") and media_type == self.media_type:
            return self.data, media_type
        return convert.index_document({**doc, "manifests": entries}, media_type), media_type


class Mounted:
    """The type of :data:`MOUNTED`; ``Mounted(repository)`` also says where from."""

    def __init__(self, source: str | None = None):
        self.source = source

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Mounted({self.source!r})" if self.source else "MOUNTED"


#: What :meth:`ImageOutput.wants_layer` returns for a layer the destination got
#: without reading it (a cross-repository mount): falsy like False, but counted as
#: mounted rather than skipped. Test with ``isinstance(x, Mounted)``: an output may
#: return a ``Mounted(repository)`` of its own, naming the repository it mounted from.
MOUNTED = Mounted()


class _Source:
    """What every source has: a name, a selection, and a lifetime."""

    #: May layers be read from several threads at once?
    parallel: bool = True
    #: What the reference names (for outputs that record names), when it names one.
    name: str | None = None
    tag: str | None = None
    #: Which platforms to copy: set from the URI and the run's options when built.
    selection: Selection | None = None
    #: How to name the source in messages (its URI, redacted, when built from one).
    where: str = "the source"

    def close(self) -> None:
        """Release connections and temporary files."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Fetched:
    """A manifest or index as a source holds it: its bytes, and the media type the
    source gives them (a Content-Type, an index entry's), if any."""

    data: bytes
    media_type: str | None = None


class ImageSource(_Source, ABC):
    """A source of manifests and blobs: a registry repository, an OCI layout.

    The engine asks for the manifest or index the reference names, then for the
    manifests of an index by digest, and for blobs; it picks platforms, walks
    indexes and verifies every digest itself.
    """

    @abstractmethod
    def manifest(self, digest: str | None = None) -> Fetched:
        """The manifest or index the reference names (``digest`` None), or the one
        with ``digest`` (verified against it); raise ImageNotFoundError if absent."""

    @abstractmethod
    def open_blob(self, descriptor: Descriptor) -> ContextManager[BinaryIO]:
        """The stored bytes of a blob (the engine verifies them)."""

    def read_blob(self, descriptor: Descriptor, limit: int, what: str) -> bytes:
        """A small blob (a config) whole, at most ``limit`` bytes, verified against
        ``descriptor``; ``what`` names it in errors. Override when the source has a
        cheaper way."""
        if descriptor.size > limit:
            raise CorruptImageError(f"{what} is {descriptor.size} bytes; more than {limit} "
                                    f"is not believable")
        with self.open_blob(descriptor) as f:
            data = f.read(limit + 1)
        actual = digests.of_bytes(data, descriptor.digest.split(":", 1)[0])
        if actual != descriptor.digest:
            raise DigestMismatchError(what, descriptor.digest, actual)
        if len(data) != descriptor.size:
            raise CorruptImageError(f"{what}: size mismatch, expected {descriptor.size} "
                                    f"bytes, got {len(data)}")
        return data

    def open_layer(self, layer: Layer) -> ContextManager[BinaryIO]:
        return self.open_blob(layer.as_descriptor())

    def manifest_digest(self) -> str | None:
        """The digest of what the reference names, None when the source lacks it.
        Sources with a cheaper way than fetching it (a registry's HEAD, which Docker
        Hub does not count against pull limits) override this."""
        from .errors import ImageNotFoundError

        try:
            return digests.of_bytes(self.manifest().data)
        except ImageNotFoundError:
            return None

    def blob_size(self, digest: str) -> int | None:
        """The size of the blob ``digest``, None when the source does not hold it
        (for serving blobs, as the proxy does, without reading them first)."""
        raise UnsupportedError(f"{self.where} cannot tell which blobs it holds")

    def referrers(self, digest: str) -> list[Descriptor]:
        """The manifests whose ``subject`` is ``digest`` (signatures, SBOMs...), as a
        referrers index lists them (:mod:`occystrap_core.oci.referrers`); raise
        UnsupportedError if the source cannot tell. Callers keep the types they want
        (``referrers.of_types``: an entry may not name its type)."""
        raise UnsupportedError(f"{self.where} cannot list referrers")

    def sibling(self, tag: str) -> ImageSource:
        """The same repository (or layout) at ``tag``, as a source of its own (cosign's
        legacy ``sha256-<hex>.sig`` tags sit beside the image they sign)."""
        raise UnsupportedError(f"{self.where} has no other tags to read")


class ImageInput(_Source, ABC):
    """A source of one image that has no manifests of its own (an archive from
    ``docker save``, a daemon): it gives the image, and its layers."""

    @abstractmethod
    def image(self) -> Image:
        """The image's metadata and config, without reading layer contents."""

    @abstractmethod
    def open_layer(self, layer: Layer) -> ContextManager[BinaryIO]:
        """Open the stored bytes of ``layer`` (the engine verifies them)."""


class ImageOutput(ABC):
    """A destination for one image.

    ``add_layer`` is called from several threads at once unless
    ``requires_ordered_layers`` is true, in which case it is called in manifest order
    from one thread. On failure the pipeline calls :meth:`abort`, which must leave
    no partial output behind.
    """

    requires_ordered_layers: bool = False

    def start(self, image: Image) -> None:
        """Called once, before any layer. An image with its source ``manifest`` is
        what :meth:`finish` gets, config included; a filter that will change it
        starts its output with the manifest dropped (as :meth:`Image.evolve` does)."""

    def existing_manifest(self, summary: ManifestSummary) -> OutputResult | None:
        """The result, when the destination already holds exactly what copying the
        manifest ``summary`` describes would write (nothing is read then); None
        (the default) when it does not, or cannot tell."""
        return None

    def wants_layer(self, layer: Layer) -> bool | Mounted:
        """False when the destination already holds ``layer`` (it is then not read);
        :data:`MOUNTED` when it just got it some other way."""
        return True

    def probe_layer(self, layer: Layer) -> bool | Mounted:
        """Like :meth:`wants_layer`, asked by a filter about a layer it could produce
        without reading its input (a layer-cache hit). True (the default) promises
        nothing and leaves no trace: no claim, no upload session; the filter then
        works as usual. False (held) or :data:`MOUNTED` (just mounted) commits the
        output to ``layer`` as this image's layer at ``layer.index``: it will not be
        offered again, and :meth:`finish` gets it in the image."""
        return True

    @property
    def cache_identity(self) -> str | None:
        """For the layer cache: a string naming everything this output (with the
        filters it wraps) does to an image's bytes, so that the same source manifest
        through the same identity gives the same manifest. None (the default): not
        cacheable; :meth:`adopt_manifest` is then never called."""
        return None

    def adopt_manifest(self, data: bytes, media_type: str) -> OutputResult | None:
        """With a layer cache: ``data`` is the manifest this output's chain wrote before
        from the same source manifest. If every blob it names is in the destination,
        or can be mounted there, write the manifest and return the result (its
        ``details["mounted"]``: how many layers were mounted); else None, having
        changed nothing a later copy could trip on. Called instead of :meth:`start`
        .. :meth:`finish`; the default is None."""
        return None

    @abstractmethod
    def add_layer(self, data: LayerData) -> bool | Mounted | None:
        """Consume one layer. May return False (or :data:`MOUNTED`) when, its digest
        known only now, the destination turned out to hold it (or mounted it);
        None or True count it as transferred."""

    @abstractmethod
    def finish(self, image: Image) -> OutputResult:
        """Write config and manifest for ``image`` (as changed by filters) and commit."""

    def start_index(self, index: ImageIndex) -> None:
        """Called before the images of an index; each then goes through
        :meth:`start` .. :meth:`finish` as a child of the index. Indexes may nest:
        ``start_index`` .. ``finish_index`` pairs nest like parentheses."""
        raise UnsupportedError(f"{type(self).__name__} cannot hold a multi-platform "
                               f"index; pick one platform with --platform")

    def finish_index(self, index: ImageIndex, data: bytes) -> OutputResult:
        """Write the index ``data`` (``index.media_type``) after all its images; a
        nested index is written like an image of its parent (by digest)."""
        raise UnsupportedError(f"{type(self).__name__} cannot hold a multi-platform index")

    def sibling(self, tag: str) -> ImageOutput:
        """An output for the same destination at another ``tag``, without filters."""
        raise UnsupportedError(f"{type(self).__name__} cannot write other tags")

    @property
    def holds_referrers(self) -> bool:
        """Whether the destination can hold manifests by digest alone, naming no tag
        (the referrers of the image copied: a signature, an SBOM), through
        :meth:`by_digest`. Asked before anything is written, so that a copy with its
        referrers to a destination that cannot hold them is refused first. False by
        default; an output that sets it True implements :meth:`by_digest`."""
        return False

    def by_digest(self) -> ContextManager[None]:
        """Within the block, manifests are written by digest alone, naming no tag (the
        referrers of the image copied: a signature, an SBOM); like an index's images.
        Raise UnsupportedError when the output cannot hold such manifests
        (:attr:`holds_referrers` is False)."""
        raise UnsupportedError(f"{type(self).__name__} cannot hold referrers")

    # --- registry operations (occystrap tag, delete): not part of a copy -------

    def put_manifest(self, data: bytes, media_type: str) -> OutputResult:
        """Write the manifest or index ``data`` under this output's tag, byte for byte,
        the blobs (and an index's manifests) it names being there already: one manifest
        write and nothing else (``occystrap tag``). Raise UnsupportedError when the
        destination cannot hold a manifest alone."""
        raise UnsupportedError(f"{type(self).__name__} cannot add a tag to what it holds")

    def delete_tag(self) -> None:
        """Remove this output's tag, leaving the manifest it names and every other tag
        (``occystrap delete``); raise ImageNotFoundError when there is no such tag, and
        UnsupportedError when the destination cannot delete a tag alone."""
        raise UnsupportedError(f"{type(self).__name__} cannot delete tags")

    def delete_manifest(self, digest: str) -> None:
        """Remove the manifest ``digest`` of this output's repository, and with it every
        tag naming it (``occystrap delete --manifest``); raise ImageNotFoundError when
        it is not there, UnsupportedError when the destination cannot delete it."""
        raise UnsupportedError(f"{type(self).__name__} cannot delete manifests")

    def abort(self) -> None:
        """Undo partial work after a failure."""

    def verify(self) -> list[str] | None:
        """After :meth:`finish`: re-read what was written and list what is wrong.

        Re-derive (re-hash) the output rather than trusting bookkeeping. An empty
        list means verified; None (the default) that this output cannot verify.
        """
        return None


class ImageFilter(ImageOutput):
    """An output that wraps another output. The default passes everything through.

    A filter whose output bytes depend only on its input bytes and options sets
    ``cacheable``; :func:`occystrap_core.pipeline.build_output` then gives it its
    ``step`` (:func:`occystrap_core.layercache.filter_step`), and the layer cache may
    reuse what it wrote. A filter that must see every layer (``search``), or whose
    result depends on anything else (the time, a file), leaves it False.
    """

    cacheable: bool = False
    #: the filter's step identity in the layer cache; set when built, if cacheable
    step: str | None = None

    def __init__(self, inner: ImageOutput):
        self.inner = inner

    @property
    def requires_ordered_layers(self) -> bool:
        return self.inner.requires_ordered_layers

    @requires_ordered_layers.setter
    def requires_ordered_layers(self, value: bool) -> None:
        self.inner.requires_ordered_layers = value

    def start(self, image: Image) -> None:
        self.inner.start(image)

    def wants_layer(self, layer: Layer) -> bool | Mounted:
        return self.inner.wants_layer(layer)

    def probe_layer(self, layer: Layer) -> bool | Mounted:
        # a filter that is not cacheable may need to see the layer (search does)
        return self.inner.probe_layer(layer) if self.cacheable else True

    @property
    def cache_identity(self) -> str | None:
        inner = self.inner.cache_identity
        if not self.cacheable or self.step is None or inner is None:
            return None
        return f"{self.step} | {inner}"

    def adopt_manifest(self, data: bytes, media_type: str) -> OutputResult | None:
        if self.cache_identity is None:
            return None
        return self.inner.adopt_manifest(data, media_type)

    # existing_manifest stays None: a filter may change the image, so what the
    # destination holds says nothing about what this run would write.

    def start_index(self, index: ImageIndex) -> None:
        self.inner.start_index(index)

    def finish_index(self, index: ImageIndex, data: bytes) -> OutputResult:
        return self.inner.finish_index(index, data)

    def add_layer(self, data: LayerData) -> bool | Mounted | None:
        return self.inner.add_layer(data)

    def finish(self, image: Image) -> OutputResult:
        return self.inner.finish(image)

    @property
    def holds_referrers(self) -> bool:
        return self.inner.holds_referrers

    def by_digest(self) -> ContextManager[None]:
        return self.inner.by_digest()

    def abort(self) -> None:
        self.inner.abort()

    def verify(self) -> list[str] | None:
        return self.inner.verify()


@dataclass(frozen=True)
class BulkItem:
    """One image of an :class:`ImageSet`.

    ``uri`` is a single-image source URI (``registry://quay.io/ns/app:1.0``) built like
    any SOURCE, through the URI resolution hook. ``fields`` fill the destination
    template (``registry://mirror/{namespace}/{repo}:{tag}``). ``error`` is set when
    the image could not even be listed; the core reports it as a failed image.
    """

    uri: str
    fields: Mapping[str, str]
    error: str | None = None


class ImageSet(ABC):
    """A source that expands to many images (``quay://NAMESPACE/*``).

    An input factory may return one instead of an :class:`ImageInput`. ``process``
    then copies every image to a destination template, ``-J`` images at once in the
    run's one Context, and ``info`` describes each; a failing image does not stop the
    others. Context manager, like :class:`ImageInput`.
    """

    @abstractmethod
    def images(self) -> Iterator[BulkItem]:
        """The images, in a stable order; listing failures raise OccystrapError."""

    def close(self) -> None:
        """Release anything the listing holds (HTTP clients belong to the Context)."""

    def __enter__(self) -> ImageSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageLister(ABC):
    """Lists what one registry API holds, for many-image sources and ``sync``.

    A lister hook (``occystrap_listers``) builds one for a source URI such as
    ``registry://HOST/REPO_GLOB:TAG_GLOB`` or ``quay://NAMESPACE/...``; the part of the
    URI before the first ``/`` (the host, the namespace) is its root, and repository
    names are relative to it. The core does the matching (:mod:`occystrap_core.listing`).
    Listing failures raise OccystrapError.
    """

    @abstractmethod
    def repositories(self) -> Iterator[str]:
        """Every repository under the root the credentials may see (a catalog)."""

    @abstractmethod
    def tags(self, repository: str) -> Iterator[str]:
        """Every tag of ``repository``."""

    @abstractmethod
    def item(self, repository: str, tag: str) -> BulkItem:
        """The single-image source for ``repository:tag`` and its template fields."""

    def digest(self, repository: str, tag: str) -> str | None:
        """The digest ``repository:tag`` points at, None when it is missing or
        :attr:`knows_digests` is False. ``sync`` asks this of sources and destinations
        (one HEAD each) to skip unchanged tags without reading them."""
        return None

    #: Whether :meth:`digest` answers; without it every tag goes through the engine.
    knows_digests = False

    #: Whether :meth:`repositories` lists repositories whose tags the credentials may
    #: not read (Quay adds every public one): such a repository a glob matches is
    #: skipped with a warning, not failed (:func:`occystrap_core.listing.readable`).
    lists_unreadable = False

    def repository(self, target: str) -> str:
        """The repository, relative to the root, that a single-image URI target names
        (``ROOT/REPO[:TAG|@DIGEST]``): what :meth:`tags` takes (``occystrap tags``)."""
        from .listing import split_pattern

        return split_pattern(target.partition("@")[0]).repositories

    def delete(self, repository: str, tag: str) -> None:
        """Remove the tag ``repository:tag`` (``sync --prune``), leaving every other tag
        as it is; raise OccystrapError when that cannot be done."""
        raise UnsupportedError(f"{type(self).__name__} cannot delete tags")

    def delete_tags(self, repository: str, tags: Sequence[str]
                    ) -> dict[str, OccystrapError | None]:
        """Remove several tags of ``repository`` (what ``sync --prune`` does), leaving
        every other tag as it is: each tag's error, None for those removed. By default
        :meth:`delete` one by one; a registry that deletes manifests, not tags, can
        delete a manifest these tags share with no other."""
        done: dict[str, OccystrapError | None] = {}
        for tag in tags:
            try:
                self.delete(repository, tag)
                done[tag] = None
            except OccystrapError as e:
                done[tag] = e
        return done

    def close(self) -> None:
        """Release anything the lister holds (HTTP clients belong to the Context)."""
