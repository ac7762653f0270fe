"""The copy engine: for every pair of schemes, in one place, it reads manifests with
the one model, walks indexes and picks platforms with the one matcher, finds warm
no-ops, builds images and delivers their layers to the output.

Sources (:class:`~occystrap_core.api.ImageSource`) only answer "the manifest the
reference names, or the one with this digest" and "open this blob"; outputs
(:class:`~occystrap_core.api.ImageOutput`) only write what they are given.
Format conversions that depend on the destination (a Docker manifest list into an
OCI layout, zstd layers under a Docker manifest) follow :mod:`occystrap_core.oci.convert`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, ContextManager

from . import digest as digests
from . import mediatypes as mt
from .api import (
    Image,
    ImageFilter,
    ImageIndex,
    ImageInput,
    ImageOutput,
    ImageSource,
    IndexEntry,
    Layer,
    LayerData,
    ManifestSummary,
    Mounted,
    OutputResult,
)
from .context import Context, Settings
from .errors import (
    CorruptImageError,
    DigestMismatchError,
    ImageNotFoundError,
    OccystrapError,
    PlatformMismatchError,
    UnsupportedError,
)
from .oci import platform as platforms
from .oci import referrers
from .oci.manifest import Index, Manifest, parse
from .oci.platform import Platform
from .types import OptionSpec
from .workers import parallel

log = logging.getLogger("occystrap.engine")

MAX_DEPTH = 4  # indexes nested deeper than this are refused
# Layers asked about at once for each one transferring (-j): a layer the output holds
# already, or mounts from another repository, is one request and takes no transfer slot.
PROBES_PER_TRANSFER = 4
MAX_CONFIG = 64 * 1024 * 1024
# buildx attestation manifests name the image they describe with this annotation
REFERENCE_DIGEST = "vnd.docker.reference.digest"

#: URI options every source takes: which platforms to copy.
SELECTION_OPTIONS = (
    OptionSpec("platform", str, "OS/ARCH[/VARIANT] to pick from a multi-platform image "
               "(default: --platform, else this host)."),
    OptionSpec("platforms", str, "Comma-separated OS/ARCH[/VARIANT] list: copy these images "
               "of a multi-platform image and a rewritten index listing them (a "
               "single-platform image only if it is one of them)."),
    OptionSpec("all_platforms", bool, "Copy every image of a multi-platform image and its "
               "index, byte for byte (default: --all-platforms).", False),
    # occystrap 0.4.17's spelling of ?platform=, part by part
    OptionSpec("os", str, "Platform OS; overrides that of ?platform= or --platform."),
    OptionSpec("arch", str, "Platform architecture (also ?architecture=); overrides as ?os= "
               "does."),
    OptionSpec("architecture", str, "Same as ?arch=."),
    OptionSpec("variant", str, "Platform variant; overrides as ?os= does."),
)


@dataclass(frozen=True)
class Selection:
    """Which images of a multi-platform image to copy: the one for ``platform``, or
    ``every`` one and the index, or those of ``platforms`` and a rewritten index.
    ``chosen``: the user named ``platform`` (rather than it being this host's)."""

    platform: Platform
    every: bool = False
    platforms: tuple[Platform, ...] = ()
    chosen: bool = False

    @property
    def many(self) -> bool:
        return self.every or bool(self.platforms)

    @classmethod
    def of(cls, settings: Settings, options: Mapping[str, Any]) -> Selection:
        """From a URI's options, falling back to the run's."""
        platform = platforms.parse(options["platform"]) if options.get("platform") \
            else settings.platform
        os_, variant = options.get("os"), options.get("variant")
        arch = options.get("arch") or options.get("architecture")
        if os_ or arch or variant is not None:
            base = platform or platforms.host()
            platform = Platform(os_ or base.os, arch or base.architecture,
                                variant if variant is not None or arch else base.variant)
        listed = tuple(platforms.parse(p) for p in options["platforms"].split(",")) \
            if options.get("platforms") else ()
        every = (bool(options.get("all_platforms")) or settings.all_platforms) and not listed
        return cls(platform or platforms.host(), every, listed, chosen=platform is not None)


@dataclass(frozen=True)
class Loaded:
    """One image of a source, ready to read: for ``info``, ``check`` and ``search``.
    ``platforms`` lists those of the index it was picked from (None: no index)."""

    image: Image
    open_layer: Callable[[Layer], ContextManager[BinaryIO]]
    platforms: list[Platform] | None = None
    entries: list[dict[str, Any]] | None = None  # that index's, {digest, os, architecture...}


class Reader:
    """Reads one manifest-level source: its manifests, parsed and verified, and images."""

    def __init__(self, source: ImageSource, selection: Selection,
                 unfiltered_artifacts: bool = False):
        self.source = source
        self.selection = selection
        self.unfiltered_artifacts = unfiltered_artifacts  # see copy()
        self.where = source.where
        self._top: Manifest | Index | None = None

    def top(self) -> Manifest | Index:
        """What the reference names (fetched once)."""
        if self._top is None:
            fetched = self.source.manifest()
            self._top = parse(fetched.data, fetched.media_type, f"{self.where}: manifest")
        return self._top

    def fetch(self, digest: str) -> Manifest | Index:
        """The manifest or index with ``digest``, verified."""
        digests.validate(digest, "index entry digest")
        fetched = self.source.manifest(digest)
        actual = digests.of_bytes(fetched.data, digest.split(":", 1)[0])
        if actual != digest:
            raise DigestMismatchError(f"{self.where}: manifest {digest}", digest, actual)
        return parse(fetched.data, fetched.media_type, f"{self.where}: manifest {digest}")

    def platforms(self) -> list[Platform] | None:
        top = self.top()
        return [d.platform for d in top.manifests if d.platform] \
            if isinstance(top, Index) else None

    def entries(self) -> list[dict[str, Any]] | None:
        """The top index's entries: each one's digest and platform (None: not an index)."""
        top = self.top()
        return [{"digest": d.digest, "media_type": d.media_type,
                 **(d.platform.as_dict() if d.platform else {})}
                for d in top.manifests] if isinstance(top, Index) else None

    def pick(self, node: Manifest | Index) -> tuple[Manifest, Platform | None]:
        """The image manifest for the selection's platform, through nested indexes."""
        chosen: Platform | None = None
        for _ in range(MAX_DEPTH):
            if isinstance(node, Manifest):
                return node, chosen
            found = [d.platform for d in node.manifests]
            choice = platforms.best(self.selection.platform, found)
            if choice is None:
                nested = [d for d in node.manifests if d.media_type in mt.INDEXES]
                if len(nested) == 1 and not any(found):  # a platform-less index: look inside
                    node = self.fetch(nested[0].digest)
                    continue
                raise ImageNotFoundError(
                    f"{self.where}: no image for platform {self.selection.platform} "
                    f"(available: {platforms.describe(found)}); choose one with --platform")
            chosen = found[choice]
            node = self.fetch(node.manifests[choice].digest)
        raise UnsupportedError(f"{self.where}: indexes nested more than {MAX_DEPTH} deep")

    def plan(self, index: Index, depth: int = 0, every: bool = False) -> ImageIndex:
        """The index to copy: every entry, or those of the listed platforms and their
        attestations; nested indexes are copied whole."""
        if depth >= MAX_DEPTH:
            raise UnsupportedError(f"{self.where}: indexes nested more than {MAX_DEPTH} deep")
        entries = list(index.manifests)
        if self.selection.platforms and not every:
            entries = self._listed(index)
        return ImageIndex(index.data, index.media_type, tuple(
            IndexEntry(d.json(), functools.partial(self._child, d.digest, depth))
            for d in entries), name=self.source.name, tag=self.source.tag)

    def walk(self, node: Manifest | Index, label: str, depth: int = 0
             ) -> Iterator[tuple[str, Manifest | Index | OccystrapError]]:
        """``node`` and everything under it, depth first, each labelled by its path of
        index entries (``LABEL entry 1 entry 0``); what cannot be read is yielded as
        its error, and the walk goes on."""
        yield label, node
        if not isinstance(node, Index):
            return
        for i, entry in enumerate(node.manifests):
            sub = f"{label} entry {i}"
            if depth + 1 >= MAX_DEPTH:
                yield sub, UnsupportedError(f"{sub}: indexes nested more than {MAX_DEPTH} deep")
                continue
            try:
                child = self.fetch(entry.digest)
            except OccystrapError as e:
                yield sub, e
                continue
            yield from self.walk(child, sub, depth + 1)

    def _child(self, digest: str, depth: int) -> Manifest | ImageIndex:
        node = self.fetch(digest)
        return self.plan(node, depth + 1, every=True) if isinstance(node, Index) else node

    def _listed(self, index: Index) -> list[Any]:
        if any(d.media_type in mt.INDEXES for d in index.manifests):
            raise UnsupportedError(f"{self.where}: choosing platforms in an index that nests "
                                   f"indexes is not supported; copy them all with "
                                   f"--all-platforms, or one with --platform")
        found = [d.platform for d in index.manifests]
        kept = [d for d, p in zip(index.manifests, found, strict=True)
                if p and any(platforms.matches(w, p) for w in self.selection.platforms)]
        missing = [w for w in self.selection.platforms if not any(
            platforms.matches(w, p) for d, p in zip(index.manifests, found, strict=True)
            if d in kept and p)]
        if missing:
            raise ImageNotFoundError(
                f"{self.where}: no image for platform {', '.join(map(str, missing))} "
                f"(available: {platforms.describe(found)})")
        described = {d.digest for d in kept}
        return [d for d, p in zip(index.manifests, found, strict=True) if d in kept or (
            p is None and d.annotations.get(REFERENCE_DIGEST) in described)]

    def image(self, manifest: Manifest, platform: Platform | None) -> Image:
        """The image (or artifact) ``manifest`` describes, its config fetched."""
        config = self.source.read_blob(manifest.config, MAX_CONFIG,
                                       f"{self.where}: image config {manifest.config.digest}")
        image = Image(name=self.source.name, tag=self.source.tag, config=config, layers=(),
                      config_media_type=manifest.config.media_type, manifest=manifest.data,
                      manifest_media_type=manifest.media_type, platform=platform,
                      extras=manifest.extras())
        diff_ids = image.diff_ids
        if not image.is_artifact and len(diff_ids) != len(manifest.layers):
            raise CorruptImageError(f"{self.where}: the manifest lists {len(manifest.layers)} "
                                    f"layers but the config has {len(diff_ids)} diff_ids")
        layers = tuple(Layer.from_descriptor(i, d, diff_ids[i] if i < len(diff_ids) else None)
                       for i, d in enumerate(manifest.layers))
        if platform is None and not image.is_artifact:
            platform = platforms.of_config(image.config_json)
        return dataclasses.replace(image, layers=layers, platform=platform)


def selection_of(ctx: Context, source: ImageSource | ImageInput) -> Selection:
    return source.selection or Selection.of(ctx.settings, {})


def load(ctx: Context, source: ImageSource | ImageInput) -> Loaded:
    """The one image a source names, for the selection's platform."""
    if isinstance(source, ImageInput):
        return Loaded(source.image(), source.open_layer)
    reader = Reader(source, selection_of(ctx, source))
    manifest, platform = reader.pick(reader.top())
    return Loaded(reader.image(manifest, platform), source.open_layer, reader.platforms(),
                  reader.entries())


def copy(ctx: Context, source: ImageSource | ImageInput, output: ImageOutput,
         unfiltered_artifacts: bool = False) -> tuple[Image | None, OutputResult]:
    """Copy what ``source`` names (one image, or an index and its images) to
    ``output``; on failure, ``output.abort()``. With ``unfiltered_artifacts``, a
    manifest without a file system (an artifact) goes beneath ``output``'s filters.

    Returns the image read, or None when none was: the destination already held it
    (a warm no-op), or an index was copied.
    """
    with ctx.unfinished(output.abort):
        return _copy(ctx, source, output, unfiltered_artifacts)


def _copy(ctx: Context, source: ImageSource | ImageInput, output: ImageOutput,
          unfiltered_artifacts: bool) -> tuple[Image | None, OutputResult]:
    try:
        if isinstance(source, ImageInput):
            image = source.image()
            _check_subset(source.where, image, selection_of(ctx, source).platforms)
            summary = _image_summary(image)
            existing = None if summary is None else _existing(ctx, output, summary)
            if existing is not None:
                return None, existing
            return image, _deliver(ctx, image, source, output)
        reader = Reader(source, selection_of(ctx, source), unfiltered_artifacts)
        top = reader.top()
        if isinstance(top, Index) and reader.selection.many:
            return None, _copy_index(ctx, reader, reader.plan(top), output)
        manifest, platform = reader.pick(top)
        return _copy_manifest(ctx, reader, manifest, platform, output,
                              reader.selection.platforms)
    except BaseException:
        try:
            output.abort()
        except Exception as e:  # the original failure matters more
            log.warning("cleanup after the failure failed too: %s", e,
                        exc_info=log.isEnabledFor(logging.DEBUG))
        raise


def probe(ctx: Context, source: ImageSource | ImageInput, output: ImageOutput,
          unfiltered_artifacts: bool = False) -> OutputResult | None:
    """What :func:`copy` would find ``output`` holds already (its unchanged result), or
    None when it would write: the reads of a warm copy (the source's manifest, the
    output's check, a layer cache's memo), and nothing written. Raises what the copy
    would before writing; under a platform subset a lone image's config is read (as a
    copy does) to raise :class:`PlatformMismatchError` for another platform."""
    if isinstance(source, ImageInput):
        image = source.image()
        _check_subset(source.where, image, selection_of(ctx, source).platforms)
        summary = _image_summary(image)
        return None if summary is None else output.existing_manifest(summary)
    reader = Reader(source, selection_of(ctx, source), unfiltered_artifacts)
    top = reader.top()
    if isinstance(top, Index) and reader.selection.many:
        return _probe_index(ctx, reader, reader.plan(top), output)
    manifest, platform = reader.pick(top)
    output, summary = _manifest_summary(reader, manifest, output)
    existing = output.existing_manifest(summary)
    cache, chain = ctx.layer_cache, output.cache_identity
    memo = cache.image(manifest.digest, chain) if existing is None and cache is not None \
        and chain is not None else None
    if memo is not None:  # what the chain wrote from it before: adopted if it is there
        existing = _beneath_filters(output).existing_manifest(
            ManifestSummary(digests.of_bytes(memo[0]), memo[1]))
    if existing is None and reader.selection.platforms:
        _check_subset(reader.where, reader.image(manifest, platform),
                      reader.selection.platforms)
    return existing


def _probe_index(ctx: Context, reader: Reader, index: ImageIndex, output: ImageOutput
                 ) -> OutputResult | None:
    """What a warm copy of ``index`` finds: the index unchanged, or the one it rewrites
    from its images as the layer cache remembers them through ``output``'s chain,
    held by the destination's tag (and with it the images it names: a registry
    refuses an index naming a manifest it lacks). An image without a memo is taken
    as unchanged: what the copy would rewrite otherwise differs from the tag's."""
    existing = output.existing_manifest(_index_summary(index))
    cache = ctx.layer_cache
    if existing is not None or cache is None:
        return existing

    def remembered(entry: IndexEntry, target: ImageOutput) -> dict[str, Any] | None:
        child = entry.open()
        if isinstance(child, ImageIndex):
            raise _Undecided  # nested: its copy tells
        target = _manifest_summary(reader, child, target)[0]
        chain = target.cache_identity
        memo = None if chain is None else cache.image(child.digest, chain)
        if memo is None or digests.of_bytes(memo[0]) == entry.digest:
            return None
        return {"mediaType": memo[1], "digest": digests.of_bytes(memo[0]),
                "size": len(memo[0])}

    try:
        _, data, media_type = _rewrite_index(index, output, remembered)
    except _Undecided:
        return None
    return _beneath_filters(output).existing_manifest(
        ManifestSummary(digests.of_bytes(data), media_type))


class _Undecided(Exception):
    """A probe cannot tell without copying."""


def _rewrite_index(index: ImageIndex, output: ImageOutput,
                   place: Callable[[IndexEntry, ImageOutput], dict[str, Any] | None]
                   ) -> tuple[ImageIndex, bytes, str]:
    """``index`` as rewritten from what ``place(entry, target)`` says became of each
    entry (its new descriptor, None when unchanged), images before their attestations;
    and its bytes and media type. An attestation goes beneath any filter (it is no file
    system), and is left out when its image was rewritten: it describes (provenance,
    SBOM) bytes the destination will not hold."""
    written: dict[str, dict[str, Any]] = {}
    dropped: set[str] = set()
    for entry in sorted(index.entries, key=lambda e: _attests(e) is not None):
        described = _attests(entry)
        if described is not None and described in written:
            dropped.add(entry.digest)
            continue
        new = place(entry, output if described is None else _beneath_filters(output))
        if new is not None:
            written[entry.digest] = new
    index = dataclasses.replace(index, entries=tuple(
        e for e in index.entries if e.digest not in dropped))
    data, media_type = index.build(written)
    return index, data, media_type


def copy_referrers(ctx: Context, source: ImageSource, output: ImageOutput,
                   subjects: Sequence[str], artifact_types: Sequence[str] = ()) -> list[str]:
    """Copy what refers to ``subjects`` in ``source`` (signatures, SBOMs, attestations),
    and what refers to those, to ``output`` by digest and unchanged; ``artifact_types``
    limits the first level (what refers to a referrer follows it). Returns the digests
    copied, breadth first."""
    reader = Reader(source, Selection(platforms.host(), every=True))
    copied: list[str] = []
    seen = set(subjects)
    pending = [(subject, True) for subject in subjects]
    while pending:
        subject, first = pending.pop(0)
        typed = first and bool(artifact_types)
        for found in source.referrers(subject):
            fetch = functools.cache(functools.partial(reader.fetch, found.digest))
            try:
                if found.digest in seen or typed and not referrers.of_types(
                        found, artifact_types, fetch):
                    continue
                node = fetch()
            except ImageNotFoundError:
                # a fallback index is kept by clients: deleting a signature leaves its entry
                log.warning("%s is listed as a referrer of %s but missing: not copied",
                            found.digest, subject)
                continue
            if node.subject is None or node.subject.digest != subject:
                # a fallback tag's index is anyone's to write: only what names the
                # subject refers to it (and may still be listed by its own subject)
                log.warning("%s is listed as a referrer of %s but does not name it as its "
                            "subject: not copied", found.digest, subject)
                continue
            seen.add(found.digest)
            with output.by_digest():
                if isinstance(node, Index):
                    _copy_index(ctx, reader, reader.plan(node, every=True), output)
                else:
                    _copy_manifest(ctx, reader, node, None, output)
            copied.append(found.digest)
            pending.append((found.digest, False))
    return copied


def _copy_manifest(ctx: Context, reader: Reader, manifest: Manifest,
                   platform: Platform | None, output: ImageOutput,
                   subset: Sequence[Platform] = ()) -> tuple[Image | None, OutputResult]:
    """One image; ``subset``: the platforms asked for, which a single-platform image
    (not an index's) must be one of."""
    output, summary = _manifest_summary(reader, manifest, output)
    # Before the config: a warm copy costs neither the config nor any blob request.
    existing = _existing(ctx, output, summary)
    if existing is not None:
        return None, existing
    cache = ctx.layer_cache
    chain = output.cache_identity if cache is not None else None
    if cache is not None and chain is not None:
        # Also before the config: what this chain wrote from this manifest before.
        adopted = _adopt(ctx, output, cache.image(manifest.digest, chain), summary.layers)
        if adopted is not None:
            return None, adopted
    image = reader.image(manifest, platform)
    _check_subset(reader.where, image, subset)
    result = _deliver(ctx, image, reader.source, output)
    if cache is not None and chain is not None and result.manifest is not None \
            and result.manifest_media_type:
        cache.record_image(manifest.digest, chain, result.manifest, result.manifest_media_type)
    return image, result


def _image_summary(image: Image) -> ManifestSummary | None:
    """What an output is asked of an image read without manifests, when it has one."""
    if image.manifest is None or image.manifest_digest is None:
        return None
    return ManifestSummary(image.manifest_digest, image.manifest_media_type or "",
                           image.layers, image.is_artifact)


def _manifest_summary(reader: Reader, manifest: Manifest, output: ImageOutput
                      ) -> tuple[ImageOutput, ManifestSummary]:
    """The output ``manifest`` goes to (an artifact beneath the filters, when the reader
    says so: filters work on file systems), and what it is asked of it before the
    config is read."""
    if reader.unfiltered_artifacts and not manifest.has_file_system:
        output = _beneath_filters(output)
    layers = tuple(Layer.from_descriptor(i, d) for i, d in enumerate(manifest.layers))
    return output, ManifestSummary(manifest.digest, manifest.media_type, layers,
                                   not manifest.is_image)


def _index_summary(index: ImageIndex) -> ManifestSummary:
    """What an output is asked of an index copied as it is."""
    unchanged, _ = index.build()
    return ManifestSummary(digests.of_bytes(unchanged), index.media_type)


def _check_subset(where: str, image: Image, subset: Sequence[Platform]) -> None:
    """Refuse a single-platform image for none of ``subset`` (a platform subset takes
    those images of an index, and a lone image only if it is one of them). An image
    whose config names no platform (an artifact) is taken."""
    if subset and image.platform is not None and not any(platforms.matches(w, image.platform)
                                                         for w in subset):
        raise PlatformMismatchError(
            f"{where}: the image is for {image.platform}, not for "
            f"{', '.join(map(str, subset))}")


def _adopt(ctx: Context, output: ImageOutput, memo: tuple[bytes, str] | None,
           layers: Sequence[Layer]) -> OutputResult | None:
    """The output's result when it took the remembered manifest (its blobs all there)."""
    if memo is None:
        return None
    adopted = output.adopt_manifest(*memo)
    if adopted is not None:
        mounted = int(adopted.details.get("mounted", 0))
        with ctx.progress.image(layers):
            for layer in layers:
                ctx.progress.cached(layer)
        ctx.stats.add("mounted", mounted)
        ctx.stats.add("skipped", len(layers) - mounted)
        ctx.stats.add("cache_hits", len(layers))
    return adopted


def _existing(ctx: Context, output: ImageOutput, summary: ManifestSummary
              ) -> OutputResult | None:
    """The output's result when it holds the manifest already (a warm no-op)."""
    existing = output.existing_manifest(summary)
    if existing is not None:
        with ctx.progress.image(summary.layers):
            for layer in summary.layers:
                ctx.stats.add("skipped")
                ctx.progress.skipped(layer)
    return existing


def _copy_index(ctx: Context, reader: Reader, index: ImageIndex,
                output: ImageOutput) -> OutputResult:
    """Each entry as an image of its own (a nested index through this), then the
    index, rewritten if need be."""
    existing = output.existing_manifest(_index_summary(index))
    if existing is not None:
        return existing
    output.start_index(index)
    changed = False  # an image was written: the copy is no no-op, whatever the index

    def copied(entry: IndexEntry, target: ImageOutput) -> dict[str, Any] | None:
        nonlocal changed
        child = entry.open()
        if isinstance(child, ImageIndex):
            result = _copy_index(ctx, reader, child, output)
        else:
            platform = platforms.of_descriptor(entry.descriptor)
            result = _copy_manifest(ctx, reader, child, platform, target)[1]
        changed = changed or not result.details.get("unchanged")
        if result.manifest_digest == entry.digest:
            return None
        if result.manifest_size is None or result.manifest_media_type is None:
            raise UnsupportedError(f"{type(output).__name__} did not say what it wrote "
                                   f"for {entry.digest}; cannot rewrite the index")
        return {"mediaType": result.manifest_media_type, "digest": result.manifest_digest,
                "size": result.manifest_size}

    kept, data, media_type = _rewrite_index(index, output, copied)
    left = {e.digest for e in kept.entries}
    for entry in index.entries:
        if entry.digest not in left:
            log.info("%s: attestation %s left out: its image %s was rewritten",
                     reader.where, entry.digest, _attests(entry))
    result = output.finish_index(dataclasses.replace(kept, media_type=media_type), data)
    if changed and result.details.get("unchanged"):
        result = dataclasses.replace(result, details={
            k: v for k, v in result.details.items() if k != "unchanged"})
    return result


def _attests(entry: IndexEntry) -> str | None:
    """The digest of the image a buildx attestation manifest describes, else None."""
    described = entry.descriptor.get("annotations", {}).get(REFERENCE_DIGEST)
    return str(described) if described else None


def _beneath_filters(output: ImageOutput) -> ImageOutput:
    while isinstance(output, ImageFilter):
        output = output.inner
    return output


def _deliver(ctx: Context, image: Image, source: ImageSource | ImageInput,
             output: ImageOutput) -> OutputResult:
    output.start(image)
    with ctx.progress.image(image.layers):
        _deliver_layers(ctx, source, output, image.layers)
    ctx.cancel.check()  # a run stopped meanwhile commits nothing: no manifest is written
    return output.finish(image)


def _deliver_layers(ctx: Context, source: ImageSource | ImageInput, output: ImageOutput,
                    layers: Sequence[Layer]) -> None:
    token = ctx.cancel.child()  # a failed layer stops the others at their next chunk
    ordered = output.requires_ordered_layers or not source.parallel
    transfers = threading.BoundedSemaphore(1 if ordered else ctx.settings.parallel)

    def deliver(layer: Layer) -> None:
        wanted = output.wants_layer(layer)
        if isinstance(wanted, Mounted):
            ctx.stats.add("mounted")
            ctx.progress.mounted(layer, wanted.source)
            return
        if not wanted:
            ctx.stats.add("skipped")
            ctx.progress.skipped(layer)
            return
        with transfers:
            token.check()  # another layer failed while this one waited
            transfer(layer)

    def transfer(layer: Layer) -> None:
        with ctx.progress.layer(layer) as advance:
            def on_bytes(n: int) -> None:
                ctx.stats.add("bytes", n)
                advance(n)

            data = LayerData(layer, lambda: source.open_layer(layer), on_bytes=on_bytes,
                             cancel=token)
            outcome = output.add_layer(data)
        ctx.stats.add("mounted" if isinstance(outcome, Mounted) else
                      "skipped" if outcome is False else "layers")

    # A layer waiting in wants_layer for another one's upload (the output's claim on a
    # blob two layers share) holds no transfer slot: the upload it waits for has one.
    parallel(deliver, layers, 1 if ordered else PROBES_PER_TRANSFER * ctx.settings.parallel,
             token, name="layer")
