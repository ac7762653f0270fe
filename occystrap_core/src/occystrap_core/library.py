"""The library API: what ``occystrap process``, ``info`` and ``check`` do, for Python.

Re-exported by the :mod:`occystrap` package, where it is documented (docs/api.md)::

    import occystrap

    result = occystrap.copy("tar://busybox.tar", "oci-layout://./layout?ref=busybox")
    details = occystrap.inspect("oci-layout://./layout?ref=busybox")

Options are the :class:`~occystrap_core.context.Settings` fields (the CLI's global
options): ``occystrap.copy(src, dst, insecure=True, platform="linux/arm64")``. Several
calls can share one :class:`Session` (connections, tokens, credentials, temp dir).
The CLI's commands are built on these functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import pipeline
from .api import ImageInput, ImageOutput, ImageSet, ImageSource, OutputResult
from .context import Context, Settings
from .engine import load
from .errors import ImageNotFoundError, UnsupportedError, UsageError
from .oci import platform as platforms

if TYPE_CHECKING:
    from .check import Report

#: What a source may be: a URI, or one :func:`open_source` returned.
Source = str | ImageSource | ImageInput

Session = Context
"""A run's shared state (HTTP connections, tokens, temp dir, statistics); close it,
or use it as a context manager. :func:`session` makes one from options."""


@dataclass(frozen=True)
class CopyResult:
    """What :func:`copy` did. ``problems`` lists what verification found (empty: the
    output re-read fine; None: not verified, by choice or because the output cannot
    be re-read). ``stats`` counts layers copied, skipped and mounted, bytes, retries."""

    location: str
    manifest_digest: str | None
    problems: list[str] | None
    stats: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    media_type: str | None = None  # the manifest's (or index's), when the output says

    @property
    def ok(self) -> bool:
        return not self.problems


def settings(**options: Any) -> Settings:
    """:class:`Settings` from keyword options; ``platform`` may be ``"OS/ARCH[/VARIANT]"``."""
    if isinstance(options.get("platform"), str):
        options["platform"] = platforms.parse(options["platform"])
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(f"unknown option {', '.join(unknown)}; options are the fields of "
                         f"occystrap_core.context.Settings")
    return Settings(**options)


def session(**options: Any) -> Session:
    """A :class:`Session` to pass to several calls as ``session=``."""
    return Context(settings(**options))


def _names(given: str | Sequence[str]) -> list[str]:
    """Names given as a sequence, or one given alone: a str is a sequence of letters."""
    return [given] if isinstance(given, str) else list(given)


@contextmanager
def _session(given: Session | None, options: dict[str, Any]) -> Iterator[Session]:
    if given is not None:
        if options:
            raise UsageError("pass options to session(), not with session=")
        yield given
        return
    with session(**options) as ctx:
        yield ctx


def open_source(uri: str, *, session: Session) -> ImageSource | ImageInput:
    """The source ``uri`` names, built as ``process`` builds it, to read manifests and
    blobs from (``source.manifest()``, ``source.open_blob(...)``); close it, or use it
    as a context manager. Raises UsageError for a URI naming several images."""
    opened = pipeline.build_input(session, uri)
    if isinstance(opened, ImageSet):
        opened.close()
        raise UsageError(f"{uri} names several images; open one")
    return opened


@contextmanager
def _opened(ctx: Session, source: Source, what: str) -> Iterator[ImageSource | ImageInput]:
    if not isinstance(source, str):
        yield source
        return
    with pipeline.build_input(ctx, source) as opened:
        if isinstance(opened, ImageSet):
            raise UsageError(f"{what} takes one image; {source} names several "
                             f"(the CLI's process copies them to a template)")
        yield opened


def copy(source: Source, destination: str, *, filters: Sequence[str] = (),
         referrers: bool = False, referrer_types: Sequence[str] = (),
         stale_referrers: bool = False, digest_tags: bool = False,
         unfiltered_artifacts: bool = False,
         session: Session | None = None, **options: Any) -> CopyResult:
    """Copy the image (or index) ``source`` names to ``destination``, through
    ``filters`` (``"NAME[:key=value,...]"``; the first sees layers first), then
    re-read the output unless ``verify=False``. Raises an
    :class:`~occystrap_core.errors.OccystrapError` on failure, leaving no partial output.

    With ``referrers``, what refers to the image and its platforms (signatures, SBOMs,
    attestations, recursively; ``referrer_types`` limits the first level by
    artifactType) is copied too, unchanged: ``details["referrers"]`` lists their
    digests. When the copy changed the image (a filter, a recompression) they no
    longer apply: none is copied, and ``details["referrers_skipped"]`` says why,
    unless ``stale_referrers`` asks for the source image's referrers all the same
    (they go on naming the source's digests as their subjects). ``digest_tags`` copies
    cosign's legacy tags too (``sha256-<hex>.sig``, ``.att``, ``.sbom``):
    ``details["digest_tags"]`` lists those found and copied. Filters work on file
    systems and refuse an artifact (a signature, an SBOM, a chart); with
    ``unfiltered_artifacts`` each artifact manifest (an index's too) is copied as it is,
    beneath the filters, as a registry front passes what it cannot filter."""
    with _session(session, options) as ctx, _opened(ctx, source, "copy") as opened:
        before = dict(ctx.stats.values)
        output = pipeline.build_output(ctx, destination, _names(filters))
        if referrers:
            _holds_referrers(output, destination)
        _, result = pipeline.run(ctx, opened, output, unfiltered_artifacts)
        problems = output.verify() if ctx.settings.verify else None
        if referrers:
            problems = _copy_referrers(ctx, opened, destination, result, _names(referrer_types),
                                       stale_referrers, digest_tags, problems)
        return _result(ctx, result, problems, before)


def held(source: Source, destination: str, *, filters: Sequence[str] = (),
         unfiltered_artifacts: bool = False, session: Session | None = None,
         **options: Any) -> CopyResult | None:
    """Whether :func:`copy` with the same arguments would find ``destination`` holding
    what it would write, asking only what a warm copy asks and writing nothing: the
    result of that no-op (``details["unchanged"]``), else None. For dry runs."""
    from .engine import probe

    with _session(session, options) as ctx, _opened(ctx, source, "held") as opened:
        before = dict(ctx.stats.values)
        output = pipeline.build_output(ctx, destination, _names(filters))
        found = probe(ctx, opened, output, unfiltered_artifacts)
        return None if found is None else _result(ctx, found, None, before)


def _copy_referrers(ctx: Session, source: ImageSource | ImageInput, destination: str,
                    result: OutputResult, types: Sequence[str], stale: bool,
                    digest_tags: bool, problems: list[str] | None) -> list[str] | None:
    """Copy the referrers of what ``result`` wrote, when it is what the source holds
    (or, ``stale``, those of what the source names whatever was written)."""

    source = _with_manifests(source)
    # the source holds what was written only when nothing was changed on the way
    subjects = _subjects(source, result.manifest_digest)
    if subjects is None and stale:
        subjects = _subjects(source, source.manifest_digest())
    if subjects is None:
        result.details["referrers_skipped"] = (
            "the copy changed the image (a filter, a recompression or a platform subset), "
            "so its referrers (signatures, SBOMs) no longer apply; none was copied "
            "(--stale-referrers copies them all the same)")
        return problems
    found, verified = _copy_referrers_of(ctx, source, destination, subjects, types,
                                         digest_tags)
    result.details.update(found)
    return None if problems is None else problems + verified


def _holds_referrers(output: ImageOutput, destination: str) -> None:
    """Refuse, before anything is written, a destination that cannot store manifests
    by digest alone (a docker-save tar, a directory)."""
    from . import redact

    if not output.holds_referrers:
        raise UsageError(f"{redact.redact_uri(destination)} cannot hold referrers "
                         f"(signatures, SBOMs); copy them to registry:// or "
                         f"oci-layout://")


def _with_manifests(source: ImageSource | ImageInput) -> ImageSource:
    """``source``, when it has manifests, and so can have referrers."""
    if not isinstance(source, ImageSource):
        raise UnsupportedError(f"{source.where} has no manifests, so no referrers")
    return source


def _subjects(source: ImageSource, digest: str | None) -> list[str] | None:
    """``digest`` and, for an index, its images' digests; None if the source lacks it."""
    from .errors import ImageNotFoundError
    from .oci.manifest import Index, parse

    try:
        fetched = source.manifest(digest) if digest else None
    except ImageNotFoundError:
        return None
    if digest is None or fetched is None:
        return None
    top = parse(fetched.data, fetched.media_type)
    return [digest] + ([d.digest for d in top.manifests] if isinstance(top, Index) else [])


def _copy_referrers_of(ctx: Session, source: ImageSource, destination: str,
                       subjects: list[str], types: Sequence[str], digest_tags: bool
                       ) -> tuple[dict[str, Any], list[str]]:
    """Copy the referrers of ``subjects`` (and cosign's tags); what was copied, and what
    verifying it found."""
    from .engine import copy_referrers as copy_graph

    output = pipeline.build_output(ctx, destination)  # referrers are never filtered
    details: dict[str, Any] = {"referrers": copy_graph(ctx, source, output, subjects, types)}
    outputs = [output]
    if digest_tags:
        details["digest_tags"] = []
        for tag, sibling in _legacy_tags(source, subjects):
            outputs.append(output.sibling(tag))
            pipeline.run(ctx, sibling, outputs[-1])
            details["digest_tags"].append(tag)
    verified = [p for out in outputs for p in out.verify() or []] \
        if ctx.settings.verify else []
    return details, verified


def copy_referrers(source: Source, destination: str, *, referrer_types: Sequence[str] = (),
                   digest_tags: bool = False, session: Session | None = None,
                   **options: Any) -> CopyResult:
    """Copy what refers to the image ``source`` names to ``destination``, which holds
    that image already (as ``copy(..., referrers=True)`` does after copying it): for a
    mirror whose image did not change but may have been signed since."""
    with _session(session, options) as ctx, _opened(ctx, source, "copy_referrers") as opened:
        before = dict(ctx.stats.values)
        opened = _with_manifests(opened)
        _holds_referrers(pipeline.build_output(ctx, destination), destination)
        digest = opened.manifest_digest()
        subjects = _subjects(opened, digest)
        if subjects is None:
            raise ImageNotFoundError(f"{opened.where}: no such image")
        details, verified = _copy_referrers_of(ctx, opened, destination, subjects,
                                               _names(referrer_types), digest_tags)
        return CopyResult(destination, digest, verified if ctx.settings.verify else None,
                          _counted(ctx, before), details)


def _legacy_tags(source: ImageSource, subjects: Sequence[str]
                 ) -> Iterator[tuple[str, ImageSource]]:
    """Cosign's legacy tags beside ``subjects`` that the source has, as sources."""
    from .engine import Selection
    from .oci.referrers import legacy_tags

    for subject in subjects:
        for tag in legacy_tags(subject):
            sibling = source.sibling(tag)
            if sibling.manifest_digest() is not None:
                sibling.selection = Selection(platforms.host(), every=True)
                yield tag, sibling


def _counted(ctx: Session, before: dict[str, int]) -> dict[str, int]:
    """What the session counted since ``before``: this call's work, as a shared
    session's counters add up every call's (a concurrent call's count too)."""
    return {k: v - before.get(k, 0) for k, v in ctx.stats.values.items()}


def _result(ctx: Session, result: OutputResult, problems: list[str] | None,
            before: dict[str, int]) -> CopyResult:
    return CopyResult(result.location, result.manifest_digest, problems,
                      _counted(ctx, before), dict(result.details), result.manifest_media_type)


def inspect(source: Source, *, session: Session | None = None, **options: Any
            ) -> dict[str, Any]:
    """What ``occystrap info -O json`` prints: the image's (or artifact's) manifest,
    config and layers, without reading any layer, and the tree of its referrers (None
    when the source cannot list them)."""
    with _session(session, options) as ctx, _opened(ctx, source, "inspect") as opened:
        loaded = load(ctx, opened)
        from .info import describe  # imported by the calls that need it: a copy does not
        from .oci.referrers import tree

        details = describe(loaded.image, loaded.platforms, loaded.entries)
        details["referrers"] = None
        if isinstance(opened, ImageSource):
            # what the reference names: the index, when the image was picked from one
            top = loaded.image.manifest_digest if loaded.platforms is None \
                else opened.manifest_digest()
            try:
                details["referrers"] = tree(opened.referrers, top) if top else None
            except UnsupportedError:
                pass
        return details


def referrers(source: Source, *, artifact_type: str | None = None,
              session: Session | None = None, **options: Any) -> dict[str, Any]:
    """What ``occystrap referrers -O json`` prints: the digest the source names and the
    tree of artifacts referring to it (signatures, SBOMs, attestations), each with its
    own referrers; ``artifact_type`` keeps the first level to that type (as ``copy
    --referrer-type`` reads it)."""
    from .engine import Reader, Selection
    from .oci.manifest import Descriptor
    from .oci.referrers import of_types, tree

    with _session(session, options) as ctx, _opened(ctx, source, "referrers") as opened:
        opened = _with_manifests(opened)
        digest = opened.manifest_digest()
        if digest is None:
            raise ImageNotFoundError(f"{opened.where}: no such image")
        try:
            legacy = [{"tag": tag, "digest": sibling.manifest_digest()}
                      for tag, sibling in _legacy_tags(opened, [digest])]
        except UnsupportedError:
            legacy = []
        fetch = Reader(opened, Selection(platforms.host(), every=True)).fetch
        types = (artifact_type,) if artifact_type else ()

        def typed(found: Descriptor) -> bool:
            try:
                return of_types(found, types, lambda: fetch(found.digest))
            except ImageNotFoundError:  # listed but gone: of no type at all
                return False

        return {"subject": digest,
                "referrers": tree(opened.referrers, digest, typed if types else None),
                "legacy_tags": legacy}


def check(source: Source, *, fast: bool = False, session: Session | None = None,
          **options: Any) -> Report:
    """Validate the image: ``report.count("error")`` is 0 when it is sound. ``fast``
    checks the manifest and config only."""
    with _session(session, options) as ctx, _opened(ctx, source, "check") as opened:
        from .check import run_check

        return run_check(load(ctx, opened), fast)
