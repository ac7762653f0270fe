"""The image model and the interfaces inputs, outputs and filters implement.

The pipeline is::

    input.image()                        -> Image (config, layer descriptors, manifest)
    output.start(image)
    for each layer output.wants_layer():  output.add_layer(LayerData)   # maybe in threads
    output.finish(final_image)           -> OutputResult

Filters are outputs that wrap an output. A layer's content is only ever a stream;
:class:`LayerData` checks every digest it can while the output reads it.

Two optional extensions (the pipeline uses them when both sides implement them):

- warm no-op: ``input.manifest_summary()`` and ``output.existing_manifest(summary)``
  let a copy stop before the config is fetched when the destination already holds
  the manifest;
- indexes: an input whose ``index()`` is not None is copied one image per entry
  (``output.start_index``, then each child through the pipeline, then
  ``output.finish_index`` with the index bytes).
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, ContextManager, Iterator, Mapping

from . import digest as digests
from . import mediatypes as mt
from . import streams
from .errors import CorruptImageError, UnsupportedError

if TYPE_CHECKING:
    from .types import Platform
    from .workers import CancelToken


@dataclass(frozen=True)
class Layer:
    """One layer as the source stores it.

    ``digest``/``size``/``media_type`` describe the stored blob (compressed or not);
    ``diff_id``/``uncompressed_size`` describe the uncompressed tar. When a source
    stores uncompressed tars, ``digest == diff_id``. Unknown values are None.
    """

    index: int
    media_type: str
    digest: str | None
    size: int | None
    diff_id: str | None = None
    uncompressed_size: int | None = None
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def compression(self) -> str | None:
        return mt.compression_of(self.media_type)

    @property
    def foreign(self) -> bool:
        """A non-distributable layer: its blob normally lives at ``urls``."""
        return self.media_type in mt.FOREIGN

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class Image:
    """An image: config bytes, layer descriptors and, when unchanged, the source manifest.

    ``name`` is the full repository name as the source knows it (for example
    ``registry.example.com:5000/team/app``), ``tag`` its tag; either may be None.
    ``manifest`` holds the source's manifest bytes only while the image is
    unchanged, so an output may copy it byte for byte; :meth:`evolve` drops it.
    """

    name: str | None
    tag: str | None
    config: bytes
    layers: tuple[Layer, ...]
    config_media_type: str = mt.OCI_CONFIG
    manifest: bytes | None = None
    manifest_media_type: str | None = None
    platform: Platform | None = None

    @cached_property
    def config_json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.config)
        except ValueError as e:
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
    def family(self) -> str:
        """``"oci"`` or ``"docker"``: the media-type family of the source."""
        return mt.family_of(self.manifest_media_type or self.config_media_type)

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config_json.get("rootfs", {}).get("diff_ids", []))

    @property
    def reference(self) -> str | None:
        """``name:tag`` (or just ``name``), for display and archive tags."""
        if not self.name:
            return None
        return f"{self.name}:{self.tag}" if self.tag else self.name

    def evolve(self, **changes: Any) -> Image:
        """A changed copy; the source manifest is dropped unless passed explicitly."""
        changes.setdefault("manifest", None)
        changes.setdefault("manifest_media_type", None if changes["manifest"] is None
                           else self.manifest_media_type)
        return replace(self, **changes)

    def build_manifest(self, layers: list[Layer] | None = None,
                       family: str | None = None) -> tuple[bytes, str]:
        """Serialise an image manifest for ``layers`` (default: ``self.layers``)."""
        fam = family or self.family
        config_type = mt.config_type(fam)
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.manifest_type(fam),
                               "config": {"mediaType": config_type,
                                          "size": len(self.config),
                                          "digest": self.config_digest},
                               "layers": [l.descriptor() for l in (layers or self.layers)]}
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

    def __init__(self, layer: Layer, opener: Callable[[], ContextManager[BinaryIO]],
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
                tar = streams.HashingReader(plain, self.layer.diff_id,
                                            self.layer.uncompressed_size,
                                            what=f"layer {self.layer.index} diff_id")
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


@dataclass(frozen=True)
class ManifestSummary:
    """What a source knows from its manifest alone, before fetching the config.

    ``layers`` carry no diff_ids (those are in the config); an index has none.
    """

    digest: str
    media_type: str
    layers: tuple[Layer, ...] = ()


@dataclass(frozen=True)
class IndexEntry:
    """One manifest an index lists, and how to read it as an image."""

    descriptor: Mapping[str, Any]
    open: Callable[[], ImageInput]

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

    def build(self, written: Mapping[str, Mapping[str, Any]] | None = None) -> bytes:
        """The index to write. ``written`` maps a source entry's digest to the
        ``digest``/``size``/``mediaType`` of the manifest written instead of it.

        Unchanged (every entry kept, none rewritten), it is the source bytes, so the
        index keeps its digest; otherwise the same document listing the new entries.
        """
        try:
            doc = json.loads(self.data)
        except ValueError as e:
            raise CorruptImageError(f"image index is not JSON: {e}") from None
        entries = [{**e.descriptor, **(written or {}).get(e.digest, {})} for e in self.entries]
        if entries == doc.get("manifests"):
            return self.data
        doc["manifests"] = entries
        return json.dumps(doc, separators=(",", ":")).encode()


class _Mounted:
    """The type of :data:`MOUNTED`."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "MOUNTED"


#: What :meth:`ImageOutput.wants_layer` returns for a layer the destination got
#: without reading it (a cross-repository mount): falsy like False, but counted as
#: mounted rather than skipped.
MOUNTED = _Mounted()


class ImageInput(ABC):
    """A source of one image. Context manager; :meth:`close` releases everything."""

    #: May :meth:`open_layer` be called from several threads at once?
    parallel: bool = True

    @abstractmethod
    def image(self) -> Image:
        """The image's metadata and config, without reading layer contents."""

    @abstractmethod
    def open_layer(self, layer: Layer) -> ContextManager[BinaryIO]:
        """Open the stored bytes of ``layer`` (the core verifies them)."""

    def platforms(self) -> list[Platform] | None:
        """The platforms of the index the image was picked from, for ``info``.

        None (the default) when the source has no index or cannot list it.
        """
        return None

    def manifest_summary(self) -> ManifestSummary | None:
        """The manifest :meth:`image` will return, if the source can tell cheaply
        (without the config). None (the default) when it cannot."""
        return None

    def index(self) -> ImageIndex | None:
        """The index to copy whole, when the user asked for several platforms and
        the source is an index; None (the default) to copy one image. An entry that
        is itself an index opens as an input whose ``index()`` returns it."""
        return None

    def close(self) -> None:
        """Release connections and temporary files."""

    def __enter__(self) -> ImageInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageOutput(ABC):
    """A destination for one image.

    ``add_layer`` is called from several threads at once unless
    ``requires_ordered_layers`` is true, in which case it is called in manifest order
    from one thread. On failure the pipeline calls :meth:`abort`, which must leave
    no partial output behind.
    """

    requires_ordered_layers: bool = False

    def start(self, image: Image) -> None:
        """Called once, before any layer."""

    def existing_manifest(self, summary: ManifestSummary) -> OutputResult | None:
        """The result, when the destination already holds exactly what copying the
        manifest ``summary`` describes would write (nothing is read then); None
        (the default) when it does not, or cannot tell."""
        return None

    def wants_layer(self, layer: Layer) -> bool | _Mounted:
        """False when the destination already holds ``layer`` (it is then not read);
        :data:`MOUNTED` when it just got it some other way."""
        return True

    @abstractmethod
    def add_layer(self, data: LayerData) -> bool | _Mounted | None:
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

    def abort(self) -> None:
        """Undo partial work after a failure."""

    def verify(self) -> list[str] | None:
        """After :meth:`finish`: re-read what was written and list what is wrong.

        Re-derive (re-hash) the output rather than trusting bookkeeping. An empty
        list means verified; None (the default) that this output cannot verify.
        """
        return None


class ImageFilter(ImageOutput):
    """An output that wraps another output. The default passes everything through."""

    def __init__(self, inner: ImageOutput):
        self.inner = inner

    @property  # type: ignore[override]
    def requires_ordered_layers(self) -> bool:
        return self.inner.requires_ordered_layers

    def start(self, image: Image) -> None:
        self.inner.start(image)

    def wants_layer(self, layer: Layer) -> bool | _Mounted:
        return self.inner.wants_layer(layer)

    # existing_manifest stays None: a filter may change the image, so what the
    # destination holds says nothing about what this run would write.

    def start_index(self, index: ImageIndex) -> None:
        self.inner.start_index(index)

    def finish_index(self, index: ImageIndex, data: bytes) -> OutputResult:
        return self.inner.finish_index(index, data)

    def add_layer(self, data: LayerData) -> bool | _Mounted | None:
        return self.inner.add_layer(data)

    def finish(self, image: Image) -> OutputResult:
        return self.inner.finish(image)

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
