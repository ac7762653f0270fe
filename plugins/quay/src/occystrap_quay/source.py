"""``quay://NAMESPACE[/REPO_GLOB[:TAG_GLOB]]``: the images of a Quay namespace.

The repository glob defaults to ``*`` and the tag glob to ``latest``; both are
:func:`fnmatch.fnmatchcase` patterns. A literal repository is not listed, only its
tags are; a literal tag is asked for with ``specificTag``. ``since`` keeps the
repositories whose ``last_modified`` and the tags whose ``start_ts`` are at or after
that time. Each match becomes ``registry://REGISTRY/NAMESPACE/REPO:TAG``, built by the
core like any other source, so pulls use the registry credentials chain.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from occystrap_core.api import BulkItem, ImageLister, ImageSet
from occystrap_core.errors import OccystrapError, URIError
from occystrap_core.listing import readable
from occystrap_core.types import ResolvedURI
from occystrap_core.uri import check_glob, is_glob

from .client import QuayAPI
from .plugin import TOKEN_OPTION

if TYPE_CHECKING:
    from occystrap_core.context import Context

log = logging.getLogger("occystrap.quay")

DEFAULT_TAG = "latest"
_NAMESPACE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Selection:
    """What a ``quay://`` URI asks for. ``since`` is a Unix time, or None."""

    namespace: str
    repo_glob: str = "*"
    tag_glob: str = DEFAULT_TAG
    since: float | None = None

    def repo_matches(self, repo: dict[str, Any]) -> bool:
        name = repo.get("name")
        if not isinstance(name, str) or not fnmatch.fnmatchcase(name, self.repo_glob):
            return False
        if self.since is None:
            return True
        # A repository never pushed to has no last_modified: nothing in it is recent.
        return _number(repo.get("last_modified")) >= self.since

    def tag_matches(self, tag: dict[str, Any]) -> bool:
        name = tag.get("name")
        if not isinstance(name, str) or not fnmatch.fnmatchcase(name, self.tag_glob):
            return False
        return self.since is None or _number(tag.get("start_ts")) >= self.since


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0


def parse_target(target: str) -> tuple[str, str, str]:
    """``NAMESPACE[/REPO_GLOB[:TAG_GLOB]]`` -> (namespace, repo glob, tag glob)."""
    namespace, slash, rest = target.strip("/").partition("/")
    repo_glob, colon, tag_glob = rest.partition(":")
    if not _NAMESPACE_RE.match(namespace):
        raise URIError(f"quay://{target}: expected quay://NAMESPACE[/REPO_GLOB[:TAG_GLOB]] "
                       f"with a literal lower-case namespace, got {namespace!r}")
    if "/" in repo_glob or (slash and not repo_glob) or (colon and not tag_glob):
        raise URIError(f"quay://{target}: expected quay://NAMESPACE[/REPO_GLOB[:TAG_GLOB]]")
    check_glob(repo_glob, f"quay://{target}: repository glob")
    check_glob(tag_glob, f"quay://{target}: tag glob")
    return namespace, repo_glob or "*", tag_glob or DEFAULT_TAG


def parse_since(value: str | None) -> float | None:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 time (UTC unless it has an offset)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise URIError(f"quay://: since={value!r} is not a date (YYYY-MM-DD)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def select_tags(tags: Iterable[dict[str, Any]], selection: Selection) -> list[str]:
    """Names of the matching tags, sorted, each once (pages may overlap while tags move)."""
    return sorted({t["name"] for t in tags if selection.tag_matches(t)})


class QuayLister(ImageLister):
    """The repositories and tags of a Quay namespace, through the Quay API: what
    ``occystrap sync`` and the core's listing use for ``quay://`` sources."""

    # public=true lists repositories the token may not read, and a robot sees its
    # organisation's whatever its permissions: those are skipped, the others mirrored
    lists_unreadable = True

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.namespace = parse_target(uri.target)[0]
        self.host: str = uri.options.get("host") or "quay.io"
        self.registry: str = uri.options.get("registry") or self.host
        self.insecure = bool(uri.options.get("insecure"))
        token = uri.credentials.token if uri.credentials else \
            ctx.settings.plugin_options.get(TOKEN_OPTION)
        scheme = "http" if self.insecure or ctx.settings.insecure else "https"
        self.api = QuayAPI(ctx, self.host, scheme=scheme, token=token)

    def repositories(self) -> Iterator[str]:
        for repo in self.api.repositories(self.namespace):
            if isinstance(repo.get("name"), str):
                yield repo["name"]

    def tags(self, repository: str) -> Iterator[str]:
        for tag in self.api.tags(self.namespace, repository):
            if isinstance(tag.get("name"), str):
                yield tag["name"]

    def item(self, repository: str, tag: str) -> BulkItem:
        ns = self.namespace
        uri = f"registry://{self.registry}/{ns}/{repository}" + (f":{tag}" if tag else "")
        if self.insecure:
            uri += "?insecure=true"
        return BulkItem(uri=uri, fields={"registry": self.registry, "namespace": ns,
                                         "repo": repository, "tag": tag})


class QuayImages(ImageSet):
    """``quay://`` as a source of ``process``/``info``: the lister, plus ``since``
    and ``specificTag`` lookups that only the Quay API offers."""

    def __init__(self, uri: ResolvedURI, ctx: Context):
        self.ctx = ctx
        namespace, repo_glob, tag_glob = parse_target(uri.target)
        self.selection = Selection(namespace, repo_glob, tag_glob,
                                   parse_since(uri.options.get("since")))
        self.lister = QuayLister(uri, ctx)
        self.host = self.lister.host
        self.api = self.lister.api

    def repositories(self) -> list[str]:
        """Names of the matching repositories, sorted (no API call for a literal name)."""
        sel = self.selection
        if not is_glob(sel.repo_glob):
            return [sel.repo_glob]
        return sorted({r["name"] for r in self.api.repositories(sel.namespace)
                       if sel.repo_matches(r)})

    def tags(self, repo: str) -> list[str]:
        sel = self.selection
        specific = None if is_glob(sel.tag_glob) else sel.tag_glob
        return select_tags(self.api.tags(sel.namespace, repo, specific), sel)

    def item(self, repo: str, tag: str, error: str | None = None) -> BulkItem:
        return replace(self.lister.item(repo, tag), error=error)

    def _tags_or_error(self, repo: str) -> list[str] | OccystrapError:
        try:
            return self.tags(repo)
        except OccystrapError as e:
            if not is_glob(self.selection.repo_glob):
                raise  # the one repository asked for
            return e

    def images(self) -> Iterator[BulkItem]:
        sel = self.selection
        repos = self.repositories()
        log.info("quay %s: %d repositories match %s/%s", self.host, len(repos), sel.namespace,
                 sel.repo_glob)
        workers = max(1, min(self.ctx.settings.image_parallel, len(repos)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quay-tags") as pool:
            listed = list(pool.map(self._tags_or_error, repos))
        for repo, tags in readable(self.lister, repos, listed, glob=is_glob(sel.repo_glob)):
            if isinstance(tags, OccystrapError):
                yield self.item(repo, "", error=str(tags))
                continue
            if not tags and not is_glob(sel.repo_glob) and not is_glob(sel.tag_glob) \
                    and sel.since is None:
                yield self.item(repo, sel.tag_glob, error=(
                    f"quay API at {self.host}: tag {sel.tag_glob} not found "
                    f"in {sel.namespace}/{repo}"))
            for tag in tags:
                yield self.item(repo, tag)
