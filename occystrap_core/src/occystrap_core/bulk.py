"""Sources that expand to many images (:class:`~occystrap_core.api.ImageSet`).

``occystrap process quay://ns/app-* 'registry://mirror.example/{namespace}/{repo}:{tag}'``:

1. :func:`plan` lists the set and fills the destination template with each image's
   fields (``str.format`` syntax, plain names only). It refuses, before anything is
   transferred, a template that would write two images to the same place, unless
   the output says it holds many images there (``OutputTarget.holds_many``: e.g.
   ``dir://...?unique_names=true``).
2. :func:`run` copies ``--image-parallel`` images at once. Every image goes through
   the ordinary single-image pipeline in the run's one Context, so HTTP clients, rate
   limits, credentials, run-level caches (``ctx.shared``) and statistics are shared.
   A failing image is recorded and the others go on. Images bound for one shared
   destination (one that holds many) are written one after the other: outputs need
   not cope with concurrent writers, and one image's ``abort()`` must not remove
   what another is writing.

:func:`process_command` and :func:`info_command` are what ``occystrap process`` and
``occystrap info`` do with an image set.
"""

from __future__ import annotations

import json
import logging
import re
import string
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

import click

from . import pipeline
from .api import BulkItem, ImageInput, ImageSet, OutputResult
from .context import Context
from .errors import OccystrapError, UsageError
from .redact import redact_text, redact_uri
from .uri import convert_options, split_filter
from .workers import parallel

log = logging.getLogger("occystrap.bulk")

_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Job:
    """One image of a plan: ``destination`` is None when the image failed at listing.

    ``place`` is the resolved destination (scheme, target): jobs sharing one are
    written one at a time.
    """

    source: str
    destination: str | None
    error: str | None = None
    place: tuple[str, str] | None = None

    def describe(self) -> str:
        return redact_text(f"{self.source} -> "
                           f"{self.destination or '(not listed: ' + str(self.error) + ')'}")


@dataclass(frozen=True)
class Outcome:
    """What became of one :class:`Job`."""

    job: Job
    result: OutputResult | None = None
    error: str | None = None
    problems: tuple[str, ...] = ()  # from the output's verify()

    @property
    def failed(self) -> bool:
        return self.error is not None or bool(self.problems)

    @property
    def reason(self) -> str:
        return self.error or "verify failed: " + "; ".join(self.problems)


def single_input(ctx: Context, uri: str, command: str) -> ImageInput:
    """:func:`pipeline.build_input` for commands that handle exactly one image."""
    source = pipeline.build_input(ctx, uri)
    if isinstance(source, ImageSet):
        source.close()
        raise UsageError(f"{uri} names several images; {command} takes one "
                         f"(process and info accept several)")
    return source


def template_fields(template: str) -> list[str]:
    """The placeholder names in a destination template; only plain ``{name}`` is allowed."""
    names = []
    try:
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is None:
                continue
            if not _FIELD_RE.match(name) or spec or conversion:
                raise UsageError(f"destination {template!r}: placeholder "
                                 f"{{{name}{'!' + conversion if conversion else ''}"
                                 f"{':' + spec if spec else ''}}} is not a plain {{name}}")
            names.append(name)
    except ValueError as e:
        raise UsageError(f"destination {template!r}: {e} "
                         f"(write {{{{ and }}}} for literal braces)") from None
    return names


def _placeholders(fields: Mapping[str, str]) -> str:
    return ", ".join(f"{{{name}}}" for name in fields)


def check_filters(ctx: Context, filters: Sequence[str]) -> None:
    """Fail on a bad -f before listing, rather than once per image."""
    for spec in filters:
        name, raw = split_filter(spec)
        convert_options(ctx.plugins.filters.get(name).item.options, raw, f"filter {name!r}")


def plan(ctx: Context, images: ImageSet, template: str,
         filters: Sequence[str] = ()) -> list[Job]:
    """List ``images`` and give each its destination; nothing is transferred.

    Raises UsageError for an unknown placeholder, or when two images would be
    written to one destination.
    """
    check_filters(ctx, filters)
    names = template_fields(template)
    items: list[BulkItem] = list(images.images())
    jobs: list[Job] = []
    written: dict[tuple[str, str], str] = {}  # (scheme, target) -> first source
    for item in items:
        if item.error is not None:
            jobs.append(Job(item.uri, None, item.error))
            continue
        missing = [n for n in names if n not in item.fields]
        if missing:
            raise UsageError(f"destination {template!r}: unknown placeholder {{{missing[0]}}} "
                             f"(available: {_placeholders(item.fields)})")
        destination = template.format_map(item.fields)
        resolved, entry = pipeline.resolve(ctx, destination, "output")
        key = (resolved.scheme, resolved.target)
        if key in written and not entry.item.can_hold_many(resolved):
            raise UsageError(
                f"destination {template!r} would write both {written[key]} and {item.uri} to "
                f"{destination}: add placeholders such as "
                f"{_placeholders(item.fields)}")
        written.setdefault(key, item.uri)
        jobs.append(Job(item.uri, destination, place=key))
    return jobs


def _copy(ctx: Context, job: Job, filters: Sequence[str]) -> Outcome:
    if job.destination is None:
        return Outcome(job, error=job.error)
    try:
        with single_input(ctx, job.source, "each image of a set") as source:
            output = pipeline.build_output(ctx, job.destination, filters)
            _, result = pipeline.run(ctx, source, output)
        problems = output.verify() if ctx.settings.verify else None
    except OccystrapError as e:
        return Outcome(job, error=str(e))
    except Exception as e:  # one image's bug must not stop the others; still reported
        log.debug("%s failed", job.source, exc_info=True)
        return Outcome(job, error=f"unexpected {type(e).__name__}: {e}")
    return Outcome(job, result=result, problems=tuple(problems or ()))


def _parallel(ctx: Context, work: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``work`` over ``items``, ``--image-parallel`` at once; results in ``items`` order."""
    return parallel(work, items, ctx.settings.image_parallel, ctx.cancel.child(), name="image")


def _line(n: int, total: int, outcome: Outcome) -> str:
    if outcome.failed:
        return redact_text(f"[{n}/{total}] FAILED {outcome.job.source}: {outcome.reason}")
    assert outcome.result is not None
    digest = outcome.result.manifest_digest
    return redact_text(f"[{n}/{total}] {outcome.job.source} -> {outcome.result.location}"
                       + (f" ({digest})" if digest else ""))


def run(ctx: Context, jobs: Sequence[Job], filters: Sequence[str] = (),
        progress: Callable[[str], None] | None = None) -> list[Outcome]:
    """Copy every job, ``--image-parallel`` at once; one outcome per job, in order.

    ``progress`` gets a ``[n/N] ...`` line as each image ends.
    """
    outcomes: list[Outcome | None] = [None] * len(jobs)
    lock = threading.Lock()
    finished = 0

    def copy_all(indices: list[int]) -> None:
        nonlocal finished
        for i in indices:
            outcome = _copy(ctx, jobs[i], filters)
            with lock:
                outcomes[i] = outcome
                finished += 1
                if progress:
                    progress(_line(finished, len(jobs), outcome))

    places: dict[tuple[str, str] | int, list[int]] = {}
    for i, job in enumerate(jobs):
        places.setdefault(job.place or i, []).append(i)
    _parallel(ctx, copy_all, list(places.values()))
    return [o for o in outcomes if o is not None]


def process_command(ctx: Context, images: ImageSet, template: str, filters: Sequence[str], *,
                    dry_run: bool, summary: Callable[[], str], fmt: str = "text") -> int:
    """``occystrap process`` over an image set; returns the exit code.

    ``summary()`` gives the run's summary line, to which the image counts are added.
    On stdout: each image written as ``DESTINATION@DIGEST``, or (``fmt`` json) a list
    of reports, failed images included.
    """
    jobs = plan(ctx, images, template, filters)
    unlisted = sum(job.destination is None for job in jobs)
    if dry_run:
        for job in jobs:
            click.echo(job.describe())
        click.echo(f"Dry run: {len(jobs) - unlisted} images would be copied"
                   + (f", {unlisted} could not be listed" if unlisted else "")
                   + "; nothing transferred", err=True)
        return 1 if unlisted else 0
    if not jobs:
        click.echo("No image matched; nothing to do", err=True)
        _report([], fmt, ctx.settings.verify)
        return 0
    outcomes = run(ctx, jobs, filters, progress=lambda line: click.echo(line, err=True))
    _report(outcomes, fmt, ctx.settings.verify)
    failed = [o for o in outcomes if o.failed]
    click.echo(f"{summary()}, {len(outcomes) - len(failed)}/{len(outcomes)} images"
               + (f", {len(failed)} failed" if failed else ""), err=True)
    if failed:
        click.echo("Failed images:", err=True)
        for outcome in failed:
            click.echo(redact_text(f"  {outcome.job.source}: {outcome.reason}"), err=True)
    return 1 if failed else 0


def _report(outcomes: Sequence[Outcome], fmt: str, verify: bool) -> None:
    """What was written, on stdout (see :func:`process_command`)."""
    from . import copyreport

    reports = []
    for o in outcomes:
        if o.result is None or o.job.destination is None:
            reports.append({"source": redact_uri(o.job.source), "destination": None
                            if o.job.destination is None else redact_uri(o.job.destination),
                            "error": redact_text(o.reason)})
            continue
        if fmt == "text":
            click.echo(copyreport.line(o.job.destination, o.result.manifest_digest))
            continue
        reports.append({"source": redact_uri(o.job.source), **copyreport.as_dict(
            o.job.destination, o.result.location, o.result.manifest_digest,
            o.result.manifest_media_type, None, list(o.problems) if verify else None)})
    if fmt == "json":
        click.echo(json.dumps(reports, indent=2))


def describe_item(ctx: Context, item: BulkItem) -> dict[str, Any]:
    """``info`` for one image of a set: its details, or ``{"source", "error"}``."""
    from .engine import load
    from .info import describe

    shown = redact_uri(item.uri)
    if item.error is not None:
        return {"source": shown, "error": redact_text(item.error)}
    try:
        with single_input(ctx, item.uri, "info of each image") as source:
            loaded = load(ctx, source)
            return {"source": shown, **describe(loaded.image, loaded.platforms, loaded.entries)}
    except OccystrapError as e:
        return {"source": shown, "error": redact_text(str(e))}


def info_command(ctx: Context, images: ImageSet, fmt: str) -> int:
    """``occystrap info`` over an image set: a JSON array or one text block per image.

    Returns 1 if any image could not be described, else 0.
    """
    from .info import as_text

    items = list(images.images())
    entries = _parallel(ctx, lambda item: describe_item(ctx, item), items)
    if fmt == "json":
        click.echo(json.dumps(entries, indent=2))
    else:
        blocks = [f"Source:        {e['source']}\n"
                  + (f"Error:         {e['error']}" if "error" in e else as_text(e))
                  for e in entries]
        click.echo("\n\n".join(blocks) if blocks else "No image matched")
    return 1 if any("error" in e for e in entries) else 0
