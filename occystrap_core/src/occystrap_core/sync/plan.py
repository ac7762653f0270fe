"""From a configuration to the sync's work: which images go where, nothing copied.

Sources are listed through the listers (``occystrap_listers``); each source image
(a tag) becomes a :class:`Task` with one :class:`Target` per destination. The
first destination's repository is the shard key (:func:`shard_of`): a worker of
``--shard I/N`` lists the tags of, and copies to, only its own repositories, so
every repository's tags and mounts stay on one worker.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
import string
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote_plus, urlencode

from ..api import BulkItem, ImageLister
from ..bulk import check_filters, template_fields
from ..errors import (
    NOT_JSON,
    AuthError,
    CredentialsError,
    ImageNotFoundError,
    OccystrapError,
    URIError,
    UsageError,
)
from ..listing import (
    Pattern,
    matching_repositories,
    open_lister,
    readable,
    split_pattern,
)
from ..pipeline import resolve
from ..redact import redact_uri
from ..uri import is_glob, parse_uri
from ..workers import parallel
from .config import ConfigError, RegistrySettings, SourceSpec, SyncConfig
from .rules import TagRules

if TYPE_CHECKING:
    from ..context import Context

log = logging.getLogger("occystrap.sync")

_TAG_MARK = "\0tag\0"  # stands for the tag while a template's repository is worked out
_OPEN_TAG = re.compile(f"{re.escape(_TAG_MARK)}|{re.escape(quote_plus(_TAG_MARK))}")
# Tag listings and HEAD checks in flight for each image copying (-J): they wait on the
# link, not on the CPU, and over TLS share one HTTP/2 connection per registry.
LOOKUPS_PER_COPY = 4


@dataclass(frozen=True)
class Place:
    """A repository:tag a lister can ask about: where a source or a target is."""

    scheme: str
    root: str
    repository: str
    tag: str
    query: str = ""  # what the lister needs of the URI's options (insecure, tls_verify)

    @property
    def lister_key(self) -> tuple[str, str, str]:
        return self.scheme, self.root, self.query

    @property
    def repository_key(self) -> tuple[str, str, str, str]:
        """The repository, whatever the tag: what ``--prune`` works on."""
        return self.scheme, self.root, self.query, self.repository

    @property
    def where(self) -> str:
        return f"{self.scheme}://{self.root}/{self.repository}"


@dataclass(frozen=True)
class Target:
    uri: str
    place: Place
    present: bool = False  # an immutable tag the destination holds: never asked again
    error: str | None = None  # not copied: why (another source image goes there too)


@dataclass(frozen=True)
class Task:
    """One source image and its destinations (``error``: it could not be listed)."""

    source: str
    place: Place | None
    targets: tuple[Target, ...]
    spec: SourceSpec
    error: str | None = None


@dataclass(frozen=True)
class Scope:
    """What ``--prune`` may delete in one destination repository: the tags the rules
    select that are not in the source repository's ``source_tags``."""

    destination: Place
    source_tags: frozenset[str]
    rules: TagRules
    pattern: Pattern


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    scopes: list[Scope] = field(default_factory=list)
    # Destination repositories ``--prune`` leaves alone this run: a source mapping to
    # them could not be listed (its tags are unknown, not gone), or another shard
    # copies to them. By repository, or by template when the repositories are unknown.
    held: set[tuple[str, str, str, str]] = field(default_factory=set)
    held_patterns: list[re.Pattern[str]] = field(default_factory=list)

    def holds(self, place: Place) -> bool:
        return place.repository_key in self.held or any(
            p.fullmatch(place.where) for p in self.held_patterns)


def template_pattern(template: str) -> re.Pattern[str]:
    """What ``scheme://ROOT/REPOSITORY`` a destination template can fill, whatever its
    placeholders' values (the tag and the URI's userinfo and query left out)."""
    base = template.partition("?")[0]
    scheme, _, rest = base.partition("://")
    host, slash, path = rest.partition("/")
    last = path.rpartition("/")
    if ":" in last[2]:  # the tag part
        path = last[0] + last[1] + last[2].rpartition(":")[0]
    text = f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"
    return re.compile("".join(re.escape(literal) + (".*" if name is not None else "")
                              for literal, name, _, _ in string.Formatter().parse(text)))


def shard_of(key: str, count: int) -> int:
    """A stable shard for a destination repository, the same on every machine."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def with_query(uri: str, **options: str) -> str:
    """``uri`` with ``options`` added to its query (existing keys kept)."""
    base, _, query = uri.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    known = {k for k, _ in pairs}
    pairs += [(k, v) for k, v in options.items() if k not in known]
    return base + ("?" + urlencode(pairs, safe="/,:") if pairs else "")


def host_of(uri: str) -> str:
    """``HOST[:PORT]`` of ``scheme://[userinfo@]HOST/...``, lower-cased."""
    rest = uri.partition("://")[2].partition("?")[0]
    return rest.split("/", 1)[0].rpartition("@")[2].lower()


def full_pattern(uri: str) -> str:
    """``registry://HOST`` -> ``registry://HOST/*:*``; a repository without a tag
    part gets ``:*``: a sync source means every tag unless it says otherwise."""
    base, sep, query = uri.partition("?")
    scheme, _, rest = base.partition("://")
    if "/" not in rest.strip("/"):
        rest = rest.strip("/") + "/*"
    if ":" not in rest.rpartition("/")[2]:
        rest += ":*"
    return f"{scheme}://{rest}{sep}{query}"


def _open_tag(filled: str) -> tuple[str, re.Pattern[str]]:
    """Of a destination filled with the tag left open (``_TAG_MARK``, in its path or,
    encoded, in its query): the literal start of every URI it names, whatever the tag,
    and a pattern matching them."""
    parts = _OPEN_TAG.split(filled)
    return parts[0], re.compile(".+".join(map(re.escape, parts)))


def _refuse_collisions(plan: Plan, elsewhere: Sequence[Task] = ()) -> None:
    """One destination tag holds one image: a tag two source images go to (or one
    image with other filters or platforms) would hold each in turn, run after run.
    Such targets fail, naming the other sources; a target planned twice (two
    overlapping sources) is kept once. ``elsewhere``: tasks other shards copy, which
    count as sources of a destination tag and are not copied here."""
    def image(task: Task) -> tuple[Any, ...]:
        assert task.place is not None  # a task has targets only once its source is known
        return task.place.repository_key, task.place.tag, task.spec.filters, \
            task.spec.platforms

    def tag(target: Target) -> str:
        return target.uri  # not its place: an OCI layout's tag is in its query (?ref=)

    sources: dict[str, dict[tuple[Any, ...], str]] = {}
    for task in [*plan.tasks, *elsewhere]:
        for target in task.targets:
            sources.setdefault(tag(target), {}).setdefault(image(task), task.source)
    planned: set[tuple[str, tuple[Any, ...]]] = set()
    tasks = []
    for task in plan.tasks:
        targets = []
        for target in task.targets:
            found = sources[tag(target)]
            if len(found) > 1:
                mine = image(task)
                others = sorted(redact_uri(s) + (" with other filters or platforms"
                                                 if i[:2] == mine[:2] else "")
                                for i, s in found.items() if i != mine)
                targets.append(replace(target, error=(
                    f"{', '.join(others)} goes to {redact_uri(target.uri)} too: a tag "
                    f"holds one image; give each its own (e.g. :{{tag}} in the template)")))
            elif (tag(target), image(task)) not in planned:
                planned.add((tag(target), image(task)))
                targets.append(target)
        if targets or not task.targets:
            tasks.append(replace(task, targets=tuple(targets)))
    plan.tasks = tasks


class Planner:
    """Lists sources and destinations; listers are shared by (scheme, root, options)."""

    def __init__(self, ctx: Context, config: SyncConfig, *, shard: tuple[int, int] | None,
                 prune: bool):
        self.ctx = ctx
        self.config = config
        self.shard = shard
        self.prune = prune
        self._listers: dict[tuple[str, str, str], ImageLister] = {}
        self._dest_tags: dict[tuple[str, str, str, str], set[str]] = {}
        self._lock = threading.Lock()
        # with --shard, what other shards copy: images named alike, and the repositories
        # of patterns (listed only if they may go where this shard's images go)
        self._elsewhere: list[Task] = []
        self._their_repositories: list[tuple[SourceSpec, ImageLister, Pattern, str]] = []

    def settings_for(self, uri: str) -> RegistrySettings | None:
        return self.config.registries.get(host_of(uri))

    def prepare(self, uri: str) -> str:
        """``uri`` with its registry's ``insecure`` and ``tls_verify`` settings from the
        configuration."""
        settings = self.settings_for(uri)
        if settings is None:
            return uri
        options = {k: v for k, v, on in (("insecure", "true", settings.insecure),
                                         ("tls_verify", "false", not settings.tls_verify)) if on}
        return with_query(uri, **options)

    def lister(self, place: Place) -> ImageLister:
        with self._lock:
            lister = self._listers.get(place.lister_key)
        if lister is None:
            uri = f"{place.scheme}://{place.root}/x:x" + (f"?{place.query}" if place.query
                                                          else "")
            lister, _ = open_lister(self.ctx, uri)
            with self._lock:
                lister = self._listers.setdefault(place.lister_key, lister)
        return lister

    def place_of(self, uri: str) -> Place:
        """Where a single-image URI points (its scheme, root, repository and tag)."""
        resolved = parse_uri(uri)
        target = resolved.target.rpartition("@")[2] if "@" in resolved.target.split("/")[0] \
            else resolved.target
        pattern = split_pattern(target, default_tag="latest", scheme=resolved.scheme)
        if is_glob(pattern.repositories) or is_glob(pattern.tags):
            raise UsageError(f"{uri}: expected one repository and tag, not a pattern")
        kept = {k: resolved.query[k][-1] for k in ("insecure", "tls_verify")
                if resolved.query.get(k)}
        return Place(resolved.scheme, pattern.root, pattern.repositories, pattern.tags,
                     urlencode(kept))

    def check(self) -> None:
        """Every source's scheme, images, platforms, filters and templates, before
        anything is listed: a mistake stops the run naming its line (exit 2), rather
        than failing as an image the source could not list."""
        from ..oci.platform import parse as parse_platform

        for n, spec in enumerate(self.config.sources):
            try:
                for template in spec.destinations:
                    self._check_template(template)
                if spec.pattern is not None:
                    if "://" not in spec.pattern:
                        raise UsageError(f"{spec.pattern!r}: expected "
                                         f"SCHEME://ROOT[/REPO_GLOB[:TAG_GLOB]]")
                    self.ctx.plugins.listers.get(spec.pattern.partition("://")[0])
                    resolved = parse_uri(full_pattern(spec.pattern))
                    split_pattern(resolved.target, scheme=resolved.scheme)  # its globs
                for uri in spec.images:
                    self.ctx.plugins.listers.get(self.place_of(uri).scheme)
                    resolve(self.ctx, uri, "input")  # its reference: a port, a name
                for platform in spec.platforms.split(",") if spec.platforms else ():
                    parse_platform(platform)
                check_filters(self.ctx, spec.filters)
            except OccystrapError as e:
                if not self.config.path:
                    raise
                raise ConfigError(f"{self.config.path} line {spec.line}: sources[{n}]: {e}"
                                  ) from None

    def _check_template(self, template: str) -> None:
        """A destination template that can name an image (its placeholders filled with
        a stand-in) of a scheme that can be written; with ``--prune``, ending in
        ``:{tag}``."""
        filled = template.format_map({name: "x" for name in template_fields(template)})
        scheme = self.place_of(filled).scheme
        try:  # its scheme, and its reference's host and port
            resolve(self.ctx, filled, "output")
        except URIError as e:
            raise URIError(f"destination {template!r} (filled as {filled!r}): {e}") from None
        if self.prune and not template.partition("?")[0].endswith(":{tag}"):
            raise UsageError(f"--prune needs destinations ending in :{{tag}}, so that a "
                             f"destination tag names its source tag; {template!r} does not")
        if self.prune and scheme not in self.ctx.plugins.listers.entries:
            raise UsageError(f"--prune deletes tags from registries; {template!r} is none")

    def plan(self) -> Plan:
        plan = Plan()
        self.check()
        for spec in self.config.sources:
            if spec.pattern is not None:
                self._plan_pattern(spec, plan)
            else:
                self._plan_images(spec, plan)
        _refuse_collisions(plan, self._other_shards(plan))
        return plan

    def _other_shards(self, plan: Plan) -> list[Task]:
        """The tasks of other shards that may go to a destination tag of this one's
        (a second destination the repositories of two shards share), so that a tag two
        images go to fails in every shard as it fails in one run. Another shard's
        repository is listed only when one of its destinations can name such a tag."""
        ours = sorted({target.uri for task in plan.tasks for target in task.targets})

        def meets(spec: SourceSpec, item: BulkItem) -> bool:
            for filled in self._fill(spec, BulkItem(item.uri, {**item.fields,
                                                               "tag": _TAG_MARK})):
                start, pattern = _open_tag(filled)
                i = bisect.bisect_left(ours, start)
                while i < len(ours) and ours[i].startswith(start):
                    if pattern.fullmatch(ours[i]):
                        return True
                    i += 1
            return False

        def theirs(entry: tuple[SourceSpec, ImageLister, Pattern, str]) -> list[Task]:
            spec, lister, pattern, repository = entry
            try:
                tags = list(lister.tags(repository)) if is_glob(pattern.tags) \
                    else [pattern.tags]
                wanted = self._wanted(spec, lister, pattern, repository, tags)
            except OccystrapError as e:  # its shard cannot list it either: copies none
                log.debug("%s: not listed for collisions: %s", repository, e)
                return []
            return [self._task_of(spec, lister.item(repository, tag)) for tag in wanted]

        todo = [entry for entry in self._their_repositories
                if meets(entry[0], entry[1].item(entry[3], "x"))]
        listed = parallel(theirs, todo, LOOKUPS_PER_COPY * self.ctx.settings.image_parallel,
                          self.ctx.cancel.child(), name="shards")
        return self._elsewhere + [task for tasks in listed for task in tasks]

    def _task_of(self, spec: SourceSpec, item: BulkItem) -> Task:
        """``item`` and its destinations, as another shard plans it (to compare)."""
        source = self.prepare(item.uri)
        return Task(source, self.place_of(source), tuple(
            Target(d, self.place_of(d)) for d in self._fill(spec, item)), spec)

    def _fill(self, spec: SourceSpec, item: BulkItem) -> list[str]:
        out = []
        for template in spec.destinations:
            try:
                out.append(self.prepare(template.format_map(item.fields)))
            except KeyError as e:
                raise UsageError(f"destination {template!r}: unknown placeholder {{{e.args[0]}}}"
                                 f" (available: {', '.join('{' + f + '}' for f in item.fields)})"
                                 ) from None
        return out

    def _in_shard(self, destination: str) -> bool:
        if self.shard is None:
            return True
        index, count = self.shard
        place = self.place_of(destination.replace(_TAG_MARK, "x"))
        return shard_of(f"{place.root}/{place.repository}", count) == index

    def _repository_of(self, spec: SourceSpec, item: BulkItem) -> str:
        """The first destination with the tag still open: its repository is the shard key."""
        filled = self._fill(spec, BulkItem(item.uri, {**item.fields, "tag": _TAG_MARK}))[0]
        if _TAG_MARK in filled.partition("://")[2].rpartition(":")[0]:
            raise UsageError(f"destination {spec.destinations[0]!r} puts {{tag}} in the "
                             f"repository; --shard splits by repository")
        return filled

    def _plan_pattern(self, spec: SourceSpec, plan: Plan) -> None:
        assert spec.pattern is not None
        uri = self.prepare(full_pattern(spec.pattern))
        try:
            lister, resolved = open_lister(self.ctx, uri)
            pattern = split_pattern(resolved.target, scheme=resolved.scheme)
            repositories = matching_repositories(lister, pattern)
        except OccystrapError as e:
            plan.tasks.append(Task(uri, None, (), spec, error=str(e)))
            self._hold_all(plan, spec)
            return
        repositories = self._without_copies(spec, lister, repositories)
        if self.shard is not None:
            ours = []
            for r in repositories:
                item = lister.item(r, "x")
                if self._in_shard(self._repository_of(spec, item)):
                    ours.append(r)
                else:
                    self._hold(plan, spec, item)  # another shard copies there
                    self._their_repositories.append((spec, lister, pattern, r))
            repositories = ours

        def tags_of(repository: str) -> list[str] | OccystrapError:
            try:
                if is_glob(pattern.tags) or self.prune:
                    return list(lister.tags(repository))
                return [pattern.tags]
            except CredentialsError:
                raise  # the same for every repository: the source cannot be synced
            except OccystrapError as e:
                return e

        try:
            listed = parallel(tags_of, repositories,
                              LOOKUPS_PER_COPY * self.ctx.settings.image_parallel,
                              self.ctx.cancel.child(), name="list")
            kept = readable(lister, repositories, listed, glob=is_glob(pattern.repositories))
        except AuthError as e:  # refused for every repository: the source cannot be synced
            plan.tasks.append(Task(uri, None, (), spec, error=str(e)))
            self._hold_all(plan, spec)
            return
        for repository in set(repositories) - {r for r, _ in kept}:
            self._hold(plan, spec, lister.item(repository, "x"))  # skipped: tags unknown
        planned: list[Task | BulkItem] = []  # in plan order: failed tasks and items
        for repository, tags in kept:
            if isinstance(tags, OccystrapError):
                planned.append(Task(lister.item(repository, "").uri, None, (), spec,
                                    error=str(tags)))
                self._hold(plan, spec, lister.item(repository, "x"))
                continue
            if self.prune:
                self._add_scopes(plan, spec, lister.item(repository, "x"), set(tags), pattern)
            try:
                wanted = self._wanted(spec, lister, pattern, repository, tags)
            except OccystrapError as e:
                planned.append(Task(lister.item(repository, "").uri, None, (), spec,
                                    error=str(e)))
                continue
            planned += [lister.item(repository, tag) for tag in wanted]
        self._add_all(plan, spec, planned, lister)

    def _wanted(self, spec: SourceSpec, lister: ImageLister, pattern: Pattern,
                repository: str, tags: list[str]) -> list[str]:
        """The tags of ``repository`` to copy, of those it has."""
        wanted = spec.rules.select(t for t in tags if pattern.tag_matches(t))
        if spec.rules.by_date:
            wanted = spec.rules.newest(self._created(lister, repository, wanted,
                                                     spec.platforms))
        return wanted

    def _without_copies(self, spec: SourceSpec, lister: ImageLister,
                        repositories: list[str]) -> list[str]:
        """``repositories`` but those this source copies another of them to: a source
        listing the registry its destinations are on (``registry://HOST`` to
        ``registry://HOST/mirror/{repo}:{tag}``) would otherwise copy its own copies,
        one level deeper every run."""
        if len(repositories) < 2:
            return repositories

        def where(place: Place) -> tuple[str, str, str]:
            return place.scheme, place.root.lower(), place.repository

        listed = {where(self.place_of(lister.item(r, "x").uri)): r for r in repositories}
        copies = set()
        for repository in repositories:
            item = lister.item(repository, "x")
            for destination in self._fill(spec, item):
                found = listed.get(where(self.place_of(destination)), repository)
                if found != repository:
                    copies.add(found)
        if copies:
            log.info("%s: not copying again %d repositories it copies to: %s",
                     redact_uri(spec.pattern or ""), len(copies), ", ".join(sorted(copies)))
        return [r for r in repositories if r not in copies]

    def _created(self, lister: ImageLister, repository: str, tags: list[str],
                 platforms: str | None) -> dict[str, datetime | None]:
        """Each tag's image ``created`` date (its manifest and config: two GETs a tag).
        From a multi-platform image, the image the copy would pick; from one without
        it (an arm64-only image on an amd64 machine), the first of ``platforms`` it
        has, else its first image: one such tag must not fail the whole repository."""
        import json

        from ..oci import platform as oci_platform
        from ..oci.manifest import Index, parse
        from ..ops import config, manifest

        def created(tag: str) -> datetime | None:
            uri = self.prepare(lister.item(repository, tag).uri)
            try:
                blob = config(uri, session=self.ctx)
            except ImageNotFoundError:
                fetched = manifest(uri, session=self.ctx)
                node = parse(fetched.data, fetched.media_type, uri)
                found = [d.platform for d in node.manifests if d.platform] \
                    if isinstance(node, Index) else []
                if not found:
                    raise
                picks = (oci_platform.best(oci_platform.parse(p), found)
                         for p in (platforms or "").split(",") if p)
                blob = config(uri, platform=found[next((i for i in picks if i is not None), 0)],
                              session=self.ctx)
            try:
                when = datetime.fromisoformat(str(json.loads(blob).get("created")))
            except (*NOT_JSON, AttributeError):
                return None  # no date, or not one: never among the latest
            return when if when.tzinfo else when.replace(tzinfo=UTC)  # comparable

        dates = parallel(created, tags, self.ctx.settings.image_parallel,
                         self.ctx.cancel.child(), name="created")
        return dict(zip(tags, dates, strict=True))

    def _plan_images(self, spec: SourceSpec, plan: Plan) -> None:
        planned: list[Task | BulkItem] = []  # in plan order: failed tasks and items
        for uri in spec.images:
            try:
                place = self.place_of(self.prepare(uri))
                item = self.lister(place).item(place.repository, place.tag)
            except OccystrapError as e:
                planned.append(Task(uri, None, (), spec, error=str(e)))
                self._hold_all(plan, spec)
                continue
            if self.shard is None or self._in_shard(self._repository_of(spec, item)):
                planned.append(item)
            else:
                self._hold(plan, spec, item)
                self._elsewhere.append(self._task_of(spec, item))
        self._add_all(plan, spec, planned, None)

    def _add_all(self, plan: Plan, spec: SourceSpec, planned: list[Task | BulkItem],
                 lister: ImageLister | None) -> None:
        """Tasks for ``planned``, in order, the destinations' tag lists read first."""
        self._list_destinations(spec, [i for i in planned if isinstance(i, BulkItem)])
        for entry in planned:
            if isinstance(entry, Task):
                plan.tasks.append(entry)
            else:
                self._add(plan, spec, entry, lister)

    def _add(self, plan: Plan, spec: SourceSpec, item: BulkItem,
             lister: ImageLister | None) -> None:
        source = self.prepare(item.uri)
        place = self.place_of(source)
        if lister is not None and lister.knows_digests:  # it has the URI's credentials
            with self._lock:
                self._listers.setdefault(place.lister_key, lister)
        targets = []
        for destination in self._fill(spec, item):
            target = self.place_of(destination)
            tag = item.fields.get("tag", "")
            present = bool(spec.rules.immutable) and spec.rules.is_immutable(tag) \
                and target.tag in self._destination_tags(target)
            targets.append(Target(destination, target, present))
        plan.tasks.append(Task(source, place, tuple(targets), spec))

    def _list_destinations(self, spec: SourceSpec, items: list[BulkItem]) -> None:
        """The tag lists :meth:`_add` will need for ``items``' immutable tags, read
        together (as many at once as the tag listings of the sources; each registry's
        ``concurrency`` caps its own), rather than one repository after the other."""
        if not spec.rules.immutable:
            return
        places: dict[tuple[str, str, str, str], Place] = {}
        for item in items:
            if spec.rules.is_immutable(item.fields.get("tag", "")):
                for destination in self._fill(spec, item):
                    place = self.place_of(destination)
                    places.setdefault(place.repository_key, place)
        with self._lock:
            todo = [p for key, p in places.items() if key not in self._dest_tags]
        parallel(self._destination_tags, todo,
                 LOOKUPS_PER_COPY * self.ctx.settings.image_parallel,
                 self.ctx.cancel.child(), name="immutable")

    def _destination_tags(self, place: Place) -> set[str]:
        """The tags of a destination repository, listed once per run. One that cannot
        be listed holds none: its immutable tags are checked (HEADs) like any other."""
        key = place.repository_key
        with self._lock:
            known = self._dest_tags.get(key)
        if known is None:
            try:
                known = set(self.lister(place).tags(place.repository))
            except ImageNotFoundError:
                known = set()  # no such repository yet
            except OccystrapError as e:
                log.warning("%s: immutable tags checked one by one: %s",
                            redact_uri(place.where), e)
                known = set()
            with self._lock:
                self._dest_tags[key] = known
        return known

    def _hold(self, plan: Plan, spec: SourceSpec, item: BulkItem) -> None:
        """Keep ``--prune`` out of the repositories ``item``'s destinations are in."""
        if self.prune:
            plan.held.update(self.place_of(d).repository_key
                             for d in self._fill(spec, BulkItem(item.uri,
                                                                {**item.fields, "tag": "x"})))

    def _hold_all(self, plan: Plan, spec: SourceSpec) -> None:
        """Keep ``--prune`` out of every repository ``spec``'s templates can name."""
        if self.prune:
            plan.held_patterns += [template_pattern(t) for t in spec.destinations]

    def _add_scopes(self, plan: Plan, spec: SourceSpec, item: BulkItem, tags: set[str],
                    pattern: Pattern) -> None:
        for template in spec.destinations:  # each ends in :{tag} (checked first)
            fields: dict[str, Any] = {**item.fields, "tag": "x"}
            place = self.place_of(self.prepare(template.format_map(fields)))
            plan.scopes.append(Scope(place, frozenset(tags), spec.rules, pattern))
