"""Many-image sources built on listers: ``SCHEME://ROOT/REPO_GLOB[:TAG_GLOB]``.

A lister (``occystrap_listers``) knows one registry API: the repositories under a
root (a registry host, a Quay namespace) and each repository's tags. The matching
lives here, once for every lister: :func:`split_pattern` reads the URI's target,
:class:`ListedImages` lists it as an :class:`~occystrap_core.api.ImageSet` for
``process`` and ``info``, and ``occystrap sync`` uses :func:`open_lister` with its
own tag rules. Globs are :func:`fnmatch.fnmatchcase` patterns; a literal repository
is not looked up in the catalog and a literal tag is not listed at all.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, TypeVar

from .api import BulkItem, ImageLister, ImageSet
from .errors import AuthError, CredentialsError, OccystrapError, URIError
from .uri import check_glob, is_glob
from .workers import parallel

if TYPE_CHECKING:
    from .context import Context
    from .types import ResolvedURI

log = logging.getLogger("occystrap.listing")

T = TypeVar("T")


@dataclass(frozen=True)
class Pattern:
    """What ``ROOT/REPO_GLOB[:TAG_GLOB]`` asks for; repositories are relative to root."""

    root: str
    repositories: str
    tags: str

    def repository_matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.repositories)

    def tag_matches(self, tag: str) -> bool:
        return fnmatch.fnmatchcase(tag, self.tags)


def split_pattern(target: str, default_tag: str = "*", scheme: str = "registry") -> Pattern:
    """``HOST/team/*:v1.*`` -> Pattern("HOST", "team/*", "v1.*").

    The tag is what follows the last ``:`` after the last ``/``, so a port in the
    root is kept. A missing repository part means every repository.
    """
    root, _, rest = target.strip("/").partition("/")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    repo, tag = (rest[:colon], rest[colon + 1:]) if colon > slash else (rest, "")
    if not root or (colon > slash and not tag) or "@" in rest:
        raise URIError(f"{scheme}://{target}: expected {scheme}://ROOT[/REPO_GLOB[:TAG_GLOB]]")
    check_glob(repo, f"{scheme}://{target}: repository glob")
    check_glob(tag, f"{scheme}://{target}: tag glob")
    return Pattern(root, repo or "*", tag or default_tag)


def open_lister(ctx: Context, uri: str) -> tuple[ImageLister, ResolvedURI]:
    """The lister for a source URI, through the resolution hook and the lister table.

    The URI's options are those of the input source of its scheme, when there is one
    (``registry://...?insecure=true``); a scheme may have a lister and no source.
    """
    import dataclasses

    from . import redact
    from .uri import convert_options

    redact.remember_uri(uri)
    resolved = ctx.plugins.hook.occystrap_resolve_uri(uri=uri, role="input", ctx=ctx)
    entry = ctx.plugins.listers.get(resolved.scheme)
    source = ctx.plugins.inputs.entries.get(resolved.scheme)
    specs = tuple(source.item.options) if source is not None else ()
    resolved = dataclasses.replace(resolved, options=convert_options(
        specs, resolved.query, f"{resolved.scheme}://"))
    return entry.item.factory(resolved, ctx), resolved


def matching_repositories(lister: ImageLister, pattern: Pattern) -> list[str]:
    """The repositories ``pattern`` names, sorted; a literal name is not looked up."""
    if not is_glob(pattern.repositories):
        return [pattern.repositories]
    return sorted({r for r in lister.repositories() if pattern.repository_matches(r)})


def matching_tags(lister: ImageLister, pattern: Pattern, repository: str) -> list[str]:
    """The tags of ``repository`` that ``pattern`` names, sorted; a literal tag is not
    listed (a missing one fails when it is copied)."""
    if not is_glob(pattern.tags):
        return [pattern.tags]
    return sorted({t for t in lister.tags(repository) if pattern.tag_matches(t)})


def readable(lister: ImageLister, repositories: Sequence[str], listed: Sequence[T], *,
             glob: bool) -> list[tuple[str, T]]:
    """Each repository with its listed tags (or the error listing them), but those a
    lister that lists unreadable repositories (:attr:`~ImageLister.lists_unreadable`)
    refused (AuthError): each is skipped with a warning naming it. When the repository
    was named literally (not ``glob``), or every matching one refuses (a token without
    the scope), the first refusal is raised: the source cannot be read."""
    pairs = list(zip(repositories, listed, strict=True))
    if not lister.lists_unreadable:
        return pairs
    refused = [e for e in listed if isinstance(e, AuthError)]
    if refused and (len(refused) == len(listed) or not glob):
        raise refused[0]
    for error in refused:
        log.warning("%s: skipped", error)
    return [(r, tags) for r, tags in pairs if not isinstance(tags, AuthError)]


class ListedImages(ImageSet):
    """Every image a lister finds under a pattern; used by input factories for
    ``SCHEME://ROOT/REPO_GLOB:TAG_GLOB`` sources (see ``registry://``)."""

    def __init__(self, ctx: Context, lister: ImageLister, pattern: Pattern):
        self.ctx = ctx
        self.lister = lister
        self.pattern = pattern

    def _tags_or_error(self, repository: str) -> list[str] | OccystrapError:
        try:
            return matching_tags(self.lister, self.pattern, repository)
        except CredentialsError:
            raise  # wrong for every repository: stop rather than repeat it per repository
        except OccystrapError as e:
            if not is_glob(self.pattern.repositories):
                raise  # the one repository asked for
            return e

    def images(self) -> Iterator[BulkItem]:
        repositories = matching_repositories(self.lister, self.pattern)
        log.info("%s: %d repositories match %s", self.pattern.root, len(repositories),
                 self.pattern.repositories)
        listed = parallel(self._tags_or_error, repositories, self.ctx.settings.image_parallel,
                          self.ctx.cancel.child(), name="list")
        for repository, tags in readable(self.lister, repositories, listed,
                                         glob=is_glob(self.pattern.repositories)):
            if isinstance(tags, OccystrapError):
                yield BulkItem(uri=self.lister.item(repository, "").uri, fields={},
                               error=str(tags))
                continue
            for tag in tags:
                yield self.lister.item(repository, tag)

    def close(self) -> None:
        self.lister.close()
